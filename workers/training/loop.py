"""Reads of the closed loop for the pages: a policy's rounds and the stages of its pipeline (selectors only).

A round is one run of a policy (ARCHITECTURE.md, "Closed loop"). The stages of a policy, in the loop's order:
preferences collected since its last firing → the newest round's snapshot → its run → the challenger it
registered → the gate's decision → the champion of the name (and whether it is in the arena). Each stage is a
plain dict (state, a headline, details, a link), the same for the page and its `loop.json`, so the page's
script redraws what the server rendered. Access: the policies and runs `user` may see
(`workers/selectors.py`; a run is visible only while its snapshot is).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.urls import reverse

from models_hub.selectors import model_champion
from prefarena.jobs.model import JobStatus
from workers import selectors
from workers.models import PromotionDecision, RetrainPolicy, RetrainPolicyTrigger, TrainingRun
from workers.training.policies import matching_preferences

ROUNDS_SHOWN = 10
# A stage's state, drawn as its colour: done, active (running now), waiting (not reached yet), failed, stopped
# (reached, and the loop ends there this round: a challenger that was not promoted).
DONE, ACTIVE, WAITING, FAILED, STOPPED = "done", "active", "waiting", "failed", "stopped"
JOB_STATE = {
    JobStatus.QUEUED: WAITING,
    JobStatus.RUNNING: ACTIVE,
    JobStatus.SUCCEEDED: DONE,
    JobStatus.FAILED: FAILED,
    JobStatus.CANCELLED: FAILED,
}


def policy_rounds(user: User, policy: RetrainPolicy, limit: int = ROUNDS_SHOWN) -> QuerySet[TrainingRun]:
    """The policy's runs `user` may see, newest first."""
    runs = selectors.training_run_list_for_user(user).filter(policy=policy)
    return runs.order_by("-created_at", "-id")[:limit]


def round_summary(run: TrainingRun) -> dict[str, Any]:
    """A round as the pages show it: the run, its challenger, the champion it met, the gate's figures, the guards."""
    evaluation = run.evaluation or {}
    gate = evaluation.get("gate") or {}
    return {
        "run": run.pk,
        "status": run.status,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "snapshot": run.snapshot_id,
        "snapshot_rows": dict(run.snapshot.row_counts or {}),
        "trained_from": evaluation.get("trained_from") or run.base_model.label,
        "challenger": run.output_model.label if run.output_model is not None else None,
        "champion": evaluation.get("champion"),
        "decision": run.decision,
        "decision_label": run.get_decision_display() if run.decision else "",
        "promoted": run.decision == PromotionDecision.PROMOTED,
        "reason": str(evaluation.get("reason") or run.error or ""),
        "held_out_accuracy": evaluation.get("held_out_accuracy"),
        "gate": {
            key: gate.get(key)
            for key in ("decision", "wins", "losses", "ties", "prompts_judged", "e_value", "threshold", "judge_errors")
        }
        if gate
        else None,
        "guards": [
            {key: guard.get(key) for key in ("name", "figure", "comparison", "threshold", "passed")}
            for guard in evaluation.get("guards") or []
        ],
    }


def _stage(key: str, title: str, state: str, headline: str, detail: str = "", url: str = "") -> dict[str, Any]:
    return {"key": key, "title": title, "state": state, "headline": headline, "detail": detail, "url": url}


def _preferences_stage(policy: RetrainPolicy) -> dict[str, Any]:
    matching = matching_preferences(policy)
    new = max(matching - policy.preferences_seen, 0)
    campaigns = [c for c in (policy.snapshot_filters or {}).get("campaigns") or [] if isinstance(c, int)]
    # One campaign: its page (progress, judgments); several or all: the campaign list.
    url = reverse("campaign-page", args=[campaigns[0]]) if len(campaigns) == 1 else reverse("home")
    if policy.trigger == RetrainPolicyTrigger.EVERY_N:
        needed = policy.every_n or 1
        detail = f"fires at {needed} new; {matching} matching in all"
        state = DONE if new >= needed else ACTIVE
    else:
        interval = timedelta(minutes=policy.interval_minutes or 1)
        due = policy.last_fired_at + interval if policy.last_fired_at else None
        detail = f"every {policy.interval_minutes} min; next {'now' if due is None else due.strftime('%Y-%m-%d %H:%M')}"
        state = ACTIVE
    if not policy.enabled:
        state, detail = WAITING, f"paused; {detail}"
    return _stage("preferences", "Preferences", state, f"{new} new since the last round", detail, url)


def loop_stages(user: User, policy: RetrainPolicy) -> dict[str, Any]:
    """The pipeline of `policy` for `user`: its stages, the newest round's figures, and whether anything runs."""
    latest = policy_rounds(user, policy, limit=1).first()
    stages = [_preferences_stage(policy)]
    champion = model_champion(policy.base_model.name)
    champion_stage = _stage(
        "champion",
        "Champion / arena",
        DONE if champion is not None else WAITING,
        champion.label if champion is not None else "none yet",
        ("in the arena" if champion.in_arena else "not in the arena") if champion is not None else "",
        reverse("model-list-page") + f"#model-{champion.pk}" if champion is not None else "",
    )
    if latest is None:
        for key, title in (("snapshot", "Snapshot"), ("run", "Training run"), ("challenger", "Challenger")):
            stages.append(_stage(key, title, WAITING, "no round yet"))
        stages.append(_stage("gate", "Gate", WAITING, "no round yet"))
        stages.append(champion_stage)
        return {"policy": policy.pk, "name": policy.name, "enabled": policy.enabled, "stages": stages, "live": False}
    run = latest
    snapshot = run.snapshot
    rows = ", ".join(f"{fmt} {n}" for fmt, n in (snapshot.row_counts or {}).items())
    stages.append(
        _stage(
            "snapshot",
            "Snapshot",
            JOB_STATE[JobStatus(snapshot.status)],
            f"#{snapshot.pk} {snapshot.get_status_display().lower()}",
            rows or f"{snapshot.progress_done} / {snapshot.progress_total} items read",
            # A run is visible only with its snapshot (workers/selectors.py), so its page is too.
            reverse("dataset-page", args=[snapshot.pk]),
        )
    )
    run_url = reverse("training-run-page", args=[run.pk])
    stages.append(
        _stage(
            "run",
            "Training run",
            JOB_STATE[JobStatus(run.status)],
            f"#{run.pk} {run.get_status_display().lower()}",
            f"{run.method}, step {run.progress_done} / {run.progress_total}",
            run_url,
        )
    )
    summary = round_summary(run)
    if run.output_model is not None:
        challenger = _stage(
            "challenger",
            "Challenger",
            DONE,
            run.output_model.label,
            f"from {summary['trained_from']}",
            reverse("model-list-page") + f"#model-{run.output_model.pk}",
        )
    else:
        waiting = run.status in (JobStatus.QUEUED, JobStatus.RUNNING)
        challenger = _stage(
            "challenger", "Challenger", WAITING if waiting else FAILED, "not registered yet" if waiting else "none"
        )
    stages.append(challenger)
    gate = summary["gate"]
    policy_url = reverse("policy-page", args=[policy.pk]) + f"#round-{run.pk}"
    if run.decision:
        figures = (
            f"{gate['wins']} won, {gate['losses']} lost, {gate['ties']} tied; e-value {_figure(gate['e_value'])}"
            f" (promote at {_figure(gate['threshold'])})"
            if gate
            else summary["reason"]
        )
        state = DONE if summary["promoted"] else STOPPED
        stages.append(_stage("gate", "Gate", state, summary["decision_label"], figures, policy_url))
    else:
        stages.append(_stage("gate", "Gate", WAITING if run.status != JobStatus.FAILED else FAILED, "not decided yet"))
    if not summary["promoted"] and run.decision:
        champion_stage["detail"] = f"kept ({champion_stage['detail']})"
    stages.append(champion_stage)
    live = not (snapshot.is_terminal and run.is_terminal)
    return {"policy": policy.pk, "name": policy.name, "enabled": policy.enabled, "stages": stages, "live": live}


def _figure(value: Any) -> str:
    if isinstance(value, int | float):
        return f"{value:.3g}"
    return "–"


def loop_overview(user: User) -> list[dict[str, Any]]:
    """Every policy `user` may see with its stages (the Loop page and its loop.json)."""
    policies = selectors.retrain_policy_list_for_user(user).order_by("name")
    return [loop_stages(user, policy) for policy in policies]
