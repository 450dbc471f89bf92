"""Lease / submit latency of the assignment queue on a large campaign, under concurrent annotators.

    .venv/bin/python benchmarks/assignment.py [--items 1000000] [--annotators 50] [--reuse]

Runs against PostgreSQL only (the locking behaviour under test is PostgreSQL's). The server comes from
--database-url or DATABASE_URL, but the benchmark always works in its own database (--db-name, default
`prefarena_bench`), created on first use: it never touches the database named in the URL.

1. migrate the benchmark database; fill one pairwise campaign with --items items of two responses and
   --overlap slots each with set-based SQL (INSERT ... SELECT generate_series): the ORM would need many
   minutes for a million items. --reuse keeps an existing fill and only resets what a previous run
   touched (judgments, leases), then VACUUMs.
2. start --annotators threads, each with its own connection, each looping
   `services.item_lease_next` -> `services.judgment_submit` (no HTTP: this measures the services),
   until --leases-per-annotator or --seconds is reached.
3. print p50/p95/p99 of lease and submit latency, and leases per second; --explain also prints
   EXPLAIN (ANALYZE, BUFFERS) of the lease queries.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_db import bench_database_url, ensure_database  # noqa: E402 - after the path tweak

DEFAULT_DB_NAME = "prefarena_bench"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000, help="pairwise items in the campaign (1000000)")
    parser.add_argument("--overlap", type=int, default=3, help="slots (distinct annotators) per item (3)")
    parser.add_argument("--annotators", type=int, default=50, help="concurrent annotator threads (50)")
    parser.add_argument("--leases-per-annotator", type=int, default=200, help="stop a thread after N leases (200)")
    parser.add_argument("--processes", type=int, default=1, help="spread the annotator threads over N processes (1)")
    parser.add_argument("--seconds", type=float, default=60.0, help="stop all threads after this long (60)")
    parser.add_argument("--warmup", type=int, default=3, help="first N leases of each thread not counted (3)")
    parser.add_argument(
        "--think-ms",
        type=float,
        default=0.0,
        help="pause between lease and submit, like a person reading (0: back to back)",
    )
    parser.add_argument(
        "--gold-every",
        type=int,
        default=0,
        help="make every Nth item a gold item (0: none); only when filling",
    )
    parser.add_argument("--gold-ratio", type=float, default=0.0, help="campaign gold_ratio for this run (0)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="PostgreSQL server URL (default: $DATABASE_URL); its database name is replaced",
    )
    parser.add_argument("--db-name", default=DEFAULT_DB_NAME, help=f"database to use ({DEFAULT_DB_NAME})")
    parser.add_argument("--reuse", action="store_true", help="keep an existing fill of the same size")
    parser.add_argument(
        "--no-broadcast",
        action="store_true",
        help="skip the live-progress broadcast each submit triggers on commit (isolates lease cost)",
    )
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of the lease queries")
    args = parser.parse_args(argv)
    if min(args.annotators, args.items, args.overlap, args.processes) < 1:
        parser.error("--items, --overlap, --annotators and --processes must be positive")
    return args


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    # Measure the production configuration: with DEBUG on Django also records every query in memory.
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", "benchmark-only-secret-key-never-used-to-serve-requests-0123456789")
    # Tasks the services enqueue (the throttled progress broadcast) go to an in-process broker: a real
    # worker would run them against its own database, where these campaign ids mean something else.
    os.environ["CELERY_BROKER_URL"] = "memory://"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prefarena.settings")
    import django

    django.setup()


# --- fill ----------------------------------------------------------------------------------------
def campaign_name(items: int, overlap: int, gold_every: int) -> str:
    return f"bench-pairwise-{items}x{overlap}" + (f"-gold{gold_every}" if gold_every else "")


def _reserve_ids(cursor: Any, table: str, count: int) -> int:
    """Reserve `count` ids of `table`'s identity sequence; returns the id before the first one."""
    cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table])
    sequence = cursor.fetchone()[0]
    cursor.execute("SELECT nextval(%s)", [sequence])
    first = cursor.fetchone()[0]
    cursor.execute("SELECT setval(%s, %s)", [sequence, first + count - 1])
    return first - 1


def fill(args: argparse.Namespace) -> Any:
    """The benchmark campaign, filled with set-based SQL (or reused and reset with --reuse)."""
    from django.db import connection, transaction

    from annotations import services
    from annotations.models import Campaign

    name = campaign_name(args.items, args.overlap, args.gold_every)
    existing = Campaign.objects.filter(name=name).first()
    if existing is not None and args.reuse:
        reset(existing)
        return existing
    if existing is not None:
        print(f"dropping the previous campaign {name!r} (pass --reuse to keep it)")
        drop(existing)

    started = time.perf_counter()
    n, k = args.items, args.overlap
    with transaction.atomic():
        campaign = services.campaign_create(
            name=name,
            kind="pairwise",
            created_by=None,
            overlap=k,
            gold_ratio=args.gold_ratio,
            guidelines="Pick the better answer.",
        )
        # Every --gold-every'th item is gold; NULLIF turns 0 into "no gold item" instead of a division by 0.
        gold = "COALESCE(g %% NULLIF(%(gold_every)s, 0) = 0, false)"
        with connection.cursor() as cursor:
            prompt0 = _reserve_ids(cursor, "annotations_prompt", n)
            response0 = _reserve_ids(cursor, "annotations_response", 2 * n)
            item0 = _reserve_ids(cursor, "annotations_item", n)
            steps = [
                (
                    "prompts",
                    """
                    INSERT INTO annotations_prompt (id, content, created_at)
                    SELECT %(prompt0)s + g, to_jsonb('Benchmark question ' || g || '?'), now()
                    FROM generate_series(1, %(n)s) AS g""",
                ),
                (
                    "responses",
                    """
                    INSERT INTO annotations_response
                        (id, prompt_id, text, model_name, metadata, reward_scores, created_at)
                    SELECT %(response0)s + 2 * (g - 1) + p + 1, %(prompt0)s + g,
                           'Answer ' || p || ' to question ' || g, 'bench-model-' || p, '{}', '{}', now()
                    FROM generate_series(1, %(n)s) AS g CROSS JOIN generate_series(0, 1) AS p""",
                ),
                (
                    "items",
                    """
                    INSERT INTO annotations_item (id, campaign_id, prompt_id, state, is_gold, gold_answer,
                                                  priority, response_count, uncertainty, meta, created_at)
                    SELECT %(item0)s + g, %(campaign)s, %(prompt0)s + g, 'needs_humans', GOLD,
                           CASE WHEN GOLD THEN '{"choice": "a"}'::jsonb END, 0, 2, NULL, '{}', now()
                    FROM generate_series(1, %(n)s) AS g""",
                ),
                (
                    "item responses",
                    """
                    INSERT INTO annotations_itemresponse (item_id, response_id, position)
                    SELECT %(item0)s + g, %(response0)s + 2 * (g - 1) + p + 1, p
                    FROM generate_series(1, %(n)s) AS g CROSS JOIN generate_series(0, 1) AS p""",
                ),
                (
                    "slots",
                    """
                    INSERT INTO annotations_assignmentslot
                        (item_id, campaign_id, slot_no, priority, is_gold, state)
                    SELECT %(item0)s + g, %(campaign)s, s, 0, GOLD, 'open'
                    FROM generate_series(1, %(n)s) AS g CROSS JOIN generate_series(0, %(k1)s) AS s
                    ORDER BY g, s""",
                ),
            ]
            params = {
                "n": n,
                "k1": k - 1,
                "prompt0": prompt0,
                "response0": response0,
                "item0": item0,
                "campaign": campaign.pk,
                "gold_every": args.gold_every,
            }
            for label, sql in steps:
                step_started = time.perf_counter()
                cursor.execute(sql.replace("GOLD", gold), params)
                took = time.perf_counter() - step_started
                print(f"  filled {label}: {cursor.rowcount:,} rows in {took:.1f} s")
    vacuum()
    print(f"fill of {n:,} items x {k} slots took {time.perf_counter() - started:.0f} s")
    return campaign


def drop(campaign: Any) -> None:
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        # Set-based deletes; Django's cascade would load millions of rows into Python.
        cursor.execute(
            "DELETE FROM annotations_judgment j USING annotations_item i WHERE j.item_id = i.id AND i.campaign_id = %s",
            [campaign.pk],
        )
        cursor.execute(
            "DELETE FROM annotations_skip s USING annotations_item i WHERE s.item_id = i.id AND i.campaign_id = %s",
            [campaign.pk],
        )
        cursor.execute("DELETE FROM annotations_assignmentslot WHERE campaign_id = %s", [campaign.pk])
        cursor.execute(
            "CREATE TEMP TABLE bench_drop ON COMMIT DROP AS "
            "SELECT id, prompt_id FROM annotations_item WHERE campaign_id = %s",
            [campaign.pk],
        )
        cursor.execute("DELETE FROM annotations_itemresponse r USING bench_drop d WHERE r.item_id = d.id")
        cursor.execute("DELETE FROM annotations_item WHERE campaign_id = %s", [campaign.pk])
        cursor.execute("DELETE FROM annotations_response r USING bench_drop d WHERE r.prompt_id = d.prompt_id")
        cursor.execute("DELETE FROM annotations_prompt p USING bench_drop d WHERE p.id = d.prompt_id")
    campaign.delete()


def reset(campaign: Any) -> None:
    """Undo what earlier runs did: their judgments, leases and done items. Only touched rows change."""
    from django.db import connection, transaction

    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM annotations_judgment j USING annotations_item i WHERE j.item_id = i.id AND i.campaign_id = %s",
            [campaign.pk],
        )
        judgments = cursor.rowcount
        cursor.execute(
            "DELETE FROM annotations_skip s USING annotations_item i WHERE s.item_id = i.id AND i.campaign_id = %s",
            [campaign.pk],
        )
        cursor.execute(
            "UPDATE annotations_assignmentslot SET state = 'open', annotator_id = NULL, leased_at = NULL, "
            "lease_expires_at = NULL, presented_order = NULL "
            "WHERE campaign_id = %s AND state <> 'open'",
            [campaign.pk],
        )
        slots = cursor.rowcount
        cursor.execute(
            "UPDATE annotations_item SET state = 'needs_humans' WHERE campaign_id = %s AND state <> 'needs_humans'",
            [campaign.pk],
        )
    vacuum()
    print(
        f"reusing campaign {campaign.name!r}: removed {judgments:,} judgments, reopened {slots:,} slots "
        f"({time.perf_counter() - started:.1f} s)"
    )


def vacuum() -> None:
    from django.db import connection

    with connection.cursor() as cursor:  # VACUUM cannot run in a transaction; we are in autocommit here
        for table in (
            "annotations_prompt",
            "annotations_response",
            "annotations_item",
            "annotations_itemresponse",
            "annotations_assignmentslot",
            "annotations_judgment",
        ):
            cursor.execute(f"VACUUM (ANALYZE) {table}")


def annotators(count: int, campaign: Any) -> list[Any]:
    from django.contrib.auth import get_user_model

    from annotations import services

    users = []
    for index in range(count):
        user, created = get_user_model().objects.get_or_create(username=f"bench-annotator-{index:03d}")
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        services.membership_set(campaign=campaign, user=user)
        users.append(user)
    return users


# --- run -----------------------------------------------------------------------------------------
@dataclass
class ThreadResult:
    lease_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    leases: int = 0
    empty: int = 0
    finished_at: float = 0.0
    errors: list[str] = field(default_factory=list)


def annotate(campaign_id: int, user_id: int, args: argparse.Namespace, start_at: float, result: ThreadResult) -> None:
    """One annotator: lease, (think), submit, until its lease budget, the deadline or an empty queue."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from annotations import services
    from annotations.models import Campaign, Item

    try:
        campaign = Campaign.objects.get(pk=campaign_id)  # also opens this thread's own connection
        user = get_user_model().objects.get(pk=user_id)
        time.sleep(max(0.0, start_at - time.time()))
        deadline = start_at + args.seconds
        while result.leases < args.leases_per_annotator and time.time() < deadline:
            began = time.perf_counter()
            slot = services.item_lease_next(campaign=campaign, annotator=user)
            leased = time.perf_counter()
            if slot is None:
                result.empty += 1
                break
            result.leases += 1
            if args.think_ms:
                time.sleep(args.think_ms / 1000 * random.uniform(0.5, 1.5))
            choice = random.choice(["a", "b", "tie", "both_bad"])
            data = {"choice": choice, "strength": "clear" if choice in ("a", "b") else ""}
            submit_began = time.perf_counter()
            services.judgment_submit(
                item=Item(pk=slot.item_id), annotator=user, data=data, idempotency_key=str(uuid.uuid4())
            )
            submitted = time.perf_counter()
            if result.leases > args.warmup:
                result.lease_ms.append((leased - began) * 1000)
                result.submit_ms.append((submitted - submit_began) * 1000)
    except Exception as exc:  # reported with the figures: a benchmark that hides errors measures nothing
        result.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        result.finished_at = time.time()
        connection.close()


def run_threads(campaign_id: int, user_ids: list[int], args: argparse.Namespace, start_at: float) -> list[ThreadResult]:
    """Run one thread per annotator in this process; returns their results."""
    results = [ThreadResult() for _ in user_ids]
    threads = [
        threading.Thread(target=annotate, args=(campaign_id, user_id, args, start_at, result), daemon=True)
        for user_id, result in zip(user_ids, results, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def run(campaign: Any, users: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    from django.db import connections

    user_ids = [user.pk for user in users]
    # Every thread opens its connection first, then all start together.
    start_at = time.time() + 2.0 + len(users) * 0.02
    if args.processes == 1:
        results = run_threads(campaign.pk, user_ids, args, start_at)
    else:
        # Web servers run several processes; one Python process with 50 busy threads measures its own
        # GIL as much as the database. Fork after closing our connection: children open their own.
        connections.close_all()
        chunks = [user_ids[index :: args.processes] for index in range(args.processes)]
        with multiprocessing.get_context("fork").Pool(args.processes) as pool:
            per_process = pool.starmap(run_threads, [(campaign.pk, chunk, args, start_at) for chunk in chunks])
        results = [result for process_results in per_process for result in process_results]
    wall = max(result.finished_at for result in results) - start_at
    lease_ms = [v for r in results for v in r.lease_ms]
    submit_ms = [v for r in results for v in r.submit_ms]
    leases = sum(r.leases for r in results)
    errors = [e for r in results for e in r.errors]
    print(
        f"\n{len(users)} annotator threads in {args.processes} process(es), {wall:.1f} s, {leases:,} leases and "
        f"submits (first {args.warmup} of each thread not in the percentiles), think time {args.think_ms:g} ms"
    )
    print(describe("lease ", lease_ms))
    print(describe("submit", submit_ms))
    print(f"throughput: {leases / wall:.1f} leases/s (each followed by its submit)")
    if errors:
        print(f"ERRORS in {len(errors)} threads, first: {errors[0]}")
    return {"lease_ms": lease_ms, "submit_ms": submit_ms, "leases": leases, "wall": wall, "errors": errors}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 1000) - 1]


def describe(label: str, values: list[float]) -> str:
    if not values:
        return f"{label}: no samples"
    p50, p95, p99 = (percentile(values, q) for q in (0.50, 0.95, 0.99))
    return (
        f"{label}: n={len(values):,}  p50={p50:.1f} ms  p95={p95:.1f} ms  p99={p99:.1f} ms"
        f"  max={max(values):.1f} ms  mean={statistics.fmean(values):.1f} ms"
    )


def explain(campaign: Any, user: Any) -> None:
    """EXPLAIN ANALYZE the lease's statements as item_lease_next issues them (rolled back)."""
    from django.db import connection, transaction
    from django.utils import timezone

    from annotations import services

    captured: list[str] = []

    def capture(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.lstrip().upper().startswith("SELECT"):
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
                plan = "\n".join(row[0] for row in cursor.fetchall())
            captured.append(f"{connection.ops.compose_sql(sql, params)}\n{plan}")
        return execute(sql, params, many, context)

    class Rollback(Exception):
        pass

    try:
        with transaction.atomic(), connection.execute_wrapper(capture):
            services.item_lease_next(campaign=campaign, annotator=user)
            raise Rollback
    except Rollback:
        pass
    print(f"\nEXPLAIN ANALYZE of the lease statements ({timezone.now():%Y-%m-%d %H:%M} UTC):")
    for entry in captured:
        print("\n" + entry)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    url = bench_database_url(args.database_url, args.db_name)
    ensure_database(url, args.db_name)
    print(f"benchmark database: {args.db_name!r} on {urlsplit(url).hostname}:{urlsplit(url).port or 5432}")
    setup_django(url)

    from django.core.management import call_command

    from annotations.models import Campaign

    call_command("migrate", interactive=False, verbosity=0)
    campaign = fill(args)
    Campaign.objects.filter(pk=campaign.pk).update(gold_ratio=args.gold_ratio)
    campaign.refresh_from_db()
    users = annotators(args.annotators, campaign)
    if args.no_broadcast:
        from annotations import events

        events.campaign_progress_broadcast = lambda campaign_id: None
        print("live-progress broadcast after each submit: OFF (--no-broadcast)")
    run(campaign, users, args)
    if args.explain:
        explain(campaign, users[0])


if __name__ == "__main__":
    main()
