"""The dedicated PostgreSQL database every database benchmark runs in (shared by the scripts here)."""

from __future__ import annotations

import sys
from urllib.parse import urlsplit, urlunsplit


def bench_database_url(url: str | None, db_name: str) -> str:
    """The server of `url` with the benchmark's own database; refuses SQLite and shared databases."""
    if not url:
        sys.exit("No PostgreSQL server given: pass --database-url postgres://... or set DATABASE_URL.")
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql", "pgsql"):
        sys.exit(f"The benchmark runs on PostgreSQL only, not on {parts.scheme or url!r}.")
    if db_name == "test" or db_name.startswith("test_") or db_name in ("postgres", "template0", "template1"):
        sys.exit(f"Refusing to use database {db_name!r}: pick a dedicated one with --db-name.")
    return urlunsplit((parts.scheme, parts.netloc, "/" + db_name, parts.query, parts.fragment))


def ensure_database(url: str, db_name: str) -> None:
    """Create `db_name` on the server of `url` if it does not exist yet."""
    import psycopg

    parts = urlsplit(url)
    admin_url = urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, parts.fragment))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db_name]).fetchone():
            print(f"creating database {db_name!r}")
            conn.execute(f'CREATE DATABASE "{db_name}"')
