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
    plan = _without_superseded(plan)
    if not plan:
        raise ValueError(f"episode {trace.episode_id} succeeded without any step that did something; "
                         "nothing to demonstrate")
    return DemonstrationBase(
        task_type=trace.task_type, goal_template=goal_template, plan=plan, slots=slots.slots,
        source_episodes=[trace.episode_id], provenance={"writer": writer, "steps": len(trace.steps),
                                                        "domain": d.name},
        raw_tokens=trace.raw_tokens,
    )


def _without_superseded(plan: list[str]) -> list[str]:
    """The plan without a command written as done that a later one of its frame redid to the same
    first value with others (``put striped duvet in desk``, later ``put striped duvet in bed``):
    the later one is what stuck, the earlier was tried and taken back. Slotted steps and tool
    calls stay (their values are the replay's, not the source's)."""
    def shape(step: str) -> tuple:
        if _SLOT.search(step) or call_name(step):
            return ()
        frame, phrases = command_frame(step)
        # The frame up to the second value: "in desk" and "in chest of drawers" are one place slot.
        return (frame[:4], phrases[0], phrases[1:]) if len(phrases) > 1 else ()

    shapes = [shape(s) for s in plan]
    kept = [s for i, (s, sh) in enumerate(zip(plan, shapes))
            if not sh or not any(o and o[:2] == sh[:2] and o[2] != sh[2] for o in shapes[i + 1:])]
    # What took it back now follows what it took back (take, take): once is enough, as above.
    return [s for i, s in enumerate(kept) if i == 0 or kept[i - 1] != s]


_SLOT = re.compile(r"\[[^\]]+\]")


def compaction(demo: DemonstrationBase) -> float:
    """Tokens of the demonstration as the agent reads it over tokens of its raw trajectory (smaller is more compact)."""
    from ..retrieve import render_demo

    return count_tokens(render_demo(demo)) / max(1, demo.raw_tokens)
