"""Trace analysis: where a failed episode went wrong, what a success did instead, in slot form.

The analysis is the input of every lesson writer. What a step *is* (an action, a look, a
thought), whether it failed, what the goal names and which situations hold all come from the
`Domain` (default: :class:`~skillmem.domain.TextDomain`); this module only weighs evidence.
It localizes the *pivot* (the step the lesson is about) from the strongest evidence the trace
has, in this order:

1. directive feedback: a teacher, expert or person said what to do at a step;
2. a successful episode of the *same* task: aligned on state-changing actions only (thoughts,
   "OK." exchanges and looks skipped, wording ignored), the first action that departs from it,
   unless the success had already taken it by then (a repeat of shared work is not the mistake);
3. a step the world refused (a tool error, an exception, a refused command), or one the domain
   sees did nothing toward the goal: the earlier; never a step the same task's success also took;
4. a successful episode of the same task *type*, compared in slot form;
5. a repeated action that changed nothing (a loop);
6. the last action.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from ..domain import Domain, Rule, SlotMap, StepKind, StepView, TextDomain, TypePlan, call_name
from ..tokens import count_tokens
from .safety import redact

__all__ = ["Analysis", "Directive", "Pivot", "Rule", "SlotMap", "Trace", "TraceStep", "analyse", "load_trace",
           "localize_pivot", "nearest_success"]

_DEFAULT = TextDomain()


def _domain(domain: Optional[Domain]) -> Any:
    return domain if domain is not None else _DEFAULT


# --------------------------------------------------------------------------- traces


@dataclass
class TraceStep:
    """One step as the analysis sees it; `kind`, `failed` and `signal` are the domain's reading."""

    index: int
    observation: str
    action: str
    feedback: str
    reward: float = 0.0
    error: Optional[str] = None
    kind: str = StepKind.action.value
    failed: bool = False
    signal: str = ""
    admissible: Optional[list[str]] = None  # the commands the world offered, when it listed them

    @property
    def view(self) -> StepView:
        return StepView(self.action, self.feedback, self.error, self.observation,
                        tuple(self.admissible) if self.admissible else None)

    @property
    def is_action(self) -> bool:
        """Changes the world (not a thought, chat, or a look)."""
        return self.kind == StepKind.action.value


@dataclass
class Directive:
    """A correction at a step: what to do instead, from whom."""

    step_index: Optional[int]
    corrected_action: Optional[str]
    text: str
    source: str


@dataclass
class Trace:
    """An episode with its steps, directive feedback and verifier's reasons, ready to analyse."""

    episode_id: str
    goal: str
    task_type: str
    task_id: str
    outcome: str
    steps: list[TraceStep]
    directives: list[Directive] = field(default_factory=list)
    namespace: str = "default"
    reasons: list[str] = field(default_factory=list)  # evaluative feedback: a verifier's or a person's words
    domain: Any = field(default=None, repr=False)  # the Domain that read the steps (read_with)

    def read_with(self, domain: Optional[Domain]) -> "Trace":
        """Mark every step as the domain reads it (kind, failed, signal); returns self."""
        d = _domain(domain)
        # In a tool-calling agent's episode, a step that calls no tool is a message (its final answer,
        # a remark), not an action: the world only changes through the tools.
        tools = any(call_name(s.action) for s in self.steps)
        for s in self.steps:
            v = s.view
            s.kind = d.step_kind(v).value
            if tools and s.kind == StepKind.action.value and not call_name(s.action):
                s.kind = StepKind.reasoning.value
            verdict = d.failure(v) if s.kind != StepKind.reasoning.value else None
            s.failed, s.signal = (bool(verdict), verdict.signal) if verdict is not None else (False, "")
        # A reply the world gives unchanged to different commands is a no-op, read over the episode.
        noops = d.noop_replies([s.view for s in self.steps]) if hasattr(d, "noop_replies") else {}
        for i, signal in noops.items():
            if not self.steps[i].failed:
                self.steps[i].failed, self.steps[i].signal = True, signal
        self.domain = d
        return self

    @property
    def final_answer(self) -> str:
        """The agent's last words when it ended on a message, not an action ("" otherwise)."""
        last = self.steps[-1] if self.steps else None
        return last.action if last is not None and last.kind == StepKind.reasoning.value else ""

    def raw_text(self) -> str:
        """The trajectory as an agent's context would hold it: goal, then actions and what came back."""
        lines = [f"Your task is to: {self.goal}"]
        prev = None
        for s in self.steps:
            if s.observation and s.observation != prev:
                lines.append(s.observation)
            lines.append(f"> {s.action}")
            lines.append(s.feedback)
            prev = s.feedback
        return "\n".join(lines)

    @property
    def raw_tokens(self) -> int:
        return count_tokens(self.raw_text())


def load_trace(memory: Any, episode_id: str, domain: Optional[Domain] = None) -> Trace:
    """Read one episode, its steps, directive feedback and evaluative reasons from the store."""
    ep = memory.get_episode(episode_id)
    steps = [TraceStep(s.index, s.observation, s.action, s.feedback, s.reward, s.error,
                       admissible=list(s.admissible) if s.admissible else None)
             for s in memory.steps(episode_id)]
    fbs = list(memory.feedback_for(episode_id))
    directives = [Directive(f.step_index, f.corrected_action, f.text, f.source)
                  for f in fbs if getattr(f.kind, "value", f.kind) == "directive"]
    reasons = [f"{f.source}: {f.text}" for f in fbs
               if getattr(f.kind, "value", f.kind) != "directive" and (f.text or "").strip()]
    return Trace(ep.id, ep.goal, ep.task_type, ep.task_id, getattr(ep.outcome, "value", ep.outcome),
                 steps, directives, ep.namespace, reasons).read_with(domain)


def nearest_success(memory: Any, trace: Trace, *, limit: int = 200, domain: Optional[Domain] = None
                    ) -> Optional[Trace]:
    """The successful episode most like this one: same task first, then same goal words, same type.

    Only verified successes of non-evaluation splits count (DESIGN principles 1 and 6).
    """
    rows = _type_successes(memory, trace, limit)
    if not rows:
        return None
    goal_words = set(re.findall(r"\w+", trace.goal.lower()))

    def score(row: Any) -> tuple[int, float]:
        words = set(re.findall(r"\w+", (row[2] or "").lower()))
        jacc = len(words & goal_words) / max(1, len(words | goal_words))
        return (int(bool(trace.task_id) and row[1] == trace.task_id), jacc)

    best = max(rows, key=score)
    return load_trace(memory, best[0], domain)


def _type_successes(memory: Any, trace: Trace, limit: int) -> list[Any]:
    """(id, task_id, goal) of the verified successes of the trace's task type, newest first."""
    from sqlalchemy import text as sql

    with memory.engine.connect() as conn:
        return list(conn.execute(sql(
            "SELECT id, task_id, goal FROM episodes WHERE namespace = :ns AND task_type = :tt "
            "AND outcome = 'success' AND outcome_source IS NOT NULL AND id != :id "
            "AND split NOT IN ('valid_seen', 'valid_unseen', 'test') ORDER BY started_at DESC LIMIT :n"),
            {"ns": trace.namespace, "tt": trace.task_type, "id": trace.episode_id, "n": limit}).fetchall())


def type_success_plans(memory: Any, trace: Trace, *, limit: int = 32, domain: Optional[Domain] = None
                       ) -> list[TypePlan]:
    """The plans of up to `limit` recorded successes of the trace's task type (newest first), each
    slotted as `analyse` writes a success's plan and as played: the evidence of what the type's
    successes do, whatever their episode's values (a domain reads a correction most of them make
    as a skill of the type, not one episode's choice). Same selection as `nearest_success`."""
    d = _domain(domain if domain is not None else trace.domain)
    out = []
    for row in _type_successes(memory, trace, limit):
        success = load_trace(memory, row[0], d)
        out.append(TypePlan(success_plan_of(success, d),
                            [_written(d, s.action) for s in success.steps if not s.failed and s.is_action]))
    return out


class LazyPlans(Sequence):
    """Plans read only when a domain first looks at them: `LazyPlans(lambda: type_success_plans(...))`.
    Most failures' rules never do (only a first-choice correction asks the type's successes), and
    reading 32 successes' steps for each failure reflected is work for nothing."""

    def __init__(self, load: Callable[[], list[TypePlan]]):
        self._load, self._plans = load, None

    def _read(self) -> list[TypePlan]:
        if self._plans is None:
            self._plans = self._load()
        return self._plans

    def __len__(self) -> int:
        return len(self._read())

    def __getitem__(self, i: Any) -> Any:
        return self._read()[i]


def success_plan_of(success: Trace, d: Any) -> list[str]:
    """A success's plan: its steps that did something, slotted with its own goal's values."""
    if success.domain is not d:
        success.read_with(d)
    s_slots = episode_slots(d, success)
    return [_plan_step(s, success, s_slots, d) for s in success.steps if not s.failed and s.is_action]


# --------------------------------------------------------------------------- analysis


@dataclass
class Pivot:
    """Where the episode went wrong and why the analysis thinks so."""

    step: Optional[int]
    reason: str  # directive | diverged_from_same_task | failure_feedback | wasted_step | diverged_from_task_type | stopped_short | loop | last_step | none
    corrected_action: Optional[str] = None  # what to do instead, when the evidence says
    evidence: str = ""
    expected: Optional[str] = None  # in slot form: what a success of the task type did there


@dataclass
class Analysis:
    """Everything a lesson writer needs, already abstracted into slots."""

    trace: Trace
    slots: Any  # the domain's SlotMap
    goal_template: str
    pivot: Pivot
    bad_action: str  # with slots
    fix_action: Optional[str]  # with slots, when known
    feedback_at_pivot: str  # redacted, abstracted
    before_pivot: list[str]  # the actions (with slots) leading to the pivot
    success_plan: list[str]  # the nearest success's plan with slots, [] when there is none
    success_episode: Optional[str]
    first_failure_step: Optional[int]
    grounded_on_feedback: bool
    rules: list[Rule] = field(default_factory=list)  # what the failure teaches, as situation rules
    domain: Any = None
    situation: list[str] = field(default_factory=list)  # the facts that held at the pivot

    @property
    def rule(self) -> Optional[Rule]:
        """The main rule (the pivot's when it transfers; when none transfers, the one saying why), or None."""
        return self.rules[0] if self.rules else None

    def render(self, max_steps: int = 30) -> str:
        """The analysis as text for an LLM writer: short, abstracted, untrusted text redacted."""
        t = self.trace
        ab = self.slots.abstract
        prose = getattr(self.slots, "abstract_prose", ab)
        lines = [f"Task type: {t.task_type or 'unknown'}", f"Goal (slots): {self.goal_template}",
                 f"Slots: {', '.join(f'{k} = {v}' for k, v in self.slots.slots.items()) or 'none'}",
                 f"Outcome: {t.outcome}", "", "Trace (step kind, action -> next-state feedback), slots applied:"]
        steps = t.steps
        if len(steps) > max_steps:  # keep the pivot's neighbourhood
            p = self.pivot.step or 0
            lo = max(0, min(p - max_steps // 2, len(steps) - max_steps))
            steps = steps[lo: lo + max_steps]
            lines.append(f"  (steps {lo}-{lo + len(steps) - 1} of {len(t.steps)})")
        for s in steps:
            mark = "  <-- PIVOT" if s.index == self.pivot.step else ""
            fb = _short(prose(redact(s.feedback)), 160)
            tag = "" if s.kind == StepKind.action.value else f"[{s.kind}] "
            err = f" [failed: {_short(redact(s.signal), 80)}]" if s.failed else ""
            lines.append(f"  {s.index}. {tag}{ab(s.action)} -> {fb}{err}{mark}")
        lines += ["", f"Pivot step: {self.pivot.step} ({self.pivot.reason})",
                  f"Action at the pivot: {self.bad_action}",
                  f"Feedback at the pivot: {self.feedback_at_pivot}"]
        if self.situation:
            lines.append(f"Situation at the pivot: {', '.join(self.situation)}")
        if self.fix_action:
            lines.append(f"What should have been done at the pivot: {self.fix_action}")
        for r in self.rules:
            lines.append(f"As a rule: when {', '.join(r.situation) or 'always'}: {r.fix} (not {r.bad_action})"
                         + (f" -- mistake: {r.mistake}" if r.mistake else "")
                         + ("" if r.transferable else f" -- does not transfer: {r.why_not}"))
        for d in t.directives:
            lines.append(f"Directive feedback from {d.source} at step {d.step_index}: "
                         f"{ab(d.corrected_action or '')} {_short(redact(d.text), 200)}".rstrip())
        for r in t.reasons:
            lines.append(f"Verifier's reason: {_short(prose(redact(r)), 300)}")
        if t.final_answer:
            lines.append(f"Final answer: {_short(prose(redact(t.final_answer)), 300)}")
        if self.success_plan:
            lines.append("Plan of the nearest successful episode of this task type: "
                         + "; ".join(self.success_plan[:25]))
        return "\n".join(lines)


def episode_slots(d: Any, trace: Trace) -> Any:
    """What the goal names, as the domain slots it, told the episode's actions when it can use them
    (TextDomain keeps a goal noun only when an action names it too)."""
    try:
        takes_actions = "actions" in inspect.signature(d.slots).parameters
    except (TypeError, ValueError):
        takes_actions = False
    if takes_actions:
        return d.slots(trace.goal, actions=[s.action for s in trace.steps if s.kind != StepKind.reasoning.value])
    return d.slots(trace.goal)


def _short(text: str, limit: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _written(d: Any, action: str) -> str:
    return d.written(action) if hasattr(d, "written") else " ".join((action or "").split())


def _template(slots: Any, goal: str) -> str:
    """The goal with its values as slots: the template a new goal is read with."""
    prose = getattr(slots, "abstract_prose", None)
    return prose(goal.rstrip("."), nouns=True) if prose is not None else slots.abstract(goal.rstrip("."))


def _plan_step(step: TraceStep, trace: Trace, slots: Any, d: Any) -> str:
    """A step of a success as a plan step: slotted, values read earlier named by where they came from."""
    out = slots.abstract(_written(d, step.action))
    if hasattr(d, "lesson_text"):
        out = d.lesson_text(out, [s.view for s in trace.steps[: step.index]], slots)
    return out


def _action_steps(trace: Trace, *, skip_failed: bool = False) -> list[TraceStep]:
    """The state-changing steps (no thoughts, chat, looks), in order."""
    return [s for s in trace.steps if s.is_action and not (skip_failed and s.failed)]


def _first_loop(trace: Trace, d: Any) -> Optional[int]:
    """First step that repeats an earlier action with the same feedback, nothing having changed."""
    seen: dict[tuple[str, str], int] = {}
    progressed = getattr(d, "progressed", None)
    for s in trace.steps:
        if s.kind == StepKind.reasoning.value:
            continue
        key = (d.action_key(s.action), " ".join(s.feedback.split()))
        if key in seen:
            return s.index
        seen[key] = s.index
        if progressed is not None and progressed(s.view):
            seen.clear()  # the world changed: earlier observations may no longer hold
    return None


def _same_task_pivot(trace: Trace, success: Trace, d: Any) -> Optional[Pivot]:
    """First state-changing action, from where the two part ways, that the success never took."""
    mine = _action_steps(trace)
    theirs = _action_steps(success, skip_failed=True)
    mk = [d.action_key(s.action) for s in mine]
    tk = [d.action_key(s.action) for s in theirs]
    start = next((i for i, k in enumerate(mk) if i >= len(tk) or k != tk[i]), None)
    if start is None:
        return None
    for i in range(start, len(mine)):
        # A step the success had already taken by this point (a repeat of shared work) is not the
        # mistake; one it took only later, or never, is: done now, it was the wrong step.
        if mk[i] not in set(tk[: i + 1]):
            fix = theirs[min(i, len(theirs) - 1)].action if theirs and start < len(theirs) else None
            return Pivot(mine[i].index, "diverged_from_same_task", fix, f"success {success.episode_id} did {fix!r}")
    # Every step after the parting only repeated work the success had already done: the mistake is
    # where it parted, doing that repeat instead of the success's next step (never a step both took).
    fix = theirs[start].action if start < len(theirs) else None
    return Pivot(mine[start].index, "stopped_short", fix, f"success {success.episode_id} did {fix!r} instead")


def localize_pivot(trace: Trace, success: Optional[Trace] = None, slots: Any = None,
                   domain: Optional[Domain] = None) -> Pivot:
    """The step where the episode went wrong, from the strongest evidence available (module doc)."""
    d = _domain(domain)
    keys = [d.action_key(s.action) for s in trace.steps]
    # 1. A correction at a step where the agent did something else.
    for fb in sorted((x for x in trace.directives if x.step_index is not None), key=lambda x: x.step_index):
        if fb.step_index < len(keys) and (not fb.corrected_action or
                                          d.action_key(fb.corrected_action) != keys[fb.step_index]):
            return Pivot(fb.step_index, "directive", fb.corrected_action, f"{fb.source}: {fb.text}".strip(": "))
    same_task = success is not None and bool(trace.task_id) and success.task_id == trace.task_id
    # 2. A success of the same task: its actions are one plan that worked in the same world.
    if same_task:
        p = _same_task_pivot(trace, success, d)
        if p is not None:
            return p
    # 3. The world said the action failed, or a step did nothing toward the goal: the earlier.
    also_took = {d.action_key(s.action) for s in success.steps} if same_task else set()
    first_fail = next((s.index for s in trace.steps if s.failed and d.action_key(s.action) not in also_took), None)
    slots = slots if slots is not None else episode_slots(d, trace)
    wasted = d.wasted_step(trace, slots) if hasattr(d, "wasted_step") else None
    if first_fail is not None and (wasted is None or first_fail <= wasted):
        return Pivot(first_fail, "failure_feedback", None, trace.steps[first_fail].signal or
                     trace.steps[first_fail].feedback)
    if wasted is not None:
        return Pivot(wasted, "wasted_step", None, "in hindsight this step did nothing toward the goal")
    # 4. A success of the same type, in slot form (different rooms, same skill).
    if success is not None:
        s_slots = episode_slots(d, success)
        mine = _action_steps(trace)
        theirs = _action_steps(success, skip_failed=True)
        a = [_plan_step(s, trace, slots, d) for s in mine]
        b = [_plan_step(s, success, s_slots, d) for s in theirs]
        i = next((i for i, x in enumerate(a) if i >= len(b) or x != b[i]), None)
        if i is not None:
            fix = b[i] if i < len(b) else None
            return Pivot(mine[i].index, "diverged_from_task_type", None, f"success {success.episode_id} did {fix!r}",
                         _plan_step(theirs[i], success, s_slots, d) if i < len(theirs) else None)
        if mine and len(a) < len(b):
            # It did what the success did, then stopped: the mistake is the step it never took.
            return Pivot(mine[-1].index, "stopped_short", None, f"success {success.episode_id} went on with {b[len(a)]!r}",
                         _plan_step(theirs[len(a)], success, s_slots, d))
    # 5. A loop: the agent repeated itself and nothing changed.
    loop = _first_loop(trace, d)
    if loop is not None:
        nxt = None
        if success is not None:
            done = {d.action_key(s.action) for s in trace.steps[:loop]}
            nxt = next((_plan_step(s, success, episode_slots(d, success), d) for s in _action_steps(success, skip_failed=True)
                        if d.action_key(s.action) not in done), None)
        return Pivot(loop, "loop", None, "repeated an earlier action with the same result", nxt)
    acts = [s.index for s in trace.steps if s.kind != StepKind.reasoning.value]
    if acts or trace.steps:
        return Pivot((acts or [len(trace.steps) - 1])[-1], "last_step", None,
                     "no failure signal; the last action is blamed")
    return Pivot(None, "none", None, "the episode has no steps")


def analyse(trace: Trace, success: Optional[Trace] = None, domain: Optional[Domain] = None,
            type_plans: Optional[Sequence[TypePlan]] = None) -> Analysis:
    """Localize the pivot, contrast with the nearest success, abstract names into slots.

    `type_plans`: the plans of the task type's recorded successes (`type_success_plans`), given to
    a domain whose `rules` takes them as evidence of what transfers; None: the nearest success's only."""
    d = _domain(domain if domain is not None else trace.domain)
    if trace.domain is not d:
        trace.read_with(d)
    if success is not None and success.domain is not d:
        success.read_with(d)
    slots = episode_slots(d, trace)
    prose = getattr(slots, "abstract_prose", slots.abstract)
    goal_template = _template(slots, trace.goal)
    pivot = localize_pivot(trace, success, slots, d)
    step = trace.steps[pivot.step] if pivot.step is not None else None
    bad = slots.abstract(_written(d, step.action)) if step else ""
    fix = slots.abstract(_written(d, pivot.corrected_action)) if pivot.corrected_action else None
    success_plan: list[str] = []
    if success is not None:
        success_plan = success_plan_of(success, d)
        if fix is None and pivot.reason == "failure_feedback":
            fix = _contrast_fix(trace, pivot.step or 0, slots, success_plan, d)
    before = [s for s in trace.steps[: pivot.step or 0]]
    situation = sorted(d.state(trace.goal, [s.view for s in before]).facts) if step else []
    return Analysis(
        trace=trace, slots=slots, goal_template=goal_template, pivot=pivot, bad_action=bad, fix_action=fix,
        feedback_at_pivot=_short(prose(redact(step.feedback)), 200) if step else "",
        before_pivot=[slots.abstract(_written(d, s.action)) for s in before if s.kind != StepKind.reasoning.value][-5:],
        success_plan=success_plan, success_episode=success.episode_id if success else None,
        first_failure_step=next((s.index for s in trace.steps if s.failed), None),
        grounded_on_feedback=pivot.reason == "directive",
        rules=_rules(d, trace, pivot, slots, success_plan, type_plans), domain=d, situation=situation,
    )


def _rules(d: Any, trace: Trace, pivot: Pivot, slots: Any, success_plan: list[str],
           type_plans: Optional[Sequence[TypePlan]]) -> list[Any]:
    """The domain's rules, given the task type's success plans when its `rules` takes them."""
    try:
        takes = "type_plans" in inspect.signature(d.rules).parameters
    except (TypeError, ValueError):
        takes = False
    if takes:
        plans = type_plans if type_plans is not None else ([TypePlan(success_plan)] if success_plan else [])
        return d.rules(trace, pivot, slots, success_plan, type_plans=plans)
    return d.rules(trace, pivot, slots, success_plan)


def _verb(action: str) -> str:
    return call_name(action) or (action.split() or [""])[0]


def _contrast_fix(trace: Trace, pivot: int, slots: Any, success_plan: list[str], d: Any) -> Optional[str]:
    """What the success did right after the last action the two share before the pivot."""
    done = [slots.abstract(_written(d, s.action)) for s in trace.steps[:pivot] if s.is_action]
    verb = _verb(_written(d, trace.steps[pivot].action))
    # The success's step with the same verb is what this step should have looked like.
    same_verb = [a for a in success_plan if _verb(a) == verb]
    if same_verb:
        return same_verb[0]
    for a in success_plan:
        if a not in done:
            return a
    return None
