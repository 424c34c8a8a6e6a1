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


def _without_superseded(plan: list[str], done: list[str]) -> list[str]:
    """The plan without a command written as done that was taken back and redone otherwise: a
    later command of its frame on the same first value with other values (``file red invoice in
    trash folder``, later ``file red invoice in billing folder``), and between the two a real take-back
    of that value: a command of another frame that undoes it where the step left it (names the
    step's other values: ``take red invoice from trash folder``), or gets it again the way it was got
    before the step (``take red invoice``, when a ``take red invoice`` came before the first filing).
    The later one is what stuck. Another use of the value between the two is no take-back (``pour
    water into kettle``, ``boil water``, ``pour water into cup``: both pours stay), nor is nothing in
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
            if value in ph and f[:4] != frame and (set(where) & set(ph[1:]) or f in got):
                return True
        return False

    shapes = [shape(s, a) for s, a in zip(plan, done)]
    kept = [s for i, (s, sh) in enumerate(zip(plan, shapes))
            if not sh or not any(o and o[:2] == sh[:2] and o[2] != sh[2] and took_back(i, sh, j)
                                 for j, o in enumerate(shapes) if j > i)]
    # What took it back now follows what it took back (take, take): once is enough, as above.
    return [s for i, s in enumerate(kept) if i == 0 or kept[i - 1] != s]


_SLOT = re.compile(r"\[[^\]]+\]")


def compaction(demo: DemonstrationBase) -> float:
    """Tokens of the demonstration as the agent reads it over tokens of its raw trajectory (smaller is more compact)."""
    from ..retrieve import render_demo

    return count_tokens(render_demo(demo)) / max(1, demo.raw_tokens)
