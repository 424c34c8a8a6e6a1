"""OpenAI-compatible chat client: JSON answers checked by the caller, with explicit retries.

Works with any endpoint that speaks chat completions: OpenAI, vLLM, Ollama, a llama.cpp
server. Answers are requested with `response_format={"type": "json_object"}` only, the
one structured mode every such server accepts (llama.cpp has no json_schema).

    config = LLMConfig.from_env()          # None when nothing is configured: stay offline
    client = LLMClient(config)
    lesson, usage = client.complete_json(messages, Lesson.model_validate)

The SDK's own retries are switched off (`max_retries=0`): its backoff delays are fixed
constants, and the loop here must also honour a capped Retry-After and be fast in tests.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import openai

try:  # the SDK's HTTP layer: httpx2 in current openai releases, httpx before
    import httpx2 as _http
except ImportError:  # pragma: no cover - older openai
    import httpx as _http

log = logging.getLogger(__name__)
T = TypeVar("T")
ECHO_CHARS = 2000  # of an invalid answer sent back to the model when asking again


class LLMError(RuntimeError):
    """The endpoint gave no usable answer; the message says why and what to check."""


class LLMTimeout(LLMError):
    """The endpoint did not answer within the timeout, on every try."""


class LLMRateLimited(LLMError):
    """The endpoint kept answering 429 Too Many Requests."""


class LLMUnavailable(LLMError):
    """The endpoint kept failing with 5xx or could not be reached."""


class InvalidAnswer(LLMError):
    """The model's answers were not JSON objects that passed validation, on every attempt."""

    def __init__(self, message: str, *, attempts: int, last_error: str, last_content: str | None):
        super().__init__(message)
        self.attempts = attempts
        self.last_error = last_error
        self.last_content = last_content


@dataclass
class Usage:
    """What answering cost: tokens, HTTP calls (retries included) and wall-clock seconds."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    seconds: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.calls + other.calls,
            self.seconds + other.seconds,
        )


@dataclass
class LLMConfig:
    """Every knob of the LLM client, with the defaults a local or hosted endpoint needs."""

    base_url: str | None = None
    """Endpoint ending in /v1, e.g. http://localhost:8080/v1; None means OpenAI."""
    api_key: str | None = field(default=None, repr=False)
    """None: "sk-none" when base_url is set (local servers need no key), else OPENAI_API_KEY."""
    model: str = ""
    """Model name; "" asks the endpoint's /models and uses it when it serves exactly one."""
    timeout: float = 60.0
    """Seconds to wait for one HTTP answer."""
    max_retries: int = 3
    """Retries after a timeout, 429, 5xx or connection error (so max_retries + 1 tries)."""
    json_attempts: int = 3
    """Answers asked for before giving up on invalid JSON or a failed validation."""
    temperature: float = 0.0
    max_tokens: int | None = None
    retry_base_delay: float = 1.0
    """First backoff in seconds; doubles on each retry."""
    retry_max_delay: float = 10.0
    """Cap on any backoff, a server's Retry-After included."""
    total_timeout: float = 180.0
    """Seconds one answer may take in all, retries and backoff included (SKILLMEM_LLM_TOTAL_TIMEOUT)."""
    max_response_bytes: int = 4_000_000
    """Largest HTTP answer read; a bigger one is an LLMError (SKILLMEM_LLM_MAX_RESPONSE_BYTES)."""

    def __post_init__(self) -> None:
        if self.api_key is None and self.base_url:
            self.api_key = "sk-none"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LLMConfig | None:
        """Read SKILLMEM_LLM_BASE_URL, SKILLMEM_LLM_API_KEY and SKILLMEM_LLM_MODEL, and the limits
        SKILLMEM_LLM_TIMEOUT, SKILLMEM_LLM_TOTAL_TIMEOUT, SKILLMEM_LLM_MAX_RETRIES,
        SKILLMEM_LLM_MAX_RESPONSE_BYTES.

        Returns None when none of the first three is set: the offline default. OPENAI_API_KEY
        alone does not switch the client on (it is often set for other tools); it only supplies
        the key once a SKILLMEM_LLM_* variable is set.
        """
        env = os.environ if env is None else env
        base_url = env.get("SKILLMEM_LLM_BASE_URL") or None
        api_key = env.get("SKILLMEM_LLM_API_KEY") or None
        model = env.get("SKILLMEM_LLM_MODEL") or ""
        if not (base_url or api_key or model):
            return None
        api_key = api_key or env.get("OPENAI_API_KEY") or None
        if base_url is None and api_key is None:
            raise ValueError(
                "SKILLMEM_LLM_MODEL is set but there is no API key for OpenAI: set SKILLMEM_LLM_API_KEY "
                "or OPENAI_API_KEY, or set SKILLMEM_LLM_BASE_URL to use a local server"
            )
        limits: dict[str, Any] = {}
        for name, knob, kind in (("TIMEOUT", "timeout", float), ("TOTAL_TIMEOUT", "total_timeout", float),
                                 ("MAX_RETRIES", "max_retries", int),
                                 ("MAX_RESPONSE_BYTES", "max_response_bytes", int)):
            raw = env.get(f"SKILLMEM_LLM_{name}")
            if raw:
                try:
                    value = kind(raw)
                except ValueError:
                    raise ValueError(f"SKILLMEM_LLM_{name}={raw!r} is not a{'n integer' if kind is int else ' number'}"
                                     ) from None
                if value < 0 or (value == 0 and knob != "max_retries"):
                    raise ValueError(f"SKILLMEM_LLM_{name}={raw!r} must be positive")
                limits[knob] = value
        return cls(base_url=base_url, api_key=api_key, model=model, **limits)


class LLMClient:
    """Asks one OpenAI-compatible endpoint for JSON answers; keeps a running `usage` total."""

    def __init__(self, config: LLMConfig):
        self.config = config
        api_key = config.api_key or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            raise LLMError(
                "no API key for OpenAI: set LLMConfig.api_key (or SKILLMEM_LLM_API_KEY / OPENAI_API_KEY), "
                "or set base_url to a local server"
            )
        self._limits = _Limits(config.max_response_bytes)
        self._sdk = openai.OpenAI(
            base_url=config.base_url, api_key=api_key, timeout=config.timeout, max_retries=0,
            http_client=openai.DefaultHttpxClient(transport=_LimitedTransport(self._limits)),
        )
        self.endpoint = str(self._sdk.base_url).rstrip("/")
        self.model = config.model
        self.usage = Usage()
        self._json_mode = True  # switched off for good if the server rejects response_format
        self._lock = threading.Lock()

    def complete_json(
        self, messages: list[dict[str, Any]], validate: Callable[[dict[str, Any]], T]
    ) -> tuple[T, Usage]:
        """Ask until the answer is a JSON object that `validate` accepts; return its result and the cost.

        `validate` raises ValueError (pydantic's ValidationError is one), TypeError or KeyError
        on a wrong answer; the error goes back to the model and it answers again, up to
        `json_attempts` times. Any other exception from `validate` is a bug and propagates.
        """
        return self.complete(messages, lambda text: validate(parse_json_object(text)))

    def complete(
        self, messages: list[dict[str, Any]], validate: Callable[[str], T], *, json_mode: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> tuple[T, Usage]:
        """Ask until `validate` accepts the answer's text; `complete_json` for answers of any shape.

        `json_mode` asks for `response_format={"type": "json_object"}`; `tools` offers function
        schemas, and a tool call the model makes reaches `validate` as the JSON text
        ``{"name": ..., "arguments": ...}``. Retries and errors as in `complete_json`.
        """
        messages = list(messages)  # the caller's list stays as it was
        usage = Usage()
        start = time.monotonic()
        deadline = start + self.config.total_timeout
        error, content = "", None
        try:
            for _ in range(self.config.json_attempts):
                content = self._chat(messages, usage, deadline, json_mode=json_mode, tools=tools)
                try:
                    if isinstance(content, _NotText):  # never handed to a lenient validator as if text
                        raise ValueError(str(content))
                    return validate(content), usage
                except (ValueError, TypeError, KeyError) as e:
                    error = _shorten(f"{type(e).__name__}: {e}")
                log.info("%s (model %s) gave an invalid answer: %s", self.endpoint, self.model, error)
                fix = ("Answer again with only a JSON object that fixes this, no other text." if json_mode
                       else "Answer again, fixing this.")
                messages += [
                    # A long wrong answer is not sent back whole: the model needs only its start.
                    {"role": "assistant", "content": _shorten(content, ECHO_CHARS)},
                    {"role": "user", "content": f"Your answer was not valid: {error}. {fix}"},
                ]
            raise InvalidAnswer(
                f"{self.endpoint} (model {self.model}) gave no valid {'JSON ' if json_mode else ''}answer in "
                f"{self.config.json_attempts} attempts; last error: {error}. Check that the model "
                "follows the prompt's instructions, or raise json_attempts.",
                attempts=self.config.json_attempts,
                last_error=error,
                last_content=content,
            )
        finally:
            # Runs before the caller sees `usage`, so the returned object has its seconds too.
            usage.seconds = time.monotonic() - start
            with self._lock:
                self.usage = self.usage + usage

    def _chat(self, messages: list[dict[str, Any]], usage: Usage, deadline: float | None = None, *,
              json_mode: bool = True, tools: list[dict[str, Any]] | None = None) -> str:
        """One answer's text, retrying transport failures with backoff; counts calls and tokens.

        Every HTTP answer must arrive whole before `timeout` (a server that drips bytes is
        cut off) and the whole call, retries included, before `deadline`.
        """
        cfg = self.config
        deadline = deadline if deadline is not None else time.monotonic() + cfg.total_timeout
        model = self._resolve_model()
        retry = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LLMTimeout(
                    f"{self.endpoint} (model {model}): no usable answer within the total limit of "
                    f"{cfg.total_timeout:g} s ({usage.calls} calls). Check the server, or raise "
                    "SKILLMEM_LLM_TOTAL_TIMEOUT / LLMConfig.total_timeout.")
            call_timeout = min(cfg.timeout, remaining)
            kwargs: dict[str, Any] = {"model": model, "messages": messages, "temperature": cfg.temperature}
            if cfg.max_tokens is not None:
                kwargs["max_tokens"] = cfg.max_tokens
            if self._json_mode and json_mode:
                kwargs["response_format"] = {"type": "json_object"}
            if tools:
                kwargs["tools"] = tools
            usage.calls += 1
            headers = None
            try:
                self._limits.deadline.value = time.monotonic() + call_timeout
                response = self._sdk.chat.completions.create(**kwargs, timeout=call_timeout)
            except openai.BadRequestError as e:
                if self._json_mode and "response_format" in f"{e.message} {e.body}":
                    log.warning("%s rejects response_format; asking without it from now on", self.endpoint)
                    self._json_mode = False
                    continue
                raise LLMError(f"{self.endpoint} (model {model}) rejected the request: {e.message}") from e
            except openai.APITimeoutError as e:
                kind, what, cause = LLMTimeout, f"no answer within {call_timeout:g} s", e
            except openai.APIConnectionError as e:
                if isinstance(e.__cause__, ResponseTooLarge):
                    raise LLMError(f"{self.endpoint} (model {model}): {e.__cause__}") from e
                kind, what, cause = LLMUnavailable, f"cannot connect ({e.__cause__ or e})", e
            except openai.RateLimitError as e:
                kind, what, cause, headers = LLMRateLimited, "rate limited (429)", e, e.response.headers
            except openai.InternalServerError as e:
                kind, what, cause, headers = LLMUnavailable, f"server error: {e.message}", e, e.response.headers
            except openai.APIStatusError as e:  # 401, 403, 404, 422: retrying will not help
                raise LLMError(
                    f"{self.endpoint} (model {model}) refused the request: {e.message}. "
                    "Check the base URL, API key and model name."
                ) from e
            except openai.OpenAIError as e:  # anything else the SDK raises is still the endpoint's fault
                raise LLMError(f"{self.endpoint} (model {model}) failed: {type(e).__name__}: {e}") from e
            except ValueError as e:  # a body that says it is JSON and is not (an HTML error page)
                raise LLMError(f"{self.endpoint} (model {model}) answered with a body that is not JSON "
                               f"({type(e).__name__}: {e}). Check that the base URL points at an "
                               "OpenAI-compatible server.") from e
            else:
                return _answer_text(response, usage, f"{self.endpoint} (model {model})")

            if retry >= cfg.max_retries:
                raise kind(
                    f"{self.endpoint} (model {model}): {what}, after {retry + 1} tries. "
                    "Check that the server is up and not overloaded, or raise timeout / max_retries."
                ) from cause
            delay = min(self._backoff(retry, headers), max(0.0, deadline - time.monotonic()))
            log.warning("%s: %s; retry %d/%d in %.2f s", self.endpoint, what, retry + 1, cfg.max_retries, delay)
            time.sleep(delay)
            retry += 1

    def _backoff(self, retry: int, headers: Mapping[str, str] | None) -> float:
        """Seconds to wait: the server's Retry-After if it gave one, else exponential; capped."""
        delay = self.config.retry_base_delay * 2**retry
        for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
            value = headers.get(name) if headers is not None else None
            try:
                delay = float(value) / scale  # an HTTP-date Retry-After falls through to the backoff
                break
            except (TypeError, ValueError):
                pass
        return max(0.0, min(delay, self.config.retry_max_delay))

    def _resolve_model(self) -> str:
        """The configured model, or the endpoint's only model (vLLM, llama.cpp serve one)."""
        if self.model:
            return self.model
        try:
            self._limits.deadline.value = time.monotonic() + self.config.timeout
            ids = [m.id for m in self._sdk.models.list()]
        except openai.OpenAIError as e:
            raise LLMUnavailable(f"no model configured and {self.endpoint}/models failed: {e}") from e
        if len(ids) != 1:
            raise LLMError(
                f"no model configured and {self.endpoint} serves {len(ids)} models "
                f"({', '.join(ids[:5])}): set SKILLMEM_LLM_MODEL or LLMConfig.model"
            )
        self.model = ids[0]
        return self.model


class _NotText(str):
    """What stands for an answer whose content was a number, list or object instead of text."""


def _answer_text(response: Any, usage: Usage, who: str) -> str:
    """The assistant's text from a chat completion; LLMError when the body is not one (an HTML page).

    No choices or null content (a refusal, a tool call) read as an empty answer, which the
    caller's validation refuses and asks again. A number or list where text belongs is an
    answer that is not what was asked: said so, so the model can be asked again too.
    """
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list):
        body = response if isinstance(response, str) else type(response).__name__
        raise LLMError(f"{who} answered with something that is not a chat completion: {_shorten(str(body), 200)!r}. "
                       "Check that the base URL ends in /v1 and points at an OpenAI-compatible server.")
    u = getattr(response, "usage", None)
    if u is not None:
        for name in ("prompt_tokens", "completion_tokens"):
            value = getattr(u, name, 0)
            if isinstance(value, int) and value > 0:
                setattr(usage, name, getattr(usage, name) + value)
    if not choices:
        return ""
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None)
    calls = getattr(message, "tool_calls", None) or []
    if calls and not content and getattr(calls[0], "function", None) is not None:
        return json.dumps({"name": calls[0].function.name, "arguments": calls[0].function.arguments})
    if content is None:
        return ""
    if not isinstance(content, str):
        return _NotText(f"<not text: a JSON {type(content).__name__} where the answer's text belongs>")
    return content


class ResponseTooLarge(_http.TransportError):
    """The HTTP answer grew past LLMConfig.max_response_bytes."""


class _Limits:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.deadline = threading.local()  # per thread: several threads may share one client


class _LimitedStream(_http.SyncByteStream):
    """The body of one answer, cut off past its deadline or its size limit, whatever the server's pace."""

    def __init__(self, inner: Any, limits: _Limits, deadline: float, request: Any):
        self.inner, self.limits, self.deadline, self.request = inner, limits, deadline, request

    def __iter__(self) -> Any:
        n = 0
        for chunk in self.inner:
            n += len(chunk)
            if n > self.limits.max_bytes:
                raise ResponseTooLarge(f"the answer is larger than {self.limits.max_bytes} bytes; raise "
                                       "SKILLMEM_LLM_MAX_RESPONSE_BYTES or lower max_tokens", request=self.request)
            if time.monotonic() > self.deadline:
                raise _http.ReadTimeout("the answer did not arrive in time (the server sends too slowly)",
                                        request=self.request)
            yield chunk

    def close(self) -> None:
        self.inner.close()


class _LimitedTransport(_http.BaseTransport):
    def __init__(self, limits: _Limits):
        self.limits = limits
        self.inner = _http.HTTPTransport()

    def handle_request(self, request: Any) -> Any:
        deadline = getattr(self.limits.deadline, "value", None) or time.monotonic() + 600
        response = self.inner.handle_request(request)
        return _http.Response(status_code=response.status_code, headers=response.headers,
                              stream=_LimitedStream(response.stream, self.limits, deadline, request),
                              extensions=response.extensions)

    def close(self) -> None:
        self.inner.close()


_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def parse_json_object(text: str | None) -> dict[str, Any]:
    """The JSON object in a model's answer, bare or in a ```json fenced block; ValueError if none."""
    text = (text or "").strip()
    if not text:
        raise ValueError("the answer was empty")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        fenced = _FENCE.search(text)
        if fenced is None:
            raise ValueError(f"not valid JSON ({e})") from None
        try:
            obj = json.loads(fenced.group(1))
        except json.JSONDecodeError as e2:
            raise ValueError(f"the fenced block is not valid JSON ({e2})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object {{...}}, got a JSON {type(obj).__name__}")
    return obj


def _shorten(text: str, limit: int = 1000) -> str:
    return text if len(text) <= limit else text[:limit] + " ..."
