"""A lean HTTP/1.1 keep-alive client on asyncio streams, for load generators on a small machine.

httpx costs ~1 ms of Python per request; on a 2-core machine that shares its cores with the server and
PostgreSQL, the client would be most of what a benchmark measures. This one writes the request bytes
and reads the status line, the headers and a Content-Length body (no chunked bodies, no redirects, no
TLS): enough for a JSON API on loopback. Not a general client.
"""

from __future__ import annotations

import asyncio
import contextlib


class Connection:
    """One keep-alive connection; one request at a time."""

    def __init__(self, host: str, port: int, cookies: dict[str, str] | None = None) -> None:
        self.host, self.port = host, port
        self.cookies = dict(cookies or {})
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
            self.writer = None

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            await self.open()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        if body:
            lines.append("Content-Type: application/json")
        if self.cookies:
            lines.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        answer: dict[str, str] = {}
        for line in header_lines:
            if not line:
                continue
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "set-cookie":
                cookie, _, _ = value.partition(";")
                key, _, cookie_value = cookie.partition("=")
                self.cookies[key.strip()] = cookie_value.strip()
            answer[name] = value
        if "chunked" in answer.get("transfer-encoding", ""):
            raise RuntimeError("chunked bodies are not supported by this client")
        length = int(answer.get("content-length", "0"))
        payload = await self.reader.readexactly(length) if length else b""
        if answer.get("connection", "").lower() == "close":
            await self.close()
        return status, answer, payload
