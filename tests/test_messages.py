"""Message agents: live recording of tool calls, wrap() of compiled agents and chat models,
record_messages after the fact, and memory in create_react_agent's / create_agent's prompt."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.prebuilt import ToolNode, create_react_agent
from sqlalchemy import text

from conftest import open_memory
from scripted_chat import ScriptedChat, calls
from skillmem import Lesson, RecordedAgent, RecordingCallback, SkillMemory, memory_prompt, record_messages, wrap

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:create_react_agent has been moved")


@tool
def lookup_order(order_id: str) -> str:
    """Look up an order: its total and currency."""
    return f"order {order_id}: total 30.00 EUR, paid"


@tool
def refund(order_id: str, amount: float) -> str:
    """Refund an amount of an order, in the order's currency."""
    if amount > 30:
        raise ValueError(f"refund of {amount} exceeds the order total 30.00 EUR")
    return f"refunded {amount} EUR on {order_id}"


def _policy(msgs):
    """Looks up two orders in parallel, refunds too much once, retries, answers."""
    turns = sum(1 for m in msgs if m.type == "ai")
    if turns == 0:
        return calls(("lookup_order", {"order_id": "A1"}), ("lookup_order", {"order_id": "B2"}))
    if turns == 1:
        return calls(("refund", {"order_id": "A1", "amount": 32.5}))
    if turns == 2:
        return calls(("refund", {"order_id": "A1", "amount": 30.0}))
    return AIMessage(content=[{"type": "text", "text": "Refunded 30.00 EUR on order A1."}])


def _agent(policy=_policy, **kw):
    return create_react_agent(ScriptedChat(policy=policy), ToolNode([lookup_order, refund], handle_tool_errors=True),
                              **kw)


def _refunded(state) -> bool:
    return "refunded 30" in str(state["messages"][-1].content).lower()


# ---------------------------------------------------------------- live recording


def test_wrap_records_a_react_agent_tool_call_by_tool_call(db_url):
    mem = SkillMemory(db_url)
    agent = wrap(_agent(), mem, verifier=_refunded, split="train", task_type="refund")
    assert isinstance(agent, RecordedAgent)
    out = agent.invoke({"messages": [("human", "Refund order A1 in full")]}, task_id="t-1")
    assert "Refunded" in str(out["messages"][-1].content)  # the agent's own result, unchanged
    row = mem.get_episode(agent.last_episode_id)
    assert (row.status.value, row.outcome.value, row.outcome_source.value) == ("finished", "success", "verifier")
    assert (row.goal, row.task_id, row.task_type, row.split, row.num_steps) == (
        "Refund order A1 in full", "t-1", "refund", "train", 5)
    s = mem.steps(row.id)
    ids = {m.tool_call_id for m in out["messages"] if isinstance(m, ToolMessage)}
    assert {x.tool_call_id for x in s[:4]} == ids
    # Parallel calls: one turn, the same observation, each its own result.
    assert s[0].call_group == s[1].call_group == 0 and s[0].observation == s[1].observation == "Refund order A1 in full"
    assert sorted(x.action for x in s[:2]) == ['lookup_order(order_id="A1")', 'lookup_order(order_id="B2")']
    assert {x.feedback for x in s[:2]} == {"order A1: total 30.00 EUR, paid", "order B2: total 30.00 EUR, paid"}
    assert s[2].action == 'refund(order_id="A1", amount=32.5)' and s[2].tool_args == {"order_id": "A1",
                                                                                            "amount": 32.5}
    assert "exceeds the order total" in s[2].error and "exceeds" in s[2].feedback and s[3].error is None
    assert s[2].observation.startswith("[lookup_order] order A1")  # what the model read before that turn
    # The final answer is the last step, its list content stored as text (never a repr).
    assert s[4].action == "Refunded 30.00 EUR on order A1." and s[4].tool_call_id is None and s[4].call_group == 3
    assert all(x.latency_ms is not None and x.latency_ms >= 0 for x in s)
    # Token usage once per model turn, on the turn's first step.
    assert s[0].prompt_tokens > 0 and [x.prompt_tokens is None for x in s[:2]].count(True) == 1
    assert s[4].completion_tokens > 0


def test_callback_handler_alone_records_each_run(sqlite_url):
    mem = SkillMemory(sqlite_url)
    seen = []
    handler = RecordingCallback(mem, verifier=lambda st: seen.append(st) or _refunded(st), split="train")
    agent = _agent()
    for order in ("A1", "A1"):
        agent.invoke({"messages": [HumanMessage(f"Refund order {order}")]}, {"callbacks": [handler]})
    assert len(handler.finished) == 2 and len(set(handler.finished)) == 2
    assert all(mem.get_episode(e).outcome.value == "success" for e in handler.finished)
    assert "messages" in seen[0]  # the verifier got the final state, answer included


def test_crashed_run_is_interrupted_not_failed(sqlite_url):
    mem = SkillMemory(sqlite_url)

    def boom(msgs):
        if any(m.type == "tool" for m in msgs):
            raise RuntimeError("model endpoint down")
        return calls(("lookup_order", {"order_id": "A1"}))

    agent = wrap(_agent(boom), mem, verifier=_refunded)
    with pytest.raises(RuntimeError):
        agent.invoke({"messages": [("human", "Refund order A1")]})
    [ep] = mem.episodes()
    assert ep.status.value == "interrupted" and ep.outcome.value == "unknown" and "endpoint down" in ep.reflection_error
    assert [s.feedback for s in mem.steps(ep.id)] == ["order A1: total 30.00 EUR, paid"]  # written before the crash


def test_async_runs_are_recorded(sqlite_url):
    mem = SkillMemory(sqlite_url)
    agent = wrap(_agent(), mem, verifier=_refunded)

    async def main():
        return await asyncio.gather(*(agent.ainvoke({"messages": [("human", f"Refund order A1 #{i}")]})
                                      for i in range(3)))

    asyncio.run(main())
    eps = mem.episodes()
    assert len(eps) == 3 and all(e.num_steps == 5 and e.outcome.value == "success" for e in eps)
    assert sorted(e.goal for e in eps) == [f"Refund order A1 #{i}" for i in range(3)]


def test_state_to_command_graph_is_still_a_node(sqlite_url):
    from langgraph.graph import END, START, StateGraph
    from typing import TypedDict

    class S(TypedDict, total=False):
        observation: str
        action: str

    g = StateGraph(S)
    g.add_node("decide", lambda s: {"action": "inc"})
    g.add_edge(START, "decide")
    g.add_edge("decide", END)
    node = wrap(g.compile(), SkillMemory(sqlite_url))
    assert type(node).__name__ == "RecordedNode"
    assert node({"observation": "counter is 0", "goal": "count"})["action"] == "inc"


def test_verifier_of_a_node_sees_the_final_state(sqlite_url):
    mem = SkillMemory(sqlite_url)
    got = {}

    def verifier(rec, state):
        got.update(state)
        return state.get("answer") == 5

    node = wrap(lambda s: "answer 5", mem, verifier=verifier)
    ep = node({"goal": "add 2 and 3", "observation": "start"})["episode_id"]
    node({"goal": "add 2 and 3", "observation": "submitted", "episode_id": ep, "done": True, "answer": 5})
    assert got["answer"] == 5 and mem.get_episode(ep).outcome.value == "success"
    # A verifier that takes only the recorder still works.
    node2 = wrap(lambda s: "x", mem, verifier=lambda rec: rec.num_steps == 1)
    e2 = node2({"goal": "g", "observation": "o"})["episode_id"]
    node2({"goal": "g", "observation": "o2", "episode_id": e2, "done": True})
    assert mem.get_episode(e2).outcome.value == "success"


# ---------------------------------------------------------------- chat model bound to tools


def test_wrap_a_chat_model_bound_to_tools(sqlite_url):
    mem = SkillMemory(sqlite_url)
    model = wrap(ScriptedChat(policy=_policy).bind_tools([lookup_order, refund]), mem, verifier=_refunded_msgs)
    tools = {"lookup_order": lookup_order, "refund": refund}
    msgs = [HumanMessage("Refund order A1")]
    while True:  # the user's own loop, unchanged
        ai = model.invoke(msgs)
        msgs.append(ai)
        if not ai.tool_calls:
            break
        for c in ai.tool_calls:
            try:
                msgs.append(ToolMessage(tools[c["name"]].invoke(c["args"]), tool_call_id=c["id"], name=c["name"]))
            except ValueError as e:
                msgs.append(ToolMessage(f"Error: {e}", tool_call_id=c["id"], name=c["name"], status="error"))
    [ep] = mem.episodes()
    s = mem.steps(ep.id)
    assert ep.outcome.value == "success" and len(s) == 5 and s[2].error and s[2].tool_call_id
    assert s[1].action == 'lookup_order(order_id="B2")' and s[4].action.startswith("Refunded")


def _refunded_msgs(messages) -> bool:
    return "refunded 30" in str(messages[-1].content).lower()


# ---------------------------------------------------------------- after the fact


def test_record_messages_after_the_fact(sqlite_url):
    mem = SkillMemory(sqlite_url)
    out = _agent().invoke({"messages": [("human", "Refund order A1")]})
    ep = record_messages(mem, out["messages"], split="train", task_id="t9", task_type="refund",
                         episode_id="ep-after", verifier=_refunded)
    row = mem.get_episode("ep-after")
    assert (row.status.value, row.outcome.value, row.split, row.task_id) == ("finished", "success", "train", "t9")
    s = mem.steps(ep.id)
    assert len(s) == 5 and s[0].call_group == s[1].call_group == 0 and s[0].observation == s[1].observation
    assert s[0].feedback != s[1].feedback  # each parallel call has its own result, not the other's
    assert s[-1].action == "Refunded 30.00 EUR on order A1."
    # Without a verifier the outcome can be settled later, and reflection then sees it.
    ep2 = record_messages(mem, out["messages"], split="train")
    assert mem.get_episode(ep2.id).status.value == "finished"
    mem.feedback(ep2.id, success=False, source="verifier", text="wrong order")
    row2 = mem.get_episode(ep2.id)
    assert (row2.outcome.value, row2.reflection_status.value) == ("failure", "pending")


# ---------------------------------------------------------------- memory in the prompt


def _memory_with_lesson(db, tmp_path):
    m = open_memory(db, tmp_path)
    m.add_lesson(Lesson(trigger="refunding an order paid in a foreign currency",
                        fix="call convert_currency first and refund the converted amount",
                        bad_action='refund({"order_id": "[order]", "amount": "[usd amount]"})', scope="general"))
    return m


def test_prompt_hook_one_system_message_once_per_episode(db_url, tmp_path):
    m = _memory_with_lesson(db_url, tmp_path)
    model = ScriptedChat(policy=_policy, seen=[])
    agent = wrap(create_react_agent(model, ToolNode([lookup_order, refund], handle_tool_errors=True),
                                    prompt=memory_prompt(m, "You are a support agent.")), m, verifier=_refunded)
    agent.invoke({"messages": [("human", "Refund order A1, paid in EUR")]})
    assert len(model.seen) == 4
    for msgs in model.seen:  # every model call: exactly one system message, first, memory included
        systems = [x for x in msgs if isinstance(x, SystemMessage)]
        assert len(systems) == 1 and msgs[0] is systems[0]
        assert systems[0].content.startswith("You are a support agent.") and "convert_currency" in systems[0].content
    ep = agent.last_episode_id
    with m.engine.connect() as c:
        rows = c.execute(text("SELECT episode_id, step_index FROM retrievals")).fetchall()
    assert rows == [(ep, 0)]  # retrieved once, against the recorded episode
    m.close()


def test_prompt_hook_schedule_and_errors(sqlite_url, tmp_path):
    m = _memory_with_lesson(sqlite_url, tmp_path)
    hook = memory_prompt(m, every=2, on_error=True)
    model = ScriptedChat(policy=_policy, seen=[])
    agent = wrap(create_react_agent(model, ToolNode([lookup_order, refund], handle_tool_errors=True),
                                    prompt=hook), m)
    agent.invoke({"messages": [("human", "Refund order A1")]})
    with m.engine.connect() as c:
        steps = [r[0] for r in c.execute(text("SELECT DISTINCT step_index FROM retrievals ORDER BY 1"))]
    assert steps == [0, 2]  # calls 0 and 2 by schedule; call 2 also follows the refund error
    with pytest.raises(ValueError, match="every must be"):
        memory_prompt(m, every=0)
    m.close()


def test_prompt_hook_as_pre_model_hook_keeps_state_clean(sqlite_url, tmp_path):
    m = _memory_with_lesson(sqlite_url, tmp_path)
    model = ScriptedChat(policy=_policy, seen=[])
    hook = memory_prompt(m)
    agent = wrap(create_react_agent(model, ToolNode([lookup_order, refund], handle_tool_errors=True),
                                    pre_model_hook=hook.pre_model_hook), m)
    out = agent.invoke({"messages": [("human", "Refund order A1")]})
    assert not any(isinstance(x, SystemMessage) for x in out["messages"])  # the conversation is untouched
    assert all(sum(isinstance(x, SystemMessage) for x in msgs) == 1 for msgs in model.seen)
    m.close()


def test_prompt_hook_with_the_callback_handler_alone(sqlite_url, tmp_path):
    m = _memory_with_lesson(sqlite_url, tmp_path)
    handler = RecordingCallback(m)
    agent = _agent(prompt=memory_prompt(m))
    agent.invoke({"messages": [("human", "Refund order A1")]}, {"callbacks": [handler]})
    with m.engine.connect() as c:
        assert c.execute(text("SELECT DISTINCT episode_id FROM retrievals")).scalars().all() == handler.finished
    m.close()


def test_create_agent_middleware(sqlite_url, tmp_path):
    agents = pytest.importorskip("langchain.agents")
    m = _memory_with_lesson(sqlite_url, tmp_path)
    model = ScriptedChat(policy=_policy, seen=[])
    hook = memory_prompt(m, "You are a support agent.")
    agent = wrap(agents.create_agent(model, [lookup_order, refund], middleware=[hook.middleware()],
                                     system_prompt="Be brief."), m, verifier=_refunded)
    try:
        agent.invoke({"messages": [("human", "Refund order A1")]})
    except ValueError:
        pass  # create_agent's ToolNode re-raises tool errors by default; the episode is still recorded
    for msgs in model.seen:
        systems = [x for x in msgs if isinstance(x, SystemMessage)]
        assert len(systems) == 1 and "Be brief." in systems[0].content and "convert_currency" in systems[0].content
    ep = m.episodes()[0]
    with m.engine.connect() as c:
        assert c.execute(text("SELECT DISTINCT episode_id FROM retrievals")).scalars().all() == [ep.id]
    m.close()


def test_aretrieve(sqlite_url, tmp_path):
    m = _memory_with_lesson(sqlite_url, tmp_path)
    ctx = asyncio.run(m.aretrieve("refund an order paid in EUR"))
    assert "convert_currency" in ctx.text
    m.close()


def test_retrieval_node_on_a_messages_state(sqlite_url, tmp_path):
    from skillmem import retrieval_node

    m = _memory_with_lesson(sqlite_url, tmp_path)
    node = retrieval_node(m, as_system_message=True)
    state = {"messages": [HumanMessage("Refund order A1 paid in a foreign currency")]}
    a, b = node(state), node(state)
    assert "convert_currency" in a["context"]  # the query came from the messages, not an empty goal
    assert a["episode_id"] == b["episode_id"]  # one episode, not one per call
    assert a["messages"][0].id == b["messages"][0].id  # add_messages replaces it instead of appending
    m.close()


# ---------------------------------------------------------------- import cost


def test_import_skillmem_is_light():
    code = ("import sys, skillmem\nfrom skillmem import SkillMemory, wrap, memory_prompt\n"
            "print(sorted(m for m in ('faiss', 'torch', 'sentence_transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.strip() == "[]"


_VICTIM = """
import sys, time, warnings
warnings.filterwarnings("ignore")
sys.path.insert(0, sys.argv[2])
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.prebuilt import ToolNode, create_react_agent
from scripted_chat import ScriptedChat, calls
from skillmem import SkillMemory, wrap

@tool
def slow(n: int) -> str:
    \"\"\"A tool that hangs on its third call.\"\"\"
    if n == 2:
        print("hanging", flush=True)
        time.sleep(600)
    return f"done {n}"

def policy(msgs):
    n = sum(1 for m in msgs if m.type == "tool")
    return calls(("slow", {"n": n}))

mem = SkillMemory(sys.argv[1])
agent = wrap(create_react_agent(ScriptedChat(policy=policy), ToolNode([slow])), mem)
agent.invoke({"messages": [("human", "count slowly")]}, episode_id="victim")
"""


def test_kill_9_mid_run_loses_only_the_call_in_flight(db_url, tmp_path):
    tests = os.path.dirname(__file__)
    p = subprocess.Popen([sys.executable, "-c", _VICTIM, db_url, tests], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert p.stdout.readline().strip() == "hanging", "the agent process did not reach its third tool call"
    os.kill(p.pid, 9)
    p.wait(timeout=30)
    mem = SkillMemory(db_url)  # opening the store settles episodes whose process is gone
    row = mem.get_episode("victim")
    assert row.status.value == "interrupted" and row.goal == "count slowly"
    assert [(s.action, s.feedback) for s in mem.steps("victim")] == [('slow(n=0)', "done 0"),
                                                                       ('slow(n=1)', "done 1")]


def test_stream_and_a_wrapped_agent_inside_another_graph(sqlite_url):
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    mem = SkillMemory(sqlite_url)
    agent = wrap(_agent(), mem, verifier=_refunded)
    chunks = list(agent.stream({"messages": [("human", "Refund order A1")]}, stream_mode="updates"))
    assert chunks and mem.get_episode(agent.last_episode_id).outcome.value == "success"

    class Outer(TypedDict, total=False):
        ticket: str
        answer: str

    def support(state: Outer) -> dict:
        out = agent.invoke({"messages": [("human", state["ticket"])]})
        return {"answer": str(out["messages"][-1].content)}

    g = StateGraph(Outer)
    g.add_node("support", support)
    g.add_edge(START, "support")
    g.add_edge("support", END)
    g.compile().invoke({"ticket": "Refund order A1 again"})
    row = mem.get_episode(agent.last_episode_id)  # the agent's run is the episode, not the outer graph's
    assert row.goal == "Refund order A1 again" and row.num_steps == 5 and row.outcome.value == "success"


def test_async_chat_model_loop_is_recorded(sqlite_url):
    mem = SkillMemory(sqlite_url)
    model = wrap(ScriptedChat(policy=_policy).bind_tools([lookup_order, refund]), mem, verifier=_refunded_msgs)
    tools = {"lookup_order": lookup_order, "refund": refund}

    async def loop():
        msgs = [HumanMessage("Refund order A1")]
        while True:
            ai = await model.ainvoke(msgs)
            msgs.append(ai)
            if not ai.tool_calls:
                return msgs
            for c in ai.tool_calls:
                try:
                    out = await tools[c["name"]].ainvoke(c["args"])
                    msgs.append(ToolMessage(out, tool_call_id=c["id"], name=c["name"]))
                except ValueError as e:
                    msgs.append(ToolMessage(f"Error: {e}", tool_call_id=c["id"], name=c["name"], status="error"))

    asyncio.run(loop())
    [ep] = mem.episodes()
    assert ep.outcome.value == "success" and ep.num_steps == 5
