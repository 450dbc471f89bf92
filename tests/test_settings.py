"""Settings come from the environment and fail loudly; production example values pass check --deploy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def run_manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY", "DATABASE_URL", "REDIS_URL"}}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_passes_with_env_example_values():
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", env=env_example())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_missing_secret_key_without_debug_is_a_startup_error():
    env = env_example()
    del env["SECRET_KEY"]
    result = run_manage("check", env=env)
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_the_embedded_default_needs_no_secret_key_and_keeps_the_one_it_generated(tmp_path: Path) -> None:
    # given nothing set: no DEBUG, no SECRET_KEY, no DATABASE_URL (the embedded SQLite default)
    env = {"PREFARENA_VAR_DIR": str(tmp_path)}
    show = "from django.conf import settings; print(settings.SECRET_KEY)"
    # when a command runs twice
    first = run_manage("shell", "-c", show, env=env)
    second = run_manage("shell", "-c", show, env=env)
    # then it works, with a key generated once into var/ (owner-only) and read back the second time
    assert first.returncode == 0, first.stderr
    key = (tmp_path / "secret_key").read_text()
    assert first.stdout.splitlines()[-1] == second.stdout.splitlines()[-1] == key and len(key) >= 50
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0
    assert run_manage("check", env=env).returncode == 0


def test_bad_boolean_is_a_clear_error():
    result = run_manage("check", env={**env_example(), "DEBUG": "maybe"})
    assert result.returncode != 0
    assert "DEBUG must be a boolean" in result.stderr


def test_every_setting_read_from_env_is_listed_in_env_example():
    import re

    names = set(re.findall(r'env_(?:str|bool|int|list)\("([A-Z_]+)"', (ROOT / "prefarena/settings.py").read_text()))
    listed = set(re.findall(r"^#?\s*([A-Z_]+)=", (ROOT / ".env.example").read_text(), flags=re.M))
    assert names - listed == set()


@pytest.mark.django_db
def test_check_deploy_passes_with_env_example_values_on_the_test_services():
    """The same, connected: .env.example's values with the test's PostgreSQL and Redis (database checks too)."""
    from django.conf import settings as django_settings

    from tests.celery_worker import test_database_url

    env = {**env_example(), "DATABASE_URL": test_database_url(), "REDIS_URL": django_settings.REDIS_URL}
    result = run_manage("check", "--deploy", "--database", "default", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
    connect = "from prefarena.celery import app; app.connection_for_write().ensure_connection(max_retries=1)"
    broker = run_manage("shell", "-c", connect + "; print('broker ok')", env=env)  # prefarena.broker's transport
    assert "broker ok" in broker.stdout, broker.stdout + broker.stderr
