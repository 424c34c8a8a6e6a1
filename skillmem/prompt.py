"""Memory in an agent's context: one hook for create_react_agent and create_agent, and a graph node.

    hook = memory_prompt(memory, "You are a support agent.")
    agent = create_react_agent(model, tools, prompt=hook)                  # langgraph.prebuilt
    agent = create_agent(model, tools, middleware=[hook.middleware()])     # langchain.agents

The query is built from the messages (the task = the first human message, the last human
message when it differs, the most recent tool errors). The retrieved lessons and
demonstrations go into ONE system message, merged with the agent's own system prompt and
replaced on every model call, never appended. Retrieval runs once per episode (or every
`every` model calls, and again after a new tool error with `on_error=True`); each retrieval
is written to `retrievals` against the episode `wrap()` or `RecordingCallback` is recording.

`retrieval_node(memory)` is the same for a graph of one's own: a node that puts the context
in the state.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from .retrieve import DEFAULT, Context, RetrievalConfig

if TYPE_CHECKING:
    from .memory import SkillMemory

MEMORY_MESSAGE_ID = "skillmem-memory"
_CACHE_EPISODES = 1024


def _type(m: Any) -> str:
    return getattr(m, "type", "") or (m.get("type", "") if isinstance(m, Mapping) else "")


def _text(m: Any) -> str:
    from .messages import content_text

    return content_text(getattr(m, "content", None) if not isinstance(m, Mapping) else m.get("content"))


def query_from_messages(messages: Sequence[Any], *, errors: int = 2, max_chars: int = DEFAULT.max_query_chars) -> str:
    """What a message agent is doing now, as retrieval's query: task, last request, recent tool errors."""
    humans = [_text(m) for m in messages if _type(m) == "human"]
    parts = humans[:1]
    if len(humans) > 1 and humans[-1] != humans[0]:
        parts.append(humans[-1])
    failed = [m for m in messages if _type(m) == "tool" and getattr(m, "status", "success") == "error"]
    parts += [f"{getattr(m, 'name', None) or 'tool'} failed: {_text(m)}" for m in failed[-errors:]] if errors else []
    return "\n".join(p for p in parts if p)[:max_chars]


def current_config() -> Optional[dict[str, Any]]:
    """The RunnableConfig of the run this code is called from, if any."""
    try:
        from langchain_core.runnables.config import var_child_runnable_config
    except ImportError:  # pragma: no cover - langchain_core comes with langgraph
        return None
    return var_child_runnable_config.get()


def recorded_episode(config: Optional[Mapping[str, Any]]) -> Optional[str]:
    """The episode id this run is recorded under: set by `wrap()`, or known to a RecordingCallback."""
    if not config:
        return None
    meta = (config.get("metadata") or {}).get("skillmem") or {}
    if meta.get("episode_id"):
        return str(meta["episode_id"])
    cbs = config.get("callbacks")
    handlers = getattr(cbs, "handlers", None) or (cbs if isinstance(cbs, list) else [])
    from .messages import RecordingCallback

    for h in handlers:
        if isinstance(h, RecordingCallback):
            ep = h.episode_for(getattr(cbs, "parent_run_id", None))
            if ep:
                return ep
    return None


class MemoryPrompt:
    """Retrieved memory as one system message in a message agent's model calls.

    Use it as `prompt=` of `create_react_agent`, as its `pre_model_hook=` (`hook.pre_model_hook`),
    or as `create_agent` middleware (`hook.middleware()`). `system_prompt` is the agent's own
    instructions; memory is appended to them in the same message.
    """

    def __init__(self, memory: "SkillMemory", system_prompt: str = "", *, k: Optional[int] = None,
                 k_demos: Optional[int] = None, token_budget: Optional[int] = None, every: Optional[int] = None,
                 on_error: bool = False, task_type: Optional[str] = None, namespace: Optional[str] = None,
                 errors: int = 2, config: Optional[RetrievalConfig] = None):
        if every is not None and every < 1:
            raise ValueError(f"every must be a positive number of model calls or None (once per episode), got {every}")
        self.memory = memory
        self.system_prompt = system_prompt
        # The memory's RetrievalConfig unless `config`; k, k_demos, token_budget override either.
        self.retrieval = (config or memory.retrieval).with_(k=k, k_demos=k_demos, token_budget=token_budget)
        self.every, self.on_error, self.errors = every, on_error, errors
        self.task_type, self.namespace = task_type, namespace
        # episode key -> [context, model calls so far, tool errors seen at the last retrieval]
        self._episodes: "OrderedDict[str, list[Any]]" = OrderedDict()
        self._lock = threading.Lock()

    # -- the decision: retrieve now, or reuse this episode's context

    def _key(self, messages: Sequence[Any], config: Optional[Mapping[str, Any]]) -> tuple[str, Optional[str]]:
        episode = recorded_episode(config)
        if episode:
            return episode, episode
        thread = ((config or {}).get("configurable") or {}).get("thread_id")
        # Unrecorded runs: one context per conversation (thread), else per task text.
        return (f"thread:{thread}" if thread else f"task:{query_from_messages(messages, errors=0)}"), None

    def _task_type(self, config: Optional[Mapping[str, Any]]) -> Optional[str]:
        meta = ((config or {}).get("metadata") or {}).get("skillmem") or {}
        return self.task_type or meta.get("task_type") or None

    def _plan(self, messages: Sequence[Any], config: Optional[Mapping[str, Any]]
              ) -> tuple[Optional[Context], str, Optional[str], int]:
        """(cached context or None if a retrieval is due, key, episode id, model-call index)."""
        key, episode = self._key(messages, config)
        n_errors = sum(1 for m in messages if _type(m) == "tool" and getattr(m, "status", "success") == "error")
        with self._lock:
            entry = self._episodes.get(key)
            if entry is None:
                entry = self._episodes[key] = [None, 0, 0]
                while len(self._episodes) > _CACHE_EPISODES:
                    self._episodes.popitem(last=False)
            call = entry[1]
            entry[1] += 1
            due = (entry[0] is None or (self.every is not None and call % self.every == 0)
                   or (self.on_error and n_errors > entry[2]))
            if due:
                entry[2] = n_errors
            return (None if due else entry[0]), key, episode, call

    def _store(self, key: str, ctx: Context) -> None:
        with self._lock:
            if key in self._episodes:
                self._episodes[key][0] = ctx

    def context(self, messages: Sequence[Any], config: Optional[Mapping[str, Any]] = None) -> Context:
        """This model call's memory: retrieved when due, else the episode's last retrieval."""
        config = config if config is not None else current_config()
        ctx, key, episode, call = self._plan(messages, config)
        if ctx is None:
            query = query_from_messages(messages, errors=self.errors, max_chars=self.retrieval.max_query_chars)
            ctx = self.memory.retrieve(query, namespace=self.namespace, task_type=self._task_type(config),
                                       config=self.retrieval, episode_id=episode, step_index=call)
            self._store(key, ctx)
        return ctx

    async def acontext(self, messages: Sequence[Any], config: Optional[Mapping[str, Any]] = None) -> Context:
        """`context` off the event loop (embedding and SQL block)."""
        import asyncio

        config = config if config is not None else current_config()
        return await asyncio.to_thread(self.context, list(messages), config)

    # -- the message list the model reads

    def system_text(self, ctx: Context, base: str = "") -> str:
        return "\n\n".join(p for p in (base or self.system_prompt, ctx.text) if p)

    def messages(self, messages: Sequence[Any], ctx: Context) -> list[Any]:
        """`messages` with exactly one system message first: the agent's own, with memory appended."""
        from langchain_core.messages import SystemMessage

        from .messages import as_messages

        msgs = [m for m in as_messages(messages) if getattr(m, "id", None) != MEMORY_MESSAGE_ID]
        base = self.system_prompt
        if msgs and _type(msgs[0]) == "system":
            base = "\n\n".join(p for p in (self.system_prompt, _text(msgs[0])) if p)
            msgs = msgs[1:]
        text = self.system_text(ctx, base)
        return ([SystemMessage(content=text, id=MEMORY_MESSAGE_ID)] if text else []) + msgs

    @staticmethod
    def _state_messages(state: Any) -> list[Any]:
        if isinstance(state, Mapping):
            return list(state.get("messages") or [])
        return list(getattr(state, "messages", None) or [])

    def __call__(self, state: Any) -> list[Any]:
        """`prompt=` for create_react_agent: the state's messages, memory in the system message."""
        msgs = self._state_messages(state)
        return self.messages(msgs, self.context(msgs))

    def pre_model_hook(self, state: Any) -> dict[str, Any]:
        """`pre_model_hook=` for create_react_agent: the model reads `llm_input_messages`; the state is untouched."""
        msgs = self._state_messages(state)
        return {"llm_input_messages": self.messages(msgs, self.context(msgs))}

    def middleware(self) -> Any:
        """The hook as `langchain.agents.create_agent` middleware (needs the `langchain` package)."""
        try:
            from langchain.agents.middleware import AgentMiddleware
        except ImportError as exc:
            raise ImportError("hook.middleware() needs LangChain's create_agent: pip install 'langchain>=1'; "
                              "with langgraph.prebuilt.create_react_agent use prompt=hook instead") from exc
        hook = self

        class SkillmemMemory(AgentMiddleware):
            """Puts skillmem's retrieved memory into the system message of each model call."""

            def _with_memory(self, request: Any, ctx: Context) -> Any:
                from langchain_core.messages import SystemMessage

                base = _text(request.system_message) if request.system_message is not None else ""
                text = hook.system_text(ctx, "\n\n".join(p for p in (hook.system_prompt, base) if p))
                return request.override(system_message=SystemMessage(content=text)) if text else request

            def wrap_model_call(self, request: Any, handler: Any) -> Any:
                return handler(self._with_memory(request, hook.context(request.messages)))

            async def awrap_model_call(self, request: Any, handler: Any) -> Any:
                return await handler(self._with_memory(request, await hook.acontext(request.messages)))

        return SkillmemMemory()


def memory_prompt(memory: "SkillMemory", system_prompt: str = "", **options: Any) -> MemoryPrompt:
    """The prompt hook: `create_react_agent(model, tools, prompt=memory_prompt(memory, "..."))`."""
    return MemoryPrompt(memory, system_prompt, **options)


# --------------------------------------------------------------------------- LangGraph node


def retrieval_node(memory: Any, *, k: Optional[int] = None, token_budget: Optional[int] = None, key: str = "context",
                   as_system_message: bool = False, namespace: Optional[str] = None,
                   k_demos: Optional[int] = None, config: Optional[RetrievalConfig] = None
                   ) -> Callable[..., dict[str, Any]]:
    """A LangGraph node that puts retrieved lessons and demonstrations into the state.

    Reads `goal` and `observation` (a messages state without them: the query comes from the
    messages, see :func:`query_from_messages`), `task_type`, `episode_id`
    (else the episode `wrap()` is recording, else a new id, kept for the rest of the run) and
    `step_index` if present; writes `state[key]` (the text), `context_tokens` and `episode_id`.
    With `as_system_message` it also puts the text in `messages` as ONE SystemMessage whose id
    stays the same for the episode, so LangGraph's `add_messages` replaces it instead of
    appending another. (For create_react_agent, `skillmem.memory_prompt` is the simpler hook.)
    The knobs are the memory's RetrievalConfig unless `config`; k, k_demos, token_budget
    override either.
    """
    from .episode import new_id

    retrieval = (config or memory.retrieval).with_(k=k, k_demos=k_demos, token_budget=token_budget)
    steps: dict[str, int] = {}
    by_task: dict[str, str] = {}

    def retrieve_context(state: dict[str, Any]) -> dict[str, Any]:
        messages = state.get("messages") or []
        goal = state.get("goal") or ""
        query_goal = goal or (query_from_messages(messages, max_chars=retrieval.max_query_chars) if messages else "")
        episode_id = state.get("episode_id") or recorded_episode(current_config())
        if not episode_id:
            # A state without an episode_id channel never carries ours back: keep one per task.
            task = query_from_messages(messages, errors=0) if messages else goal
            episode_id = by_task.setdefault(task, new_id()) if task else new_id()
        step = state.get("step_index")
        if step is None:  # count the calls per episode: one retrieval per agent step
            step = steps.get(episode_id, 0)
            steps[episode_id] = step + 1
        ctx = memory.retrieve(query_goal, state.get("observation") or "", namespace=namespace,
                              task_type=state.get("task_type") or None, config=retrieval,
                              episode_id=episode_id, step_index=step)
        out: dict[str, Any] = {key: ctx.text, "context_tokens": ctx.tokens, "episode_id": episode_id}
        if as_system_message and ctx.text:
            from langchain_core.messages import SystemMessage
            out["messages"] = [SystemMessage(content=ctx.text, id=f"skillmem-context-{episode_id}")]
        return out

    return retrieve_context
