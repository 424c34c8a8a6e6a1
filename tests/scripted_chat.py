"""A scripted chat model: a real `BaseChatModel` whose answers come from a Python function.

LangChain runs it like any provider's model (callbacks, `bind_tools`, usage metadata), so an
agent built on it exercises the real create_react_agent / create_agent code paths offline.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult


class ScriptedChat(BaseChatModel):
    """`policy(messages) -> AIMessage`; token usage counted as words in and out."""

    policy: Callable[[Sequence[BaseMessage]], AIMessage]
    seen: list = []  # the message lists it was called with, for assertions

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kw: Any) -> Any:
        return self.bind(tools=[getattr(t, "name", t) for t in tools], **kw)

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any) -> ChatResult:
        self.seen.append(list(messages))
        ai = self.policy(messages)
        words_in = sum(len(str(m.content).split()) for m in messages)
        ai.usage_metadata = {"input_tokens": words_in, "output_tokens": len(str(ai.content).split()) + 1,
                             "total_tokens": words_in + len(str(ai.content).split()) + 1}
        return ChatResult(generations=[ChatGeneration(message=ai)])


def calls(*specs: tuple[str, dict], content: str = "") -> AIMessage:
    """An AI message issuing `specs` as tool calls, ids call_<n>."""
    import uuid

    return AIMessage(content=content, tool_calls=[{"name": n, "args": a, "id": f"call_{uuid.uuid4().hex[:8]}"}
                                                  for n, a in specs])
