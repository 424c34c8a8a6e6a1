"""TextWorld-Express `twc` (TextWorld Commonsense: put things where they belong) behind the TextEnv protocol.

Splits map to TWX folds: train -> "train", valid_seen -> "dev", valid_unseen -> "test" (TWC's test
fold uses object kinds not seen in train). The reward is 1.0 on the winning step (TWX's partial
score is in info["score"]); the episode ends on success, TWX's own failure, or the step limit.
`info["expert_action"]` is the next action of TWX's gold path while the agent has followed it
exactly, else None (TWX gives a gold path only from the start of a game). Each TwxEnv starts a
JVM (about 0.3 s) unless it is given one to share: `TwxEnv(..., server=TextWorldExpressEnv())`;
envs sharing a server must not be stepped in interleaved fashion.
"""

from __future__ import annotations

import random

from eval.envs.base import SPLITS, TaskSpec

FOLDS = {"train": "train", "valid_seen": "dev", "valid_unseen": "test"}
FOLD_SEEDS = {"train": 0, "dev": 10_000, "test": 20_000}  # each fold has 1000 games from here
DEFAULT_PARAMS = "numLocations=1,numItemsToPutAway=2,includeDoors=0,limitInventorySize=0"
TASK_PREFIX = "Your task is to "


def new_server():
    """A TextWorld-Express simulator (starts a JVM)."""
    try:
        from textworld_express import TextWorldExpressEnv
    except ImportError as e:
        raise ImportError("the TextWorld-Express env needs the `textworld-express` package (and Java): "
                          "pip install textworld-express") from e
    return TextWorldExpressEnv(envStepLimit=10**6)  # the step limit is ours


class TwxEnv:
    """One TextWorld-Express twc game (fold from the split, game index seed % 1000 within the fold)."""

    def __init__(self, split: str = "train", seed: int = 0, step_limit: int = 50,
                 game_params: str = DEFAULT_PARAMS, server=None, expert: bool = True) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
        self.split, self.seed, self.step_limit, self.game_params = split, seed, step_limit, game_params
        self.expert = expert
        self._server = server
        self._owns_server = server is None
        self._loaded = False
        self.task_id = f"twexpress/twc/{split}/{seed}"
        self.goal = ""
        self.steps = 0
        self.done = False
        self._won = False
        self._gold: list[str] = []
        self._on_gold = True
        self._actions: list[str] = []

    def reset(self) -> tuple[str, dict]:
        if self._server is None:
            self._server = new_server()
        if not self._loaded or not self._owns_server:
            self._server.load("twc", self.game_params)
            self._loaded = True
        fold = FOLDS[self.split]
        obs, raw = self._server.reset(seed=FOLD_SEEDS[fold] + self.seed % 1000, gameFold=fold, gameName="twc",
                                      gameParams=self.game_params, generateGoldPath=True)
        self._gold = list(self._server.getGoldActionSequence())
        task = raw["taskDescription"].strip()
        self.goal = task[len(TASK_PREFIX):] if task.startswith(TASK_PREFIX) else task
        self.steps, self.done, self._won, self._on_gold, self._actions = 0, False, False, True, []
        self._raw = raw
        return obs.strip() + "\n\n" + task, self._info(raw)

    def step(self, action: str) -> tuple[str, float, bool, dict]:
        if self.done:
            raise RuntimeError("the episode is over; call reset() before step()")
        action = action.strip()
        if self._on_gold and (len(self._actions) >= len(self._gold) or self._gold[len(self._actions)] != action):
            self._on_gold = False
        self._actions.append(action)
        obs, _, twx_done, raw = self._server.step(action)
        self.steps += 1
        self._raw = raw
        won = bool(raw["tasksuccess"])
        reward = 1.0 if won and not self._won else 0.0
        self._won = won
        self.done = won or bool(raw["taskfailure"]) or twx_done or self.steps >= self.step_limit
        return obs.strip(), reward, self.done, self._info(raw)

    def _info(self, raw: dict) -> dict:
        nxt = None
        if self.expert and self._on_gold and len(self._actions) < len(self._gold) and not self._won:
            nxt = self._gold[len(self._actions)]
        return {
            "goal": self.goal,
            "task_type": "twc",
            "task_id": self.task_id,
            "admissible_commands": sorted(set(raw["validActions"])),
            "won": self._won,
            "expert_action": nxt,
            "split": self.split,
            "steps": self.steps,
            "score": float(raw["score"]),
        }

    def close(self) -> None:
        """Stop the JVM if this env started it."""
        if self._owns_server and self._server is not None:
            self._server.close()
            self._server = None
            self._loaded = False


def list_tasks(split: str, n: int, seed: int = 0) -> list[TaskSpec]:
    """n twc games of a split (game indices 0-999 of its fold, shuffled by seed); deterministic."""
    order = random.Random(f"twexpress:{split}:{seed}").sample(range(1000), 1000)
    return [TaskSpec("twexpress", split, f"twexpress/twc/{split}/{order[i % 1000]}", order[i % 1000], "twc")
            for i in range(n)]
