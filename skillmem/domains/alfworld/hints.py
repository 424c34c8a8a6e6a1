"""Household hints: retrieved lessons and demonstrations matched against the admissible commands.

Memory steers even a policy that cannot read this way:

* a lesson's **bad action** penalizes the admissible actions it matches;
* a lesson's **fix** rewards the admissible actions it names;
* a demonstration's **next plan step** rewards the actions that carry it out here.

Slots (``[object]``, ``[receptacle2]``) are filled from the goal (through the
demonstration's goal template) and from the actions already taken; two slots with
different names never take the same value, because in the episode they were abstracted
from they named different things ("move [object] to [receptacle2]" is a move to a place
that is *not* the goal's [receptacle]).

A demonstration is followed by state, not by position: the next step is the first
*state-changing* step (take, heat, clean, cool, move, use...) not yet done in order; the
navigation steps before it (``go to``, ``open``) only say how to get there. When the
state-changing step is not possible here, the hint goes to the navigation that leads
to it: a named place ("go to microwave 1") directly, an unnamed one ("go to
[receptacle2]", where the object was in that episode) by exploring places not yet
visited, opening closed ones on the way.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Mapping, Optional, Sequence

from ...policy.hints import AVOID, EXPLORE, FIX, NEXT_STEP, Hints
from .rules import EXPLORE_FIX, goal_kinds, situation_holds
from .state import world_state

_SLOT = re.compile(r"\[([A-Za-z_][\w ]*?)\]")
_WORD = re.compile(r"[a-z0-9]+")
NAVIGATION = ("go", "open", "close", "look", "inventory", "examine", "help")


def _norm(s: str) -> str:
    return " ".join(_WORD.findall(s.lower()))


@lru_cache(maxsize=1 << 14)
def _denum(action: str) -> str:
    return " ".join(w for w in _norm(action).split() if not w.isdigit())


def _strip_number(v: str) -> str:
    return re.sub(r" \d+$", "", v)


def _group(name: str) -> str:
    return "s_" + re.sub(r"\W", "_", name)


@lru_cache(maxsize=4096)
def _template_regex(template: str, bound_items: tuple[tuple[str, str], ...]) -> Optional[re.Pattern[str]]:
    """A regex over normalized text: bound slots match their value (any instance number),
    unbound slots match one or more words and are captured by name."""
    bound = dict(bound_items)
    parts, pos, seen = [], 0, set()
    for m in _SLOT.finditer(template):
        parts += [re.escape(w) for w in _norm(template[pos:m.start()]).split() if not w.isdigit()]
        name = m.group(1).strip()
        value = _norm(bound.get(name) or "")
        if value:
            parts.append(re.escape(value) + r"(?: \d+)?")
        elif name in seen:
            parts.append(rf"(?P={_group(name)})")
        else:
            parts.append(rf"(?P<{_group(name)}>[a-z0-9]+(?: [a-z0-9]+)*?)")
            seen.add(name)
        pos = m.end()
    parts += [re.escape(w) for w in _norm(template[pos:]).split() if not w.isdigit()]
    if not parts:
        return None
    try:
        return re.compile("^" + " ".join(parts) + "$")
    except re.error:
        return None


def _bindings(m: re.Match[str]) -> dict[str, str]:
    return {k[2:]: _strip_number(v) for k, v in m.groupdict().items() if v}


def _distinct(new: Mapping[str, str], bound: Mapping[str, str]) -> bool:
    """Different slot names must not name the same thing."""
    taken = {_strip_number(_norm(v)): k for k, v in bound.items() if v}
    return all(taken.get(_strip_number(v), k) == k for k, v in new.items())


def match(template: str, bound: Mapping[str, str], actions: Sequence[str], *, distinct: bool = False
          ) -> list[tuple[str, dict[str, str]]]:
    """The actions a slotted template matches under `bound`, with what each binds.

    `distinct`: an unbound slot may not take a bound slot's value. A lesson's bad action
    needs it (its [receptacle2] was *not* the goal's [receptacle]); a demonstration's
    steps do not (a new task may find its object where it must also put it).
    """
    rx = _template_regex(template, tuple(sorted((k, v) for k, v in bound.items() if v)))
    if rx is None:
        return []
    out = []
    for a in actions:
        # Plans keep kinds, not instances ("go to microwave"): compare without numbers.
        m = rx.match(_denum(a))
        if m:
            b = _bindings(m)
            if not distinct or _distinct(b, bound):
                out.append((a, b))
    return out


# Goals say the same thing in several ways ("put a mug in X", "put some mug on X"):
# templates and goals are compared with these words made equal.
_FILLERS = {"an": "a", "some": "a", "the": "a", "on": "in", "into": "in", "onto": "in"}


def _canon(text: str) -> str:
    return " ".join(_FILLERS.get(w, w) for w in _norm(text).split())


def goal_slots(goal_template: str, goal: str) -> dict[str, str]:
    """Slot values of the current task, read off the goal with a demonstration's goal template.

    When no exact reading exists, one literal word of the template may differ from the
    goal's (a demonstration "with the desklamp" for a task "with the floorlamp"); the
    pair is returned under the key ``"=desklamp"`` so that plan steps can be read the
    same way.
    """
    if not goal_template:
        return {}
    canon = _canon_template(goal_template)
    rx = _template_regex(canon, ())
    if rx is None:
        return {}
    words = _canon(goal).split()
    for i in range(len(words)):  # the goal may carry a preamble ("Your task is to: ...")
        m = rx.match(" ".join(words[i:]))
        if m:
            return _bindings(m)
    # Word by word, one literal allowed to differ, each slot one word.
    toks = [t for t in re.split(r"(\[[^\]]+\])| ", canon) if t]
    for i in range(len(words) - len(toks) + 1):
        cand, out, diff = words[i:i + len(toks)], {}, None
        if len(cand) != len(toks):
            break
        for t, w in zip(toks, cand):
            if t.startswith("["):
                out[t[1:-1].strip()] = w
            elif t != w:
                if diff is not None:
                    break
                diff = (t, w)
        else:
            if diff is not None and out:
                out["=" + diff[0]] = diff[1]
                return out
    return _reworded_slots(goal_template, goal)


def _reworded_slots(goal_template: str, goal: str) -> dict[str, str]:
    """Slot values across the two wordings of one ALFWorld task ("cool some [object] and put
    it in [receptacle]" read on "put a cool cup in microwave."): the same task says its object
    and its place in either, so each is read off the goal where its own wording puts it."""
    marked = _SLOT.sub(lambda m: "slot" + re.sub(r"\W", "", m.group(1)), goal_template.lower())
    shape, kinds = goal_kinds(marked), goal_kinds(goal)
    if not shape or set(shape) != set(kinds):
        return {}
    names = {"slot" + re.sub(r"\W", "", n): n.strip() for n in _SLOT.findall(goal_template)}
    out: dict[str, str] = {}
    for role, word in shape.items():
        if word in names:
            out[names[word]] = kinds[role]
        elif word != kinds[role]:
            out["=" + word] = kinds[role]  # a literal of the template ("desklamp") that differs here
    return out if set(names.values()) <= set(out) else {}


def _canon_template(template: str) -> str:
    parts, pos = [], 0
    for m in _SLOT.finditer(template):
        parts += [_canon(template[pos:m.start()]), m.group(0)]
        pos = m.end()
    parts.append(_canon(template[pos:]))
    return " ".join(p for p in parts if p)


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _split_steps(text: str) -> list[str]:
    """A fix's text as candidate action phrases ("go to X, then take Y" -> two)."""
    pieces = re.split(r"[.;,:']|\bthen\b|\band\b|\bfirst\b|\binstead\b|\bdo\b", text, flags=re.I)
    return [p.strip() for p in pieces if p and p.strip()]


def _verb(step: str) -> str:
    w = _norm(step).split()
    return w[0] if w else ""


def _step_hits(step: str, bound: Mapping[str, str], actions: Sequence[str]) -> list[tuple[str, dict[str, str]]]:
    hits = match(step, bound, actions)
    if not hits and _verb(step) == "take":
        # Where the demonstration took its object from is only where it was that time.
        hits = match(re.sub(r"\bfrom\b.*$", "from [source]", step), bound, actions)
    return hits


def _fill(template: str, bound: Mapping[str, str]) -> str:
    return _SLOT.sub(lambda m: bound.get(m.group(1).strip(), ""), template)


def _follow_demo(demo: Any, bound_goal: Mapping[str, str], pairs: Sequence[tuple[str, str]],
                 admissible: Sequence[str], last_obs: str, hints: Hints) -> None:
    done_actions = [a for a, _ in pairs if a]
    plan = [s for s in (_get(demo, "plan", None) or []) if s]
    goal_names = set(_SLOT.findall(_get(demo, "goal_template", "") or ""))
    # A demonstration whose goal slots this task does not fill would steer blindly
    # ("take [object]" of any object): it is left out.
    if not plan or not goal_names or not goal_names <= set(bound_goal):
        return
    bound = {k: v for k, v in bound_goal.items() if not k.startswith("=")}
    subst = {k[1:]: v for k, v in bound_goal.items() if k.startswith("=")}
    if subst:
        plan = [" ".join(subst.get(w, w) for w in step.split()) for step in plan]
    # Walk the state-changing steps along the history, in order, binding slots as they match.
    k = 0
    for a in done_actions:
        while k < len(plan) and _verb(plan[k]) in NAVIGATION:
            k += 1
        if k < len(plan):
            hit = _step_hits(plan[k], bound, [a])
            if hit:
                bound.update(hit[0][1])
                k += 1
    while k < len(plan) and _verb(plan[k]) in NAVIGATION:
        k += 1
    if k >= len(plan):
        return
    step = plan[k]
    hits = _step_hits(step, bound, admissible)
    if _verb(step) == "take":
        # An object this episode already put in place is done with (pick two: take another).
        placed = {_norm(a)[len("move "):].split(" to ")[0] for a in done_actions if _norm(a).startswith("move ")}
        hits = [h for h in hits if _norm(h[0])[len("take "):].split(" from ")[0] not in placed]
    if hits:
        seen = [h for h in hits if any(v and v in last_obs for v in h[1].values())]
        chosen = seen or hits
        for a, _ in chosen:
            hints.add(a, NEXT_STEP / len(chosen), f"demonstration step {k + 1}: {step}")
        return
    # Not possible here: the navigation steps before it say how to get where it is.
    visited = {_norm(a)[len("go to "):] for a in done_actions if _norm(a).startswith("go to ")}
    opened = {_norm(a) for a in done_actions if _norm(a).startswith("open ")}
    here = next((_norm(a)[len("go to "):] for a in reversed(done_actions) if _norm(a).startswith("go to ")), None)
    needs = set(_denum(_fill(step, bound)).split())  # the kinds the step names, slots filled
    if here and f"open {here}" not in opened and (_verb(step) == "take" or _denum(here) in needs):
        # A closed place we stand at may hide the object, or be where it must go.
        for a in admissible:
            if _norm(a) == f"open {here}":
                hints.add(a, NEXT_STEP, f"open {here}: demonstration step {k + 1} needs what it may hold")
                return
    # Something the step needs (a lamp, the microwave, the object) was seen somewhere: go back there.
    seen_at = [a for a, obs in pairs if _norm(a).startswith("go to ") and needs & set(_denum(obs).split())
               and _norm(a)[len("go to "):] != here]
    back = [a for a in admissible if a in seen_at[-1:]]
    if back and _verb(step) != "take":
        hints.add(back[0], NEXT_STEP, f"demonstration step {k + 1}: {step} (seen at {back[0][6:]})")
        return
    j = k - 1
    while j >= 0 and _verb(plan[j]) in NAVIGATION:
        nav = plan[j]
        nav_hits = [(a, b) for a, b in match(nav, bound, admissible)]
        if _verb(nav) == "open":
            nav_hits = [(a, b) for a, b in nav_hits if _norm(a) not in opened]
            if nav_hits:  # a closed place here may hide what the next step needs
                for a, _ in nav_hits:
                    hints.add(a, NEXT_STEP / len(nav_hits), f"demonstration step {j + 1}: {nav}")
                return
        elif _verb(nav) == "go":
            named = all(s.strip() in bound for s in _SLOT.findall(nav))
            fresh = [a for a, _ in nav_hits if _norm(a)[len("go to "):] not in visited]
            if named and fresh:
                for a in fresh:
                    hints.add(a, NEXT_STEP / len(fresh), f"demonstration step {j + 1}: {nav}")
                return
            # Where the demonstration found things is not where this task has them:
            # look where we have not looked yet: a kind of place not yet seen first (a real
            # kitchen has eighteen cabinets, and the object is as likely on the one countertop),
            # then open surfaces (one step each) before closed ones (two: go, open).
            fresh = [a for a in admissible if _norm(a).startswith("go to ") and _norm(a)[6:] not in visited]
            seen_kinds = {_denum(v) for v in visited}
            closed_kinds = {_denum(_norm(a)[6:]) for a, obs in pairs
                            if _norm(a).startswith("go to ") and " is closed" in obs}
            for a in fresh:
                kind = _denum(_norm(a)[6:])
                weight = 1.0 if kind not in seen_kinds else 0.5 if kind in closed_kinds else 0.75
                hints.add(a, EXPLORE * weight, f"explore for demonstration step {k + 1}: {step}")
            if fresh:
                return
        j -= 1


_TASK_IN_TRIGGER = re.compile(r"Task '([^']+)'")
_AFTER = re.compile(r"\bafter '([^']+)'")
# How strongly a lesson's rule speaks when its situation holds: as much as a plan step.
RULE = 1.0


def _bound_fully(template: str, bound: Mapping[str, str]) -> bool:
    """Every slot of the template has a value here: it names one thing, not any thing."""
    return all(s.strip() in bound for s in _SLOT.findall(template))


def _lesson_applies(trigger: str, done_actions: Sequence[str], bound: Mapping[str, str], state: Any,
                    kinds: Mapping[str, str]) -> bool:
    """A lesson speaks only in the situation its trigger names: a moment ("at the start",
    "after 'take [object] ...'") or what the agent holds and sees ("holding the [object]")."""
    m = _AFTER.search(trigger)
    if m and not (done_actions and match(m.group(1), bound, [done_actions[-1]])):
        return False
    return situation_holds(trigger, state, kinds)


def _rule_fix(fix: str, bound: Mapping[str, str], state: Any, admissible: Sequence[str]) -> list[str]:
    """The admissible actions a situation rule's fix names ("go to a place not yet visited")."""
    low = _norm(fix)
    gos = [a for a in admissible if _norm(a).startswith("go to ")]
    if low == _norm(EXPLORE_FIX):
        return [a for a in gos if _norm(a)[6:] not in {_norm(v) for v in state.visited}]
    m = re.match(r"go to where the (\[[^\]]+\]|\w+) was seen$", fix.strip().lower())
    if m:
        kind = _fill(m.group(1), bound).strip()
        place = _norm(state.seen_at.get(kind, ""))
        return [a for a in gos if place and _norm(a)[6:] == place]
    return []


def _lesson_hints(lessons: Sequence[Any], goal: str, bound_goal: Mapping[str, str],
                  pairs: Sequence[tuple[str, str]], admissible: Sequence[str], hints: Hints) -> None:
    done_actions = [a for a, _ in pairs if a]
    state = world_state(pairs)
    kinds = goal_kinds(goal)
    for les in lessons:
        trigger = _get(les, "trigger", "") or ""
        m = _TASK_IN_TRIGGER.search(trigger)
        bound = {**kinds, **((goal_slots(m.group(1), goal) if m else {}) or dict(bound_goal))}
        bound = {k: v for k, v in bound.items() if not k.startswith("=")}
        if "at the start" in trigger and done_actions:
            continue
        if not _lesson_applies(trigger, done_actions, bound, state, kinds):
            continue
        bad = (_get(les, "bad_action", "") or "").strip()
        if bad and (_verb(bad) != "go" or _bound_fully(bad, bound)):
            for a, _ in match(bad, bound, admissible, distinct=True):
                hints.add(a, AVOID, f"lesson: avoid '{bad}'")
        fix = (_get(les, "fix", "") or "").strip()
        rule_hits = _rule_fix(fix, bound, state, admissible)
        if not rule_hits and len(_split_steps(fix)) == 1:
            # One slotted command: every admissible action it matches, but not an object already put away.
            rule_hits = [a for a, b in match(fix, bound, admissible)
                         if not any(_norm(p) in _norm(a) for p in state.placed)]
        if rule_hits:
            for a in rule_hits:
                hints.add(a, RULE / len(rule_hits), f"lesson: {fix}")
            continue
        phrases = [p for p in _split_steps(fix) if _bound_fully(p, bound) and len(p.split()) >= 2]
        hits: list[str] = []
        for phrase in phrases:
            hits += [a for a, _ in match(phrase, bound, admissible) if a not in hits]
        for a in hits[:3]:
            hints.add(a, FIX / max(1, len(hits[:3])), f"lesson fix: {fix[:80]}")


def household_hints(context: Any, goal: str, pairs: Sequence[tuple[str, str]],
                    admissible: Sequence[str]) -> Hints:
    """Lessons and demonstrations in `context` matched against `admissible` as per-command bonuses."""
    hints = Hints()
    if context is None or isinstance(context, str) or not admissible:
        return hints
    last_obs = _norm(pairs[-1][1]) if pairs else ""

    demos = list(_get(context, "demonstrations", None) or [])
    bound_goal: dict[str, str] = {}
    for demo in demos:
        bound_goal = goal_slots(_get(demo, "goal_template", "") or "", goal)
        if bound_goal:
            break

    _lesson_hints(list(_get(context, "lessons", None) or []), goal, bound_goal, pairs, admissible, hints)

    for demo in demos:
        own = goal_slots(_get(demo, "goal_template", "") or "", goal)
        _follow_demo(demo, own or bound_goal, pairs, admissible, last_obs, hints)
    return hints
