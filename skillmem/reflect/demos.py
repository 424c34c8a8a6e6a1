"""Demonstrations from successes: the plan as steps with slots, the goal template, the task type.

A success stays concrete (DESIGN principle 2): the plan is the actions that worked, as the
agent wrote them (case and values kept; only what the goal names becomes a slot, so it
transfers), minus the steps that did nothing: failed actions, looks, thoughts and chat, as the
domain reads them. Its compaction is measured: tokens of the demonstration over tokens of the
raw trajectory it came from.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from ..episode import DemonstrationBase
from ..tokens import count_tokens
from .safety import has_injection
from ..domain import StepKind, call_name, command_frame
from .trace import Trace, _domain, _template, _written, episode_slots


def demo_from_trace(trace: Trace, *, writer: str = "offline", domain: Optional[Any] = None) -> DemonstrationBase:
    """A demonstration of a successful episode (raises ValueError if it has no usable step)."""
    d = _domain(domain if domain is not None else trace.domain)
    if trace.domain is not d:
        trace.read_with(d)
    slots = episode_slots(d, trace)
    goal_template = _template(slots, trace.goal)
    plan: list[str] = []
    done: list[str] = []  # the commands each plan step was, as played
    where: list[int] = []  # each plan step's index in trace.steps
    for i, s in enumerate(trace.steps):
        a = _written(d, s.action)
        # A tool that reads stays: what it returns is what the next calls use. A look around does not.
        keep = s.is_action or (s.kind == StepKind.look.value and bool(call_name(a)))
        if not a or not keep or s.failed or has_injection(a):
            continue
        a = slots.abstract(a)
        if hasattr(d, "lesson_text"):
            a = d.lesson_text(a, [x.view for x in trace.steps[:i]], slots)
        if plan and plan[-1] == a:
            continue  # a repeated command that did work the first time adds nothing
        plan.append(a)
        done.append(_written(d, s.action))
        where.append(i)
    detours = _undone_detours(trace, done, where)
    plan = [a for k, a in enumerate(plan) if k not in detours]
    done = [a for k, a in enumerate(done) if k not in detours]
    plan = _without_superseded(plan, done)
    if not plan:
        raise ValueError(f"episode {trace.episode_id} succeeded without any step that did something; "
                         "nothing to demonstrate")
    return DemonstrationBase(
        task_type=trace.task_type, goal_template=goal_template, plan=plan, slots=slots.slots,
        source_episodes=[trace.episode_id], provenance={"writer": writer, "steps": len(trace.steps),
                                                        "domain": d.name},
        raw_tokens=trace.raw_tokens,
    )


def _undone_detours(trace: Trace, done: list[str], where: list[int]) -> set[int]:
    """Plan steps (positions) that a later step undid with nothing got in between: a command that
    swapped what the world offered (``open box`` no longer offered, ``close box`` now is) and a later
    command on the same values, worded alike but for its verb, that swapped it back (after it
    ``open box`` is offered again, ``close box`` no more), not the episode's last action.
    Both go, unless the pair mattered: a step between them that the first one made possible (not
    offered before it, ``take key from box``), or a word the feedback between them brought in
    (``The box contains a key.``) that a later step names. Only the world's own lists of commands
    say what swapped: without them (or after the last step) nothing is dropped."""
    steps = trace.steps

    def offered(k: int) -> Optional[set[str]]:
        adm = steps[k].admissible if 0 <= k < len(steps) else None
        return {_norm(a) for a in adm} if adm else None

    def words(text: str) -> set[str]:
        return set(re.findall(r"\w+", text.lower()))

    dropped: set[int] = set()
    for p, i in enumerate(where):
        if p in dropped:
            continue
        a, before, after = _norm(done[p]), offered(i), offered(i + 1)
        if before is None or after is None or a not in before or a in after:
            continue
        for q in range(p + 1, len(where)):
            if q in dropped:
                continue
            j = where[q]
            b, b_before, b_after = _norm(done[q]), offered(j), offered(j + 1)
            if b in before or b not in after or b_before is None or b_after is None:
                continue
            if b not in b_before or b in b_after or a not in b_after or not _same_but_verb(a, b):
                continue
            if not any(steps[k].is_action and not steps[k].failed for k in range(j + 1, len(steps))):
                break  # the step that won is no detour, whatever it offers again (a thing put back)
            # The pair undid itself; did anything between use what the first step opened up?
            if any(_norm(done[r]) not in before for r in range(p + 1, q) if r not in dropped):
                break
            # What the feedback brought in, beyond what was known before and the commands' own words.
            seen = words(trace.goal) | set().union(*(words(f"{s.observation} {s.feedback} {s.action}")
                                                     for s in steps[:i]), *(words(s.action) for s in steps[i:j + 1]))
            new = set().union(*(words(s.feedback) for s in steps[i:j])) - seen
            if any(words(done[r]) & new for r in range(q + 1, len(where))):
                break
            dropped |= {p, q}
            break
    return dropped


def _same_but_verb(a: str, b: str) -> bool:
    """Two commands on the same values, worded alike but for the verb (``open box``, ``close box``);
    not a take and a put (``put key in box`` undoes ``take key`` only where the key was, and may be
    the very step the task wanted)."""
    (fa, pa), (fb, pb) = command_frame(a), command_frame(b)
    return bool(pa) and pa == pb and fa[1:] == fb[1:] and fa[:1] != fb[:1]


def _norm(command: str) -> str:
    return " ".join(command.lower().split())


def _without_superseded(plan: list[str], done: list[str]) -> list[str]:
    """The plan without a command written as done that was taken back and redone otherwise: a
    later command of its frame on the same first value with other values (``file red invoice in
    trash folder``, later ``file red invoice in billing folder``), and between the two a real take-back
    of that value: a command of another frame that undoes it where the step left it (names the
    step's other values: ``take red invoice from trash folder``), or gets it again the way it was got
    before the step (``take red invoice``, when a ``take red invoice`` came before the first filing).
    The later one is what stuck. Another use of the value between the two is no take-back (``fill
    jar with sand``, ``shake sand in jar``, ``fill bucket with sand``: both fills stay; a command
    naming the place takes the value back only when it says it gets it out: from, out, off), nor is nothing in
    between (moving one disk twice, giving a thing to two people in turn). A command repeated with
    no effect is kept once (see `demo_from_trace`). Slotted steps and tool calls always stay.
    `done`: each step as played."""
    def shape(step: str, played: str) -> tuple:
        if _SLOT.search(step) or call_name(played):
            return ()
        frame, phrases = command_frame(played)
        # The frame up to the second value: "in box" and "in box of letters" are one place slot.
        return (frame[:4], phrases[0], phrases[1:]) if len(phrases) > 1 else ()

    def took_back(i: int, sh: tuple, j: int) -> bool:
        frame, value, where = sh
        got = {command_frame(b)[0] for b in done[:i]
               if value in command_frame(b)[1] and command_frame(b)[0][:4] != frame}
        for b in done[i + 1:j]:
            f, ph = command_frame(b)
            if value in ph and f[:4] != frame and (set(where) & set(ph[1:]) and _OUT & set(f) or f in got):
                return True
        return False

    shapes = [shape(s, a) for s, a in zip(plan, done)]
    kept = [s for i, (s, sh) in enumerate(zip(plan, shapes))
            if not sh or not any(o and o[:2] == sh[:2] and o[2] != sh[2] and took_back(i, sh, j)
                                 for j, o in enumerate(shapes) if j > i)]
    # What took it back now follows what it took back (take, take): once is enough, as above.
    return [s for i, s in enumerate(kept) if i == 0 or kept[i - 1] != s]


_SLOT = re.compile(r"\[[^\]]+\]")
_OUT = {"from", "out", "off"}  # a command that gets a value back out of a place says so


def compaction(demo: DemonstrationBase) -> float:
    """Tokens of the demonstration as the agent reads it over tokens of its raw trajectory (smaller is more compact)."""
    from ..retrieve import render_demo

    return count_tokens(render_demo(demo)) / max(1, demo.raw_tokens)
