"""Datasets, Policies and Loop pages in a real browser: a snapshot created from the form and downloaded, then a
policy's round on it drawn as the loop's stages, which follow the round as it ends (no reload)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from annotations import services as annotation_services
from annotations import snapshots
from annotations.models import DatasetSnapshot, JudgmentSource, MemberRole, Prompt, Response
from models_hub.models import Model
from prefarena.jobs.model import JobStatus
from tests.e2e.test_csp import Violations
from workers.models import TrainingRun
from workers.training import services as training_services

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def screenshot(page: Page, name: str) -> None:
    """Save a screenshot when PREFARENA_E2E_SCREENSHOTS names a folder (for looking at the page)."""
    folder = os.environ.get("PREFARENA_E2E_SCREENSHOTS")
    if folder:
        page.screenshot(path=os.path.join(folder, f"{name}.png"), full_page=True)


def test_snapshot_from_the_form_downloaded_and_its_round_on_the_loop_page(
    page: Page, log_in: Any, make_user: Any, make_campaign: Any, settings: Any, tmp_path: Path
) -> None:
    settings.PREFARENA_SNAPSHOT_DIR = tmp_path / "snapshots"
    # given a manager's campaign with 6 preferences
    manager = make_user("manager")
    campaign = make_campaign(kind="pairwise", name="Helpfulness")
    annotation_services.membership_set(campaign=campaign, user=manager, role=MemberRole.MANAGER)
    for n in range(6):
        prompt = Prompt.objects.create(content=f"Question {n}?")
        pair = [Response.objects.create(prompt=prompt, text=f"answer {n} {side}", model_name=side) for side in "ab"]
        annotation_services.judgment_record_external(
            campaign=campaign, prompt=prompt, responses=pair, source=JudgmentSource.LLM, choice="a"
        )
    violations = Violations(page)  # each page is also checked against the Content-Security-Policy
    log_in(page, manager, "/datasets/")

    # when they create a snapshot from the form: a bad value first, shown under its field, then a good one
    page.get_by_label("Name").fill("helpfulness v1")
    page.get_by_label("Helpfulness (#").check()
    page.get_by_label("Min agreement").fill("2")
    page.get_by_role("button", name="Create snapshot").click()
    expect(page.locator("#create-snapshot")).to_contain_text("must be between 0 and 1")
    page.get_by_label("Min agreement").fill("")
    page.get_by_role("button", name="Create snapshot").click()
    page.wait_for_url("**/datasets/*/")
    snapshot = DatasetSnapshot.objects.get()
    assert snapshot.filters["campaigns"] == [campaign.pk]
    expect(page.locator("#snapshot")).to_contain_text("Queued")
    # and the default-queue worker builds it (the task body, here); the page reloads itself while it builds
    assert snapshots.snapshot_build(snapshot.pk) is None
    expect(page.locator("#snapshot")).to_contain_text("Succeeded", timeout=10_000)
    expect(page.locator("#dataset-card")).to_contain_text("helpfulness v1")
    screenshot(page, "datasets-snapshot")
    violations.assert_none("snapshot page")

    # then its file downloads with one line per row
    with page.expect_download() as download_info:
        page.get_by_role("link", name="pairwise.jsonl").click()
    lines = Path(download_info.value.path()).read_text().splitlines()
    snapshot.refresh_from_db()
    assert len(lines) == snapshot.row_counts["pairwise"] == 6
    page.goto("/datasets/")
    expect(page.locator(f'tr[data-snapshot="{snapshot.pk}"]')).to_contain_text("pairwise 6")
    screenshot(page, "datasets")

    # given a policy whose round trains on that snapshot and is still running
    base = Model.objects.create(name="fam", version=1, role="policy", backend="transformers", path="/nowhere/fam")
    policy = training_services.retrain_policy_create(
        name="fam-loop",
        base_model=base,
        method="dpo",
        trigger="every_n",
        every_n=10,
        snapshot_filters={"campaigns": [campaign.pk]},
        created_by=manager,
    )
    run = TrainingRun.objects.create(
        method="dpo",
        base_model=base,
        snapshot=snapshot,
        policy=policy,
        trigger="policy",
        status=JobStatus.RUNNING,
        progress_done=3,
        progress_total=8,
        created_by=manager,
    )
    page.goto("/loop/")
    pipeline = page.locator(f'.pipeline[data-policy="{policy.pk}"]')
    expect(pipeline.locator('[data-stage="snapshot"]')).to_have_attribute("data-state", "done")
    expect(pipeline.locator('[data-stage="run"]')).to_have_attribute("data-state", "active")
    expect(pipeline.locator('[data-stage="gate"]')).to_contain_text("not decided yet")
    screenshot(page, "loop-running")
    # when the round ends (challenger registered, the gate rejects it), the picture follows without a reload
    challenger = Model.objects.create(
        name="fam", version=2, role="policy", backend="transformers", path="/nowhere/2", training_run_id=run.pk
    )
    gate = {
        "decision": "reject",
        "wins": 2,
        "losses": 12,
        "ties": 2,
        "prompts_judged": 16,
        "e_value": 0.1,
        "threshold": 20.0,
    }
    TrainingRun.objects.filter(pk=run.pk).update(
        status=JobStatus.SUCCEEDED,
        progress_done=8,
        output_model=challenger,
        decision="rejected",
        evaluation={"champion": "fam@v1", "trained_from": "fam@v1", "gate": gate, "reason": "futility"},
    )
    expect(pipeline.locator('[data-stage="gate"]')).to_have_attribute("data-state", "stopped", timeout=10_000)
    expect(pipeline.locator('[data-stage="gate"]')).to_contain_text("2 won, 12 lost, 2 tied")
    expect(pipeline.locator('[data-stage="challenger"]')).to_contain_text("fam@v2")
    expect(pipeline.locator('[data-stage="champion"]')).to_contain_text("fam@v1")
    screenshot(page, "loop")
    violations.assert_none("loop page")
    # and each stage links to its page: the snapshot's, the run's, the policy's rounds
    pipeline.locator('[data-stage="gate"] a').click()
    page.wait_for_url(re.compile(rf"/policies/{policy.pk}/#round-{run.pk}$"))
    expect(page.locator(f"#round-{run.pk}")).to_contain_text("rejected")
    screenshot(page, "policies")
    violations.assert_none("policy page")
