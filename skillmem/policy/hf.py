"""Any Hugging Face causal LM as a policy, trained with LoRA (peft).

An action's log-probability is the sum of its tokens' log-probabilities after the
prompt. Weights come from a local directory only (no downloads); a GGUF file is
converted once to a plain safetensors copy with :func:`from_gguf` (training needs
dequantized weights).

    policy = HFPolicy(HFPolicyConfig(base_model="runs/gemma-270m"))
    policy.act(goal, history, context, admissible)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from .base import HistoryItem, Prompt, make_prompt


@dataclass
class HFPolicyConfig:
    """Knobs of the LM policy; saved next to its LoRA adapter."""

    base_model: str = ""  # a local directory with config, weights and tokenizer
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: Any = "all-linear"  # peft's shorthand: every linear layer but the output head
    max_prompt_tokens: int = 384  # the prompt is cut from the left to fit
    max_history: int = 6  # recent steps rendered into the prompt
    use_text: bool = True
    use_hints: bool = True
    dtype: str = "auto"  # auto: bfloat16 on a GPU that has it, float32 otherwise; or any torch dtype name
    device: str = "auto"  # auto: cuda when there is one, cpu otherwise; or "cuda:1", "cpu", ...
    gradient_checkpointing: bool = False  # trade compute for memory when training a larger model on a GPU


def resolve_device(device: str = "auto") -> torch.device:
    """The device to place a model on: CUDA when asked for "auto" and there is one, the CPU otherwise."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = torch.device(device)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but torch sees no CUDA GPU; use device='auto' or 'cpu'")
    return d


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """bfloat16 on a GPU that supports it for "auto", float32 elsewhere (CPU training in bf16 is slow and lossy)."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}: use auto, float32, bfloat16 or float16")
    return getattr(torch, dtype)


def load_causal_lm(path: str | Path, *, device: str = "auto", dtype: str = "auto",
                   gradient_checkpointing: bool = False) -> Any:
    """A local transformers causal LM on the user's device, in the dtype that suits it."""
    from transformers import AutoModelForCausalLM

    dev = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=resolve_dtype(dtype, dev))
    model.to(dev)
    if gradient_checkpointing:
        # transformers 5 renamed it; older versions know only the first name
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        try:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        except TypeError:
            enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()  # LoRA leaves the embeddings frozen; checkpointing needs a grad path
    return model


def render_prompt(p: Prompt, max_history: int = 6) -> str:
    """The text an LM reads: goal, memory (text, then hints as words), recent steps, then the cue."""
    lines = [f"Goal: {p.goal}"]
    if p.memory:
        lines.append(f"Memory: {p.memory}")
    if p.hints:
        good = [a for a, v in p.hints.bonus.items() if v > 0]
        bad = [a for a, v in p.hints.bonus.items() if v < 0]
        if good:
            lines.append("Memory suggests: " + "; ".join(good))
        if bad:
            lines.append("Memory warns against: " + "; ".join(bad))
    for a, o in p.history[-max_history:]:
        lines.append(f"> {a}\n{o}" if a else o)
    lines.append("Next action:")
    return "\n".join(lines)


class HFPolicy:
    """A causal LM with a LoRA adapter; scores candidate actions by summed token log-probs."""

    kind = "hf"

    def __init__(self, config: HFPolicyConfig, *, adapter: Optional[str | Path] = None):
        from peft import LoraConfig, PeftModel, get_peft_model
        from transformers import AutoTokenizer

        if not config.base_model or not Path(config.base_model).exists():
            raise FileNotFoundError(
                f"HFPolicy needs a local model directory, got {config.base_model!r}; "
                "convert a GGUF with skillmem.policy.hf.from_gguf() or save a model with save_pretrained()")
        self.config = config
        self.tokenizer = AutoTokenizer.from_pretrained(config.base_model, local_files_only=True)
        base = load_causal_lm(config.base_model, device=config.device, dtype=config.dtype,
                              gradient_checkpointing=config.gradient_checkpointing)
        self.device = base.device
        if adapter is not None:
            self.model = PeftModel.from_pretrained(base, str(adapter), is_trainable=True)
        else:
            lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                              target_modules=config.target_modules, task_type="CAUSAL_LM")
            self.model = get_peft_model(base, lora)
        self.model.eval()  # no dropout at scoring time; the trainer switches train() on

    # nn.Module-like surface the trainer uses
    def parameters(self) -> Any:
        return (p for p in self.model.parameters() if p.requires_grad)

    def state_dict(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.model).items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.model, state)

    def train(self, mode: bool = True) -> "HFPolicy":
        self.model.train(mode)
        return self

    def eval(self) -> "HFPolicy":
        return self.train(False)

    # ----------------------------------------------------------------- scoring

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _prompt_ids(self, prompt: Prompt) -> list[int]:
        tok = self.tokenizer
        ids = self._ids(render_prompt(prompt, self.config.max_history))
        if tok.bos_token_id is not None:
            ids = [tok.bos_token_id] + ids
        return ids[-self.config.max_prompt_tokens:]

    def _action_ids(self, action: str) -> list[int]:
        eos = self.tokenizer.eos_token_id
        return self._ids(" " + action) + ([eos] if eos is not None else [])

    def _score(self, rows: list[tuple[list[int], list[int], int]]) -> torch.Tensor:
        """Summed log-probs of each row's action tokens after its prompt, skipping the first
        `skip` action tokens; all rows in one padded forward pass."""
        L = max(len(p) + len(c) for p, c, _ in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), L), pad, dtype=torch.long)
        attn = torch.zeros_like(input_ids)
        keep = torch.zeros(len(rows), L, dtype=torch.bool)  # positions whose token counts
        for i, (p, c, skip) in enumerate(rows):
            n = len(p) + len(c)
            input_ids[i, :n] = torch.tensor(p + c)
            attn[i, :n] = 1
            keep[i, len(p) + skip: n] = True
        input_ids, attn, keep = input_ids.to(self.device), attn.to(self.device), keep.to(self.device)
        logits = self.model(input_ids=input_ids, attention_mask=attn).logits.float()
        # token t is predicted by position t-1
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        # Scores go back to the CPU (autograd follows): the trainer's labels and objectives live there.
        return (logp * keep[:, 1:]).sum(-1).cpu()

    def _rows(self, prompt: Prompt, candidates: Sequence[str],
              exclude_prefix: Optional[Sequence[Optional[str]]]) -> list[tuple[list[int], list[int], int]]:
        p_ids = self._prompt_ids(prompt)
        rows = []
        for i, cand in enumerate(candidates):
            c = self._action_ids(cand)
            skip = 0
            if exclude_prefix is not None and exclude_prefix[i]:
                other = self._action_ids(exclude_prefix[i])
                while skip < min(len(c), len(other)) and c[skip] == other[skip]:
                    skip += 1
            rows.append((p_ids, c, skip))
        return rows

    def action_logprobs(self, prompt: Prompt, candidates: Sequence[str], *,
                        exclude_prefix: Optional[Sequence[Optional[str]]] = None) -> torch.Tensor:
        """Summed token log-probs of each candidate after the prompt, shape [C].

        `exclude_prefix[i]`, when given, is another action whose shared leading tokens with
        candidate i are left out of its sum: negative reinforcement on "refund(order_id='A',
        amount=9)" must not push down "refund(order_id='A', ", which the right action shares.
        """
        return self._score(self._rows(prompt, candidates, exclude_prefix))

    def batch_logprobs(self, prompts: Sequence[Prompt], candidates: Sequence[Sequence[str]], *,
                       exclude_prefix: Optional[Sequence[Optional[Sequence[Optional[str]]]]] = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, C_max] summed log-probs (0 where padded) and the mask of real candidates, in one forward."""
        rows: list[tuple[list[int], list[int], int]] = []
        for b, (p, cands) in enumerate(zip(prompts, candidates)):
            rows += self._rows(p, cands, exclude_prefix[b] if exclude_prefix is not None else None)
        flat = self._score(rows)
        sizes = [len(c) for c in candidates]
        mask = torch.arange(max(sizes))[None, :] < torch.tensor(sizes)[:, None]
        out = torch.zeros(len(sizes), max(sizes), dtype=flat.dtype).masked_scatter(mask, flat)
        return out, mask

    def act(self, goal: str, history: Sequence[HistoryItem], context: Any, admissible: Sequence[str]) -> str:
        if not admissible:
            raise ValueError("act() needs at least one admissible action")
        prompt = make_prompt(goal, history, context, admissible, use_text=self.config.use_text,
                             use_hints=self.config.use_hints, domain=getattr(self, "domain", None))
        with torch.no_grad():
            scores = self.action_logprobs(prompt, admissible)
        return admissible[int(torch.argmax(scores))]

    # ----------------------------------------------------------------- persistence

    def save(self, path: str | Path) -> Path:
        """The LoRA adapter and the config into directory `path` (the base model stays where it is)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(path / "adapter"))
        (path / "policy.json").write_text(json.dumps({"kind": self.kind, "config": asdict(self.config)}, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "HFPolicy":
        path = Path(path)
        meta = json.loads((path / "policy.json").read_text())
        return cls(HFPolicyConfig(**meta["config"]), adapter=path / "adapter")


# --------------------------------------------------------------------------- model files


def from_gguf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Dequantize a GGUF model once into a plain transformers directory (safetensors) for training."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    kw = dict(gguf_file=gguf_path.name, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), **kw)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), dtype=torch.float32, **kw)
    # transformers dequantizes GGUF on load; the quantizer left attached is only a marker
    # that makes save_pretrained refuse. The weights are plain float32 tensors by now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tok.save_pretrained(str(out_dir))
    return out_dir


def make_tiny_lm(out_dir: str | Path, words: Sequence[str], *, layers: int = 2, hidden: int = 32,
                 seed: int = 0) -> Path:
    """A randomly initialized 2-layer Llama with a word-level tokenizer over `words`, saved
    to `out_dir`: the LM code path, exercised in seconds and without any download."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    vocab = {t: i for i, t in enumerate(specials)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>",
                                  bos_token="<s>", eos_token="</s>")
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                      max_position_embeddings=1024, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    LlamaForCausalLM(cfg).save_pretrained(str(out_dir), safe_serialization=True)
    tok.save_pretrained(str(out_dir))
    return out_dir
