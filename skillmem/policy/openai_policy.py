"""Any OpenAI-compatible chat model as a policy, for acting only (it is not trained here)."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..llm import LLMClient, LLMConfig, Usage
from .base import HistoryItem, Prompt, history_pairs, context_text

SYSTEM = ("You act in a text household environment. Choose the next action from the numbered list of "
          "admissible actions. Answer with only a JSON object: {\"action\": <number>}.")


def render_messages(goal: str, history: Sequence[tuple[str, str]], lessons: str, admissible: Sequence[str],
                    max_history: int = 10) -> list[dict[str, str]]:
    """The chat messages for one decision."""
    lines = [f"Goal: {goal}"]
    if lessons:
        lines += ["", "What memory says about tasks like this:", lessons]
    if history:
        lines += ["", "Recent steps:"]
        lines += [f"> {a}\n{o}" if a else o for a, o in history[-max_history:]]
    lines += ["", "Admissible actions:"] + [f"{i}. {a}" for i, a in enumerate(admissible)]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


class OpenAIPolicy:
    """Chooses among the admissible actions by asking a chat model; memory reaches it as text."""

    kind = "openai"

    def __init__(self, client: LLMClient | LLMConfig, *, use_text: bool = True, max_history: int = 10):
        self.client = client if isinstance(client, LLMClient) else LLMClient(client)
        self.use_text = use_text
        self.max_history = max_history
        self.usage = Usage()

    def act(self, goal: str, history: Sequence[HistoryItem], context: Any, admissible: Sequence[str]) -> str:
        if not admissible:
            raise ValueError("act() needs at least one admissible action")
        admissible = list(admissible)

        def validate(obj: dict[str, Any]) -> str:
            choice = obj["action"]
            if isinstance(choice, str) and choice in admissible:
                return choice
            i = int(choice)  # a non-number raises ValueError: the model is asked again
            if not 0 <= i < len(admissible):
                raise ValueError(f"action number {i} is not in 0..{len(admissible) - 1}")
            return admissible[i]

        messages = render_messages(goal, history_pairs(history), context_text(context) if self.use_text else "",
                                   admissible, self.max_history)
        action, usage = self.client.complete_json(messages, validate)
        self.usage = self.usage + usage
        return action

    def action_logprobs(self, prompt: Prompt, candidates: Sequence[str], **_: Any) -> torch.Tensor:
        raise NotImplementedError("OpenAIPolicy acts only; train a CPUPolicy or HFPolicy instead")
