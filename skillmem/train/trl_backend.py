"""Chat models trained on what memory learned, through TRL: SFT, then DPO or KTO, with LoRA (peft).

The data is `skillmem export`'s (demonstrations and corrections for SFT, pairs at pivots for
DPO, unpaired good and bad steps for KTO), rendered by the model's own chat template, with
actions as tool calls when the template can show them. The result is an `HFChatPolicy`
(a LoRA adapter over the user's base model) that goes through the same eval gate and
version registry as the CPU policy (:class:`TRLBackend`, a backend of `train_round`).

    result = train_chat(records, TRLConfig(base_model="models/qwen2.5-0.5b-instruct"), "runs/trl")
    policy = load_policy(result.path)

On a GPU it trains in bfloat16 (when the GPU has it) and, if asked, with gradient checkpointing;
on a CPU in float32. Several GPUs: start it under ``accelerate launch -m skillmem.cli train
--policy trl ...``; TRL's trainers take the processes from accelerate.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from .export import ExportConfig, Records, export_records, to_datasets


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class TRLConfig:
    """Every knob of a chat-model training run; saved as trl_config.json next to the adapter."""

    base_model: str = _f("", "local transformers directory of the chat model (config, weights, tokenizer)")
    objective: str = _f("dpo", "after SFT: dpo (pairs at pivots), kto (unpaired good/bad steps) or sft (SFT only)")
    sft_steps: int = _f(60, "optimizer steps of SFT on demonstrations and corrections")
    pref_steps: int = _f(60, "optimizer steps of DPO or KTO")
    lr: float = _f(2e-4, "learning rate of both stages (LoRA)")
    batch_size: int = _f(4, "examples per device and step")
    grad_accum: int = _f(1, "gradient accumulation steps")
    beta: float = _f(0.1, "DPO/KTO: strength of the pull toward the SFT model")
    max_length: int = _f(2048, "tokens per example, at most (prompts are cut from the left)")
    max_history: int = _f(8, "past steps rendered into each prompt")
    lora_r: int = _f(16, "LoRA rank")
    lora_alpha: int = _f(32, "LoRA alpha")
    lora_dropout: float = _f(0.0, "LoRA dropout")
    target_modules: str = _f("all-linear", "peft target modules ('all-linear': every linear layer but the head)")
    tools: Optional[bool] = _f(None, "actions as tool calls (None: when the chat template renders them)")
    device: str = _f("auto", "auto (CUDA when present, else CPU), cpu, cuda, cuda:1 ...")
    dtype: str = _f("auto", "auto (bfloat16 on a GPU that has it, float32 otherwise), float32, bfloat16")
    gradient_checkpointing: bool = _f(False, "recompute activations to save GPU memory")
    seed: int = _f(0, "seed of LoRA init and data order")

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))


@dataclass
class ChatTrainResult:
    """What a chat training run did: per-stage losses (first and last logged), where the policy is."""

    status: str  # finished | nan | no-data
    path: Optional[Path]
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    tools: bool = False


def _args(cls: Any, cfg: TRLConfig, out: Path, steps: int, **extra: Any) -> Any:
    """A TRL config object for one stage, with the device choices and no side effects (no saves, no reports)."""
    from .. policy.hf import resolve_device, resolve_dtype

    dev = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, dev)
    known = {f.name for f in fields(cls)}
    kw = dict(output_dir=str(out), max_steps=steps, per_device_train_batch_size=cfg.batch_size,
              gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.lr, logging_steps=1,
              save_strategy="no", report_to=[], seed=cfg.seed, data_seed=cfg.seed, use_cpu=dev.type == "cpu",
              bf16=dtype == torch.bfloat16, max_length=cfg.max_length, lr_scheduler_type="constant", warmup_steps=0,
              dataloader_pin_memory=dev.type == "cuda", disable_tqdm=True, **extra)
    if cfg.gradient_checkpointing:  # transformers 5 renamed it; older versions know only the first name
        name = "activation_checkpointing" if "activation_checkpointing" in known else "gradient_checkpointing"
        kw[name] = True
        kw[f"{name}_kwargs"] = {"use_reentrant": False}
    return cls(**{k: v for k, v in kw.items() if k in known})


def _losses(trainer: Any) -> dict[str, Any]:
    logs = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"steps": trainer.state.global_step, "first_loss": logs[0] if logs else None,
            "last_loss": logs[-1] if logs else None, "losses": logs}


def train_chat(records: Records, config: TRLConfig, out_dir: str | Path, *, tokenizer: Any = None) -> ChatTrainResult:
    """SFT on `records.sft`, then DPO on `records.preference` or KTO on `records.kto`; saves out_dir/policy/."""
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer, SFTConfig, SFTTrainer

    from ..policy.hf import load_causal_lm
    from ..policy.hf_chat import HFChatConfig, HFChatPolicy

    cfg = config
    if cfg.objective not in ("dpo", "kto", "sft"):
        raise ValueError(f"objective must be dpo, kto or sft, got {cfg.objective!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tok = tokenizer or AutoTokenizer.from_pretrained(cfg.base_model, local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # padding is masked out; the trainers only need an id
    ds = to_datasets(records)
    if "sft" not in ds:
        return ChatTrainResult("no-data", None, seconds=time.perf_counter() - t0, tools=records.config.tools)
    torch.manual_seed(cfg.seed)
    model = load_causal_lm(cfg.base_model, device=cfg.device, dtype=cfg.dtype,
                           gradient_checkpointing=cfg.gradient_checkpointing)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules, task_type="CAUSAL_LM")
    stages: dict[str, dict[str, Any]] = {}
    sft = SFTTrainer(model=model, args=_args(SFTConfig, cfg, out / "sft", cfg.sft_steps, completion_only_loss=True),
                     train_dataset=ds["sft"], processing_class=tok, peft_config=lora)
    sft.train()
    stages["sft"] = {**_losses(sft), "examples": len(ds["sft"])}
    model = sft.model
    status = "finished"
    if cfg.objective == "dpo" and "preference" in ds and cfg.pref_steps > 0:
        dpo = DPOTrainer(model=model, args=_args(DPOConfig, cfg, out / "dpo", cfg.pref_steps, beta=cfg.beta),
                         train_dataset=ds["preference"], processing_class=tok)
        dpo.train()
        stages["dpo"] = {**_losses(dpo), "examples": len(ds["preference"])}
        model = dpo.model
    elif cfg.objective == "kto" and "kto" in ds and cfg.pref_steps > 0:
        labels = ds["kto"]["label"]
        if all(labels) or not any(labels):
            raise ValueError("KTO needs both good and bad steps; the export has only "
                             f"{'good' if all(labels) else 'bad'} ones: use --objective dpo or sft")
        # KTO's paper keeps desirable_weight * n_good / (undesirable_weight * n_bad) in [1, 4/3]:
        # with far more good steps than bad ones (every demonstrated step is good), weigh them down.
        good, bad = sum(labels), len(labels) - sum(labels)
        weight = min(1.0, 1.15 * bad / good)
        kto = KTOTrainer(model=model, args=_args(KTOConfig, cfg, out / "kto", cfg.pref_steps, beta=cfg.beta,
                                                 desirable_weight=weight),
                         train_dataset=ds["kto"], processing_class=tok)
        kto.train()
        stages["kto"] = {**_losses(kto), "examples": len(ds["kto"])}
        model = kto.model
    elif cfg.objective != "sft":
        stages[cfg.objective] = {"steps": 0, "skipped": f"the export has no {cfg.objective} examples"}
    for st in stages.values():
        if any(not math.isfinite(x) for x in st.get("losses", [])):
            status = "nan"
    if hasattr(model, "set_adapter"):
        model.set_adapter("default")
    policy = HFChatPolicy(HFChatConfig(base_model=cfg.base_model, tools=records.config.tools,
                                       max_history=cfg.max_history, dtype=cfg.dtype, device=cfg.device),
                          model=model, tokenizer=tok)
    path = out / "policy"
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path / "adapter"), selected_adapters=["default"])
    (path / "policy.json").write_text(json.dumps({"kind": policy.kind, "config": asdict(policy.config)}, indent=1))
    cfg.save(path / "trl_config.json")
    seconds = time.perf_counter() - t0
    (path / "train_result.json").write_text(json.dumps({"status": status, "stages": stages, "seconds": seconds,
                                                        "tools": records.config.tools}, indent=1))
    return ChatTrainResult(status, path, stages, seconds, records.config.tools)


def chat_tools(config: TRLConfig, tokenizer: Any = None) -> bool:
    """Whether this run's actions are tool calls: as configured, else whether the template renders them."""
    if config.tools is not None:
        return config.tools
    from transformers import AutoTokenizer

    from ..policy.hf_chat import template_renders_tool_calls

    tok = tokenizer or AutoTokenizer.from_pretrained(config.base_model, local_files_only=True)
    return template_renders_tool_calls(tok)


class TRLBackend:
    """Chat models as a backend of :func:`~skillmem.train.round.train_round`: export, SFT, then DPO or KTO.

    Each round trains a fresh LoRA adapter over `config.base_model` on all the examples the
    store holds (not on top of the previous adapter), so a version is reproducible from its data.
    The gate is the round's (held-out decisions: the share where the policy picks the
    demonstrated or corrected action, minus the share where it repeats a pivot's bad action);
    a first chat model is compared with the untrained base model.

        r = train_round(engine, "default", "runs/c1", TrainConfig(), backend=TRLBackend(TRLConfig(base_model=d)))
    """

    kind = "hf-chat"

    def __init__(self, config: TRLConfig):
        if not config.base_model:
            raise ValueError("TRLBackend needs TRLConfig.base_model: a local transformers chat model directory "
                             "(convert a GGUF with skillmem.policy.hf.from_gguf)")
        self.config = config

    def collect(self, engine: Any, namespace: str) -> list[Any]:
        from .data import collect_examples

        # Whole histories and every admissible action: the export renders and cuts them itself.
        return collect_examples(engine, namespace, max_history=1_000_000, max_candidates=0, distill=False,
                                seed=self.config.seed)

    def start(self, current: Any, out: Path, baseline: bool) -> Any:
        if self.config.tools is None:  # fixed for the run, so the baseline reads what the candidate reads
            self.config.tools = chat_tools(self.config)
        if not baseline:
            return None
        from ..policy.hf_chat import HFChatConfig, HFChatPolicy

        c = self.config
        return lambda load: HFChatPolicy(HFChatConfig(base_model=c.base_model, tools=c.tools,
                                                      max_history=c.max_history, dtype=c.dtype, device=c.device))

    def train(self, engine: Any, namespace: str, examples: Sequence[Any], out: Path) -> Any:
        from .trainer import TrainResult

        c = self.config
        records = export_records(engine, namespace, ExportConfig(tools=bool(c.tools), max_history=c.max_history),
                                 examples=examples)
        r = train_chat(records, c, out)
        if r.path is None:
            return TrainResult("no_examples", 0, 0, float("nan"), {}, 0.0, r.seconds, None,
                               reason="no SFT examples among the training examples: record a successful episode "
                                      "or give a correction (skillmem feedback) first")
        last = [st["last_loss"] for st in r.stages.values() if st.get("last_loss") is not None]
        steps = sum(st.get("steps", 0) for st in r.stages.values())
        return TrainResult(r.status, steps, 0, last[-1] if last else float("nan"),
                           {k: st["last_loss"] for k, st in r.stages.items() if st.get("last_loss") is not None},
                           steps * c.batch_size * c.grad_accum / r.seconds if r.seconds else 0.0, r.seconds, r.path,
                           stages=r.stages)

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)
