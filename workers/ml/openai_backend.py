"""Generation through an OpenAI-compatible chat-completions endpoint (vLLM, TGI, llama.cpp, SGLang, OpenAI).

`OpenAIChat.generate` keeps the contract of `CausalLM.generate`: one `Completion` per prompt, in input
order, row i sampled with seeds[i] (reproducible only as far as the server honours `seed`). Requests run
up to `max_concurrency` at a time on one pooled `httpx.Client`; the server does the batching.

Failures are `TransientBackendError` (retry the job later) or `PermanentBackendError` (fail the job with
the message); see `workers.ml.errors`. Nothing is retried here: the job layer owns attempts and back-off.

This module imports neither Django nor torch, so the web process may `ping` an endpoint when a model is
registered without loading the ML stack.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any

import httpx

from workers.ml.errors import BackendError, PermanentBackendError, TransientBackendError
from workers.ml.types import Completion, Prompt, SamplingParams  # torch-free

EXCERPT_CHARS = 200  # how much of a bad reply an error message quotes
_RETRYABLE_STATUS = frozenset({408, 429})  # besides every 5xx: "request timeout" and "slow down"
_TIMEOUT_PHASE = {
    httpx.ConnectTimeout: "while connecting",
    httpx.ReadTimeout: "waiting for the answer",
    httpx.WriteTimeout: "while sending the request",
    httpx.PoolTimeout: "waiting for a free connection",
}


class OpenAIChat:
    """A client for one model behind an OpenAI-compatible `/chat/completions` endpoint.

    Use it as a context manager (or call `close()`): it holds a pool of keep-alive connections.
    `timeout_s` bounds each phase of a request (connecting, sending, and every wait for bytes), so a
    plain request's whole generation must finish within it, while a streamed one only has to keep
    sending tokens.
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_concurrency: int = 4,
        stream: bool = False,
    ) -> None:
        # Configuration comes from a registered model row, so a bad value fails the job with a message
        # (PermanentBackendError) rather than a traceback.
        self.base_url = _base_url_check(base_url)
        if not model.strip():
            raise PermanentBackendError("the model name for an OpenAI-compatible endpoint is empty")
        if not timeout_s > 0:
            raise PermanentBackendError(f"timeout_s must be positive, not {timeout_s!r}")
        if max_concurrency < 1:
            raise PermanentBackendError(f"max_concurrency must be at least 1, not {max_concurrency!r}")
        self.model = model
        self.timeout_s = float(timeout_s)
        self.max_concurrency = max_concurrency
        self.stream = stream
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            headers=headers,
            # No pool time-out: the pool has one connection per worker thread, and every holder is
            # bounded by the other time-outs; a pool wait is not a sign the endpoint is down.
            timeout=httpx.Timeout(self.timeout_s, pool=None),
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )

    def __repr__(self) -> str:
        # Never show the key (it lives only in the client's headers).
        return f"OpenAIChat(base_url={self.base_url!r}, model={self.model!r}, stream={self.stream})"

    def __enter__(self) -> OpenAIChat:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections; the object cannot send requests afterwards."""
        self._client.close()

    def generate(self, prompts: list[Prompt], seeds: list[int], params: SamplingParams) -> list[Completion]:
        """One completion per prompt, in input order; row i is sampled with seeds[i].

        Runs up to `max_concurrency` requests at once. On the first failure the requests not yet
        started are cancelled, those in flight are awaited (each is bounded by `timeout_s`), and the
        error of the first prompt, in input order, found failed at that moment is raised.
        """
        if len(prompts) != len(seeds):
            raise ValueError("one seed per prompt")
        if not prompts:
            return []
        # Build every body first, so a malformed prompt fails before anything is sent.
        bodies = [
            self._request_body(prompt, seed, params, index)
            for index, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True))
        ]
        with ThreadPoolExecutor(
            max_workers=min(self.max_concurrency, len(bodies)), thread_name_prefix="openai-chat"
        ) as pool:
            futures = [pool.submit(self._complete, body) for body in bodies]
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for future in pending:
                future.cancel()
            failures = [error for future in futures if future in done and (error := future.exception()) is not None]
            if failures:
                raise failures[0]
        return [future.result() for future in futures]

    def generate_streaming(
        self, prompt: Prompt, seed: int, params: SamplingParams, on_delta: Callable[[str], None]
    ) -> Completion:
        """One completion, streamed whatever `stream` says: `on_delta(text)` receives each piece of the answer
        as the server sends it (in order, never empty), and the whole completion is returned at the end.

        A server that answers with one plain body instead of a stream gives a single delta. Errors are
        those of `generate`; a stream that breaks after some deltas raises like any other failure.
        """
        body = self._request_body(prompt, seed, params, 0, stream=True)
        return self._complete(body, on_delta)

    def ping(self, *, timeout_s: float | None = None) -> list[str]:
        """The model ids the endpoint serves (GET {base_url}/models); raises the errors `generate` raises.

        `timeout_s` overrides the client's time-out for this call, e.g. a short one in a web request.
        """
        timeout = httpx.Timeout(timeout_s, pool=None) if timeout_s is not None else httpx.USE_CLIENT_DEFAULT
        with self._transport_errors(timeout_s if timeout_s is not None else self.timeout_s):
            response = self._client.get(
                f"{self.base_url}/models", headers={"Accept": "application/json"}, timeout=timeout
            )
        self._status_check(response)
        payload = self._json_object(response)
        models = payload.get("data")
        if not isinstance(models, list) or not all(
            isinstance(m, dict) and isinstance(m.get("id"), str) for m in models
        ):
            raise PermanentBackendError(
                f"endpoint {self.base_url} listed models without a `data` list of objects with an `id`: "
                f"{_excerpt(response.text)}"
            )
        return [m["id"] for m in models]

    # -- one request ---------------------------------------------------------------------------------

    def _request_body(
        self, prompt: Prompt, seed: int, params: SamplingParams, index: int, *, stream: bool | None = None
    ) -> dict[str, Any]:
        stream = self.stream if stream is None else stream
        body: dict[str, Any] = {
            "model": self.model,
            "messages": _messages(prompt, index),
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": seed,
            "n": 1,
            "stream": stream,
        }
        if stream:
            # Without this a stream carries no token counts; servers that ignore it just send none.
            body["stream_options"] = {"include_usage": True}
        return body

    def _complete(self, body: dict[str, Any], on_delta: Callable[[str], None] | None = None) -> Completion:
        url = f"{self.base_url}/chat/completions"
        if not body["stream"]:
            with self._transport_errors():
                response = self._client.post(url, json=body, headers={"Accept": "application/json"})
            self._status_check(response)
            return self._completion_from_body(self._json_object(response), response.text)
        with (
            self._transport_errors(),
            self._client.stream("POST", url, json=body, headers={"Accept": "text/event-stream"}) as response,
        ):
            if not response.is_success:
                response.read()  # the error body, for the message
                self._status_check(response)
            if response.headers.get("content-type", "").startswith("application/json"):
                # A server that does not stream answers with one plain body; accept it as such.
                response.read()
                completion = self._completion_from_body(self._json_object(response), response.text)
                if on_delta is not None and completion.text:
                    on_delta(completion.text)
                return completion
            return self._completion_from_events(_sse_data(response.iter_lines()), on_delta)

    def _completion_from_body(self, payload: dict[str, Any], raw: str) -> Completion:
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise PermanentBackendError(f"endpoint {self.base_url} returned no `choices`: {_excerpt(raw)}")
        choice = choices[0]
        message = choice.get("message")
        content = message.get("content", _MISSING) if isinstance(message, dict) else _MISSING
        # `content` is null when a reasoning model spent every token thinking; that is an empty answer
        # (with finish_reason "length"), not a broken reply. A missing or non-string one is broken.
        if content is not None and not isinstance(content, str):
            raise PermanentBackendError(
                f"endpoint {self.base_url} returned no `choices[0].message.content` string: {_excerpt(raw)}"
            )
        return _completion(content or "", choice.get("finish_reason"), payload.get("usage"))

    def _completion_from_events(
        self, events: Iterable[str], on_delta: Callable[[str], None] | None = None
    ) -> Completion:
        parts: list[str] = []
        finish_reason: str | None = None
        usage: Any = None
        done = False
        for data in events:
            if data.strip() == "[DONE]":
                done = True
                break
            try:
                chunk = json.loads(data)
            except ValueError:
                raise PermanentBackendError(
                    f"endpoint {self.base_url} sent a malformed stream event: {_excerpt(data)}"
                ) from None
            if not isinstance(chunk, dict) or not isinstance(chunk.get("choices", []), list):
                raise PermanentBackendError(
                    f"endpoint {self.base_url} sent an unexpected stream event: {_excerpt(data)}"
                )
            if chunk.get("error"):
                raise self._stream_error(chunk["error"], data)
            for choice in chunk.get("choices", []):
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue  # we ask for n=1; anything else is not ours to read
                delta = choice.get("delta")
                piece = delta.get("content") if isinstance(delta, dict) else None
                if piece is not None and not isinstance(piece, str):
                    raise PermanentBackendError(
                        f"endpoint {self.base_url} sent a stream event whose content is not text: {_excerpt(data)}"
                    )
                parts.append(piece or "")
                if piece and on_delta is not None:
                    on_delta(piece)
                if choice.get("finish_reason") is not None:
                    finish_reason = choice["finish_reason"]
            if chunk.get("usage"):
                usage = chunk["usage"]  # the include_usage chunk, after the last content chunk
        if not done and finish_reason is None:
            # The body ended cleanly (a dropped connection would have raised a transport error), so
            # the server chose to stop mid-answer: a server bug, not something a retry fixes.
            raise PermanentBackendError(
                f"endpoint {self.base_url} ended the stream before a finish_reason or [DONE] "
                f"(after {len(''.join(parts))} characters of text)"
            )
        return _completion("".join(parts), finish_reason, usage)

    def _stream_error(self, error: Any, raw: str) -> BackendError:
        # vLLM and others report failures after the 200 header as an `error` event.
        message = error.get("message") if isinstance(error, dict) else error
        code = error.get("code") if isinstance(error, dict) else None
        text = f"endpoint {self.base_url} reported an error mid-stream: {_excerpt(str(message or raw))}"
        if isinstance(code, int) and (code in _RETRYABLE_STATUS or code >= 500):
            return TransientBackendError(text, status_code=code)
        return PermanentBackendError(text, status_code=code if isinstance(code, int) else None)

    # -- errors --------------------------------------------------------------------------------------

    @contextmanager
    def _transport_errors(self, timeout_s: float | None = None) -> Iterator[None]:
        """Turns httpx's exceptions into ours, with the endpoint named and nothing secret in them."""
        try:
            yield
        except httpx.TimeoutException as error:
            phase = _TIMEOUT_PHASE.get(type(error), "")
            seconds = timeout_s if timeout_s is not None else self.timeout_s
            raise TransientBackendError(
                f"endpoint {self.base_url} timed out after {seconds} s {phase}".strip()
            ) from error
        except httpx.ConnectError as error:
            raise TransientBackendError(f"could not connect to endpoint {self.base_url}: {error}") from error
        except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError) as error:
            raise TransientBackendError(f"the connection to endpoint {self.base_url} broke: {error}") from error
        except httpx.DecodingError as error:
            raise PermanentBackendError(
                f"endpoint {self.base_url} sent a body that cannot be decoded: {error}"
            ) from error
        except httpx.RequestError as error:  # unsupported protocol, too many redirects, local protocol error
            raise PermanentBackendError(f"request to endpoint {self.base_url} failed: {error}") from error

    def _status_check(self, response: httpx.Response) -> None:
        if response.is_success:
            return
        status = response.status_code
        message = f"endpoint {self.base_url} answered HTTP {status} {response.reason_phrase}: {_error_detail(response)}"
        if status in _RETRYABLE_STATUS or status >= 500:
            raise TransientBackendError(message, status_code=status, retry_after_s=_retry_after_s(response))
        raise PermanentBackendError(message, status_code=status)

    def _json_object(self, response: httpx.Response) -> dict[str, Any]:
        try:
            payload = response.json()
        except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
            raise PermanentBackendError(
                f"endpoint {self.base_url} returned malformed JSON: {_excerpt(response.text)}"
            ) from None
        if not isinstance(payload, dict):
            raise PermanentBackendError(
                f"endpoint {self.base_url} returned JSON that is not an object: {_excerpt(response.text)}"
            )
        return payload


_MISSING: Any = object()


def _completion(text: str, finish_reason: Any, usage: Any) -> Completion:
    tokens = _usage_tokens(usage)
    if tokens is None:
        # No usage reported: the prompt is unknown, the answer roughly 4 characters a token (English).
        tokens = (0, math.ceil(len(text) / 4))
    return Completion(
        text=text,
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
        # Completion knows two reasons: hitting the cap, or ending on its own. "stop", "eos",
        # "end_turn", "content_filter", "tool_calls" and a missing value all mean the model stopped.
        finish_reason="length" if finish_reason in ("length", "max_tokens") else "stop",
    )


def _usage_tokens(usage: Any) -> tuple[int, int] | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if type(prompt) is int and type(completion) is int:  # `type is`, so True/False do not count
        return prompt, completion
    return None


def _messages(prompt: Prompt, index: int) -> list[dict[str, Any]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if not isinstance(prompt, list) or not prompt:
        raise PermanentBackendError(f"prompt {index} is neither text nor a non-empty list of messages")
    messages = []
    for position, message in enumerate(prompt):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)):
            raise PermanentBackendError(f"prompt {index}, message {position}: needs a `role` and a `content`")
        content = message.get("content")
        if not isinstance(content, str):
            content = _content_parts(content, f"prompt {index}, message {position}")
        messages.append({"role": message["role"], "content": content})
    return messages


def _content_parts(content: Any, where: str) -> list[dict[str, Any]]:
    """A message's content parts as sent: text parts, and image parts whose URL is a `data:` URI.

    Stored prompts name their images `sha256:<hex>`, which no endpoint can fetch; the caller resolves them to
    data URIs first (`workers/runners.py`). Anything else (a reference left over, an outside URL) is refused
    here rather than sent: the endpoint would answer about an image it never saw, or fetch a URL for us."""
    if not isinstance(content, list) or not content:
        raise PermanentBackendError(
            f"{where}: needs a `role` and a `content` (a string or a non-empty list of content parts)"
        )
    parts: list[dict[str, Any]] = []
    for number, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
            continue
        url = (part.get("image_url") or {}).get("url") if kind == "image_url" else None
        if isinstance(url, str) and url.startswith("data:"):
            parts.append({"type": "image_url", "image_url": {"url": url}})
            continue
        if isinstance(url, str):
            raise PermanentBackendError(
                f"{where}, part {number}: the image {_excerpt(url)} is not a data URI (stored images are sent as "
                "data URIs; nothing is fetched from a URL)"
            )
        raise PermanentBackendError(f"{where}, part {number}: not a text or image_url content part")
    return parts


def _sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The data of each server-sent event, per https://html.spec.whatwg.org/multipage/server-sent-events.html."""
    data: list[str] = []
    for line in lines:
        if not line:  # a blank line ends an event
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):  # a comment, e.g. a keep-alive
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value.removeprefix(" "))
        # `event`, `id` and `retry` carry nothing the chat-completions stream uses.
    if data:
        yield "\n".join(data)


def _base_url_check(base_url: str) -> str:
    try:
        url = httpx.URL(base_url.strip())
    except httpx.InvalidURL as error:
        raise PermanentBackendError(f"endpoint URL {base_url!r} is not a URL: {error}") from error
    if url.scheme not in ("http", "https") or not url.host:
        raise PermanentBackendError(
            f"endpoint URL {base_url!r} must start with http:// or https:// and name a host, "
            "like http://127.0.0.1:8000/v1"
        )
    return str(url).rstrip("/")


def _error_detail(response: httpx.Response) -> str:
    """The server's own words: OpenAI's {"error": {"message"}}, its variants, or the body itself."""
    try:
        payload = response.json()
    except ValueError:
        return _excerpt(response.text)
    if isinstance(payload, dict):
        error = payload.get("error")
        for candidate in (
            error.get("message") if isinstance(error, dict) else error,  # OpenAI, vLLM / TGI
            payload.get("message"),  # older vLLM: {"object": "error", "message": ...}
            payload.get("detail"),  # FastAPI
        ):
            if isinstance(candidate, str) and candidate:
                return _excerpt(candidate)
    return _excerpt(response.text)


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # the other allowed form is an HTTP date
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def _excerpt(text: str) -> str:
    text = text.strip()
    if not text:
        return "(empty body)"
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"
