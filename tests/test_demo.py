"""The demo's printout says what its numbers rest on, counted from the run itself."""

from __future__ import annotations

import sqlite3

from eval.demo import DOMAIN_CODE, EXPERT, domain_modules_exist, provenance, rests_on
from eval.report import load, summarize
from eval.runner import RunConfig, run


def test_the_code_the_printout_names_exists():
    assert domain_modules_exist() == [], "eval/demo.py DOMAIN_CODE names modules that moved: update it and the README"


def test_provenance_counts_what_the_expert_played(tmp_path):
    cfg = RunConfig(out=str(tmp_path / "run"), env="household", train_tasks=6, eval_tasks=2, seeds=(0,), rounds=1,
                    conditions=("no_memory", "memory"), policy="cpu", step_limit=20, embedder="hashing",
                    train=False, rollouts=False)
    out = run(cfg)
    rows = load(out)
    p = provenance(out, cfg.seeds, rows)
    train = [r for r in rows if r["phase"] == "train"]
    assert p["train"] == len(train) == 6
    assert p["won"] == sum(r["won"] for r in train) and p["won_blind"] <= p["won"]
    con = sqlite3.connect(out / "seed0.db")
    try:
        retries = [m for (m,) in con.execute("SELECT meta FROM episodes WHERE meta LIKE '%guided_retry_of%'")]
        demos = con.execute("SELECT COUNT(*) FROM demonstrations WHERE status = 'active'").fetchone()[0]
        lessons = con.execute("SELECT COUNT(*) FROM lessons WHERE status = 'active'").fetchone()[0]
    finally:
        con.close()
    # Every failure the expert could correct got a retry; the untrained policy fails most train tasks.
    assert p["guided"] == len(retries) == sum("guided" in r for r in train) > 0
    assert 0 <= p["from_start"] <= p["guided"]
    assert (p["demos"], p["lessons"]) == (demos, lessons) and demos > 0
    assert 0 < p["demos_expert"] <= p["demos"] and p["lessons_expert"] <= p["lessons"]
    text = " ".join(rests_on(out, cfg.seeds, rows, summarize(rows)).split())  # as read, not as wrapped
    assert f"played {p['train']} train episodes and won {p['won']}" in text
    assert f"{p['guided']} failures got a guided retry, {p['from_start']} of them from step 0" in text
    for module, _ in (*DOMAIN_CODE, EXPERT):
        assert module in text
    assert "Not comparable to an LLM's score" in text
