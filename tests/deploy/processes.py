"""Real processes for deployment tests: the README's "Deploying" commands, and a Redis server of the test's own.

The commands are read from README.md itself (the table under "## Deploying"), so a test that starts them
fails as soon as the README says something that does not work.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.celery_worker import test_database_url

ROOT = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def readme_deploy_commands() -> dict[str, str]:
    """{process: command} from the table of README.md's "## Deploying" section, as written there."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Deploying", 1)[1].split("\n## ", 1)[0]
    commands = {}
    for process, command in re.findall(r"^\| ([^|]+?) \| `([^`]+)`", section, flags=re.M):
        if process != "process":
            commands[process] = command
    return commands


def readme_command(process: str, *, port: int | None = None, workers: int = 2) -> list[str]:
    """The README's command for `process`, bound to 127.0.0.1:`port`, with N worker processes = `workers`."""
    command = readme_deploy_commands()[process]
    if port is not None:
        command = command.replace("0.0.0.0:8000", f"127.0.0.1:{port}")  # gunicorn --bind
        command = command.replace("--host 0.0.0.0 --port 8001", f"--host 127.0.0.1 --port {port}")  # uvicorn
        assert f"{port}" in command, command
    command = command.replace(" N", f" {workers}")
    argv = shlex.split(command)
    argv[0] = str(BIN / argv[0])  # the venv's console script, as `make` puts .venv/bin on PATH
    return argv


def production_env(redis_url: str, **extra: str) -> dict[str, str]:
    """What README "Deploying" says to set (DEBUG off, a secret, hosts, PostgreSQL, Redis), on the test database."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST_"))}
    return {
        **base,
        "DEBUG": "0",
        "SECRET_KEY": "deploy-test-" + "x" * 50,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": test_database_url(),
        "REDIS_URL": redis_url,
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


class Process:
    """A child process in a session of its own (so its workers die with it); output in `log`."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str], cwd: Path = ROOT) -> None:
        self.argv, self.log = argv, log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, marker: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.output():
            if not self.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.argv[0]} did not print {marker!r}:\n{self.output()[-5000:]}")
            time.sleep(0.1)

    def stop(self, grace: float = 15.0) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):  # whatever it left behind
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


def wait_for_port(port: int, timeout: float = 60.0, process: Process | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise RuntimeError(f"{process.argv[0]} exited:\n{process.output()[-5000:]}")
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}" + (f":\n{process.output()[-5000:]}" if process else ""))


class RedisServer:
    """A `redis-server` of the test's own on a free port: no persistence, so a restart starts empty."""

    def __init__(self, log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log = log
        self.process: Process | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = Process([*argv, "--daemonize", "no"], self.log, dict(os.environ))
        wait_for_port(self.port, timeout=20, process=self.process)

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-conversation, as when its host dies."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.process.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: the server hangs (connections stay open, nothing answers)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
            self.process.stop()
