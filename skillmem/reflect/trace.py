"""Trace analysis: where a failed episode went wrong, what a success did instead, in slot form.

The analysis is the input of every lesson writer. It localizes the *pivot* (the step where
the episode went wrong) from the strongest evidence the trace has, in this order:

1. directive feedback: a teacher, expert or person said what to do at a step;
2. a successful episode of the *same* task: the first step where the failure's actions differ;
3. next-state feedback that shows failure ("Nothing happens.", error text, a non-zero error);
4. a successful episode of the same task *type*, compared in slot form;
5. a repeated action that changed nothing (a loop).

Object names are abstracted into slots ("mug 1" -> "[object]", "cabinet 3" -> "[receptacle2]")
and the mapping is kept, so a lesson written from one room applies in another. Appliances that
define a skill (microwave, fridge, sinkbasin, desklamp ...) keep their name: "heat [object] with
microwave" is the skill, whichever microwave it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from ..tokens import count_tokens
from .safety import redact

# ALFWorld's receptacle types (the household environment uses the same names).
RECEPTACLES = frozenset(
    "armchair bathtubbasin bed cabinet cart coffeemachine coffeetable countertop desk diningtable drawer "
    "dresser fridge garbagecan handtowelholder laundryhamper microwave ottoman safe shelf sidetable "
    "sinkbasin sofa stoveburner toaster toilet toiletpaperhanger towelholder tvstand".split()
)
# Receptacles and objects whose *kind* is the skill: their name stays in a lesson.
APPLIANCES = frozenset("microwave fridge sinkbasin stoveburner desklamp floorlamp toaster".split())

# Next-state feedback that means the action did not do what the agent meant.
FAILURE_PATTERNS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"^\s*nothing happens\.?\s*$",
        r"\bnothing happens\b",
        r"\bi don'?t understand\b",
        r"\b(error|exception|traceback)\b",
        r"\b(invalid|not a valid|unknown command|not recognized|no such)\b",
        r"\b(can ?not|can't|unable to|failed to|not allowed|not possible|permission denied)\b",
        r"\bnot found\b",
    )
]

# Feedback that moves an ALFWorld-like task forward (used to find where progress stopped).
_PROGRESS = re.compile(r"^(you pick up|you move the|you put|you heat|you cool|you clean|you turn on|you slice)",
                       re.IGNORECASE)
_ENTITY = re.compile(r"\b([a-z]+) (\d+)\b")
_GOAL_PATTERNS = [
    # (regex, names of the groups in order): ALFWorld's six goal templates.
    (re.compile(r"put (?:a|an|some|two) (?:(?:clean|hot|cool) )?(\w+) (?:in|on) (\w+)"), ("object", "receptacle")),
    (re.compile(r"(?:clean|heat|cool) some (\w+) and put it (?:in|on) (\w+)"), ("object", "receptacle")),
    (re.compile(r"find two (\w+) and put them (?:in|on) (\w+)"), ("object", "receptacle")),
    (re.compile(r"look at (\w+) under the (\w+)"), ("object", "lamp")),
    (re.compile(r"examine the (\w+) with the (\w+)"), ("object", "lamp")),
]
# Commands that only look around; a demonstration drops them.
INFO_COMMANDS = frozenset({"look", "inventory", "help"})


def is_failure_feedback(feedback: str, error: Optional[str] = None) -> bool:
    """Does this next-state feedback say the action failed?"""
    if error:
        return True
    return any(p.search(feedback or "") for p in FAILURE_PATTERNS)


def normalize_action(action: str) -> str:
    """An action as compared: lower case, single spaces, no trailing period."""
    return " ".join((action or "").lower().strip().rstrip(".").split())


# --------------------------------------------------------------------------- slots


@dataclass
class SlotMap:
    """Object and receptacle names to slots and back: `abstract("take mug 1 from cabinet 3")`."""

    by_type: dict[str, str] = field(default_factory=dict)  # "mug" -> "[object]"

    @classmethod
    def from_goal(cls, goal: str) -> "SlotMap":
        """Slots for the goal's own object and receptacle first, so they read [object], [receptacle]."""
        m = cls()
        g = (goal or "").lower()
        for pattern, names in _GOAL_PATTERNS:
            hit = pattern.search(g)
            if hit:
                for name, word in zip(names, hit.groups()):
                    if name == "lamp" or word in APPLIANCES and name != "receptacle":
                        continue  # the lamp is the skill: keep its name
                    m._slot_for(word, kind=name)
                break
        return m

    def _slot_for(self, type_name: str, kind: Optional[str] = None) -> str:
        if type_name in self.by_type:
            return self.by_type[type_name]
        if kind is None:
            kind = "receptacle" if type_name in RECEPTACLES else "object"
        used = set(self.by_type.values())
        slot, n = f"[{kind}]", 2
        while slot in used:
            slot, n = f"[{kind}{n}]", n + 1
        self.by_type[type_name] = slot
        return slot

    def abstract(self, text: str) -> str:
        """Replace "mug 1" by its slot (new slots are made as names appear); appliances keep their kind."""

        def sub(match: re.Match[str]) -> str:
            word = match.group(1)
            if word in APPLIANCES and word not in self.by_type:
                return word
            return self._slot_for(word)

        out = _ENTITY.sub(sub, text or "")
        # The goal names types without numbers ("put a mug in fridge"): those words too.
        for word, slot in self.by_type.items():
            out = re.sub(rf"\b{re.escape(word)}\b(?! \d)", slot, out)
        return out

    @property
    def slots(self) -> dict[str, str]:
        """Slot -> the name it stands for in the source episode."""
        return {slot: word for word, slot in self.by_type.items()}


# --------------------------------------------------------------------------- traces


@dataclass
class TraceStep:
    """One step as the analysis sees it."""

    index: int
    observation: str
    action: str
    feedback: str
    reward: float = 0.0
    error: Optional[str] = None

    @property
    def failed(self) -> bool:
        return is_failure_feedback(self.feedback, self.error)


@dataclass
class Directive:
    """A correction at a step: what to do instead, from whom."""

    step_index: Optional[int]
    corrected_action: Optional[str]
    text: str
    source: str


@dataclass
class Trace:
    """An episode with its steps and directive feedback, ready to analyse."""

    episode_id: str
    goal: str
    task_type: str
    task_id: str
    outcome: str
    steps: list[TraceStep]
    directives: list[Directive] = field(default_factory=list)
    namespace: str = "default"

    @property
    def actions(self) -> list[str]:
        return [normalize_action(s.action) for s in self.steps]

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


def load_trace(memory: Any, episode_id: str) -> Trace:
    """Read one episode, its steps and its directive feedback from the store."""
    ep = memory.get_episode(episode_id)
    steps = [TraceStep(s.index, s.observation, s.action, s.feedback, s.reward, s.error)
             for s in memory.steps(episode_id)]
    directives = [Directive(f.step_index, f.corrected_action, f.text, f.source)
                  for f in memory.feedback_for(episode_id)
                  if getattr(f.kind, "value", f.kind) == "directive"]
    return Trace(ep.id, ep.goal, ep.task_type, ep.task_id, getattr(ep.outcome, "value", ep.outcome),
                 steps, directives, ep.namespace)


def nearest_success(memory: Any, trace: Trace, *, limit: int = 200) -> Optional[Trace]:
    """The successful episode most like this one: same task first, then same goal words, same type.

    Only verified successes of non-evaluation splits count (DESIGN principles 1 and 6).
    """
    from sqlalchemy import text as sql

    with memory.engine.connect() as conn:
        rows = conn.execute(sql(
            "SELECT id, task_id, goal FROM episodes WHERE namespace = :ns AND task_type = :tt "
            "AND outcome = 'success' AND outcome_source IS NOT NULL AND id != :id "
            "AND split NOT IN ('valid_seen', 'valid_unseen', 'test') ORDER BY started_at DESC LIMIT :n"),
            {"ns": trace.namespace, "tt": trace.task_type, "id": trace.episode_id, "n": limit}).fetchall()
    if not rows:
        return None
    goal_words = set(re.findall(r"\w+", trace.goal.lower()))

    def score(row: Any) -> tuple[int, float]:
        words = set(re.findall(r"\w+", (row[2] or "").lower()))
        jacc = len(words & goal_words) / max(1, len(words | goal_words))
        return (int(bool(trace.task_id) and row[1] == trace.task_id), jacc)

    best = max(rows, key=score)
    return load_trace(memory, best[0])


# --------------------------------------------------------------------------- analysis


@dataclass
class Pivot:
    """Where the episode went wrong and why the analysis thinks so."""

    step: Optional[int]
    reason: str  # directive | diverged_from_same_task | failure_feedback | wasted_step | diverged_from_task_type | loop | last_step | none
    corrected_action: Optional[str] = None  # what to do instead, when the evidence says
    evidence: str = ""


@dataclass
class Analysis:
    """Everything a lesson writer needs, already abstracted into slots."""

    trace: Trace
    slots: SlotMap
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
    rules: list["Rule"] = field(default_factory=list)  # what the failure teaches, as situation rules

    @property
    def rule(self) -> Optional["Rule"]:
        """The main rule (the pivot's when it transfers; when none transfers, the one saying why), or None."""
        return self.rules[0] if self.rules else None

    def render(self, max_steps: int = 30) -> str:
        """The analysis as text for an LLM writer: short, abstracted, untrusted text redacted."""
        t = self.trace
        lines = [f"Task type: {t.task_type or 'unknown'}", f"Goal (slots): {self.goal_template}",
                 f"Slots: {', '.join(f'{k} = {v}' for k, v in self.slots.slots.items()) or 'none'}",
                 f"Outcome: {t.outcome}", "", "Trace (action -> next-state feedback), slots applied:"]
        steps = t.steps
        if len(steps) > max_steps:  # keep the pivot's neighbourhood
            p = self.pivot.step or 0
            lo = max(0, min(p - max_steps // 2, len(steps) - max_steps))
            steps = steps[lo: lo + max_steps]
            lines.append(f"  (steps {lo}-{lo + len(steps) - 1} of {len(t.steps)})")
        for s in steps:
            mark = "  <-- PIVOT" if s.index == self.pivot.step else ""
            fb = _short(self.slots.abstract(redact(s.feedback)), 160)
            lines.append(f"  {s.index}. {self.slots.abstract(s.action)} -> {fb}{mark}")
        lines += ["", f"Pivot step: {self.pivot.step} ({self.pivot.reason})",
                  f"Action at the pivot: {self.bad_action}",
                  f"Feedback at the pivot: {self.feedback_at_pivot}"]
        if self.fix_action:
            lines.append(f"What should have been done at the pivot: {self.fix_action}")
        for r in self.rules:
            lines.append(f"As a rule: when {', '.join(r.situation) or 'always'}: {r.fix} (not {r.bad_action})"
                         + ("" if r.transferable else f" -- does not transfer: {r.why_not}"))
        for d in t.directives:
            lines.append(f"Directive feedback from {d.source} at step {d.step_index}: "
                         f"{self.slots.abstract(d.corrected_action or '')} {_short(redact(d.text), 200)}".rstrip())
        if self.success_plan:
            lines.append("Plan of the nearest successful episode of this task type: "
                         + "; ".join(self.success_plan[:25]))
        return "\n".join(lines)


def _short(text: str, limit: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_divergence(a: Sequence[str], b: Sequence[str]) -> Optional[int]:
    """First index where sequence a differs from b (None if a is a prefix of b)."""
    for i, x in enumerate(a):
        if i >= len(b) or x != b[i]:
            return i
    return None


def _first_loop(trace: Trace) -> Optional[int]:
    """First step that repeats an earlier action with the same feedback, nothing having changed."""
    seen: dict[tuple[str, str], int] = {}
    for s in trace.steps:
        key = (normalize_action(s.action), " ".join(s.feedback.split()))
        if key in seen:
            return s.index
        seen[key] = s.index
        if _PROGRESS.search(s.feedback or ""):
            seen.clear()  # the world changed: earlier observations may no longer hold
    return None


_PRODUCTIVE = frozenset({"take", "move", "put", "heat", "cool", "clean", "slice", "use", "open"})
_TRANSFORM = {"pick_heat_then_place_in_recep": "heat", "pick_cool_then_place_in_recep": "cool",
              "pick_clean_then_place_in_recep": "clean"}


_TOOLS = {"heat": "microwave", "cool": "fridge", "clean": "sinkbasin"}


def _useful_place(place: str, feedback: str, goal_obj: Optional[str], goal_rec: Optional[str],
                  transform: Optional[str]) -> bool:
    kind = place.split()[0] if place else ""
    fb = (feedback or "").lower()
    return bool((goal_obj and re.search(rf"\b{re.escape(goal_obj)} \d", fb)) or (goal_rec and kind == goal_rec)
                or (transform and kind == _TOOLS.get(transform)) or re.search(r"\b(desklamp|floorlamp) \d", fb))


def _first_wasted(trace: Trace, slots: SlotMap) -> Optional[int]:
    """First step that, in hindsight, did nothing toward the goal (ALFWorld-like commands).

    A "go to X" or "open X" left without any attempt to act there; a look/inventory/examine;
    a close; taking an object the goal does not name; placing the goal object before the
    transformation (heat, cool, clean) the task type asks for. Failed steps are not counted
    here: the failure rule sees them.
    """
    acts = trace.actions
    goal_obj = next((w for w, sl in slots.by_type.items() if sl == "[object]"), None)
    goal_rec = next((w for w, sl in slots.by_type.items() if sl == "[receptacle]"), None)
    transform = _TRANSFORM.get(trace.task_type)
    transformed = False
    for i, s in enumerate(trace.steps):
        a = acts[i]
        words = a.split()
        verb = words[0] if words else ""
        if s.failed:
            continue
        if a in INFO_COMMANDS or verb in ("examine", "close"):
            return i
        if verb in ("go", "open"):
            place = a[3:] if a.startswith("open ") else a[6:] if a.startswith("go to ") else ""
            nxt = []
            for b in acts[i + 1:]:
                if b.startswith("go to "):
                    break
                nxt.append(b)
            acted = any(b.split()[:1] and b.split()[0] in _PRODUCTIVE for b in nxt) or \
                any(place and place in b for b in nxt)
            if not acted and i + len(nxt) + 1 < len(acts):  # left without trying anything there
                # Going there was right if it showed what the goal needs: then leaving was the error.
                return i + 1 if _useful_place(place, s.feedback, goal_obj, goal_rec, transform) else i
        ents = _ENTITY.findall(a)
        if verb == "take" and goal_obj and ents and ents[0][0] != goal_obj:
            return i
        if verb in ("move", "put") and ents:
            if goal_rec and len(ents) > 1 and ents[1][0] != goal_rec:
                return i
            if transform and not transformed and ents[0][0] == goal_obj:
                return i
        if verb == transform:
            transformed = True
    return None


def localize_pivot(trace: Trace, success: Optional[Trace] = None, slots: Optional[SlotMap] = None) -> Pivot:
    """The step where the episode went wrong, from the strongest evidence available (module doc)."""
    acts = trace.actions
    # 1. A correction at a step where the agent did something else.
    for d in sorted((d for d in trace.directives if d.step_index is not None), key=lambda d: d.step_index):
        if d.step_index < len(acts) and (not d.corrected_action or
                                         normalize_action(d.corrected_action) != acts[d.step_index]):
            return Pivot(d.step_index, "directive", d.corrected_action, f"{d.source}: {d.text}".strip(": "))
    first_fail = next((s.index for s in trace.steps if s.failed), None)
    # 2. A success of the same task: its actions are one plan that worked in the same world.
    if success is not None and trace.task_id and success.task_id == trace.task_id:
        d = _first_divergence(acts, success.actions)
        if d is not None:
            fix = success.steps[d].action if d < len(success.steps) else None
            return Pivot(d, "diverged_from_same_task", fix, f"success {success.episode_id} did {fix!r}")
    # 3. The world said the action failed, or a step did nothing toward the goal: the earlier.
    wasted = _first_wasted(trace, slots or SlotMap.from_goal(trace.goal))
    if first_fail is not None and (wasted is None or first_fail <= wasted):
        return Pivot(first_fail, "failure_feedback", None, trace.steps[first_fail].feedback)
    if wasted is not None:
        return Pivot(wasted, "wasted_step", None, "in hindsight this step did nothing toward the goal")
    # 4. A success of the same type, in slot form (different rooms, same skill).
    if success is not None:
        s_slots = SlotMap.from_goal(success.goal)
        mine = slots or SlotMap.from_goal(trace.goal)
        d = _first_divergence([mine.abstract(a) for a in acts], [s_slots.abstract(a) for a in success.actions])
        if d is not None and d < len(acts):
            fix = s_slots.abstract(success.steps[d].action) if d < len(success.steps) else None
            return Pivot(d, "diverged_from_task_type", None, f"success {success.episode_id} did {fix!r}")
    # 5. A loop: the agent repeated itself and nothing changed.
    loop = _first_loop(trace)
    if loop is not None:
        return Pivot(loop, "loop", None, "repeated an earlier action with the same result")
    if trace.steps:
        return Pivot(len(trace.steps) - 1, "last_step", None, "no failure signal; the last step is blamed")
    return Pivot(None, "none", None, "the episode has no steps")


def analyse(trace: Trace, success: Optional[Trace] = None) -> Analysis:
    """Localize the pivot, contrast with the nearest success, abstract names into slots."""
    slots = SlotMap.from_goal(trace.goal)
    goal_template = slots.abstract(trace.goal.rstrip("."))
    pivot = localize_pivot(trace, success, slots)
    step = trace.steps[pivot.step] if pivot.step is not None else None
    bad = slots.abstract(normalize_action(step.action)) if step else ""
    fix = slots.abstract(normalize_action(pivot.corrected_action)) if pivot.corrected_action else None
    success_plan: list[str] = []
    if success is not None:
        s_slots = SlotMap.from_goal(success.goal)
        success_plan = [s_slots.abstract(normalize_action(s.action)) for s in success.steps
                        if not s.failed and normalize_action(s.action) not in INFO_COMMANDS]
        if fix is None and pivot.reason == "failure_feedback":
            fix = _contrast_fix(trace, pivot.step or 0, slots, success_plan)
    return Analysis(
        trace=trace, slots=slots, goal_template=goal_template, pivot=pivot, bad_action=bad, fix_action=fix,
        feedback_at_pivot=_short(slots.abstract(redact(step.feedback)), 200) if step else "",
        before_pivot=[slots.abstract(a) for a in trace.actions[: pivot.step or 0]][-5:],
        success_plan=success_plan, success_episode=success.episode_id if success else None,
        first_failure_step=next((s.index for s in trace.steps if s.failed), None),
        grounded_on_feedback=pivot.reason == "directive",
        rules=_lesson_rules(trace, pivot, slots, success_plan),
    )


def _lesson_rules(trace: Trace, pivot: Pivot, slots: SlotMap, success_plan: list[str]) -> list[Rule]:
    """Every rule the failure teaches: the correction at the pivot when it transfers, then each
    later kind of mistake the situation shows (pivots that matter, not a teacher's shortcut)."""
    rule = generalize(trace, pivot, slots)
    out = []
    if rule is not None:
        rule.step = pivot.step
        out.append(rule)
    for r in situation_mistakes(trace, success_plan, pivot.step or 0):
        if all((r.fix, r.situation) != (o.fix, o.situation) for o in out):
            out.append(r)
    # A correction that does not transfer stays only when nothing else was found: it says why not.
    keep = [r for r in out if r.transferable]
    return keep or out[:1]


def _contrast_fix(trace: Trace, pivot: int, slots: SlotMap, success_plan: list[str]) -> Optional[str]:
    """What the success did right after the last action the two share before the pivot."""
    done = [slots.abstract(a) for a in trace.actions[:pivot] if a not in INFO_COMMANDS]
    verb = (trace.actions[pivot].split() or [""])[0]
    # The success's step with the same verb is what this step should have looked like.
    same_verb = [a for a in success_plan if a.split()[:1] == [verb]]
    if same_verb:
        return same_verb[0]
    for a in success_plan:
        if a not in done:
            return a
    return None


# --------------------------------------------------------------------------- world state and rules
#
# A lesson that transfers names a *situation* (what the agent holds, sees, where it stands), not
# a task's wording or a room's layout. The writer describes the pivot's situation with the phrases
# below; a policy's hints (skillmem/policy/hints.py) read the same phrases back and check them
# against the episode so far. One vocabulary, so what is written is what can be acted on.

_DONE = {"heat": "heated", "cool": "cooled", "clean": "cleaned"}
_SEEN = re.compile(r"\byou see (.*)", re.IGNORECASE)


@dataclass
class WorldState:
    """What the feedback so far says about the agent's situation (ALFWorld-like text worlds)."""

    started: bool = False
    at: str = ""  # "cabinet 3"
    closed_here: bool = False
    in_sight: set[str] = field(default_factory=set)  # objects seen at the current place, "mug 2"
    holding: str = ""  # "mug 2"
    visited: set[str] = field(default_factory=set)
    seen_at: dict[str, str] = field(default_factory=dict)  # object kind -> place where last seen
    transformed: set[str] = field(default_factory=set)  # objects heated / cooled / cleaned
    placed: set[str] = field(default_factory=set)  # objects moved into a receptacle
    last_repeated: bool = False  # the last action repeated the one before with the same feedback


def _kind(name: str) -> str:
    return name.split()[0] if name else ""


def world_state(pairs: Sequence[tuple[str, str]]) -> WorldState:
    """The situation after these (action, feedback) pairs."""
    s = WorldState(started=bool(pairs))
    for i, (action, feedback) in enumerate(pairs):
        a, fb = normalize_action(action), feedback or ""
        low = fb.lower()
        if low.startswith("you arrive at"):
            s.at = a[6:] if a.startswith("go to ") else s.at
            s.visited.add(s.at)
            s.closed_here = " is closed" in low
            s.in_sight = set()
        elif low.startswith("you open"):
            s.closed_here = False
        elif low.startswith("you pick up"):
            m = _ENTITY.search(low[len("you pick up"):])
            s.holding = f"{m.group(1)} {m.group(2)}" if m else ""
        elif low.startswith("you move"):
            if s.holding:
                s.placed.add(s.holding)
            s.holding = ""
        elif re.match(r"you (heat|cool|clean) ", low) and s.holding:
            s.transformed.add(s.holding)
        seen = _SEEN.search(fb)
        if seen and (low.startswith("you arrive") or low.startswith("you open") or a.startswith("examine")
                     or a == "look"):
            for kind, num in _ENTITY.findall(seen.group(1).lower()):
                s.in_sight.add(f"{kind} {num}")
                s.seen_at[kind] = s.at
        if s.holding in s.in_sight:
            s.in_sight.discard(s.holding)
        s.last_repeated = i > 0 and normalize_action(pairs[i - 1][0]) == a and \
            " ".join((pairs[i - 1][1] or "").split()) == " ".join(fb.split())
    return s


def goal_kinds(goal: str) -> dict[str, str]:
    """The goal's slot values: {"object": "mug", "receptacle": "cabinet", "lamp": "desklamp"}."""
    g = (goal or "").lower()
    for pattern, names in _GOAL_PATTERNS:
        hit = pattern.search(g)
        if hit:
            return dict(zip(names, hit.groups()))
    return {}


def transform_of(goal: str) -> str:
    """The transformation the goal asks for ("heat", "cool", "clean") or ""."""
    g = (goal or "").lower()
    return next((t for t, w in (("heat", r"\b(heat|hot)\b"), ("cool", r"\bcool\b"), ("clean", r"\bclean\b"))
                 if re.search(w, g)), "")


# Situation phrases: the words a trigger uses, and the test each stands for.
# Order matters only for reading: longer phrases first where one contains another.
def _phrases() -> list[tuple[str, Any]]:
    def held_obj(s: WorldState, g: dict[str, str]) -> bool:
        return bool(s.holding) and _kind(s.holding) == g.get("object")

    def sight(s: WorldState, g: dict[str, str]) -> bool:
        return any(_kind(o) == g.get("object") and o not in s.placed for o in s.in_sight)

    def done(s: WorldState, g: dict[str, str]) -> bool:
        return s.holding in s.transformed

    def at(kind: str):
        return lambda s, g: _kind(s.at) == g.get(kind, kind)

    out: list[tuple[str, Any]] = [
        ("at the start", lambda s, g: not s.started),
        ("the last action changed nothing", lambda s, g: s.last_repeated),
        ("holding the [object]", held_obj),
        ("holding something else", lambda s, g: bool(s.holding) and not held_obj(s, g)),
        ("hands empty", lambda s, g: not s.holding),
        # A closed receptacle hides what it holds: there the object is neither in sight nor known absent.
        ("the [object] is not in sight", lambda s, g: not held_obj(s, g) and not sight(s, g) and not s.closed_here),
        ("the [object] is in sight", lambda s, g: not s.holding and sight(s, g)),
        ("at a closed receptacle", lambda s, g: s.closed_here),
        ("at the [receptacle]", at("receptacle")),
        ("the [lamp] was seen", lambda s, g: g.get("lamp", "") in s.seen_at),
    ]
    for verb, tool in _TOOLS.items():
        out += [(f"not yet {_DONE[verb]}", lambda s, g: not done(s, g)), (f"already {_DONE[verb]}", done),
                (f"at the {tool}", at(tool))]
    return out


STATE_PHRASES = _phrases()


def situation_holds(trigger: str, state: WorldState, goal: dict[str, str]) -> bool:
    """Does every situation phrase the trigger names hold in this state? (None named: it holds.)"""
    low = (trigger or "").lower()
    return all(test(state, goal) for phrase, test in STATE_PHRASES if phrase in low)


# Fixes the hints know how to act on beyond a slotted command.
EXPLORE_FIX = "go to a place not yet visited"
SEEN_FIX = "go to where the {kind} was seen"


@dataclass
class Rule:
    """A pivot turned into a rule that holds beyond its episode: situation, bad action, fix."""

    situation: list[str]
    bad_action: str
    fix: str
    scope: str  # general | task
    transferable: bool = True
    why_not: str = ""
    step: Optional[int] = None  # the step the rule was read at


def generalize(trace: Trace, pivot: Pivot, slots: SlotMap) -> Optional[Rule]:
    """The pivot's correction as a rule over situations, or one marked not transferable.

    The correction ("go to drawer 3") is rewritten by what it achieves in the situation at the
    pivot: going to where the object is, when the agent had not seen it, is only the teacher's
    privileged knowledge; what transfers is "look where you have not looked". A rule whose fix
    is no better than the bad action by anything the agent could know is marked not transferable.
    """
    if pivot.step is None or not pivot.corrected_action:
        return None
    g = goal_kinds(trace.goal)
    obj, rec, lamp = g.get("object", ""), g.get("receptacle", ""), g.get("lamp", "")
    tf = transform_of(trace.goal)
    pairs = [(s.action, s.feedback) for s in trace.steps[: pivot.step]]
    s = world_state(pairs)
    fix = normalize_action(pivot.corrected_action)
    bad = normalize_action(trace.steps[pivot.step].action)
    verb, target = (fix.split() or [""])[0], fix[6:] if fix.startswith("go to ") else ""
    holding_obj = bool(s.holding) and _kind(s.holding) == obj
    sit: list[str] = []

    def abst(a: str) -> str:
        out = slots.abstract(a)
        return re.sub(rf"\b{re.escape(lamp)}\b", "[lamp]", out) if lamp else out

    bad_s = abst(bad)
    if holding_obj:
        sit.append("holding the [object]")
        if tf:
            sit.append(("already " if s.holding in s.transformed else "not yet ") + _DONE[tf])
    elif s.holding:
        sit.append("holding something else")
    if verb == "go":
        kind = _kind(target)
        if holding_obj and tf and s.holding not in s.transformed and kind == _TOOLS[tf]:
            rule_fix = f"go to {kind}"
        elif holding_obj and kind == rec and (not tf or s.holding in s.transformed):
            rule_fix = "go to [receptacle]"
        elif holding_obj and lamp:
            rule_fix = SEEN_FIX.format(kind="[lamp]") if lamp in s.seen_at else EXPLORE_FIX
            sit.append("the [lamp] was seen" if lamp in s.seen_at else "")
        elif not s.holding and obj in s.seen_at and s.seen_at[obj] == target:
            rule_fix, sit = SEEN_FIX.format(kind="[object]"), sit + ["the [object] is not in sight"]
        elif target not in s.visited and not holding_obj:
            rule_fix = EXPLORE_FIX
            sit.append("the [object] is not in sight" if not s.holding else "")
        else:
            return Rule([x for x in sit if x], bad_s, abst(fix), "task", False,
                        "the teacher went back where nothing the agent saw called for")
        if bad.startswith("go to ") and rule_fix == EXPLORE_FIX and bad[6:] not in s.visited:
            return Rule([x for x in sit if x], bad_s, rule_fix, "general", False,
                        "both went somewhere new: only the teacher knew where things are")
    elif verb == "open":
        sit += ["looking for the [object]", "at a closed receptacle"] if not holding_obj else ["at a closed receptacle"]
        rule_fix = "open [receptacle2]" if fix[5:] != "" else fix
    elif verb == "take":
        sit += ["hands empty", "the [object] is in sight"] if not sit else []
        rule_fix = "take [object] from [receptacle2]"
    elif verb in _TOOLS:
        sit.append(f"at the {_TOOLS[verb]}")
        rule_fix = f"{verb} [object] with {_TOOLS[verb]}"
    elif verb == "move" and rec and _ENTITY.findall(fix)[-1:] and _ENTITY.findall(fix)[-1][0] == rec:
        sit.append("at the [receptacle]")
        rule_fix = "move [object] to [receptacle]"
    elif verb == "use":
        rule_fix = "use [lamp]" if lamp else abst(fix)
    else:
        return Rule([x for x in sit if x], bad_s, abst(fix), "task", False, f"no rule for '{verb}'")
    sit = [x for x in dict.fromkeys(sit) if x]
    if not sit and not s.started:
        sit = ["at the start"]
    general = not tf and not lamp and rule_fix in (EXPLORE_FIX, "open [receptacle2]",
                                                   "take [object] from [receptacle2]",
                                                   SEEN_FIX.format(kind="[object]"))
    general = general or (rule_fix in (EXPLORE_FIX, "open [receptacle2]", SEEN_FIX.format(kind="[object]"))
                          and not holding_obj) or rule_fix == "take [object] from [receptacle2]"
    return Rule(sit, bad_s, rule_fix, "general" if general else "task")


def situation_mistakes(trace: Trace, success_plan: Sequence[str], start: int = 0) -> list["Rule"]:
    """Each kind of mistake the situation shows from step `start` on, at its first step.

    Read from the trace and, for what should have been done, from a successful plan of the task
    type (slot form): in sight and hands empty, the plan takes the object; holding it at the
    tool, the plan transforms it; holding it (transformed) at the goal receptacle, the plan puts
    it there. An action that did none of that, or one that repeated itself to no effect, or an
    information command while the object is nowhere in sight, is the mistake.
    """
    g = goal_kinds(trace.goal)
    obj, rec, lamp = g.get("object", ""), g.get("receptacle", ""), g.get("lamp", "")
    tf = transform_of(trace.goal)
    slots = SlotMap.from_goal(trace.goal)
    plan = " ; ".join(success_plan)
    tool = _TOOLS.get(tf, "")

    def abst(a: str) -> str:
        out = slots.abstract(a)
        return re.sub(rf"\b{re.escape(lamp)}\b", "[lamp]", out) if lamp else out

    pairs = [(s.action, s.feedback) for s in trace.steps]
    found: dict[tuple[str, str], Rule] = {}
    for i in range(start, len(trace.steps)):
        s = world_state(pairs[:i])
        a = normalize_action(trace.steps[i].action)
        verb = (a.split() or [""])[0]
        ents = _ENTITY.findall(a)
        holding_obj = bool(s.holding) and _kind(s.holding) == obj
        done = s.holding in s.transformed
        sight = any(_kind(o) == obj and o not in s.placed for o in s.in_sight)
        sit: list[str] = []
        fix = ""
        if holding_obj:
            sit = ["holding the [object]"] + ([("already " if done else "not yet ") + _DONE[tf]] if tf else [])
            if tf and not done and _kind(s.at) == tool and f"{tf} [object] with {tool}" in plan:
                sit.append(f"at the {tool}")
                fix = f"{tf} [object] with {tool}"
            elif tf and not done and f"go to {tool}" in plan and not (verb == "go" and ents and ents[0][0] == tool):
                fix = f"go to {tool}"
            elif lamp and lamp in s.seen_at and _kind(s.at) == lamp or (lamp and lamp in " ".join(s.in_sight)):
                sit.append("the [lamp] was seen")
                fix = "use [lamp]" if f"use {lamp}" in plan or "use [lamp]" in plan else ""
            elif (not tf or done) and rec and _kind(s.at) == rec and "move [object] to [receptacle]" in plan:
                sit.append("at the [receptacle]")
                fix = "move [object] to [receptacle]"
            elif (not tf or done) and rec and "go to [receptacle]" in plan and not (verb == "go" and ents and ents[0][0] == rec):
                fix = "go to [receptacle]"
            if fix and abst(a) == fix:
                continue
        elif not s.holding and sight and "take [object]" in plan:
            sit = ["hands empty", "the [object] is in sight"]
            fix = "take [object] from [receptacle2]"
            if verb == "take" and ents and ents[0][0] == obj:
                continue
        elif not s.holding and not sight:
            wasted = a in INFO_COMMANDS or verb in ("examine", "close") or s.last_repeated and \
                i > 0 and normalize_action(pairs[i - 1][0]) == a
            took_other = verb == "take" and ents and ents[0][0] != obj
            if wasted or took_other:
                sit = ["hands empty", "looking for the [object], at a closed receptacle" if s.closed_here
                       else "the [object] is not in sight"]
                fix = "open [receptacle2]" if s.closed_here else EXPLORE_FIX
        if fix:
            bad = abst(a)
            if verb == "go" and fix.startswith("go to "):
                bad = abst(a)  # a trip elsewhere: penalized only when it names one place (hints)
            if verb == "take" and fix == EXPLORE_FIX:
                bad = "take [object2] from [receptacle2]"  # any other object, wherever it was
            scope = "general" if fix in (EXPLORE_FIX, "open [receptacle2]", "take [object] from [receptacle2]") \
                else "task"
            found.setdefault((", ".join(sit), fix), Rule(sit, bad, fix, scope, step=i))
    return list(found.values())
