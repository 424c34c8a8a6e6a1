"""Demonstrations from successes: the plan as steps with slots, the goal template, the task type.

A success stays concrete (DESIGN principle 2): the plan is the actions that worked, with
object names abstracted so it transfers, minus the steps that did nothing (failed actions,
look/inventory/help). Its compaction is measured: tokens of the demonstration over tokens of
the raw trajectory it came from.
"""

from __future__ import annotations

from ..episode import DemonstrationBase
from ..tokens import count_tokens
from .safety import has_injection
from .trace import INFO_COMMANDS, SlotMap, Trace, normalize_action


def demo_from_trace(trace: Trace, *, writer: str = "offline") -> DemonstrationBase:
    """A demonstration of a successful episode (raises ValueError if it has no usable step)."""
    slots = SlotMap.from_goal(trace.goal)
    goal_template = slots.abstract(trace.goal.rstrip("."))
    plan: list[str] = []
    for s in trace.steps:
        a = normalize_action(s.action)
        if not a or a in INFO_COMMANDS or s.failed or has_injection(a):
            continue
        a = slots.abstract(a)
        if plan and plan[-1] == a:
            continue  # a repeated command that did work the first time adds nothing
        plan.append(a)
    if not plan:
        raise ValueError(f"episode {trace.episode_id} succeeded without any step that did something; "
                         "nothing to demonstrate")
    return DemonstrationBase(
        task_type=trace.task_type, goal_template=goal_template, plan=plan, slots=slots.slots,
        source_episodes=[trace.episode_id], provenance={"writer": writer, "steps": len(trace.steps)},
        raw_tokens=trace.raw_tokens,
    )


def demo_text(demo: DemonstrationBase) -> str:
    """The demonstration as it would be put into an agent's context."""
    steps = "\n".join(f"{i}. {a}" for i, a in enumerate(demo.plan, 1))
    return f"Example of {demo.task_type or 'a task'}: {demo.goal_template}\n{steps}"


def compaction(demo: DemonstrationBase) -> float:
    """Tokens of the demonstration over tokens of its raw trajectory (smaller is more compact)."""
    return count_tokens(demo_text(demo)) / max(1, demo.raw_tokens)
