"""Dataset snapshots: preferences frozen by filters into files, built once by a `default`-queue job.

Protocol (ARCHITECTURE.md, "Dataset snapshots"):
- `snapshot_create` validates filters/formats/options, stores a queued `DatasetSnapshot` and enqueues
  `annotations.tasks.snapshot_build` on commit.
- `snapshot_build` runs in the job loop every job runs (prefarena/jobs/loop.py: the claim, a lease kept by
  a LeaseKeeper thread, the end state of any failure), writes every format as JSONL and Parquet (image_pairs:
  one Parquet file with the images embedded, `image_pairs.parquet`) plus a README.md card into a temporary
  folder beside the final one, makes the files read-only, publishes the folder as
  `<PREFARENA_SNAPSHOT_DIR>/<id>` (prefarena/publish.py: fsync, hash, one rename) and records files, row
  counts and the content hash in the transaction that marks the job succeeded. A re-delivered or re-run task
  finds the job terminal and does nothing.
- Once succeeded a snapshot is immutable: `snapshot_update` refuses every change (409).

The export reads inside one REPEATABLE READ transaction, so progress is written by a separate thread
with its own connection (`_ProgressReporter`), which also notices cancellation and a lost lease.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from annotations import selectors, webhooks
from annotations.export import (
    IMAGE_PAIRS,
    ExportFilters,
    ExportRun,
    export_files,
    filters_parse,
    format_extensions,
    formats_parse,
    layout_parse,
    options_parse,
)
from annotations.export.source import items_estimate
from annotations.models import Campaign, DatasetSnapshot, WebhookEvent
from prefarena import enqueue, publish
from prefarena.errors import Conflict, InvalidInput, NotFound, PermissionDeniedError
from prefarena.jobs import loop
from prefarena.jobs.events import job_progress_broadcast
from prefarena.jobs.model import JobStatus
from prefarena.jobs.protocol import LeaseLost, job_finish

logger = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 1.0


# --- paths -------------------------------------------------------------------------------------------
def snapshot_dir(snapshot: DatasetSnapshot | int) -> Path:
    """The folder fixed by the snapshot id."""
    pk = snapshot if isinstance(snapshot, int) else snapshot.pk
    return Path(settings.PREFARENA_SNAPSHOT_DIR) / str(pk)


def snapshot_file_path(snapshot: DatasetSnapshot, fmt: str, ext: str = "jsonl") -> Path:
    """Path of one written file of a snapshot, e.g. (snap, "pairwise", "parquet") -> .../<id>/pairwise.parquet."""
    if fmt not in (snapshot.formats or []):
        raise NotFound(f"Snapshot {snapshot.pk} has no {fmt!r} export (formats: {', '.join(snapshot.formats)})")
    if ext not in format_extensions(fmt):
        raise NotFound(f"Unknown file type {ext!r} of {fmt} (known: {', '.join(format_extensions(fmt))})")
    return snapshot_dir(snapshot) / f"{fmt}.{ext}"


# --- access ------------------------------------------------------------------------------------------
def campaigns_managed_by(user: User) -> set[int]:
    """Ids of the campaigns `user` manages (staff: use the staff branch of the callers instead)."""
    return set(
        selectors.campaign_list_for_user(user)
        .filter(memberships__user=user, memberships__role="manager")
        .values_list("pk", flat=True)
    )


def export_campaigns_for_user(user: User, campaign_ids: tuple[int, ...]) -> tuple[int, ...]:
    """The campaigns `user` may export: staff any (empty = all); others only campaigns they manage.

    A campaign the user cannot see is 404; one they only annotate is 403 (exports hold everyone's
    judgments, which annotators may not read). Empty for a non-staff user means "all I manage".
    """
    if user.is_staff:
        missing = set(campaign_ids) - set(Campaign.objects.filter(pk__in=campaign_ids).values_list("pk", flat=True))
        if missing:
            raise InvalidInput(
                f"campaigns: no campaign {min(missing)}", fields={"campaigns": [f"no campaign {min(missing)}"]}
            )
        return campaign_ids
    if not campaign_ids:
        ids = tuple(sorted(campaigns_managed_by(user)))
        if not ids:
            raise PermissionDeniedError("Exports need campaigns you manage; you manage none")
        return ids
    for campaign_id in campaign_ids:
        campaign = selectors.campaign_get_for_user(user, campaign_id)
        if not selectors.campaign_user_can_manage(user, campaign):
            raise PermissionDeniedError(f"Only managers and staff can export campaign {campaign_id}")
    return campaign_ids


def filters_readable(filters: dict[str, Any] | None, managed: set[int]) -> bool:
    """Whether data selected by export `filters` is readable by a manager of exactly `managed`.

    Every campaign named must be managed; no campaign named means every campaign, which is staff-only.
    The same rule guards snapshots and the retraining policies that take them (workers/selectors.py).
    Campaign ids are stored as validated integers; anything else matches no campaign (hidden, not shown).
    """
    campaigns = (filters or {}).get("campaigns") or []
    return bool(campaigns) and set(campaigns) <= managed


def snapshot_user_can_create(user: User) -> bool:
    """Staff, or a manager of at least one campaign (the Datasets page is theirs; the API refuses others too)."""
    return bool(user.is_staff or campaigns_managed_by(user))


def snapshot_list_for_user(user: User) -> QuerySet[DatasetSnapshot]:
    """Staff see all; others the snapshots whose every campaign they manage (a snapshot of all campaigns: staff)."""
    snapshots = DatasetSnapshot.objects.select_related("created_by")
    if user.is_staff:
        return snapshots
    if not user.is_authenticated:
        return snapshots.none()
    managed = campaigns_managed_by(user)
    visible = [
        pk for pk, filters in DatasetSnapshot.objects.values_list("pk", "filters") if filters_readable(filters, managed)
    ]
    return snapshots.filter(pk__in=visible)


def snapshot_get_for_user(user: User, snapshot_id: Any) -> DatasetSnapshot:
    try:
        return snapshot_list_for_user(user).get(pk=int(snapshot_id))
    except (DatasetSnapshot.DoesNotExist, TypeError, ValueError, OverflowError) as exc:
        raise NotFound("Dataset snapshot not found") from exc


# --- services ----------------------------------------------------------------------------------------
@transaction.atomic
def snapshot_create(
    *,
    name: str,
    filters: dict[str, Any],
    formats: list[str],
    options: dict[str, Any],
    license: str = "",  # noqa: A002 - the field's name
    created_by: User | None = None,
    description: str = "",
) -> DatasetSnapshot:
    """Validate and store a queued snapshot; its build is enqueued when the transaction commits.

    `options` may name image_pairs' `layout`: only `parquet` (one file, images embedded) is a snapshot's; it
    is checked, not stored (the files layout is a folder: `export_preferences --layout files`)."""
    if not name or not name.strip():
        raise InvalidInput("name: give the snapshot a name", fields={"name": ["required"]})
    parsed_filters = filters_parse(filters)
    parsed_formats = formats_parse(formats)
    options = dict(options)
    layout_parse(options.pop("layout", None), parsed_formats)
    parsed_options = options_parse(options)
    known = set(Campaign.objects.filter(pk__in=parsed_filters.campaigns).values_list("pk", flat=True))
    missing = sorted(set(parsed_filters.campaigns) - known)
    if missing:
        raise InvalidInput(f"campaigns: no campaign {missing[0]}", fields={"campaigns": [f"no campaign {missing[0]}"]})
    snapshot = DatasetSnapshot.objects.create(
        name=name.strip()[:200],
        description=description,
        license=license[:100],
        filters=parsed_filters.as_json(),
        formats=list(parsed_formats),
        options=parsed_options.as_json(),
        progress_total=items_estimate(parsed_filters),
        enqueued_at=timezone.now(),
        created_by=created_by,
    )
    snapshot.directory = str(snapshot_dir(snapshot))
    snapshot.save(update_fields=["directory"])
    snapshot_id = snapshot.pk
    enqueue.enqueue_on_commit(enqueue.SNAPSHOT_BUILD, snapshot_id)
    return snapshot


def snapshot_create_for_user(
    user: User,
    *,
    name: str,
    filters: dict[str, Any],
    formats: list[str],
    options: dict[str, Any],
    license: str = "",  # noqa: A002 - the field's name
    description: str = "",
) -> DatasetSnapshot:
    """`snapshot_create` for a person (the REST API and the Datasets page): the filters are checked first (400
    naming the field), then the campaigns `user` may export are written into them (404 / 403, as exports)."""
    filters = dict(filters)
    parsed = filters_parse(filters)
    filters["campaigns"] = list(export_campaigns_for_user(user, parsed.campaigns))
    return snapshot_create(
        name=name,
        filters=filters,
        formats=formats,
        options=options,
        license=license,
        created_by=user,
        description=description,
    )


def snapshot_update(*, snapshot: DatasetSnapshot, **changes: Any) -> DatasetSnapshot:
    """Snapshots are immutable: files, filters and figures never change once written (409)."""
    raise Conflict(f"Dataset snapshot {snapshot.pk} is immutable; create a new snapshot instead")


# --- the build ---------------------------------------------------------------------------------------
class _ProgressReporter(threading.Thread):
    """Writes `done` to the job row every PROGRESS_INTERVAL_S from its own connection; notices cancellation."""

    def __init__(self, snapshot: DatasetSnapshot) -> None:
        super().__init__(name=f"snapshot-progress-{snapshot.pk}", daemon=True)
        self.snapshot_id, self.worker = snapshot.pk, snapshot.worker
        self.snapshot = snapshot  # only its class and pk are read here: they name the channel group
        self.done = 0
        self.cancelled = False
        self.lost = False  # the row is no longer this attempt's (taken over after a missed heartbeat)
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(PROGRESS_INTERVAL_S):
                self.report()
        finally:
            connection.close()

    def report(self) -> None:
        try:
            owned = DatasetSnapshot.objects.filter(pk=self.snapshot_id, worker=self.worker, status=JobStatus.RUNNING)
            if not owned.update(progress_done=self.done, heartbeat_at=timezone.now()):
                self.lost = True
            self.cancelled = bool(
                DatasetSnapshot.objects.filter(pk=self.snapshot_id).values_list("cancel_requested", flat=True).first()
            )
            job_progress_broadcast(self.snapshot)
        except Exception:  # e.g. SQLite busy: progress is cosmetic, the build goes on
            logger.warning("progress update of snapshot %s failed", self.snapshot_id, exc_info=True)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=10)


def content_hash(files: dict[str, dict[str, Any]]) -> str:
    """sha256 over the data files' names and hashes (the README card, which holds a timestamp, is left out)."""
    lines = "".join(f"{name} {meta['sha256']}\n" for name, meta in sorted(files.items()) if name != "README.md")
    return hashlib.sha256(lines.encode()).hexdigest()


def snapshot_build(snapshot_id: int) -> float | None:
    """Build a queued snapshot (the task body) in the job loop. Returns seconds to retry after when another
    attempt holds it."""
    return loop.job_execute(DatasetSnapshot, snapshot_id, _snapshot_write)


def _snapshot_write(snapshot: DatasetSnapshot) -> None:
    """Write, publish and record the snapshot; on any failure its scratch folder is removed and the loop
    records the end state (cancelled, failed, or nothing when the lease was lost)."""
    reporter = _ProgressReporter(snapshot)
    reporter.start()
    final = snapshot_dir(snapshot)
    scratch = final.parent / f".tmp-{snapshot.pk}-{uuid.uuid4().hex[:8]}"
    try:
        filters = filters_parse(snapshot.filters)
        options = options_parse(snapshot.options)
        formats = formats_parse(snapshot.formats)
        scratch.mkdir(parents=True)
        outputs = {fmt: [scratch / f"{fmt}.{ext}" for ext in format_extensions(fmt)] for fmt in formats}

        def on_item(read: int) -> None:
            reporter.done = read
            if reporter.cancelled:
                raise loop.Cancelled
            if reporter.lost:
                raise LeaseLost(f"snapshot {snapshot.pk}: lease taken over")

        rows, run = export_files(outputs, filters, options, on_item=on_item)
        hashed = publish.files_hash(scratch)  # each file fsynced and hashed (prefarena/publish.py)
        files: dict[str, dict[str, Any]] = {
            path.name: {"rows": rows[fmt], **hashed[path.name]} for fmt, paths in outputs.items() for path in paths
        }
        digest = content_hash(files)
        card = scratch / "README.md"
        card.write_text(dataset_card(snapshot, filters, rows, run, digest), encoding="utf-8")
        publish.fsync_file(card)
        files["README.md"] = {"rows": 0, "bytes": card.stat().st_size, "sha256": publish.file_sha256(card)}
        publish.folder_read_only(scratch)
        publish.folder_publish(scratch, final)  # replaces a folder an earlier attempt renamed and never recorded
        with transaction.atomic():
            job_finish(
                snapshot,
                JobStatus.SUCCEEDED,
                files=files,
                row_counts=rows,
                counts_by_source=dict(run.judgments_by_source),
                stats=run.stats(),
                content_hash=digest,
                directory=str(final),
                progress_done=run.items_read,
                progress_total=run.items_read,
            )
            webhooks.webhook_emit(
                event=WebhookEvent.SNAPSHOT_READY,
                payload={
                    "snapshot": snapshot.pk,
                    "name": snapshot.name,
                    "content_hash": digest,
                    "row_counts": rows,
                    "files": sorted(files),
                    "campaigns": list(filters.campaigns),
                },
                campaign_ids=filters.campaigns,
            )
    except BaseException:
        publish.folder_remove(scratch)
        raise
    finally:
        reporter.stop()


def _file_names(fmt: str) -> str:
    return ", ".join(f"`{fmt}.{ext}`" for ext in format_extensions(fmt))


IMAGE_PAIRS_CARD = [
    f"`{IMAGE_PAIRS}.parquet` holds pairwise image preferences (Pick-a-Pic / HPS columns: `caption`, `image_0`,",
    "`image_1`, `label_0`, `label_1`, `preference`, `p_0`, `image_0_uid`, `image_1_uid`, the models and provenance)",
    "with the images embedded as the `datasets` Image feature; pairs whose two sides are not both images are left",
    "out. Loading it:",
    "",
    "```python",
    "from datasets import load_dataset",
    f'ds = load_dataset("parquet", data_files="{IMAGE_PAIRS}.parquet", split="train")',
    'ds[0]["image_0"]  # a PIL image',
    "```",
    "",
]


def dataset_card(
    snapshot: DatasetSnapshot, filters: ExportFilters, rows: dict[str, int], run: ExportRun, digest: str
) -> str:
    """The README.md written beside the files: what was selected, how many rows, agreement, license."""
    stats = run.stats()
    campaigns = ", ".join(f"{pk} ({info.name})" for pk, info in sorted(run.campaigns.items())) or "all"

    def figure(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    lines = [
        f"# {snapshot.name}",
        "",
        snapshot.description or "Preference dataset exported from PrefArena.",
        "",
        f"- Snapshot id: {snapshot.pk}",
        f"- Created: {timezone.now().isoformat()}",
        f"- License: {snapshot.license or 'unspecified'}",
        f"- Content hash (sha256 over data files): `{digest}`",
        f"- Campaigns: {campaigns}",
        "",
        "## Files",
        "",
        "| format | rows | files |",
        "|---|---|---|",
        *(f"| {fmt} | {n} | {_file_names(fmt)} |" for fmt, n in rows.items()),
        "",
        *(IMAGE_PAIRS_CARD if IMAGE_PAIRS in rows else []),
        "## Judgments by source",
        "",
        "| source | judgments |",
        "|---|---|",
        *(f"| {source} | {n} |" for source, n in sorted(run.judgments_by_source.items())),
        "",
        "## Agreement",
        "",
        f"- Items read: {stats['items_read']}, exported: {stats['items_exported']}",
        f"- Mean agreement with the resolved label: {figure(stats['mean_agreement'])}",
        f"- Mean margin |2 P(chosen) - 1|: {figure(stats['mean_margin'])}",
        f"- Judges with a measured reliability: {stats['judges_measured']}"
        f" (mean {figure(stats['mean_judge_reliability'])}), flagged and left out: {stats['judges_flagged']}",
        f"- Pairs left out because chosen and rejected were identical: {stats['dropped_identical_pairs']}",
        f"- Items with an adjudicated label (a reviewer settled a disagreement; rows marked"
        f" `label_source: adjudicated` with the reviewer's `adjudication_note`): {stats['adjudicated_items']}",
        "",
        "## Filters",
        "",
        "```json",
        json.dumps(snapshot.filters, indent=2, sort_keys=True),
        "```",
        "",
        "## Options",
        "",
        "```json",
        json.dumps(snapshot.options, indent=2, sort_keys=True),
        "```",
        "",
        "Labels: pairwise labels are reliability-weighted (one-coin Dawid–Skene over judges), rankings are",
        "resolved by a Bradley–Terry fit, ratings by per-aspect means with their spread. Ranked and rated items",
        "become pairwise rows by the options' `pair_mode`, `pair_margin` and `pair_seed`. Annotators appear",
        "only as stable pseudonyms.",
        "",
    ]
    return "\n".join(lines)
