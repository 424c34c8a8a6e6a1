"""The LLM client against a real OpenAI-compatible HTTP server on loopback."""

from __future__ import annotations

import json
import socket
import time

import pydantic
import pytest

from openai_server import OpenAIServer, error_body, openai_server  # noqa: F401 (fixture)
from skillmem.llm import (
    InvalidAnswer,
    LLMClient,
    LLMConfig,
    LLMError,
    LLMRateLimited,
    LLMTimeout,
    LLMUnavailable,
    Usage,
    parse_json_object,
)


class Answer(pydantic.BaseModel):
    trigger: str
    fix: str


MESSAGES = [
    {"role": "system", "content": "Answer with a JSON object with keys trigger and fix."},
    {"role": "user", "content": "The agent tried to open the fridge twice."},
]
GOOD = '{"trigger": "fridge is closed", "fix": "open the fridge first"}'


def client_for(server: OpenAIServer, **overrides) -> LLMClient:
    knobs = dict(model="test-model", timeout=5.0, retry_base_delay=0.01, retry_max_delay=0.2)
    return LLMClient(LLMConfig(base_url=server.base_url, **{**knobs, **overrides}))


def test_valid_json_gives_validated_object_and_usage(openai_server):
    openai_server.script([{"content": GOOD, "usage": {"prompt_tokens": 40, "completion_tokens": 9}}])
    client = client_for(openai_server)

    answer, usage = client.complete_json(MESSAGES, Answer.model_validate)

    assert answer == Answer(trigger="fridge is closed", fix="open the fridge first")
    assert (usage.prompt_tokens, usage.completion_tokens, usage.calls) == (40, 9, 1)
    assert usage.seconds > 0
    request = openai_server.requests[0]
    assert request["response_format"] == {"type": "json_object"}
    assert request["model"] == "test-model" and request["temperature"] == 0
    assert request["messages"] == MESSAGES


def test_invalid_json_then_valid_succeeds_and_second_request_names_the_error(openai_server):
    openai_server.script([
        {"content": '{"trigger": "fridge is closed"}', "usage": {"prompt_tokens": 10, "completion_tokens": 3}},
        {"content": GOOD, "usage": {"prompt_tokens": 20, "completion_tokens": 5}},
    ])
    client = client_for(openai_server)

    answer, usage = client.complete_json(MESSAGES, Answer.model_validate)

    assert answer.fix == "open the fridge first"
    assert (usage.prompt_tokens, usage.completion_tokens, usage.calls) == (30, 8, 2)
    retry = openai_server.requests[1]["messages"]
    assert retry[: len(MESSAGES)] == MESSAGES
    assert retry[-2] == {"role": "assistant", "content": '{"trigger": "fridge is closed"}'}
    assert retry[-1]["role"] == "user"
    assert retry[-1]["content"].startswith("Your answer was not valid:")
    assert "fix" in retry[-1]["content"] and "Field required" in retry[-1]["content"]
    assert openai_server.requests[1]["response_format"] == {"type": "json_object"}


def test_broken_json_error_goes_back_to_the_model(openai_server):
    openai_server.script([{"content": '{"trigger": "x", '}, {"content": GOOD}])
    client_for(openai_server).complete_json(MESSAGES, Answer.model_validate)
    assert "not valid JSON" in openai_server.requests[1]["messages"][-1]["content"]


def test_always_invalid_raises_invalid_answer_after_json_attempts(openai_server):
    openai_server.set_responder(lambda request: "Sure! Here is the lesson: open the fridge.")
    client = client_for(openai_server, json_attempts=3)

    with pytest.raises(InvalidAnswer) as failure:
        client.complete_json(MESSAGES, Answer.model_validate)

    assert len(openai_server.requests) == 3
    message = str(failure.value)
    assert openai_server.base_url in message and "test-model" in message
    assert "3 attempts" in message and "not valid JSON" in message
    assert failure.value.last_content == "Sure! Here is the lesson: open the fridge."
    assert client.usage.calls == 3  # the running total counts failed answers too


def test_fenced_json_is_accepted(openai_server):
    openai_server.script([{"content": "Here you go:\n```json\n" + GOOD + "\n```\n"}])
    answer, _ = client_for(openai_server).complete_json(MESSAGES, Answer.model_validate)
    assert answer.trigger == "fridge is closed"


def test_rate_limited_then_ok_succeeds_after_backoff(openai_server):
    openai_server.script([{"status": 429, "retry_after": 0}, {"status": 429}, {"content": GOOD}])
    answer, usage = client_for(openai_server).complete_json(MESSAGES, Answer.model_validate)
    assert answer.fix == "open the fridge first"
    assert usage.calls == 3


def test_retry_after_is_honoured_and_capped(openai_server):
    openai_server.script([{"status": 429, "retry_after": 0.5}, {"content": GOOD}])
    start = time.monotonic()
    client_for(openai_server, retry_max_delay=5.0).complete_json(MESSAGES, Answer.model_validate)
    assert time.monotonic() - start >= 0.5

    openai_server.script([{"status": 429, "retry_after": 3600}, {"content": GOOD}])
    start = time.monotonic()
    client_for(openai_server, retry_max_delay=0.2).complete_json(MESSAGES, Answer.model_validate)
    assert time.monotonic() - start < 2.0


def test_rate_limited_forever_raises(openai_server):
    openai_server.set_responder(lambda request: {"status": 429, "retry_after": 0})
    with pytest.raises(LLMRateLimited, match="after 3 tries"):
        client_for(openai_server, max_retries=2).complete_json(MESSAGES, Answer.model_validate)
    assert len(openai_server.requests) == 3


def test_hang_past_timeout_raises_timeout_in_bounded_time(openai_server):
    openai_server.set_responder(lambda request: {"hang": 5.0, "content": GOOD})
    client = client_for(openai_server, timeout=0.3, max_retries=1)
    start = time.monotonic()
    with pytest.raises(LLMTimeout, match="no answer within 0.3 s"):
        client.complete_json(MESSAGES, Answer.model_validate)
    assert time.monotonic() - start < 2.5
    assert len(openai_server.requests) == 2
    assert client.usage.calls == 2


def test_server_error_is_retried_then_unavailable(openai_server):
    openai_server.set_responder(lambda request: {"status": 500})
    with pytest.raises(LLMUnavailable, match="scripted status 500"):
        client_for(openai_server, max_retries=2).complete_json(MESSAGES, Answer.model_validate)
    assert len(openai_server.requests) == 3


def test_server_error_then_ok_succeeds(openai_server):
    openai_server.script([{"status": 503}, {"content": GOOD}])
    _, usage = client_for(openai_server).complete_json(MESSAGES, Answer.model_validate)
    assert usage.calls == 2


def test_unreachable_endpoint_is_unavailable():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = LLMConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=1, retry_base_delay=0.01)
    with pytest.raises(LLMUnavailable, match="cannot connect"):
        LLMClient(config).complete_json(MESSAGES, Answer.model_validate)


def test_other_client_errors_are_not_retried(openai_server):
    openai_server.script([{"status": 401, "body": error_body("Incorrect API key provided", code="invalid_api_key")}])
    with pytest.raises(LLMError, match="Incorrect API key provided") as failure:
        client_for(openai_server).complete_json(MESSAGES, Answer.model_validate)
    assert type(failure.value) is LLMError
    assert len(openai_server.requests) == 1

    openai_server.script([{"status": 400, "body": error_body("context length exceeded")}])
    with pytest.raises(LLMError, match="context length exceeded"):
        client_for(openai_server).complete_json(MESSAGES, Answer.model_validate)
    assert len(openai_server.requests) == 2


def test_server_without_response_format_is_asked_again_without_it(openai_server):
    rejection = error_body("unknown field: response_format")
    openai_server.script([{"status": 400, "body": rejection}, {"content": GOOD}, {"content": GOOD}])
    client = client_for(openai_server)

    client.complete_json(MESSAGES, Answer.model_validate)
    client.complete_json(MESSAGES, Answer.model_validate)

    sent = [r.get("response_format") for r in openai_server.requests]
    assert sent == [{"type": "json_object"}, None, None]  # and remembered for the next call


def test_running_usage_total_accumulates(openai_server):
    openai_server.set_responder(lambda request: GOOD)
    client = client_for(openai_server)
    _, first = client.complete_json(MESSAGES, Answer.model_validate)
    _, second = client.complete_json(MESSAGES, Answer.model_validate)
    assert client.usage.calls == 2
    assert client.usage.prompt_tokens == first.prompt_tokens + second.prompt_tokens > 0
    assert client.usage.total_tokens == (first + second).total_tokens
    assert client.usage.seconds == pytest.approx(first.seconds + second.seconds)


def test_model_is_taken_from_the_endpoint_when_it_serves_one(openai_server):
    openai_server.script([{"content": GOOD}])
    client = client_for(openai_server, model="")
    client.complete_json(MESSAGES, Answer.model_validate)
    assert openai_server.requests[0]["model"] == "test-model" == client.model

    openai_server.models = ["a", "b"]
    with pytest.raises(LLMError, match="serves 2 models"):
        client_for(openai_server, model="").complete_json(MESSAGES, Answer.model_validate)


def test_caller_messages_are_not_modified(openai_server):
    openai_server.script([{"content": "[]"}, {"content": GOOD}])
    messages = [dict(m) for m in MESSAGES]
    client_for(openai_server).complete_json(messages, Answer.model_validate)
    assert messages == MESSAGES
    assert "expected a JSON object" in openai_server.requests[1]["messages"][-1]["content"]


def test_parse_json_object():
    assert parse_json_object(' {"a": 1} ') == {"a": 1}
    assert parse_json_object('```\n{"a": 1}\n```') == {"a": 1}
    assert parse_json_object('{"text": "use ```code``` here"}') == {"text": "use ```code``` here"}
    for bad in ["", None, "nope", "[1, 2]", "```json\n{oops}\n```"]:
        with pytest.raises(ValueError):
            parse_json_object(bad)


# --- configuration from the environment ---


def test_from_env_is_none_when_nothing_is_configured():
    assert LLMConfig.from_env({}) is None
    assert LLMConfig.from_env({"OPENAI_API_KEY": "sk-real"}) is None  # alone it does not switch skillmem on


def test_from_env_local_server_needs_no_key():
    config = LLMConfig.from_env({"SKILLMEM_LLM_BASE_URL": "http://localhost:8080/v1", "SKILLMEM_LLM_MODEL": "qwen"})
    assert (config.base_url, config.api_key, config.model) == ("http://localhost:8080/v1", "sk-none", "qwen")
    assert (config.timeout, config.max_retries, config.json_attempts, config.temperature) == (60.0, 3, 3, 0.0)
    assert "sk-none" not in repr(config)  # keys never reach logs


def test_from_env_key_precedence():
    env = {"SKILLMEM_LLM_MODEL": "gpt-4o-mini", "OPENAI_API_KEY": "sk-openai"}
    assert LLMConfig.from_env(env).api_key == "sk-openai"
    assert LLMConfig.from_env({**env, "SKILLMEM_LLM_API_KEY": "sk-skillmem"}).api_key == "sk-skillmem"
    assert LLMConfig.from_env(env).base_url is None
    with pytest.raises(ValueError, match="no API key"):
        LLMConfig.from_env({"SKILLMEM_LLM_MODEL": "gpt-4o-mini"})


def test_from_env_reads_os_environ(monkeypatch, openai_server):
    for name in ["SKILLMEM_LLM_BASE_URL", "SKILLMEM_LLM_API_KEY", "SKILLMEM_LLM_MODEL", "OPENAI_API_KEY"]:
        monkeypatch.delenv(name, raising=False)
    assert LLMConfig.from_env() is None
    monkeypatch.setenv("SKILLMEM_LLM_BASE_URL", openai_server.base_url)
    openai_server.script([{"content": json.dumps({"trigger": "t", "fix": "f"})}])
    answer, _ = LLMClient(LLMConfig.from_env()).complete_json(MESSAGES, Answer.model_validate)
    assert answer.fix == "f"
    assert Usage().total_tokens == 0
