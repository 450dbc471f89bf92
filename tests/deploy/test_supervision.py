"""deploy/supervisord.conf: its programs are the README's "Deploying" commands, and supervisord brings a
killed process back (run here on free ports, with the test's database and Redis)."""

from __future__ import annotations

import configparser
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from tests.celery_worker import wait_for
from tests.deploy.processes import (
    BIN,
    ROOT,
    Process,
    free_port,
    production_env,
    readme_deploy_commands,
    wait_for_port,
)

CONFIG = ROOT / "deploy" / "supervisord.conf"
PROGRAMS = {
    "web-http": "web, HTTP",
    "web-websockets": "web, websockets",
    "worker-default": "worker, `default` queue",
    "worker-gpu": "worker, `gpu` queue",
    "beat": "beat",
}


def programs(text: str) -> dict[str, str]:
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    return {s.removeprefix("program:"): parser[s]["command"] for s in parser.sections() if s.startswith("program:")}


def test_every_program_runs_the_readme_command() -> None:
    readme = readme_deploy_commands()
    assert set(programs(CONFIG.read_text())) == set(PROGRAMS)
    for program, command in programs(CONFIG.read_text()).items():
        assert command == readme[PROGRAMS[program]].replace(" N", " 4"), program


@pytest.fixture
def supervisord(tmp_path: Path) -> Iterator[dict]:
    """supervisord on the shipped config: free ports, 1 process per server, var/ in tmp_path, this repository."""
    http_port, ws_port = free_port(), free_port()
    text = (
        CONFIG.read_text()
        .replace("%(here)s/../.venv/bin", str(BIN))  # this interpreter's environment, wherever it lives
        .replace("%(here)s/../var", str(tmp_path))
        .replace("%(here)s/..", str(ROOT))
        .replace("var/celerybeat-schedule", str(tmp_path / "celerybeat-schedule"))
        .replace("0.0.0.0:8000", f"127.0.0.1:{http_port}")
        .replace("--host 0.0.0.0 --port 8001", f"--host 127.0.0.1 --port {ws_port}")
        .replace("--workers 4", "--workers 1")
        .replace("-Q default", "-Q default --concurrency 1")
    )
    text = text.replace("\n[program:worker-gpu]\n", "\n[program:worker-gpu]\nautostart=false\n")  # no GPU here
    config = tmp_path / "supervisord.conf"
    config.write_text(text)
    (tmp_path / "log").mkdir()
    env = production_env(settings.REDIS_URL, PATH=f"{BIN}:{os.environ['PATH']}")
    daemon = Process([str(BIN / "supervisord"), "-c", str(config)], tmp_path / "supervisord.out", env)
    try:
        wait_for_port(http_port, timeout=90, process=daemon)
        wait_for_port(ws_port, timeout=90, process=daemon)
        yield {"config": config, "http": http_port, "log": tmp_path / "log", "env": env}
    finally:
        daemon.stop(grace=90)  # SIGTERM: supervisord stops its programs (each a process group) before it exits
        for log in (tmp_path / "log" / "worker-default.log", tmp_path / "supervisord.out"):
            if log.exists():
                print(log.read_text()[-3000:])


def program_pid(supervisor: dict, program: str) -> int:
    """The program's pid once supervisord counts it RUNNING (alive for startsecs), else 0."""
    out = subprocess.run(
        [str(BIN / "supervisorctl"), "-c", str(supervisor["config"]), "status", program],
        capture_output=True,
        text=True,
        env=supervisor["env"],
        timeout=30,
    ).stdout.split()
    return int(out[3].rstrip(",")) if len(out) > 3 and out[1] == "RUNNING" and out[2] == "pid" else 0


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_supervisord_restarts_a_killed_worker(supervisord: dict) -> None:
    # given the stack under supervisord: the worker running, the HTTP server answering
    assert wait_for(lambda: program_pid(supervisord, "worker-default") != 0, timeout=90)
    assert httpx.get(f"http://127.0.0.1:{supervisord['http']}/api/v1/arena/leaderboard/", timeout=60).status_code == 200
    first = program_pid(supervisord, "worker-default")
    # when the worker is killed
    os.kill(first, signal.SIGKILL)
    # then supervisord starts it again, and it stays up
    assert wait_for(lambda: program_pid(supervisord, "worker-default") not in (0, first), timeout=60)
    assert program_pid(supervisord, "beat") and program_pid(supervisord, "web-websockets")
    assert program_pid(supervisord, "web-http")
