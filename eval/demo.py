"""The offline demo: the whole loop on the household environment, no key, no network.

    ./run demo                      (or: python -m eval demo [--quick] [--out runs/demo])

Per seed: the untrained CPU policy gathers experience on `train` tasks; failures become
lessons (with the environment expert's directive feedback at the pivot), successes
become demonstrations; a training round distills them into the policy's weights; then
every condition plays the same held-out `valid_unseen` tasks (object kinds and layouts
never seen in training). Prints the table of conditions and where the report is.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from .report import load, summarize, table, write_report
from .runner import RunConfig, run

CONDITIONS = ("no_memory", "demos_only", "lessons_only", "memory", "raw_trajectories", "trained", "trained_memory")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quick", action="store_true", help="one seed, fewer tasks (about a minute)")
    p.add_argument("--fresh", action="store_true", help="delete --out first instead of resuming it")
    a = p.parse_args(argv)
    if a.fresh and Path(a.out).exists():
        shutil.rmtree(a.out)
    cfg = RunConfig(out=a.out, env="household", eval_split="valid_unseen", conditions=CONDITIONS,
                    seeds=(0,) if a.quick else (0, 1, 2), rounds=2,
                    train_tasks=18 if a.quick else 36, eval_tasks=12 if a.quick else 30, policy="cpu")
    t0 = time.time()
    print(f"skillmem offline demo: household env, {len(cfg.seeds)} seed(s) x {cfg.rounds} rounds, "
          f"{cfg.train_tasks} train tasks per round, {cfg.eval_tasks} valid_unseen tasks per condition\n", flush=True)
    out = run(cfg)
    report = write_report(out)
    print("\nSuccess on held-out valid_unseen tasks (last round):\n")
    print(table(summarize(load(out))))
    print(f"\nreport: {report} (plots beside it); store: {out}/seed0.db — try\n"
          f"  skillmem --db {out}/seed0.db lessons -n household\n"
          f"done in {time.time() - t0:.0f} s")
    return 0
