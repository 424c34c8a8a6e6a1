"""Benchmark of environment speed: random-play steps/s of household vs TextWorld-Express and real ALFWorld.

`main(argv)` prints one line per env and a JSON object as the last line:
{"household": {"steps_per_s": ..., "random_success": ..., "episodes": ...}, "twexpress": {...},
"alfworld": {..., "first_load_s": ...}, "household_vs_twexpress_speed": ..., "household_vs_alfworld_speed": ...}.
Random play picks uniformly among the admissible commands, which every env computes each step;
episodes end at 50 steps. Real ALFWorld needs the optional packages (`bash .ci/alfworld.sh`); without
them its entry says why it was skipped.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from eval.envs.base import list_tasks, make_env


def _play(envs, rng: random.Random, budget_s: float) -> dict:
    """Random play over the given envs (cycled) until the time budget is spent."""
    steps = episodes = wins = 0
    t0 = time.perf_counter()
    i = 0
    while time.perf_counter() - t0 < budget_s:
        env = envs[i % len(envs)]
        i += 1
        obs, info = env.reset()
        done = False
        while not done:
            obs, _, done, info = env.step(rng.choice(info["admissible_commands"]))
            steps += 1
        episodes += 1
        wins += bool(info["won"])
    dt = time.perf_counter() - t0
    return {"steps_per_s": round(steps / dt, 1), "random_success": round(wins / max(episodes, 1), 4),
            "episodes": episodes, "steps": steps, "seconds": round(dt, 2)}


def bench_household(budget_s: float, split: str) -> dict:
    envs = [make_env(s) for s in list_tasks("household", split, 120, seed=0)]
    return _play(envs, random.Random(0), budget_s)


def bench_twexpress(budget_s: float, split: str) -> dict:
    from eval.envs.twexpress import TwxEnv, new_server

    server = new_server()
    try:
        envs = [TwxEnv(s.split, s.seed, server=server) for s in list_tasks("twexpress", split, 200, seed=0)]
        return _play(envs, random.Random(0), budget_s)
    finally:
        server.close()


def bench_alfworld(budget_s: float, split: str) -> dict:
    split = split if split != "valid_unseen" else "valid_seen"
    specs = list_tasks("alfworld", split, 6, seed=0)  # one game of each task type
    envs = [make_env(s, expert=False) for s in specs]
    try:
        t0 = time.perf_counter()
        envs[0].reset()  # the import and the first load, reported apart from the steps
        first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for env in envs[1:]:
            env.reset()  # load every game before the clock starts
        out = _play(envs, random.Random(0), budget_s)
        out["first_load_s"] = round(first_s, 2)
        out["load_s_per_game"] = round((time.perf_counter() - t0 - out["seconds"]) / max(len(envs) - 1, 1), 2)
        return out
    finally:
        for env in envs:
            env.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval bench env", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0, help="time budget of random play per env")
    p.add_argument("--split", default="train", choices=["train", "valid_seen", "valid_unseen"])
    p.add_argument("--envs", default="household,twexpress,alfworld",
                   help="comma-separated envs; one that cannot start is reported with its error")
    args = p.parse_args(argv)
    runners = {"household": bench_household, "twexpress": bench_twexpress, "alfworld": bench_alfworld}
    result: dict[str, dict] = {}
    for name in args.envs.split(","):
        name = name.strip()
        if name not in runners:
            p.error(f"unknown env {name!r}; use household, twexpress or alfworld")
        try:
            result[name] = runners[name](args.seconds, args.split)
        except ImportError as e:  # optional envs (alfworld) may be missing
            result[name] = {"skipped": str(e)}
        print(f"{name}: {result[name]}", flush=True)
    for other in ("twexpress", "alfworld"):
        if "steps_per_s" in result.get("household", {}) and "steps_per_s" in result.get(other, {}):
            result[f"household_vs_{other}_speed"] = round(
                result["household"]["steps_per_s"] / result[other]["steps_per_s"], 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
