"""Fail fast, with one readable message, when PostgreSQL or Redis is not reachable for the tests."""

from __future__ import annotations

import os
import sys
from urllib.parse import urlparse


def check_postgres(url: str) -> str | None:
    import psycopg

    parsed = urlparse(url)
    if parsed.scheme not in {"postgres", "postgresql", "pgsql"}:
        return f"DATABASE_URL must point at PostgreSQL for the tests (got scheme {parsed.scheme!r})."
    try:
        with psycopg.connect(
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or 5432,
            user=parsed.username,
            password=parsed.password,
            dbname=(parsed.path or "/postgres").lstrip("/") or "postgres",
            connect_timeout=3,
        ) as conn:
            conn.execute("select 1")
    except Exception as exc:  # any failure gets the same advice
        return (
            f"PostgreSQL is not reachable at {parsed.hostname}:{parsed.port or 5432} ({exc.__class__.__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}).\n"
            "  Start it:  pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n"
            "  or point DATABASE_URL at a server you can reach."
        )
    return None


def check_redis(url: str) -> str | None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except Exception as exc:
        return (
            f"Redis is not reachable at {url} ({exc.__class__.__name__}).\n"
            '  Start it:  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no\n'
            "  or point REDIS_URL at a server you can reach."
        )
    return None


def main() -> int:
    problems = [
        p
        for p in (
            check_postgres(os.environ.get("DATABASE_URL", "")),
            check_redis(os.environ.get("REDIS_URL", "")),
        )
        if p
    ]
    for problem in problems:
        print(f"make test: {problem}", file=sys.stderr)
    if not problems:
        print("make test: PostgreSQL and Redis are reachable.")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
