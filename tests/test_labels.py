"""Labels come only from a verified source; split names are checked; a NaN reward cannot wedge an episode."""

from __future__ import annotations

import math

import pytest

from conftest import open_memory
from skillmem.record import MalformedInput
from skillmem.reflect import OfflineWriter, reflect_pending


def _episode(mem, **kw):
    rec = mem.start_episode(goal="refund order A-1", task_type="support", split=kw.pop("split", "train"), **kw)
    rec.step(observation="ok", action="lookup_order(order_id='A-1')", feedback="found")
    return rec


def test_agent_feedback_cannot_label_an_episode(db_url, tmp_path):
    mem = open_memory(db_url, tmp_path)
    try:
        rec = _episode(mem)
        rec.finish()
        with pytest.raises(MalformedInput, match="cannot settle the outcome"):
            mem.feedback(rec.id, text="I did it", source="agent", success=True)
        ep = mem.get_episode(rec.id)
        assert (ep.outcome.value, ep.outcome_source) == ("unknown", None)
        assert mem.feedback_for(rec.id) == []  # nothing half-written
        assert reflect_pending(mem, OfflineWriter(), progress=False).demonstrations == 0
        assert mem.demonstrations() == []
        # The same feedback from a person does settle it.
        mem.feedback(rec.id, text="confirmed", source="human", success=True)
        assert mem.get_episode(rec.id).outcome_source.value == "human"
    finally:
        mem.close()


@pytest.mark.parametrize("label", ["false", "true", "0", 1.0, [True]])
def test_finish_refuses_a_label_that_is_not_a_bool(db_url, tmp_path, label):
    mem = open_memory(db_url, tmp_path)
    try:
        rec = _episode(mem)
        with pytest.raises(MalformedInput, match="must be True, False or None"):
            rec.finish(success=label, source="environment")
        assert mem.get_episode(rec.id).outcome.value == "unknown"
        assert rec.finish(success=False, source="environment").value == "failure"  # still open, settles fine
        with pytest.raises(MalformedInput):
            mem.set_outcome(rec.id, label, source="human")
        with pytest.raises(MalformedInput):
            mem.set_outcome(rec.id, True, source="agent")
    finally:
        mem.close()


@pytest.mark.parametrize("split", ["VALID_UNSEEN", "Test", "valid_unseen ", " test", "Valid_Seen", "eval"])
def test_misspelled_splits_are_refused(db_url, tmp_path, split):
    mem = open_memory(db_url, tmp_path)
    try:
        with pytest.raises(MalformedInput, match="is not one of"):
            mem.start_episode(goal="refund order A-1", task_type="support", split=split)
        assert mem.episodes(limit=10) == []
    finally:
        mem.close()


@pytest.mark.parametrize("reward", [math.nan, math.inf, -math.inf])
def test_a_nan_reward_cannot_wedge_an_episode(db_url, tmp_path, reward):
    mem = open_memory(db_url, tmp_path)
    try:
        rec = _episode(mem)
        with pytest.raises(MalformedInput, match="finite"):
            rec.step(observation="ok", action="refund(order_id='A-1')", feedback="done", reward=reward)
        rec.step(observation="ok", action="refund(order_id='A-1')", feedback="done", reward=1.0)
        assert rec.finish(success=True, source="environment").value == "success"
        ep = mem.get_episode(rec.id)
        assert (ep.status.value, ep.num_steps, ep.total_reward) == ("finished", 2, 1.0)
        # and an interrupted one settles too
        rec2 = _episode(mem)
        with pytest.raises(MalformedInput):
            rec2.step(action="x", reward=reward)
        rec2.interrupt("stopped")
        assert mem.get_episode(rec2.id).status.value == "interrupted"
    finally:
        mem.close()
