"""The household env speaks the real ALFWorld grammar, its expert is optimal from any state, and it is fast."""

from __future__ import annotations

import glob
import json
import os
import random
import re
import time
from pathlib import Path

import pytest
from conftest import missing

from eval.envs import TaskSpec, list_tasks, make_env
from eval.envs.base import ALFWORLD_TASK_TYPES, INFO_KEYS, SPLITS
from eval.envs.household import (
    HELDOUT_KINDS, HELP_TEXT, OPENABLE, SEEN_LAYOUTS, UNSEEN_LAYOUTS, HouseholdEnv, admissible, apply,
    cost_to_go, generate, parse_command,
)

GAMES = Path(os.environ.get("SKILLMEM_ALFWORLD_DIR", Path(__file__).resolve().parents[2] / "shared" / "alfworld"))
TRAIN_GAMES = sorted(glob.glob(str(GAMES / "train" / "*" / "*" / "game.tw-pddl")))
needs_games = pytest.mark.usefixtures("alfworld_games")  # the game files only, not the engine


@pytest.fixture
def alfworld_games():
    if not TRAIN_GAMES:
        missing("alfworld", f"no ALFWorld games under {GAMES}: set SKILLMEM_ALFWORLD_DIR to the games folder")


def _random_walk(env: HouseholdEnv, rng: random.Random, n: int) -> dict:
    obs, info = env.reset()
    for _ in range(n):
        if env.done:
            break
        obs, _, _, info = env.step(rng.choice(info["admissible_commands"]))
    return info


@needs_games
def test_every_real_walkthrough_command_parses():
    commands = {c for f in TRAIN_GAMES for c in json.load(open(f))["walkthrough"]}
    assert len(commands) > 500
    unparsed = [c for c in commands if parse_command(c) is None]
    assert unparsed == []
    assert parse_command("take mug 2 from countertop 1") == ("take", "mug 2", "countertop 1")
    assert parse_command("put mug 2 in/on countertop 1") is None  # the old grammar
    assert parse_command("take spaceship 1 from countertop 1") is None


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("task_type", ALFWORLD_TASK_TYPES)
def test_expert_wins_every_generated_task(split, task_type):
    for seed in range(40):
        env = HouseholdEnv(split, seed, task_type)
        obs, info = env.reset()
        assert obs.startswith("-= Welcome to TextWorld, ALFRED! =-\n\n")
        assert obs.endswith("Your task is to: " + info["goal"])
        assert not info["won"]
        plan = env.expert_plan()
        assert len(plan) == env.cost_to_go() <= 12
        for a in plan:
            assert a in info["admissible_commands"]
            obs, reward, done, info = env.step(a)
        assert info["won"] and done and reward == 1.0


@pytest.mark.parametrize("task_type", ALFWORLD_TASK_TYPES)
def test_expert_wins_from_perturbed_states(task_type):
    rng = random.Random(7)
    for seed in range(40):
        env = HouseholdEnv("train", seed, task_type, step_limit=200, expert=True)
        info = _random_walk(env, rng, rng.randint(1, 25))
        while not env.done:
            before = env.cost_to_go()
            assert info["expert_action"] in env.optimal_actions()
            _, _, _, info = env.step(info["expert_action"])
            assert env.cost_to_go() == before - 1
        assert info["won"]


def test_cost_to_go_satisfies_bellman_on_random_states():
    """V = 1 + min over successors everywhere (and 0 exactly at the goal) makes V the shortest distance."""
    rng = random.Random(3)
    checked = 0
    for task_type in ALFWORLD_TASK_TYPES:
        for seed in range(12):
            env = HouseholdEnv("valid_unseen" if seed % 2 else "train", seed, task_type, step_limit=40)
            obs, info = env.reset()
            while not env.done:
                w, s = env.world, env.state
                v = cost_to_go(w, s)
                nxt = []
                for act in admissible(w, s).values():
                    t = s.copy()
                    apply(t, act)
                    nxt.append(cost_to_go(w, t))
                assert v == 1 + min(nxt), (task_type, seed, env.steps)
                assert env.optimal_actions() == {c for c, a in admissible(w, s).items()
                                                 if (lambda t: (apply(t, a), cost_to_go(w, t))[1])(s.copy()) == v - 1}
                checked += 1
                obs, _, _, info = env.step(rng.choice(info["admissible_commands"]))
    assert checked > 1000


def test_closed_receptacles_hide_contents():
    for seed in range(60):
        env = HouseholdEnv("train", seed, "pick_two_obj_and_place")
        env.reset()
        w = env.world
        full = [r for r in range(len(w.rname)) if w.rtype[r] in OPENABLE and r in w.init_where]
        if not full:
            continue
        r = full[0]
        inside = [w.oname[o] for o, at in enumerate(w.init_where) if at == r]
        obs, *_ , info = env.step(f"go to {w.rname[r]}")
        assert obs == f"You arrive at {w.rname[r]}. The {w.rname[r]} is closed."
        assert not any(c.startswith(f"take {inside[0]} ") for c in info["admissible_commands"])
        assert env.step(f"take {inside[0]} from {w.rname[r]}")[0] == "Nothing happens."
        obs, *_ = env.step(f"open {w.rname[r]}")
        assert obs.startswith(f"You open the {w.rname[r]}. The {w.rname[r]} is open. In it, you see ")
        assert all(name in obs for name in inside)
        return
    pytest.fail("no generated task had an object in a closed receptacle")


@needs_games
def test_feedback_matches_the_real_grammar_templates():
    grammar = json.load(open(TRAIN_GAMES[0]))["grammar"]
    assert HELP_TEXT in grammar  # the help text is the game's, byte for byte
    name = r"[a-z]+ \d+"
    item = rf"a {name}"
    items = rf"(?:nothing|{item}|(?:{item}, )*{item}, and {item})"
    names = rf"(?:{name}|(?:{name}, )*{name}, and {name})"

    def rx(template: str) -> str:
        """Turn a real rhs template into a regex (names and listed items become patterns)."""
        t = re.sub(r"\[\{[^\]]*\}\]", "\x00", template)  # a listing
        t = re.sub(r"\{[a-z0-9]+\.name\}", "\x01", t)
        t = re.escape(t).replace("\x00", items).replace("\x01", name)
        return t

    rhs = {key: [rx(r["rhs"]) for r in rules] for key, rules in json.loads(grammar.split('"""')[1]).items()}
    examine_r = "(?:" + "|".join(rhs["examineReceptacle.feedback"]) + ")"
    direct = [
        rx("You arrive at {r.name}. ") + examine_r,
        rx("You open the {r.name}. ") + examine_r,
        examine_r,
        *rhs["CloseObject.feedback"], *rhs["PickupObject.feedback"], *rhs["PutObject.feedback"],
        *rhs["inventory.feedback"], *rhs["examineObject.feedback"],
        rx("You turn on the {o.name}."), rx("You heat the {o.name} using the {r.name}."),
        rx("You clean the {o.name} using the {r.name}."), rx("You cool the {o.name} using the {r.name}."),
        rx("You sliced the {co.name} with the {ko.name}."),
        rf"You are facing the {names}\. Next to it, you see nothing\.",
        rf"You are in the middle of a room\. Looking quickly around you, you see {items}\.",
        re.escape("Nothing happens."),
    ]
    pattern = re.compile("|".join(f"(?:{d})" for d in direct))
    rng = random.Random(0)
    seen_kinds = set()
    for seed in range(30):
        env = HouseholdEnv("train", seed, ALFWORLD_TASK_TYPES[seed % 6], step_limit=120)
        obs, info = env.reset()
        while not env.done:
            cmd = rng.choice(info["admissible_commands"] + ["jump", "take"])
            obs, _, _, info = env.step(cmd)
            if obs == HELP_TEXT:
                continue
            assert pattern.fullmatch(obs), (cmd, obs)
            seen_kinds.add(cmd.split()[0])
    assert {"go", "open", "close", "take", "move", "look", "inventory", "examine", "jump"} <= seen_kinds


def test_invalid_commands_say_nothing_happens_and_keep_state():
    env = HouseholdEnv("train", 0, "pick_and_place_simple")
    env.reset()
    key = env.state.key()
    for cmd in ("jump", "go to the moon", "take mug 1 from countertop 1", "Go to fridge 1", "open"):
        obs, reward, done, info = env.step(cmd)
        assert obs == "Nothing happens." and reward == 0.0 and not done
    assert env.state.key() == key and info["steps"] == 5
    obs, *_ = env.step("  look  ")
    assert obs.startswith("You are in the middle of a room.")


def test_info_keys_step_limit_and_done():
    env = make_env(TaskSpec("household", "valid_seen", "x", 3, "look_at_obj_in_light"), step_limit=5)
    obs, info = env.reset()
    assert set(INFO_KEYS) <= set(info)
    assert info["expert_action"] is None and info["split"] == "valid_seen" and info["steps"] == 0
    assert info["task_type"] == "look_at_obj_in_light"
    for i in range(5):
        obs, reward, done, info = env.step("look")
    assert done and not info["won"] and info["steps"] == 5
    with pytest.raises(RuntimeError):
        env.step("look")
    env = make_env(TaskSpec("household", "train", "x", 3, "pick_two_obj_and_place"), expert=True)
    obs, info = env.reset()
    assert info["expert_action"] == env.expert_plan()[0]


def test_determinism_and_splits():
    a = list_tasks("household", "train", 30, seed=1)
    assert a == list_tasks("household", "train", 30, seed=1)
    assert len({s.task_id for s in a}) == 30
    assert {s.task_type for s in a} == set(ALFWORLD_TASK_TYPES)
    for spec in a[:12]:
        x, y = make_env(spec), make_env(spec)
        rng1, rng2 = random.Random(5), random.Random(5)
        assert _random_walk(x, rng1, 30) == _random_walk(y, rng2, 30)
        assert x.state.key() == y.state.key()
    seen_kinds, unseen_kinds, unseen_layouts = set(), set(), set()
    for split in SPLITS:
        for spec in list_tasks("household", split, 240, seed=0):
            w = generate(spec.split, spec.seed, spec.task_type)
            kinds = set(w.okind)
            if split == "valid_unseen":
                unseen_kinds |= kinds
                unseen_layouts.add((w.room, w.layout))
                assert w.layout in UNSEEN_LAYOUTS
            else:
                seen_kinds |= kinds
                assert w.layout in SEEN_LAYOUTS
    assert not (seen_kinds & (HELDOUT_KINDS | {"floorlamp"}))
    assert HELDOUT_KINDS | {"floorlamp"} <= unseen_kinds
    assert len(unseen_layouts) > 10


def test_clone_and_snapshot_are_independent():
    env = HouseholdEnv("train", 2, "pick_heat_then_place_in_recep")
    env.reset()
    snap = env.snapshot()
    twin = env.clone()
    for a in env.expert_plan():
        env.step(a)
    assert env._won and not twin._won and twin.cost_to_go() > 0
    env.restore(snap)
    assert not env._won and env.cost_to_go() == twin.cost_to_go()


def _random_success(env_factory, n: int, rng: random.Random) -> float:
    wins = 0
    for i in range(n):
        env = env_factory(i)
        obs, info = env.reset()
        done = False
        while not done:
            obs, _, done, info = env.step(rng.choice(info["admissible_commands"]))
        wins += info["won"]
    return wins / n


def test_random_play_success_rate_per_task_type_and_speed():
    rng = random.Random(0)
    rates = {}
    for task_type in ALFWORLD_TASK_TYPES:
        rates[task_type] = _random_success(lambda i: HouseholdEnv("train", 1000 + i, task_type), 150, rng)
    print("\nhousehold random-play success (50 steps):", json.dumps(rates, indent=1))
    assert all(r < 0.25 for r in rates.values())  # a random walk should rarely solve a task
    steps, t0 = 0, time.perf_counter()
    for spec in list_tasks("household", "train", 120, seed=9):
        env = make_env(spec)
        obs, info = env.reset()
        done = False
        while not done:
            obs, _, done, info = env.step(rng.choice(info["admissible_commands"]))
            steps += 1
    rate = steps / (time.perf_counter() - t0)
    # Printed, not asserted: wall time on a shared machine says nothing about the code (its speed is
    # measured by `python -m eval bench env`, side by side with the real games).
    print(f"household random play: {rate:,.0f} steps/s")


@pytest.mark.twx
def test_twexpress_smoke_and_random_difficulty():
    try:
        import textworld_express  # noqa: F401
    except ImportError as e:
        missing("twx", f"textworld-express does not import ({e}): pip install -e .")
    from eval.envs.twexpress import TwxEnv, new_server

    env = make_env(list_tasks("twexpress", "valid_seen", 1, seed=0)[0])
    try:
        obs, info = env.reset()
        assert set(INFO_KEYS) <= set(info) and info["task_type"] == "twc"
        assert "Your task is to" in obs and info["admissible_commands"] == sorted(info["admissible_commands"])
        while not env.done:
            obs, reward, done, info = env.step(info["expert_action"])
        assert info["won"] and reward == 1.0
        assert env.reset()[0] == env.reset()[0]  # same seed, same game
        env.step("look around")
        assert env.step("look around")[3]["expert_action"] is None  # left the gold path
    finally:
        env.close()
    server = new_server()
    try:
        twx_rate = _random_success(lambda i: TwxEnv("train", i, server=server), 40, random.Random(0))
    finally:
        server.close()
    hh_rate = _random_success(lambda i: HouseholdEnv("train", 500 + i), 120, random.Random(0))
    print(f"\nrandom-play success in 50 steps: household {hh_rate:.3f}, twexpress twc {twx_rate:.3f}")
    assert hh_rate < twx_rate  # the household tasks are the harder ones for a random walk


def test_alfworld_adapter_lists_games_and_plays_walkthrough():
    specs = list_tasks("alfworld", "valid_seen", 3, seed=0) if (GAMES / "valid_seen").is_dir() else []
    if specs:
        assert specs == list_tasks("alfworld", "valid_seen", 3, seed=0)
        assert all(s.task_type in ALFWORLD_TASK_TYPES for s in specs)
    try:
        import alfworld  # noqa: F401
    except ImportError:
        if specs:
            with pytest.raises(ImportError, match=r"pip install -e \.\[alfworld\]"):
                make_env(specs[0]).reset()
        missing("alfworld", "real ALFWorld is not installed: run `bash .ci/alfworld.sh .venv/bin/python`")
    if not specs:
        missing("alfworld", f"no ALFWorld games under {GAMES}: set SKILLMEM_ALFWORLD_DIR to the games folder")
    env = make_env(specs[0])
    obs, info = env.reset()
    assert set(INFO_KEYS) <= set(info)
    while not info["won"]:
        obs, reward, done, info = env.step(info["expert_action"])
    assert done and reward == 1.0
