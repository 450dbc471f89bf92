"""The job loop every job runs (generation, scoring, judge jobs, training runs, dataset snapshots).

`job_execute(model, id, work)`: claim the row (protocol.py), keep its lease renewed in the background, run
`work(job)`, which ends by finishing the job itself, and turn whatever stopped it into the job's end state:

- `Cancelled` (raised by the work when it sees the cancel flag): cancelled;
- `protocol.LeaseLost`: another attempt owns the job now; this one leaves it alone;
- a transient backend error (a model endpoint down, `workers.ml.errors`): released for a later retry, with
  back-off, while attempts remain;
- a permanent backend error or an `ApplicationError`: failed with its message;
- Celery's soft time limit: failed, naming the setting;
- anything else: failed with "internal error", the traceback in the log.

A failure that is recorded after the lease was lost changes nothing (the other attempt decides). The
page and socket of the job hear of its end (events.py).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from prefarena.errors import ApplicationError
from prefarena.jobs import events, protocol
from prefarena.jobs.model import Job, JobStatus
from workers.ml.errors import PermanentBackendError, TransientBackendError

logger = logging.getLogger(__name__)


class Cancelled(Exception):  # noqa: N818 - a request, not a fault
    """Raised by a job's work when it noticed that cancellation was requested."""


def job_execute(model: type[Job], job_id: int, work: Callable[[Any], None]) -> float | None:
    """Claim and run a job with `work(job)`; returns seconds after which to retry delivery, or None."""
    claim = protocol.job_claim(model, job_id, protocol.attempt_id())
    if isinstance(claim, protocol.ClaimRefused):
        logger.info("%s %s not claimed: %s", model.__name__, job_id, claim.reason)
        return claim.retry_in
    job = claim
    logger.info("%s claimed by %s (attempt %s/%s)", job, job.worker, job.attempts, job.max_attempts)
    keeper = protocol.LeaseKeeper(job)
    keeper.start()
    try:
        work(job)
    except Cancelled:
        _finish(job, JobStatus.CANCELLED, "cancelled while running")
    except protocol.LeaseLost:
        logger.warning("%s: lease lost to another attempt; this attempt stops", job)
    except TransientBackendError as exc:
        if protocol.job_release_for_retry(job, str(exc)):
            return min(300.0, 10.0 * 2 ** (job.attempts - 1))
    except (PermanentBackendError, ApplicationError) as exc:
        _finish(job, JobStatus.FAILED, str(exc))
    except SoftTimeLimitExceeded:
        _finish(job, JobStatus.FAILED, "time limit reached (WORKERS_TASK_TIME_LIMIT)")
    except Exception as exc:  # an unforeseen bug: fail the job readably, keep the traceback in the log
        logger.exception("%s failed", job)
        _finish(job, JobStatus.FAILED, f"internal error: {exc.__class__.__name__}: {exc}")
    finally:
        keeper.stop()
        events.job_progress_broadcast(job)
    return None


def _finish(job: Job, status: str, error: str) -> None:
    with contextlib.suppress(protocol.LeaseLost):  # taken over meanwhile: the other attempt decides
        protocol.job_finish(job, status, error=error)
