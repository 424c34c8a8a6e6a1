"""TextWorld-Express games behind the TextEnv protocol: twc, cookingworld, coin and mapreader.

| env name | TWX game | what it asks |
|---|---|---|
| twexpress | twc | put the misplaced things where they belong (TextWorld Commonsense) |
| cookingworld | cookingworld | read the cookbook, gather and cut the ingredients, cook each as the recipe says, prepare and eat the meal |
| coin | coin | explore the rooms, opening doors, until the coin is found; take it |
| mapreader | mapreader | read the map, walk to the place the task names, bring the coin back to the box |

Splits map to TWX's folds: train -> "train", valid_seen -> "dev", valid_unseen -> "test"
(1000 games each, TWX seeds 0-999, 10000-10999, 20000-20999: `getValidSeeds*()`). Each game's
parameters (`GAMES`) are chosen so that random play rarely wins; for cookingworld and mapreader
only games whose gold path is 8-30 steps are listed, for coin (whose gold agent searches at
random, a new path each time) only games whose coin is neither in the first room nor in a room
one or two moves from it (`list_tasks` skips the others, so a task's seed is its index in the fold). `measure()` gives both figures, and the runner's
manifest records the parameters.

The reward is 1.0 on the winning step (TWX's partial score is in info["score"]); the episode ends
on success, TWX's own failure (eating an uncooked meal, burning an ingredient...) or the step limit.

**The expert.** TWX gives a gold path only from the start of a game. While the agent follows it,
`info["expert_action"]` is its next step. Once the agent has left it, `expert_action()` replans
with TWX's own mechanism for states, replay (`TextWorldExpressEnv.serialize` is the list of actions
taken): on the env's own simulator it tries the agent's actions followed by a suffix of the gold
path, optionally after walking back the agent's moves since it left the path, shortest plan first,
and keeps the first that wins; then it restores the game by replaying the agent's actions. A
replan costs tens of milliseconds per candidate, so `info["expert_action"]` carries it only when the
env was built with `replan=True`; otherwise it is None off the path and the runner asks
`expert_action()` where it needs the teacher.

A TwxEnv built alone starts a JVM of its own (seconds on a busy machine); `make_env` gives every
TWX env of a process one shared simulator (`shared_server()`). Envs sharing a simulator may be
stepped in any order: an env whose game another one replaced restores its own by replay first.
"""

from __future__ import annotations

import random
import re
import statistics
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

from eval.envs.base import SPLITS, TaskSpec

FOLDS = {"train": "train", "valid_seen": "dev", "valid_unseen": "test"}
FOLD_SEEDS = {"train": 0, "dev": 10_000, "test": 20_000}  # TWX's getValidSeeds*(): 1000 games from each
FOLD_SIZE = 1000
TASK_PREFIX = "Your task is to "
# Walking back a detour: TWX's rooms are joined both ways, and an opened door stays open.
_BACK = {"move north": "move south", "move south": "move north", "move east": "move west", "move west": "move east"}
MAX_REPLAN_TRIES = 40
NEW_WORDS = 3  # words an answer must show for the first time to count as learning something (pivot)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@dataclass(frozen=True)
class TwxGame:
    """One TWX game kind as the harness plays it: TWX's name, its generation parameters, and the
    gold-path lengths of the games listed."""

    game: str
    params: str
    gold_min: int = 0
    gold_max: int = 10**6
    # coin's gold agent searches at random: its path differs on every generation, even of one game,
    # so coin games are listed by where the coin is (not in the first room) instead of gold length.
    random_gold: bool = False
    # coin: how many moves the coin is at least away from the start (1: not in the first room;
    # 2: not in a room next to it either...). Random play in 40 steps wins 17.5 % of 40 train games
    # at 1, 10 % at 2, 0 % at 3 (`python -m eval.envs.twexpress coin`).
    coin_moves: int = 1


GAMES: dict[str, TwxGame] = {
    # twc keeps the parameters its earlier results were measured with (random play wins about 1 in 4).
    "twexpress": TwxGame("twc", "numLocations=1,numItemsToPutAway=2,includeDoors=0,limitInventorySize=0"),
    # One kitchen, two ingredients, three distractors: gold 10-16 steps; random play wins 0 of 40
    # train games in 40 steps (a third of them end in TWX's failure, e.g. a burnt ingredient).
    "cookingworld": TwxGame("cookingworld", "numLocations=1,numIngredients=2,numDistractorItems=3,"
                            "includeDoors=0,limitInventorySize=0", 8, 30),
    # Eleven rooms behind doors, ten distractors, one hand: the coin is never in the first room.
    "coin": TwxGame("coin", "numLocations=11,numDistractorItems=10,includeDoors=1,limitInventorySize=1",
                    random_gold=True, coin_moves=3),
    # Fifteen places, the coin up to 5 apart from the box.
    "mapreader": TwxGame("mapreader", "numLocations=15,maxDistanceApart=5,maxDistractorItemsPerLocation=3,"
                         "includeDoors=0,limitInventorySize=0", 8, 30),
}
ENV_NAMES = tuple(GAMES)
DEFAULT_PARAMS = GAMES["twexpress"].params


def new_server():
    """A TextWorld-Express simulator (starts a JVM)."""
    try:
        from textworld_express import TextWorldExpressEnv
    except ImportError as e:
        raise ImportError("the TextWorld-Express envs need the `textworld-express` package (and Java): "
                          "pip install textworld-express") from e
    return TextWorldExpressEnv(envStepLimit=10**6)  # the step limit is ours


def _game(env: str) -> TwxGame:
    if env not in GAMES:
        raise ValueError(f"unknown TextWorld-Express env {env!r}; use one of {ENV_NAMES}")
    return GAMES[env]


class TwxEnv:
    """One TextWorld-Express game: `env` names the kind (GAMES), `split` the fold, `seed` the game index in it."""

    def __init__(self, split: str = "train", seed: int = 0, step_limit: int = 50, game_params: Optional[str] = None,
                 server=None, expert: bool = True, env: str = "twexpress", replan: bool = False) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
        self.kind = _game(env)
        self.env_name = env
        self.split, self.seed, self.step_limit = split, seed, step_limit
        self.game_params = self.kind.params if game_params is None else game_params
        self.expert, self.replan = expert, replan
        self._server = server
        self._owns_server = server is None
        self.task_id = f"{env}/{self.kind.game}/{split}/{seed}"
        self.goal = ""
        self.steps = 0
        self.done = False
        self._won = False
        self._gold: list[str] = []
        self._plan: Optional[list[str]] = []  # the expert's remaining commands; None: left, not replanned yet
        self._left_at: Optional[int] = None  # how many actions were on the path when the agent left it
        self._gold_done = 0  # gold steps the current plan has already done
        self._actions: list[str] = []
        self._answers: list[str] = []  # what the game answered each action (the first observation first)

    # ----------------------------------------------------------------- protocol

    def reset(self) -> tuple[str, dict]:
        if self._server is None:
            self._server = new_server()
        obs, raw = self._new_game(gold=True)
        self._gold = list(self._server.getGoldActionSequence())
        task = raw["taskDescription"].strip()
        self.goal = task[len(TASK_PREFIX):] if task.startswith(TASK_PREFIX) else task
        self.steps, self.done, self._won, self._actions = 0, False, False, []
        self._plan, self._left_at, self._gold_done = list(self._gold), None, 0
        self._raw = raw
        # mapreader's and coin's first observation already ends with the task; the others' does not.
        first = obs.strip() if task in obs else obs.strip() + "\n\n" + task
        self._answers = [first]
        return first, self._info(raw)

    def step(self, action: str) -> tuple[str, float, bool, dict]:
        if self.done:
            raise RuntimeError("the episode is over; call reset() before step()")
        if getattr(self._server, "_skillmem_owner", self) is not self:
            self._restore()  # another env sharing the simulator played a game of its own meanwhile
        action = action.strip()
        if self._plan and self._plan[0] == action:
            self._plan.pop(0)
            self._gold_done += 1
        else:
            if self._left_at is None:
                self._left_at = len(self._actions)
            self._plan = None
        self._actions.append(action)
        obs, _, twx_done, raw = self._server.step(action)
        self.steps += 1
        self._raw = raw
        self._answers.append(obs.strip())
        won = bool(raw["tasksuccess"])
        reward = 1.0 if won and not self._won else 0.0
        self._won = won
        self.done = won or bool(raw["taskfailure"]) or twx_done or self.steps >= self.step_limit
        return obs.strip(), reward, self.done, self._info(raw)

    def _info(self, raw: dict) -> dict:
        nxt = None
        if self.expert and not self._won and not raw.get("taskfailure"):
            nxt = self.expert_action() if self.replan else (self._plan[0] if self._plan else None)
        return {
            "goal": self.goal,
            "task_type": self.kind.game,
            "task_id": self.task_id,
            "admissible_commands": sorted(set(raw["validActions"])),
            "won": self._won,
            "expert_action": nxt,
            "split": self.split,
            "steps": self.steps,
            "score": float(raw["score"]),
            "failed": bool(raw.get("taskfailure")),
        }

    # ----------------------------------------------------------------- expert

    def expert_action(self) -> Optional[str]:
        """The expert's next command from here: the gold path's while the agent is on it, else a replan
        (None when the game is won or lost, or no replan wins)."""
        if self._won or self._raw.get("taskfailure"):
            return None
        if self._plan is None:
            self._plan = self._replan()
        return self._plan[0] if self._plan else None

    def optimal_actions(self) -> set[str]:
        """The commands the runner's teacher counts as right here: the expert's next one."""
        nxt = self.expert_action()
        return {nxt} if nxt else set()

    def expert_plan(self) -> list[str]:
        """The expert's remaining commands from here (empty when it has none)."""
        self.expert_action()
        return list(self._plan or [])

    @property
    def actions(self) -> list[str]:
        """The commands played this episode, in order."""
        return list(self._actions)

    def pivot(self, harmful_first: bool = True) -> Optional[tuple[int, str]]:
        """Where the episode went wrong, with the expert's command there: the first **harmful** step (after
        which what was left to do no longer wins: it must be undone, or nothing wins any more), else the
        first **wasted** one (the plan did not get shorter, what was left still wins). None when every
        step made progress. Replays the game; restores it.

        A wasted step costs one step; a harmful one is the mistake the episode lost by (an object put
        where it does not belong, a wrong move to walk back), and a correction there is what a lesson
        can carry to another game. A pivot at the first wasted step (closing an empty container) once
        taught only an order the teacher preferred, which reflection rightly held back as its first choice.

        Two steps that do not shorten the plan are not wasted: a step of the plan done earlier than
        the plan does it (reading the cookbook before walking to the knife: the plan without it
        still wins), and a command whose answer showed words this episode had not been shown
        before, after which what was left to do still wins (a read, a look: it learned something;
        the same answer twice is a wasted step).

        `harmful_first=False`: the first step off the plan, wasted or harmful, whichever comes first
        (the runner starts its guided retry there, so a demonstration does not keep the agent's
        detours up to a later harmful step: on cookingworld that cost demos_only 54.2 -> 8.3 %)."""
        plan, left, wasted = list(self._gold), None, None
        try:
            for i, a in enumerate(self._actions):
                if not plan:
                    return wasted
                if a == plan[0]:
                    plan = plan[1:]
                    continue
                left = i if left is None else left
                new = self._plan_after(self._actions[: i + 1], left)
                if new and len(new) < len(plan):
                    plan = new
                    continue
                if a in plan:
                    rest = plan[:plan.index(a)] + plan[plan.index(a) + 1:]
                    if self._wins(self._actions[: i + 1] + rest):
                        plan = rest
                        continue
                if self._wins(self._actions[: i + 1] + plan):
                    # What was left to do still wins: it learned something, or wasted a step.
                    if wasted is None and not self._told_new(i):
                        wasted = (i, plan[0])
                        if not harmful_first:
                            return wasted
                    continue
                return i, self._correction(i, plan)
        finally:
            self._restore()
        return wasted

    def _correction(self, i: int, plan: list[str]) -> str:
        """The expert's command at a harmful step i: its own version of what the agent did (the plan's
        step with the same verb, sharing most words with it: `put x in b` for `put x in a`) when doing
        that there still wins, else the plan's next step. A correction of the step itself is what a
        lesson can say; the plan's next step is often only the order the expert happened to take."""
        a = self._actions[i]
        words = set(a.split())
        same = sorted((c for c in plan if c != a and c.split()[:1] == a.split()[:1]),
                      key=lambda c: (-len(words & set(c.split())), plan.index(c)))
        for c in same[:3]:
            rest = plan[:plan.index(c)] + plan[plan.index(c) + 1:]
            if self._wins(self._actions[:i] + [c] + rest):
                return c
        return plan[0]

    def _told_new(self, i: int) -> bool:
        """Whether the answer to action i told the episode something: at least NEW_WORDS words it
        had not been shown before (a recipe read, a new room looked at; not an inventory of what it
        just took, nor the same answer twice)."""
        if i + 1 >= len(self._answers):
            return False
        seen = {w for o in self._answers[: i + 1] for w in _words(o)}
        return len(_words(self._answers[i + 1]) - seen) >= NEW_WORDS

    def _replan(self) -> list[str]:
        """The expert's plan from the current state (see `_plan_after`); the game is restored after."""
        left = self._left_at if self._left_at is not None else len(self._actions)
        try:
            return self._plan_after(self._actions, left)
        finally:
            self._restore()

    def _plan_after(self, actions: list[str], left: int) -> list[str]:
        """The shortest winning continuation of `actions` among: a gold suffix, or walking back the moves
        made since leaving the path (at `left`) and then a gold suffix; [] when none wins. By replay."""
        back = [_BACK[a] for a in reversed(actions[left:]) if a in _BACK]
        n = len(self._gold)
        cands = {tuple(self._gold[k:]) for k in range(n)}
        if back:
            cands |= {tuple(back + self._gold[k:]) for k in range(n)}
        # Shortest first; among equals, the one that redoes the least of the path.
        for plan in sorted(cands, key=lambda p: (len(p), p))[:MAX_REPLAN_TRIES]:
            if self._wins(actions + list(plan)):
                return list(plan)
        return []

    def _new_game(self, gold: bool) -> tuple[str, dict]:
        return _reset(self._server, self.kind.game, self.game_params, self.split, self.seed, gold, owner=self)

    def _wins(self, actions: list[str]) -> bool:
        self._new_game(gold=False)
        for a in actions:
            _, _, _, raw = self._server.step(a)
            if raw["tasksuccess"]:
                return True
            if raw["taskfailure"]:
                return False
        return False

    def _restore(self) -> None:
        raw = self._new_game(gold=False)[1]
        for a in self._actions:
            _, _, _, raw = self._server.step(a)
        self._raw = raw

    def close(self) -> None:
        """Stop the JVM if this env started it."""
        if self._owns_server and self._server is not None:
            self._server.close()
            self._server = None


def _reset(server, game: str, params: str, split: str, index: int, gold: bool, owner: object = None
           ) -> tuple[str, dict]:
    fold = FOLDS[split]
    server._skillmem_owner = owner
    if (server.gameName, server.gameParams) != (game, params):
        server.load(game, params)  # reloading on every reset would cost more than the replay it serves
    return server.reset(seed=FOLD_SEEDS[fold] + index % FOLD_SIZE, gameFold=fold, generateGoldPath=gold)


# ----------------------------------------------------------------------------- tasks

_SHARED: dict[str, object] = {}


def shared_server():
    """This process's one TWX simulator, started on first use (the JVM stops with the process)."""
    if "server" not in _SHARED:
        _SHARED["server"] = new_server()
    return _SHARED["server"]


@lru_cache(maxsize=1 << 14)
def _listed(env: str, split: str, index: int) -> bool:
    """Whether a game is one the env lists: its gold path in range, or (coin) its coin out of the first room."""
    kind = _game(env)
    if not kind.random_gold and kind.gold_min <= 0 and kind.gold_max >= 10**6:
        return True
    server = shared_server()
    _, raw = _reset(server, kind.game, kind.params, split, index, gold=not kind.random_gold)
    if kind.random_gold:
        return "coin" not in raw["look"] and (kind.coin_moves < 2 or
                                              not _coin_within(server, kind, split, index, kind.coin_moves - 1))
    return kind.gold_min <= len(server.getGoldActionSequence()) <= kind.gold_max


def _coin_within(server, kind: TwxGame, split: str, index: int, moves: int) -> bool:
    """Whether the coin is in a room at most `moves` moves from the start (opening doors on the way).
    By replay from the start, depth first."""
    def walk(path: list[str]) -> bool:
        _, raw = _reset(server, kind.game, kind.params, split, index, gold=False)
        for a in path:
            _, _, _, raw = server.step(a)
        if "coin" in raw["look"]:
            return True
        if sum(a.startswith("move ") for a in path) >= moves:
            return False
        for move in sorted(a for a in raw["validActions"] if a.startswith("move ")):
            back = _BACK.get(path[-1]) if path else None
            if move == back:
                continue
            door = "open door to " + move.split()[-1]
            step = [door, move] if door in raw["validActions"] else [move]
            if walk(path + step):
                return True
        return False

    return walk([])


def list_tasks(split: str, n: int, seed: int = 0, env: str = "twexpress") -> list[TaskSpec]:
    """n games of a split whose gold path is in the env's range (fold indices shuffled by seed); deterministic.

    With more tasks asked than the fold holds, the list repeats from its start."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    kind = _game(env)
    # twc's games were always listed by this key; keep its lists as they were.
    key = f"twexpress:{split}:{seed}" if env == "twexpress" else f"{env}:{split}:{seed}"
    order = random.Random(key).sample(range(FOLD_SIZE), FOLD_SIZE)
    chosen: list[int] = []
    for idx in order:
        if len(chosen) >= n:
            break
        if _listed(env, split, idx):
            chosen.append(idx)
    if not chosen and n > 0:
        raise RuntimeError(f"no {env} game of {split} fits its listing rule (GAMES[{env!r}])")
    return [TaskSpec(env, split, f"{env}/{kind.game}/{split}/{chosen[i % len(chosen)]}", chosen[i % len(chosen)],
                     kind.game) for i in range(n)]


def measure(env: str, split: str = "train", n: int = 40, step_limit: int = 40, seed: int = 0) -> dict:
    """Gold-path lengths and random play's success on n listed games: the figures that chose GAMES."""
    rng = random.Random(seed)
    server = shared_server()
    gold, wins, failures = [], 0, 0
    for spec in list_tasks(split, n, seed, env=env):
        e = TwxEnv(split, spec.seed, step_limit=step_limit, server=server, expert=False, env=env)
        _, info = e.reset()
        gold.append(len(e._gold))
        done = False
        while not done:
            _, _, done, info = e.step(rng.choice(info["admissible_commands"]))
        wins += info["won"]
        failures += info["failed"]
    return {"env": env, "game": GAMES[env].game, "params": GAMES[env].params, "split": split, "games": n,
            "step_limit": step_limit, "gold_min": min(gold), "gold_mean": statistics.fmean(gold),
            "gold_max": max(gold), "random_success": wins / n, "random_twx_failure": failures / n}


if __name__ == "__main__":  # python -m eval.envs.twexpress: the figures behind GAMES
    import json
    import sys

    for name in sys.argv[1:] or ENV_NAMES:
        print(json.dumps(measure(name)), flush=True)
