"""A Hugging Face chat model as a policy: it reads the decision through its own chat template.

The prompt is `skillmem.policy.chat.chat_messages` (what the OpenAI-compatible policy sends and
what `skillmem export` writes), rendered by the tokenizer's chat template; an action's score is
the summed log-probability of the assistant turn that takes it (a tool call, or ``Action: ...``
text when the template cannot render tool calls). This is the policy `skillmem train --policy trl`
trains and the eval gate scores; the model sits on the user's device (see `policy.hf`).

    policy = HFChatPolicy(HFChatConfig(base_model="models/smollm2-135m"), adapter="runs/trl/policy/adapter")
    policy.act(goal, history, context, admissible)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from .base import HistoryItem, Prompt, make_prompt
from .chat import ACT_TOOL, assistant_turn, chat_messages
from .hf import load_causal_lm


@dataclass
class HFChatConfig:
    """Knobs of the chat-model policy; saved next to its adapter."""

    base_model: str = ""  # a local transformers directory (config, weights, tokenizer with a chat template)
    tools: Optional[bool] = None  # None: tool calls if the chat template renders them, else text actions
    max_history: int = 8
    max_prompt_tokens: int = 2048  # the oldest turns are dropped to fit
    use_text: bool = True  # memory as text in the prompt when the caller passes context
    dtype: str = "auto"
    device: str = "auto"
    gradient_checkpointing: bool = False


def template_renders_tool_calls(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template shows a tool call's arguments (many small models' do not)."""
    probe = [{"role": "user", "content": "go"},
             {"role": "assistant", "content": "", "tool_calls": [
                 {"id": "c0", "type": "function", "function": {"name": "act", "arguments": {"command": "zq-probe"}}}]}]
    try:
        text = tokenizer.apply_chat_template(probe, tools=[ACT_TOOL], tokenize=False)
    except Exception:  # a template that raises on tool calls cannot train on them
        return False
    return "zq-probe" in text


def render_ids(tokenizer: Any, messages: list[dict[str, Any]], *, tools: bool, generation: bool) -> list[int]:
    """Token ids of messages through the chat template (tools passed when actions are tool calls)."""
    out = tokenizer.apply_chat_template(messages, tools=[ACT_TOOL] if tools else None, tokenize=True,
                                        add_generation_prompt=generation, return_dict=True)
    return list(out["input_ids"])


class HFChatPolicy:
    """A chat LM with a LoRA adapter (or none: the base model); scores actions as assistant turns."""

    kind = "hf-chat"

    def __init__(self, config: HFChatConfig, *, adapter: Optional[str | Path] = None, model: Any = None,
                 tokenizer: Any = None):
        from transformers import AutoTokenizer

        if model is None and (not config.base_model or not Path(config.base_model).exists()):
            raise FileNotFoundError(
                f"HFChatPolicy needs a local model directory, got {config.base_model!r}; convert a GGUF with "
                "skillmem.policy.hf.from_gguf() or save a model with save_pretrained()")
        self.config = config
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(config.base_model, local_files_only=True)
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ValueError(f"{config.base_model} has no chat template; HFChatPolicy needs a chat model "
                             "(use HFPolicy for a base LM)")
        if model is None:
            model = load_causal_lm(config.base_model, device=config.device, dtype=config.dtype,
                                   gradient_checkpointing=config.gradient_checkpointing)
            if adapter is not None:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, str(adapter))
        self.model = model
        self.model.eval()
        self.device = next(model.parameters()).device
        self.tools = template_renders_tool_calls(self.tokenizer) if config.tools is None else config.tools

    def _rows(self, prompt: Prompt, candidates: Sequence[str]) -> list[tuple[list[int], list[int]]]:
        # The whole history goes in: chat_messages keeps the last max_history steps and notes how many
        # it left out, exactly as `skillmem export` rendered the training prompts.
        shown = min(len(prompt.history), self.config.max_history)
        msgs = chat_messages(prompt.goal, prompt.history, prompt.memory if self.config.use_text else "", candidates,
                             tools=self.tools, max_history=self.config.max_history)
        p_ids = render_ids(self.tokenizer, msgs, tools=self.tools, generation=True)
        rows = []
        for cand in candidates:
            full = render_ids(self.tokenizer, msgs + [assistant_turn(cand, tools=self.tools,
                                                                     call_id=f"call_{shown}")],
                              tools=self.tools, generation=False)
            n = 0  # the action's tokens start where the prompt and prompt+answer part (as TRL counts them)
            while n < min(len(p_ids), len(full)) and p_ids[n] == full[n]:
                n += 1
            prefix, action = full[:n], full[n:]
            cut = max(0, len(prefix) + len(action) - self.config.max_prompt_tokens)
            rows.append((prefix[cut:], action))
        return rows

    def action_logprobs(self, prompt: Prompt, candidates: Sequence[str], **_: Any) -> torch.Tensor:
        """Summed log-probs of each candidate's assistant turn after the rendered prompt, shape [C]."""
        rows = self._rows(prompt, candidates)
        L = max(len(p) + len(a) for p, a in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(rows), L), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        keep = torch.zeros(len(rows), L, dtype=torch.bool)
        for i, (p, a) in enumerate(rows):
            ids[i, : len(p) + len(a)] = torch.tensor(p + a)
            attn[i, : len(p) + len(a)] = 1
            keep[i, len(p): len(p) + len(a)] = True
        ids, attn, keep = ids.to(self.device), attn.to(self.device), keep.to(self.device)
        logits = self.model(input_ids=ids, attention_mask=attn).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        return (logp * keep[:, 1:]).sum(-1).cpu()

    def act(self, goal: str, history: Sequence[HistoryItem], context: Any, admissible: Sequence[str]) -> str:
        if not admissible:
            raise ValueError("act() needs at least one admissible action")
        prompt = make_prompt(goal, history, context, admissible, use_text=self.config.use_text, use_hints=False)
        with torch.no_grad():
            return admissible[int(torch.argmax(self.action_logprobs(prompt, admissible)))]

    def eval(self) -> "HFChatPolicy":
        self.model.eval()
        return self

    def save(self, path: str | Path) -> Path:
        """policy.json (and the adapter, when the model has one) into `path`; the base model stays where it is."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if hasattr(self.model, "peft_config"):
            self.model.save_pretrained(str(path / "adapter"))
        (path / "policy.json").write_text(json.dumps({"kind": self.kind, "config": asdict(self.config)}, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "HFChatPolicy":
        path = Path(path)
        meta = json.loads((path / "policy.json").read_text())
        adapter = path / "adapter"
        return cls(HFChatConfig(**meta["config"]), adapter=adapter if adapter.exists() else None)


# --------------------------------------------------------------------------- a tiny chat model for tests

# ChatML with tool calls as JSON in <tool_call> tags (as Qwen's templates do), and the tools listed
# in a system block: enough for TRL's tokenization and the policy's scoring to take the real paths.
TINY_CHAT_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\nTools: {{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>"
    "{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}</tool_call>{% endfor %}"
    "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tiny_chat_lm(out_dir: str | Path, corpus: Sequence[str] = (), *, vocab_size: int = 600, layers: int = 2,
                      hidden: int = 64, seed: int = 0) -> Path:
    """A randomly initialised 2-layer Llama with a byte-level BPE tokenizer (trained here, offline, on
    `corpus` and the template's own words) and a ChatML chat template that renders tool calls."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    specials = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    texts = list(corpus) + [TINY_CHAT_TEMPLATE, json.dumps(ACT_TOOL), "system user assistant tool Action: Goal:",
                            "Admissible actions: Observation: Thought:"]
    tk.train_from_iterator(texts * 3, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                          show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<|pad|>", eos_token="<|im_end|>",
                                  bos_token=None, unk_token=None)
    tok.chat_template = TINY_CHAT_TEMPLATE
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
                      tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(str(out_dir), safe_serialization=True)
    tok.save_pretrained(str(out_dir))
    return out_dir
