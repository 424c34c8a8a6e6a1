"""A support agent that is not a household game: a LangGraph ReAct agent with three tools.

A scripted chat model drives `create_react_agent` through several kinds of failure (a wrong
amount, another customer's order id, lower-case currency codes, a step skipped that only the
verifier names, a loop, a person's correction); each run is recorded with `record_messages`,
its outcome set by a verifier, and reflected on with the generic `TextDomain` (no pack).
Every failure must give a lesson that names its real mistake without quoting another
episode's ids or amounts, and every demonstration must replay without error against the very
tools it came from, on orders it has never seen.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

import pytest

pytest.importorskip("langgraph.prebuilt")
from langchain_core.language_models.chat_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatResult  # noqa: E402
from langchain_core.tools import ToolException, tool  # noqa: E402
from langgraph.prebuilt import ToolNode, create_react_agent  # noqa: E402

from skillmem import SkillMemory  # noqa: E402
from skillmem.domain import StepView, TextDomain, parse_call, resolve  # noqa: E402
from skillmem.embed import HashingEmbedder  # noqa: E402
from skillmem.record import record_messages  # noqa: E402
from skillmem.reflect import OfflineWriter, reflect_pending  # noqa: E402

ORDERS = {"ORD-1001": 80.0, "ORD-1002": 45.5, "ORD-1003": 20.0, "ORD-1004": 64.0, "ORD-1005": 30.0,
          "ORD-1006": 12.0, "ORD-1007": 55.0, "ORD-1008": 70.0, "ORD-2001": 12.5, "ORD-2002": 99.0}
RATES = {("USD", "EUR"): 0.9, ("USD", "GBP"): 0.8}
REFUNDED: dict[str, float] = {}


@tool
def lookup_order(order_id: str) -> str:
    """Look up an order: its total and currency."""
    if order_id not in ORDERS:
        raise ToolException(f"no such order {order_id}")
    return json.dumps({"order_id": order_id, "total": ORDERS[order_id], "currency": "USD"})


@tool
def refund(order_id: str, amount: float) -> str:
    """Refund an amount of an order (at most its total)."""
    if order_id not in ORDERS:
        raise ToolException(f"no such order {order_id}")
    if amount > ORDERS[order_id]:
        raise ToolException(f"amount {amount} exceeds the order total")
    REFUNDED[order_id] = amount
    return json.dumps({"status": "refunded", "order_id": order_id, "amount": amount})


@tool
def convert_currency(amount: float, from_currency: str, to_currency: str) -> str:
    """Convert an amount between currencies (ISO codes, upper case)."""
    rate = RATES.get((from_currency, to_currency))
    if rate is None:
        raise ToolException(f"unknown currency pair {from_currency}->{to_currency}; codes are upper case ISO codes")
    return json.dumps({"amount": round(amount * rate, 2), "currency": to_currency})


TOOLS = [lookup_order, refund, convert_currency]
BY_NAME = {t.name: t for t in TOOLS}


class ScriptedChat(BaseChatModel):
    """A chat model that answers with the next scripted message (tool calls or a final answer)."""

    script: list[Any]
    i: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kw: Any) -> "ScriptedChat":
        return self

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> ChatResult:
        msg = self.script[self.i]
        self.i += 1
        return ChatResult(generations=[ChatGeneration(message=msg)])


def calls(*cs: tuple[str, dict]) -> list[AIMessage]:
    return [AIMessage(content="", tool_calls=[{"name": n, "args": a, "id": f"c{k}"}]) for k, (n, a) in enumerate(cs)]


def run(memory: SkillMemory, goal: str, task_type: str, script: list[tuple[str, dict]], *, verdict: bool,
        reason: str = "") -> str:
    """One agent run, recorded, its outcome set by the verifier (with its reason, when it failed)."""
    msgs = calls(*script) + [AIMessage(content="Done.")]
    for k, m in enumerate(msgs[:-1]):
        m.tool_calls[0]["id"] = f"{task_type}-{len(REFUNDED)}-{k}-{goal[-12:]}"
    # A tool's exception reaches the model as an error-status ToolMessage, as in a deployed agent.
    agent = create_react_agent(ScriptedChat(script=msgs), ToolNode(TOOLS, handle_tool_errors=True))
    out = agent.invoke({"messages": [HumanMessage(goal)]})
    rec = record_messages(memory, out["messages"], goal=goal, task_type=task_type, split="train",
                          success=verdict, source="verifier")
    if reason:
        memory.feedback(rec.id, text=reason, source="verifier")
    return rec.id


REFUND = "Refund order {oid} in full."
CONVERT = "Refund order {oid} in full and convert the amount from USD to EUR."


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_support_agent_lessons_name_the_real_mistake_and_demos_replay(tmp_path):
    memory = SkillMemory(tmp_path / "support.db", embedder=HashingEmbedder())
    # Two successes, one of each task type.
    run(memory, REFUND.format(oid="ORD-1001"), "refund",
        [("lookup_order", {"order_id": "ORD-1001"}), ("refund", {"order_id": "ORD-1001", "amount": 80.0})],
        verdict=True)
    run(memory, CONVERT.format(oid="ORD-1004"), "refund_convert",
        [("lookup_order", {"order_id": "ORD-1004"}), ("refund", {"order_id": "ORD-1004", "amount": 64.0}),
         ("convert_currency", {"amount": 64.0, "from_currency": "USD", "to_currency": "EUR"})], verdict=True)
    failures = {
        # a wrong amount: more than the total lookup_order returned
        "amount": run(memory, REFUND.format(oid="ORD-1002"), "refund",
                      [("lookup_order", {"order_id": "ORD-1002"}), ("refund", {"order_id": "ORD-1002", "amount": 100.0})],
                      verdict=False),
        # another customer's order id
        "order_id": run(memory, REFUND.format(oid="ORD-1003"), "refund",
                        [("lookup_order", {"order_id": "ORD-1003"}), ("refund", {"order_id": "ORD-1030", "amount": 20.0})],
                        verdict=False),
        # currency codes in lower case
        "from_currency": run(memory, CONVERT.format(oid="ORD-1005"), "refund_convert",
                             [("lookup_order", {"order_id": "ORD-1005"}),
                              ("refund", {"order_id": "ORD-1005", "amount": 30.0}),
                              ("convert_currency", {"amount": 30.0, "from_currency": "usd", "to_currency": "eur"})],
                             verdict=False),
        # no tool failed: the verifier names what was skipped
        "convert_currency": run(memory, CONVERT.format(oid="ORD-1006"), "refund_convert",
                                [("lookup_order", {"order_id": "ORD-1006"}),
                                 ("refund", {"order_id": "ORD-1006", "amount": 12.0})],
                                verdict=False, reason="the customer asked for EUR; the refund was never converted"),
        # a loop: the same lookup again and again, never acting
        "repeat": run(memory, REFUND.format(oid="ORD-1008"), "refund",
                      [("lookup_order", {"order_id": "ORD-1008"})] * 3, verdict=False),
    }
    # A person's correction of a run that looked fine to its tools: the wrong target currency.
    fixed = run(memory, CONVERT.format(oid="ORD-1007"), "refund_convert",
                [("lookup_order", {"order_id": "ORD-1007"}), ("refund", {"order_id": "ORD-1007", "amount": 55.0}),
                 ("convert_currency", {"amount": 55.0, "from_currency": "USD", "to_currency": "GBP"})], verdict=False)
    memory.feedback(fixed, step=2, source="human", text="they paid in USD and want EUR",
                    corrected_action="convert_currency(amount=55.0, from_currency='USD', to_currency='EUR')")
    failures["to_currency"] = fixed
    # A correction whose value came from a tool's output, not from the goal: the order's currency.
    own = run(memory, "Refund order ORD-1003 in full and convert the amount from EUR to the order's currency.",
              "refund_own_currency",
              [("lookup_order", {"order_id": "ORD-1003"}), ("refund", {"order_id": "ORD-1003", "amount": 20.0}),
               ("convert_currency", {"amount": 20.0, "from_currency": "EUR", "to_currency": "GBP"})], verdict=False)
    memory.feedback(own, step=2, source="human", text="the order was paid in USD",
                    corrected_action="convert_currency(amount=20.0, from_currency='EUR', to_currency='USD')")
    failures["[lookup_order.currency]"] = own  # the lesson names where the value comes from, never the value

    report = reflect_pending(memory, OfflineWriter(), progress=False)  # no domain given: TextDomain
    assert report.errors == 0 and report.no_lesson == 0, report.results
    assert report.lessons == len(failures) and report.demonstrations == 2
    by_episode = {ep: les for les in memory.lessons() for ep in les.source_episodes}
    assert set(failures.values()) <= set(by_episode), "every failure gives a lesson"

    for mistake, ep in failures.items():
        les = by_episode[ep]
        text = " ".join([les.trigger, les.bad_action, les.fix])
        assert mistake in les.fix, f"the lesson of the {mistake!r} failure does not name it: {les.fix!r}"
        # No other episode's concrete values: no order ids, no amounts.
        assert not re.search(r"ORD-\d+", text), text
        assert not re.search(r"\b(?:100|20|30|45\.5|55|64|80|12)(?:\.0)?\b", text), text
        # Advice, not a log line: the fix never ends on the failed step's signal.
        assert not re.search(r"(?:tool error|failed with [\w ]+)\W*$", les.fix), les.fix
    # ORD-1030 for the goal's ORD-1003: named as a look-alike of what the goal names, on its argument.
    assert "look-alike" in by_episode[failures["order_id"]].provenance["mistake"]
    assert "[lookup_order.total]" in by_episode[failures["amount"]].fix
    # The goal's USD, slotted as a quoted value (the recorder writes tool-call values as JSON).
    assert re.search(r"""(['"])\[code\]\1""", by_episode[failures["from_currency"]].fix)
    assert by_episode[failures["to_currency"]].grounded_on_feedback
    assert "USD" not in by_episode[own].fix and "GBP" not in by_episode[own].fix, by_episode[own].fix

    # Demonstrations replay against the same tools on orders they have never seen.
    demos = {d.task_type: d for d in memory.demonstrations()}
    for task_type, goal, oid in (("refund", REFUND, "ORD-2001"), ("refund_convert", CONVERT, "ORD-2002")):
        demo = demos[task_type]
        assert all(not re.search(r"ORD-\d+|\b\d+\.\d\b", step) for step in demo.plan), demo.plan
        values = TextDomain().slots(demo.goal_template).bind(demo.goal_template, goal.format(oid=oid))
        assert values, (demo.goal_template, goal)
        history: list[StepView] = []
        for step in demo.plan:
            concrete = resolve(step, history, values)
            name, args = parse_call(concrete)
            kwargs = {k: ast.literal_eval(v) for k, v in args}
            out = BY_NAME[name].func(**kwargs)  # raises on any wrong argument
            history.append(StepView(concrete, out))
        assert REFUNDED[oid] == ORDERS[oid]
