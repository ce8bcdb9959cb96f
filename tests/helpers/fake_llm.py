"""A scripted OpenAI-compatible chat server on loopback, for tests through the real SDK.

Why: the client's retries, timeouts, accounting and JSON repair only mean something when
exercised over HTTP by the same SDK that talks to a real endpoint. Responses come from a
queue of steps, then from an optional responder that sees the messages (for multi-round
sessions); every request is recorded so tests can assert on prompts and attempt counts.

    with FakeLLM() as llm:
        llm.script(Status(429, headers={"Retry-After": "1"}), "hello")
        llm.responder = lambda msgs: "{}" if "JSON" in last_user(msgs) else "prose"
        ... LLMConfig(base_url=llm.base_url, model="fake-model", api_key="k") ...
        assert len(llm.requests) == 2
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Text:
    """A normal completion. `usage` overrides the computed (len/4) token counts. A streamed
    request (`"stream": true`) gets it as server-sent events in `chunks` pieces, `chunk_delay_s`
    apart (a slow model); the usage comes last when `stream_options.include_usage` asks for it."""

    text: str
    delay_s: float = 0.0
    usage: dict | None = None
    omit_usage: bool = False
    chunks: int = 1
    chunk_delay_s: float = 0.0


@dataclass
class Status:
    """An HTTP error, e.g. Status(429, headers={"Retry-After": "1"}) or Status(500)."""

    code: int
    headers: dict = field(default_factory=dict)
    body: dict | None = None
    delay_s: float = 0.0


@dataclass
class Raw:
    """Exactly these bytes as the body (a malformed or non-JSON response)."""

    body: bytes
    code: int = 200
    content_type: str = "application/json"
    delay_s: float = 0.0


@dataclass
class Delay:
    """Wait before answering with `then` (slower than the client's timeout means a timeout)."""

    seconds: float
    then: Text | Status | Raw | str = "ok"


Step = Text | Status | Raw | Delay | str
Responder = Callable[[list[dict]], Step]


@dataclass
class Request:
    """What the server received: path, headers (lower-case names), parsed body."""

    path: str
    headers: dict
    body: Any
    at: float
    disconnected: bool = False     # the client closed the connection before the answer ended
    chunks_sent: int = 0

    @property
    def messages(self) -> list[dict]:
        return self.body.get("messages", []) if isinstance(self.body, dict) else []

    @property
    def prompt(self) -> str:
        """All message contents joined, for `in` assertions."""
        return "\n".join(str(m.get("content", "")) for m in self.messages)


def last_user(messages: list[dict]) -> str:
    """The last user message's text, for responders that pick a reply by the question."""
    for m in reversed(messages):
        if m.get("role") == "user":
            return str(m.get("content", ""))
    return ""


def _tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


class FakeLLM:
    """The server. `script(...)` queues steps; `responder` answers when the queue is empty."""

    def __init__(self, model_echo: bool = True) -> None:
        # Response formats this server refuses, with the status it answers, e.g.
        # {"json_schema": 500} as llama.cpp's server does, or {"json_object": 400}.
        self.reject_formats: dict[str, int] = {}
        self.context: int | None = None   # reported as `max_model_len` by GET /v1/models (as vLLM does)
        self.queue: deque[Step] = deque()
        self.responder: Responder | None = None
        self.requests: list[Request] = []
        self.model_echo = model_echo
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *steps: Step) -> FakeLLM:
        """Append steps; a bare string is a Text reply."""
        with self._lock:
            self.queue.extend(steps)
        return self

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeLLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- serving ----------------------------------------------------------------------------

    def _next(self, messages: list[dict]) -> Step:
        with self._lock:
            if self.queue:
                return self.queue.popleft()
        if self.responder is not None:
            return self.responder(messages)
        # 400, not 5xx: a client must fail fast rather than retry a test's scripting mistake.
        return Status(400, body={"error": {"message": "fake_llm: script exhausted"}})

    def _usage(self, step: Text, body: dict) -> dict:
        prompt = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
        usage = step.usage or {"prompt_tokens": _tokens(prompt), "completion_tokens": _tokens(step.text)}
        return {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}

    def _chunks(self, step: Text, body: dict) -> list[dict]:
        """The answer as chat.completion.chunk events, the usage last if asked for."""
        n = max(1, step.chunks)
        size = max(1, -(-len(step.text) // n))
        pieces = [step.text[i:i + size] for i in range(0, len(step.text), size)] or [""]
        base = {"id": f"chatcmpl-fake-{len(self.requests)}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body.get("model", "fake") if self.model_echo else "fake"}
        out = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": p},
                                     "finish_reason": None}]} for p in pieces]
        out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (body.get("stream_options") or {}).get("include_usage") and not step.omit_usage:
            out.append({**base, "choices": [], "usage": self._usage(step, body)})
        return out

    def _refused(self, body: dict) -> int | None:
        rf = body.get("response_format") if isinstance(body, dict) else None
        if not isinstance(rf, dict):
            return None
        kind = rf.get("type")
        if kind == "json_object" and "schema" in rf:
            kind = "json_object+schema"
        return self.reject_formats.get(kind) or (
            self.reject_formats.get("json_object") if kind == "json_object+schema" else None)

    def _completion(self, step: Text, body: dict) -> dict:
        prompt = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
        usage = step.usage or {"prompt_tokens": _tokens(prompt),
                               "completion_tokens": _tokens(step.text)}
        usage = {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}
        out = {
            "id": f"chatcmpl-fake-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake") if self.model_echo else "fake",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": step.text}}],
        }
        if not step.omit_usage:
            out["usage"] = usage
        return out

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
                pass

            def _send(self, code: int, payload: bytes, ctype: str, headers: dict) -> None:
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in headers.items():
                        self.send_header(k, str(v))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): nothing to tell it

            def _stream(self, req: Request, step: Text, body: dict) -> None:
                """Server-sent events, one chunk at a time; a failed write is the client's
                disconnect, which is when a real server stops generating."""
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    for i, chunk in enumerate(fake._chunks(step, body)):
                        if i and step.chunk_delay_s and fake._closing.wait(step.chunk_delay_s):
                            return
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                        self.wfile.flush()
                        req.chunks_sent += 1
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    req.disconnected = True

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                if self.path.rstrip("/") != "/v1/models":
                    self._send(404, b'{"error": {"message": "not found"}}', "application/json", {})
                    return
                entry: dict = {"id": "fake-model", "object": "model", "owned_by": "fake"}
                if fake.context is not None:
                    entry["max_model_len"] = fake.context
                self._send(200, json.dumps({"object": "list", "data": [entry]}).encode(), "application/json", {})

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
                req = Request(self.path, {k.lower(): v for k, v in self.headers.items()},
                              body, time.monotonic())
                with fake._lock:
                    fake.requests.append(req)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, b'{"error": {"message": "not found"}}', "application/json", {})
                    return
                step = fake._next(req.messages)
                if isinstance(step, Delay):
                    if fake._closing.wait(step.seconds):
                        return
                    step = step.then
                if isinstance(step, str):
                    step = Text(step)
                if getattr(step, "delay_s", 0) and fake._closing.wait(step.delay_s):
                    return
                refused = fake._refused(body)
                if refused and isinstance(step, Text):
                    with fake._lock:             # the answer waits for the next, acceptable request
                        fake.queue.appendleft(step)
                    self._send(refused, json.dumps({"error": {"message": "response_format not supported"}})
                               .encode(), "application/json", {})
                elif isinstance(step, Text) and isinstance(body, dict) and body.get("stream"):
                    self._stream(req, step, body)
                elif isinstance(step, Text):
                    payload = json.dumps(fake._completion(step, body if isinstance(body, dict)
                                                          else {})).encode()
                    self._send(200, payload, "application/json", {})
                elif isinstance(step, Status):
                    err = step.body or {"error": {"message": f"fake status {step.code}",
                                                  "type": "fake", "code": step.code}}
                    self._send(step.code, json.dumps(err).encode(), "application/json",
                               step.headers)
                elif isinstance(step, Raw):
                    self._send(step.code, step.body, step.content_type, {})
                else:
                    self._send(500, b'{"error": {"message": "fake_llm: bad step"}}',
                               "application/json", {})

        return Handler


@pytest.fixture(name="fake_llm")
def fake_llm_fixture() -> Iterator[FakeLLM]:
    """A fresh scripted server per test (`fake_llm`), on 127.0.0.1 and a free port.

    Use it with `from fake_llm import fake_llm_fixture  # noqa: F401` in a test module.
    """
    server = FakeLLM()
    try:
        yield server
    finally:
        server.close()
