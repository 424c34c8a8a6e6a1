"""Any OpenAI-compatible chat model as a policy (OpenAI, vLLM, Ollama, a llama.cpp server), for acting.

A ReAct-style prompt (`skillmem.policy.chat`): the goal, retrieved memory as text (only the lessons
that speak at the step, as every policy reads them: `make_prompt`, read by `domain`), past steps as
turns, the admissible actions when the environment gives them; the answer may think first and
names its action in any of the usual shapes (``Action: ...``, JSON, a tool call, a number).
An answer that names no admissible action goes back to the model with the error, up to the
client's `json_attempts`; after that the last thing it said is passed to the environment as
it is (which refuses it or answers with an error, as it would to any agent) and counted
as invalid in `stats`.

    policy = OpenAIPolicy(LLMConfig(base_url="http://127.0.0.1:8080/v1", model="smollm2"))
    action = policy.act(goal, history, memory.retrieve(goal), admissible)
    policy.stats   # decisions, valid first time, retries, invalid, tokens, seconds
"""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch

from ..llm import InvalidAnswer, LLMClient, LLMConfig, Usage
from .base import HistoryItem, Prompt, history_pairs, make_prompt
from .chat import ACT_TOOL, chat_messages, for_api, parse_action


@dataclass
class ActStats:
    """How the model answered: counts over every decision this policy made."""

    decisions: int = 0
    valid_first: int = 0  # decisions whose first answer named an admissible action
    retries: int = 0  # answers asked for again after an invalid one
    invalid: int = 0  # decisions where no answer was valid: the last one went to the environment as is
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0  # HTTP calls, transport retries included
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["valid_first_share"] = self.valid_first / self.decisions if self.decisions else None
        d["seconds_per_call"] = self.seconds / self.calls if self.calls else None
        return d


class OpenAIPolicy:
    """Chooses an action by asking a chat model; memory reaches it as text. Not trained here."""

    kind = "openai"

    def __init__(self, client: LLMClient | LLMConfig, *, use_text: bool = True, max_history: int = 8,
                 tools: bool = False, json_mode: bool = False, domain: Any = None):
        from ..domain import TextDomain

        self.client = client if isinstance(client, LLMClient) else LLMClient(client)
        self.domain = domain if domain is not None else TextDomain()  # reads which lessons speak at a step
        self.use_text = use_text
        self.max_history = max_history
        self.tools = tools  # offer the `act` tool; many local servers do not support tool calls
        self.json_mode = json_mode  # ask for response_format json_object (the answer is then {"action": ...})
        self.stats = ActStats()
        self._lock = threading.Lock()

    @property
    def usage(self) -> Usage:
        s = self.stats
        return Usage(s.prompt_tokens, s.completion_tokens, s.calls, s.seconds)

    def messages(self, goal: str, history: Sequence[HistoryItem], context: Any,
                 admissible: Sequence[str]) -> list[dict[str, Any]]:
        """The chat messages for one decision; memory is the text of the lessons that speak here."""
        text = make_prompt(goal, history, context, admissible, use_text=True, use_hints=context is not None,
                           domain=self.domain).memory if self.use_text else ""
        msgs = chat_messages(goal, history_pairs(history), text, admissible, tools=self.tools,
                             max_history=self.max_history)
        if self.json_mode:
            msgs[0] = {**msgs[0], "content": msgs[0]["content"] + ' Answer with only a JSON object: '
                                                                  '{"thought": "...", "action": "<action>"}.'}
        return for_api(msgs)

    def act(self, goal: str, history: Sequence[HistoryItem], context: Any, admissible: Sequence[str]) -> str:
        admissible = list(admissible)
        answers = 0

        def validate(text: str) -> str:
            nonlocal answers
            answers += 1
            return parse_action(text, admissible or None)

        msgs = self.messages(goal, history, context, admissible)
        before = self.client.usage
        invalid = False
        try:
            action, _ = self.client.complete(msgs, validate, json_mode=self.json_mode,
                                             tools=[ACT_TOOL] if self.tools else None)
        except InvalidAnswer as e:
            invalid = True
            action = _last_words(e.last_content)
        used = _diff(self.client.usage, before)
        with self._lock:
            s = self.stats
            s.decisions += 1
            s.valid_first += answers == 1 and not invalid
            s.retries += max(0, answers - 1)
            s.invalid += invalid
            s.prompt_tokens += used.prompt_tokens
            s.completion_tokens += used.completion_tokens
            s.calls += used.calls
            s.seconds += used.seconds
        return action

    def action_logprobs(self, prompt: Prompt, candidates: Sequence[str], **_: Any) -> torch.Tensor:
        raise NotImplementedError("OpenAIPolicy acts only; train a CPUPolicy, HFPolicy or a chat model "
                                  "(skillmem train --policy trl) instead")


def _diff(after: Usage, before: Usage) -> Usage:
    return Usage(after.prompt_tokens - before.prompt_tokens, after.completion_tokens - before.completion_tokens,
                 after.calls - before.calls, after.seconds - before.seconds)


def _last_words(text: str | None) -> str:
    """What an invalid answer tried to do: its last 'Action:' line, else its last line (at most 200 characters)."""
    text = (text or "").strip()
    found = re.findall(r"action\s*[:=]\s*(.+)", text, re.IGNORECASE)
    line = found[-1] if found else (text.splitlines()[-1] if text else "")
    return line.strip().strip("\"'`*").strip()[:200]
