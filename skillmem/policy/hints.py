"""Structured hints: retrieved lessons and demonstrations matched against the admissible actions.

Memory steers even a policy that cannot read this way:

* a lesson's **bad action** penalizes the admissible actions it names, in the situation its
  trigger names (the domain says whether that situation holds);
* a lesson's **fix** rewards the admissible actions it names;
* a demonstration's **next step** rewards the action that carries it out here: the first
  state-changing step of its plan not yet done, in order, slots filled from this goal and
  values a tool returned read from the history (``[lookup_order.total]``).

Matching is exact on the domain's `action_key` after the slots are filled: an argument is
never guessed. A domain that knows more (a world pack: navigation toward the place a plan
step needs, exploring places not yet visited) gives its own hints through `hints()`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

# How strongly each kind of memory speaks. A policy learns its own weight on top.
AVOID, FIX, NEXT_STEP, EXPLORE = -1.0, 0.5, 1.0, 0.3
_SLOT = re.compile(r"\[[^\]]+\]")


@dataclass
class Hints:
    """Per-action bonus (>0: memory prefers it) or penalty (<0: memory warns against it)."""

    bonus: dict[str, float] = field(default_factory=dict)
    reasons: dict[str, list[str]] = field(default_factory=dict)

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


def _concrete(template: str, values: Mapping[str, str], history: Sequence[Any]) -> Optional[str]:
    """The template with every slot filled, or None when one cannot be (never a guess)."""
    from ..domain import resolve

    out = resolve(template, history, values)
    return None if _SLOT.search(out) else out


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

    def values_for(template_goal: str) -> dict[str, str]:
        return slots.bind(template_goal, goal) if template_goal and hasattr(slots, "bind") else dict(slots.values)

    for les in _get(context, "lessons", None) or []:
        trigger = _get(les, "trigger", "") or ""
        if not domain.holds(trigger, state, goal):
            continue
        vals = dict(slots.values)
        bad = _concrete((_get(les, "bad_action", "") or "").strip(), vals, views)
        for a in by_key.get(domain.action_key(bad), []) if bad else []:
            hints.add(a, AVOID, f"lesson: avoid '{bad}'")
        fix = (_get(les, "fix", "") or "").strip()
        fix = re.sub(r"^(call|do)\s+", "", fix).split(";")[0].split(" (")[0].strip().strip("'")
        filled = _concrete(fix, vals, views)
        for a in by_key.get(domain.action_key(filled), []) if filled else []:
            hints.add(a, FIX, f"lesson fix: {fix[:80]}")

    done = {domain.action_key(a) for a, o in pairs
            if domain.step_kind(StepView(a, o)) is not StepKind.reasoning and not domain.failure(StepView(a, o))}
    for demo in _get(context, "demonstrations", None) or []:
        vals = values_for(_get(demo, "goal_template", "") or "")
        for k, step in enumerate(_get(demo, "plan", None) or []):
            filled = _concrete(step, vals, views)
            if filled is None:
                break  # a step needs a value this episode does not have yet: stop there
            key = domain.action_key(filled)
            if key in done:
                continue
            for a in by_key.get(key, []):
                hints.add(a, NEXT_STEP, f"demonstration step {k + 1}: {step}")
            break
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
