"""One RetrievalConfig: every knob documented, and every caller (retrieve, the prompt hook, the node) reads it."""

from __future__ import annotations

from dataclasses import fields

import pytest

from conftest import open_memory
from skillmem import Demonstration, Lesson, RetrievalConfig, memory_prompt, retrieval_node


def _filled(tmp_path, **kw):
    m = open_memory(str(tmp_path / "s.db"), tmp_path, **kw)
    for i, (trigger, fix) in enumerate([("the drawer is closed", "open it first"),
                                        ("the key is not in hand", "take the key before the door"),
                                        ("a tool call failed with a bad id", "look the order up again"),
                                        ("the amount is in cents", "divide by one hundred before refunding")]):
        m.add_lesson(Lesson(trigger=trigger, bad_action=f"action {i}", fix=fix, task_type="t"), episode_id=f"e{i}")
    m.add_demonstration(Demonstration(task_type="t", goal_template="refund order [id]",
                                      plan=["lookup_order(order_id=[id])", "refund(order_id=[id])"]), episode_id="d1")
    m.add_demonstration(Demonstration(task_type="t", goal_template="cancel order [id]",
                                      plan=["lookup_order(order_id=[id])", "cancel(order_id=[id])"]), episode_id="d2")
    return m


def test_every_knob_has_a_default_and_help():
    for f in fields(RetrievalConfig):
        assert f.metadata.get("help"), f"RetrievalConfig.{f.name} has no help"
    c = RetrievalConfig()
    assert (c.k, c.k_demos, c.token_budget) == (5, 1, 400)
    assert c.with_(k=2, k_demos=None).k == 2 and c.with_(k_demos=None).k_demos == 1
    with pytest.raises(TypeError, match="no \\['kk'\\]"):
        c.with_(kk=3)


def test_the_memory_config_is_every_callers_default(tmp_path):
    m = _filled(tmp_path, retrieval=RetrievalConfig(k=1, k_demos=0))
    try:
        ctx = m.retrieve("refund an order", task_type="t", record=False)
        assert len(ctx.lessons) == 1 and ctx.demonstrations == []
        # a call's own k overrides the memory's config, and nothing else changes
        ctx = m.retrieve("refund an order", task_type="t", record=False, k=3, k_demos=2)
        assert len(ctx.lessons) == 3 and len(ctx.demonstrations) == 2
        hook = memory_prompt(m, "You help.", task_type="t")
        assert hook.retrieval == m.retrieval
        node = retrieval_node(m)
        out = node({"goal": "refund an order", "task_type": "t"})
        assert out["context"].count("\n- ") + out["context"].startswith("- ") <= 1
        assert "Demonstrations" not in out["context"]
        wider = retrieval_node(m, config=RetrievalConfig(k=4, k_demos=1))({"goal": "refund an order", "task_type": "t"})
        assert "Demonstrations" in wider["context"]
    finally:
        m.close()


def test_a_tight_budget_and_mmr_lambda_reach_build_context(tmp_path):
    m = _filled(tmp_path)
    try:
        assert m.retrieve("refund", task_type="t", record=False, config=RetrievalConfig(token_budget=0)).text == ""
        small = m.retrieve("refund", task_type="t", record=False, config=RetrievalConfig(token_budget=40))
        assert 0 < small.tokens <= 40
        # relevance only vs. novelty only pick in different orders (or at least never fail)
        a = m.retrieve("refund", task_type="t", record=False, config=RetrievalConfig(k=4, k_demos=0, mmr_lambda=1.0))
        b = m.retrieve("refund", task_type="t", record=False, config=RetrievalConfig(k=4, k_demos=0, mmr_lambda=0.0))
        assert {x.id for x in a.lessons} == {x.id for x in b.lessons}
        one = m.retrieve("refund", task_type="t", record=False,
                         config=RetrievalConfig(k=0, k_demos=2, near_copy_cosine=-1.0))
        assert len(one.demonstrations) == 1  # everything is a "near copy" of the first choice
        # ...but a lesson is a copy only when it says the same: these four say other things
        four = m.retrieve("refund", task_type="t", record=False,
                          config=RetrievalConfig(k=4, k_demos=0, near_copy_cosine=-1.0))
        assert len(four.lessons) == 4
    finally:
        m.close()
