"""examples/support_agent.py, step by step: a create_agent support agent records its
tickets live, a supervisor's corrections become lessons, and the next day's prompt carries
them and the agent no longer makes the mistake. Real SQLite, FAISS and sentence-transformers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from langchain_core.messages import SystemMessage
from sqlalchemy import text

from skillmem import SkillMemory


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "support_agent.py"


@pytest.fixture(scope="module")
def ex():
    spec = importlib.util.spec_from_file_location("support_agent", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["support_agent"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def world(ex, tmp_path_factory):
    """Day one played and supervised; each test below checks one step of the story."""
    ex.LEDGER.clear()
    memory = SkillMemory(str(tmp_path_factory.mktemp("support") / "support.db"))
    agent = ex.build_agent(memory)
    day_one = ex.run_day(agent, ex.DAY_ONE, "train")
    yield ex, memory, agent, day_one
    memory.close()


def test_day_one_is_recorded_live_with_verified_outcomes(world):
    ex, memory, agent, day_one = world
    outcomes = [memory.get_episode(e).outcome.value for e in day_one]
    assert outcomes == ["success", "failure", "failure"]  # B22 is in USD; A17 (EUR) and C05 (GBP) are not
    assert all(memory.get_episode(e).outcome_source.value == "verifier" for e in day_one)
    steps = memory.steps(day_one[1])
    assert [s.action.split("(")[0] for s in steps] == ["lookup_order", "refund", "Sorry, I could not refund order A17: "
                                                      "refund rejected: order A17 was paid in EUR, not USD"]
    assert steps[1].tool_args == {"order_id": "A17", "amount": 20.0, "currency": "USD"} and steps[1].tool_call_id
    assert "paid in EUR" in steps[1].error and steps[0].feedback.startswith("Order A17: total 40.00 EUR")


def test_reflection_turns_the_supervised_failures_into_a_lesson(world):
    from skillmem.reflect import default_writer, reflect_pending

    ex, memory, agent, day_one = world
    ex.supervise(memory, day_one)
    assert len(memory.feedback_for(day_one[1])) == 1
    reflect_pending(memory, default_writer())
    texts = [f"{l.trigger} {l.fix}" for l in memory.lessons(status="active")]
    assert any("convert_currency" in t for t in texts), texts


def test_day_two_prompt_carries_the_lesson_and_the_mistake_is_avoided(world):
    ex, memory, agent, day_one = world
    if not any("convert_currency" in l.fix for l in memory.lessons(status="active")):
        pytest.fail("no convert_currency lesson was written (see the reflection test above)")
    seen = []
    original = ex.SupportModel.policy

    def spy(messages):
        seen.append(list(messages))
        return original(messages)

    ex.SupportModel.policy = staticmethod(spy)
    try:
        day_two = ex.run_day(agent, ex.DAY_TWO, "train")
    finally:
        ex.SupportModel.policy = staticmethod(original)
    assert [memory.get_episode(e).outcome.value for e in day_two] == ["success"] * 3
    systems = [m for msgs in seen for m in msgs if isinstance(m, SystemMessage)]
    assert len(systems) == len(seen) and all("convert_currency" in s.content for s in systems)
    actions = [s.action.split("(")[0] for s in memory.steps(day_two[0])]
    assert actions[:3] == ["lookup_order", "convert_currency", "refund"]
    with memory.engine.connect() as c:
        used = set(c.execute(text("SELECT DISTINCT episode_id FROM retrievals WHERE item_kind = 'lesson'")).scalars())
    assert set(day_two) <= used  # each retrieval is recorded against the episode that used it
