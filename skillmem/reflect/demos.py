"""Demonstrations from successes: the plan as steps with slots, the goal template, the task type.

A success stays concrete (DESIGN principle 2): the plan is the actions that worked, as the
agent wrote them (case and values kept; only what the goal names becomes a slot, so it
transfers), minus the steps that did nothing: failed actions, looks, thoughts and chat, as the
domain reads them. Its compaction is measured: tokens of the demonstration over tokens of the
raw trajectory it came from.
"""

from __future__ import annotations

from typing import Any, Optional

from ..episode import DemonstrationBase
from ..tokens import count_tokens
from .safety import has_injection
from ..domain import StepKind, call_name
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
    if not plan:
        raise ValueError(f"episode {trace.episode_id} succeeded without any step that did something; "
                         "nothing to demonstrate")
    return DemonstrationBase(
        task_type=trace.task_type, goal_template=goal_template, plan=plan, slots=slots.slots,
        source_episodes=[trace.episode_id], provenance={"writer": writer, "steps": len(trace.steps),
                                                        "domain": d.name},
        raw_tokens=trace.raw_tokens,
    )


def compaction(demo: DemonstrationBase) -> float:
    """Tokens of the demonstration as the agent reads it over tokens of its raw trajectory (smaller is more compact)."""
    from ..retrieve import render_demo

    return count_tokens(render_demo(demo)) / max(1, demo.raw_tokens)
