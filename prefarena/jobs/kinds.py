"""Every kind of job, once: its name (the segment of its page URL and socket path), its model, who may see one.

The job rows live in their apps (generation, scoring and judge jobs in `workers`, training runs and dataset
snapshots in `models_hub`); each app registers its kinds from `AppConfig.ready()` with the function that
decides who may see such a job (the same function the REST API uses). The job pages, the job socket and the
progress broadcast look kinds up here, so a kind missing from one of them cannot happen: a broadcast goes to
the group of the job's own kind, and a socket of a kind nobody registered is refused like an unknown id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from prefarena.errors import NotFound
from prefarena.jobs.model import Job


@dataclass(frozen=True)
class JobKind:
    name: str  # URL and socket path segment: /jobs/<name>/<id>/, ws/jobs/<name>/<id>/
    model: type[Job]
    list_for_user: Callable[[Any], QuerySet[Any]]  # the jobs of this kind `user` may see
    get_for_user: Callable[[Any, Any], Job]  # one of them, or NotFound
    page: bool = True  # shown on /jobs/ with the generic job page (training runs have a page of their own)


_KINDS: dict[str, JobKind] = {}


def register(kind: JobKind) -> None:
    """Add a kind (from an app's `ready()`); registering the same kind again is a no-op."""
    known = _KINDS.get(kind.name)
    if known is not None and known != kind:
        raise ValueError(f"job kind {kind.name!r} is already registered for {known.model.__name__}")
    if any(k.model is kind.model and k.name != kind.name for k in _KINDS.values()):
        raise ValueError(f"{kind.model.__name__} already has a job kind")
    _KINDS[kind.name] = kind


def kinds() -> list[JobKind]:
    return list(_KINDS.values())


def kind_named(name: str) -> JobKind | None:
    return _KINDS.get(name)


def kind_of(job: Job) -> JobKind:
    """The kind of a job row (LookupError for a model nobody registered: a programming error)."""
    for kind in _KINDS.values():
        if isinstance(job, kind.model):
            return kind
    raise LookupError(f"{type(job).__name__} is not a registered job kind")


def job_get_for_user(user: Any, name: str, job_id: Any) -> Job:
    """The job of kind `name`, if `user` may see it; NotFound for an unknown kind or id, someone else's
    job or an anonymous user (the same answer for each, so ids leak nothing)."""
    kind = _KINDS.get(name)
    if kind is None or user is None or not user.is_authenticated:
        raise NotFound("Job not found")
    return kind.get_for_user(user, job_id)
