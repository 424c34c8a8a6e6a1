"""The graphs named in langgraph.json load, and the agent graph plays an episode end to end."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from langgraph.graph.state import CompiledStateGraph

ROOT = Path(__file__).resolve().parent.parent
GRAPHS = json.loads((ROOT / "langgraph.json").read_text())["graphs"]


def _load(ref: str):
    path, attr = ref.split(":")
    assert (ROOT / path).exists(), f"langgraph.json names {path}, which does not exist"
    module = Path(path).with_suffix("").as_posix().lstrip("./").replace("/", ".")
    return getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_named_graph_loads(name):
    assert isinstance(_load(GRAPHS[name]), CompiledStateGraph)


def test_agent_graph_plays_and_records_an_episode(tmp_path):
    from eval.envs.base import TaskSpec, make_env
    from graphs.agent import build_agent_graph, initial_state, random_agent
    from skillmem import SkillMemory

    memory = SkillMemory(tmp_path / "g.db")
    env = make_env(TaskSpec(env="household", split="train", task_id="", seed=3), step_limit=12)
    graph = build_agent_graph(env, random_agent(0), memory, step_limit=12)
    final = graph.invoke(initial_state(env, split="train"), {"recursion_limit": 100})
    row = memory.get_episode(final["episode_id"])
    assert row.status.value == "finished" and row.outcome_source.value == "environment"
    steps = memory.steps(row.id)
    assert len(steps) == final["step"] == row.num_steps
    assert [s.feedback for s in steps] == [obs for _, obs in final["history"]]
