"""Trainer throughput: skillmem's Trainer against Hugging Face `Trainer`, same tiny LM, same data.

    python -m eval.bench.trainer [--examples 256] [--steps 30] [--batch-size 8]

Both train the same LoRA adapter on a randomly initialized 2-layer Llama (word-level
tokenizer, built offline) with SFT on (prompt, action) pairs: skillmem through
`HFPolicy.action_logprobs` (the demonstration objective, one candidate per example),
HF through `Trainer` with prompt tokens masked out of the labels. Prints a JSON object
last: examples/s of each and their ratio (skillmem / HF; > 1 means skillmem is faster).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import torch

OBJECTS = ["apple", "mug", "egg", "knife", "potato", "cup", "book", "pen"]
PLACES = ["fridge", "microwave", "countertop", "cabinet", "drawer", "sinkbasin", "shelf", "desk"]


def make_examples(n: int, seed: int = 0) -> list:
    from skillmem.train.data import Example

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        o, p, q = rng.choice(OBJECTS), rng.choice(PLACES), rng.choice(PLACES)
        goal = f"put some {o} in {q} ."
        hist = [(f"go to {p} 1", f"On the {p} 1 , you see a {o} 1 .")]
        target = rng.choice([f"take {o} 1 from {p} 1", f"go to {q} 1", f"move {o} 1 to {q} 1"])
        out.append(Example(kind="demo", goal=goal, history=hist, candidates=[target], target=target))
    return out


def vocab() -> list[str]:
    words = {"put", "some", "in", "go", "to", "take", "from", "move", "On", "the", "you", "see", "a", ",", ".", "1",
             "Goal", ":", "Next", "action", ">"}
    return sorted(words | set(OBJECTS) | set(PLACES))


def bench_skillmem(model_dir: Path, examples: list, steps: int, bs: int, out: Path) -> float:
    from skillmem.policy.hf import HFPolicy, HFPolicyConfig
    from skillmem.train.trainer import Trainer, TrainConfig

    policy = HFPolicy(HFPolicyConfig(base_model=str(model_dir)))
    cfg = TrainConfig(steps=steps, batch_size=bs, lr=1e-3, checkpoint_every=0, positive_amplification=1.0)
    trainer = Trainer(policy, examples, cfg, out)
    t0 = time.perf_counter()
    trainer.train()
    return steps * bs / (time.perf_counter() - t0)


def bench_hf(model_dir: Path, examples: list, steps: int, bs: int, out: Path) -> float:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from skillmem.policy.hf import render_prompt

    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True),
                           LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    rows = []
    for e in examples:
        p = [tok.bos_token_id] + tok(render_prompt(e.prompt(False)), add_special_tokens=False)["input_ids"]
        c = tok(" " + e.target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append({"input_ids": p + c, "labels": [-100] * len(p) + c})

    def collate(batch: Sequence[dict]) -> dict[str, torch.Tensor]:
        L = max(len(r["input_ids"]) for r in batch)
        ids = torch.full((len(batch), L), tok.pad_token_id)
        labels = torch.full((len(batch), L), -100)
        attn = torch.zeros((len(batch), L), dtype=torch.long)
        for i, r in enumerate(batch):
            n = len(r["input_ids"])
            ids[i, :n], labels[i, :n], attn[i, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
        return {"input_ids": ids, "labels": labels, "attention_mask": attn}

    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=bs, max_steps=steps, learning_rate=1e-3,
                             logging_strategy="no", save_strategy="no", report_to=[], use_cpu=True,
                             dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate)
    t0 = time.perf_counter()
    trainer.train()
    return steps * bs / (time.perf_counter() - t0)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=256)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=8)
    a = ap.parse_args(argv)
    from skillmem.policy.hf import make_tiny_lm

    examples = make_examples(a.examples)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_tiny_lm(Path(tmp) / "lm", vocab())
        ours = bench_skillmem(model_dir, examples, a.steps, a.batch_size, Path(tmp) / "ours")
        hf = bench_hf(model_dir, examples, a.steps, a.batch_size, Path(tmp) / "hf")
    result = {"bench": "trainer", "model": "tiny llama 2x32 + LoRA r8", "examples": a.examples, "steps": a.steps,
              "batch_size": a.batch_size, "skillmem_examples_per_s": round(ours, 1),
              "hf_trainer_examples_per_s": round(hf, 1), "ratio": round(ours / hf, 3),
              "torch_threads": torch.get_num_threads(), "machine": platform.machine()}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
