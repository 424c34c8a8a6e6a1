"""Training is tenant-safe: one folder per namespace and version, absolute paths, no NaN on resume (issue 12)."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest

from conftest import open_memory
from skillmem.cli import main as cli
from skillmem.policy import CPUPolicy
from skillmem.train import gate as gates
from skillmem.train.data import collect_examples
from skillmem.train.trainer import Trainer, TrainConfig

ADM = ["go to countertop 1", "go to fridge 1", "go to microwave 1", "take apple 1 from countertop 1",
       "heat apple 1 with fridge 1", "heat apple 1 with microwave 1", "inventory"]
GOAL = "heat some apple and put it in countertop."
GOOD = ["go to countertop 1", "take apple 1 from countertop 1", "go to microwave 1", "heat apple 1 with microwave 1"]
BAD = ["go to countertop 1", "take apple 1 from countertop 1", "go to fridge 1", "heat apple 1 with fridge 1"]
TRAIN = ["train", "--steps", "12", "--batch-size", "8", "--heldout-fraction", "0", "--every-episodes", "1"]


def _fill(mem, namespace, plans):
    for i, (actions, ok) in enumerate(plans):
        with mem.episode(task=GOAL, task_type="heat", task_id=f"t{i % 2}", split="train", namespace=namespace) as ep:
            for a in actions:
                ep.step(observation="", action=a, admissible=ADM,
                        feedback="Nothing happens." if a.endswith("fridge 1") and a.startswith("heat") else "ok")
            ep.finish(success=ok, source="environment")


def _digest(path: str) -> str:
    h = hashlib.sha256()
    for f in sorted(Path(path).rglob("*")):
        if f.is_file():
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def test_each_namespace_trains_in_its_own_folder(db_url, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SKILLMEM_POLICY_DIR", str(tmp_path / "policies"))
    mem = open_memory(db_url, tmp_path)
    _fill(mem, "A", [(GOOD, True), (BAD, False)] * 2)
    _fill(mem, "B", [(BAD, True), (GOOD, False)] * 2)  # B's world rewards the opposite
    engine = mem.engine
    assert cli(["--db", db_url, *TRAIN, "-n", "A"]) in (0, 1)
    [a] = gates.list_versions(engine, "A")
    a_digest = _digest(a.path)
    assert cli(["--db", db_url, *TRAIN, "-n", "B"]) in (0, 1)
    [b] = gates.list_versions(engine, "B")
    capsys.readouterr()
    assert Path(a.path).is_absolute() and Path(b.path).is_absolute()
    assert Path(a.path).parent != Path(b.path).parent  # never one run folder for two tenants
    assert _digest(a.path) == a_digest  # B's run did not touch A's weights
    assert b.metrics["train"]["steps"] == 12 and _digest(b.path) != a_digest  # B trained on B's data
    mem.close()


def test_a_relative_db_stores_an_absolute_policy_path(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mem = open_memory("rel.db", tmp_path)
    _fill(mem, "default", [(GOOD, True), (BAD, False)] * 2)
    mem.close()
    assert cli(["--db", "rel.db", *TRAIN]) in (0, 1)
    mem = open_memory("rel.db", tmp_path)
    [v] = gates.list_versions(mem.engine, "default")
    mem.close()
    assert Path(v.path).is_absolute() and (Path(v.path) / "train_config.json").exists()
    monkeypatch.chdir("/")
    assert (Path(v.path) / "train_config.json").exists()


def test_resuming_a_finished_checkpoint_keeps_its_loss(db_url, tmp_path):
    mem = open_memory(db_url, tmp_path)
    try:
        _fill(mem, "default", [(GOOD, True), (BAD, False)] * 2)
        examples = collect_examples(mem.engine, "default")
        cfg = TrainConfig(steps=6, batch_size=8, checkpoint_every=3)
        first = Trainer(CPUPolicy(), examples, cfg, tmp_path / "run").train()
        again = Trainer(CPUPolicy(), examples, cfg, tmp_path / "run").train()  # a rerun after finishing
        assert again.start_step == 6 and again.status == "finished"
        assert math.isfinite(again.loss) and again.loss == pytest.approx(first.loss)
        # Registered on either store, even if a loss were NaN (PostgreSQL's JSON has no NaN).
        vid = gates.register(mem.engine, "default", again.path, kind="cpu",
                             metrics={"train": {"loss": again.loss, "other": float("nan")}})
        assert gates.get_version(mem.engine, vid).metrics["train"] == {"loss": again.loss, "other": None}
    finally:
        mem.close()
