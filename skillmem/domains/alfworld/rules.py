"""What a household failure teaches: goal templates, slots, situations, and the rules read at a pivot.

A lesson that transfers names a *situation* (what the agent holds, sees, where it stands), not
a task's wording or a room's layout. The writer describes the pivot's situation with the
phrases below; the pack's hints read the same phrases back and check them against the episode
so far. One vocabulary, so what is written is what can be acted on.

Object names are abstracted into slots ("mug 1" -> "[object]", "cabinet 3" -> "[receptacle2]")
and the mapping is kept, so a lesson written from one room applies in another. Appliances that
define a skill (microwave, fridge, sinkbasin, desklamp ...) keep their name: "heat [object] with
microwave" is the skill, whichever microwave it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Sequence

from ...domain import Rule
from .state import APPLIANCES, DONE as _DONE, ENTITY as _ENTITY, INFO_COMMANDS, RECEPTACLES, TOOLS as _TOOLS
from .state import WorldState, kind as _kind, normalize_action, world_state

if TYPE_CHECKING:
    from ...reflect.trace import Pivot, Trace


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
_GOAL_PATTERNS = [
    # (regex, names of the groups in order): ALFWorld's six goal templates.
    (re.compile(r"put (?:a|an|some|two) (?:(?:clean|hot|cool) )?(\w+) (?:in|on) (\w+)"), ("object", "receptacle")),
    (re.compile(r"(?:clean|heat|cool) some (\w+) and put it (?:in|on) (\w+)"), ("object", "receptacle")),
    (re.compile(r"find two (\w+) and put them (?:in|on) (\w+)"), ("object", "receptacle")),
    (re.compile(r"look at (\w+) under the (\w+)"), ("object", "lamp")),
    (re.compile(r"examine the (\w+) with the (\w+)"), ("object", "lamp")),
]


def is_failure_feedback(feedback: str, error: Optional[str] = None) -> bool:
    """Does this next-state feedback say the action failed?"""
    if error:
        return True
    return any(p.search(feedback or "") for p in FAILURE_PATTERNS)


# --------------------------------------------------------------------------- slots


@dataclass
class HouseholdSlots:
    """Object and receptacle names to slots and back: `abstract("take mug 1 from cabinet 3")`."""

    by_type: dict[str, str] = field(default_factory=dict)  # "mug" -> "[object]"

    @classmethod
    def from_goal(cls, goal: str) -> "HouseholdSlots":
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

    def abstract_prose(self, text: str, *, nouns: bool = True) -> str:
        """Feedback and goals are slotted the same way as commands here."""
        return self.abstract(text)

    @property
    def slots(self) -> dict[str, str]:
        """Slot -> the name it stands for in the source episode."""
        return {slot: word for word, slot in self.by_type.items()}

_PRODUCTIVE = frozenset({"take", "move", "put", "heat", "cool", "clean", "slice", "use", "open"})
_TRANSFORM = {"pick_heat_then_place_in_recep": "heat", "pick_cool_then_place_in_recep": "cool",
              "pick_clean_then_place_in_recep": "clean"}


def _useful_place(place: str, feedback: str, goal_obj: Optional[str], goal_rec: Optional[str],
                  transform: Optional[str]) -> bool:
    kind = place.split()[0] if place else ""
    fb = (feedback or "").lower()
    return bool((goal_obj and re.search(rf"\b{re.escape(goal_obj)} \d", fb)) or (goal_rec and kind == goal_rec)
                or (transform and kind == _TOOLS.get(transform)) or re.search(r"\b(desklamp|floorlamp) \d", fb))


def _first_wasted(trace: Trace, slots: HouseholdSlots) -> Optional[int]:
    """First step that, in hindsight, did nothing toward the goal (ALFWorld-like commands).

    A "go to X" or "open X" left without any attempt to act there; a look/inventory/examine;
    a close; taking an object the goal does not name; placing the goal object before the
    transformation (heat, cool, clean) the task type asks for. Failed steps are not counted
    here: the failure rule sees them.
    """
    acts = [normalize_action(s.action) for s in trace.steps]
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


def generalize(trace: Trace, pivot: Pivot, slots: HouseholdSlots) -> Optional[Rule]:
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
    slots = HouseholdSlots.from_goal(trace.goal)
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

