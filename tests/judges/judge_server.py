"""A scripted OpenAI-compatible judge server for tests: stdlib only, 127.0.0.1, a free port, a thread.

    with ScriptedJudgeServer(lambda body: "... [[A]]") as server:
        OpenAIChat(base_url=server.base_url, model="judge")

The script receives the parsed request body and returns the answer text, or a `Scripted` value for
token log-probabilities (`logprobs=True` adds a `logprobs.content` list like OpenAI's), a delay in
seconds (`delay_s`, for time-outs) or a raw HTTP status. Every request body is kept in `requests`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass
class Scripted:
    text: str = ""
    verdict_logprobs: dict[str, float] | None = None  # for the token after the last "[[": {"A": -0.1, ...}
    delay_s: float = 0.0
    status: int = 200


@dataclass
class ScriptedJudgeServer:
    script: Callable[[dict[str, Any]], str | Scripted]
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:
                self._json(200, {"object": "list", "data": [{"id": "judge", "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                with server._lock:
                    server.requests.append(body)
                answer = server.script(body)
                if isinstance(answer, str):
                    answer = Scripted(text=answer)
                if answer.delay_s:
                    server._stopping.wait(answer.delay_s)
                if answer.status != 200:
                    return self._json(answer.status, {"error": {"message": f"scripted HTTP {answer.status}"}})
                choice: dict[str, Any] = {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.text},
                    "finish_reason": "stop",
                }
                if body.get("logprobs") and answer.verdict_logprobs is not None:
                    choice["logprobs"] = {"content": _token_logprobs(answer.text, answer.verdict_logprobs)}
                self._json(
                    200,
                    {
                        "id": "chatcmpl-judge",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model"),
                        "choices": [choice],
                        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
                    },
                )

            def _json(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (time-out tests)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> ScriptedJudgeServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _token_logprobs(text: str, verdict: dict[str, float]) -> list[dict[str, Any]]:
    """Character-level "tokens" (simple and exact); the verdict letter after the last "[[" gets `verdict`."""
    position = text.rfind("[[") + 2
    tokens = []
    for index, char in enumerate(text):
        entry: dict[str, Any] = {"token": char, "logprob": -0.01, "bytes": list(char.encode()), "top_logprobs": []}
        if index == position:
            entry["logprob"] = verdict.get(char, -5.0)
            entry["top_logprobs"] = [{"token": k, "logprob": v, "bytes": list(k.encode())} for k, v in verdict.items()]
        tokens.append(entry)
    return tokens


def shown_answers(body: dict[str, Any]) -> tuple[str, str]:
    """The answers shown as A and B in a pairwise judge request (default template)."""
    user = body["messages"][-1]["content"]
    a = user.split("[The Start of Assistant A's Answer]\n")[1].split("\n[The End of Assistant A's Answer]")[0]
    b = user.split("[The Start of Assistant B's Answer]\n")[1].split("\n[The End of Assistant B's Answer]")[0]
    return a, b
