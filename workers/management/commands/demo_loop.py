"""python manage.py demo_loop — one retraining round of the closed loop on the tiny demo models (`make demo` runs it).

It writes a campaign of preferences (the demo's hand-ordered answers, better over worse, filed as the verdicts
of a rule that stands in for an LLM judge), registers a tiny local judge, creates a retraining policy over that
campaign and fires it through the policy code beat uses (`retrain_policy_fire`): one snapshot (default queue)
and one DPO run of a few steps (gpu queue) are queued, and the demo's worker builds, trains, meets the
champion at the promotion gate and records the decision. Run twice, it changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from annotations import services as annotation_services
from annotations.demo_data import PROMPTS
from annotations.models import Campaign, JudgmentSource, Prompt, Response
from annotations.services import ExternalJudgment
from models_hub.models import Model
from models_hub.selectors import model_champion
from models_hub.services import model_register
from prefarena.errors import ApplicationError
from workers.models import RetrainPolicy, TrainingRun
from workers.training.policies import retrain_policy_fire
from workers.training.services import retrain_policy_create

LOOP_CAMPAIGN = "Demo · loop preferences"
LOOP_POLICY = "Demo · retrain tiny-lm-small"
BASE_MODEL = "tiny-lm-small"
JUDGE_MODEL = "tiny-judge"
RULE_JUDGE = "demo-rule-judge"
# Held-out questions for the gate, never trained on (the training prompts are the demo campaign's).
EVAL_PROMPTS = [
    "What is the capital of France?",
    "Name a fruit that is yellow.",
    "How many legs does a spider have?",
    "What colour is the sky on a clear day?",
    "Give me a synonym for 'happy'.",
    "What is 12 + 30?",
    "Which planet is closest to the sun?",
    "What do bees make?",
    "Say hello in Spanish.",
    "What is the freezing point of water in Celsius?",
    "Name a musical instrument with strings.",
    "What is the opposite of 'cold'?",
]
HYPERPARAMETERS = {
    "max_steps": 8,
    "batch_size": 8,
    "learning_rate": 1e-3,
    "warmup_ratio": 0.0,
    "max_length": 128,
    "eval_fraction": 0.25,
}
PROMOTION_RULE = {
    "judge": JUDGE_MODEL,
    "gate": {"alpha": 0.05, "prompt_budget": 32, "batch_size": 8, "min_decisive": 5},
    "eval_prompts": EVAL_PROMPTS,
    "guards": {"held_out_accuracy": {"min": 0.5}},
}


def preference_entries() -> list[ExternalJudgment]:
    """Every demo prompt's answers in pairs, the author's better one chosen (a random side, seeded by the row)."""
    entries = []
    for index, (prompt_content, answers) in enumerate(PROMPTS):
        if not isinstance(prompt_content, str):
            continue  # the conversational demo prompt: the pairs here are plain strings
        prompt = Prompt.objects.create(content=prompt_content)
        responses = [Response.objects.create(prompt=prompt, text=text, model_name="demo-author") for text in answers]
        for better, worse in ((0, 1), (0, 2), (1, 2)):
            swap = (index + better + worse) % 2 == 1
            pair = [responses[worse], responses[better]] if swap else [responses[better], responses[worse]]
            entries.append(
                ExternalJudgment(
                    prompt_id=prompt.pk,
                    response_ids=[r.pk for r in pair],
                    choice="b" if swap else "a",
                    judge_name=RULE_JUDGE,
                    confidence=1.0,
                    meta={"demo": "the author's order: better answers first"},
                )
            )
    return entries


class Command(BaseCommand):
    help = "Queue one small retraining round on the tiny demo models (snapshot, DPO run, gate); idempotent."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--models-dir",
            default=None,
            help="Folder of the tiny models (default: <PREFARENA_VAR_DIR>/models, where `make demo` builds them)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        existing = RetrainPolicy.objects.filter(name=LOOP_POLICY, deleted_at__isnull=True).first()
        if existing is not None:
            run = TrainingRun.objects.filter(policy=existing).order_by("-created_at").first()
            self.stdout.write(f"Loop demo: policy {existing.name!r} exists" + (f" (run #{run.pk})" if run else ""))
            return
        base = model_champion(BASE_MODEL)
        if base is None:
            raise CommandError(f"no model named {BASE_MODEL}: build the tiny models first (manage.py demo does)")
        admin = get_user_model().objects.get(username="admin")
        models_dir = Path(options["models_dir"] or settings.VAR_DIR / "models")
        try:
            if not Model.objects.filter(name=JUDGE_MODEL).exists():
                model_register(
                    name=JUDGE_MODEL,
                    role="judge",
                    backend="transformers",
                    path=str(models_dir / "tiny-lm-large"),
                    description="The larger tiny demo model as the gate's judge (a stand-in, not a real judge)",
                    created_by=admin,
                )
            campaign = Campaign.objects.filter(name=LOOP_CAMPAIGN).first()
            if campaign is None:
                campaign = self._campaign_create(admin)
            policy = retrain_policy_create(
                name=LOOP_POLICY,
                base_model=base,
                method="dpo",
                trigger="every_n",
                every_n=20,
                snapshot_filters={"campaigns": [campaign.pk]},
                hyperparameters=HYPERPARAMETERS,
                promotion_rule=PROMOTION_RULE,
                created_by=admin,
            )
        except ApplicationError as exc:
            raise CommandError(f"loop demo: {exc.message}") from exc
        # The policy code beat runs every minute, called once now: the round starts when the worker does.
        run = retrain_policy_fire(policy)
        if run is None:
            raise CommandError(f"loop demo: policy {policy.name!r} did not fire (see the log above)")
        self.stdout.write(
            f"Loop demo: policy {policy.name!r} fired: snapshot #{run.snapshot_id}, training run #{run.pk} queued"
        )

    @staticmethod
    @transaction.atomic
    def _campaign_create(admin: Any) -> Campaign:
        """The campaign and its preferences, together (a failure leaves neither)."""
        campaign = annotation_services.campaign_create(
            name=LOOP_CAMPAIGN,
            kind="pairwise",
            created_by=admin,
            guidelines="Preferences the retraining demo trains on: a rule prefers the better answer.",
            description="The demo's hand-ordered answers in pairs, judged by a rule standing in for an LLM.",
        )
        annotation_services.judgments_record_external(
            campaign=campaign, source=JudgmentSource.LLM, entries=preference_entries()
        )
        return campaign
