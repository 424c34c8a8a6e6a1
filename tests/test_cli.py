"""`skillmem ...` as a user runs it: a subprocess, its output and its exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SUBCOMMANDS = ["sql", "episodes", "lessons", "train", "policy", "export", "reflect", "index"]


def run(*args: str, db: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "skillmem.cli", *(["--db", db] if db else []), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)


def test_help_lists_every_subcommand():
    r = run("--help")
    assert r.returncode == 0, r.stderr
    assert "{" + ",".join(SUBCOMMANDS) + "}" in r.stdout
    for name in SUBCOMMANDS:
        sub = run(name, "--help")
        assert sub.returncode == 0, (name, sub.stderr)
        assert sub.stdout.startswith(f"usage: skillmem {name}"), (name, sub.stdout[:200])
    # every TrainConfig knob is a flag of `train`
    train_help = run("train", "--help").stdout
    assert "--every-episodes" in train_help and "--heldout-fraction" in train_help


def test_no_subcommand_is_a_usage_error():
    r = run()
    assert r.returncode == 2
    assert "usage: skillmem" in r.stderr


def test_exit_codes(tmp_path):
    db = str(tmp_path / "s.db")
    absent = run("sql", "SELECT 1", db=db)
    assert absent.returncode == 4 and "no skillmem database" in absent.stderr
    from skillmem import SkillMemory

    SkillMemory(db).close()
    ok = run("sql", "SELECT 1 AS one", "--format", "json", db=db)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == [{"one": 1}]
    refused = run("sql", "DELETE FROM lessons", db=db)
    assert refused.returncode == 3, refused.stderr
    assert "read-only" in refused.stderr.lower() or "refused" in refused.stderr.lower()
    missing = run("sql", "SELECT * FROM no_such_table", db=db)
    assert missing.returncode == 1
    assert "the database refused the statement" in missing.stderr
    assert run("lessons", "retire", db=db).returncode == 2  # no ids
    assert run("lessons", "retire", "77", db=db).returncode == 1  # no such lesson
    empty = run("export", "--out", str(tmp_path / "export"), db=db)
    assert empty.returncode == 1 and "has no finished train/live episodes" in empty.stderr
    assert run("policy", "rollback", db=db).returncode == 1  # nothing to roll back to
    listed = run("policy", "list", "--format", "json", db=db)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


def test_reading_the_store_loads_no_torch(tmp_path):
    """The parser builds `train`'s flags from TrainConfig without importing the trainer."""
    from skillmem import SkillMemory

    SkillMemory(str(tmp_path / "s.db")).close()
    code = ("import sys; from skillmem.cli import main; "
            f"rc = main(['--db', {str(tmp_path / 's.db')!r}, 'episodes']); "
            "print(rc, sorted(m for m in ('torch', 'faiss', 'langgraph', 'sentence_transformers') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "0 []"


def test_index_check_and_rebuild(tmp_path):
    db = str(tmp_path / "s.db")
    never = run("index", "check", db=db)
    assert never.returncode == 1 and "never saved" in never.stdout
    rebuilt = run("index", "rebuild", "--model", "hashing-64", db=db)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads(rebuilt.stdout)["model"] == "hashing-64"
    again = run("index", "check", db=db)
    assert again.returncode == 0, again.stdout
    assert json.loads(again.stdout)["ok"] is True
