"""python manage.py train --method dpo --base NAME[@vN] --snapshot ID [--set key=value ...] [--wait]"""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotations.models import DatasetSnapshot
from models_hub import selectors
from prefarena.errors import ApplicationError
from workers.ml.training_config import TrainingConfig
from workers.models import TrainingMethod, TrainingRun, TrainingTrigger
from workers.training import services as training_services

KNOWN = [name for name in TrainingConfig.__dataclass_fields__ if name != "method"]


def _setting(text: str) -> tuple[str, Any]:
    """key=value; the value is read as JSON when it parses (numbers, true/false), else kept as text."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise CommandError(f"--set {text!r}: write key=value, e.g. --set learning_rate=1e-5")
    try:
        return key.strip(), json.loads(raw)
    except ValueError:
        return key.strip(), raw


class Command(BaseCommand):
    help = (
        "Queue a training run on the gpu queue: train --method on the dataset snapshot --snapshot, starting "
        "from the registered model --base (a label 'name' or 'name@vN', or an id). Hyperparameters default "
        "to workers/ml/training_config.py; change them with --set key=value (repeatable). With --wait, "
        "follow the run until it ends and exit non-zero unless it succeeded."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--method", required=True, choices=TrainingMethod.values, help="Training method")
        parser.add_argument("--base", required=True, help="Base model: 'name', 'name@vN' or an id")
        parser.add_argument("--snapshot", required=True, type=int, help="Id of a succeeded dataset snapshot")
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=f"A hyperparameter (known: {', '.join(KNOWN)})",
        )
        parser.add_argument("--max-attempts", type=int, default=2, help="Attempts before the run fails (default 2)")
        parser.add_argument("--wait", action="store_true", help="Follow the run until it ends")

    def handle(self, *args: Any, **options: Any) -> None:
        hyperparameters = dict(_setting(text) for text in options["set"])
        reference: int | str = int(options["base"]) if options["base"].isdigit() else options["base"]
        try:
            base = selectors.model_get_by_reference(reference)
            snapshot = DatasetSnapshot.objects.filter(pk=options["snapshot"]).first()
            if snapshot is None:
                raise CommandError(f"--snapshot {options['snapshot']}: no such dataset snapshot")
            run = training_services.training_run_create(
                base_model=base,
                snapshot=snapshot,
                method=options["method"],
                hyperparameters=hyperparameters,
                trigger=TrainingTrigger.COMMAND,
                max_attempts=options["max_attempts"],
            )
        except ApplicationError as exc:
            fields = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in exc.fields.items())
            raise CommandError(fields or exc.message) from exc
        self.stdout.write(f"Queued training run {run.pk}: {run.method} from {base.label} on snapshot {snapshot.pk}")
        if options["wait"]:
            self._follow(run)

    def _follow(self, run: TrainingRun) -> None:
        shown = -1
        while True:
            run.refresh_from_db()
            if run.progress_done != shown:
                shown = run.progress_done
                loss = (run.metrics or {}).get("loss")
                self.stdout.write(
                    f"step {run.progress_done}/{run.progress_total}" + (f" loss {loss:.4g}" if loss else "")
                )
            if run.is_terminal:
                break
            time.sleep(1.0)
        if run.status != "succeeded":
            raise CommandError(f"training run {run.pk} {run.status}: {run.error}")
        assert run.output_model is not None  # a succeeded run registered its model
        self.stdout.write(f"Registered {run.output_model.label}: {json.dumps(run.evaluation.get('held_out_accuracy'))}")
