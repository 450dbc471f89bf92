"""A real Celery worker process for tests, on the Redis broker and the test database."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def test_database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class WorkerProcess:
    """`celery worker` in a child process; `log` holds its output."""

    def __init__(self, log: Path, queues: str = "default", pool: str = "solo", env: dict[str, str] | None = None):
        self.log = log
        environment = {**os.environ, "DATABASE_URL": test_database_url(), "DEBUG": "1", **(env or {})}
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "prefarena",
            "worker",
            "-Q",
            queues,
            "--pool",
            pool,
            "--without-gossip",
            "--without-mingle",
            "-n",
            f"test-{os.getpid()}-{time.monotonic_ns()}@%h",
            "-l",
            "info",
        ]
        if pool == "prefork":
            args += ["--concurrency", "1", "--prefetch-multiplier", "1"]
        with log.open("a") as out:
            self.process = subprocess.Popen(
                args, cwd=ROOT, env=environment, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 90
        while "ready." not in log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"worker did not start:\n{log.read_text()}")
            time.sleep(0.2)

    def pool_children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def kill_main(self) -> None:
        """SIGKILL the main process only (its pool child is orphaned, as when a host loses it)."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        # Pool children left behind by a killed parent: end the whole session.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
