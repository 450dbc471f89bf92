"""Live export throughput and memory: stream the `pairwise` export of a large campaign over HTTP from a real server.

    .venv/bin/python benchmarks/export.py [--items 1000000] [--runs 3] [--reuse] [--server daphne|gunicorn|runserver]
        [--ext jsonl|parquet] [--memory-check]

Runs against PostgreSQL only, in its own database (--db-name, default `prefarena_bench_export`), created and
migrated on first use; it never touches the database named in --database-url / DATABASE_URL.

1. fill one pairwise campaign with --items items (prompt, two responses) and one human judgment each
   (--judgments-per-item for more), from 1,000 annotators, with set-based SQL (INSERT ... SELECT
   generate_series; columns the benchmark does not set get their model defaults, so the fill follows
   schema changes). Choices: 45% a, 45% b, 5% tie, 5% both bad. --reuse keeps a fill of the same size.
2. start a real server process on loopback with DEBUG off and the in-memory channel layer: daphne (ASGI),
   gunicorn with one sync worker (WSGI, the production HTTP deployment; --timeout raised so a long stream
   is not killed as a hung worker), or `manage.py runserver --noreload` (daphne's runserver here).
3. GET /api/v1/export/pairwise.<--ext>?campaign=<id> with a staff token, --runs times; count rows as they
   arrive (Parquet: the file is kept in a temporary file and its footer read at the end); sample the RSS of the
   process that serves (gunicorn: its worker) every 20 ms (psutil) and read its kernel peak (VmHWM) at the end.
4. print rows, seconds, rows/s, time to first byte and the server's peak RSS per run, and the medians.

--memory-check: whether the server's memory stays flat as the export grows. Steps 1-3 run for --items and for
4 x --items (two campaigns), each against a fresh server process, one request each; then both peaks and the
growth of the 4x export over the 1x one are printed.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_db import bench_database_url, ensure_database  # noqa: E402 - after the path tweak

DEFAULT_DB_NAME = "prefarena_bench_export"
SECRET = "benchmark-only-secret-key-never-used-to-serve-requests-0123456789"
ANNOTATORS = 1000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000, help="pairwise items (1000000)")
    parser.add_argument("--judgments-per-item", type=int, default=1, help="human judgments per item (1)")
    parser.add_argument("--runs", type=int, default=3, help="export requests to time (3)")
    parser.add_argument("--format", default="pairwise", help="export format to stream (pairwise)")
    parser.add_argument("--ext", choices=["jsonl", "parquet"], default="jsonl", help="live export to stream (jsonl)")
    parser.add_argument(
        "--memory-check", action="store_true", help="peak server RSS for --items and 4 x --items, fresh servers"
    )
    parser.add_argument("--server", choices=["daphne", "gunicorn", "runserver"], default="daphne")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="PostgreSQL server URL (default: $DATABASE_URL); its database name is replaced",
    )
    parser.add_argument("--db-name", default=DEFAULT_DB_NAME, help=f"database to use ({DEFAULT_DB_NAME})")
    parser.add_argument("--reuse", action="store_true", help="keep an existing fill of the same size")
    args = parser.parse_args(argv)
    if args.items < 1 or args.judgments_per_item < 1 or args.judgments_per_item > ANNOTATORS or args.runs < 1:
        parser.error("--items, --runs >= 1 and 1 <= --judgments-per-item <= 1000")
    return args


def server_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DEBUG", "DATABASE_URL")}
    env.update(
        DATABASE_URL=url,
        DEBUG="0",  # production configuration: DEBUG on records every query in memory
        SECRET_KEY=os.environ.get("SECRET_KEY", SECRET),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        CELERY_BROKER_URL="memory://",
        DJANGO_SETTINGS_MODULE="prefarena.settings",
        SECURE_SSL_REDIRECT="0",
    )
    return env


def setup_django(url: str) -> None:
    os.environ.update(server_env(url))
    import django

    django.setup()


# --- fill --------------------------------------------------------------------------------------------
def _default_sql(field: Any) -> tuple[str, list[Any]]:
    """SQL placeholder and parameter for a column the benchmark does not set: the model default."""
    from django.db import models
    from psycopg.types.json import Jsonb

    if isinstance(field, models.JSONField):
        value = field.get_default()
        return ("%s", [None]) if value is None else ("%s", [Jsonb(value)])
    if isinstance(field, models.DateTimeField):
        return "now()", []
    return "%s", [field.get_default()]


def insert_select(cursor: Any, model: Any, values: dict[str, str], source: str, params: dict[str, Any]) -> None:
    """INSERT INTO <model table> SELECT ... FROM <source>: `values` maps column -> SQL; other columns get defaults."""
    columns, expressions = [], []
    for field in model._meta.concrete_fields:
        columns.append(field.column)
        if field.column in values:
            expressions.append(values[field.column])
        elif field.primary_key:
            columns.pop()
        else:
            sql, default = _default_sql(field)
            name = f"default_{field.column}"
            expressions.append(sql.replace("%s", f"%({name})s"))
            if default:
                params[name] = default[0]
    cursor.execute(
        f"INSERT INTO {model._meta.db_table} ({', '.join(columns)}) SELECT {', '.join(expressions)} FROM {source}",  # noqa: S608 - fixed SQL
        params,
    )


def _reserve_ids(cursor: Any, table: str, count: int) -> int:
    cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table])
    sequence = cursor.fetchone()[0]
    cursor.execute("SELECT nextval(%s)", [sequence])
    first = cursor.fetchone()[0]
    cursor.execute("SELECT setval(%s, %s)", [sequence, first + count - 1])
    return first - 1


def fill(args: argparse.Namespace, items: int | None = None) -> tuple[int, int]:
    """The benchmark campaign (id, judgments) of `items` (default --items); reused when --reuse and the sizes match."""
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from annotations import services
    from annotations.models import Campaign, Item, ItemResponse, Judgment, Prompt, Response

    n, k = items or args.items, args.judgments_per_item
    name = f"bench-export-{n}x{k}"
    existing = Campaign.objects.filter(name=name).first()
    if existing is not None and args.reuse:
        return existing.pk, Judgment.objects.filter(item__campaign=existing).count()
    if existing is not None:
        print(f"dropping the previous campaign {name!r} (pass --reuse to keep it)")
        with connection.cursor() as cursor:
            items = "SELECT id FROM annotations_item WHERE campaign_id = %s"
            cursor.execute(f"DELETE FROM annotations_judgment WHERE item_id IN ({items})", [existing.pk])  # noqa: S608
        existing.delete()
    started = time.perf_counter()
    User = get_user_model()  # noqa: N806
    User.objects.bulk_create(
        [User(username=f"bench-annotator-{i}", password="!") for i in range(ANNOTATORS)], ignore_conflicts=True
    )
    users = list(
        User.objects.filter(username__startswith="bench-annotator-").order_by("pk").values_list("pk", flat=True)
    )
    with transaction.atomic():
        campaign = services.campaign_create(name=name, kind="pairwise", created_by=None, overlap=k)
        with connection.cursor() as cursor:
            prompt0 = _reserve_ids(cursor, Prompt._meta.db_table, n)
            response0 = _reserve_ids(cursor, Response._meta.db_table, 2 * n)
            item0 = _reserve_ids(cursor, Item._meta.db_table, n)
            params = {"n": n, "k": k, "prompt0": prompt0, "response0": response0, "item0": item0}
            params.update(campaign=campaign.pk, users=users)
            series = "generate_series(1, %(n)s) AS g"
            pairs = "generate_series(1, %(n)s) AS g CROSS JOIN generate_series(0, 1) AS p"
            steps = [
                (Prompt, {"id": "%(prompt0)s + g", "content": "to_jsonb('Benchmark question ' || g || '?')"}, series),
                (
                    Response,
                    {
                        "id": "%(response0)s + 2 * (g - 1) + p + 1",
                        "prompt_id": "%(prompt0)s + g",
                        "text": "'Answer ' || p || ' to benchmark question ' || g || ', with a few more words.'",
                        "model_name": "'bench-model-' || p",
                    },
                    pairs,
                ),
                (
                    Item,
                    {
                        "id": "%(item0)s + g",
                        "campaign_id": "%(campaign)s",
                        "prompt_id": "%(prompt0)s + g",
                        "state": "'done'",
                    },
                    series,
                ),
                (
                    ItemResponse,
                    {
                        "item_id": "%(item0)s + g",
                        "response_id": "%(response0)s + 2 * (g - 1) + p + 1",
                        "position": "p",
                    },
                    pairs,
                ),
                (
                    Judgment,
                    {
                        "item_id": "%(item0)s + g",
                        "source": "'human'",
                        # distinct annotators per item: (g + j) mod 1000 differs for each j < k
                        "annotator_id": "(%(users)s::bigint[])[1 + ((g + j) %% 1000)]",
                        "choice": "(ARRAY['a','a','a','a','a','a','a','a','a','b','b','b','b','b','b','b','b','b',"
                        "'tie','both_bad'])[1 + ((g * 7 + j * 3) %% 20)]",
                        "strength": "'clear'",
                        "presented_order": "'[0, 1]'::jsonb",
                        "time_spent_ms": "1000 + g %% 5000",
                    },
                    "generate_series(1, %(n)s) AS g CROSS JOIN generate_series(0, %(k)s - 1) AS j",
                ),
            ]
            for model, values, source in steps:
                step_started = time.perf_counter()
                insert_select(cursor, model, values, source, dict(params))
                print(f"  {model.__name__:<13} {time.perf_counter() - step_started:6.1f} s")
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    print(f"filled {n} items / {n * k} judgments in {time.perf_counter() - started:.1f} s")
    return campaign.pk, n * k


def staff_token() -> str:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user, _ = get_user_model().objects.get_or_create(username="bench-staff", defaults={"is_staff": True})
    return Token.objects.get_or_create(user=user)[0].key


# --- server ------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(kind: str, url: str, port: int) -> subprocess.Popen:
    if kind == "daphne":
        command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "prefarena.asgi:application"]
    elif kind == "gunicorn":
        # One sync worker: the request runs in the worker's main thread and writes straight to the socket.
        # --timeout: a sync worker streaming a response does not heartbeat; the default 30 s would kill a long export.
        command = [sys.executable, "-m", "gunicorn", "prefarena.wsgi:application", "--workers", "1"]
        command += ["--bind", f"127.0.0.1:{port}", "--timeout", "3600"]
    else:
        command = [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"]
    process = subprocess.Popen(
        command, cwd=ROOT, env=server_env(url), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"server exited: {process.stderr.read() if process.stderr else ''}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.2)
    process.kill()
    sys.exit("server did not start within 60 s")


def peak_rss_kernel(pid: int) -> int | None:
    """VmHWM: the most resident memory the process ever had, from the kernel."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process(pid)
        self.peak = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def stop(self) -> int:
        self.stopped.set()
        self.join()
        return self.peak


def serving_pid(server: subprocess.Popen, kind: str) -> int:
    """The process that serves requests: gunicorn's (only) worker, else the server process itself."""
    if kind != "gunicorn":
        return server.pid
    import psutil

    children = psutil.Process(server.pid).children()
    if len(children) != 1:
        sys.exit(f"expected one gunicorn worker, found {len(children)}")
    return children[0].pid


def stream_once(url: str, token: str, pid: int) -> dict[str, float]:
    import tempfile

    import httpx

    parquet = urlsplit(url).path.endswith(".parquet")
    rss_before = RssSampler(pid).process.memory_info().rss
    sampler = RssSampler(pid)
    sampler.start()
    rows = 0
    first_byte = None
    started = time.perf_counter()
    tail = b""
    with (
        tempfile.TemporaryFile() as kept,
        httpx.stream("GET", url, headers={"Authorization": f"Token {token}"}, timeout=3600.0) as response,
    ):
        if response.status_code != 200:
            sys.exit(f"export answered {response.status_code}: {response.read()[:500]!r}")
        for chunk in response.iter_raw(1 << 16):
            if first_byte is None:
                first_byte = time.perf_counter() - started
            if parquet:
                kept.write(chunk)
            else:
                rows += chunk.count(b"\n")
                tail = (tail + chunk)[-2000:]
        seconds = time.perf_counter() - started
        peak = sampler.stop()
        if parquet:
            import pyarrow.parquet as pq

            kept.seek(0)
            table = pq.ParquetFile(kept)
            rows = table.metadata.num_rows
            group = table.read_row_group(table.num_row_groups - 1)
            last = group.slice(group.num_rows - 1).to_pylist()[0]
    if not parquet:
        import json

        last = json.loads(tail.rstrip(b"\n").rsplit(b"\n", 1)[-1])
    assert {"prompt", "chosen", "rejected", "margin", "p_chosen"} <= set(last), last
    return {
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "ttfb_s": first_byte or 0.0,
        "rss_before_mb": rss_before / 2**20,
        "rss_peak_mb": peak / 2**20,
    }


def serve_and_stream(
    args: argparse.Namespace, url: str, token: str, campaign_id: int, judgments: int, runs: int
) -> tuple[list[dict[str, float]], int | None]:
    """Start a server, warm it up, stream the export `runs` times; the results and the server's VmHWM."""
    port = free_port()
    server = start_server(args.server, url, port)
    try:
        export_url = f"http://127.0.0.1:{port}/api/v1/export/{args.format}.{args.ext}?campaign={campaign_id}"
        import httpx

        # Warm-up: the first request loads the URL conf and every API module; not part of the export's figures.
        warm = httpx.get(f"http://127.0.0.1:{port}/api/v1/", headers={"Authorization": f"Token {token}"}, timeout=60)
        assert warm.status_code == 200, warm.text[:300]
        pid = serving_pid(server, args.server)
        print(f"streaming {export_url} ({judgments} judgments) from {args.server}, pid {pid}")
        results = []
        for run in range(1, runs + 1):
            result = stream_once(export_url, token, pid)
            results.append(result)
            print(
                f"run {run}: {result['rows']} rows in {result['seconds']:.2f} s = {result['rows_per_s']:,.0f} rows/s;"
                f" first byte after {result['ttfb_s']:.2f} s; server RSS {result['rss_before_mb']:.0f} MB before,"
                f" peak {result['rss_peak_mb']:.0f} MB"
            )
        return results, peak_rss_kernel(pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def memory_check(args: argparse.Namespace, url: str, token: str) -> None:
    """Peak server RSS for --items and 4 x --items, each against a fresh server: flat memory means equal peaks."""
    from django.db import connection

    peaks = {}
    for items in (args.items, 4 * args.items):
        campaign_id, judgments = fill(args, items)
        connection.close()
        (result,), hwm = serve_and_stream(args, url, token, campaign_id, judgments, runs=1)
        growth = result["rss_peak_mb"] - result["rss_before_mb"]
        peaks[items] = (result, growth, hwm)
        print(
            f"{items} items: {result['rows']} rows, server RSS {result['rss_before_mb']:.0f} -> peak"
            f" {result['rss_peak_mb']:.0f} MB sampled (+{growth:.0f} MB for the export)"
            + (f", VmHWM {hwm / 2**20:.0f} MB" if hwm else "")
        )
    (small, small_growth, _), (large, large_growth, _) = peaks.values()
    print(
        f"memory: {large['rows'] / small['rows']:.1f}x the rows -> peak {small['rss_peak_mb']:.0f} ->"
        f" {large['rss_peak_mb']:.0f} MB ({large['rss_peak_mb'] - small['rss_peak_mb']:+.0f} MB); growth during the"
        f" export +{small_growth:.0f} -> +{large_growth:.0f} MB"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    url = bench_database_url(args.database_url, args.db_name)
    ensure_database(args.database_url, args.db_name)
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=server_env(url), capture_output=True
    )
    if migrate.returncode:
        sys.exit(migrate.stderr.decode()[-3000:])
    setup_django(url)
    token = staff_token()
    if args.memory_check:
        memory_check(args, url, token)
        return
    campaign_id, judgments = fill(args)
    from django.db import connection

    connection.close()
    results, hwm = serve_and_stream(args, url, token, campaign_id, judgments, args.runs)
    print(
        f"median {statistics.median(r['rows_per_s'] for r in results):,.0f} rows/s over {args.runs} run(s);"
        f" server peak RSS {max(r['rss_peak_mb'] for r in results):.0f} MB sampled"
        + (f", {hwm / 2**20:.0f} MB kernel VmHWM" if hwm else "")
    )


if __name__ == "__main__":
    main()
