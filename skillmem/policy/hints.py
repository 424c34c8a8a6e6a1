"""Structured hints: retrieved lessons and demonstrations matched against the admissible actions.

Memory steers even a policy that cannot read this way:

* a lesson's **bad action** penalizes the admissible actions it names, in the situation its
  trigger names (the domain says whether that situation holds: TextDomain also reads a step
  done or not yet, ``after `X` succeeded, while `Y` is not done yet``);
* a lesson's **fix** rewards the admissible actions it names (as much as a demonstration's next
  step when its trigger names such a step situation, half as much otherwise), never a goal step
  this episode already did; a lesson marked not transferable, or naming a value this goal lacks,
  says nothing;
* a demonstration's **next step** rewards the action that carries it out here (`follow_demo`):
  slots filled from this goal and values a tool returned read from the history
  (``[lookup_order.total]``); a value left free (``[value]``: the source episode's instance
  number) matches any admissible argument and is searched; a step that is not possible here is
  skipped and the plan re-anchors on the next one that matches, but never past a step that
  names the goal.

Matching is on the domain's `action_key`: a free value is searched among the admissible actions,
never guessed. A domain that knows more (a world pack: navigation toward the place a plan
step needs, exploring places not yet visited) gives its own hints through `hints()`.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from ..domain import content_words, loosen as _loosen

# How strongly each kind of memory speaks. A policy learns its own weight on top.
AVOID, FIX, NEXT_STEP, EXPLORE = -1.0, 0.5, 1.0, 0.3
# Share of a step's weight an analogue of it gets (follow_demo, `_analogues`): half, because a shared
# word may be only the type of the thing, not which one (review R7b; see `_analogues`).
ANALOGUE = 0.5
_SLOT = re.compile(r"\[[^\]]+\]")


@dataclass
class Hints:
    """Per-action bonus (>0: memory prefers it) or penalty (<0: memory warns against it)."""

    bonus: dict[str, float] = field(default_factory=dict)
    reasons: dict[str, list[str]] = field(default_factory=dict)
    # The retrieved lessons that gave a hint here, when the hints say (generic hints do; None: a
    # domain's own hints, which do not): the lessons a prompt's text shows at this step.
    lessons: Optional[list[Any]] = None

    def add(self, action: str, value: float, reason: str) -> None:
        self.bonus[action] = self.bonus.get(action, 0.0) + value
        self.reasons.setdefault(action, []).append(reason)

    def vector(self, candidates: Sequence[str]) -> list[float]:
        return [self.bonus.get(c, 0.0) for c in candidates]

    def __bool__(self) -> bool:
        return bool(self.bonus)


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


@dataclass
class _Step:
    """A plan or lesson step as this episode can read it: its key, and when it has free values a
    regex over admissible keys plus what each ``[from ...]`` value must be found in."""

    key: str
    rx: Optional[re.Pattern[str]] = None
    reads: dict[str, str] = field(default_factory=dict)  # regex group -> the text its value must be in
    lines: dict[str, list[str]] = field(default_factory=dict)  # regex group -> lines, one must hold it
    unreadable: bool = False  # a value to read from a step this episode has not taken yet
    sources: list[str] = field(default_factory=list)  # those steps, to take first

    def fits(self, key: str) -> bool:
        if self.unreadable:
            return False
        if self.rx is None:
            return key == self.key
        m = self.rx.fullmatch(key)
        if not m:
            return False
        return all(f" {content_words(m.group(g))} " in f" {text} " for g, text in self.reads.items()) and \
            all(any(f" {content_words(m.group(g))} " in f" {ln} " for ln in lns) for g, lns in self.lines.items())


def _pattern(template: str, values: Mapping[str, str], history: Sequence[Any], domain: Any) -> _Step:
    """A plan or lesson step as this episode can read it.

    Slots the goal or an earlier tool output fills are filled (:func:`resolve`). A slot left over
    is a free value, searched among the admissible actions, never guessed: ``[value]`` (an
    instance number of the source episode, a value no tool has returned yet) is any one argument;
    ``[from read note]`` (what the source read there) is any words that this episode's latest
    ``read note`` says — none before this episode has read it."""
    from ..domain import resolve

    out = resolve(template, history, values)
    if not _SLOT.search(out):
        return _Step(domain.action_key(out))
    marks: list[str] = []

    def mark(m: re.Match[str]) -> str:
        marks.append(m.group(0))
        return f"\x00{len(marks) - 1}\x00"

    key = domain.action_key(_SLOT.sub(mark, out))
    rx, reads, lines, unreadable, sources = re.escape(key), {}, {}, False, []
    for i, slot in enumerate(marks):
        src = slot[len("[from "):-1] if slot.startswith("[from ") else None
        if src is None:
            rx = rx.replace(re.escape(f"\x00{i}\x00"), r"[^\s,()=]+", 1)
            continue
        src, _, why = src.partition(": ")  # "[from read note: nightly]": on a line that says "nightly"
        said = next((o for a, o in reversed([(getattr(h, "action", ""), getattr(h, "feedback", "")) for h in history])
                     if domain.action_key(a) == domain.action_key(src)), None)
        if said is None:
            unreadable = True
            sources.append(src)
            said = ""
        reads[f"r{i}"] = content_words(said)
        if why:
            need = set(why.split())
            lines[f"r{i}"] = [ln for ln in (content_words(x) for x in said.splitlines()) if need <= set(ln.split())]
        rx = rx.replace(re.escape(f"\x00{i}\x00"), rf"(?P<r{i}>[^,()=]+?)", 1)
    try:
        return _Step(key, re.compile(rx), reads, lines, unreadable, sources)
    except re.error:
        return _Step(key, None, {}, {}, True)


def _hits(pat: _Step, by_key: Mapping[str, list[str]]) -> list[str]:
    if pat.rx is None and not pat.unreadable:
        return list(by_key.get(pat.key, []))
    return [a for k, acts in by_key.items() if pat.fits(k) for a in acts]


def _matches(pat: _Step, key: str) -> bool:
    return pat.fits(key)


def _progress(exact: Sequence[_Step], loose: Sequence[_Step],
              goal_slots: Sequence[frozenset[str]], done: Sequence[str]) -> tuple[int, dict[int, str]]:
    """How far this episode has come along a plan: the index of its next step, and the action
    that carried out each step done.

    Each action done moves to just past the first plan step from here that it carries out, so a
    step skipped because it was not possible (another episode's detail) does not hold the plan
    back: the follower re-anchors on the next step that matches. A step that names the goal's
    values (`goal_slots`) is what the plan is for: it is jumped over only by an action that carries
    out a later step naming all of them (its source opened the box it then filled; this one's box
    was open), and never two of them at once."""
    p, by = 0, {}
    for key in done:
        skipped: Optional[frozenset[str]] = None
        for j in range(p, len(exact)):
            hit = _matches(exact[j], key) or (bool(goal_slots[j]) and _matches(loose[j], key)) \
                or (exact[j].rx is None and _carries_out(exact[j].key, key))
            if hit and (skipped is None or skipped <= goal_slots[j]):
                p = j + 1
                by[j] = key
                break
            if goal_slots[j]:
                if skipped is not None:
                    break
                skipped = goal_slots[j]
    return p, by


def _parts(command: str) -> tuple[tuple[str, ...], list[set[str]]]:
    """A command's frame up to its second value and its words there: the first value's, and the
    rest's (``file red invoice in box of letters`` -> (file, *, in, *), [{red, invoice}, {box,
    letters}]); a verb's own words are not a value's."""
    from ..domain import command_frame

    frame, phrases = command_frame(command)
    values = [set(content_words(p).split()) for p in phrases[:1]]
    if len(phrases) > 1:
        values.append(set(content_words(" ".join(phrases[1:])).split()))
    return frame[:4], values


def _analogy(step: str, key: str) -> tuple[int, int]:
    """How much `key` does what the concrete step did, to other things: (how many of its values
    share a word with the step's, how many words they share); (0, 0) when the frames differ."""
    from ..domain import call_name

    if step == key or call_name(step) or call_name(key):
        return 0, 0  # a tool call is called as it is, never by likeness
    (fs, vs), (fk, vk) = _parts(step), _parts(key)
    if fs != fk or len(vs) != len(vk):
        return 0, 0
    shared = [len(a & b) for a, b in zip(vs, vk)]
    return sum(1 for n in shared if n), sum(shared)


def _carries_out(step: str, key: str) -> bool:
    """An action did a concrete step that pairs two values to other things: each of its values
    shares a word with the step's (``file red invoice in billing folder`` for ``file blue invoice
    in billing folder``; not ``... in trash folder``). A one-value step is done only as written."""
    n, _ = _analogy(step, key)
    return n > 1 and n == len(_parts(step)[1])


def _analogues(step: str, by_key: Mapping[str, list[str]], done: Sequence[str]) -> list[str]:
    """The admissible actions most like a concrete step that pairs two values and is not possible
    here: one frame, each value sharing a word with the step's, the most words shared (``file
    red invoice in billing folder`` for ``file blue invoice in billing folder``), none this
    episode already did, so that a wrong one gives way to the next. Such a step was kept as
    written because its pairing is what it did (which thing went where); a one-value step never
    transfers by likeness (``delete branch feature-x`` is not ``delete branch main``).

    Known limit (review R7b): the shared word may be only the type of the thing (``invoice``), so
    the source's pairing (blue invoice to billing) is offered for another thing of the type (red
    invoice to billing) that may belong elsewhere. Hence an analogue gets `ANALOGUE` (0.5) of the
    step's weight: a step to consider, less than a plan's own step, and once tried it gives way to
    the next; it is not a claim that the pairing holds."""
    if len(_parts(step)[1]) < 2:
        return []
    tried = set(done)
    scored = [(_analogy(step, k), k) for k in by_key if k not in tried]
    best = max((n for n, _ in scored if n[0] == 2), default=(0, 0))
    return [a for n, k in scored if n == best and best[0] == 2 for a in by_key[k]]


def _instances(key: str, values: Mapping[str, str]) -> frozenset[str]:
    """The goal's values as an action names them, each with the word after it (its instance:
    ``item 2``)."""
    out = set()
    for v in values.values():
        for m in re.finditer(rf"(?<![\w-]){re.escape(v.lower())}(?![\w-])(\s+[\w-]+)?", key.lower()):
            out.add(m.group(0))
    return frozenset(out)


def follow_demo(plan: Sequence[str], values: Mapping[str, str], views: Sequence[Any], done: Sequence[str],
                by_key: Mapping[str, list[str]], domain: Any, hints: Hints, weight: float = NEXT_STEP,
                many: frozenset[str] = frozenset(), alts: Sequence[str] = ()) -> tuple[int, int]:
    """Hint the action that carries out a demonstration's next step here.

    Steps that name the goal's values (its object, its target) are what the plan is for; the
    others are the means its source episode used to get there (where it walked, what it opened).
    So, in order:

    1. the nearest later step that names the goal, when it is possible here (the goal's object is
       in view: take it, whatever the source episode did first), matched loosely: its other words
       and values free;
    2. the next step, when it is possible here (exactly, else loosely);
    3. when it is not, and this episode was shown the step's goal value somewhere it has not
       acted on yet (after an action of its own, not as that action's echo), that action again,
       at half weight: go back to where the thing was seen;
    4. else the step before it was done with the wrong value for this episode: it is redone with
       a value not yet tried (``open door [value]``: another door; then any place not yet tried)
       — a search over what is admissible, never a guess;
    5. else the first later step that is possible, but never past a step that names the goal.

    A step whose value the source read somewhere (``take [from read note]``) is possible once
    this episode has read the same; before that, the read is the step. When the goal asks for
    several of a value (`many`: its slots after a number word), a step the plan repeats on it is
    not hinted on an instance an earlier repeat was done to.

    Returns how far the episode is along the plan and which step was possible here (2: one naming
    the goal, 1: another, 0: none): what :func:`generic_hints` chooses a binding of the goal's
    values by.
    """
    exact = [_pattern(s, values, views, domain) for s in plan]
    goal_slots = [frozenset(t for t in _SLOT.findall(s) if t in values) for s in plan]
    goal_step = [bool(g) for g in goal_slots]
    loose_text = [_loosen(s) for s in plan]
    loose = [_pattern(t, values, views, domain) if g else e for t, g, e in zip(loose_text, goal_step, exact)]
    p, by = _progress(exact, loose, goal_slots, done)
    if p >= len(plan):
        return p, _redo(plan, exact, loose, goal_step, values, views, done, by_key, domain, hints, weight)

    def named(j: int) -> dict[str, str]:
        return {t: values[t] for t in _SLOT.findall(plan[j]) if t in many}

    def again(j: int) -> frozenset[str]:
        # The goal asks for several of a value (`many`: "two reports"), and a plan that does the
        # same step on it twice (take one, then another) did it to another one the second time:
        # what an earlier repeat was done to is not hinted.
        return frozenset().union(*[_instances(by[i], named(j)) for i in range(j) if i in by
                                   and goal_step[i] and loose_text[i] == loose_text[j]])

    def possible(j: int) -> list[str]:
        if exact[j].unreadable:  # what this step needs is read elsewhere: read it first
            return [a for src in exact[j].sources for a in by_key.get(domain.action_key(src), [])]
        hits = _hits(exact[j], by_key) or _hits(loose[j], by_key)
        if not hits and exact[j].rx is None and not exact[j].unreadable:
            hits = _analogues(exact[j].key, by_key, done)
            if hits:
                likeness.add(j)
        if not hits and exact[j].lines:
            # What the source did for a line that says another thing than any here ("nightly"):
            # the step some demonstration took for a line this episode read does it here.
            shape = _shape(plan[j])
            for alt in alts:
                if alt != plan[j] and _shape(alt) == shape:
                    hits = _hits(_pattern(alt, values, views, domain), by_key)
                    if hits:
                        break
        used = again(j) if goal_step[j] else frozenset()
        if used:
            hits = [a for a in hits if not (_instances(domain.action_key(a), named(j)) or {""}) <= used]
        return hits

    likeness: set[int] = set()  # steps hinted through an analogue: a step to consider, not the plan's own

    def add(acts: Sequence[str], w: float, why: str, step: int = -1) -> tuple[int, int]:
        if step in likeness:
            w, why = w * ANALOGUE, why + " (by likeness)"
        for a in acts:  # each match gets the whole bonus: the policy's own scores choose among them
            hints.add(a, w, why)
        return p, (2 if goal_step[step] else 1) if step >= 0 else 0

    more = _more_items(plan, exact, by, views, done, by_key, domain)
    if more:
        return add(more[1], weight, f"demonstration step {more[0] + 1}: {plan[more[0]]} (another item read)",
                   more[0])
    nxt = next((j for j in range(p, len(plan)) if goal_step[j]), None)
    if nxt is not None and nxt > p:
        hits = possible(nxt)
        if hits:
            return add(hits, weight, f"demonstration step {nxt + 1}: {plan[nxt]} (possible here)", nxt)
    hits = possible(p)
    if hits:
        return add(hits, weight, f"demonstration step {p + 1}: {plan[p]}", p)
    # Going back to where a thing was seen speaks softer than a step possible here (another
    # demonstration's), and only when none is.
    back = _seen_at(nxt if nxt is not None else p, plan, values, views, done, by_key, domain)
    if back:
        return add(back, weight / 2, f"demonstration step {(nxt if nxt is not None else p) + 1}: "
                                 f"{plan[nxt if nxt is not None else p]} (its value was seen after this)")
    if p:
        tried = set(done)
        for pat, w in ((exact[p - 1], weight), (_pattern(_loosen(plan[p - 1]), values, views, domain), EXPLORE)):
            untried = [a for a in _hits(pat, by_key) if domain.action_key(a) not in tried]
            if untried:
                return add(untried, w, f"demonstration step {p}: {plan[p - 1]} with a value not tried yet "
                                       f"(step {p + 1} is not possible)")
    if goal_step[p]:
        return p, 0
    for j in range(p + 1, len(plan)):
        hits = possible(j)
        if hits:
            return add(hits, weight, f"demonstration step {j + 1}: {plan[j]} (step {p + 1} is not possible here)", j)
        if goal_step[j]:
            return p, 0
    return p, 0


def _more_items(plan: Sequence[str], exact: Sequence[_Step], by: Mapping[int, str], views: Sequence[Any],
                done: Sequence[str], by_key: Mapping[str, list[str]], domain: Any) -> Optional[tuple[int, list[str]]]:
    """A step done on an item of a list read (``take [from read note]``: a verb and a value read)
    is done again on the list's other items that no action has named yet: the source's list was
    its own, this episode's may be longer."""
    named = " ".join(f" {content_words(k)} " for k in done)
    for k in sorted(by):
        if not re.fullmatch(r"\S+ \[from [^\]:]+\]", plan[k]) or exact[k].unreadable:
            continue
        src = plan[k].split(" ", 1)[1][len("[from "):-1]
        said = next((getattr(v, "feedback", "") for v in reversed(views)
                     if domain.action_key(getattr(v, "action", "")) == domain.action_key(src)), "")
        items = {content_words(x) for x in said.splitlines()} - {""}
        hits = [a for a in _hits(exact[k], by_key)
                if (v := content_words(domain.action_key(a)).split(" ", 1)[-1]) in items and f" {v} " not in named]
        if hits:
            return k, hits
    return None


def _shape(step: str) -> str:
    """A step with its source's details free and its read values' lines unsaid: steps of one shape
    do the same thing for different lines read."""
    return re.sub(r"\[from ([^\]:]+): [^\]]*\]", r"[from \1]", _loosen(step))


def _redo(plan: Sequence[str], exact: Sequence[_Step], loose: Sequence[_Step], goal_step: Sequence[bool],
          values: Mapping[str, str], views: Sequence[Any], done: Sequence[str], by_key: Mapping[str, list[str]],
          domain: Any, hints: Hints, weight: float) -> int:
    """Every step of the plan is done and the episode goes on, so the task is not: what its source
    did together was done apart here (a switch turned on in one room, the thing taken in another).
    A step naming the goal that is possible here is done again (not the action just taken), else
    the agent goes back to where such a step's value was seen, at half weight.

    Never a look step (reading again is not doing again what was done apart), and never a tool
    call already made: a call's effect does not depend on where the agent stands, so there is no
    "apart" to mend, and a second refund is a second refund. A message agent whose plan is done
    answers next."""
    from ..domain import StepKind, StepView, call_name

    last = done[-1] if done else ""
    called = {domain.action_key(d) for d in done if call_name(d)}
    for j in (j for j in range(len(plan)) if goal_step[j]):
        if domain.step_kind(StepView(plan[j])) is StepKind.look:
            continue
        hits = [a for a in (_hits(exact[j], by_key) or _hits(loose[j], by_key))
                if domain.action_key(a) != last and domain.action_key(a) not in called]
        if hits:
            for a in hits:
                hints.add(a, weight, f"demonstration step {j + 1}: {plan[j]} (again: the plan is done, the task is not)")
            return 2
    for j in (j for j in range(len(plan)) if goal_step[j] and not call_name(plan[j])):
        back = _seen_at(j, plan, values, views, done, by_key, domain, fresh=False)
        if back:
            for a in back:
                hints.add(a, weight / 2, f"demonstration step {j + 1}: {plan[j]} (again, where its value was seen)")
            return 0
    return 0


def _seen_at(j: int, plan: Sequence[str], values: Mapping[str, str], views: Sequence[Any], done: Sequence[str],
             by_key: Mapping[str, list[str]], domain: Any, fresh: bool = True) -> list[str]:
    """Where to go back to for a plan step that is not possible here: the action after which this
    episode was shown an instance of the step's first goal value that it has not acted on yet (the
    second of two things, seen on the way to the first; with `fresh=False` any instance), latest
    first; not the one it just took."""
    first = next((t for t in _SLOT.findall(plan[j]) if t in values), None)
    if first is None:
        return []
    acted = frozenset().union(*[_instances(k, {first: values[first]}) for k in done]) if fresh else frozenset()
    last = domain.action_key(getattr(views[-1], "action", "")) if views else ""
    for v in reversed(views[:-1] if views else []):
        key = domain.action_key(getattr(v, "action", ""))
        shown = _instances(getattr(v, "feedback", "") or "", {first: values[first]})
        shown -= _instances(key, {first: values[first]})  # the world echoing the action is not showing a thing
        if key and key != last and {i for i in shown if " " in i.strip()} - acted and by_key.get(key):
            return list(by_key[key])
    return []


_COUNT = re.compile(r"\b(?:[2-9]|\d{2,}|two|three|four|five|six|seven|eight|nine|ten|several|both)\s+$", re.I)


def _many(goal: str, values: Mapping[str, str]) -> frozenset[str]:
    """The slots whose value the goal asks for more than one of: a count word right before it."""
    out = set()
    for slot, v in values.items():
        m = re.search(rf"(?<![\w-]){re.escape(v)}(?![\w-])", goal, re.I)
        if m and _COUNT.search(goal[:m.start()]):
            out.add(slot)
    return frozenset(out)


def _bindings(template_goal: str, goal: str, slots: Any) -> list[dict[str, str]]:
    """The ways a demonstration's goal slots may stand for this goal's values.

    A template worded as this goal binds exactly (its values in its places). One worded otherwise
    (another phrasing of the same task: "warm the [noun] and leave it in [noun2]" for "leave a warm
    cup in the box") names its values in an order and with words that need not match this goal's,
    and a word of this goal may be no value at all (an adjective): every one-to-one choice of this
    goal's values for the template's slots is a candidate, the order-keeping ones first, and the
    episode's own steps choose among them (:func:`follow_demo` over each)."""
    from itertools import permutations

    bound = slots.bind(template_goal, goal) if template_goal and hasattr(slots, "bind") else {}
    if bound:
        return [bound]
    names = list(dict.fromkeys(f"[{n}]" for n in re.findall(r"\[([A-Za-z_][\w ]*?)\]", template_goal or "")))
    items = list(dict(slots.values).items())
    vals = [v for _, v in items]
    if not names or not vals or len(names) > 4 or len(vals) > 6:
        return [dict(slots.values)]
    k = min(len(names), len(vals))
    # A slot binds a value of its own kind only (an [id] never an order's noun, a [number] never a
    # word), when the template's slots are of kinds this goal has; else any value (wordings differ).
    kind_of = {v: _slot_kind(key) for key, v in items}
    cands = [dict(zip(names, pick)) for pick in permutations(vals, k)]
    typed = [c for c in cands if all(_slot_kind(n) == kind_of[v] for n, v in c.items())]
    return sorted(typed or cands,
                  key=lambda c: [vals.index(c[n]) for n in names[:k]] != sorted(vals.index(c[n]) for n in names[:k]))


def _slot_kind(name: str) -> str:
    return re.sub(r"\d+$", "", name.strip("[]"))


# The slot names a goal's values get (SlotMap: [noun], [id2]...), as against free values ([value], [free]).
_GOAL_SLOT = re.compile(r"\[(?:noun|id|number|code|text)\d*\]")


_STEP_TEXT = re.compile(r"`([^`]+)`")
_SITUATION = re.compile(r"after `[^`]+` succeeded|while `[^`]+` is not done yet")
_AFTER_STEP = re.compile(r"after `([^`]+)` succeeded")
_UNTIL_STEP = re.compile(r"while `([^`]+)` is not done yet")


def _unfilled(text: str, values: Mapping[str, str]) -> bool:
    return any(m.group(0) not in values for m in _GOAL_SLOT.finditer(text))


def _fix_step(les: Any) -> str:
    """The step a lesson's fix names ("call X; ..." -> "X")."""
    said = (_get(les, "fix", "") or "").strip()
    return re.sub(r"^(call|do)\s+", "", said).split(";")[0].split(" (")[0].strip().strip("'")


def _speaking(context: Any, goal: str, pairs: Sequence[tuple[str, str]], admissible: Sequence[str], domain: Any,
              slots: Any, state: Any) -> list[tuple[Any, dict[str, str]]]:
    """The retrieved lessons that speak at this step, each with the goal's values it is read with.

    A lesson speaks where its situation holds (the domain checks its trigger), when it transfers,
    names no value this goal lacks, and its fix is not its bad action with another value."""
    lesson_slots = getattr(domain, "lesson_slots", None)
    commands = [*admissible, *(a for a, _ in pairs)]
    # A trigger naming steps reads them with the lesson's slots.
    try:
        bound_holds = "values" in inspect.signature(domain.holds).parameters
    except (TypeError, ValueError):
        bound_holds = False
    out = []
    for les in _get(context, "lessons", None) or []:
        trigger = _get(les, "trigger", "") or ""
        prov = _get(les, "provenance", None) or {}
        if prov.get("transferable") is False:
            continue  # its own episode's correction, verbatim: nothing here to act on
        bad = (_get(les, "bad_action", "") or "").strip()
        said = (_get(les, "fix", "") or "").strip()
        fix = _fix_step(les)
        texts = " ".join((trigger, bad, said))
        # The goal's values as lessons name them (a domain's `lesson_slots`: the goal's words that
        # are verbs of the commands here or of the lesson's own steps are not values).
        vals = dict(lesson_slots(goal, [*commands, *_STEP_TEXT.findall(texts), fix, bad]).values) \
            if lesson_slots is not None else dict(slots.values)
        if _unfilled(texts, vals):
            continue  # it names a value of its goal that this goal does not have: read freely, it would match anything
        if not (domain.holds(trigger, state, goal, values=vals) if bound_holds else domain.holds(trigger, state, goal)):
            continue
        if bad and bad == fix:
            continue  # only a value of its own episode differed: nothing here to avoid or prefer
        out.append((les, vals))
    return out


def situated_lessons(context: Any, goal: str, history: Sequence[Any] | None, admissible: Sequence[str],
                     domain: Any = None, hinted: Optional[Sequence[Any]] = None) -> list[Any]:
    """The lessons of `context` that speak at this step (`_speaking`): the ones a prompt shows here.

    A lesson whose situation does not hold says nothing at this step, in hints or in words: its
    text in the prompt would only move a policy's scores where no lesson applies. With `hinted`
    (the lessons that gave this step's hints, `Hints.lessons`), one whose trigger names a step
    situation speaks only where it gave a hint: the situation it names is where its fix is due,
    and a fix not possible here (a place that never opens) says nothing here."""
    from ..domain import StepView, TextDomain

    d = domain if domain is not None else TextDomain()
    pairs = history_pairs(history)
    views = [StepView(a, o) for a, o in pairs]
    gave = None if hinted is None else {id(x) for x in hinted}
    return [les for les, _ in _speaking(context, goal, pairs, admissible, d, d.slots(goal), d.state(goal, views))
            if gave is None or id(les) in gave or not _SITUATION.search(_get(les, "trigger", "") or "")]


def generic_hints(context: Any, goal: str, pairs: Sequence[tuple[str, str]], admissible: Sequence[str],
                  domain: Any) -> Hints:
    """Hints any domain supports: exact matches of filled lesson and plan steps among `admissible`."""
    from ..domain import StepKind, StepView

    hints = Hints()
    views = [StepView(a, o) for a, o in pairs]
    by_key: dict[str, list[str]] = {}
    for a in admissible:
        by_key.setdefault(domain.action_key(a), []).append(a)
    slots = domain.slots(goal)
    state = domain.state(goal, views)

    seen = " " + " ".join(content_words(o) for _, o in pairs) + " " + " ".join(by_key) + " "

    # What this episode already did: a lesson's fix is a step to take, not one to take again.
    carried_out = [a for a, o in pairs
                   if domain.step_kind(StepView(a, o)) is not StepKind.reasoning and not domain.failure(StepView(a, o))]
    again = getattr(domain, "repeats", None) or (lambda a, done: domain.action_key(a) in
                                                 {domain.action_key(d) for d in done})
    hints.lessons = []
    for les, vals in _speaking(context, goal, pairs, admissible, domain, slots, state):
        n_reasons = sum(map(len, hints.reasons.values()))
        trigger = _get(les, "trigger", "") or ""
        bad = (_get(les, "bad_action", "") or "").strip()
        fix = _fix_step(les)
        # A bad action is avoided only as it was: with a value left free it names every instance,
        # and which one was wrong belonged to its episode. A fix may be any instance of itself.
        # Unless the bad action names the goal's values and the trigger the step after which it was
        # wrong: then every instance of it is wrong there (taking back what the goal put in place).
        # The step after which it was wrong, done again on another instance (going to another of the
        # goal's places), takes nothing back: only the instance was the source episode's.
        after = _AFTER_STEP.findall(trigger)
        # The step the situation waits for (``while `Y` is not done yet``), when it is possible here,
        # is what the lesson asks for when its fix is Y or the way to it ("walk to wheel (then Y)"):
        # done again from where Y is possible, the way would lead away from it. Not when the lesson
        # reads "before Y, do F" (F another step, Y its bad action).
        said = _get(les, "fix", "") or ""
        ys = [y for y in _UNTIL_STEP.findall(trigger) if _loosen(y) != _loosen(bad) and
              (_loosen(y) == _loosen(fix) or f"(then {y})" in said)]
        due = [a for y in ys for a in _hits(_pattern(y, vals, views, domain), by_key) if not again(a, carried_out)]
        # A lesson whose fix is the due step itself ("Y, offered here") says: where Y is offered, take
        # it rather than the bad action. Where Y is not possible (this episode's object is elsewhere)
        # it forbids nothing; a take-back ("X undid Y") stays wrong anywhere.
        instead = any(_loosen(y) == _loosen(fix) for y in ys) and "` undid `" not in said
        bad_step = _pattern(bad, vals, views, domain) if bad else None
        exact_only = bad_step is not None and bad_step.rx is None
        shaped = bad_step is not None and not exact_only and not bad_step.unreadable and bool(after) \
            and any(t in vals for t in _SLOT.findall(bad)) and all(_loosen(bad) != _loosen(x) for x in after) \
            and (bool(due) or not instead)
        goal_fix = any(t in vals for t in _SLOT.findall(fix))
        # A trigger that names the plan's step situation (``after `X` succeeded``, ``while `Y` is
        # not done yet``, which the domain checks) holds exactly where its fix is due: it speaks as
        # strongly as a demonstration's next step. Others only lean, backticks in an LLM's prose
        # ("when `refund` fails") included.
        fix_weight = NEXT_STEP if _SITUATION.search(trigger) else FIX
        goal_words = {w.lower() for v in vals.values() for w in v.split()}
        named = sum(1 for t in _SLOT.findall(bad) if t in vals)
        for a in _hits(bad_step, by_key) if exact_only or shaped else []:
            # A free value never stands for one of the goal's values: "move [noun] [value] to [free]
            # [value]" (putting it back) is not the goal's own "move ... to [noun2]".
            if exact_only or sum(1 for w in re.findall(r"[a-z]+", a.lower()) if w in goal_words) <= named:
                hints.add(a, AVOID, f"lesson: avoid '{bad}'")
        for a in due:
            hints.add(a, fix_weight, f"lesson: the step due, {a[:80]}")
        for a in _hits(_pattern(fix, vals, views, domain), by_key) if fix and not due else []:
            # A goal step done is not redone (taking back what was put, a second take of the same
            # thing); a step toward one (going somewhere) may well be taken again.
            if not (goal_fix and again(a, carried_out)):
                hints.add(a, fix_weight, f"lesson fix: {fix[:80]}")
        if sum(map(len, hints.reasons.values())) > n_reasons:
            hints.lessons.append(les)

    done = [domain.action_key(a) for a, o in pairs
            if domain.step_kind(StepView(a, o)) is not StepKind.reasoning and not domain.failure(StepView(a, o))]
    demos = _get(context, "demonstrations", None) or []
    alts = [s for d in demos for s in (_get(d, "plan", None) or []) if ": " in s and "[from " in s]
    for demo in demos:
        plan = _get(demo, "plan", None) or []
        cands = _bindings(_get(demo, "goal_template", "") or "", goal, slots)
        if len(cands) == 1:
            follow_demo(plan, cands[0], views, done, by_key, domain, hints, many=_many(goal, cands[0]), alts=alts)
            continue
        # Which of the bindings this episode is carrying out: the one its actions took furthest
        # along the plan, then one under which a step naming the goal is possible here (then another
        # step), then one whose values the world has named (a word no observation or command names
        # is no thing to act on), then order.
        best = None
        for i, vals in enumerate(cands):
            trial = Hints()
            p, hit = follow_demo(plan, vals, views, done, by_key, domain, trial, many=_many(goal, vals), alts=alts)
            named = sum(f" {content_words(v)} " in seen for v in vals.values())
            score = (p, hit, named, -i)
            if best is None or score > best[0]:
                best = (score, trial)
        for a, w in best[1].bonus.items():
            hints.bonus[a] = hints.bonus.get(a, 0.0) + w
            hints.reasons.setdefault(a, []).extend(best[1].reasons[a])
    return hints


def history_pairs(history: Sequence[Any] | None) -> list[tuple[str, str]]:
    """History items in any of the accepted shapes as (action, observation) pairs."""
    out: list[tuple[str, str]] = []
    for item in history or ():
        if isinstance(item, str):
            out.append(("", item))
        elif isinstance(item, Mapping):
            out.append((str(item.get("action", "") or ""),
                        str(item.get("observation", item.get("feedback", "")) or "")))
        elif hasattr(item, "action"):  # a Step or StepRow
            out.append((item.action or "", getattr(item, "feedback", "") or getattr(item, "observation", "") or ""))
        else:
            a, o = item
            out.append((str(a or ""), str(o or "")))
    return out


def hints_from_context(context: Any, goal: str, history: Sequence[Any] | None, admissible: Sequence[str],
                       domain: Any = None) -> Hints:
    """Lessons and demonstrations in `context` matched against `admissible` as per-action bonuses.

    `domain` (default TextDomain) says what the actions and the situation are; a domain with a
    `hints()` method of its own gives those instead.
    """
    from ..domain import TextDomain

    if context is None or isinstance(context, str) or not admissible:
        return Hints()
    pairs = history_pairs(history)
    d = domain if domain is not None else TextDomain()
    own = getattr(d, "hints", None)
    if own is not None:
        return own(context, goal, pairs, admissible)
    return generic_hints(context, goal, pairs, admissible, d)
