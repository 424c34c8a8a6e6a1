"""The agent loop as a LangGraph graph: retrieve → act → environment step → record, until done.

    graph = build_agent_graph(env, agent, memory, retrieve=True)
    final = graph.invoke(initial_state(env, split="train"), {"recursion_limit": 500})

`agent` is anything `wrap()` accepts (a callable, Runnable or compiled graph) that maps
the state (goal, observation, context, admissible, history) to a command; `wrap()` records
each step with the environment's next-state feedback and finishes the episode with the
environment's verdict. Retrieval puts the memory's context into the state before each
action (or once per episode, `retrieve_every=0`), and each retrieval is logged in SQL.
The `agent` graph of langgraph.json (one household task, a random agent) is built by the
harness, in eval/graphs.py: this file imports no environment.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Optional, TypedDict

from langgraph.graph import END, START, StateGraph

from skillmem import RecordedNode, SkillMemory, wrap
from skillmem.tokens import count_tokens


class AgentState(TypedDict, total=False):
    goal: str
    observation: str
    admissible: list[str]
    history: list[tuple[str, str]]  # (action, feedback), oldest first
    context: str  # the text injected into the agent's prompt
    context_obj: Any  # the retrieved items, for policies that use structured hints
    context_tokens: int
    action: str
    reward: float
    done: bool
    won: bool
    episode_id: str
    task_type: str
    task_id: str
    split: str
    policy_version: str
    step: int


Retriever = Callable[[AgentState], Any]  # returns an object with .text (and items), or None


def initial_state(env: Any, *, split: str, policy_version: Optional[str] = None) -> AgentState:
    """Reset the environment and build the first state of an episode."""
    obs, info = env.reset()
    return AgentState(goal=info["goal"], observation=obs, admissible=list(info["admissible_commands"]),
                      history=[], context="", context_obj=None, context_tokens=0, reward=0.0, done=False,
                      won=False, task_type=info["task_type"], task_id=info["task_id"], split=split,
                      policy_version=policy_version or "", step=0)


def build_agent_graph(env: Any, agent: Any, memory: SkillMemory, *, retriever: Optional[Retriever] = None,
                      retrieve_every: int = 0, environment: str = "household", step_limit: int = 50):
    """Compile the loop for one environment instance; `retrieve_every=0` retrieves once per episode."""
    node = agent if isinstance(agent, RecordedNode) else wrap(agent, memory, environment=environment)

    def retrieve(state: AgentState) -> dict:
        step = state.get("step", 0)
        due = step == 0 or (retrieve_every > 0 and step % retrieve_every == 0)
        if retriever is None or not due:
            return {}
        ctx = retriever(state)
        if ctx is None:
            return {}
        text = getattr(ctx, "text", "") or ""
        return {"context": text, "context_obj": ctx, "context_tokens": getattr(ctx, "tokens", None) or count_tokens(text)}

    def act(state: AgentState) -> dict:
        return node(state)

    def environment_step(state: AgentState) -> dict:
        obs, reward, done, info = env.step(state["action"])
        step = state.get("step", 0) + 1
        done = bool(done) or step >= step_limit
        return {"observation": obs, "reward": float(reward), "done": done, "won": bool(info.get("won")),
                "admissible": list(info.get("admissible_commands") or []), "step": step,
                "history": [*state.get("history", []), (state["action"], obs)]}

    g = StateGraph(AgentState)
    g.add_node("retrieve", retrieve)
    g.add_node("act", act)
    g.add_node("environment", environment_step)
    g.add_edge(START, "retrieve")
    g.add_edge("retrieve", "act")
    # After the last environment step, `act` runs once more: the wrapped node writes the
    # final step with its feedback and finishes the episode, then the loop ends.
    g.add_conditional_edges("act", lambda s: END if s.get("done") else "environment")
    g.add_conditional_edges("environment", lambda s: "act" if s.get("done") else "retrieve")
    return g.compile()


def random_agent(seed: int = 0) -> Callable[[dict], str]:
    """Uniform-random over admissible commands: the baseline every condition must beat."""
    rng = random.Random(seed)
    return lambda state: rng.choice(state["admissible"]) if state.get("admissible") else "look"
