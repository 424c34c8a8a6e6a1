"""Chat models trained on exported memory through TRL (SFT, then DPO or KTO, LoRA), on a tiny random chat model.

The model is built here, offline: a 2-layer Llama, a byte-level BPE tokenizer trained on the
test's own words and a ChatML template that renders tool calls. The slow test on SmolLM2-135M
(test_trl_smollm2.py) shows the numbers move on a real chat model; this one shows every path runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from skillmem import SkillMemory
from skillmem.embed import HashingEmbedder
from skillmem.episode import LessonBase
from skillmem.policy import load_policy
from skillmem.policy.base import Prompt

pytest.importorskip("trl", reason="the trl extra: pip install -e '.[trl]'")

from test_export import ADM, BAD, GOAL, GOOD  # the same heat-task episodes the export tests record

ROOT = Path(__file__).resolve().parents[1]


def fill_store(mem: SkillMemory, tasks: int = 3) -> None:
    """Per task: a success, a failure with a lesson at its pivot, a failure corrected at its pivot."""
    for t in range(tasks):
        for actions, won in ((GOOD, True), (BAD, False), (BAD, False)):
            with mem.episode(task=GOAL, task_type="pick_heat_then_place_in_recep", task_id=f"t{t}", split="train") as ep:
                for a in actions:
                    ep.step(observation="", action=a, feedback="Nothing happens." if "with fridge" in a else f"You did: {a}.",
                            admissible=ADM)
                ep.finish(success=won, source="environment")
            if not won:
                last = ep.id
        mem.feedback(last, 2, corrected_action="go to microwave 1", source="teacher")
        mem.add_lesson(LessonBase(task_type="pick_heat_then_place_in_recep", trigger=f"heating an object {t}",
                                  bad_action="heat [object] with fridge 1", fix="heat [object] with microwave 1",
                                  pivot_step=3, source_episodes=[last]))


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory):
    from skillmem.policy.hf_chat import make_tiny_chat_lm

    corpus = ADM + [GOAL, "You did: Nothing happens. heating an object earlier steps are not shown"]
    return make_tiny_chat_lm(tmp_path_factory.mktemp("chat") / "tiny", corpus)


@pytest.fixture
def store(tmp_path):
    mem = SkillMemory(str(tmp_path / "s.db"), embedder=HashingEmbedder(), index_dir=tmp_path / "idx")
    fill_store(mem)
    yield mem
    mem.close()


def fast(base, **kw):
    from skillmem.train.trl_backend import TRLConfig

    return TRLConfig(base_model=str(base), sft_steps=3, pref_steps=3, batch_size=2, lr=1e-3, lora_r=4,
                     max_length=768, **kw)


def test_sft_then_dpo_saves_a_chat_policy(tiny_chat, store, tmp_path):
    from skillmem.policy.hf_chat import HFChatPolicy
    from skillmem.train.export import export_records
    from skillmem.train.trl_backend import train_chat

    records = export_records(store.engine, "default")
    assert records.preference and records.sft
    result = train_chat(records, fast(tiny_chat), tmp_path / "run")
    assert result.status == "finished" and result.tools
    assert result.stages["sft"]["steps"] == 3 and result.stages["dpo"]["steps"] == 3
    assert all(torch.isfinite(torch.tensor(v["losses"])).all() for v in result.stages.values())
    policy = load_policy(result.path)
    assert isinstance(policy, HFChatPolicy) and (result.path / "adapter" / "adapter_config.json").exists()
    assert policy.act(GOAL, [(GOOD[0], "You did.")], None, ADM) in ADM
    lp = policy.action_logprobs(Prompt(GOAL, [(GOOD[0], "You did.")]), ADM[:3])
    assert lp.shape == (3,) and bool((lp < 0).all())
    saved = json.loads((result.path / "train_result.json").read_text())
    assert saved["stages"]["dpo"]["examples"] == len(records.preference)


def test_kto_and_text_actions(tiny_chat, store, tmp_path):
    from skillmem.train.export import ExportConfig, export_records
    from skillmem.train.trl_backend import train_chat

    records = export_records(store.engine, "default", ExportConfig(tools=False))
    cfg = fast(tiny_chat, objective="kto", tools=False)
    cfg.sft_steps, cfg.pref_steps = 1, 2
    result = train_chat(records, cfg, tmp_path / "kto")
    assert result.status == "finished" and not result.tools and result.stages["kto"]["steps"] == 2
    policy = load_policy(result.path)
    assert policy.tools is False and policy.act(GOAL, [], None, ADM) in ADM


def test_trl_is_a_backend_of_the_training_round(tiny_chat, store, tmp_path):
    """The same round as the CPU policy's: trigger, held-out split, register, gate, parent for rollback."""
    from skillmem.train import TrainConfig, gate as gates, train_round
    from skillmem.train.trl_backend import TRLBackend

    cfg = TrainConfig(heldout_fraction=0.34)
    assert train_round(store.engine, "default", tmp_path / "r0", TrainConfig(every_episodes=1000, every_lessons=1000),
                       backend=TRLBackend(fast(tiny_chat))).status == "skipped"
    first = train_round(store.engine, "default", tmp_path / "r1", cfg, backend=TRLBackend(fast(tiny_chat)), force=True)
    assert first.status in ("promoted", "rejected") and first.heldout > 0 and first.examples > 0
    assert first.decision.current_id is None and first.decision.current_score is not None  # against the base model
    assert set(first.train.stages) == {"sft", "dpo"} and first.train.steps == 6
    row = gates.get_version(store.engine, first.version_id)
    assert row.kind == "hf-chat" and row.config["base_model"] == str(tiny_chat) and row.config["tools"] is True
    assert row.metrics["train"]["stages"]["dpo"]["steps"] == 3 and row.metrics["data"]["episodes"] == 9
    policy = load_policy(row.path)
    assert policy.kind == "hf-chat" and policy.act(GOAL, [], None, ADM) in ADM
    quick = fast(tiny_chat)
    quick.sft_steps, quick.pref_steps = 1, 0
    second = train_round(store.engine, "default", tmp_path / "r2", cfg, backend=TRLBackend(quick), force=True,
                         gate=False)
    current = gates.current_version(store.engine, "default")
    assert second.status == "candidate"
    assert gates.get_version(store.engine, second.version_id).parent_id == (current.id if current else None)
    with pytest.raises(ValueError, match="base_model"):
        TRLBackend(fast(""))


def test_trl_round_without_sft_examples_says_so(tiny_chat, tmp_path):
    from skillmem.train import TrainConfig, train_round
    from skillmem.train.trl_backend import TRLBackend

    mem = SkillMemory(str(tmp_path / "f.db"), embedder=HashingEmbedder(), index_dir=tmp_path / "idx")
    for t in range(2):  # failures only: pivots to push away from, nothing to imitate
        with mem.episode(task=GOAL, task_type="heat", task_id=f"t{t}", split="train") as ep:
            for a in BAD:
                ep.step(observation="", action=a, feedback="Nothing happens.", admissible=ADM)
            ep.finish(success=False, source="environment")
        mem.add_lesson(LessonBase(task_type="heat", trigger=f"heating {t}", bad_action="heat [object] with fridge 1",
                                  fix="heat [object] with microwave 1", pivot_step=3, source_episodes=[ep.id]))
    r = train_round(mem.engine, "default", tmp_path / "r", TrainConfig(heldout_fraction=0.0),
                    backend=TRLBackend(fast(tiny_chat)), force=True)
    mem.close()
    assert r.status == "no_examples" and "no SFT examples" in r.reason and r.version_id is None


@pytest.mark.slow  # a fresh interpreter importing torch, transformers and TRL, then two trainings
@pytest.mark.timeout(1800)  # its subprocesses may take 900 + 300 + 300 s
def test_cli_train_trl_registers_and_gates(tiny_chat, store, tmp_path):
    db = str(store.engine.url.database)
    args = [sys.executable, "-m", "skillmem.cli", "--db", db, "train", "--policy", "trl", "--base-model",
            str(tiny_chat), "--force", "--sft-steps", "2", "--pref-steps", "2", "--batch-size", "2",
            "--lora-r", "4", "--out", str(tmp_path / "cli-run")]
    r = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "sft 2 steps" in r.stdout and "dpo 2 steps" in r.stdout and "held-out score" in r.stdout
    r = subprocess.run([sys.executable, "-m", "skillmem.cli", "--db", db, "policy", "list", "--format", "json"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    [version] = json.loads(r.stdout)
    assert version["kind"] == "hf-chat" and version["status"] in ("promoted", "rejected")
    r = subprocess.run([sys.executable, "-m", "skillmem.cli", "--db", db, "train", "--policy", "trl", "--force"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and "--base-model" in r.stderr


def test_devices_and_templates(tiny_chat):
    from transformers import AutoTokenizer

    from skillmem.policy.hf import resolve_device, resolve_dtype
    from skillmem.policy.hf_chat import template_renders_tool_calls

    dev = resolve_device("auto")
    assert dev.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("float13", dev)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            resolve_device("cuda")
    tok = AutoTokenizer.from_pretrained(str(tiny_chat))
    assert template_renders_tool_calls(tok)
    tok.chat_template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"  # drops tool calls
    assert not template_renders_tool_calls(tok)
