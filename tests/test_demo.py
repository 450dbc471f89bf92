"""`manage.py demo` (what `make demo` runs): the embedded default serves, runs tasks, stops on Ctrl-C.

This exercises the embedded default itself (SQLite + filesystem broker) in a throwaway folder; the
rest of the suite runs on PostgreSQL and Redis.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reset_sigint() -> None:
    # A terminal delivers Ctrl-C as SIGINT to the whole process group; make sure it is not ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_demo_serves_runs_a_task_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"}}
    env.update({"DEBUG": "1", "PREFARENA_VAR_DIR": str(tmp_path / "var"), "PYTHONUNBUFFERED": "1"})
    log = tmp_path / "demo.log"
    with log.open("w") as out:
        demo = subprocess.Popen(
            [sys.executable, "manage.py", "demo", "--addrport", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=reset_sigint,
        )
    try:
        deadline = time.monotonic() + 400  # the first start builds the tiny models
        status = None
        while time.monotonic() < deadline and status != 200:
            assert demo.poll() is None, log.read_text()
            try:
                status = urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=2).status
            except OSError:
                time.sleep(0.5)
        assert status == 200, log.read_text()
        text = log.read_text()
        assert "annotator / " in text and "admin     / " in text
        # The public arena battles shipped in the repo were imported: the leaderboard has ratings.
        assert "imported 1515" in text
        board = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/arena/leaderboard/", timeout=10).read()
        assert b"imagenhub_PlayGroundV2_generation" in board
        # A task published through the filesystem broker is executed by the demo's worker.
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import django; django.setup(); from annotations.tasks import assignment_leases_reap as t; t.delay()",
            ],
            cwd=ROOT,
            env={**env, "DJANGO_SETTINGS_MODULE": "prefarena.settings"},
            check=True,
            timeout=60,
        )
        deadline = time.monotonic() + 60
        while "assignment_leases_reap" not in log.read_text().split("[tasks]")[-1].split("ready.")[-1]:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        # The demo's generation job runs on the same worker (gpu queue) and fills its campaign.
        database = sqlite3.connect(tmp_path / "var" / "prefarena.sqlite3", timeout=20)
        deadline = time.monotonic() + 300
        while (status := database.execute("select status, error from workers_generationjob").fetchone())[0] in (
            "queued",
            "running",
        ):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(1)
        assert status == ("succeeded", ""), log.read_text()
        items = database.execute(
            "select count(*) from annotations_item i join annotations_campaign c on c.id = i.campaign_id"
            " where c.name like '%generated%'"
        ).fetchone()[0]
        # The text-to-image campaign: six pairs of pictures drawn with Pillow, stored under var/media/.
        image_responses = database.execute(
            "select count(*) from annotations_response r join annotations_itemresponse ir on ir.response_id = r.id"
            " join annotations_item i on i.id = ir.item_id join annotations_campaign c on c.id = i.campaign_id"
            " where c.name = 'Demo · text-to-image' and r.image_id is not null"
        ).fetchone()[0]
        assert items > 0
        assert image_responses == 12
        assert len(list((tmp_path / "var" / "media" / "images").rglob("*.png"))) == 12
        # The image arena: two tiny random-weight pipelines in the arena; a visitor's image battle is drawn by the
        # demo's worker (64×64 PNGs stored under var/media/).
        assert "Image arena: http://" in text
        image_models = database.execute(
            "select count(*) from models_hub_model where kind = 'image' and backend = 'diffusers' and in_arena"
        ).fetchone()[0]
        assert image_models == 2
        create = (
            "import django; django.setup(); from arena import services; from arena.identity import VoterIdentity; "
            "print(services.battle_create_live(prompt='a red circle', kind='image', "
            "identity=VoterIdentity(session_hash='d' * 64, ip_hash='e' * 64, user_id=None)).pk)"
        )
        battle_id = int(
            subprocess.run(
                [sys.executable, "-c", create],
                cwd=ROOT,
                env={**env, "DJANGO_SETTINGS_MODULE": "prefarena.settings"},
                check=True,
                timeout=60,
                capture_output=True,
                text=True,
            ).stdout.split()[-1]
        )
        deadline = time.monotonic() + 120
        query = "select status, error from arena_battle where id = ?"
        while (battle := database.execute(query, (battle_id,)).fetchone())[0] == "generating":
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(1)
        assert battle == ("ready", ""), (battle, log.read_text())
        sizes = database.execute(
            "select i.width, i.height from annotations_storedimage i join annotations_response r on r.image_id = i.id"
            " join arena_battle b on r.id in (b.response_a_id, b.response_b_id) where b.id = ?",
            (battle_id,),
        ).fetchall()
        assert sizes == [(64, 64), (64, 64)]
        assert len(list((tmp_path / "var" / "media" / "images").rglob("*.png"))) == 14  # and its two pictures
        # ... voted, and the image leaderboard (a category: SQLite has no JSON `contains`) rates both models
        vote_and_rate = (
            "import django; django.setup(); from arena import leaderboard, services; from arena.models import Battle; "
            f"from arena.identity import VoterIdentity; battle = Battle.objects.get(pk={battle_id}); "
            "services.battle_vote_record(battle_id=battle.pk, token=services.battle_token(battle), winner='a', "
            "identity=VoterIdentity(session_hash='d' * 64, ip_hash='e' * 64, user_id=None)); "
            "print(len(leaderboard.leaderboard_recompute('image').rows))"
        )
        rated = subprocess.run(
            [sys.executable, "-c", vote_and_rate],
            cwd=ROOT,
            env={**env, "DJANGO_SETTINGS_MODULE": "prefarena.settings"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert rated.returncode == 0 and rated.stdout.split()[-1] == "2", rated.stderr[-3000:]
        # The demo's one retraining round ran on the same worker, through the policy code: its snapshot was
        # built, the challenger trained, registered and met the champion at the gate, and the decision stored.
        assert "retrain tiny-lm-small' fired" in text and f"{port}/loop/" in text
        deadline = time.monotonic() + 300
        query = "select r.status, r.decision, r.error, s.status from workers_trainingrun r"
        query += " join annotations_datasetsnapshot s on s.id = r.snapshot_id join workers_retrainpolicy p"
        query += " on p.id = r.policy_id where p.name = 'Demo · retrain tiny-lm-small'"
        while (round_ := database.execute(query).fetchone())[0] in ("queued", "running"):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(1)
        challenger = database.execute(
            "select count(*) from models_hub_model where name = 'tiny-lm-small' and training_run_id is not null"
        ).fetchone()[0]
        database.close()
        assert round_[0] == "succeeded" and round_[3] == "succeeded", (round_, log.read_text())
        assert round_[1] in ("promoted", "rejected", "inconclusive", "guard_failed"), round_
        assert challenger == 1
    finally:
        os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        try:
            demo.wait(timeout=45)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            pytest.fail("demo did not stop within 45 s of Ctrl-C:\n" + log.read_text())
    deadline = time.monotonic() + 10  # a pool child may outlive its parent by a moment
    while leftovers := subprocess.run(["pgrep", "-s", str(demo.pid)], capture_output=True, text=True).stdout.split():
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert leftovers == [], f"processes left running after Ctrl-C: {leftovers}"
    assert "Stopped." in log.read_text()
