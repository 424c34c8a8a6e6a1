"""Replies that are not what was asked, slow or huge ones, and limits from the environment (issue 12).

A real HTTP server on loopback (tests/openai_server.py) plays each fault; the client must
turn every one into an LLMError, and the reflection drain must go on past it.
"""

from __future__ import annotations

import json

import pytest

from conftest import open_memory
from openai_server import openai_server  # noqa: F401 (fixture)
from skillmem import llm
from skillmem.llm import InvalidAnswer, LLMClient, LLMConfig, LLMError, LLMTimeout
from skillmem.reflect import LLMWriter, reflect_pending

MESSAGES = [{"role": "user", "content": "Answer with a JSON object with keys trigger and fix."}]
GOOD = json.dumps({"trigger": "a refund is asked for an order that was not looked up",
                   "bad_action": "refund(order_id=[id])", "fix": "Look the order up first, then refund it.",
                   "scope": "task"})


def client_for(server, **overrides) -> LLMClient:
    knobs = dict(model="test-model", timeout=5.0, retry_base_delay=0.01, retry_max_delay=0.05, max_retries=1)
    return LLMClient(LLMConfig(base_url=server.base_url, **{**knobs, **overrides}))


@pytest.mark.parametrize("reply", [
    {"raw": "<html><body><h1>502 Bad Gateway</h1></body></html>"},
    {"raw": "<html><body>upstream down</body></html>", "content_type": "application/json"},
    {"raw": "[1, 2, 3]", "content_type": "application/json"},
    {"raw": "42", "content_type": "application/json"},
])
def test_a_body_that_is_not_a_completion_is_an_llm_error(openai_server, reply):
    openai_server.set_responder(lambda request: reply)
    with pytest.raises(LLMError):
        client_for(openai_server).complete_json(MESSAGES, dict)


@pytest.mark.parametrize("content", [42, 3.5, ["trigger", "fix"], {"trigger": "x"}, True])
def test_content_that_is_not_text_is_an_invalid_answer(openai_server, content):
    openai_server.set_responder(lambda request: {"content": content})
    with pytest.raises(InvalidAnswer) as info:
        client_for(openai_server, json_attempts=2).complete_json(MESSAGES, dict)
    assert isinstance(info.value, LLMError)
    assert "not text" in openai_server.requests[-1]["messages"][-2]["content"]


def _failed(mem, order):
    with mem.episode(task=f"refund order {order}", task_type="support", split="train") as ep:
        ep.step(observation=f"refund order {order}", action=f"refund(order_id='{order}')",
                feedback="error: order not looked up", error="order not looked up")
        ep.finish(success=False, source="environment")
    return ep.id


def test_the_drain_goes_on_past_a_reply_that_is_not_what_was_asked(openai_server, sqlite_url, tmp_path):
    mem = open_memory(sqlite_url, tmp_path)
    try:
        first, second = _failed(mem, "A-1"), _failed(mem, "B-2")
        replies = iter([{"raw": "<html>gateway error</html>"}, {"content": [GOOD]}])
        openai_server.set_responder(lambda request: next(replies, {"content": GOOD}))
        writer = LLMWriter(client_for(openai_server, json_attempts=2, max_retries=0))
        report = reflect_pending(mem, writer, progress=False)
        assert report.errors == 1 and report.done == 1, report.results
        errs = {r["episode_id"]: r for r in report.results}
        assert errs[first]["status"] == "error" and "LLMError" in errs[first]["error"]
        assert errs[second]["status"] == "done"
        assert mem.get_episode(first).reflection_status.value == "pending"  # stays queued
    finally:
        mem.close()


def test_limits_are_set_from_the_environment(openai_server):
    cfg = LLMConfig.from_env({"SKILLMEM_LLM_BASE_URL": openai_server.base_url, "SKILLMEM_LLM_MODEL": "test-model",
                              "SKILLMEM_LLM_TIMEOUT": "0.3", "SKILLMEM_LLM_TOTAL_TIMEOUT": "1.0",
                              "SKILLMEM_LLM_MAX_RETRIES": "50", "SKILLMEM_LLM_MAX_RESPONSE_BYTES": "1000"})
    assert (cfg.timeout, cfg.total_timeout, cfg.max_retries, cfg.max_response_bytes) == (0.3, 1.0, 50, 1000)
    with pytest.raises(ValueError, match="SKILLMEM_LLM_TIMEOUT"):
        LLMConfig.from_env({"SKILLMEM_LLM_MODEL": "m", "SKILLMEM_LLM_API_KEY": "k", "SKILLMEM_LLM_TIMEOUT": "soon"})
    # A hung endpoint: the total limit stops the retries long before 50 of them.
    openai_server.set_responder(lambda request: {"hang": 30.0, "content": GOOD})
    cfg.retry_base_delay = cfg.retry_max_delay = 0.01
    with pytest.raises(LLMTimeout):
        LLMClient(cfg).complete_json(MESSAGES, dict)
    assert len(openai_server.requests) <= 5


def test_a_slow_drip_cannot_hold_a_call_past_its_timeout(openai_server):
    """8 bytes/s keeps every read alive; the answer must still arrive whole within the timeout."""
    openai_server.set_responder(lambda request: {"drip": 8.0, "content": GOOD})
    client = client_for(openai_server, timeout=1.0, max_retries=0)
    with pytest.raises(LLMTimeout):
        client.complete_json(MESSAGES, dict)
    assert client.usage.calls == 1


def test_a_huge_answer_is_refused_and_never_sent_back(openai_server):
    openai_server.set_responder(lambda request: {"content": "x" * 5_000_000})
    with pytest.raises(LLMError, match="larger than"):
        client_for(openai_server).complete_json(MESSAGES, dict)
    assert len(openai_server.requests) == 1  # too large is not retried
    # Under the limit but invalid: asked again with only the start of the wrong answer.
    openai_server.requests.clear()
    openai_server.set_responder(lambda request: {"content": "y" * 1_000_000})
    with pytest.raises(InvalidAnswer):
        client_for(openai_server, json_attempts=2, max_response_bytes=10_000_000).complete_json(MESSAGES, dict)
    echoed = openai_server.requests[1]["messages"][-2]["content"]
    assert len(echoed) <= llm.ECHO_CHARS + 10
