"""Arena vote throughput and latency over HTTP, against the real ASGI server on loopback.

    .venv/bin/python benchmarks/votes.py [--clients 16] [--votes-per-client 150] [--seconds 60] [--rounds 3]

PostgreSQL only, in its own database (--db-name, default `prefarena_bench_votes`) on the server of
--database-url / DATABASE_URL; Redis from REDIS_URL (rate-limit counters, the leaderboard broadcast each
vote sends). Never the database named in the URL, never a test database.

1. migrate the benchmark database; on first use fill a campaign with --prompts prompts, each answered by
   every one of --models arena models (placeholder rows, never loaded): the pool of pre-generated battles.
2. start the HTTP server in a child process on 127.0.0.1, DEBUG off, with the arena's rate limits raised
   (the benchmark is one IP sending thousands of votes): by default gunicorn sync workers on
   `prefarena.wsgi:application`, the production HTTP setup (README, "Deploying"); --server uvicorn or
   daphne serve the ASGI app instead (under ASGI every request's sync code runs in a new thread).
3. --clients asyncio clients (benchmarks/rawhttp.py: lean HTTP/1.1), each an anonymous browser with its
   own cookies: GET /arena/ (session + CSRF cookie), then create --votes-per-client pre-generated
   battles (not timed), wait for the others, then vote on each battle as fast as the server answers
   (timed): POST /api/v1/arena/battles/{id}/vote/ with the token and the CSRF header, exactly as the page
   does. Stops at --seconds.
4. the ceiling, in the same run, at the same concurrency: every client sends the same votes again with a
   forged token (a bad signature), which the vote path refuses (403) before any SQL query (arena/services.py:
   the token is checked first). It measures what the server does for any vote (HTTP, middleware, session,
   authentication, CSRF, parsing) without the vote's own work, so the share below is comparable between
   machines whose absolute rates differ ~2x. The two alternate in --rounds rounds (each on its own slice of
   the battles), so a load that drifts on a shared machine weighs on both alike.
5. print votes/s (successful votes over the timed phase's wall time), p50/p95/p99 latency, any non-201
   answers, the ceiling's requests/s and latency, and accepted votes/s as a share of the ceiling (target:
   >= 50% with a p99 under 100 ms); run the tally sweep the beat runs every 5 s (votes are counted
   write-behind, arena/tally.py) and check the stored counts: one Vote per 201 and PairStats totals equal
   to counted votes.

The server, the clients and PostgreSQL share the machine: on a small machine the clients' CPU is part of
the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_db import bench_database_url, ensure_database  # noqa: E402 - after the path tweak
from rawhttp import Connection  # noqa: E402

DEFAULT_DB_NAME = "prefarena_bench_votes"
BENCH_SECRET = "benchmark-only-secret-key-never-used-to-serve-real-requests-0123456789"
CAMPAIGN = "Arena votes benchmark pool"
LIMITS = {
    "ARENA_VOTES_PER_MINUTE_SESSION": "1000000",
    "ARENA_VOTES_PER_MINUTE_IP": "1000000",
    "ARENA_DAILY_VOTE_CAP": "100000000",
    "ARENA_BATTLES_PER_MINUTE_SESSION": "1000000",
    "ARENA_BATTLES_PER_MINUTE_IP": "1000000",
}
TARGET_SHARE, TARGET_P99_MS = 0.50, 100.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16, help="concurrent voters (16)")
    parser.add_argument("--votes-per-client", type=int, default=150, help="battles each voter votes on (150)")
    parser.add_argument("--seconds", type=float, default=60.0, help="stop the timed votes after this long (60)")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of accepted votes and the ceiling (3)")
    parser.add_argument("--models", type=int, default=8, help="arena models (8)")
    parser.add_argument(
        "--server", choices=["gunicorn", "uvicorn", "daphne"], default="gunicorn", help="HTTP server (gunicorn)"
    )
    parser.add_argument("--workers", type=int, default=4, help="gunicorn or uvicorn worker processes (4)")
    parser.add_argument("--threads", type=int, default=1, help="threads per gunicorn worker (1: sync workers)")
    parser.add_argument("--prompts", type=int, default=200, help="prompts in the pre-generated pool (200)")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"), help="PostgreSQL server")
    parser.add_argument("--db-name", default=DEFAULT_DB_NAME, help=f"benchmark database ({DEFAULT_DB_NAME})")
    return parser.parse_args(argv)


# --- database ---------------------------------------------------------------------------------------------
def server_environment(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url,
        "DEBUG": "0",  # production configuration: no query log in memory
        "SECRET_KEY": os.environ.get("SECRET_KEY", BENCH_SECRET),
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
        **LIMITS,
    }


def setup_django(url: str) -> None:
    os.environ.update(server_environment(url))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prefarena.settings")
    import django

    django.setup()


def fill(models: int, prompts: int) -> None:
    """Arena models and a campaign whose every prompt has an answer from every model (first use only)."""
    from annotations import services as annotation_services
    from annotations.importing import rows_from_list
    from annotations.models import Campaign
    from models_hub.models import Model

    names = [f"bench-model-{k:02d}" for k in range(models)]
    for name in names:
        Model.objects.get_or_create(
            name=name,
            version=1,
            defaults={"role": "policy", "backend": "transformers", "path": f"/nowhere/{name}", "in_arena": True},
        )
    Model.objects.exclude(name__in=names).update(in_arena=False)
    campaign = Campaign.objects.filter(name=CAMPAIGN).first()
    if campaign is not None and campaign.items.exists():
        return
    if campaign is None:
        # A ranking campaign holds any number of answers per prompt; the arena only needs the pool.
        campaign = annotation_services.campaign_create(
            name=CAMPAIGN, kind="ranking", created_by=None, max_responses=max(2, models)
        )
    rows = [
        {
            "prompt": f"Benchmark question {i}: explain topic {i} briefly.",
            "responses": [
                {"text": f"Answer {i} from model {k}.", "model": f"{name}@v1"} for k, name in enumerate(names)
            ],
        }
        for i in range(prompts)
    ]
    annotation_services.items_import(
        campaign=campaign,
        rows=rows_from_list(rows, kind="ranking", aspects=[], max_responses=campaign.max_responses),
    )
    print(f"filled: {models} models, {prompts} prompts x {models} responses")


# --- server -----------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(url: str, port: int, log: Path, server: str, workers: int, threads: int = 4) -> subprocess.Popen:
    if server == "gunicorn":  # HTTP through WSGI (README, "Deploying"); websockets go to the ASGI server
        args = [sys.executable, "-m", "gunicorn", "prefarena.wsgi:application", "--bind", f"127.0.0.1:{port}"]
        args += ["--workers", str(workers), "--threads", str(threads), "--log-level", "warning"]
    elif server == "daphne":
        args = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "prefarena.asgi:application"]
    else:  # uvicorn: N worker processes behind one socket (the production setup in README, "Deploying")
        args = [sys.executable, "-m", "uvicorn", "prefarena.asgi:application", "--host", "127.0.0.1"]
        args += ["--port", str(port), "--workers", str(workers), "--no-access-log", "--log-level", "warning"]
    with log.open("w") as out:
        process = subprocess.Popen(
            args, cwd=ROOT, env=server_environment(url), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                sys.exit(f"the server did not start:\n{log.read_text()}")
            time.sleep(0.2)


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


# --- clients ----------------------------------------------------------------------------------------------
@dataclass
class ClientResult:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    error: str = ""


@dataclass
class Phase:
    """One timed phase: every client waits at the start line, then sends its requests until the deadline."""

    name: str
    expected: int  # the status every answer should have
    forged: bool  # send each vote with a token whose signature is broken
    results: list[ClientResult]
    part: int = 0  # this phase votes on the part-th of `parts` equal slices of each client's battles
    parts: int = 1
    start: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: int = 0
    finished: int = 0
    deadline: float = float("inf")


def clients_results(clients: int) -> list[ClientResult]:
    return [ClientResult() for _ in range(clients)]


def forged(token: str) -> str:
    """The token with its signature's last characters changed: refused at the signature check."""
    tail = "AAAA" if not token.endswith("AAAA") else "BBBB"
    return token[:-4] + tail


async def voter(port: int, count: int, phases: list[Phase], number: int) -> None:
    """One anonymous browser: its own session, CSRF cookie and keep-alive connection."""
    connection = Connection("127.0.0.1", port)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            status, _, body = await connection.request("GET", "/arena/")
            if status != 200:
                raise RuntimeError(f"GET /arena/ answered {status}")
            headers = {"X-CSRFToken": connection.cookies["csrftoken"], "Referer": base + "/arena/"}
            battles = []
            for _ in range(count):  # the first battle creates the session (its cookie rides along after)
                status, _, body = await connection.request(
                    "POST", "/api/v1/arena/battles/", json.dumps({"mode": "pregenerated"}).encode(), headers
                )
                if status != 201:
                    raise RuntimeError(f"battle creation answered {status}: {body[:200]!r}")
                battles.append(json.loads(body))
        except Exception as exc:  # noqa: BLE001 - reported, then the run stops
            phases[0].results[number].error = f"{type(exc).__name__}: {exc}"
            for phase in phases:
                phase.arrived += 1
                phase.finished += 1
            return
        for phase in phases:
            result = phase.results[number]
            phase.arrived += 1
            await phase.start.wait()
            size = len(battles)
            for index, battle in enumerate(
                battles[size * phase.part // phase.parts : size * (phase.part + 1) // phase.parts]
            ):
                if time.perf_counter() > phase.deadline:
                    break
                winner = ("a", "b", "tie", "both_bad")[index % 4]
                token = forged(battle["token"]) if phase.forged else battle["token"]
                payload = json.dumps({"winner": winner, "token": token}).encode()
                started = time.perf_counter()
                status, _, body = await connection.request(
                    "POST", f"/api/v1/arena/battles/{battle['id']}/vote/", payload, headers
                )
                result.latencies_ms.append((time.perf_counter() - started) * 1000.0)
                result.statuses[status] += 1
                if status != phase.expected and len(result.samples) < 3:
                    result.samples.append(f"{status}: {body[:200].decode(errors='replace')}")
            phase.finished += 1
    finally:
        await connection.close()


def cpu_seconds(server_pid: int, db_name: str) -> dict[str, float]:
    """CPU time used so far by the server (master and workers), PostgreSQL's backends serving the
    benchmark database (not its shared WAL writer and checkpointer), Redis and this process."""
    import psutil

    def used(process: psutil.Process) -> float:
        try:
            times = process.cpu_times()
        except psutil.Error:
            return 0.0
        return times.user + times.system

    server = psutil.Process(server_pid)
    totals = {"server": used(server) + sum(used(child) for child in server.children(recursive=True))}
    processes = list(psutil.process_iter(["name", "cmdline"]))
    totals["postgres"] = sum(used(p) for p in processes if f" {db_name} " in " ".join(p.info["cmdline"] or []))
    # The Redis of REDIS_URL only: tests on the same machine start and stop redis-servers of their own.
    port = f":{urlsplit(os.environ.get('REDIS_URL', '')).port or 6379}"
    totals["redis"] = sum(
        used(p)
        for p in processes
        if (p.info["name"] or "").startswith("redis-server") and port in " ".join(p.info["cmdline"] or [])
    )
    totals["clients"] = used(psutil.Process())
    return totals


@dataclass
class Timing:
    elapsed: float
    cpu: dict[str, float]  # CPU seconds each part spent during the phase


async def drive(
    port: int, clients: int, per_client: int, seconds: float, phases: list[Phase], cpu_at: Callable[[], dict]
) -> list[Timing]:
    """Set every client up (not timed), then run the phases one after the other, each client released
    together with the others; each phase's wall time and CPU."""
    tasks = [asyncio.create_task(voter(port, per_client, phases, number)) for number in range(clients)]
    timings = []
    for phase in phases:
        while phase.arrived < clients:
            await asyncio.sleep(0.01)
        errors = {r.error for r in phases[0].results if r.error}
        if errors:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise RuntimeError(f"a client failed before voting: {errors}")
        cpu_before = cpu_at()
        started = time.perf_counter()
        phase.deadline = started + seconds
        phase.start.set()
        while phase.finished < clients:
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - started
        cpu_after = cpu_at()
        timings.append(Timing(elapsed, {name: cpu_after[name] - cpu_before[name] for name in cpu_before}))
    await asyncio.gather(*tasks)
    return timings


def percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 1000) - 1]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    url = bench_database_url(args.database_url, args.db_name)
    ensure_database(url, args.db_name)
    setup_django(url)
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    fill(args.models, args.prompts)
    from arena.models import PairStats, Vote

    votes_before = Vote.objects.count()
    counted_before = Vote.objects.filter(counted=True).count()
    connection.close()

    port = free_port()
    log = Path(tempfile.gettempdir()) / f"prefarena-bench-votes-{port}.log"
    server = start_server(url, port, log, args.server, args.workers, args.threads)
    # The two measurements alternate in rounds (accepted, ceiling, accepted, ...), each round on its own
    # slice of the battles: on a shared machine the load drifts, and both see the same drift.
    names = ("accepted votes", "ceiling: votes refused before any query (forged token)")
    phases = [
        Phase(names[forged_], 403 if forged_ else 201, bool(forged_), clients_results(args.clients), k, args.rounds)
        for k in range(args.rounds)
        for forged_ in (0, 1)
    ]
    try:
        print(f"{args.clients} clients creating {args.votes_per_client} battles each (not timed) ...")
        try:
            timings = asyncio.run(
                drive(
                    port,
                    args.clients,
                    args.votes_per_client,
                    args.seconds / args.rounds,
                    phases,
                    lambda: cpu_seconds(server.pid, args.db_name),
                )
            )
        except RuntimeError as exc:
            sys.exit(f"{exc}\nserver log: {log}")
    finally:
        stop_server(server)

    # Counting is write-behind (arena/tally.py): votes after the last batch of the run wait for the beat
    # sweep (every 5 s); the benchmark runs that sweep itself before checking the counts.
    from arena import tally

    pending = tally.votes_pending()
    swept = tally.votes_apply(wait=True)
    stored = Vote.objects.count() - votes_before
    counted = Vote.objects.filter(counted=True).count()
    pair_total = sum(s.wins_lo + s.wins_hi + s.ties + s.both_bad for s in PairStats.objects.filter(category=""))
    print()
    processes = "1 process" if args.server == "daphne" else f"{args.workers} worker processes"
    if args.server == "gunicorn":
        processes += f" x {args.threads} threads"
    print(
        f"clients {args.clients}   models {args.models}   server: {args.server}, {processes}   database {args.db_name}"
    )
    print(f"{args.rounds} rounds, each: accepted votes, then the ceiling")
    rates, p99s = [], []
    for name in names:
        runs = [(phase, timing) for phase, timing in zip(phases, timings, strict=True) if phase.name == name]
        expected = runs[0][0].expected
        results = [r for phase, _ in runs for r in phase.results]
        elapsed = sum(timing.elapsed for _, timing in runs)
        cpu = {part: sum(timing.cpu[part] for _, timing in runs) for part in runs[0][1].cpu}
        latencies = [ms for r in results for ms in r.latencies_ms]
        statuses = sum((r.statuses for r in results), Counter())
        ok = statuses.get(expected, 0)
        rates.append(ok / elapsed)
        p99s.append(percentile(latencies, 0.99))
        print(f"{name}: {ok:,} answered {expected} in {elapsed:.2f} s -> {rates[-1]:.1f}/s")
        print(
            f"  latency: p50 {percentile(latencies, 0.50):.1f} ms   p95 {percentile(latencies, 0.95):.1f} ms   "
            f"p99 {p99s[-1]:.1f} ms   max {max(latencies, default=float('nan')):.1f} ms"
        )
        print(f"  answers: {dict(sorted(statuses.items()))}")
        if ok:
            print(
                "  CPU per request: "
                + "   ".join(f"{part} {seconds * 1000 / ok:.2f} ms" for part, seconds in cpu.items())
                + f"   (all: {sum(cpu.values()) / elapsed * 100:.0f}% of one core)"
            )
        for sample in sorted({sample for r in results for sample in r.samples})[:5]:
            print(f"  e.g. {sample}")
    share = rates[0] / rates[1] if rates[1] else float("nan")
    met = share >= TARGET_SHARE and p99s[0] < TARGET_P99_MS
    print(
        f"accepted votes/s = {share:.0%} of the ceiling, vote p99 {p99s[0]:.1f} ms "
        f"(target >= {TARGET_SHARE:.0%} with p99 < {TARGET_P99_MS:.0f} ms: {'met' if met else 'NOT met'})"
    )
    accepted = sum(r.statuses.get(201, 0) for phase in phases if not phase.forged for r in phase.results)
    print(f"tally: {pending:,} votes still pending after the run, {swept:,} counted by the closing sweep")
    print(
        f"stored: {stored:,} new votes ({counted - counted_before:,} counted); "
        f"PairStats total {pair_total:,} = counted votes {counted:,}: {pair_total == counted}"
    )
    if stored != accepted:
        sys.exit(f"MISMATCH: {accepted} votes accepted but {stored} stored")


if __name__ == "__main__":
    main()
