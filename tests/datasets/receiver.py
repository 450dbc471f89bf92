"""A webhook receiver for tests: stdlib HTTP server on 127.0.0.1 in a thread that checks signatures itself.

with receiver(secret="s3cret", statuses=[500, 200]) as server:
    ...  # server.url; server.requests: [Received(headers, body, signature_ok, status)]
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: Any
    signature_ok: bool
    status: int


class Receiver:
    def __init__(self, secret: str, statuses: list[int]) -> None:
        self.secret = secret
        self.statuses = list(statuses)  # answered in turn; the last one repeats
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                # Verify as a real receiver would: HMAC-SHA256 of the exact body with the shared secret.
                expected = "sha256=" + hmac.new(owner.secret.encode(), raw, hashlib.sha256).hexdigest()
                ok = hmac.compare_digest(expected, self.headers.get("X-PrefArena-Signature", ""))
                with owner.lock:
                    status = owner.statuses[min(len(owner.requests), len(owner.statuses) - 1)]
                    if not ok:
                        status = 401
                    owner.requests.append(
                        Received(
                            self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(raw), ok, status
                        )
                    )
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else b"nope")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@contextmanager
def receiver(secret: str, statuses: list[int] | None = None) -> Iterator[Receiver]:
    server = Receiver(secret, statuses or [200])
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()
        server.thread.join(timeout=5)
