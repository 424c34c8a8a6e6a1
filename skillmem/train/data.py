"""Training examples read from the store: every kind of signal as one `Example` shape.

* ``demo``: each step of a successful episode (SFT; amplified as a positive), except, in a
  guided retry, the moves after the pivot that only a teacher who sees everything could make
  (the domain says which: a pack knows when a teacher walked straight to what was hidden);
* ``negative``: the bad action at a failed episode's pivot (pushed down); the steps before
  the pivot — the prefix the failure shares with a good run — give no negative example;
* ``directive``: a corrected action from directive feedback at a step (SFT);
* ``distill``: a state with the lessons that apply to its task: the teacher sees them,
  the student less and less (context distillation).

Examples carry a group (the task) and whether the group is degenerate (all its episodes
ended the same way), for down-weighting.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from sqlalchemy import text

from ..policy.base import Hints, Prompt, hints_from_context, memory_text

KINDS = ("demo", "negative", "directive", "distill")
TRAIN_SPLITS = ("train", "live")


@dataclass
class Example:
    """One decision to learn from: the state, the candidates, the action and what to do with it."""

    kind: str  # one of KINDS
    goal: str
    history: list[tuple[str, str]]  # (action, observation) before this decision
    candidates: list[str]  # the admissible actions (target included)
    target: str  # demo/directive: the action to imitate; negative: the bad action
    good_action: Optional[str] = None  # negative: the right action, whose shared prefix is not pushed down
    memory_text: str = ""  # distill: what the teacher reads
    memory_hints: Optional[Hints] = None  # distill: the teacher's hints
    group: str = ""  # the task, for degenerate-group weighting
    degenerate: bool = False
    task_type: str = ""
    episode_id: str = ""
    step_index: int = 0

    def prompt(self, with_memory: bool) -> Prompt:
        if with_memory:
            return Prompt(self.goal, self.history, self.memory_text, self.memory_hints)
        return Prompt(self.goal, self.history)

    @property
    def target_index(self) -> int:
        return self.candidates.index(self.target)


@dataclass
class TaskContext:
    """Lessons and demonstrations for one task type, in the shape `memory.retrieve` returns."""

    lessons: list[Any] = field(default_factory=list)
    demonstrations: list[Any] = field(default_factory=list)
    text: str = ""


def context_by_task_type(engine: Any, namespace: str, config: Any = None) -> dict[str, TaskContext]:
    """Active lessons and demonstrations per task type, straight from SQL (no embedding model).

    As many as a retrieval takes (`config`, a RetrievalConfig: k lessons, k_demos
    demonstrations), rendered as the agent would be shown them, within its token budget.
    """
    from ..retrieve import RetrievalConfig, render_memory
    from ..store import DemonstrationRow, LessonRow
    from sqlalchemy import select

    config = config or RetrievalConfig()
    max_lessons, max_demos = config.k, config.k_demos

    out: dict[str, TaskContext] = defaultdict(TaskContext)
    general: list[Any] = []
    with engine.connect() as conn:
        lt = LessonRow.__table__
        for r in conn.execute(select(lt).where(lt.c.namespace == namespace, lt.c.status == "active")
                              .order_by(lt.c.support.desc(), lt.c.id)).mappings():
            les = LessonRow.model_validate(dict(r))
            if les.scope == "general" or not les.task_type:
                general.append(les)
            elif len(out[les.task_type].lessons) < max_lessons:
                out[les.task_type].lessons.append(les)
        dt = DemonstrationRow.__table__
        for r in conn.execute(select(dt).where(dt.c.namespace == namespace, dt.c.status == "active")
                              .order_by(dt.c.support.desc(), dt.c.id)).mappings():
            demo = DemonstrationRow.model_validate(dict(r))
            if len(out[demo.task_type].demonstrations) < max_demos:
                out[demo.task_type].demonstrations.append(demo)
    for ctx in out.values():
        ctx.lessons += general[: max(0, max_lessons - len(ctx.lessons))]
        ctx.text = render_memory(ctx.lessons, ctx.demonstrations, config.token_budget)[0]
    return dict(out)


def _candidates(admissible: Optional[Sequence[str]], target: str, extra: Sequence[str], limit: int,
                rng: random.Random) -> list[str]:
    cands = list(dict.fromkeys(list(admissible or []) + [target] + [e for e in extra if e]))
    if limit and len(cands) > limit:
        keep = {target, *[e for e in extra if e]}
        others = [c for c in cands if c not in keep]
        rng.shuffle(others)
        cands = [c for c in cands if c in keep or c in set(others[: limit - len(keep)])]
    return cands


def collect_examples(engine: Any, namespace: str = "default", *, splits: Sequence[str] = TRAIN_SPLITS,
                     max_history: int = 6, max_candidates: int = 32, min_group_size: int = 2,
                     context_fn: Optional[Callable[[str, str], Any]] = None, distill: bool = True,
                     seed: int = 0, domain: Any = None) -> list[Example]:
    """Every training example the store holds for `namespace`, from episodes in `splits` only.

    `domain` reads the steps (which failed, which moves of a guided retry only a teacher who
    sees everything could make) and gives the distill examples' hints; default TextDomain.

    `context_fn(goal, task_type)` gives the memory a distill example's teacher reads
    (e.g. ``lambda g, t: memory.retrieve(g, task_type=t)``); by default the active
    lessons and demonstrations of the task type, read from SQL.
    """
    from ..domain import StepView, TextDomain

    d = domain if domain is not None else TextDomain()
    rng = random.Random(seed)
    with engine.connect() as conn:
        split_list = ",".join(f"'{s}'" for s in splits if s.isidentifier())
        eps = conn.execute(text(
            f"SELECT id, task_id, task_type, goal, outcome, meta FROM episodes WHERE namespace = :ns "
            f"AND status = 'finished' AND split IN ({split_list}) ORDER BY started_at, id"), {"ns": namespace}).all()
        steps: dict[str, list[Any]] = defaultdict(list)
        for r in conn.execute(text(
                f"SELECT s.episode_id, s.\"index\", s.observation, s.action, s.feedback, s.admissible FROM steps s "
                f"JOIN episodes e ON e.id = s.episode_id WHERE e.namespace = :ns AND e.status = 'finished' "
                f"AND e.split IN ({split_list}) ORDER BY s.episode_id, s.\"index\""), {"ns": namespace}):
            steps[r[0]].append(r)
        corrections: dict[tuple[str, int], str] = {}
        for ep_id, idx, action in conn.execute(text(
                "SELECT episode_id, step_index, corrected_action FROM feedback WHERE namespace = :ns "
                "AND kind = 'directive' AND corrected_action IS NOT NULL AND step_index IS NOT NULL "
                "ORDER BY id"), {"ns": namespace}):
            corrections[(ep_id, int(idx))] = action
        pivots: dict[str, int] = {}
        for src, pivot in conn.execute(text(
                "SELECT source_episodes, pivot_step FROM lessons WHERE namespace = :ns AND pivot_step IS NOT NULL"),
                {"ns": namespace}):
            for ep_id in (json.loads(src) if isinstance(src, str) else src) or []:
                pivots.setdefault(ep_id, int(pivot))

    contexts = context_by_task_type(engine, namespace) if (distill and context_fn is None) else {}
    outcomes: dict[str, list[str]] = defaultdict(list)
    for ep in eps:
        outcomes[ep.task_id or ep.goal].append(ep.outcome)

    def admissible_of(row: Any) -> list[str]:
        adm = row[5]
        if isinstance(adm, str):
            adm = json.loads(adm)
        return list(adm or [])

    examples: list[Example] = []
    for ep in eps:
        group = ep.task_id or ep.goal
        outs = outcomes[group]
        degenerate = len(outs) >= min_group_size and len(set(outs)) == 1
        rows = steps.get(ep.id, [])
        history: list[tuple[str, str]] = []
        hist_at: list[list[tuple[str, str]]] = []
        for r in rows:
            hist_at.append(history[-max_history:] if max_history else [])
            history = history + [(r[3], r[4] or r[2])]

        def make(kind: str, i: int, target: str, good: Optional[str] = None) -> Example:
            cands = _candidates(admissible_of(rows[i]), target, [good] if good else [], max_candidates, rng)
            return Example(kind=kind, goal=ep.goal, history=list(hist_at[i]), candidates=cands, target=target,
                           good_action=good, group=group, degenerate=degenerate, task_type=ep.task_type,
                           episode_id=ep.id, step_index=i)

        for (ep_id, i), action in corrections.items():
            if ep_id == ep.id and i < len(rows):
                examples.append(make("directive", i, action))
        if ep.outcome == "success":
            meta = json.loads(ep.meta) if isinstance(ep.meta, str) else (ep.meta or {})
            privileged = d.privileged_steps([StepView(r[3] or "", r[4] or "") for r in rows], int(meta.get("pivot", 0))) \
                if meta.get("guided_retry_of") else set()
            examples += [make("demo", i, r[3]) for i, r in enumerate(rows) if r[3] and i not in privileged]
        elif ep.outcome == "failure":
            pivot = pivots.get(ep.id)
            if pivot is None:
                fixed = [i for (e, i) in corrections if e == ep.id]
                pivot = min(fixed) if fixed else None
            if pivot is None:  # no lesson or feedback says where: the first action the world refused
                pivot = next((i for i, r in enumerate(rows) if d.failure(StepView(r[3] or "", r[4] or ""))), None)
            if pivot is not None and pivot < len(rows) and rows[pivot][3]:
                good = corrections.get((ep.id, pivot))
                if good != rows[pivot][3]:
                    examples.append(make("negative", pivot, rows[pivot][3], good))
        if distill and ep.outcome in ("success", "failure"):
            ctx = context_fn(ep.goal, ep.task_type) if context_fn else contexts.get(ep.task_type)
            if ctx is None:
                continue
            for i, r in enumerate(rows):
                if not r[3] or (ep.outcome == "failure" and i > pivots.get(ep.id, len(rows))):
                    continue
                ex = make("distill", i, r[3])
                ex.memory_hints = hints_from_context(ctx, ep.goal, ex.history, ex.candidates, d)
                ex.memory_text = memory_text(ctx, ep.goal, ex.history, ex.candidates, d, ex.memory_hints)
                if ex.memory_text or ex.memory_hints:
                    examples.append(ex)
    return examples


def split_heldout(examples: Sequence[Example], fraction: float, seed: int = 0) -> tuple[list[Example], list[Example]]:
    """(train, held-out) by group, so a task's states never sit on both sides."""
    groups = sorted({e.group for e in examples})
    random.Random(seed).shuffle(groups)
    held = set(groups[: int(round(len(groups) * fraction))])
    return [e for e in examples if e.group not in held], [e for e in examples if e.group in held]
