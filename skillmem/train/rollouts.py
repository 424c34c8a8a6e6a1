"""Training examples from play on train tasks: the policy with memory teaches itself without it.

Context distillation needs the teacher (a policy reading retrieved lessons and
demonstrations as hints) on the states the student will meet. The store only holds the
states of recorded episodes; here the tasks are played again, DAgger-style:

* the **teacher** (the policy with memory) plays: every state where memory gave hints is
  a ``distill`` example, and the steps of its won episodes are ``demo`` examples
  (self-imitation of memory-guided successes);
* the **student** (the policy being trained, without memory) plays: the states its own
  mistakes lead to are labelled by the teacher's hints there (``distill``).

Nothing of the environment's privileged knowledge (its expert, hidden contents) is used:
only what the agent saw, memory's hints and the verified outcome.

    examples = rollout_examples(envs, teacher, context_fn, student=None)

`envs` are zero-argument callables returning an environment with the harness's text-game
protocol: ``reset() -> (observation, info)`` and ``step(action) -> (observation, reward,
done, info)``, where `info` has ``goal``, ``task_type``, ``admissible_commands`` and ``won``.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Iterable, Optional

from ..policy.base import hints_from_context, memory_text
from .data import Example


def _candidates(admissible: list[str], target: str, limit: int, rng: random.Random) -> list[str]:
    if not limit or len(admissible) <= limit:
        return list(admissible)
    others = [a for a in admissible if a != target]
    rng.shuffle(others)
    keep = set(others[: limit - 1]) | {target}
    return [a for a in admissible if a in keep]


def play_and_label(make_env: Callable[[], Any], teacher: Any, context_fn: Callable[[str, str, str], Any], *,
                   student: Any = None, step_limit: int = 40, max_candidates: int = 32, group: str = "",
                   rng: Optional[random.Random] = None, domain: Any = None) -> tuple[list[Example], bool]:
    """Play one episode (the teacher with memory acts, or `student` without it) and label every
    state with the teacher's memory; returns (examples, won). Won teacher episodes add `demo` rows."""
    rng = rng or random.Random(0)
    domain = domain if domain is not None else getattr(teacher, "domain", None)  # the hints the teacher reads
    env = make_env()
    obs, info = env.reset()
    goal, task_type = info["goal"], info.get("task_type", "")
    history: list[tuple[str, str]] = []
    distill, steps, won = [], [], False
    for t in range(step_limit):
        admissible = list(info["admissible_commands"])
        if not admissible:
            break
        ctx = context_fn(goal, obs, task_type)
        hints = hints_from_context(ctx, goal, history, admissible, domain)
        teacher_action = teacher.act(goal, history, ctx, admissible)
        action = teacher_action if student is None else student.act(goal, history, None, admissible)
        if hints:
            ex = Example(kind="distill", goal=goal, history=list(history),
                         candidates=_candidates(admissible, teacher_action, max_candidates, rng),
                         target=teacher_action, group=group, task_type=task_type, step_index=t)
            ex.memory_hints = hints_from_context(ctx, goal, history, ex.candidates, domain)
            ex.memory_text = memory_text(ctx, goal, history, ex.candidates, domain, ex.memory_hints)
            distill.append(ex)
        steps.append((list(history), admissible, action))
        obs, _, done, info = env.step(action)
        history.append((action, obs))
        won = bool(info.get("won"))
        if done:
            break
    examples = distill
    if won and student is None:
        examples += [Example(kind="demo", goal=goal, history=h, candidates=_candidates(adm, a, max_candidates, rng),
                             target=a, group=group, task_type=task_type, step_index=i)
                     for i, (h, adm, a) in enumerate(steps)]
    return examples, won


def rollout_examples(envs: Iterable[Callable[[], Any]], teacher: Any, context_fn: Callable[[str, str, str], Any], *,
                     student: Any = None, step_limit: int = 40, max_candidates: int = 32,
                     seed: int = 0) -> tuple[list[Example], float]:
    """`play_and_label` on every env; returns (examples, share of episodes won)."""
    rng = random.Random(seed)
    examples, wins, n = [], 0, 0
    for i, make_env in enumerate(envs):
        ex, won = play_and_label(make_env, teacher, context_fn, student=student, step_limit=step_limit,
                                 max_candidates=max_candidates, group=f"rollout-{i}", rng=rng)
        examples += ex
        wins += won
        n += 1
    return examples, wins / max(1, n)
