"""Recording message agents: ReAct-style agents whose actions are tool calls.

Three ways in, one way of writing steps:

- `RecordingCallback(memory, ...)`: a LangChain callback handler. Pass it in a run's
  `config={"callbacks": [...]}` (any compiled graph, `create_react_agent`, `create_agent`,
  a chain) and each tool call is written when the tool returns: tool name and arguments
  verbatim, `tool_call_id`, the tool's output and error status, its latency, the model
  turn's token usage. The final answer (an AI message without tool calls) is the last
  step; when the root run ends the episode is finished with the verifier's verdict on the
  final state. A process killed mid-run loses at most the call in flight.
- `wrap(compiled_agent, memory, ...)` returns a `RecordedAgent`: the same graph, invoked the
  same way, with the handler attached and an episode id chosen up front (so the prompt
  hook of :mod:`skillmem.prompt` records its retrievals against the same episode).
- `wrap(chat_model.bind_tools(tools), memory)` returns a `RecordedChatModel` for agents
  that drive the model in a loop of their own: each turn's tool calls are written when the
  next turn brings their results.
- `record_messages(memory, messages, ...)` records a finished message list after the fact,
  with the same step layout.

Step layout (one row of `steps` per tool call): `observation` is what the model read before
the turn (the human message, or the tool results it answers), `action` is
`name(arg="value", n=2)` (each value as JSON; verbatim in `tool_args`), `feedback` the
tool's output as text, `error` the output when the tool failed, `call_group` the model turn
(calls of one turn ran in parallel on the same observation), `prompt_tokens` and
`completion_tokens` the turn's usage on its first step. The final answer's step has
`action` = the answer text and no `tool_call_id`.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional, Sequence
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import Runnable, RunnableConfig

from .episode import OutcomeSource, new_id

if TYPE_CHECKING:
    from .record import EpisodeRecorder  # the recorder's home (record.py) dispatches to this file in wrap()
    from .memory import SkillMemory

# Keys a run's config `metadata` may carry to describe its episode (RecordedAgent sets them).
META = "skillmem"

StateVerifier = Callable[[Any], Optional[bool]]


# ----------------------------------------------------------------------------- text


def content_text(content: Any) -> str:
    """A message's content as the text a person reads: list content joined, never a Python repr."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, Mapping):
                if block.get("type") in (None, "text") and "text" in block:
                    parts.append(str(block["text"]))
                elif block.get("type") == "tool_use":
                    continue  # the same call is in tool_calls
                else:
                    parts.append(json.dumps(block, ensure_ascii=False, default=str))
            else:
                parts.append(str(block))
        return "\n".join(p for p in parts if p)
    if isinstance(content, Mapping):
        return json.dumps(content, ensure_ascii=False, default=str)
    return str(content)


def call_action(name: str, args: Any) -> str:
    """The action text of a tool call: `name(arg="value", n=2)`, each value as JSON, in the given order.

    The form :func:`skillmem.domain.parse_call` reads; arguments whose names are not
    identifiers (or that are not a dict) are written as one JSON value: `name({"a-b": 1})`.
    """
    dump = lambda v: json.dumps(v, ensure_ascii=False, default=str)  # noqa: E731
    if isinstance(args, Mapping) and all(isinstance(k, str) and k.isidentifier() for k in args):
        return f"{name}({', '.join(f'{k}={dump(v)}' for k, v in args.items())})"
    return f"{name}({dump(args if args is not None else {})})"


def _msg_type(m: Any) -> str:
    return getattr(m, "type", "") or (m.get("type", "") if isinstance(m, Mapping) else "")


def _observation(messages: Sequence[Any]) -> str:
    """What the model read before its turn: everything after its previous AI message."""
    tail: list[Any] = []
    for m in reversed(messages):
        if _msg_type(m) in ("ai", "AIMessageChunk"):
            break
        if _msg_type(m) == "system":
            continue
        tail.append(m)
    tail.reverse()
    out = []
    for m in tail:
        text = content_text(getattr(m, "content", None))
        if _msg_type(m) == "tool":
            out.append(f"[{getattr(m, 'name', None) or 'tool'}] {text}")
        else:
            out.append(text)
    return "\n".join(out)


def as_messages(items: Any) -> list[Any]:
    """Messages from what a graph accepts (message objects, ("human", "...") pairs, dicts)."""
    from langchain_core.messages import convert_to_messages

    try:
        return convert_to_messages(list(items or []))
    except (ValueError, TypeError, NotImplementedError):
        return list(items or [])


def task_of(messages: Sequence[Any]) -> str:
    """The task a message list is about: its first human message."""
    for m in as_messages(messages):
        if _msg_type(m) == "human":
            return content_text(getattr(m, "content", None))
    return ""


def _usage(message: Any) -> tuple[Optional[int], Optional[int]]:
    u = getattr(message, "usage_metadata", None) or {}
    return u.get("input_tokens"), u.get("output_tokens")


def _error_of(output: Any) -> Optional[str]:
    if getattr(output, "status", "success") == "error":
        return content_text(getattr(output, "content", output)) or "error"
    return None


def _messages_of(state: Any) -> list[Any]:
    if isinstance(state, Mapping):
        return list(state.get("messages") or [])
    return list(getattr(state, "messages", None) or [])


def _verdict(verifier: Optional[StateVerifier], state: Any) -> tuple[Optional[bool], Optional[str]]:
    if verifier is None:
        return None, None
    ok = verifier(state)
    return (None, None) if ok is None else (bool(ok), OutcomeSource.verifier.value)


# ----------------------------------------------------------------------------- the writer


@dataclass
class _Turn:
    """One model turn whose tool calls are still running."""

    index: int
    observation: str
    prompt_tokens: Optional[int]
    completion_tokens: Optional[int]
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)  # tool_call_id -> call
    tokens_written: bool = False


class MessageSteps:
    """Writes one message agent's episode: model turns, tool results, the final answer."""

    def __init__(self, rec: EpisodeRecorder, context_tokens: Optional[int] = None):
        self.rec = rec
        self.turns = 0
        self.open: dict[str, _Turn] = {}  # tool_call_id -> its turn
        self.last_ai: Any = None
        self.context_tokens = context_tokens
        self.lock = threading.Lock()

    def model_turn(self, messages: Sequence[Any], ai: Any, latency_ms: Optional[float] = None) -> None:
        """The model answered `messages` with `ai`: remember its calls, or write its final answer."""
        with self.lock:
            p, c = _usage(ai)
            turn = _Turn(self.turns, _observation(messages), p, c)
            self.turns += 1
            self.last_ai = ai
            calls = list(getattr(ai, "tool_calls", None) or [])
            if not calls:
                self.rec.step(observation=turn.observation, action=content_text(ai.content), latency_ms=latency_ms,
                              prompt_tokens=p, completion_tokens=c, call_group=turn.index,
                              context_tokens=self.context_tokens)
                return
            for call in calls:
                cid = call.get("id") or new_id()
                turn.calls[cid] = call
                self.open[cid] = turn

    def tool_result(self, tool_call_id: Optional[str], *, name: str = "", args: Any = None, output: Any = None,
                    error: Optional[str] = None, latency_ms: Optional[float] = None) -> None:
        """A tool returned (or raised): write its step now."""
        with self.lock:
            turn = self.open.pop(tool_call_id, None) if tool_call_id else None
            call = turn.calls.get(tool_call_id, {}) if turn else {}
            name = call.get("name") or name
            args = call.get("args", args)
            feedback = content_text(getattr(output, "content", output)) if output is not None else ""
            if error is not None and not feedback:
                feedback = f"Error: {error}"
            error = error if error is not None else _error_of(output)
            tokens: dict[str, Any] = {}
            if turn is not None and not turn.tokens_written:
                tokens = {"prompt_tokens": turn.prompt_tokens, "completion_tokens": turn.completion_tokens}
                turn.tokens_written = True
            self.rec.step(observation=turn.observation if turn else "", action=call_action(name, args),
                          feedback=feedback, error=error, latency_ms=latency_ms, tool_call_id=tool_call_id,
                          tool_args=args, call_group=turn.index if turn else None,
                          context_tokens=self.context_tokens, **tokens)

    def unanswered(self) -> None:
        """Calls the model made whose tools never ran (the run stopped): written without feedback."""
        for cid in list(self.open):
            self.tool_result(cid, error="the tool never returned (the run ended first)")


# ----------------------------------------------------------------------------- callback handler


class RecordingCallback(BaseCallbackHandler):
    """A LangChain callback handler that records each root run as an episode, live.

    Reusable across runs (each root run is one episode); safe under `batch` and async runs.
    A run's config `metadata={"skillmem": {"episode_id", "goal", "task_id", "task_type", "split"}}`
    overrides the handler's defaults for that run. `verifier(final_state)` settles the
    outcome when the run ends (its source is `verifier`); without one it stays `unknown`
    until `memory.feedback(...)` or `memory.set_outcome(...)`.
    """

    raise_error = True  # a recording failure must not pass silently

    def __init__(self, memory: "SkillMemory", *, verifier: Optional[StateVerifier] = None, split: str = "live",
                 task_type: str = "", task_id: str = "", goal: str = "", namespace: Optional[str] = None,
                 environment: str = "langgraph", policy_version: Optional[str] = None):
        self.memory = memory
        self.verifier = verifier
        self.defaults = dict(split=split, task_type=task_type, task_id=task_id, goal=goal)
        self.namespace = namespace
        self.environment = environment
        self.policy_version = policy_version
        self._root: dict[UUID, UUID] = {}  # run id -> its root run id
        self._episodes: dict[UUID, MessageSteps] = {}  # root run id -> its episode
        self._started: dict[UUID, tuple[float, list[Any]]] = {}  # model/tool run id -> (t0, input)
        self._lock = threading.Lock()
        self.finished: list[str] = []  # episode ids, in the order their runs ended

    # -- bookkeeping

    def _root_of(self, run_id: UUID, parent_run_id: Optional[UUID]) -> Optional[UUID]:
        # A run whose parent this handler never saw is a root: the handler was attached to that
        # run's config (wrap() inside an outer graph's node), so the outer run is not ours.
        with self._lock:
            root = self._root.get(parent_run_id) if parent_run_id is not None else None
            self._root[run_id] = root if root is not None else run_id
            return self._root[run_id]

    def episode_for(self, run_id: Optional[UUID]) -> Optional[str]:
        """The episode id a run (or any of its descendants' parent ids) belongs to."""
        root = self._root.get(run_id) if run_id is not None else None
        steps = self._episodes.get(root) if root is not None else None
        if steps is None and len(self._episodes) == 1:
            # Some runnables emit no callbacks of their own; with one run in flight it is that one.
            steps = next(iter(self._episodes.values()))
        return steps.rec.id if steps else None

    def steps_for(self, episode_id: str) -> Optional[MessageSteps]:
        for s in list(self._episodes.values()):
            if s.rec.id == episode_id:
                return s
        return None

    # -- chains: the root run is the episode

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID, parent_run_id: Optional[UUID] = None,
                       metadata: Optional[dict[str, Any]] = None, **kw: Any) -> None:
        root = self._root_of(run_id, parent_run_id)
        if root != run_id or root in self._episodes:
            return
        meta = dict(self.defaults)
        meta.update({k: v for k, v in ((metadata or {}).get(META) or {}).items() if v is not None})
        msgs = _messages_of(inputs) if isinstance(inputs, Mapping) else inputs if isinstance(inputs, list) else []
        goal = meta.get("goal") or task_of(msgs) or (inputs if isinstance(inputs, str) else "")
        rec = self.memory.start_episode(goal=goal, task_type=meta["task_type"],
                                        task_id=meta["task_id"], split=meta["split"] or "live",
                                        environment=self.environment, namespace=self.namespace,
                                        episode_id=meta.get("episode_id"), policy_version=self.policy_version)
        self._episodes[root] = MessageSteps(rec)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, parent_run_id: Optional[UUID] = None, **kw: Any) -> None:
        steps = self._episodes.pop(run_id, None)
        if steps is None:
            return
        steps.unanswered()
        success, source = _verdict(self.verifier, outputs)
        steps.rec.finish(success=success, source=source)
        self.finished.append(steps.rec.id)
        self._forget(run_id)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, parent_run_id: Optional[UUID] = None,
                       **kw: Any) -> None:
        steps = self._episodes.pop(run_id, None)
        if steps is not None:
            # A crashed run is not a verified failure: it reads `interrupted`, with the reason.
            steps.rec.interrupt(f"{type(error).__name__}: {error}")
            self.finished.append(steps.rec.id)
        self._forget(run_id)

    def _forget(self, root: UUID) -> None:
        with self._lock:
            for r in [r for r, v in self._root.items() if v == root]:
                self._root.pop(r, None)
                self._started.pop(r, None)

    # -- model turns

    def on_chat_model_start(self, serialized: Any, messages: list[list[Any]], *, run_id: UUID,
                            parent_run_id: Optional[UUID] = None, **kw: Any) -> None:
        self._root_of(run_id, parent_run_id)
        self._started[run_id] = (time.perf_counter(), messages[0] if messages else [])

    def on_llm_end(self, response: Any, *, run_id: UUID, parent_run_id: Optional[UUID] = None, **kw: Any) -> None:
        t0, messages = self._started.pop(run_id, (None, []))
        steps = self._episodes.get(self._root.get(run_id))
        gens = getattr(response, "generations", None) or []
        ai = getattr(gens[0][0], "message", None) if gens and gens[0] else None
        if steps is None or ai is None:
            return
        steps.model_turn(messages, ai, None if t0 is None else (time.perf_counter() - t0) * 1000)

    # -- tools

    def on_tool_start(self, serialized: Any, input_str: str, *, run_id: UUID, parent_run_id: Optional[UUID] = None,
                      inputs: Optional[dict[str, Any]] = None, tool_call_id: Optional[str] = None, **kw: Any) -> None:
        self._root_of(run_id, parent_run_id)
        name = (serialized or {}).get("name") or kw.get("name") or ""
        self._started[run_id] = (time.perf_counter(), [tool_call_id, name, inputs if inputs is not None else input_str])

    def _tool_done(self, run_id: UUID, output: Any = None, error: Optional[str] = None) -> None:
        t0, (cid, name, args) = self._started.pop(run_id, (None, [None, "", None]))
        steps = self._episodes.get(self._root.get(run_id))
        if steps is None:
            return
        cid = cid or getattr(output, "tool_call_id", None)
        steps.tool_result(cid, name=name, args=args, output=output, error=error,
                          latency_ms=None if t0 is None else (time.perf_counter() - t0) * 1000)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kw: Any) -> None:
        self._tool_done(run_id, output=output)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kw: Any) -> None:
        self._tool_done(run_id, error=f"{type(error).__name__}: {error}")


def _with_callback(config: Optional[RunnableConfig], handler: RecordingCallback, meta: dict[str, Any]
                   ) -> RunnableConfig:
    config = dict(config or {})
    cbs = config.get("callbacks")
    if cbs is None:
        cbs = [handler]
    elif isinstance(cbs, list):
        cbs = [*cbs, handler]
    else:  # a callback manager
        cbs = cbs.copy()
        cbs.add_handler(handler, inherit=True)
    config["callbacks"] = cbs
    md = dict(config.get("metadata") or {})
    md[META] = {**(md.get(META) or {}), **meta}
    config["metadata"] = md
    return config  # type: ignore[return-value]


# ----------------------------------------------------------------------------- wrap(compiled agent)


class RecordedAgent:
    """A compiled message agent, unchanged, whose every run is recorded as an episode.

    `invoke`, `ainvoke`, `stream`, `astream`, `batch` and `abatch` take what the agent takes,
    plus optional `episode_id`, `task_id`, `task_type`, `split`, `goal` for that run; every
    other attribute is the agent's own (`get_graph`, `get_state`, ...).
    """

    _RUN_KEYS = ("episode_id", "task_id", "task_type", "split", "goal")

    def __init__(self, agent: Any, memory: "SkillMemory", *, verifier: Optional[StateVerifier] = None,
                 split: str = "live", task_type: str = "", namespace: Optional[str] = None,
                 environment: str = "langgraph", policy_version: Optional[str] = None):
        self.agent = agent
        self.memory = memory
        self.handler = RecordingCallback(memory, verifier=verifier, split=split, task_type=task_type,
                                         namespace=namespace, environment=environment,
                                         policy_version=policy_version)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.agent, name)

    @property
    def last_episode_id(self) -> Optional[str]:
        """The episode of the run that ended last."""
        return self.handler.finished[-1] if self.handler.finished else None

    def _config(self, config: Optional[RunnableConfig], kw: dict[str, Any]) -> RunnableConfig:
        meta = {k: kw.pop(k) for k in self._RUN_KEYS if k in kw}
        if self.handler.defaults["task_type"]:
            meta.setdefault("task_type", self.handler.defaults["task_type"])  # the prompt hook retrieves by it
        # Chosen before the run starts, so the prompt hook's retrievals name the same episode.
        meta.setdefault("episode_id", ((config or {}).get("metadata") or {}).get(META, {}).get("episode_id")
                        or new_id())
        return _with_callback(config, self.handler, meta)

    def invoke(self, input: Any, config: Optional[RunnableConfig] = None, **kw: Any) -> Any:
        cfg = self._config(config, kw)
        return self.agent.invoke(input, cfg, **kw)

    async def ainvoke(self, input: Any, config: Optional[RunnableConfig] = None, **kw: Any) -> Any:
        cfg = self._config(config, kw)
        return await self.agent.ainvoke(input, cfg, **kw)

    def stream(self, input: Any, config: Optional[RunnableConfig] = None, **kw: Any) -> Iterable[Any]:
        cfg = self._config(config, kw)
        yield from self.agent.stream(input, cfg, **kw)

    async def astream(self, input: Any, config: Optional[RunnableConfig] = None, **kw: Any) -> Any:
        cfg = self._config(config, kw)
        async for chunk in self.agent.astream(input, cfg, **kw):
            yield chunk

    def batch(self, inputs: list[Any], config: Any = None, **kw: Any) -> list[Any]:
        configs = config if isinstance(config, list) else [config] * len(inputs)
        return self.agent.batch(inputs, [self._config(c, {}) for c in configs], **kw)

    async def abatch(self, inputs: list[Any], config: Any = None, **kw: Any) -> list[Any]:
        configs = config if isinstance(config, list) else [config] * len(inputs)
        return await self.agent.abatch(inputs, [self._config(c, {}) for c in configs], **kw)


def is_messages_agent(agent: Any) -> bool:
    """A compiled graph whose state has a `messages` channel (create_react_agent, create_agent, ...)."""
    channels = getattr(agent, "channels", None)
    return isinstance(channels, Mapping) and "messages" in channels and hasattr(agent, "invoke")


def is_chat_model(agent: Any) -> bool:
    """A chat model, or one bound to tools (`model.bind_tools(tools)`)."""
    from langchain_core.language_models import BaseChatModel

    inner = getattr(agent, "bound", agent)
    return isinstance(agent, BaseChatModel) or isinstance(inner, BaseChatModel)


# ----------------------------------------------------------------------------- wrap(chat model)


class RecordedChatModel(Runnable):
    """A chat model (bound to tools) that records the agent loop driving it.

    Each `invoke(messages)` is one model turn. Its tool calls are written when the next
    turn's input brings their results (matched by `tool_call_id`); an answer without tool
    calls is the last step, and the episode is finished with `verifier(messages + [answer])`.
    Input that does not continue the open episode starts a new one (the old one is finished
    first, its unanswered calls written without feedback).
    """

    def __init__(self, model: Any, memory: "SkillMemory", *, verifier: Optional[StateVerifier] = None,
                 split: str = "live", task_type: str = "", namespace: Optional[str] = None,
                 environment: str = "langgraph", policy_version: Optional[str] = None):
        self.model = model
        self.memory = memory
        self.verifier = verifier
        self.opts = dict(split=split, task_type=task_type, namespace=namespace, environment=environment,
                         policy_version=policy_version)
        self.steps: Optional[MessageSteps] = None
        self._lock = threading.Lock()

    @property
    def episode_id(self) -> Optional[str]:
        return self.steps.rec.id if self.steps else None

    def __getattr__(self, name: str) -> Any:
        if name in ("model", "memory", "steps", "opts", "verifier", "_lock"):
            raise AttributeError(name)  # not set yet (during construction)
        return getattr(self.model, name)

    def bind_tools(self, tools: Any, **kw: Any) -> "RecordedChatModel":
        return RecordedChatModel(self.model.bind_tools(tools, **kw), self.memory, verifier=self.verifier, **self.opts)

    def _messages(self, input: Any) -> list[Any]:
        from langchain_core.messages import convert_to_messages

        if hasattr(input, "to_messages"):
            return input.to_messages()
        if isinstance(input, str):
            return convert_to_messages([("human", input)])
        return convert_to_messages(list(input))

    def _before(self, messages: list[Any]) -> MessageSteps:
        answered = [m for m in messages if _msg_type(m) == "tool"]
        steps = self.steps
        continues = steps is not None and steps.open and any(
            getattr(m, "tool_call_id", None) in steps.open for m in answered)
        if steps is not None and not continues:
            self._close(steps, messages)
            steps = None
        if steps is None:
            rec = self.memory.start_episode(goal=task_of(messages), **{k: v for k, v in self.opts.items()
                                                                       if k != "environment"},
                                            environment=self.opts["environment"])
            steps = self.steps = MessageSteps(rec)
        for m in answered:
            cid = getattr(m, "tool_call_id", None)
            if cid in steps.open:
                steps.tool_result(cid, output=m)
        return steps

    def _close(self, steps: MessageSteps, messages: Any) -> None:
        if steps.rec.done:
            return
        steps.unanswered()
        steps.rec.finish(success=None)

    def _after(self, steps: MessageSteps, messages: list[Any], ai: Any, latency_ms: float) -> None:
        steps.model_turn(messages, ai, latency_ms)
        if not getattr(ai, "tool_calls", None):
            success, source = _verdict(self.verifier, [*messages, ai])
            steps.rec.finish(success=success, source=source)
            self.steps = None

    def invoke(self, input: Any, config: Optional[RunnableConfig] = None, **kw: Any) -> Any:
        messages = self._messages(input)
        with self._lock:
            steps = self._before(messages)
        t0 = time.perf_counter()
        ai = self.model.invoke(messages, config, **kw)
        with self._lock:
            self._after(steps, messages, ai, (time.perf_counter() - t0) * 1000)
        return ai

    async def ainvoke(self, input: Any, config: Optional[RunnableConfig] = None, **kw: Any) -> Any:
        import asyncio

        messages = self._messages(input)
        # Recording writes are blocking SQL: keep them off the event loop.
        steps = await asyncio.to_thread(self._locked, self._before, messages)
        t0 = time.perf_counter()
        ai = await self.model.ainvoke(messages, config, **kw)
        await asyncio.to_thread(self._locked, self._after, steps, messages, ai, (time.perf_counter() - t0) * 1000)
        return ai

    def _locked(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            return fn(*args)

    def close(self) -> None:
        """Finish the open episode (if the loop stopped without a final answer)."""
        with self._lock:
            if self.steps is not None:
                self._close(self.steps, [])
                self.steps = None


# ----------------------------------------------------------------------------- after the fact


def record_messages(memory: "SkillMemory", messages: Sequence[Any], *, goal: str = "", task_type: str = "",
                    task_id: str = "", split: str = "live", episode_id: Optional[str] = None,
                    verifier: Optional[StateVerifier] = None, success: Optional[bool] = None,
                    source: Optional[str] = None, namespace: Optional[str] = None,
                    environment: str = "langgraph") -> EpisodeRecorder:
    """Record a finished LangChain message list (a ReAct agent's run) as a finished episode.

    Same step layout as the live recorder: one step per tool call (parallel calls of one AI
    message share its observation and `call_group`; each gets its own result by
    `tool_call_id`), the final AI answer as the last step. The outcome is `success` with its
    `source`, else `verifier({"messages": messages})`, else `unknown` (settle it later with
    `memory.feedback(ep.id, success=..., source=...)`: the episode is finished either way,
    so reflection sees it).
    """
    messages = list(messages)
    rec = memory.start_episode(goal=goal or task_of(messages), task_type=task_type, task_id=task_id, split=split,
                               namespace=namespace, environment=environment, episode_id=episode_id)
    steps = MessageSteps(rec)
    results = {getattr(m, "tool_call_id", None): m for m in messages if _msg_type(m) == "tool"}
    for i, m in enumerate(messages):
        if _msg_type(m) != "ai":
            continue
        steps.model_turn(messages[:i], m)
        for call in getattr(m, "tool_calls", None) or []:
            out = results.get(call.get("id"))
            if out is not None:
                steps.tool_result(call.get("id"), output=out)
    steps.unanswered()
    if success is None:
        success, source = _verdict(verifier, {"messages": messages})
    rec.finish(success=success, source=source)
    return rec
