"""The Datasets pages: the create form (same service as POST /api/v1/datasets/), its field errors, who may use it,
the snapshot page (counts, hash, the card rendered safely) and its download links."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import pytest
from django.test import Client

from annotations import services, snapshots
from annotations.models import DatasetSnapshot, MemberRole
from tests.datasets.conftest import PreferenceData
from tests.xss_payloads import PAYLOADS

pytestmark = pytest.mark.django_db


class ElementAttributes(HTMLParser):
    """What the browser would parse: script elements and attributes that could run code."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts = 0
        self.unsafe: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.scripts += tag == "script"
        for name, value in attrs:
            if name.startswith("on") or (value or "").strip().lower().startswith("javascript:"):
                self.unsafe.append(f"<{tag} {name}={value!r}>")


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def manager(make_campaign: Any, make_user: Any) -> Any:
    """The manager of one campaign with two items and no judgments (enough for the form's checks)."""
    user = make_user("light-manager")
    campaign = make_campaign(kind="pairwise", items=2, name="light")
    services.membership_set(campaign=campaign, user=user, role=MemberRole.MANAGER)
    user.campaign = campaign
    return user


def form(**fields: Any) -> dict[str, Any]:
    return {"name": "prefs", "formats": ["pairwise"], "pair_mode": "all", "exclude_flagged": "on", **fields}


def test_a_manager_creates_a_snapshot_from_the_form_and_downloads_its_files(preference_data: PreferenceData) -> None:
    # given the manager of the pairwise campaign
    client = client_for(preference_data.manager)
    page = client.get("/datasets/")
    assert page.status_code == 200 and b"Create a snapshot" in page.content
    # when they submit the form for their campaign, two formats
    campaign = preference_data.pairwise.pk
    response = client.post(
        "/datasets/", form(campaigns=[str(campaign)], formats=["pairwise", "kto"], license="CC-BY-4.0")
    )
    # then the service stored a queued snapshot of exactly that campaign, and the page shows it
    snapshot = DatasetSnapshot.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/datasets/{snapshot.pk}/"
    assert snapshot.filters["campaigns"] == [campaign] and snapshot.formats == ["pairwise", "kto"]
    assert snapshot.created_by == preference_data.manager and snapshot.license == "CC-BY-4.0"
    # once built (the task body, as the default-queue worker runs it)
    assert snapshots.snapshot_build(snapshot.pk) is None
    snapshot.refresh_from_db()
    page = client.get(f"/datasets/{snapshot.pk}/")
    text = page.content.decode()
    assert page.status_code == 200
    assert (
        snapshot.content_hash in text and f'<td>pairwise</td><td class="num">{snapshot.row_counts["pairwise"]}' in text
    )
    assert "<h1>prefs</h1>" in text  # the README card, rendered
    download = f"/api/v1/datasets/{snapshot.pk}/files/pairwise.jsonl"
    assert f'href="{download}"' in text
    body = b"".join(client.get(download).streaming_content)
    assert body.count(b"\n") == snapshot.row_counts["pairwise"] > 0
    # and the list, filtered by its campaign and status, shows it
    listed = client.get(f"/datasets/?campaign={campaign}&status=succeeded")
    assert listed.status_code == 200 and f"/datasets/{snapshot.pk}/" in listed.content.decode()
    assert f"/datasets/{snapshot.pk}/" not in client.get("/datasets/?status=failed").content.decode()


BAD_VALUES: list[tuple[dict[str, Any], str, str]] = [
    ({"min_agreement": "2"}, "min_agreement", "must be between 0 and 1"),
    ({"min_margin": "lots"}, "min_margin", "must be a number between 0 and 1"),
    ({"created_after": "2026-13-45"}, "created_after", "must be an ISO 8601 date"),
    ({"created_after": "2026-05-02", "created_before": "2026-05-01"}, "created_before", "later than"),
    ({"formats": []}, "formats", "This field is required"),
    ({"formats": ["pairwise", "csv"]}, "formats", "Select a valid choice"),
    ({"name": "   "}, "name", "This field is required"),
    ({"pair_mode": "best"}, "pair_mode", "Select a valid choice"),
]


def test_a_bad_value_shows_its_fields_error_and_stores_nothing(manager: Any) -> None:
    client = client_for(manager)
    for fields, field, message in BAD_VALUES:
        response = client.post("/datasets/", form(**fields))
        assert response.status_code == 400, fields
        errors = response.context["form"].errors
        assert field in errors and message in " ".join(errors[field]), (fields, errors)
        assert f'id="id_{field}"' in response.content.decode()  # the form is shown again, the error beside it
    assert DatasetSnapshot.objects.count() == 0


def test_campaigns_outside_ones_management_are_refused(manager: Any, make_user: Any, make_campaign: Any) -> None:
    # a manager of one campaign cannot export another (a forged id is not among the form's choices)
    other = make_user("other-manager")
    services.membership_set(campaign=make_campaign(name="other"), user=other, role=MemberRole.MANAGER)
    response = client_for(other).post("/datasets/", form(campaigns=[str(manager.campaign.pk)]))
    assert response.status_code == 400 and "campaigns" in response.context["form"].errors
    # nor read a snapshot of it
    snapshot = snapshots.snapshot_create_for_user(
        manager, name="theirs", filters={"campaigns": [manager.campaign.pk]}, formats=["pairwise"], options={}
    )
    assert client_for(other).get(f"/datasets/{snapshot.pk}/").status_code == 404
    assert f"/datasets/{snapshot.pk}/" not in client_for(other).get("/datasets/").content.decode()
    assert DatasetSnapshot.objects.count() == 1


def test_users_who_manage_nothing_are_refused(manager: Any, make_user: Any) -> None:
    annotator = make_user("only-annotates")
    services.membership_set(campaign=manager.campaign, user=annotator, role=MemberRole.ANNOTATOR)
    for user in (make_user("nobody"), annotator):  # no membership; an annotator only
        client = client_for(user)
        assert client.get("/datasets/").status_code == 403
        assert client.post("/datasets/", form()).status_code == 403
        assert client.get("/datasets/1/").status_code == 403
        home = client.get("/").content.decode()  # and the top bar does not lead them there
        assert 'href="/datasets/"' not in home and 'href="/loop/"' not in home and 'href="/policies/"' not in home
    assert DatasetSnapshot.objects.count() == 0
    home = client_for(manager).get("/").content.decode()
    assert 'href="/datasets/"' in home and 'href="/loop/"' in home and 'href="/policies/"' in home
    assert Client().get("/datasets/").status_code == 302  # signed out: to the login page


def test_bad_list_filters_answer_400_naming_the_parameter(manager: Any) -> None:
    client = client_for(manager)
    for query, named in (("status=finished", "status:"), ("campaign=x", "campaign:")):
        response = client.get(f"/datasets/?{query}")
        assert response.status_code == 400 and named in response.content.decode()


def test_names_and_descriptions_render_inert_on_the_pages(manager: Any) -> None:
    client = client_for(manager)
    payload = PAYLOADS[2]  # <script>window.pwned = 1</script>
    snapshot = snapshots.snapshot_create_for_user(
        manager,
        name=payload,
        description="\n".join(PAYLOADS),
        filters={"campaigns": [manager.campaign.pk]},
        formats=["pairwise"],
        options={},
    )
    assert snapshots.snapshot_build(snapshot.pk) is None
    for url in ("/datasets/", f"/datasets/{snapshot.pk}/"):
        text = client.get(url).content.decode()
        elements = ElementAttributes()
        elements.feed(text)
        assert elements.scripts == 0 and elements.unsafe == [], (url, elements.unsafe)
