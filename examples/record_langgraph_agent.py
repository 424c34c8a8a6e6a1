"""A LangGraph agent with tools, wrapped by skillmem, run on a few tasks, then inspected with SQL.

    python examples/record_langgraph_agent.py [--db /tmp/example.db]

The agent is an ordinary function (it could be a Runnable or a compiled graph): it reads the
task and the last tool output and picks the next tool call. It makes a typical mistake on
some tasks (it calls `divide` with a zero). `wrap()` records every step with the tool's
output as next-state feedback; a verifier checks the final answer, so the outcome never
rests on the agent's own claim.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import TypedDict

from langgraph.graph import END, START, StateGraph

from skillmem import SkillMemory, wrap
from skillmem.cli import main as skillmem_cli

TOOLS = {
    "add": lambda a, b: a + b,
    "multiply": lambda a, b: a * b,
    "divide": lambda a, b: a / b,
}


class State(TypedDict, total=False):
    goal: str
    numbers: list[float]
    observation: str
    action: str
    answer: float
    done: bool
    won: bool
    episode_id: str
    split: str
    task_type: str


def agent(state: dict) -> str:
    """The user's own agent, unchanged: picks the next tool call as text."""
    a, b = state["numbers"]
    if state["observation"].startswith("Task"):
        op = "divide" if "divide" in state["goal"] else "multiply" if "product" in state["goal"] else "add"
        # A habit this agent has: it divides by the second number even when it is zero.
        return f"{op}({a}, {b})"
    return f"answer({state['observation'].split('= ')[-1]})"


def tools(state: State) -> dict:
    """The environment: runs the tool and reports what happened, errors included."""
    action = state["action"]
    name, args = action.split("(", 1)
    args = args.rstrip(")")
    if name == "answer":
        expected = _expected(state)
        try:
            given = float(args)
        except ValueError:
            given = None
        return {"observation": f"submitted {args}", "done": True, "won": given == expected}
    a, b = (float(x) for x in args.split(","))
    try:
        return {"observation": f"{name}({a}, {b}) = {TOOLS[name](a, b)}"}
    except ZeroDivisionError:
        return {"observation": "Error: division by zero. Nothing happens.", "done": True, "won": False}


def _expected(state: State) -> float:
    a, b = state["numbers"]
    g = state["goal"]
    return a / b if "divide" in g else a * b if "product" in g else a + b


def build(memory: SkillMemory):
    g = StateGraph(State)
    g.add_node("agent", wrap(agent, memory, environment="calculator"))
    g.add_node("tools", tools)
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", lambda s: END if s.get("done") else "tools")
    g.add_edge("tools", "agent")
    return g.compile()


TASKS = [
    ("add 2 and 3", [2, 3], "arithmetic_add"),
    ("the product of 4 and 5", [4, 5], "arithmetic_multiply"),
    ("divide 9 by 3", [9, 3], "arithmetic_divide"),
    ("divide 1 by 0", [1, 0], "arithmetic_divide"),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", default=str(Path(tempfile.mkdtemp()) / "example.db"))
    args = p.parse_args(argv)
    memory = SkillMemory(args.db)
    graph = build(memory)
    for goal, numbers, task_type in TASKS:
        final = graph.invoke({"goal": goal, "numbers": numbers, "observation": f"Task: {goal}",
                              "split": "train", "task_type": task_type})
        print(f"{goal:28s} -> {'success' if final.get('won') else 'failure'}  (episode {final['episode_id'][:8]})")
    print(f"\n$ skillmem --db {args.db} sql \"SELECT task_type, outcome, num_steps FROM episodes\"")
    skillmem_cli(["--db", args.db, "sql", "SELECT task_type, outcome, outcome_source, num_steps FROM episodes"])
    print(f"\n$ skillmem --db {args.db} sql \"SELECT s.action, s.feedback FROM steps s JOIN episodes e ...\"")
    skillmem_cli(["--db", args.db, "sql", "SELECT s.action, s.feedback FROM steps s JOIN episodes e "
                  "ON e.id = s.episode_id WHERE e.outcome = 'failure' ORDER BY s.id"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
