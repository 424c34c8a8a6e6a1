"""The offline demo: the whole loop on the household environment, no key, no network.

    ./run demo                      (or: python -m eval demo [--quick] [--out runs/demo])

Per seed: the untrained CPU policy gathers experience on `train` tasks; failures become
lessons (with the environment expert's directive feedback at the pivot), successes
become demonstrations; a training round distills them into the policy's weights; then
every condition plays the same held-out `valid_unseen` tasks (object kinds and layouts
never seen in training). Prints the table of conditions, what the numbers rest on (read
from the run's own stores: how much of the memory the environment's expert played), and
where the report is.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sqlite3
import textwrap
import time
from pathlib import Path

from .report import load, summarize, table, write_report
from .runner import RunConfig, run

CONDITIONS = ("no_memory", "demos_only", "lessons_only", "memory", "raw_trajectories", "trained", "trained_memory")

# Household (ALFWorld-grammar) knowledge written in code: the household pack, which the harness
# passes to reflection, hints, the policy and training (RunConfig.domain = "pack"). The numbers
# measure memory and training together with it. tests/test_demo.py checks that each module named
# here exists, so the printout cannot name code that has moved.
DOMAIN_CODE = (
    ("skillmem.domains.alfworld.hints", "carries a demonstration out: fills its slots from the goal; when "
                                        "the plan's place is unknown, explores places not yet visited, opening "
                                        "closed ones"),
    ("skillmem.domains.alfworld.rules", "goal templates, slots by object and receptacle kind, the situations a "
                                        "lesson may name and the rules read at a pivot"),
    ("skillmem.domains.alfworld.state", "the world state read off the game's text: what is held, places "
                                        "visited or opened, where things were seen"),
    ("skillmem.domains.alfworld.features", "the state features crossed with each command that the CPU policy's "
                                           "trained weights are over"),
    ("skillmem.domains.alfworld", "HouseholdDomain: the command grammar, failure feedback, and which steps of "
                                  "a guided retry only the teacher could take (not imitated)"),
)
EXPERT = ("eval.envs.household", "an exact planner; it corrects each failed train episode at "
                                 "its pivot and plays its guided retry (eval/runner.py guided_retry)")


def provenance(out: Path, seeds, rows: list[dict]) -> dict[str, int]:
    """Where a run's memory came from: its train rows (results.jsonl) and its stores (seed<N>.db, read-only).

    train / won / won_blind: the policy's own train episodes, those it won, and those it won with
    no memory in its context; guided: guided retries of its failures (the expert takes over at
    the pivot), from_start: those whose pivot is step 0 (the expert played the whole game);
    demos / demos_expert: active demonstrations, and those with a guided retry among their source
    episodes; lessons / lessons_expert: active lessons, and those whose source episodes carry the
    expert's directive feedback."""
    train = [r for r in rows if r.get("phase") == "train" and r.get("seed") in set(seeds)]
    c = {"train": len(train), "won": sum(bool(r["won"]) for r in train),
         "won_blind": sum(bool(r["won"]) and not r.get("context_tokens") for r in train)}
    c.update(dict.fromkeys(("guided", "from_start", "demos", "demos_expert", "lessons", "lessons_expert"), 0))
    guided = "json_extract(e.meta, '$.guided_retry_of') IS NOT NULL"
    by_expert = "EXISTS (SELECT 1 FROM feedback f WHERE f.episode_id = e.id AND f.source = 'expert')"
    for seed in seeds:
        con = sqlite3.connect(f"file:{Path(out) / f'seed{seed}.db'}?mode=ro", uri=True)
        try:
            def one(sql: str) -> int:
                return con.execute(sql).fetchone()[0] or 0

            c["guided"] += one(f"SELECT COUNT(*) FROM episodes e WHERE {guided}")
            c["from_start"] += one(f"SELECT COUNT(*) FROM episodes e WHERE {guided} AND json_extract(e.meta, '$.pivot') = 0")
            for kind, table, cond in (("demos", "demonstrations", guided), ("lessons", "lessons", by_expert)):
                c[kind] += one(f"SELECT COUNT(*) FROM {table} WHERE status = 'active'")
                c[kind + "_expert"] += one(
                    f"SELECT COUNT(DISTINCT d.id) FROM {table} d, json_each(d.source_episodes) s "
                    f"JOIN episodes e ON e.id = s.value WHERE d.status = 'active' AND {cond}")
        finally:
            con.close()
    return c


def rests_on(out: Path, seeds, rows: list[dict], summary: dict, domain: str = "pack") -> str:
    """The text printed under the table: what the numbers measure and what carries them.

    domain is the run's RunConfig.domain: "pack" (the household pack, DOMAIN_CODE) or "text"."""
    p = provenance(out, seeds, rows)
    no_mem = summary.get("conditions", {}).get("no_memory")
    no_mem = f"{100 * no_mem['success_mean']:.0f} %" if no_mem else "not run"
    parts = [
        "What these numbers measure: success on held-out tasks of the household environment, the same tasks "
        "for every condition, with the offline CPU policy (untrained except in the trained* rows). "
        "What they rest on:",
        f"- Memory written from experience (counted in this run's stores, {len(seeds)} seed(s)): the policy played "
        f"{p['train']} train episodes and won {p['won']}, {p['won_blind']} of them without memory in its context. "
        f"{p['guided']} failures got a guided retry, {p['from_start']} of them from step 0, i.e. the expert played "
        f"the whole game. Of {p['demos']} demonstrations, {p['demos_expert']} come from expert-played retries; of "
        f"{p['lessons']} lessons, {p['lessons_expert']} take their fix from the expert's correction.",
        f"- The environment's expert ({EXPERT[0]}): {EXPERT[1]}.",
        *(["- Household knowledge written in code, the household pack, the same under every condition "
           "(with the generic TextDomain instead, memory won 0 of the first 12 of these tasks, seed 0: README, "
           "'What part of the win is written in code'):", *(f"  - {m}: {what}" for m, what in DOMAIN_CODE)]
          if domain == "pack" else
          ["- No household pack: this run read the world with the generic TextDomain (--domain text)."]),
        f"So no_memory ({no_mem}) is {'that code' if domain == 'pack' else 'the policy'} without memory, and the "
        "memory rows are memory (a slotted recipe per task type, first copied from the expert's solutions)"
        + (" carried out by that code; trained is a policy distilled from them over the pack's features."
           if domain == "pack" else "; trained is a policy distilled from them.")
        + " Not comparable to an LLM's score on the same games: this policy picks among the admissible commands, "
        "learns from an exact expert" + (" and is steered by code written for this grammar" if domain == "pack"
                                         else "") + "; raw_trajectories shows only that it cannot read text.",
    ]
    def wrap(text: str) -> str:
        lead = text[:len(text) - len(text.lstrip(" -"))]  # keep a bullet's indent on its later lines
        return textwrap.fill(text, 100, subsequent_indent=" " * len(lead))

    return "\n".join(wrap(t) for t in parts)


def domain_modules_exist() -> list[str]:
    """The modules DOMAIN_CODE and EXPERT name that cannot be imported (empty when the printout is right)."""
    missing = []
    for mod, _ in (*DOMAIN_CODE, EXPERT):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError:
            missing.append(mod)
    return missing


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
    rows = load(out)
    summary = summarize(rows)
    print(table(summary))
    print("\n" + rests_on(Path(out), cfg.seeds, rows, summary, cfg.domain))
    print(f"\nreport: {report} (plots beside it); store: {out}/seed0.db — try\n"
          f"  skillmem --db {out}/seed0.db lessons -n household\n"
          f"done in {time.time() - t0:.0f} s")
    return 0
