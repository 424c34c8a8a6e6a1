"""The agent graph on one household game: the `agent` graph of langgraph.json (`langgraph dev`).

graphs/agent.py builds the loop for any environment; the harness supplies the environment
here, so that the graphs never import the harness (data flows harness -> graphs -> skillmem).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from graphs.agent import build_agent_graph, random_agent
from skillmem import SkillMemory


def _demo_graph():
    """One household task with a random agent, for `langgraph dev` and smoke tests."""
    from eval.envs.base import TaskSpec, make_env

    env = make_env(TaskSpec(env="household", split="train", task_id="", seed=0))
    memory = SkillMemory(Path(tempfile.mkdtemp()) / "agent-graph.db")
    return build_agent_graph(env, random_agent(0), memory)


def __getattr__(name: str) -> Any:
    # Built lazily: importing this module must not create databases or environments.
    if name == "graph":
        return _demo_graph()
    raise AttributeError(name)
