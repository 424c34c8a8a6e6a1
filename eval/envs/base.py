"""The text-environment protocol every env of the harness follows, task specs, and the env factory.

An env is a text game: `reset()` gives the first observation (it contains "Your task is to: ...")
and `step(action)` gives the next-state feedback text, a reward (1.0 on the step that wins),
whether the episode is over, and an `info` dict whose keys are always present:

| key | meaning |
|---|---|
| goal | the task sentence without "Your task is to: " |
| task_type | one of ALFWORLD_TASK_TYPES, or the env's own kind (TextWorld-Express: its game, e.g. "cookingworld") |
| task_id | a stable id of the task (the same spec always gives the same id) |
| admissible_commands | the commands the env accepts in this state, sorted |
| won | whether the goal holds |
| expert_action | the optimal next action from this state, or None when the env has no expert here |
| split | "train", "valid_seen" or "valid_unseen" |
| steps | actions taken so far in this episode |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

ALFWORLD_TASK_TYPES = (
    "pick_and_place_simple",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "look_at_obj_in_light",
    "pick_two_obj_and_place",
)
SPLITS = ("train", "valid_seen", "valid_unseen")
TWX_ENVS = ("twexpress", "cookingworld", "coin", "mapreader")  # TextWorld-Express games (twexpress is twc)
ENV_NAMES = ("household", *TWX_ENVS, "alfworld")
INFO_KEYS = ("goal", "task_type", "task_id", "admissible_commands", "won", "expert_action", "split", "steps")


@runtime_checkable
class TextEnv(Protocol):
    """A text game the harness can play: reset once, then step until done."""

    def reset(self) -> tuple[str, dict]:
        """Start the episode; return the first observation (with "Your task is to: ...") and info."""
        ...

    def step(self, action: str) -> tuple[str, float, bool, dict]:
        """Apply one command; return the feedback text, reward, done and info."""
        ...


@dataclass(frozen=True)
class TaskSpec:
    """Names one task of one env, enough to rebuild it anywhere: `make_env(spec)`."""

    env: str  # one of ENV_NAMES
    split: str  # "train", "valid_seen" or "valid_unseen"
    task_id: str  # stable id; for alfworld the game folder relative to the games root
    seed: int  # generator seed (household); game index in the TWX fold; index in the sorted game list (alfworld)
    task_type: str | None = None  # None lets the household generator choose from the seed


def make_env(spec: TaskSpec, **kwargs) -> TextEnv:
    """Build the env a spec names; kwargs go to the env's constructor (e.g. expert=True, step_limit=50)."""
    if spec.env == "household":
        from eval.envs.household import HouseholdEnv

        return HouseholdEnv(split=spec.split, seed=spec.seed, task_type=spec.task_type, **kwargs)
    if spec.env in TWX_ENVS:
        from eval.envs.twexpress import TwxEnv, shared_server

        kwargs.setdefault("server", shared_server())  # one JVM per process, not one per episode
        return TwxEnv(split=spec.split, seed=spec.seed, env=spec.env, **kwargs)
    if spec.env == "alfworld":
        from eval.envs.alfworld_env import AlfworldEnv

        return AlfworldEnv(task_id=spec.task_id, split=spec.split, **kwargs)
    raise ValueError(f"unknown env {spec.env!r}; use one of {ENV_NAMES}")


def list_tasks(env_name: str, split: str, n: int, seed: int = 0) -> list[TaskSpec]:
    """The first n tasks of an env's split, the same list for the same arguments."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    if env_name == "household":
        from eval.envs.household import list_tasks as household_tasks

        return household_tasks(split, n, seed)
    if env_name in TWX_ENVS:
        from eval.envs.twexpress import list_tasks as twx_tasks

        return twx_tasks(split, n, seed, env=env_name)
    if env_name == "alfworld":
        from eval.envs.alfworld_env import list_tasks as alfworld_tasks

        return alfworld_tasks(split, n, seed)
    raise ValueError(f"unknown env {env_name!r}; use one of {ENV_NAMES}")
