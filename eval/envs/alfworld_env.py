"""Real ALFWorld games (TextWorld PDDL `game.tw-pddl` files) behind the TextEnv protocol.

The games live in the shared folder (default: ../shared/alfworld beside the repo, or the folder in
$SKILLMEM_ALFWORLD_DIR): `train/` and `valid_seen/`; there is no valid_unseen. Playing needs the
optional `alfworld` and `textworld` packages (`pip install -e .[alfworld]`, which builds
fast-downward: minutes; `.ci/alfworld.sh` installs them from a wheel cache); listing tasks does
not. Measured on one core: a game loads and resets in 0.4-1 s and plays at about 15 steps/s (the
admissible-command list is most of the cost).

The text is the game's own; the household env reproduces it (tests/test_alfworld.py replays the
same worlds in both). The game itself never ends: this adapter ends the episode on the winning
step or at step_limit, and answers "Nothing happens." for any command it does not know, as the
game does (commands must match exactly; surrounding spaces are stripped).

`info["expert_action"]` is the next command of the current plan: the game's walkthrough at first.
The agent stays on the plan while every command that changed the game followed it (commands
answered "Nothing happens." and look, inventory, examine and help change nothing). Once it leaves
the plan, expert_action is None, unless the env was built with replan=True: then fast-downward
plans again from the current state (0.1-2 s per replan, only after a deviation).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from eval.envs.base import ALFWORLD_TASK_TYPES, SPLITS, TaskSpec

INSTALL_HINT = "pip install -e .[alfworld]"
_NO_CHANGE_VERBS = ("look", "inventory", "examine", "help")


def games_root() -> Path:
    """Where the real games are: $SKILLMEM_ALFWORLD_DIR, else ../shared/alfworld beside the repo."""
    env = os.environ.get("SKILLMEM_ALFWORLD_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "alfworld"


def _import_textworld():
    try:
        import textworld
        from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos
    except ImportError as e:
        raise ImportError(
            f"the real ALFWorld env needs the optional packages alfworld and textworld ({e}); "
            f"install them with `{INSTALL_HINT}` (builds fast-downward from source, about 6 minutes)"
        ) from e
    return textworld, AlfredDemangler, AlfredInfos


def _task_type(task_id: str) -> str:
    folder = Path(task_id).parts[1] if len(Path(task_id).parts) > 1 else task_id
    task_type = folder.split("-")[0]
    if task_type not in ALFWORLD_TASK_TYPES:
        raise ValueError(f"cannot tell the task type of ALFWorld game {task_id!r}")
    return task_type


class AlfworldEnv:
    """One real ALFWorld game; task_id is the game folder relative to games_root() ("train/<task>/<trial>")."""

    def __init__(self, task_id: str, split: str | None = None, step_limit: int = 50, root: Path | None = None,
                 expert: bool = True, replan: bool = False) -> None:
        self.root = Path(root) if root else games_root()
        self.task_id = task_id
        self.split = split or Path(task_id).parts[0]
        self.task_type = _task_type(task_id)
        self.path = self.root / task_id / "game.tw-pddl"
        if not self.path.is_file():
            raise FileNotFoundError(f"no ALFWorld game at {self.path}; check SKILLMEM_ALFWORLD_DIR or the task id")
        self.walkthrough: list[str] = list(json.loads(self.path.read_text())["walkthrough"])
        self.step_limit = step_limit
        self.expert = expert
        self.replan = replan
        self._env = None
        self.goal = ""
        self.steps = 0
        self.done = False
        self._won = False
        self._plan: list[str] = list(self.walkthrough)  # the expert's remaining commands
        self._on_plan = True  # False once a game-changing command left the plan
        self._admissible: list[str] = []

    def _start(self):
        textworld, AlfredDemangler, AlfredInfos = _import_textworld()
        infos = textworld.EnvInfos(won=True, admissible_commands=True, extras=["gamefile"])
        return textworld.start(str(self.path), request_infos=infos,
                               wrappers=[AlfredDemangler(shuffle=False), AlfredInfos])

    def reset(self) -> tuple[str, dict]:
        if self._env is None:
            self._env = self._start()
        state = self._env.reset()
        obs = state.feedback
        self.goal = obs.split("Your task is to: ", 1)[1].strip() if "Your task is to: " in obs else ""
        self.steps, self.done, self._won = 0, False, False
        self._plan, self._on_plan = list(self.walkthrough), True
        self._admissible = sorted(state["admissible_commands"])
        return obs, self._info()

    def step(self, action: str) -> tuple[str, float, bool, dict]:
        if self.done:
            raise RuntimeError("the episode is over; call reset() before step()")
        action = action.strip()
        state, _, _ = self._env.step(action)
        obs = state.feedback
        self.steps += 1
        changed = obs != "Nothing happens." and not action.startswith(_NO_CHANGE_VERBS)
        if changed and self._on_plan:
            if self._plan and self._plan[0] == action:
                self._plan.pop(0)
            else:
                self._on_plan, self._plan = False, []
        won = bool(state["won"])
        reward = 1.0 if won and not self._won else 0.0
        self._won = won
        self._admissible = sorted(state["admissible_commands"])
        self.done = won or self.steps >= self.step_limit
        return obs, reward, self.done, self._info()

    def _info(self) -> dict:
        nxt = None
        if self.expert and not self._won:
            if not self._on_plan and self.replan:
                self._plan, self._on_plan = self._replan(), True
            nxt = self._plan[0] if self._on_plan and self._plan else None
        return {
            "goal": self.goal,
            "task_type": self.task_type,
            "task_id": self.task_id,
            "admissible_commands": self._admissible,
            "won": self._won,
            "expert_action": nxt,
            "split": self.split,
            "steps": self.steps,
        }

    def expert_action(self) -> str | None:
        """The expert's next command from here (the runner's teacher), or None when it has none."""
        return self._info()["expert_action"] if self._env is not None else None

    def optimal_actions(self) -> set[str]:
        """The commands the runner's teacher counts as right here: the expert's next one.

        The game's planner gives one plan, not every shortest one, so this is a single
        command (empty once won, or off the plan without replan=True); a command that
        leaves this plan may still be as good, which makes the teacher's feedback strict."""
        nxt = self.expert_action()
        return {nxt} if nxt else set()

    def _replan(self) -> list[str]:
        """A new plan from the current state, from the game's own planner (fast-downward)."""
        pddl_env = self._env.unwrapped  # the PddlEnv under the Alfred wrappers
        return list(pddl_env._pddl_state.replan(pddl_env._entity_infos))

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


def list_tasks(split: str, n: int, seed: int = 0, root: Path | None = None) -> list[TaskSpec]:
    """n real games of a split, in an order shuffled by seed (the same list for the same arguments).

    The six task types are interleaved so that any prefix is balanced.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    base = Path(root) if root else games_root()
    folder = base / split
    if not folder.is_dir():
        raise FileNotFoundError(f"no ALFWorld games for split {split!r} in {folder} "
                                "(the shared folder has train and valid_seen; set SKILLMEM_ALFWORLD_DIR)")
    games = sorted(p.parent.relative_to(base).as_posix() for p in folder.glob("*/*/game.tw-pddl"))
    by_type: dict[str, list[str]] = {t: [] for t in ALFWORLD_TASK_TYPES}
    for g in games:
        by_type[_task_type(g)].append(g)
    rng = random.Random(f"alfworld:{split}:{seed}")
    for t in ALFWORLD_TASK_TYPES:
        rng.shuffle(by_type[t])
    order: list[str] = []
    for i in range(max(len(v) for v in by_type.values())):
        order += [by_type[t][i] for t in ALFWORLD_TASK_TYPES if i < len(by_type[t])]
    if n > len(order):
        raise ValueError(f"split {split!r} has {len(order)} ALFWorld games, asked for {n}")
    return [TaskSpec("alfworld", split, g, i, _task_type(g)) for i, g in enumerate(order[:n])]
