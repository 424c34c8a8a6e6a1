"""Reflection as a LangGraph graph: load episode → analyse → write (lesson or demo) → check → store.

    graph = build_reflect_graph(memory, OfflineWriter())
    graph.invoke({"episode_id": "..."})      # or {} to claim the next episode of the queue

The stages are skillmem.reflect.queue's (the same code `skillmem reflect` runs): claims,
idempotency, skips of unverified or evaluation episodes, quarantine. The module-level `graph`
(named in langgraph.json) takes its memory and writer from the run's config
(`configurable.memory`, `configurable.writer`, or `configurable.db` to open a SkillMemory),
else opens the default store with the default writer.
"""

from __future__ import annotations

from typing import Any, Optional, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from skillmem import SkillMemory
from skillmem.llm import LLMError
from skillmem.reflect import queue as q
from skillmem.reflect.safety import UnsafeLesson
from skillmem.reflect.writers import default_writer
from skillmem.store import owner_tag


class ReflectState(TypedDict, total=False):
    episode_id: str  # omitted: the graph claims the next pending episode
    namespace: str
    job: Any  # skillmem.reflect.queue.Job while the episode travels through the stages
    owner: str
    result: dict[str, Any]


def build_reflect_graph(memory: Optional[SkillMemory] = None, writer: Any = None, domain: Any = None) -> Any:
    """A compiled StateGraph over the reflection stages; memory and writer fixed, or from the config.

    `domain` (or ``configurable["domain"]``) is the world's Domain; the default is TextDomain."""

    def mem(config: Any) -> SkillMemory:
        c = (config or {}).get("configurable", {})
        if memory is not None:
            return memory
        if "memory" not in c:
            c["memory"] = SkillMemory(c.get("db"))
        return c["memory"]

    def wr(config: Any) -> Any:
        c = (config or {}).get("configurable", {})
        return writer if writer is not None else c.get("writer") or default_writer()

    def load(state: ReflectState, config: Optional[RunnableConfig] = None) -> ReflectState:
        m = mem(config)
        me = f"{q.CLAIM_PREFIX}{owner_tag()}:graph"
        ep_id = state.get("episode_id")
        if ep_id:
            # An explicit episode is claimed the same way, so a drain running beside us skips it.
            if not q.claim_episode(m, me, ep_id):
                ep = m.get_episode(ep_id)
                return {"result": {"status": getattr(ep.reflection_status, "value", ep.reflection_status),
                                   "reason": "not waiting for reflection (already done, skipped, or claimed)"}}
        else:
            ep_id = q.claim_next(m, me, namespace=state.get("namespace"))
            if ep_id is None:
                return {"result": {"status": "empty", "reason": "no episode waits for reflection"}}
        dom = domain if domain is not None else (config or {}).get("configurable", {}).get("domain") or \
            getattr(wr(config), "domain", None)
        job = q.stage_load(m, q.Job(ep_id, domain=dom))
        if job.skip_reason is None and q.already_stored(m, ep_id):
            job.result = {"status": "done", "action": "already stored"}
        return {"episode_id": ep_id, "job": job, "owner": me}

    def analyse(state: ReflectState, config: Optional[RunnableConfig] = None) -> ReflectState:
        return {"job": q.stage_analyse(mem(config), state["job"])}

    def write(state: ReflectState, config: Optional[RunnableConfig] = None) -> ReflectState:
        try:
            return {"job": q.stage_write(wr(config), state["job"])}
        except (LLMError, UnsafeLesson, ValueError) as exc:
            return _failed(mem(config), state, exc)

    def check(state: ReflectState, config: Optional[RunnableConfig] = None) -> ReflectState:
        try:
            return {"job": q.stage_check(mem(config), state["job"], getattr(wr(config), "safety", None))}
        except UnsafeLesson as exc:
            return _failed(mem(config), state, exc)

    def store(state: ReflectState, config: Optional[RunnableConfig] = None) -> ReflectState:
        job = q.stage_store(mem(config), state["job"])
        return {"job": job, "result": job.result}

    def after_load(state: ReflectState) -> str:
        if state.get("result"):
            return END
        job = state["job"]
        return "store" if job.skip_reason is not None or job.result else "analyse"

    def after_step(state: ReflectState) -> str:
        return END if state.get("result") else "next"

    g = StateGraph(ReflectState)
    g.add_node("load", load)
    g.add_node("analyse", analyse)
    g.add_node("write", write)
    g.add_node("check", check)
    g.add_node("store", store)
    g.add_edge(START, "load")
    g.add_conditional_edges("load", after_load, {"analyse": "analyse", "store": "store", END: END})
    g.add_edge("analyse", "write")
    g.add_conditional_edges("write", after_step, {"next": "check", END: END})
    g.add_conditional_edges("check", after_step, {"next": "store", END: END})
    g.add_edge("store", END)
    return g.compile()


def _failed(memory: SkillMemory, state: ReflectState, exc: Exception) -> ReflectState:
    """The writer gave up: the episode stays queued with the error recorded."""
    msg = f"{type(exc).__name__}: {exc}"
    owner = state.get("owner", "")
    q._give_up_for_now(memory, state["episode_id"], owner, msg, q.MAX_ATTEMPTS)
    return {"result": {"status": "error", "error": msg}}


graph = build_reflect_graph()
