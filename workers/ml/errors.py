"""Errors a generation backend raises, split by what the job should do next.

`TransientBackendError`: the same request may well succeed later (time-out, connection refused, HTTP 429
or 5xx, a connection that broke mid-answer); the job layer retries it, up to its `max_attempts`.
`PermanentBackendError`: retrying cannot help (HTTP 4xx, a reply that is not the API we speak, bad
configuration); the job fails at once and stores the message, so every message is written for a person.
"""

from __future__ import annotations

from typing import Any


class BackendError(Exception):
    """A generation backend failed; `str(error)` says what happened in words a person can act on."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code  # the HTTP status when the endpoint answered, else None

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only attributes are lost by the default Exception pickling (it replays `args` only);
        # errors cross process boundaries (Celery result backend, multiprocessing), so keep them.
        return (_rebuild, (type(self), self.message, self.__dict__))


class TransientBackendError(BackendError):
    """Worth retrying: time-outs, refused or broken connections, HTTP 429 and 5xx."""

    def __init__(self, message: str, *, status_code: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_after_s = retry_after_s  # the endpoint's Retry-After in seconds, when it sent one


class PermanentBackendError(BackendError):
    """Not worth retrying: HTTP 4xx (other than 408/429), malformed replies, bad configuration."""


def _rebuild(cls: type[BackendError], message: str, state: dict[str, Any]) -> BackendError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class UnsupportedOnWorker(PermanentBackendError):
    """The job asks for something this worker cannot do (fp16 autocast on a CPU, 4-bit weights without
    bitsandbytes or CUDA); the message names the option and what to change."""
