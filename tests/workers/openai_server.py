"""A scriptable OpenAI-compatible HTTP server for tests: stdlib only, 127.0.0.1, a free port, a thread.

    with serve("echo", delay_s=0.1) as server:
        chat = OpenAIChat(base_url=server.base_url, model="fake-model")
        ...
        server.requests        # every request: method, path, headers (lower-case names), parsed JSON body
        server.max_in_flight   # the most requests it was answering at the same moment

Behaviours (settable at any time through `server.behaviour`), for POST /v1/chat/completions and, where it
makes sense, GET /v1/models:
  echo              answers "echo: <last user message> #seed=<seed>", cut to `max_tokens` words (then
                    finish_reason "length"); plain JSON, or SSE when the request says `stream: true` (one
                    delta per word, `stream_delay_s` apart, flushed one by one as a token server sends them).
                    With `reply` set, answers `reply(body)` instead (scripted texts, e.g. repeated ones).
                    With `ignore_stream`, answers plain JSON even to a request that asks for a stream
  slow              waits `slow_s` (default 10 s) before answering like echo; stopping the server wakes it
  malformed         200 with a body that is not JSON
  missing_choices   200 with a JSON object without `choices` (without `data` for /models)
  error400          400 with an OpenAI-style {"error": {"message": ...}} body
  error429          429 with Retry-After: 2
  error500          500 with an OpenAI-style error body
  garbage_stream    200 text/event-stream: one good event, then a `data:` line that is not JSON
  truncated_stream  200 text/event-stream that ends (cleanly) without a finish_reason or [DONE]
  stream_error      200 text/event-stream: one good event, then an {"error": {"message", "code": 500}} event
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

BEHAVIOURS = frozenset(
    {
        "echo",
        "slow",
        "malformed",
        "missing_choices",
        "error400",
        "error429",
        "error500",
        "garbage_stream",
        "truncated_stream",
        "stream_error",
    }
)
ERROR_MESSAGES = {
    400: "fake server: 'max_tokens' is not acceptable for this model",
    401: "Incorrect API key provided",
    429: "Rate limit reached for requests",
    500: "fake server: the engine crashed",
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # the parsed JSON body; None for GET or a body that is not JSON


class FakeOpenAIServer:
    """The server; a context manager that starts it on entry and stops it (joining every thread) on exit."""

    def __init__(
        self,
        behaviour: str = "echo",
        *,
        models: tuple[str, ...] = ("fake-model",),
        delay_s: float | Callable[[dict[str, Any]], float] = 0.0,
        slow_s: float = 10.0,
        usage: bool = True,
        api_key: str | None = None,
        reply: Callable[[dict[str, Any]], str] | None = None,
        stream_delay_s: float = 0.0,
        ignore_stream: bool = False,
    ) -> None:
        self.behaviour = behaviour
        self.reply = reply  # the echo behaviour's text for a request body, when set (settable at any time)
        self.models = models
        self.delay_s = delay_s  # before answering a chat request; a callable receives the request body
        self.slow_s = slow_s
        self.stream_delay_s = stream_delay_s  # between two deltas of a streamed answer
        self.ignore_stream = ignore_stream  # a server that cannot stream: plain JSON whatever is asked
        self.usage = usage  # report `usage` (plain: always; stream: when include_usage is asked for)
        self.api_key = api_key  # when set, other bearer tokens get 401
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        # A short poll interval: shutdown() waits for the serving loop to look, 0.5 s by default.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-openai", daemon=True
        )

    @property
    def behaviour(self) -> str:
        return self._behaviour

    @behaviour.setter
    def behaviour(self, value: str) -> None:
        if value not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {value!r}; one of {sorted(BEHAVIOURS)}")
        self._behaviour = value

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake sleeping handlers, cut idle keep-alive connections, join all threads."""
        self._stopping.set()
        if self._thread.is_alive():
            self._httpd.shutdown()
        # A handler thread of a keep-alive connection blocks reading the next request; shutting its
        # socket down makes that read return, so server_close() can join the thread.
        with self._httpd.connections_lock:
            connections = list(self._httpd.connections)
        for connection in connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _done(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _wait(self, seconds: float) -> None:
        self._stopping.wait(seconds)  # returns at once when the server stops


@contextmanager
def serve(behaviour: str = "echo", **options: Any) -> Iterator[FakeOpenAIServer]:
    """A running FakeOpenAIServer for the duration of the block; options as for FakeOpenAIServer."""
    with FakeOpenAIServer(behaviour, **options) as server:
        yield server


def _answer_of(fake: FakeOpenAIServer, body: dict[str, Any]) -> tuple[str, str, int, int]:
    """What the echo behaviour answers: `echo_reply`, or the scripted `fake.reply(body)` in full."""
    text, finish_reason, prompt_tokens, completion_tokens = echo_reply(body)
    if fake.reply is not None:
        text = fake.reply(body)
        finish_reason, completion_tokens = "stop", len(text.split())
    return text, finish_reason, prompt_tokens, completion_tokens


def echo_reply(body: dict[str, Any]) -> tuple[str, str, int, int]:
    """(text, finish_reason, prompt_tokens, completion_tokens) the echo behaviour answers `body` with."""
    messages = body.get("messages") or []
    last_user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    words = f"echo: {last_user} #seed={body.get('seed')}".split()
    limit = body.get("max_tokens")
    finish_reason = "stop"
    if isinstance(limit, int) and len(words) > limit:
        words, finish_reason = words[:limit], "length"
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)  # a word is a "token" here
    return " ".join(words), finish_reason, prompt_tokens, len(words)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False  # so server_close() joins the handler threads: nothing outlives the server
    fake: FakeOpenAIServer

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.connections: set[socket.socket] = set()  # open client connections, for stop()
        self.connections_lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up (time-out tests do it on purpose) is not an error worth a traceback.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and chunked bodies for streams
    timeout = 30  # seconds a connection may sit idle; a safety net, stop() does not wait for it
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # keep test output clean

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    # -- dispatch ------------------------------------------------------------------------------------

    def _serve(self, method: str) -> None:
        fake = self.server.fake
        raw = self.rfile.read(int(self.headers.get("content-length") or 0)) if method == "POST" else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        fake._record(RecordedRequest(method, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        try:
            self._answer(method, body if isinstance(body, dict) else {})
        except OSError:
            self.close_connection = True  # the client went away mid-answer
        finally:
            fake._done()

    def _answer(self, method: str, body: dict[str, Any]) -> None:
        fake = self.server.fake
        behaviour = fake.behaviour
        if fake.api_key is not None and self.headers.get("authorization") != f"Bearer {fake.api_key}":
            return self._error(401)
        route = (method, self.path.rstrip("/"))
        if route not in (("GET", "/v1/models"), ("POST", "/v1/chat/completions")):
            return self._json(404, {"error": {"message": f"no route {method} {self.path}", "type": "not_found"}})
        delay = fake.delay_s(body) if callable(fake.delay_s) else fake.delay_s
        fake._wait(fake.slow_s if behaviour == "slow" else delay)
        if behaviour in ("error400", "error429", "error500"):
            return self._error(int(behaviour.removeprefix("error")))
        if behaviour == "malformed":
            return self._send(200, "application/json", b'{"id": "chatcmpl-1", "choices": [{"message": ')
        if behaviour in ("garbage_stream", "truncated_stream", "stream_error"):
            return self._broken_stream(behaviour)
        if route == ("GET", "/v1/models"):
            if behaviour == "missing_choices":
                return self._json(200, {"object": "list"})
            return self._json(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in fake.models]})
        if behaviour == "missing_choices":
            return self._json(200, {"id": "chatcmpl-1", "object": "chat.completion", "model": body.get("model")})
        if body.get("stream") and not fake.ignore_stream:
            return self._echo_stream(body)
        return self._echo(body)

    # -- answers -------------------------------------------------------------------------------------

    def _echo(self, body: dict[str, Any]) -> None:
        text, finish_reason, prompt_tokens, completion_tokens = _answer_of(self.server.fake, body)
        answer: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
            ],
        }
        if self.server.fake.usage:
            answer["usage"] = _usage(prompt_tokens, completion_tokens)
        self._json(200, answer)

    def _echo_stream(self, body: dict[str, Any]) -> None:
        text, finish_reason, prompt_tokens, completion_tokens = _answer_of(self.server.fake, body)
        self._stream_start()
        self._chunk(b": keep-alive comment, which clients must skip\n\n")
        self._event(_chunk(body, {"role": "assistant", "content": ""}))
        for position, word in enumerate(text.split(" ")):
            if position:
                self.server.fake._wait(self.server.fake.stream_delay_s)
            self._event(_chunk(body, {"content": word if position == 0 else " " + word}))
        self._event(_chunk(body, {}, finish_reason))
        include_usage = (body.get("stream_options") or {}).get("include_usage")
        if self.server.fake.usage and include_usage:
            self._event(
                {"object": "chat.completion.chunk", "choices": [], "usage": _usage(prompt_tokens, completion_tokens)}
            )
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def _broken_stream(self, behaviour: str) -> None:
        self._stream_start()
        self._event(_chunk({}, {"role": "assistant", "content": "partial"}))
        if behaviour == "garbage_stream":
            self._chunk(b'data: {"choices": [{"delta": {"content": "oops\n\n')
        if behaviour == "stream_error":  # how vLLM reports a failure after the 200 header went out
            self._event({"error": {"message": ERROR_MESSAGES[500], "type": "InternalServerError", "code": 500}})
        self._chunk(b"")  # the body ends properly: no [DONE], no finish_reason

    # -- HTTP plumbing -------------------------------------------------------------------------------

    def _error(self, status: int) -> None:
        extra = {"Retry-After": "2"} if status == 429 else {}
        error = {"message": ERROR_MESSAGES[status], "type": "fake_error", "param": None, "code": None}
        self._json(status, {"error": error}, extra)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, "application/json", json.dumps(payload).encode(), headers)

    def _send(self, status: int, content_type: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _stream_start(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def _event(self, payload: dict[str, Any]) -> None:
        self._chunk(f"data: {json.dumps(payload)}\n\n".encode())

    def _chunk(self, data: bytes) -> None:
        """One HTTP/1.1 chunk; an empty one ends the body."""
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _chunk(body: dict[str, Any], delta: dict[str, str], finish_reason: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": body.get("model"), "choices": [choice]}


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
