"""Schemathesis over the whole schema against a live production server: no 5xx, no undocumented status,
no response outside its schema.

gunicorn runs as README "Deploying" says (DEBUG off, PostgreSQL = the test database, a Redis of the test's
own, so queued tasks and rate-limit counters vanish with it). `schemathesis run` (the CLI, as an operator
would run it) reads /api/schema/ from that server and sends generated requests, valid and invalid, once
with a staff user's token and once with a non-staff user's (an annotator of one campaign, the manager of
another). Sequences restart at 1, so the small ids Hypothesis favours name real rows and requests get past
404. tests/test_openapi.py runs the in-process counterpart on every test run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rest_framework.authtoken.models import Token

from annotations import services
from annotations.models import Item, MemberRole
from tests.deploy.processes import Process, RedisServer, free_port, production_env, readme_command, wait_for_port

pytestmark = [pytest.mark.django_db(transaction=True, reset_sequences=True), pytest.mark.slow]

CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"
MAX_EXAMPLES = 10  # per operation: two runs over ~70 operations take about a minute each on 2 cores


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    redis = RedisServer(tmp_path / "redis.log")
    port = free_port()
    gunicorn = Process(readme_command("web, HTTP", port=port), tmp_path / "gunicorn.log", production_env(redis.url))
    try:
        wait_for_port(port, process=gunicorn)
        yield f"http://127.0.0.1:{port}"
    finally:
        gunicorn.stop()
        redis.stop()
        print(gunicorn.output()[-5000:])  # shown by pytest when the test fails


@pytest.fixture
def tokens(staff: Any, make_user: Any, make_campaign: Any) -> SimpleNamespace:
    """A campaign of each kind with items, a judgment and a live lease; the annotator manages one more."""
    annotator = make_user("annotator")
    answers = {
        "pairwise": {"choice": "tie"},
        "ranking": {"ranking": [[0], [1]]},
        "rating": {"ratings": {"helpfulness": [4, 2], "honesty": [5, 5]}},
    }
    for kind, answer in answers.items():
        campaign = make_campaign(kind=kind, items=3, annotators=[annotator], overlap=2)
        slot = services.item_lease_next(campaign=campaign, annotator=annotator)
        services.judgment_submit(item=Item(pk=slot.item_id), annotator=annotator, data=answer)
        services.item_lease_next(campaign=campaign, annotator=annotator)
    managed = make_campaign(items=2)
    services.membership_set(campaign=managed, user=annotator, role=MemberRole.MANAGER)
    return SimpleNamespace(
        staff=Token.objects.create(user=staff).key, annotator=Token.objects.create(user=annotator).key
    )


def schemathesis_run(base_url: str, token: str, report: Path) -> subprocess.CompletedProcess[str]:
    argv = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{base_url}/api/schema/",
        "--checks",
        CHECKS,
        "--header",
        f"Authorization: Token {token}",
        # Examples and random generation (valid and invalid inputs); the coverage phase enumerates every
        # boundary value of every field (thousands of requests), stateful testing chains calls.
        "--phases",
        "examples,fuzzing",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "19",
        # One worker: in threads, CPython 3.11's ast.parse (Hypothesis describing a lambda) can fail with
        # "AST constructor recursion depth mismatch", a runtime error of the tool, not of the server.
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--request-timeout",
        "60",
        "--no-color",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=240, env=dict(os.environ), check=False)


@pytest.mark.parametrize("who", ["staff", "annotator"])
def test_schemathesis_finds_nothing_against_a_live_server(
    server: str, tokens: SimpleNamespace, tmp_path: Path, who: str
) -> None:
    run = schemathesis_run(server, getattr(tokens, who), tmp_path / "junit.xml")
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-3000:]
    # It did the work: every operation of the schema was tested, and every generated case passed.
    selected, total = map(int, re.search(r"Selected: (\d+)/(\d+)", run.stdout).groups())
    tested = int(re.search(r"Tested: (\d+)", run.stdout).group(1))
    generated, passed = map(int, re.search(r"(\d+) generated, (\d+) passed", run.stdout).groups())
    assert selected == tested == total > 60, run.stdout[-3000:]
    assert generated == passed > 300, run.stdout[-3000:]
