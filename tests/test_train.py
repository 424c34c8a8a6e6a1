"""The trainer: examples from a real SQLite store, each objective's gradient, NaN guard, resume after
kill -9, the eval gate and rollback, the CLI, the LangGraph graph, and gloo single-process mode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from skillmem import SkillMemory
from skillmem.embed import HashingEmbedder
from skillmem.episode import LessonBase
from skillmem.policy import CPUPolicy, load_policy
from skillmem.train import gate as gates
from skillmem.train.data import Example, collect_examples, split_heldout
from skillmem.train.objectives import (
    Batch,
    context_distillation,
    degenerate_weights,
    demo_sft,
    directive_sft,
    lesson_keep_probability,
    negative_reinforcement,
)
from skillmem.train.trainer import Trainer, TrainConfig, make_batch, objective_losses, should_train

ROOT = Path(__file__).resolve().parents[1]
ADM = ["go to countertop 1", "go to fridge 1", "go to microwave 1", "take apple 1 from countertop 1",
       "heat apple 1 with fridge 1", "heat apple 1 with microwave 1", "inventory"]
GOAL = "heat some apple and put it in countertop."
GOOD = ["go to countertop 1", "take apple 1 from countertop 1", "go to microwave 1", "heat apple 1 with microwave 1"]
BAD = ["go to countertop 1", "take apple 1 from countertop 1", "go to fridge 1", "heat apple 1 with fridge 1"]


def _record(mem: SkillMemory, actions: list[str], success: bool, task_id: str, split: str = "train") -> str:
    with mem.episode(task=GOAL, task_type="pick_heat_then_place_in_recep", task_id=task_id, split=split) as ep:
        for a in actions:
            fb = "Nothing happens." if a.startswith("heat apple 1 with fridge") else f"You did: {a}."
            ep.step(observation="", action=a, feedback=fb, admissible=ADM)
        ep.finish(success=success, source="environment")
    return ep.id


@pytest.fixture
def store(tmp_path):
    """Two tasks: one with a success and a failure (informative), one with two successes (degenerate);
    a lesson on the failure's pivot, directive feedback on another failure, an eval episode."""
    mem = SkillMemory(str(tmp_path / "s.db"), embedder=HashingEmbedder(), index_dir=tmp_path / "idx")
    ok = _record(mem, GOOD, True, "t1")
    bad = _record(mem, BAD, False, "t1")
    _record(mem, GOOD, True, "t2")
    _record(mem, GOOD, True, "t2")
    fixed = _record(mem, BAD[:3] + ["inventory"], False, "t3")
    mem.feedback(fixed, 2, corrected_action="go to microwave 1", source="teacher")
    _record(mem, BAD, False, "t9", split="valid_unseen")  # must never become training data
    mem.add_lesson(LessonBase(task_type="pick_heat_then_place_in_recep", trigger="heating an object",
                              bad_action="heat [object] with fridge 1", fix="heat [object] with microwave 1",
                              pivot_step=3, source_episodes=[bad]))
    yield mem, {"ok": ok, "bad": bad, "fixed": fixed}
    mem.close()


def test_examples_from_store(store):
    mem, ids = store
    ex = collect_examples(mem.engine, "default")
    kinds = {k: [e for e in ex if e.kind == k] for k in ("demo", "negative", "directive", "distill")}
    assert len(kinds["demo"]) == 3 * len(GOOD)
    (neg,) = [e for e in kinds["negative"] if e.episode_id == ids["bad"]]
    assert neg.target == "heat apple 1 with fridge 1" and neg.step_index == 3  # the lesson's pivot
    assert neg.history[-1][0] == "go to fridge 1" and neg.target in neg.candidates
    # the prefix the failure shares with the success gives no negative example
    assert not [e for e in kinds["negative"] if e.episode_id == ids["bad"] and e.step_index < 3]
    (d,) = kinds["directive"]
    assert d.target == "go to microwave 1" and d.episode_id == ids["fixed"] and d.step_index == 2
    # t3's negative is at the corrected step, with the right action to spare its shared prefix
    (n3,) = [e for e in kinds["negative"] if e.episode_id == ids["fixed"]]
    assert n3.step_index == 2 and n3.good_action == "go to microwave 1"
    assert kinds["distill"] and all("fridge" in e.memory_text for e in kinds["distill"])
    assert all(e.group != "t9" for e in ex)  # evaluation split excluded
    assert all(e.degenerate == (e.group == "t2") for e in ex)
    train, held = split_heldout(ex, 0.34, seed=1)
    assert not {e.group for e in train} & {e.group for e in held}


# --------------------------------------------------------------------------- objectives


def _one(kind: str, target: str = "go to microwave 1", **kw) -> Example:
    return Example(kind=kind, goal=GOAL, history=[("go to countertop 1", "You see an apple 1.")], candidates=ADM,
                   target=target, **kw)


def _after_steps(policy: CPUPolicy, ex: Example, fn, n: int = 5, lr: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    opt = torch.optim.SGD(policy.parameters(), lr=lr)
    cfg = TrainConfig(steps=100, withdraw_until=0.0)
    before = policy.action_logprobs(ex.prompt(False), ex.candidates).detach()
    for step in range(n):
        loss = fn(make_batch(policy, [ex], step=step, config=cfg))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before, policy.action_logprobs(ex.prompt(False), ex.candidates).detach()


def test_demo_and_directive_sft_raise_the_action():
    for kind, fn in (("demo", demo_sft), ("directive", directive_sft)):
        ex = _one(kind)
        before, after = _after_steps(CPUPolicy(), ex, fn)
        i = ex.target_index
        assert after[i] > before[i] + 0.1, kind


def test_demo_sft_amplification_scales_gradient_and_other_kinds_are_masked():
    policy = CPUPolicy()
    cfg = TrainConfig()
    batch = make_batch(policy, [_one("demo"), _one("negative", target="inventory")], step=0, config=cfg)
    g = [torch.autograd.grad(demo_sft(batch, a), policy.hint_weight, retain_graph=True)[0] for a in (1.0, 3.0)]
    assert torch.isclose(g[1], 3 * g[0])
    only_neg = make_batch(policy, [_one("negative", target="inventory")], step=0, config=cfg)
    assert demo_sft(only_neg).item() == 0 and directive_sft(only_neg).item() == 0
    assert negative_reinforcement(make_batch(policy, [_one("demo")], step=0, config=cfg)).item() == 0


def test_negative_reinforcement_lowers_bad_action_and_vanishes_when_unlikely():
    ex = _one("negative", target="heat apple 1 with fridge 1", good_action="heat apple 1 with microwave 1")
    before, after = _after_steps(CPUPolicy(), ex, negative_reinforcement)
    i = ex.target_index
    assert after[i] < before[i] - 0.1
    # the loss -log(1 - p) is bounded below by 0 and its gradient fades as p -> 0
    small = Batch(logp=torch.tensor([[-20.0, -1e-9]], requires_grad=True), mask=torch.ones(1, 2, dtype=torch.bool),
                  target=torch.tensor([0]), kind=torch.tensor([1]), weight=torch.ones(1))
    negative_reinforcement(small).backward()
    assert small.logp.grad.abs().max() < 1e-6


def test_negative_reinforcement_spares_the_shared_prefix_in_an_lm(tmp_path):
    from skillmem.policy.hf import HFPolicy, HFPolicyConfig, make_tiny_lm

    words = sorted({w for s in ADM + [GOAL, "Goal: Next action: > You see an ."] for w in s.replace(".", " . ").replace(":", " : ").split()})
    policy = HFPolicy(HFPolicyConfig(base_model=str(make_tiny_lm(tmp_path / "lm", words))))
    bad = _one("negative", target="heat apple 1 with fridge 1", good_action="heat apple 1 with microwave 1")
    batch = make_batch(policy, [bad], step=0, config=TrainConfig())
    full = policy.action_logprobs(bad.prompt(False), ["heat apple 1 with fridge 1"])
    # four shared tokens ("heat apple 1 with") are left out of the penalized log-prob
    assert batch.target_logp().item() > full.item() + 1.0
    opt = torch.optim.AdamW(list(policy.parameters()), lr=2e-2)
    prefix = ["heat apple 1 with"]
    p0 = policy.action_logprobs(bad.prompt(False), prefix).item()
    b0 = batch.target_logp().item()
    for step in range(5):
        loss = negative_reinforcement(make_batch(policy, [bad], step=step, config=TrainConfig()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    b1 = make_batch(policy, [bad], step=0, config=TrainConfig()).target_logp().item()
    assert b1 < b0  # the suffix that makes it wrong went down
    # the shared prefix was not the target of the push: it moves far less than the suffix
    assert abs(policy.action_logprobs(bad.prompt(False), prefix).item() - p0) < abs(b1 - b0)


def test_context_distillation_moves_student_toward_teacher_and_withdraws_lessons():
    from skillmem.policy.base import Hints

    hints = Hints()
    hints.add("go to microwave 1", 2.0, "lesson")
    ex = _one("distill", memory_text="Heat with the microwave.", memory_hints=hints)
    policy = CPUPolicy()
    cfg = TrainConfig(steps=100, withdraw_until=0.0)

    def kl() -> float:
        return context_distillation(make_batch(policy, [ex], step=0, config=cfg)).item()

    k0 = kl()
    assert k0 > 0.1
    _after_steps(policy, ex, context_distillation, n=10, lr=0.05)
    assert kl() < k0 * 0.7
    assert lesson_keep_probability(0, 100, 0.5) == 1.0
    assert lesson_keep_probability(25, 100, 0.5) == 0.5
    assert lesson_keep_probability(60, 100, 0.5) == 0.0


def test_degenerate_groups_down_weighted():
    w = degenerate_weights(torch.tensor([True, False]), 0.25)
    assert w.tolist() == [0.25, 1.0]
    batch = make_batch(CPUPolicy(), [_one("demo"), _one("demo")], step=0, config=TrainConfig(degenerate_weight=0.0))
    assert batch.weight.tolist() == [1.0, 1.0]
    ex = _one("demo")
    ex.degenerate = True
    assert demo_sft(make_batch(CPUPolicy(), [ex], step=0, config=TrainConfig(degenerate_weight=0.0))).item() == 0


# --------------------------------------------------------------------------- the loop


def _examples(n: int = 40) -> list[Example]:
    return [_one("demo", target=GOOD[i % 4]) for i in range(n)]


def test_trainer_improves_and_saves_config_next_to_weights(tmp_path):
    ex = _examples()
    cfg = TrainConfig(steps=40, batch_size=8, checkpoint_every=10)
    result = Trainer(CPUPolicy(), ex, cfg, tmp_path / "run").train()
    assert result.status == "finished" and result.steps == 40
    assert (result.path / "train_config.json").exists() and (result.path / "weights.pt").exists()
    assert TrainConfig.load(result.path / "train_config.json") == cfg
    losses = objective_losses(make_batch(load_policy(result.path), ex[:8], step=0, config=cfg), cfg)
    first = objective_losses(make_batch(CPUPolicy(), ex[:8], step=0, config=cfg), cfg)
    assert losses["demo"] < first["demo"]


def test_nan_guard_stops_and_keeps_last_good_weights(tmp_path):
    policy = CPUPolicy()
    calls = {"n": 0}

    def poison(grad: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return grad * float("nan") if calls["n"] >= 4 else grad

    policy.hint_weight.register_hook(poison)
    snapshots = []
    trainer = Trainer(policy, _examples(), TrainConfig(steps=20, batch_size=4, checkpoint_every=0), tmp_path / "run")
    orig_step = trainer.optimizer.step

    def step(*a, **k):
        out = orig_step(*a, **k)
        snapshots.append({k: v.clone() for k, v in policy.state_dict().items()})
        return out

    trainer.optimizer.step = step
    result = trainer.train()
    assert result.status == "nan" and result.steps == 3
    saved = load_policy(result.path)
    for k, v in saved.state_dict().items():
        assert torch.isfinite(v).all() and torch.equal(v, snapshots[-1][k])


RESUME_SCRIPT = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {tests!r})
    from test_train import _examples
    from skillmem.policy import CPUPolicy
    from skillmem.train.trainer import Trainer, TrainConfig
    torch.set_num_threads(1)
    cfg = TrainConfig(steps={steps}, batch_size=4, checkpoint_every=5)
    Trainer(CPUPolicy(), _examples(), cfg, {out!r}).train()
""")


def test_resume_after_kill_continues_from_checkpoint(tmp_path):
    steps = 100_000  # long enough to be killed mid-run
    out = tmp_path / "run"
    script = tmp_path / "train.py"
    script.write_text(RESUME_SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests"), steps=steps, out=str(out)))
    proc = subprocess.Popen([sys.executable, str(script)], env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if (out / "checkpoint.pt").exists():
                state = torch.load(out / "checkpoint.pt", weights_only=False)
                if state["step"] >= 10:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("no checkpoint within 2 minutes")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at = torch.load(out / "checkpoint.pt", weights_only=False)["step"]
    assert killed_at >= 10 and not (out / "policy").exists()
    # resume: the same run continues from the checkpoint, to a shorter end for the test
    cfg = TrainConfig(steps=killed_at + 5, batch_size=4, checkpoint_every=5)
    resumed = Trainer(CPUPolicy(), _examples(), cfg, out).train()
    assert resumed.start_step == killed_at and resumed.steps == killed_at + 5 and resumed.status == "finished"
    # and lands exactly where an uninterrupted run does
    straight = Trainer(CPUPolicy(), _examples(), cfg, tmp_path / "straight").train()
    a, b = load_policy(resumed.path).state_dict(), load_policy(straight.path).state_dict()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff < 1e-4, diff


def test_single_process_distributed_gloo(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        trainer = Trainer(CPUPolicy(), _examples(), TrainConfig(steps=5, batch_size=4), tmp_path / "run")
        assert (trainer.rank, trainer.world) == (0, 1)
        assert trainer.train().status == "finished"
    finally:
        dist.destroy_process_group()


# --------------------------------------------------------------------------- gate, CLI, graph


def test_gate_promotes_rejects_and_rolls_back(tmp_path, store):
    mem, _ = store
    e = mem.engine
    paths = [CPUPolicy(CPUPolicy().config).save(tmp_path / f"p{i}") for i in range(3)]
    scores = {str(paths[0]): 0.5, str(paths[1]): 0.7, str(paths[2]): 0.6}
    evaluate = lambda policy: scores[policy.path]  # noqa: E731

    def load(path: str):
        policy = load_policy(path)
        policy.path = path
        return policy

    v0 = gates.register(e, "default", paths[0], kind="cpu")
    assert gates.gate(e, v0, evaluate, load=load).promoted
    v1 = gates.register(e, "default", paths[1], kind="cpu", parent_id=v0)
    d1 = gates.gate(e, v1, evaluate, load=load)
    assert d1.promoted and d1.current_score == 0.5 and gates.current_version(e, "default").id == v1
    v2 = gates.register(e, "default", paths[2], kind="cpu", parent_id=v1)
    assert not gates.gate(e, v2, evaluate, load=load).promoted
    assert gates.get_version(e, v2).status == "rejected" and gates.get_version(e, v2).metrics["score"] == 0.6
    assert gates.rollback(e, "default") == v0
    assert gates.get_version(e, v1).status == "retired" and gates.current_version(e, "default").id == v0
    with pytest.raises(ValueError):
        gates.gate(e, v2, evaluate, load=load)


def test_cli_train_trigger_list_and_rollback(store, tmp_path, capsys):
    from skillmem.cli import main

    mem, _ = store
    db = mem.url.split("///", 1)[1]
    common = ["--db", db, "train", "--steps", "20", "--batch-size", "8", "--heldout-fraction", "0"]
    assert main(common + ["--every-episodes", "100", "--every-lessons", "100"]) == 0
    assert "not yet" in capsys.readouterr().out
    assert main(common + ["--every-episodes", "3", "--out", str(tmp_path / "r1")]) == 0
    out = capsys.readouterr().out
    assert "promoted" in out or "rejected" in out
    assert (tmp_path / "r1" / "policy" / "train_config.json").exists()
    assert not should_train(mem.engine, "default", TrainConfig(every_episodes=3, every_lessons=1))[0]
    assert main(["--db", db, "policy", "list"]) == 0
    assert "cpu" in capsys.readouterr().out
    if gates.current_version(mem.engine, "default"):
        assert main(["--db", db, "policy", "rollback"]) == 0
        assert "untrained default" in capsys.readouterr().out
    assert main(["--db", db, "policy", "rollback"]) == 1


def test_train_graph_collects_trains_and_gates(store, tmp_path):
    from graphs.train import graph

    mem, _ = store
    db = mem.url.split("///", 1)[1]
    state = graph.invoke({"db": db, "namespace": "default", "out_dir": str(tmp_path / "g1"), "force": True,
                          "train_config": {"steps": 10, "batch_size": 8}},
                         config={"configurable": {"evaluate": lambda policy: 1.0}})
    assert state["status"] == "promoted" and state["scores"]["candidate"] == 1.0
    state = graph.invoke({"db": db, "namespace": "default", "out_dir": str(tmp_path / "g2"), "force": True,
                          "train_config": {"steps": 10, "batch_size": 8}},
                         config={"configurable": {"evaluate": lambda policy: 1.0}})
    assert state["status"] == "promoted" and state["scores"]["current"] == 1.0  # ties promote
    skipped = graph.invoke({"db": db, "namespace": "default", "out_dir": str(tmp_path / "g3"),
                            "train_config": {"every_episodes": 1000, "every_lessons": 1000}})
    assert skipped["status"] == "skipped"


def test_one_training_round_registers_gates_and_says_why(store, tmp_path):
    from skillmem.train.round import train_round

    mem, _ = store
    e = mem.engine
    cfg = TrainConfig(steps=10, batch_size=8, every_episodes=1000, every_lessons=1000)
    skipped = train_round(e, "default", tmp_path / "r0", cfg)
    assert skipped.status == "skipped" and "--force" in skipped.reason and skipped.version_id is None
    assert train_round(e, "empty", tmp_path / "r0", cfg, force=True).status == "no_examples"

    cand = train_round(e, "default", tmp_path / "r1", cfg, force=True, gate=False)
    row = gates.get_version(e, cand.version_id)
    assert cand.status == "candidate" and row.status == "candidate" and row.parent_id is None
    assert row.metrics["train"]["examples"] == cand.examples > 0 and row.metrics["data"] == cand.counts
    assert row.config == TrainConfig.load(cand.train.path / "train_config.json").__dict__

    # First promoted version: compared with the policy as it was before training (saved beside the run).
    first = train_round(e, "default", tmp_path / "r2", cfg, force=True, evaluate=lambda p: 1.0)
    assert first.promoted and first.decision.current_score == 1.0 and (tmp_path / "r2" / "baseline").exists()
    # The next round starts from it, is its child, and loses to it here.
    scores = iter([0.0, 1.0])
    second = train_round(e, "default", tmp_path / "r3", cfg, force=True, evaluate=lambda p: next(scores))
    assert second.status == "rejected" and second.decision.current_id == first.version_id
    assert gates.get_version(e, second.version_id).parent_id == first.version_id
    assert gates.current_version(e, "default").id == first.version_id


def test_rejecting_a_candidate_is_the_gate_modules_job(store, tmp_path):
    from pathlib import Path

    mem, _ = store
    vid = gates.register(mem.engine, "default", tmp_path / "p", kind="cpu")
    gates.reject(mem.engine, vid, "training stopped: nan")
    row = gates.get_version(mem.engine, vid)
    assert row.status == "rejected" and row.metrics["rejected_because"] == "training stopped: nan"
    with pytest.raises(ValueError, match="not a candidate"):
        gates.reject(mem.engine, vid, "again")
    root = Path(__file__).resolve().parent.parent
    callers = [p for d in ("skillmem", "graphs", "eval") for p in (root / d).rglob("*.py")
               if "gates._set" in p.read_text() or "gate._set" in p.read_text()]
    assert callers == []
