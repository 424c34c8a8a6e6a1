"""Curation of skill memory: dedupe and merge on insert, status changes, edits, measured utility.

Every change is one SQL transaction that also appends a `lesson_events` row (create,
merge, edit, retire, restore, approve, quarantine) with the item before and after. The
vector index follows those events (see :class:`skillmem.index.MemoryIndex`). Curation works
over the parts a :class:`Curator` names (engines, index, embedder, merge hook, thresholds),
never over the façade: `SkillMemory` holds one and calls it.

Duplicates of a lesson are decided on what it says, field by field, never on the whole
rendered line: "When X: avoid Y; instead Z" shares so much template that two lessons with
opposite advice embed at cosine 0.96 (all-MiniLM-L6-v2). A new lesson is one with an active
lesson of the same namespace, scope and task type when its situation (trigger), bad action
and fix each say the same thing (:func:`same_advice`):

- an *exact repeat* (the same words, up to case, spacing and end punctuation) adds support
  and the source episode to the stored lesson (action "repeated", a `merge` event);
- a *paraphrase* (every field embeds within `FIELD_COSINE` of the other's, with the same
  negation, the same numbers, slots and quoted names, and no opposite words such as
  open/closed or ascending/descending) is merged through the memory's merge hook;
- anything else is kept as its own lesson: when in doubt two lessons stay apart, because a
  merge that drops one side's advice loses what an episode taught.

A demonstration is a near-duplicate of one with the same goal template whose goal and
plan embed within `DUPLICATE_COSINE` and whose plan takes the same steps (as many, each one's
words within the other's); the stored plan is kept and gains support. Plans where a step does
something else ("currency='EUR'" for "currency='USD'": another case) stay apart.
"""

from __future__ import annotations

import json
import math
import re
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
from pydantic import ValidationError
from sqlalchemy import bindparam, insert, text, update
from sqlalchemy.engine import Connection

from .embed import content_hash
from .episode import EVAL_SPLITS, DemonstrationBase, ItemStatus, LessonBase, utcnow
from .index.items import KIND_TABLE, LESSON, item_text, partition_of
from .index.memory import embed_texts, fetch_rows, head_event_id, insert_ignore
from .store import EmbeddingRow, LessonEventRow, untrusted_namespaces

DUPLICATE_COSINE = 0.92  # demonstrations: goal + plan (paraphrased plans ~0.93-0.99)
# Lesson fields, each embedded alone: paraphrases of one situation or fix score ~0.82-1.0,
# different advice about the same thing ~0.0-0.8 (eval/bench/curation.py measures both).
FIELD_COSINE = 0.85
# Only lessons this close as whole lines are compared field by field: paraphrases of a
# lesson stay above ~0.89, so this only saves embedding fields of unrelated lessons.
CANDIDATE_COSINE = 0.8
MIN_USES = 10  # episodes a lesson must have been retrieved into before it can be retired
WILSON_Z = 1.6449  # one-sided 95% = two-sided 90% interval
_PG_CURATION_LOCK = 7214392
_OPTIMISTIC_TRIES = 5

MergeHook = Callable[[LessonBase, LessonBase], LessonBase]
LESSON_FIELDS = ("scope", "task_type", "trigger", "bad_action", "fix", "pivot_step", "source_episodes",
                 "provenance", "grounded_on_feedback")
DEMO_FIELDS = ("task_type", "goal_template", "plan", "slots", "source_episodes", "provenance", "raw_tokens")


class CurationError(ValueError):
    """A lesson or demonstration change that does not apply (unknown id, wrong status, bad field)."""


def union(a: Sequence[str], b: Sequence[str]) -> list[str]:
    """Order-preserving union of source episode ids."""
    return list(dict.fromkeys([*a, *b]))


def default_merge(existing: LessonBase, new: LessonBase) -> LessonBase:
    """Keep the better-supported text (grounded on feedback first, then support; ties keep the existing)."""
    def strength(x: LessonBase) -> tuple[bool, int]:
        return (bool(x.grounded_on_feedback), int(getattr(x, "support", 1) or 1))

    keep = new if strength(new) > strength(existing) else existing
    data = {f: getattr(keep, f) for f in LESSON_FIELDS}
    data["source_episodes"] = union(existing.source_episodes, new.source_episodes)
    data["provenance"] = {**(new.provenance or {}), **(existing.provenance or {})}
    data["grounded_on_feedback"] = bool(existing.grounded_on_feedback or new.grounded_on_feedback)
    return LessonBase.model_validate(data)


class Curator:
    """The parts curation works over, named explicitly (the façade holds one; so may any other writer).

    `engine` takes the writes, `read_engine` the reads; `index` is the :class:`MemoryIndex`
    kept in step with the rows; `embedder` is called on first use (so that recording alone
    never loads torch); `merge_hook` writes one lesson from two paraphrases; `safety` is a
    reflect.safety.SafetyConfig (None: its defaults).
    """

    def __init__(self, engine: Any, read_engine: Any, index: Any, embedder: Callable[[], Any], *,
                 merge_hook: MergeHook = default_merge, duplicate_cosine: float = DUPLICATE_COSINE,
                 field_cosine: float = FIELD_COSINE, safety: Any = None):
        self.engine, self.read_engine, self.index = engine, read_engine, index
        self._embedder = embedder
        self.merge_hook = merge_hook
        self.duplicate_cosine = duplicate_cosine  # demonstrations: goal + plan
        self.field_cosine = field_cosine  # each part of a lesson (see same_advice)
        self.safety = safety

    @property
    def embedder(self) -> Any:
        return self._embedder()

    @property
    def untrusted_namespaces(self) -> frozenset[str]:
        """Read from the store on each write: another process may have changed a namespace's trust."""
        return untrusted_namespaces(self.engine)


@contextmanager
def write_txn(parts: "Curator") -> Iterator[Connection]:
    """One curation transaction; curation writers are serialized so event ids commit in order."""
    with parts.engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE already holds the only write lock
        if parts.engine.dialect.name == "postgresql":
            # Without this a later event id could commit before an earlier one and the index's
            # high-water mark would skip the earlier change.
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_CURATION_LOCK})
        yield conn


def snapshot(row: Any) -> dict[str, Any]:
    """A row as JSON for an event's before/after."""
    data = row.model_dump(mode="json")
    for k in ("created_at", "updated_at"):
        data.pop(k, None)
    return data


def _event(conn: Connection, kind: str, row: Any, action: str, *, before: Any = None, after: Any = None,
           reason: str = "", episode_id: Optional[str] = None) -> None:
    conn.execute(insert(LessonEventRow.__table__), dict(
        namespace=row.namespace, item_kind=kind, item_id=row.id, action=action,
        before=before, after=after, reason=reason, episode_id=episode_id, created_at=utcnow()))


def _plain(v: Any) -> Any:
    return v.value if hasattr(v, "value") and not isinstance(v, (int, float)) else v


# --------------------------------------------------------------------------- what a lesson says
#
# The words that flip or pin down advice, in any domain: an embedding model places "X is
# in sight" next to "X is not in sight", "sort ascending" next to "sort descending" and
# "retry after 5 s" next to "retry after 60 s". These checks are about English, not about
# any world; what they cannot tell apart they keep apart.

NEGATIONS = frozenset({"not", "no", "never", "nowhere", "nothing", "none", "neither", "nor", "without",
                       "cannot", "avoid"})
_OPPOSITE_PAIRS = [
    ("open", "closed"), ("open", "close"), ("opened", "closed"), ("enabled", "disabled"), ("enable", "disable"),
    ("visible", "hidden"), ("shown", "hidden"), ("show", "hide"), ("ascending", "descending"), ("asc", "desc"),
    ("newest", "oldest"), ("latest", "earliest"), ("first", "last"), ("accept", "reject"), ("accepted", "rejected"),
    ("allow", "deny"), ("allowed", "denied"), ("up", "down"), ("pass", "fail"), ("passed", "failed"),
    ("passes", "fails"), ("success", "failure"), ("succeeded", "failed"), ("succeeds", "fails"), ("free", "taken"),
    ("free", "busy"), ("more", "less"), ("more", "fewer"), ("most", "least"), ("above", "below"), ("over", "under"),
    ("before", "after"), ("add", "remove"), ("add", "delete"), ("added", "removed"), ("include", "exclude"),
    ("true", "false"), ("on", "off"), ("yes", "no"), ("min", "max"), ("minimum", "maximum"), ("increase", "decrease"),
    ("start", "stop"), ("empty", "full"), ("always", "never"), ("all", "none"), ("can", "cannot"),
    ("present", "absent"), ("found", "missing"), ("unused", "missing"), ("inside", "outside"),
    ("higher", "lower"), ("larger", "smaller"), ("longer", "shorter"), ("in", "out"),
    ("lock", "unlock"), ("upper", "lower"), ("left", "right"), ("next", "previous"), ("buy", "sell"),
]
OPPOSITES: dict[str, frozenset[str]] = {}
for _a, _b in _OPPOSITE_PAIRS:
    OPPOSITES[_a] = OPPOSITES.get(_a, frozenset()) | {_b}
    OPPOSITES[_b] = OPPOSITES.get(_b, frozenset()) | {_a}
_NEGATING_PREFIXES = ("un", "in", "dis", "non", "im", "ir", "il")

_WORD = re.compile(r"[a-z0-9]+")
# Names advice is pinned to: quoted strings, [slots], numbers, code-like tokens (snake_case, calls, flags).
_NAME = re.compile(r"(?<!\w)'[^']*'(?!\w)|\"[^\"]*\"|`[^`]*`|\[[^\]]+\]|\d+(?:\.\d+)*|\S*[_(=/]\S*|(?<!\S)--?\w[\w-]*")


def normalize(s: str) -> str:
    """Case, spacing, contractions and end punctuation do not change what a text says."""
    s = " ".join((s or "").lower().replace("n't", " not").replace("’", "'").split())
    return s.strip(" .,;:!?")


def _words(s: str) -> list[str]:
    return _WORD.findall(s)


def _names(s: str) -> frozenset[str]:
    return frozenset(m.strip(" .,;:!?") for m in _NAME.findall(s))


def _opposed(only_a: set[str], only_b: set[str]) -> Optional[tuple[str, str]]:
    for w in only_a:
        for v in only_b:
            if v in OPPOSITES.get(w, ()) or any(v == p + w or w == p + v for p in _NEGATING_PREFIXES):
                return w, v
    return None


def field_conflict(a: str, b: str) -> Optional[str]:
    """Why two normalized texts of one lesson field cannot say the same thing, by their words; None if they might."""
    if a == b:
        return None
    if not a or not b:
        return "one is empty"
    wa, wb = _words(a), _words(b)
    if sum(w in NEGATIONS for w in wa) % 2 != sum(w in NEGATIONS for w in wb) % 2:
        return "one is negated"
    na, nb = _names(a), _names(b)
    if na and nb and na != nb:
        return f"different names ({', '.join(sorted(na ^ nb))})"
    pair = _opposed(set(wa) - set(wb), set(wb) - set(wa))
    if pair:
        return f"opposite words ({pair[0]} / {pair[1]})"
    return None


LESSON_PARTS = ("trigger", "bad_action", "fix")


def lesson_parts(row: Any) -> tuple[str, ...]:
    """What a lesson says, normalized: (situation, bad action, fix)."""
    return tuple(normalize(getattr(row, f)) for f in LESSON_PARTS)


def same_advice(a: Sequence[str], b: Sequence[str], vectors: Callable[[Sequence[str]], np.ndarray],
                threshold: float = FIELD_COSINE) -> tuple[bool, str]:
    """Do two lessons' normalized parts (:func:`lesson_parts`) give the same advice? (yes?, why).

    Each part must pass :func:`field_conflict` and, unless identical, embed (alone,
    through `vectors`) at cosine >= `threshold` with its counterpart.
    """
    pending = []
    for name, x, y in zip(LESSON_PARTS, a, b):
        why = field_conflict(x, y)
        if why:
            return False, f"{name}: {why}"
        if x != y:
            pending.append((name, x, y))
    if not pending:
        return True, "same words"
    vecs = vectors([t for _, x, y in pending for t in (x, y)])
    for i, (name, _, _) in enumerate(pending):
        cos = float(np.dot(vecs[2 * i], vecs[2 * i + 1]))
        if cos < threshold:
            return False, f"{name}: cosine {cos:.2f} < {threshold}"
    return True, "paraphrase"


# --------------------------------------------------------------------------- insert


def _validate(model: type, item: Any) -> Any:
    try:
        data = item.model_dump() if hasattr(item, "model_dump") else dict(item)
        return model.model_validate({k: v for k, v in data.items() if k in model.model_fields})
    except (ValidationError, TypeError) as exc:
        raise CurationError(f"malformed {model.__name__}, nothing written: {exc}") from exc


def _checked(parts: "Curator", kind: str, item: Any) -> Any:
    """The safety check every write runs (reflect.safety.check_item): normalized text, or UnsafeLesson."""
    from .reflect.safety import check_item  # lazy: `import skillmem` stays light

    return check_item(kind, item, parts.safety)


def _canon_goal(template: str) -> str:
    return " ".join((template or "").lower().split())


def _comparable(parts: "Curator", kind: str, row: Any, vec: np.ndarray) -> list[tuple[Any, float]]:
    """Active items curation compares `row` with (same namespace, scope, task type), closest first."""
    cands = parts.index.candidates([partition_of(kind, row)], vec, 16)
    if not cands:
        return []
    with parts.read_engine.connect() as conn:
        rows = fetch_rows(conn, kind, [c[1] for c in cands], namespace=row.namespace, active_only=True)
    out = []
    for _, item_id, score, _ in cands:
        other = rows.get(item_id)
        if other is None or other.task_type != row.task_type:
            continue
        if kind == LESSON and _plain(other.scope) != _plain(row.scope):
            continue
        if kind != LESSON and _canon_goal(other.goal_template) != _canon_goal(row.goal_template):
            # A differently worded goal is what lets a demonstration bind a new task's
            # slots: both wordings are kept.
            continue
        out.append((other, score))
    return out


def _plan_steps(plan: Any) -> list[set[str]]:
    if isinstance(plan, str):
        try:
            plan = json.loads(plan)
        except ValueError:
            plan = [plan]
    return [set(re.findall(r"\[[^\]]*\]|[\w'-]+", str(s).lower())) for s in (plan or [])]


def _same_steps(a: Any, b: Any) -> bool:
    """Whether two plans take the same steps: as many, each one's words within the other's
    ("restart [object]" and "restart [object] now"); a word put in another's place ("currency='EUR'" for
    "currency='USD'") makes it another step."""
    sa, sb = _plan_steps(a), _plan_steps(b)
    return len(sa) == len(sb) and all(x <= y or y <= x for x, y in zip(sa, sb))


def _duplicate(parts: "Curator", kind: str, row: Any, vec: np.ndarray) -> tuple[Optional[Any], str, str]:
    """The stored item `row` repeats or paraphrases: (item, "repeated" | "merged", why), or (None, "created", why)."""
    near = _comparable(parts, kind, row, vec)
    if kind != LESSON:
        for other, score in near[:1]:
            if other.text_hash == row.text_hash:
                return other, "repeated", "exact repeat"
            # A plan that takes other steps is other know-how (another procedure, another tool's
            # arguments), however alike the goals read: it is kept apart, like differing advice.
            if score >= parts.duplicate_cosine and _same_steps(other.plan, row.plan):
                return other, "merged", f"near-duplicate (cosine {score:.2f}) merged on insert"
        return None, "created", ""
    mine = lesson_parts(row)
    near = [(o, sc) for o, sc in near if sc >= CANDIDATE_COSINE]
    for other, _ in near:  # a repeat anywhere among the candidates beats a closer paraphrase
        if other.text_hash == row.text_hash or lesson_parts(other) == mine:
            return other, "repeated", "exact repeat"
    threshold = parts.field_cosine

    def vectors(texts: Sequence[str]) -> np.ndarray:
        return embed_texts(parts.engine, parts.embedder, texts, parts.read_engine)[0]

    kept_apart = []
    for other, score in near:
        same, why = same_advice(lesson_parts(other), mine, vectors, threshold)
        if same:
            return other, "merged", f"{why} (whole-line cosine {score:.2f}) merged on insert"
        kept_apart.append(f"#{other.id}: {why}")
    return None, "created", "; ".join(kept_apart)


def add_item(parts: "Curator", kind: str, item: Any, *, namespace: str,
             episode_id: Optional[str]) -> tuple[int, str]:
    """Insert a lesson or demonstration, or fold it into the stored item it repeats or paraphrases.

    Returns (id, "created" | "merged" | "repeated" | "skipped"); a merge or repeat adds support
    and the source episode to the stored item and writes a `merge` event saying why; "skipped"
    is an untrusted namespace repeating an approved item (nothing changes).
    """
    base_model = LessonBase if kind == LESSON else DemonstrationBase
    base = _checked(parts, kind, _validate(base_model, item))
    if episode_id and episode_id not in base.source_episodes:
        base.source_episodes = [*base.source_episodes, episode_id]
    ns = namespace
    table_model = KIND_TABLE[kind]
    untrusted = ns in parts.untrusted_namespaces
    # A writer may hold its own item back (a correction that only repeats its episode's choice:
    # provenance says why); it waits in quarantine like an untrusted namespace's, and like one it
    # never rewrites an active item nor adds to its support.
    held = _plain(base.status) == ItemStatus.quarantined.value
    row = table_model(**base.model_dump(), namespace=ns)
    row.status = ItemStatus.quarantined if untrusted or held else ItemStatus.active
    emb = parts.embedder
    vecs, keys = embed_texts(parts.engine, emb, [item_text(kind, row)], parts.read_engine)
    row.text_hash, row.embedding_model = keys[0], emb.name

    for attempt in range(_OPTIMISTIC_TRIES):
        # Plan outside the write lock (the merge hook may call an LLM), commit only if nothing moved.
        parts.index.sync()
        seen = parts.index.mark
        near, action, why = _duplicate(parts, kind, row, vecs[0])
        merged, merged_key = None, None
        if near is not None and (untrusted or held):
            # An untrusted item never rewrites a trusted one nor adds to its support: a repeat
            # is dropped, anything else waits in quarantine on its own.
            if action == "repeated":
                return near.id, "skipped"
            near, action, why = None, "created", ""
        if action == "merged":
            merged = _merge(parts, kind, near, base)
            _, mk = embed_texts(parts.engine, emb, [item_text(kind, merged)], parts.read_engine)
            merged_key = mk[0]
        elif action == "repeated":  # the stored words stay; the repeat adds its support and episode
            merged = _validate(LessonBase if kind == LESSON else DemonstrationBase, near)
            merged.source_episodes = union(near.source_episodes, base.source_episodes)
            merged_key = near.text_hash
        last = attempt == _OPTIMISTIC_TRIES - 1
        with write_txn(parts) as conn:
            if head_event_id(conn) != seen and not last:
                continue  # someone changed memory meanwhile: plan again
            if action in ("merged", "repeated"):
                return _apply_merge(conn, kind, near, merged, merged_key, emb.name, episode_id, why,
                                    new_version=action == "merged"), action
            values = {k: _plain(v) for k, v in row.model_dump().items() if k != "id"}
            values.update(created_at=utcnow(), updated_at=utcnow())
            t = table_model.__table__
            row.id = int(conn.execute(insert(t).returning(t.c.id), values).scalar())
            _event(conn, kind, row, "create", after=snapshot(row), episode_id=episode_id,
                   reason="new from an untrusted namespace" if untrusted else "held back by its writer" if held else
                   (f"kept apart from {why}" if why else ""))
            if untrusted or held:
                why_held = f"namespace {ns!r} is untrusted" if untrusted else \
                    f"its writer held it back ({(base.provenance or {}).get('why_not') or 'see its provenance'})"
                _event(conn, kind, row, "quarantine", after={"status": "quarantined"}, episode_id=episode_id,
                       reason=f"{why_held}: approve with `skillmem lessons approve {row.id}`")
        parts.index.sync()
        return row.id, action
    raise AssertionError("unreachable")


def _merge(parts: "Curator", kind: str, existing: Any, new: Any) -> Any:
    if kind == LESSON:
        merged = parts.merge_hook(existing, new)  # the row: the hook sees its support
        merged = _checked(parts, kind, _validate(LessonBase, merged))
    else:  # a demonstration keeps the existing plan; the new one adds support
        merged = _validate(DemonstrationBase, existing)
    # The union of sources holds whatever the hook returned.
    merged.source_episodes = union(union(existing.source_episodes, new.source_episodes), merged.source_episodes)
    return merged


def _apply_merge(conn: Connection, kind: str, existing: Any, merged: Any, key: str, model: str,
                 episode_id: Optional[str], reason: str, *, new_version: bool = True) -> int:
    fields = LESSON_FIELDS if kind == LESSON else DEMO_FIELDS
    t = KIND_TABLE[kind].__table__
    values = {f: _plain(getattr(merged, f)) for f in fields}
    values.update(support=existing.support + 1, version=existing.version + int(new_version), text_hash=key,
                  embedding_model=model, updated_at=utcnow())
    conn.execute(update(t).where(t.c.id == existing.id).values(**values))
    after = fetch_rows(conn, kind, [existing.id])[existing.id]
    _event(conn, kind, existing, "merge", before=snapshot(existing), after=snapshot(after), episode_id=episode_id,
           reason=reason)
    return existing.id


def add_bulk(parts: "Curator", kind: str, items: Sequence[Any], *, namespace: str,
             vectors: Optional[np.ndarray] = None) -> list[int]:
    """Insert many items at once without deduplication (imports, benchmarks); one create event each."""
    ns = namespace
    emb = parts.embedder
    model = KIND_TABLE[kind]
    base_model = LessonBase if kind == LESSON else DemonstrationBase
    rows = [model(**_checked(parts, kind, _validate(base_model, it)).model_dump(), namespace=ns) for it in items]
    texts = [item_text(kind, r) for r in rows]
    if vectors is None:
        _, keys = embed_texts(parts.engine, emb, texts, parts.read_engine)
    else:  # precomputed vectors in the memory's model: store them under their hashes
        keys = [content_hash(s, emb.name) for s in texts]
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        with parts.engine.begin() as conn:
            conn.execute(insert_ignore(parts.engine, EmbeddingRow.__table__), [
                dict(text_hash=k, model=emb.name, dim=emb.dim, vector=v.tobytes(), created_at=utcnow())
                for k, v in zip(keys, vecs)])
    now = utcnow()
    untrusted = ns in parts.untrusted_namespaces
    t = model.__table__
    ids: list[int] = []
    with write_txn(parts) as conn:
        for r, k in zip(rows, keys):
            # As add_item: an untrusted namespace's items, and those their writer held back, wait.
            held = untrusted or _plain(r.status) == ItemStatus.quarantined.value
            r.text_hash, r.embedding_model = k, emb.name
            r.status = ItemStatus.quarantined if held else ItemStatus.active
        values = [{**{c: _plain(v) for c, v in r.model_dump().items() if c != "id"}, "created_at": now,
                   "updated_at": now} for r in rows]
        for i in range(0, len(values), 2000):
            ids.extend(int(x) for x in conn.execute(insert(t).returning(t.c.id), values[i:i + 2000]).scalars())
        conn.execute(insert(LessonEventRow.__table__), [
            dict(namespace=ns, item_kind=kind, item_id=i, action="create", before=None, after=None,
                 reason="bulk import", episode_id=None, created_at=now) for i in ids])
    parts.index.sync()
    return ids


# --------------------------------------------------------------------------- status and edits

TRANSITIONS = {
    "retire": ({ItemStatus.active, ItemStatus.quarantined}, ItemStatus.retired),
    "restore": ({ItemStatus.retired}, ItemStatus.active),
    "approve": ({ItemStatus.quarantined}, ItemStatus.active),
}


def _in_namespace(kind: str, item_id: int, row: Any, namespace: Optional[str]) -> Any:
    """The row if it exists (and is in `namespace`, when one is given); CurationError otherwise."""
    if row is None or (namespace is not None and row.namespace != namespace):
        where = f" in namespace {namespace!r}" if namespace is not None else ""
        raise CurationError(f"no {kind} with id {item_id}{where}; list them with `skillmem lessons -n NAMESPACE`")
    return row


def set_status(parts: "Curator", kind: str, item_id: int, action: str, reason: str,
               after_extra: Optional[dict[str, Any]] = None, *, namespace: Optional[str] = None) -> Any:
    """retire | restore | approve one item (only in `namespace`, if given); an event row records it."""
    allowed, target = TRANSITIONS[action]
    t = KIND_TABLE[kind].__table__
    with write_txn(parts) as conn:
        row = _in_namespace(kind, item_id, fetch_rows(conn, kind, [item_id]).get(int(item_id)), namespace)
        if row.status not in allowed:
            raise CurationError(
                f"{kind} {item_id} is {row.status.value}; {action} applies only to "
                f"{' or '.join(sorted(s.value for s in allowed))} items")
        conn.execute(update(t).where(t.c.id == row.id).values(status=target.value, updated_at=utcnow()))
        after = {"status": target.value, **(after_extra or {})}
        _event(conn, kind, row, action, before={"status": row.status.value}, after=after, reason=reason)
        row.status = target
    parts.index.sync_if_loaded()
    return row


def edit(parts: "Curator", kind: str, item_id: int, changes: dict[str, Any], reason: str, *,
         namespace: Optional[str] = None) -> Any:
    """Change fields of an item (only in `namespace`, if given; version + 1, re-embedded)."""
    fields = LESSON_FIELDS if kind == LESSON else DEMO_FIELDS
    unknown = set(changes) - set(fields)
    if unknown:
        raise CurationError(f"cannot edit {sorted(unknown)} of a {kind}; editable fields: {', '.join(fields)}")
    base_model = LessonBase if kind == LESSON else DemonstrationBase
    with parts.read_engine.connect() as conn:
        current = _in_namespace(kind, item_id, fetch_rows(conn, kind, [item_id]).get(int(item_id)), namespace)
    new = _checked(parts, kind, _validate(base_model, {**current.model_dump(), **changes}))
    _, keys = embed_texts(parts.engine, parts.embedder, [item_text(kind, new)], parts.read_engine)
    t = KIND_TABLE[kind].__table__
    with write_txn(parts) as conn:
        before = _in_namespace(kind, item_id, fetch_rows(conn, kind, [item_id]).get(int(item_id)), namespace)
        values = {f: _plain(getattr(new, f)) for f in changes}
        values.update(version=before.version + 1, text_hash=keys[0], embedding_model=parts.embedder.name,
                      updated_at=utcnow())
        conn.execute(update(t).where(t.c.id == before.id).values(**values))
        after = fetch_rows(conn, kind, [item_id])[int(item_id)]
        _event(conn, kind, before, "edit", before=snapshot(before), after=snapshot(after), reason=reason)
    parts.index.sync()
    return after


# --------------------------------------------------------------------------- utility


def wilson_upper(successes: int, n: int, z: float = WILSON_Z) -> float:
    """Upper end of the Wilson score interval for a success rate (one-sided bound at `z`)."""
    if n == 0:
        return 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + spread) / denom)


def lesson_utility(parts: "Curator", namespace: str) -> dict[int, dict[str, Any]]:
    """For each active lesson: its verified episodes and success rate vs. the same task types without it.

    Only verified outcomes (outcome_source set) count, and evaluation splits never do:
    what is measured on evaluation must not change memory.
    """
    eval_splits = tuple(sorted(EVAL_SPLITS))
    with parts.read_engine.connect() as conn:
        eps = {r[0]: (r[1], r[2] == "success") for r in conn.execute(text(
            "SELECT id, task_type, outcome FROM episodes WHERE namespace = :ns AND outcome_source IS NOT NULL "
            "AND outcome IN ('success', 'failure') AND split NOT IN :ev").bindparams(bindparam("ev", expanding=True)),
            {"ns": namespace, "ev": list(eval_splits)})}
        used: dict[int, set[str]] = {}
        for lid, ep in conn.execute(text(
                "SELECT DISTINCT r.item_id, r.episode_id FROM retrievals r JOIN lessons l ON l.id = r.item_id "
                "WHERE r.item_kind = 'lesson' AND r.namespace = :ns AND l.status = 'active' "
                "AND r.episode_id IS NOT NULL"), {"ns": namespace}):
            if ep in eps:
                used.setdefault(int(lid), set()).add(ep)
    by_type: dict[str, list[bool]] = {}
    for tt, ok in eps.values():
        by_type.setdefault(tt, []).append(ok)
    out: dict[int, dict[str, Any]] = {}
    for lid, episodes in sorted(used.items()):
        n = len(episodes)
        s = sum(eps[e][1] for e in episodes)
        # Baseline: the same task types, in the same mix, in episodes that did not see this lesson.
        base_num = base_den = 0.0
        base_n = 0
        for tt in {eps[e][0] for e in episodes}:
            mine = [eps[e][1] for e in episodes if eps[e][0] == tt]
            others_n = len(by_type[tt]) - len(mine)
            if others_n <= 0:
                continue
            others_s = sum(by_type[tt]) - sum(mine)
            base_num += len(mine) * others_s / others_n
            base_den += len(mine)
            base_n += others_n
        baseline = base_num / base_den if base_den else None
        out[lid] = dict(uses=n, successes=s, rate=round(s / n, 4), upper=round(wilson_upper(s, n), 4),
                        baseline=None if baseline is None else round(baseline, 4), baseline_episodes=base_n)
    return out


def update_utility(parts: "Curator", namespace: str, *, min_uses: int = MIN_USES
                   ) -> list[int]:
    """Retire lessons whose episodes do reliably worse than the baseline; returns their ids."""
    ns = namespace
    retired = []
    for lid, u in lesson_utility(parts, ns).items():
        if u["uses"] >= min_uses and u["baseline"] is not None and u["upper"] < u["baseline"]:
            set_status(parts, LESSON, lid, "retire",
                       reason=f"measured: {u['successes']}/{u['uses']} episodes succeeded with it "
                              f"(upper bound {u['upper']}) vs {u['baseline']} without it",
                       after_extra={**u, "min_uses": min_uses, "z": WILSON_Z})
            retired.append(lid)
    return retired
