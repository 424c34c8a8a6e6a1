"""The household pack: everything skillmem knows about ALFWorld-like games, behind the Domain protocol.

    from skillmem.domains.alfworld import HouseholdDomain
    reflect_pending(memory, OfflineWriter(), domain=HouseholdDomain())
    CPUPolicy(domain=HouseholdDomain())

Its grammar (``go to X``, ``take X from Y``, ``move X to Y``, "Nothing happens."), its six goal
templates, slots by object and receptacle kind, one world-state tracker (:mod:`.state`), the
situations a lesson may name and the rules read at a pivot (:mod:`.rules`), navigation hints
(:mod:`.hints`) and the CPU policy's state features (:mod:`.features`). Results that use it
are the pack's: the harness passes it explicitly, nothing in the core imports it.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from ...domain import Rule, State, StepKind, StepView, TextDomain, Verdict
from . import features as _features
from .rules import (
    EXPLORE_FIX,
    HouseholdSlots,
    _PROGRESS,
    _first_wasted,
    generalize,
    goal_kinds,
    is_failure_feedback,
    situation_holds,
    situation_mistakes,
    STATE_PHRASES,
)
from .state import INFO_COMMANDS, WorldState, normalize_action, world_state

__all__ = ["HouseholdDomain", "EXPLORE_FIX", "HouseholdSlots", "WorldState", "world_state", "goal_kinds"]

# Why an action fails in ALFWorld-like worlds, by verb: the offline writer's only knowledge.
PRECONDITIONS = {
    "take": "[object] must be in view at the place you are (go to where you saw it; open it if closed) "
            "and your hands must be empty",
    "move": "you must hold the object and stand at the target receptacle, opened if it is closed",
    "put": "you must hold the object and stand at the target receptacle, opened if it is closed",
    "heat": "hold the object and stand at the microwave first",
    "cool": "hold the object and stand at the fridge first",
    "clean": "hold the object and stand at the sinkbasin first",
    "slice": "hold a knife and stand where the object is",
    "use": "stand at the lamp first (go to the place where it is)",
    "open": "stand at the receptacle first; it must be closed",
    "close": "stand at the receptacle first; it must be open",
    "go": "go only to places listed in the admissible commands",
    "examine": "stand where the thing is first",
}


# A few words for the task type in a task-scoped trigger (the retriever matches them to goals).
TASK_WORDS = {
    "pick_and_place_simple": "put task", "pick_clean_then_place_in_recep": "clean task",
    "pick_heat_then_place_in_recep": "heat task", "pick_cool_then_place_in_recep": "cool task",
    "look_at_obj_in_light": "look-under-lamp task", "pick_two_obj_and_place": "put-two task",
}



class HouseholdDomain(TextDomain):
    """ALFWorld-like household games (the harness's household environment and real ALFWorld)."""

    name = "alfworld"
    explores = True  # hints.py explores places not yet visited: the policy needs no loop guard
    lessons_per_failure = 1  # its preferred rule: every figure of the pack was measured with one

    def step_kind(self, step: StepView) -> StepKind:
        a = normalize_action(step.action)
        if self.is_reasoning(step.action):
            return StepKind.reasoning
        if a in INFO_COMMANDS:
            return StepKind.look
        return StepKind.action

    def failure(self, step: StepView) -> Verdict:
        if is_failure_feedback(step.feedback, step.error):
            return Verdict(True, step.error or " ".join((step.feedback or "").split())[:160])
        return Verdict(False)

    def action_key(self, action: str) -> str:
        return normalize_action(action)

    def written(self, action: str) -> str:
        return normalize_action(action)

    def lesson_text(self, text: str, before: Sequence[StepView], slots: Any) -> str:
        return text  # the household slots already name every object and place

    def noop_replies(self, steps: Sequence[StepView]) -> dict[int, str]:
        return {}  # this world's no-op answer is known (is_failure_feedback): nothing to infer from repeats

    def progressed(self, step: StepView) -> bool:
        return bool(_PROGRESS.search(step.feedback or ""))

    def slots(self, goal: str) -> HouseholdSlots:  # type: ignore[override]
        return HouseholdSlots.from_goal(goal)

    def state(self, goal: str, steps: Sequence[StepView]) -> State:
        ws = world_state([(s.action, s.feedback) for s in steps])
        g = goal_kinds(goal)
        return State(frozenset(p for p, test in STATE_PHRASES if test(ws, g)), ws)

    def situations(self) -> Sequence[str]:
        return [p for p, _ in STATE_PHRASES]

    def holds(self, trigger: str, state: State, goal: str) -> bool:
        ws = state.detail if isinstance(state.detail, WorldState) else WorldState()
        return situation_holds(trigger, ws, goal_kinds(goal))

    def wasted_step(self, trace: Any, slots: Any) -> Optional[int]:
        """The first step that, in hindsight, did nothing toward the goal (see rules._first_wasted)."""
        return _first_wasted(trace, slots)

    def rules(self, trace: Any, pivot: Any, slots: Any, success_plan: Sequence[str]) -> list[Rule]:
        """The correction at the pivot when it transfers, then each later kind of mistake the situation
        shows (pivots that matter, not a teacher's shortcut)."""
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

    def preferred_rule(self, rules: Sequence[Rule]) -> Optional[Rule]:
        """Every failure of an untrained agent teaches exploring; few show what to do once the object is found."""
        return next((r for r in rules if r.fix != EXPLORE_FIX), rules[0] if rules else None)

    def advice(self, verb: str) -> str:
        return PRECONDITIONS.get(verb, "")

    def task_words(self, task_type: str) -> str:
        return TASK_WORDS.get(task_type, "")

    def policy_features(self, goal: str, history: Sequence[tuple[str, str]], candidates: Sequence[str]
                        ) -> list[list[str]]:
        info = _features.episode_info(goal, history)
        return [_features.state_features(c, info) for c in candidates]

    def hints(self, context: Any, goal: str, pairs: Sequence[tuple[str, str]], admissible: Sequence[str]) -> Any:
        from .hints import household_hints

        return household_hints(context, goal, pairs, admissible)

    def privileged_steps(self, steps: Sequence[StepView], pivot: int) -> set[int]:
        """Steps of a guided retry from `pivot` on where the teacher walked somewhere with empty
        hands: it knew where hidden objects were, so these steps teach guessing, not skill."""
        out, holding = set(), False
        for i, s in enumerate(steps):
            action, fb = (s.action or "").lower(), (s.feedback or "")
            if i >= pivot and not holding and action.startswith("go to "):
                out.add(i)
            if fb.startswith("You pick up"):
                holding = True
            elif fb.startswith("You move") or fb.startswith("You put"):
                holding = False
        return out
