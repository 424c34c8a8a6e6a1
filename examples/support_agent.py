"""A customer-support agent built with LangChain's create_agent learns from a refund it got wrong.

    python examples/support_agent.py [--db /tmp/support.db]

Offline, no key: the chat model is scripted (a real LangChain `BaseChatModel` whose answers
come from `SupportModel.policy`), standing in for an LLM that follows what its system
prompt says. It has one bad habit: it refunds in the customer's currency. The refund tool
rejects that when the order was paid in another currency.

1. Day one: three tickets, recorded live by `wrap()`, each tool call a step; a verifier
   checks the shop's ledger (never the agent's claim). Two tickets fail.
2. A supervisor reviews the failures and says what to do instead (directive feedback);
   reflection turns each failure into a lesson.
3. Day two: new tickets. `memory_prompt` puts the lessons into the agent's system message;
   the agent converts the amount first and the refunds go through.

The three lines that add skillmem to an existing create_agent are marked `# skillmem`
(with langgraph.prebuilt's create_react_agent, `prompt=memory_prompt(...)` does the same).
"""

from __future__ import annotations

import argparse
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any, Optional

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import ToolException, tool
from langchain.agents import create_agent

from skillmem import SkillMemory, memory_prompt, wrap

# ----------------------------------------------------------------------------- the shop


ORDERS = {
    "B22": (25.00, "USD"), "A17": (40.00, "EUR"), "C05": (60.00, "GBP"),
    "D40": (35.00, "EUR"), "E81": (80.00, "GBP"), "F13": (15.00, "USD"),
}
RATES = {("USD", "EUR"): 0.92, ("USD", "GBP"): 0.79, ("EUR", "USD"): 1.09, ("GBP", "USD"): 1.27}
LEDGER: list[tuple[str, float, str]] = []  # refunds issued: (order, amount, currency)


@tool
def lookup_order(order_id: str) -> str:
    """Look up an order: its total, currency and status."""
    if order_id not in ORDERS:
        raise ToolException(f"no order {order_id}")
    total, cur = ORDERS[order_id]
    return f"Order {order_id}: total {total:.2f} {cur}, status paid."


@tool
def convert_currency(amount: float, from_currency: str, to_currency: str) -> str:
    """Convert an amount between currencies at today's rate."""
    rate = 1.0 if from_currency == to_currency else RATES[(from_currency, to_currency)]
    return f"{amount:.2f} {from_currency} = {amount * rate:.2f} {to_currency}"


@tool
def refund(order_id: str, amount: float, currency: str) -> str:
    """Refund part of an order. The amount must be in the order's own currency."""
    total, cur = ORDERS[order_id]
    if currency != cur:
        raise ToolException(f"refund rejected: order {order_id} was paid in {cur}, not {currency}")
    if amount > total:
        raise ToolException(f"refund rejected: {amount:.2f} {cur} is more than the order total {total:.2f} {cur}")
    LEDGER.append((order_id, round(amount, 2), currency))
    return f"Refund of {amount:.2f} {currency} issued for order {order_id}."


TOOLS = [lookup_order, convert_currency, refund]
for _t in TOOLS:  # a rejected call goes back to the model as an error ToolMessage, as a shop's API would answer
    _t.handle_tool_error = True


def ticket(order_id: str, amount: float, currency: str) -> str:
    return f"Hi, please refund {amount:.2f} {currency} on my order {order_id}. Thanks!"


def verifier(state: dict) -> bool:
    """The shop's word: did the ledger get the refund the ticket asked for, in the order's currency?"""
    ask = re.search(r"refund ([\d.]+) (\w+) on my order (\w+)", str(state["messages"][0].content))
    amount, cur, order = float(ask.group(1)), ask.group(2), ask.group(3)
    order_cur = ORDERS[order][1]
    want = round(amount * (1.0 if cur == order_cur else RATES[(cur, order_cur)]), 2)
    return any(o == order and c == order_cur and abs(a - want) < 0.01 for o, a, c in LEDGER)


# ----------------------------------------------------------------------------- the scripted model


def _call(name: str, **args: Any) -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": f"call_{uuid.uuid4().hex[:10]}"}])


class SupportModel(BaseChatModel):
    """A stand-in for an LLM: reads the ticket, the tool results and its system prompt."""

    @property
    def _llm_type(self) -> str:
        return "scripted-support"

    def bind_tools(self, tools: Any, **kw: Any) -> Any:
        return self.bind(tools=[t.name for t in tools], **kw)

    @staticmethod
    def policy(messages: list[BaseMessage]) -> AIMessage:
        system = " ".join(str(m.content) for m in messages if m.type == "system")
        ask = re.search(r"refund ([\d.]+) (\w+) on my order (\w+)", str(messages[-1].content if messages[-1].type ==
                                                                        "human" else next(
            m.content for m in messages if m.type == "human")))
        amount, cur, order = float(ask.group(1)), ask.group(2), ask.group(3)
        results = [str(m.content) for m in messages if m.type == "tool"]
        last = messages[-1]
        if not results:
            return _call("lookup_order", order_id=order)
        order_cur = re.search(r"total [\d.]+ (\w+)", results[0]).group(1)
        if last.type == "tool" and getattr(last, "status", "success") == "error":
            return AIMessage(content=f"Sorry, I could not refund order {order}: {last.content}")
        if last.type == "tool" and str(last.content).startswith("Refund of"):
            return AIMessage(content=f"Done: {last.content}")
        converted = re.search(r"= ([\d.]+) (\w+)$", str(last.content))
        if converted:
            return _call("refund", order_id=order, amount=float(converted.group(1)), currency=converted.group(2))
        # The habit: refund what the customer wrote. A lesson in the prompt that says to
        # convert first is followed when the currencies differ.
        if order_cur != cur and "convert_currency" in system:
            return _call("convert_currency", amount=amount, from_currency=cur, to_currency=order_cur)
        return _call("refund", order_id=order, amount=amount, currency=cur)

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
                  ) -> ChatResult:
        ai = self.policy(messages)
        n_in = sum(len(str(m.content).split()) for m in messages)
        ai.usage_metadata = {"input_tokens": n_in, "output_tokens": 12, "total_tokens": n_in + 12}
        return ChatResult(generations=[ChatGeneration(message=ai)])


# ----------------------------------------------------------------------------- the agent


def build_agent(memory: SkillMemory) -> Any:
    agent = create_agent(
        SupportModel(), TOOLS,
        middleware=[memory_prompt(memory, "You are a support agent for an online shop.").middleware()],  # skillmem
    )
    return wrap(agent, memory, verifier=verifier, task_type="refund")  # skillmem


DAY_ONE = [("B22", 25.0, "USD"), ("A17", 20.0, "USD"), ("C05", 30.0, "USD")]
DAY_TWO = [("D40", 15.0, "USD"), ("E81", 40.0, "USD"), ("F13", 10.0, "USD")]


def run_day(agent: Any, tickets: list[tuple[str, float, str]], split: str) -> list[str]:
    episodes = []
    for order, amount, cur in tickets:
        out = agent.invoke({"messages": [("human", ticket(order, amount, cur))]}, split=split, task_id=order)
        episodes.append(agent.last_episode_id)
        print(f"  {order}: {out['messages'][-1].content}")
    return episodes


def supervise(memory: SkillMemory, episode_ids: list[str]) -> None:
    """A supervisor reviews failed tickets and says what should have happened at the refund."""
    for ep in episode_ids:
        if memory.get_episode(ep).outcome.value != "failure":
            continue
        steps = memory.steps(ep)
        bad = next(s for s in steps if s.error and s.action.startswith("refund("))
        args = bad.tool_args
        order_cur = re.search(r"paid in (\w+)", bad.error).group(1)
        memory.feedback(ep, step=bad.index, source="supervisor", text="convert the amount to the order's currency "
                        "with convert_currency before refunding",
                        corrected_action=f'convert_currency(amount={args["amount"]}, from_currency="{args["currency"]}", '
                                         f'to_currency="{order_cur}")')


def main(argv: Optional[list[str]] = None) -> int:
    from skillmem.reflect import default_writer, reflect_pending

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", default=str(Path(tempfile.mkdtemp()) / "support.db"))
    args = p.parse_args(argv)
    memory = SkillMemory(args.db)
    agent = build_agent(memory)
    print("Day one:")
    day_one = run_day(agent, DAY_ONE, "train")
    supervise(memory, day_one)
    reflect_pending(memory, default_writer())
    print("\nLessons:")
    for lesson in memory.lessons(status="active"):
        print(f"  - when {lesson.trigger}: {lesson.fix}")
    print("\nDay two:")
    day_two = run_day(agent, DAY_TWO, "train")
    for name, eps in (("day one", day_one), ("day two", day_two)):
        ok = sum(memory.get_episode(e).outcome.value == "success" for e in eps)
        print(f"{name}: {ok}/{len(eps)} refunds verified")
    memory.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
