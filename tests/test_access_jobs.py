"""Judge jobs follow the job rule of workers/selectors.py: their creator sees them while managing the campaign.

A judge job's calls quote the campaign's items and the judge's raw verdicts, which only managers may read.
"""

from __future__ import annotations

from typing import Any

import pytest

from annotations import services
from annotations.models import Item, MemberRole
from models_hub.models import Model
from workers.models import JudgeCall, JudgeJob

pytestmark = pytest.mark.django_db


def test_a_judge_job_is_hidden_from_its_creator_once_they_no_longer_manage_its_campaign(
    api: Any, make_user: Any, make_campaign: Any, staff: Any
) -> None:
    # given: a judge job made by a manager of its campaign
    manager = make_user("manager")
    campaign = make_campaign(items=1)
    services.membership_set(campaign=campaign, user=manager, role=MemberRole.MANAGER)
    judge = Model.objects.create(name="judge", role="judge", backend="openai", base_url="http://j/v1", remote_model="j")
    job = JudgeJob.objects.create(campaign=campaign, model=judge, created_by=manager)
    JudgeCall.objects.create(
        job=job,
        item=Item.objects.get(campaign=campaign),
        call_index=0,
        kind="pairwise",
        prompt_hash="h",
        parsed="A",
        raw_output="the judge quotes the item",
        model_label="judge@v1",
    )

    def seen(user: Any) -> tuple[bool, int, int]:
        client = api(user)
        listed = job.pk in [row["id"] for row in client.get("/api/v1/judge-jobs/").json()["results"]]
        return (
            listed,
            client.get(f"/api/v1/judge-jobs/{job.pk}/").status_code,
            client.get(f"/api/v1/judge-jobs/{job.pk}/calls/").status_code,
        )

    assert seen(manager) == (True, 200, 200)
    # when: they become a plain annotator of the campaign
    services.membership_set(campaign=campaign, user=manager, role=MemberRole.ANNOTATOR)
    # then
    assert seen(manager) == (False, 404, 404)
    assert seen(staff) == (True, 200, 200)
