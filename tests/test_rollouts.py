"""Distillation from play: the CPU policy with memory teaches itself without it, on household train tasks."""

from __future__ import annotations

from types import SimpleNamespace as NS

import torch

from eval.envs.base import list_tasks, make_env
from skillmem.policy import CPUPolicy
from skillmem.domain import StepView
from skillmem.domains.alfworld import HouseholdDomain
from skillmem.train.rollouts import rollout_examples
from skillmem.train.trainer import Trainer, TrainConfig

H = HouseholdDomain()  # household games: the pack's hints and features
# A demonstration as reflection writes it for pick-and-place tasks.
DEMO = NS(goal_template="put a [object] in [receptacle]", task_type="pick_and_place_simple",
          plan=["go to [receptacle2]", "take [object] from [receptacle2]", "go to [receptacle]",
                "move [object] to [receptacle]"])
MEMORY = NS(lessons=[], demonstrations=[DEMO], text="Example plan for 'put a [object] in [receptacle]': ...")


def _envs(n: int):
    specs = [s for s in list_tasks("household", "train", 6 * n, seed=5) if s.task_type == "pick_and_place_simple"]
    return [lambda s=s: make_env(s, step_limit=30) for s in specs]


def _wins(policy, envs, context) -> int:
    wins = 0
    for make in envs:
        env = make()
        obs, info = env.reset()
        history = []
        for _ in range(30):
            action = policy.act(info["goal"], history, context, info["admissible_commands"])
            obs, _, done, info = env.step(action)
            history.append((action, obs))
            if done:
                break
        wins += bool(info.get("won"))
    return wins


def test_teacher_play_gives_distill_and_demo_rows_and_student_learns_without_memory(tmp_path):
    teacher = CPUPolicy(domain=H)
    envs = _envs(4)
    ex, won = rollout_examples(envs, teacher, lambda goal, obs, tt: MEMORY, step_limit=30)
    assert won >= 0.5  # the untrained policy follows the demonstration's hints
    kinds = {e.kind for e in ex}
    assert kinds == {"distill", "demo"}
    assert all(e.memory_hints and e.target in e.candidates for e in ex if e.kind == "distill")
    student = CPUPolicy(domain=H)
    student.hint_weight.requires_grad_(False)
    before = _wins(student, envs, None)
    Trainer(student, ex, TrainConfig(steps=150, withdraw_until=0.0), tmp_path / "t", teacher=teacher).train()
    assert student.hint_weight.item() == teacher.hint_weight.item()
    assert _wins(student, envs, None) > before  # without memory, it now does what memory made it do
    # a student that plays gets its states labelled by the teacher, and no demo rows
    dagger, _ = rollout_examples(envs[:2], teacher, lambda goal, obs, tt: MEMORY, student=student, step_limit=30)
    assert dagger and {e.kind for e in dagger} == {"distill"}


def test_untrained_policy_ignores_episode_state_features():
    # The state features live in the zero-initialized linear term: before training, only hints steer.
    assert torch.count_nonzero(CPUPolicy(domain=H).lin.weight) == 0


def test_guided_retry_searching_moves_are_privileged():
    rows = [StepView(a, fb) for a, fb in [
        ("go to shelf 1", "You arrive at shelf 1."),  # the agent's own move, before the pivot
        ("go to drawer 3", "You arrive at drawer 3."),  # the expert knew the mug was there
        ("take mug 1 from drawer 3", "You pick up the mug 1 from the drawer 3."),
        ("go to cabinet 1", "You arrive at cabinet 1."),  # the goal's receptacle: fair
        ("move mug 1 to cabinet 1", "You move the mug 1 to the cabinet 1."),
    ]]
    assert H.privileged_steps(rows, pivot=1) == {1}
