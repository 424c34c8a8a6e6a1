"""A real OpenAI-compatible HTTP server on loopback that answers from a script, for tests at the LLM edge.

    def test_x(openai_server):
        openai_server.script([{"status": 429, "retry_after": 0}, {"content": '{"ok": true}'}])
        client = LLMClient(LLMConfig(base_url=openai_server.base_url, model="test-model"))
        ...
        assert openai_server.requests[-1]["response_format"] == {"type": "json_object"}

Behaviours, taken one per chat request from the front of the script:

    {"content": "..."}                  200 with that assistant text (valid JSON or not; None allowed)
    {"status": 429, "retry_after": 0}   error status; "retry_after" sets the Retry-After header
    {"status": 500}                     any status >= 400; "body" (dict or str) replaces the error body
    {"hang": 5.0}                       wait that long before answering (to outlast a client timeout)
    {"raw": "<html>..."}                200 whose body is that text as is ("content_type" sets its type)
    {"drip": 8.0, "content": "..."}     send the body at that many bytes per second (headers at once)

Optional keys on a 200: "usage" ({"prompt_tokens": .., "completion_tokens": ..}; by default
word counts) and "finish_reason" ("stop"). Once the script is empty, `set_responder(fn)`
answers: fn(request_json) returns the content string or a behaviour dict.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

Behaviour = dict[str, Any]
Responder = Callable[[dict[str, Any]], "str | Behaviour"]


def error_body(message: str, type_: str = "invalid_request_error", code: str | None = None) -> dict[str, Any]:
    """An error body shaped like OpenAI's, which the SDK turns into the exception's message."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class OpenAIServer:
    """Serves POST /v1/chat/completions and GET /v1/models on 127.0.0.1, recording every chat request."""

    def __init__(self, models: tuple[str, ...] = ("test-model",)):
        self.models = list(models)
        self.requests: list[dict[str, Any]] = []
        """Every chat request body received, in order (retries included)."""
        self._script: deque[Behaviour] = deque()
        self._responder: Responder | None = None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._ids = itertools.count(1)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Handler,), {"fake": self}))
        self._httpd.daemon_threads = True  # a handler still hanging must not block close()
        host, port = self._httpd.server_address[:2]
        self.base_url = f"http://{host}:{port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> OpenAIServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()  # wakes hanging handlers
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def script(self, behaviours: list[Behaviour]) -> None:
        """Queue behaviours for the next chat requests (appends to what is still queued)."""
        with self._lock:
            self._script.extend(behaviours)

    def set_responder(self, fn: Responder | None) -> None:
        """Answer requests with fn(request_json) once the script is empty."""
        self._responder = fn

    @property
    def pending(self) -> int:
        """Scripted behaviours not yet used."""
        return len(self._script)

    def _next(self, request: dict[str, Any]) -> Behaviour:
        with self._lock:
            self.requests.append(request)
            if self._script:
                return self._script.popleft()
        if self._responder is None:
            return {"status": 500, "body": error_body(
                "the test server's script is empty: call script([...]) or set_responder(fn)", "server_error")}
        try:
            answer = self._responder(request)
        except Exception:  # the test's own bug: show it in the client's error, not a hung request
            return {"status": 500, "body": error_body("responder raised:\n" + traceback.format_exc(), "server_error")}
        return {"content": answer} if isinstance(answer, str) or answer is None else answer

    def _completion(self, request: dict[str, Any], b: Behaviour) -> dict[str, Any]:
        content = b.get("content")
        prompt_words = sum(len(str(m.get("content") or "").split()) for m in request.get("messages", []))
        usage = {"prompt_tokens": prompt_words, "completion_tokens": len(str(content or "").split())}
        usage.update(b.get("usage", {}))
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return {
            "id": f"chatcmpl-test-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", ""),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": b.get("finish_reason", "stop"),
            }],
            "usage": usage,
        }


class _Handler(BaseHTTPRequestHandler):
    fake: OpenAIServer

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            return self._send(404, error_body(f"no route GET {self.path}"))
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "skillmem-tests"} for m in self.fake.models]
        self._send(200, {"object": "list", "data": data})

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._send(404, error_body(f"no route POST {self.path}"))
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        b = self.fake._next(request)
        if "hang" in b and self.fake._closing.wait(b["hang"]):
            return  # server closing: nobody is listening any more
        status = b.get("status", 200)
        headers = {"Retry-After": str(b["retry_after"])} if "retry_after" in b else {}
        if status == 200 and "raw" in b:
            return self._send(200, b["raw"], content_type=b.get("content_type", "text/html"))
        if status == 200:
            body: Any = self.fake._completion(request, b)
        else:
            kind = "rate_limit_exceeded" if status == 429 else "server_error" if status >= 500 else "invalid_request_error"
            body = b.get("body", error_body(f"scripted status {status}", kind))
        self._send(status, body, headers, drip=b.get("drip"))

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None, *,
              content_type: str = "application/json", drip: float | None = None) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if drip:
                step = max(1, int(drip // 4))
                for i in range(0, len(data), step):
                    if self.fake._closing.wait(step / drip):
                        return
                    self.wfile.write(data[i:i + step])
                    self.wfile.flush()
                return
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timed out), which is what a hang test wants

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    """A fresh scripted OpenAI-compatible server for one test; `.base_url` ends in /v1."""
    with OpenAIServer() as server:
        yield server
