"""Retrieval from skill memory: the context a goal and an observation get, within a token budget.

`RetrievalConfig` holds every knob of a retrieval with its default; `memory.retrieve`,
`retrieval_node`, `memory_prompt` and the harness all read it. `build_context` turns a
query vector into a `Context`: MMR-diverse lessons (general and
task-type, as in SkillRL) and task-type demonstrations, rendered within a token budget.
Everything it needs comes from the in-process `MemoryIndex` (skillmem/index/), which is
kept exact by the audit high-water mark: no SQL is read for a retrieval unless memory
changed. `record_retrievals` writes what was chosen to the `retrievals` table.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Optional, Sequence

import numpy as np
from sqlalchemy.engine import Engine

from .episode import utcnow
from .index.items import DEMO, LESSON, Item, partition_name, partition_prefix
from .index.items import demo_text, item_text, lesson_text  # noqa: F401  (re-exported: the texts items are embedded as)
from .index.memory import MemoryIndex, fetch_rows
from .record import retrieval_writer
from .store import DemonstrationRow, LessonRow
from .tokens import count_tokens



def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class RetrievalConfig:
    """Every knob of one retrieval, with its default (`RetrievalConfig(k=3)`; `.with_(k=3)` for a copy)."""

    k: int = _f(5, "lessons retrieved (general and task-type together), at most")
    k_demos: int = _f(1, "demonstrations of the task type retrieved, at most")
    token_budget: int = _f(400, "tokens of memory in the context, at most; demonstrations are placed first")
    mmr_lambda: float = _f(0.7, "MMR trade-off between relevance and novelty (1.0 = relevance only)")
    near_copy_cosine: float = _f(0.95, "a candidate this close to an item already chosen adds nothing: never taken "
                                       "(a lesson only when it also says the same, part by part: two lessons on "
                                       "one template embed this close and still give other advice)")
    max_query_chars: int = _f(4_000, "the query is cut here: embedding models read ~256 tokens anyway, and a "
                                     "50,000-character observation must cost no more than a short one")

    def with_(self, **changes: Any) -> "RetrievalConfig":
        """A copy with `changes`; a None value keeps this config's own (so callers can pass k=None through)."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise TypeError(f"RetrievalConfig has no {sorted(unknown)}; its knobs: {', '.join(sorted(known))}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


DEFAULT = RetrievalConfig()


# --------------------------------------------------------------------------- rendering


def render_lesson(row: Any) -> str:
    """A lesson as the agent reads it: "- <situation>: <fix> (not <bad action>)"."""
    fix = " ".join(row.fix.split()).rstrip(".")
    bad = " ".join(row.bad_action.split())
    return f"- {' '.join(row.trigger.split())}: {fix}" + (f" (not {bad})" if bad and bad not in fix else "")


def render_demo(row: Any) -> str:
    goal = " ".join(row.goal_template.split()) or row.task_type or "this kind of task"
    steps = [f"  {i}. {' '.join(str(s).split())}" for i, s in enumerate(row.plan, 1)]
    return "\n".join([f"A plan that worked for: {goal}", *steps])


LESSON_HEADER = "Lessons from earlier attempts:"
DEMO_HEADER = "Demonstrations that succeeded:"


def _rendered(item: Item) -> tuple[str, int]:
    """An item's block and its tokens, rendered once per version (the cache entry dies with the version)."""
    block = item.block
    if block is None:
        block = render_lesson(item) if item.kind == LESSON else render_demo(item)
        # The count before the block: `block` set is what says both are, to a retrieval on
        # another thread (set first, it read the block with 0 tokens and overfilled its budget).
        if not item.tokens:  # counted as it entered the cache (count_item_tokens); a block has >= 1
            item.tokens = count_tokens(block)
        item.block = block
    return block, item.tokens


def count_item_tokens(item: Item) -> None:
    """Count an item's tokens as a sync brings it into the index's cache
    (`MemoryIndex(count_tokens=)`): counting is most of a first rendering's cost (~6 of 7 µs),
    paid there rather than by the retrieval that first chooses the item; the block itself is
    rendered on first use and kept."""
    item.tokens = count_tokens(render_lesson(item) if item.kind == LESSON else render_demo(item))


_HEADER_TOKENS = {LESSON: count_tokens(LESSON_HEADER), DEMO: count_tokens(DEMO_HEADER)}


def render_memory(lessons: Sequence[Any], demonstrations: Sequence[Any],
                  token_budget: Optional[int] = None) -> tuple[str, int]:
    """Lessons and demonstrations as the agent reads them: (text, tokens).

    The one rendering of memory: the agent's context (`build_context` fills the same way from
    its cached blocks), the distillation teacher's (skillmem.train.data) and the benchmarks'.
    Demonstrations come first, each kind under its header; an item that does not fit in
    `token_budget` (None: no limit) is skipped and a shorter one further down may still fit.
    """
    budget = token_budget if token_budget is not None else float("inf")
    lines: list[str] = []
    used = 0
    for kind, header, rows, render in ((DEMO, DEMO_HEADER, demonstrations, render_demo),
                                       (LESSON, LESSON_HEADER, lessons, render_lesson)):
        started = False
        for row in rows:
            block = render(row)
            cost = count_tokens(block) + (0 if started else _HEADER_TOKENS[kind])
            if used + cost > budget:
                continue
            if not started:
                lines.append(header)
                started = True
            lines.append(block)
            used += cost
    return "\n".join(lines), used


# --------------------------------------------------------------------------- retrieval


class Context:
    """What retrieval puts into the agent's context: the chosen items, their scores, the text.

    `text`, `tokens`, `items` and `scores` come from the in-process cache. `lessons` and
    `demonstrations` are the full SQL rows of the chosen items, loaded on first access
    (through the index's row cache, else one read), since most callers need only the text.
    """

    def __init__(self, lessons: Optional[list[LessonRow]] = None,
                 demonstrations: Optional[list[DemonstrationRow]] = None, *,
                 scores: Optional[dict[tuple[str, int], float]] = None, text: str = "", tokens: int = 0,
                 items: Optional[list[tuple[str, int, float, int]]] = None,
                 loader: Optional[Callable[[str, list[int]], dict[int, Any]]] = None):
        self._lessons = lessons
        self._demonstrations = demonstrations
        self.scores: dict[tuple[str, int], float] = scores or {}  # (kind, id) -> cosine to the query
        self.text = text
        self.tokens = tokens
        self.items: list[tuple[str, int, float, int]] = items or []  # (kind, id, score, tokens) by rank
        self._loader = loader

    def _load(self, kind: str) -> list[Any]:
        ids = [i for k, i, _, _ in self.items if k == kind]
        if not ids or self._loader is None:
            return []
        rows = self._loader(kind, ids)
        return [rows[i] for i in ids if i in rows]

    @property
    def lessons(self) -> list[LessonRow]:
        if self._lessons is None:
            self._lessons = self._load(LESSON)
        return self._lessons

    @lessons.setter
    def lessons(self, value: list[LessonRow]) -> None:
        self._lessons = value

    @property
    def demonstrations(self) -> list[DemonstrationRow]:
        if self._demonstrations is None:
            self._demonstrations = self._load(DEMO)
        return self._demonstrations

    @demonstrations.setter
    def demonstrations(self, value: list[DemonstrationRow]) -> None:
        self._demonstrations = value

    def __bool__(self) -> bool:
        return bool(self.items)

    def __repr__(self) -> str:
        return f"Context(items={self.items!r}, tokens={self.tokens})"


def mmr(cands: list[tuple[str, int, float, np.ndarray]], k: int, lam: float = DEFAULT.mmr_lambda,
        near_copy: float = DEFAULT.near_copy_cosine) -> list[tuple[str, int, float, np.ndarray]]:
    """Maximal marginal relevance: relevant, and unlike what is already chosen; ties go to the lower id."""
    if not cands or k <= 0:
        return []
    chosen = mmr_order(np.array([c[1] for c in cands], dtype=np.int64), np.array([c[2] for c in cands]),
                       np.array([c[3] for c in cands], dtype=np.float32), k, lam, near_copy)
    return [cands[i] for i in chosen]


def mmr_order(ids: np.ndarray, scores: np.ndarray, vecs: np.ndarray, k: int, lam: float = DEFAULT.mmr_lambda,
              near_copy: float = DEFAULT.near_copy_cosine,
              says: Optional[Callable[[int], Any]] = None) -> list[int]:
    """`mmr` on arrays: the positions chosen, in order of choice. With `says` (what the candidate
    at a position says), a near copy is blocked only when it also says the same; it is asked
    only of near copies, not of every candidate."""
    n = len(ids)
    if n == 0 or k <= 0:
        return []
    # Candidates by id: argmax takes the first of equal values, so ties go to the lower id.
    by_id = np.argsort(ids, kind="stable")
    vecs = vecs[by_id]
    rel = (lam * 1e6) * scores[by_id].astype(np.float64)
    redundancy = np.zeros(n)
    blocked = np.zeros(n, dtype=bool)
    value = np.empty(n)
    penalty = (1 - lam) * 1e6
    chosen: list[int] = []
    rounds = min(k, n)
    for _ in range(rounds):
        # Rounded to 1e-6 (value is scaled by 1e6), so ties are exact whatever the float noise.
        np.rint(np.subtract(rel, np.multiply(redundancy, penalty, out=value), out=value), out=value)
        value[blocked] = -np.inf
        best = int(value.argmax())
        if value[best] == -np.inf:
            break
        chosen.append(best)
        if len(chosen) == rounds:
            break
        # Only the chosen rows of the similarity matrix are ever needed: k products, not n.
        row = vecs @ vecs[best]
        blocked[best] = True
        # A near copy of a chosen item adds nothing: never take it.
        near = row >= near_copy
        if says is None:
            blocked |= near
        else:
            copies = np.flatnonzero(near & ~blocked).tolist()
            said = says(int(by_id[best])) if copies else None
            for j in copies:
                if says(int(by_id[j])) == said:
                    blocked[j] = True
        np.maximum(redundancy, row, out=redundancy)
    return by_id[chosen].tolist()


def _says(cached: Any, kind: str, ids: np.ndarray) -> Optional[Callable[[int], Any]]:
    """What the candidate lesson at a position of `ids` says (its parts normalized, as curation
    compares them), worked out when MMR asks: ~7 us a lesson, so for the few near copies only, not
    for all 32 candidates of every retrieval (that was ~0.2 ms of its fixed cost), and kept on the
    item (`Item.parts`) so a lesson is normalized once per version, not once per retrieval. None for
    demonstrations, whose near copies are near copies."""
    if kind != LESSON:
        return None
    from .curate import lesson_parts

    keys = ids.tolist()
    memo: dict[int, Any] = {}

    def said(pos: int) -> Any:
        if pos not in memo:
            it = cached.get((kind, keys[pos]))
            if it is None:
                memo[pos] = (None, keys[pos])  # unknown: like no other
            else:
                if it.parts is None:  # once per item version (a new version is a new Item)
                    it.parts = lesson_parts(it)
                memo[pos] = it.parts
        return memo[pos]

    return said


def build_context(index: MemoryIndex, query: np.ndarray, *, namespace: str, task_type: Optional[str],
                  config: RetrievalConfig = DEFAULT, kinds: Sequence[str] = (LESSON, DEMO)) -> Context:
    """Choose and render items within the budget (no recording: see `record_retrievals`).

    The caller has synced `index` (one probe read): its items are exactly the active ones
    as of the mark, so no SQL is read here.
    """
    k, k_demos, token_budget = config.k, config.k_demos, config.token_budget
    picked: dict[str, list[tuple[Item, float]]] = {LESSON: [], DEMO: []}
    wanted = []
    if LESSON in kinds and k > 0:
        parts = [partition_name(namespace, LESSON)] + ([partition_name(namespace, LESSON, task_type)]
                                                        if task_type else [])
        wanted.append((LESSON, parts, max(4 * k, 32), k))
    if DEMO in kinds and k_demos > 0:
        wanted.append((DEMO, [partition_name(namespace, DEMO, task_type)], max(4 * k_demos, 8), k_demos))
    cached = index.items
    for kind, parts, n, limit in wanted:
        ids, scores, vecs = index.candidate_arrays(parts, query, n)
        if not len(ids):
            continue
        # Only this namespace's items that are active as of the mark (the partition already
        # says the namespace; the check holds even if partition names collided). Checked on
        # the few MMR chose: a candidate it never chose changed none of its choices, so if
        # those pass, MMR over the valid candidates alone would choose the same.
        says = _says(cached, kind, ids)
        chosen = mmr_order(ids, scores, vecs, limit, config.mmr_lambda, config.near_copy_cosine, says)
        its = [cached.get((kind, i)) for i in ids[chosen].tolist()]
        if not all(it is not None and it.namespace == namespace for it in its):
            # The valid items as read here are the ones rendered: read from the cache again, one
            # that a sync on another thread dropped meanwhile (an edit, a retirement) was a KeyError.
            valid = [(j, it) for j, i in enumerate(ids.tolist())
                     if (it := cached.get((kind, i))) is not None and it.namespace == namespace]
            keep = [j for j, _ in valid]
            ids, scores, vecs = ids[keep], scores[keep], vecs[keep]
            chosen = mmr_order(ids, scores, vecs, limit, config.mmr_lambda, config.near_copy_cosine,
                               _says(cached, kind, ids))
            its = [valid[c][1] for c in chosen]
        picked[kind] = list(zip(its, scores[chosen].tolist()))
    # Greedy fill, as render_memory does (lines are joined by newlines, so tokens add up part
    # by part), over blocks rendered once per item version.
    lines: list[str] = []
    used = 0
    scores: dict[tuple[str, int], float] = {}
    items: list[tuple[str, int, float, int]] = []
    # Demonstrations first: a concrete plan is the most a small budget can carry.
    for kind, header in ((DEMO, DEMO_HEADER), (LESSON, LESSON_HEADER)):
        started = False
        for item, score in picked[kind]:
            block, block_tokens = _rendered(item)
            cost = block_tokens + (0 if started else _HEADER_TOKENS[kind])
            if used + cost > token_budget:
                continue  # a shorter item further down may still fit
            if not started:
                lines.append(header)
                started = True
            lines.append(block)
            used += cost
            scores[(kind, item.id)] = score
            items.append((kind, item.id, score, block_tokens))
    ctx_text = "\n".join(lines)
    assert used <= token_budget, (used, token_budget)  # additive by construction
    return Context(scores=scores, text=ctx_text, tokens=used, items=items,
                   loader=lambda kind, ids: index.rows(None, kind, ids))


def record_retrievals(engine: Engine, ctx: Context, *, namespace: str, episode_id: Optional[str],
                      step_index: Optional[int]) -> None:
    """Write every item of `ctx` to `retrievals` in one transaction (step_writes="background":
    queued for the writer thread instead, see skillmem.record's write_many)."""
    if not ctx.items:
        return
    now = utcnow()
    rows = [dict(namespace=namespace, episode_id=episode_id, step_index=step_index, item_kind=kind,
                 item_id=item_id, rank=rank, score=float(score), tokens=tokens, created_at=now)
            for rank, (kind, item_id, score, tokens) in enumerate(ctx.items)]
    retrieval_writer(engine).write_many(rows)  # one statement: all the rows or none (sync mode)


def query_text(goal: Any, observation: Any, max_chars: int = DEFAULT.max_query_chars) -> str:
    parts = [str(p).strip() for p in (goal, observation) if p]
    return "\n".join(p for p in parts if p)[:max_chars]


def search_items(index: MemoryIndex, query: np.ndarray, *, namespace: str, kind: str,
                 limit: int) -> list[tuple[Any, float]]:
    """Plain top-`limit` similarity search over every partition of one kind in a namespace (active only)."""
    prefix = partition_prefix(namespace, kind)
    cands = index.candidates(index.partitions(prefix), query, limit)
    with index.read_engine.connect() as conn:
        rows = fetch_rows(conn, kind, [c[1] for c in cands], namespace=namespace, active_only=True)
    return [(rows[c[1]], c[2]) for c in cands if c[1] in rows][:limit]
