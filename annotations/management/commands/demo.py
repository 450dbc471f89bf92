"""python manage.py demo — migrate, load demo data, serve the app with a real Celery worker.

Ctrl-C stops the web server and the worker it started.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotations.demo_data import GENERATED_CAMPAIGN, demo_seed, generated_campaign_create
from annotations.models import Campaign
from models_hub.models import Model

DEMO_MODELS = ("tiny-lm-small", "tiny-lm-large", "tiny-reward")
# Two random-weight image pipelines for the image arena, where the diffusers extra is installed (`make install`).
DEMO_IMAGE_MODELS = ("tiny-diffusion-a", "tiny-diffusion-b")
DEMO_BATTLES = Path(settings.BASE_DIR) / "arena" / "fixtures" / "genai_arena" / "genai_clean_battle_20240220.json"


class Command(BaseCommand):
    help = "Set up the embedded demo (SQLite, filesystem broker) and serve it with a Celery worker."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--addrport", default="127.0.0.1:8000", help="Where to serve (default 127.0.0.1:8000)")
        parser.add_argument("--seed-only", action="store_true", help="Migrate and load demo data, then exit")
        parser.add_argument("--no-models", action="store_true", help="Skip the tiny models and the generation job")

    def handle(self, *args: Any, **options: Any) -> None:
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        call_command("migrate", interactive=False, verbosity=0)
        credentials = demo_seed()
        # Public arena battles (GenAI-Arena, Apache-2.0, arena/fixtures/genai_arena/), so the leaderboard has ratings.
        call_command("arena_import_battles", str(DEMO_BATTLES), "--anony-only", "--if-empty", stdout=self.stdout)
        if not options["no_models"]:
            self._demo_models()
            # One retraining round (workers' command, called by name: annotations imports no workers module).
            call_command("demo_loop", "--models-dir", str(settings.VAR_DIR / "models"), stdout=self.stdout)
        host = options["addrport"]
        self.stdout.write(
            self.style.SUCCESS("Demo data loaded.")
            + f"\n  admin     / {credentials.admin_password}   (staff: admin site at http://{host}/admin/)"
            + f"\n  annotator / {credentials.annotator_password}   (annotates the demo campaigns)"
            + f"\n  Open http://{host}/ — API docs at http://{host}/api/docs/"
            + f"\n  Leaderboard (imported GenAI-Arena battles): http://{host}/arena/leaderboard/"
        )
        if not options["no_models"] and _image_models():
            self.stdout.write(
                f"  Image arena: http://{host}/arena/images/ (two tiny random-weight pipelines: they draw noise)"
            )
        if not options["no_models"]:
            self.stdout.write(
                "  The retraining round runs on the demo's worker (well under a minute); as admin, watch it at"
                f"\n    http://{host}/loop/ (the pipeline), http://{host}/policies/ (rounds and the gate's figures),"
                f"\n    http://{host}/datasets/ (its snapshot) and http://{host}/jobs/ (jobs)"
            )
        self.stdout.write("")
        if options["seed_only"]:
            return
        self._serve(host)

    def _demo_models(self) -> None:
        """Tiny local models (built once, ~a minute on 2 cores) and a first generation job whose items
        land in a campaign of their own, so the worker has real work to show."""
        models_dir = settings.VAR_DIR / "models"
        names = DEMO_MODELS + (DEMO_IMAGE_MODELS if _image_models() else ())
        built = all((models_dir / name / "config.json").is_file() for name in DEMO_MODELS) and all(
            (models_dir / name / "pipeline" / "model_index.json").is_file() for name in names[len(DEMO_MODELS) :]
        )
        if not built or Model.objects.filter(name__in=names).count() < len(names):
            images = ["--image-models"] if _image_models() else []
            call_command(
                "build_tiny_models", "--out", str(models_dir), "--steps", "150", "--register", *images,
                stdout=self.stdout,
            )  # fmt: skip
        if not Campaign.objects.filter(name=GENERATED_CAMPAIGN).exists():
            generated_campaign_create()
            call_command(
                "generate",
                "--model",
                "tiny-lm-small",
                "--model",
                "tiny-lm-large",
                "--campaign",
                "Demo · pairwise helpfulness",
                "--target-campaign",
                GENERATED_CAMPAIGN,
                "--max-new-tokens",
                "48",
                "--temperature",
                "0.8",
                stdout=self.stdout,
            )

    def _serve(self, host: str) -> None:
        env = dict(os.environ)
        beat_schedule = settings.VAR_DIR / "celerybeat-schedule"
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "prefarena",
                "worker",
                "-Q",
                "default,gpu",
                "--concurrency",
                "1",
                "--prefetch-multiplier",
                "1",
                "--beat",
                "--schedule",
                str(beat_schedule),
                "--loglevel",
                "info",
            ],
            env=env,
        )
        server = subprocess.Popen([sys.executable, "manage.py", "runserver", host, "--noreload"], env=env)
        children = [server, worker]
        stopping = False

        def stop(*_: Any) -> None:
            nonlocal stopping
            stopping = True
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
            if not stopping:
                raise CommandError("The web server or the worker stopped unexpectedly; see the messages above")
        except KeyboardInterrupt:
            self.stdout.write("\nStopping the web server and the worker...")
        finally:
            # SIGTERM: a warm shutdown for Celery, a clean exit for the server (SIGINT may be ignored
            # when the demo was started in the background).
            for child in children:
                if child.poll() is None:
                    child.terminate()
            deadline = time.monotonic() + 20
            for child in children:
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        self.stdout.write("Stopped.")


def _image_models() -> bool:
    """The demo's image arena needs the diffusers extra (installed by `make install`)."""
    return importlib.util.find_spec("diffusers") is not None
