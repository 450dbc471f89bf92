"""The arena API and battle socket: every refusal, and no model name before the vote, anywhere."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.db import connection
from django.test import override_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotations.models import Item, Judgment, Prompt, Response
from arena import selectors, services
from arena.identity import VoterIdentity, _keyed_hash
from arena.models import Battle, BattleStatus, ExclusionReason, PairStats, Rating, Vote
from models_hub.models import Model
from models_hub.services import model_register
from prefarena import rendering
from prefarena.routing import websocket_urlpatterns

BATTLES = "/api/v1/arena/battles/"
NO_LIMITS = {"ARENA_VOTES_PER_MINUTE_SESSION": 10_000, "ARENA_VOTES_PER_MINUTE_IP": 10_000}


def make_models(n: int = 2) -> list[Model]:
    """Arena policy rows that are never loaded (API tests store responses directly, as the worker would)."""
    return [
        Model.objects.create(
            name=f"secret-model-{k}", role="policy", backend="transformers", path=f"/nowhere/{k}", in_arena=True
        )
        for k in range(n)
    ]


def names_in(text: str, models: list[Model]) -> list[str]:
    return [word for m in models for word in (m.name, m.label, m.path) if word in text]


def assert_no_names(response: Any, models: list[Model]) -> None:
    body = response.content.decode()
    headers = json.dumps(dict(response.headers.items()))
    assert names_in(body, models) == [], body
    assert names_in(headers, models) == [], headers


def live_battle(client: APIClient, prompt: str = "Which is heavier, a kilo of feathers or a kilo of iron?") -> dict:
    response = client.post(BATTLES, {"prompt": prompt}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def ready(battle_id: int, a: str = "Same weight: one kilo each.", b: str = "Iron is heavier.") -> None:
    services.battle_responses_store(battle_id=battle_id, text_a=a, text_b=b)


def vote(client: APIClient, battle: dict, winner: str = "a", token: str | None = None) -> Any:
    body = {"winner": winner, "token": battle["token"] if token is None else token}
    return client.post(f"{BATTLES}{battle['id']}/vote/", body, format="json")


# --- the happy path, and what is hidden until the vote ------------------------------------------------------
@pytest.mark.django_db
def test_live_battle_hides_models_until_the_vote_then_reveals_them_to_the_voter_only():
    # given
    models = make_models(3)
    client = APIClient()

    # when: a visitor starts a battle
    created = client.post(BATTLES, {"prompt": "Name a prime number."}, format="json")

    # then: sides only, no names in the body or the headers
    assert created.status_code == 201
    assert_no_names(created, models)
    battle = created.json()
    assert battle["status"] == "generating" and battle["mode"] == "live"
    assert battle["websocket"] == f"/ws/arena/battles/{battle['id']}/"
    assert battle["model_a"] is None and battle["model_b"] is None
    assert battle["responses"] == {"a": None, "b": None}
    assert battle["prompt"] == "Name a prime number."

    # when: the worker stores both answers, the page reads the battle back
    ready(battle["id"], "Seven.", "Eleven.")
    fetched = client.get(f"{BATTLES}{battle['id']}/")
    assert fetched.status_code == 200
    assert_no_names(fetched, models)
    assert fetched.json()["status"] == "ready"
    assert fetched.json()["responses"] == {"a": "Seven.", "b": "Eleven."}

    # when: the visitor votes
    voted = vote(client, battle, "b")

    # then: the answer names both models, and the vote is counted everywhere
    assert voted.status_code == 201
    stored = Battle.objects.select_related("model_a", "model_b").get(pk=battle["id"])
    assert voted.json() == {
        "winner": "b",
        "counted": True,
        "exclusion_reason": "",
        "model_a": stored.model_a.label,
        "model_b": stored.model_b.label,
    }
    after = client.get(f"{BATTLES}{battle['id']}/").json()
    assert (after["model_a"], after["model_b"]) == (stored.model_a.label, stored.model_b.label)
    assert after["vote"] == {"winner": "b", "counted": True, "exclusion_reason": ""}
    lo, hi = sorted([stored.model_a_id, stored.model_b_id])
    stats = PairStats.objects.get(category="", model_lo_id=lo, model_hi_id=hi)
    assert (stats.wins_lo, stats.wins_hi) == ((0, 1) if stored.model_a_id == lo else (1, 0))
    assert Rating.objects.get(category="", model=stored.model_b).elo > 1000.0
    assert Judgment.objects.filter(source="arena", choice="b").count() == 1

    # ... and another session sees nothing of this battle
    assert APIClient().get(f"{BATTLES}{battle['id']}/").status_code == 404


@pytest.mark.django_db
def test_pregenerated_battle_carries_both_texts_and_no_names(make_campaign):
    models = make_models(2)
    rows = [
        {
            "prompt": f"Question {i}?",
            "responses": [
                {"text": f"first answer {i}", "model": models[0].label},
                {"text": f"second {i}", "model": models[1].label},
            ],
        }
        for i in range(3)
    ]
    make_campaign(rows=rows)
    client = APIClient()

    created = client.post(BATTLES, {"mode": "pregenerated"}, format="json")

    assert created.status_code == 201, created.content
    assert_no_names(created, models)
    battle = created.json()
    assert battle["status"] == "ready" and battle["mode"] == "pregenerated"
    texts = {battle["responses"]["a"], battle["responses"]["b"]}
    number = battle["prompt"].split()[1].rstrip("?")
    assert texts == {f"first answer {number}", f"second {number}"}
    assert vote(client, battle, "tie").status_code == 201


@pytest.mark.django_db
def test_battle_carries_its_texts_rendered_and_sanitised(make_campaign):
    # given: a pool item whose prompt and responses hold Markdown and markup
    models = make_models(2)
    markdown = "# Plan\n\n- step\n\n```python\nprint(1)\n```"
    injected = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    make_campaign(
        rows=[
            {
                "prompt": [{"role": "user", "content": "**Why?** <script>x</script>"}],
                "responses": [
                    {"text": markdown, "model": models[0].label},
                    {"text": injected, "model": models[1].label},
                ],
            }
        ]
    )
    client = APIClient()

    # when
    battle = client.post(BATTLES, {"mode": "pregenerated"}, format="json").json()
    again = client.get(f"{BATTLES}{battle['id']}/").json()

    # then: both the start's answer and a read carry the texts as stored and as sanitised HTML
    for payload in (battle, again):
        html = {payload["responses"][side]: payload["responses_html"][side] for side in ("a", "b")}
        assert html[markdown] == rendering.text_to_html(markdown)
        assert "<h1>Plan</h1>" in html[markdown] and '<span class="nb">print</span>' in html[markdown]
        assert html[injected] == rendering.text_to_html(injected)
        assert html[injected].startswith("<p>&lt;img src=x onerror=") and "<script" not in html[injected]
        assert payload["prompt_html"] == [
            {"role": "user", "html": "<p><strong>Why?</strong> &lt;script&gt;x&lt;/script&gt;</p>"}
        ]


@pytest.mark.django_db
@override_settings(ARENA_BATTLES_PER_MINUTE_SESSION=1000, ARENA_BATTLES_PER_MINUTE_IP=1000)
def test_pregenerated_battle_never_pairs_two_identical_texts_when_a_pair_differs(make_campaign):
    # given: model 1 answered twice; once with model 0's text (whitespace aside), once with another
    models = make_models(2)
    rows = [{"prompt": "What is 2 + 2?", "responses": [{"text": "4", "model": m.label} for m in models]}]
    campaign = make_campaign(rows=rows)
    prompt = Item.objects.get(campaign=campaign).prompt
    Response.objects.filter(prompt=prompt, model_name=models[1].label).update(text=" 4\n")
    Response.objects.create(prompt=prompt, text="Four.", model_name=models[1].label)
    client = APIClient()

    # when
    drawn = [client.post(BATTLES, {"mode": "pregenerated"}, format="json").json() for _ in range(12)]

    # then: of the two pairs one is identical, and none of the twelve draws is that one
    assert [sorted(b["responses"][side].strip() for side in "ab") for b in drawn] == [["4", "Four."]] * 12


@pytest.mark.django_db
def test_pregenerated_pool_never_serves_another_visitors_live_prompt(make_campaign):
    # given: the only prompt with answers from two arena models is a visitor's own live prompt
    make_models(2)
    owner = APIClient()
    battle = live_battle(owner, "my private medical question")
    ready(battle["id"])
    assert vote(owner, battle, "a").status_code == 201  # a counted vote also files it as an arena item

    # when: someone else draws a prompt
    drawn = APIClient().post(BATTLES, {"mode": "pregenerated"}, format="json")

    # then
    assert drawn.status_code == 409
    assert "No prompt" in drawn.json()["detail"]


@pytest.mark.django_db
def test_invalid_inputs_are_400():
    make_models(2)
    client = APIClient()
    assert client.post(BATTLES, {}, format="json").status_code == 400
    assert client.post(BATTLES, {"prompt": ""}, format="json").status_code == 400
    assert client.post(BATTLES, {"prompt": "a\x00b"}, format="json").status_code == 400
    too_long = client.post(BATTLES, {"prompt": "x" * (settings.ARENA_MAX_PROMPT_CHARS + 1)}, format="json")
    assert too_long.status_code == 400 and "limit" in too_long.json()["detail"]
    battle = live_battle(client)
    ready(battle["id"])
    bad = vote(client, battle, "c")
    assert bad.status_code == 400 and "winner" in bad.json()
    assert client.post(BATTLES, {"mode": "pregenerated", "campaign": 999999}, format="json").status_code == 404


# --- refusals ------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_forged_token_is_403():
    make_models(2)
    client = APIClient()
    battle = live_battle(client)
    ready(battle["id"])
    forged = battle["token"][:-3] + ("AAA" if not battle["token"].endswith("AAA") else "BBB")
    response = vote(client, battle, token=forged)
    assert response.status_code == 403
    assert response.json()["detail"] == "Invalid battle token"
    other = live_battle(client)
    ready(other["id"])
    swapped = vote(client, battle, token=other["token"])  # a real token, for another battle
    assert swapped.status_code == 403 and "another battle" in swapped.json()["detail"]
    assert Vote.objects.count() == 0


@pytest.mark.django_db
def test_token_of_another_session_is_403():
    make_models(2)
    alice, mallory = APIClient(), APIClient()
    battle = live_battle(alice)
    ready(battle["id"])
    response = vote(mallory, battle)
    assert response.status_code == 403
    assert "another session" in response.json()["detail"]
    assert Vote.objects.count() == 0
    assert vote(alice, battle).status_code == 201


@pytest.mark.django_db
def test_expired_token_is_403():
    make_models(2)
    client = APIClient()
    battle = live_battle(client)
    ready(battle["id"])
    with override_settings(ARENA_TOKEN_MAX_AGE=-1):
        response = vote(client, battle)
    assert response.status_code == 403
    assert "expired" in response.json()["detail"]


@pytest.mark.django_db
def test_replay_and_early_votes_are_409():
    make_models(2)
    client = APIClient()
    battle = live_battle(client)
    early = vote(client, battle)
    assert early.status_code == 409 and "complete" in early.json()["detail"]
    ready(battle["id"])
    assert vote(client, battle, "a").status_code == 201
    replay = vote(client, battle, "b")
    assert replay.status_code == 409
    assert replay.json()["detail"] == "This battle already has a vote"
    assert Vote.objects.get().winner == "a"


@pytest.mark.django_db(transaction=True)
@override_settings(**NO_LIMITS)
def test_twenty_concurrent_votes_on_one_battle_store_exactly_one():
    # given: a ready battle, and 20 clients holding the same session cookie and token
    make_models(2)
    owner = APIClient()
    battle = live_battle(owner)
    ready(battle["id"])
    session_cookie = owner.cookies[settings.SESSION_COOKIE_NAME].value
    barrier = threading.Barrier(20)
    statuses: list[int] = []
    lock = threading.Lock()

    def voter(winner: str) -> None:
        client = APIClient()
        client.cookies[settings.SESSION_COOKIE_NAME] = session_cookie
        try:
            barrier.wait(timeout=30)
            status = vote(client, battle, winner).status_code
            with lock:
                statuses.append(status)
        finally:
            connection.close()  # each thread has its own connection

    # when: they all vote at once, for different winners
    threads = [threading.Thread(target=voter, args=(["a", "b", "tie", "both_bad"][k % 4],)) for k in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    # then
    assert sorted(statuses) == [201] + [409] * 19
    assert Vote.objects.filter(battle_id=battle["id"]).count() == 1
    stats = PairStats.objects.get(category="")
    assert stats.wins_lo + stats.wins_hi + stats.ties + stats.both_bad == 1
    assert sum(row["battles"] for row in selectors.leaderboard_get("")["rows"]) == 2  # one battle, two sides


@pytest.mark.django_db
@override_settings(ARENA_DAILY_VOTE_CAP=2, **NO_LIMITS)
def test_over_the_daily_cap_is_429():
    make_models(2)
    client = APIClient()
    battles = [live_battle(client) for _ in range(3)]
    for battle in battles:
        ready(battle["id"])
    assert [vote(client, b).status_code for b in battles[:2]] == [201, 201]
    refused = vote(client, battles[2])
    assert refused.status_code == 429
    assert "Daily vote limit of 2" in refused.json()["detail"]
    assert Vote.objects.count() == 2


@pytest.mark.django_db
@override_settings(ARENA_VOTES_PER_MINUTE_SESSION=2)
def test_over_the_per_minute_limit_is_429():
    make_models(2)
    client = APIClient()
    battles = [live_battle(client) for _ in range(3)]
    for battle in battles:
        ready(battle["id"])
    assert [vote(client, b).status_code for b in battles] == [201, 201, 429]


@pytest.mark.django_db
def test_anonymous_post_without_csrf_token_is_403(make_user):
    make_models(2)
    browser = APIClient(enforce_csrf_checks=True)

    # without a CSRF token: refused, nothing created
    refused = browser.post(BATTLES, {"prompt": "hello"}, format="json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    assert Battle.objects.count() == 0

    # the page sets the cookie; with the header the same request works
    assert browser.get("/arena/").status_code == 200
    csrf = browser.cookies["csrftoken"].value
    created = browser.post(BATTLES, {"prompt": "hello"}, format="json", HTTP_X_CSRFTOKEN=csrf)
    assert created.status_code == 201
    battle = created.json()
    ready(battle["id"])

    # the vote endpoint too
    no_token = browser.post(f"{BATTLES}{battle['id']}/vote/", {"winner": "a", "token": battle["token"]}, format="json")
    assert no_token.status_code == 403 and "CSRF" in no_token.json()["detail"]
    voted = browser.post(
        f"{BATTLES}{battle['id']}/vote/",
        {"winner": "a", "token": battle["token"]},
        format="json",
        HTTP_X_CSRFTOKEN=csrf,
    )
    assert voted.status_code == 201

    # a logged-in browser needs it as well; a script with an API token sends no cookie and does not
    user = make_user("carol")
    logged_in = APIClient(enforce_csrf_checks=True)
    logged_in.login(username="carol", password="pw-correct-horse")
    assert logged_in.post(BATTLES, {"prompt": "hi"}, format="json").status_code == 403
    script = APIClient(enforce_csrf_checks=True)
    script.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    assert script.post(BATTLES, {"prompt": "hi"}, format="json").status_code == 201


# --- generation errors ------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_failed_generation_hides_the_error_and_the_vote_does_not_count(tmp_path):
    from workers.arena_runner import battle_generate_run

    models = [
        Model.objects.create(
            name=f"broken-{k}", role="policy", backend="transformers", path=str(tmp_path), in_arena=True
        )
        for k in range(2)
    ]
    client = APIClient()
    battle = live_battle(client)

    battle_generate_run(battle["id"])  # an empty checkpoint folder: the model cannot load

    stored = Battle.objects.get(pk=battle["id"])
    assert stored.status == BattleStatus.ERROR and "broken-" in stored.error  # kept for staff
    fetched = client.get(f"{BATTLES}{battle['id']}/")
    assert_no_names(fetched, models)
    assert fetched.json()["status"] == "error"
    assert fetched.json()["error"].startswith("Generation failed")
    voted = vote(client, battle, "a")
    assert voted.status_code == 201
    assert voted.json()["counted"] is False
    assert voted.json()["exclusion_reason"] == ExclusionReason.RESPONSE_ERROR
    assert PairStats.objects.count() == 0


# --- the battle socket ----------------------------------------------------------------------------------
def _socket(battle_id: int, session_key: str | None) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/arena/battles/{battle_id}/")
    communicator.scope["session"] = SessionStore(session_key=session_key)
    return communicator


def _identity(session_key: str) -> VoterIdentity:
    return VoterIdentity(session_hash=_keyed_hash("session", session_key), ip_hash="", user_id=None)


@pytest.mark.django_db(transaction=True)
def test_socket_streams_sides_and_text_only_and_the_final_text_is_the_seeded_sample(tiny_models):
    # given: two tiny models in the arena and a battle of this session
    models = [
        model_register(
            name=name,
            role="policy",
            backend="transformers",
            path=str(tiny_models[name]),
            in_arena=True,
            max_new_tokens=48,
        )
        for name in ("tiny-lm-small", "tiny-lm-large")
    ]
    session = SessionStore()
    session.create()
    battle = Battle.objects.create(
        prompt=Prompt.objects.create(content="What do bees make?"),
        model_a=models[0],
        model_b=models[1],
        session_hash=_identity(session.session_key).session_hash,
    )
    from workers.arena_runner import battle_generate_run, battle_seed

    async def scenario() -> list[dict]:
        communicator = _socket(battle.pk, session.session_key)
        connected, _ = await communicator.connect()
        assert connected
        frames = [await communicator.receive_json_from(timeout=5)]

        def run() -> None:
            try:
                battle_generate_run(battle.pk)
            finally:
                connection.close()  # this thread's own connection

        runner = threading.Thread(target=run)
        runner.start()
        while not (frames[-1]["type"] == "battle.status" and frames[-1]["status"] != "generating"):
            frames.append(await communicator.receive_json_from(timeout=60))
        runner.join(timeout=60)
        await communicator.disconnect()
        return frames

    # when: the worker generates while the page listens
    frames = async_to_sync(scenario)()

    # then: frames carry sides and text only, never a model's name, label or path
    assert frames[0] == {
        "type": "battle.status",
        "status": "generating",
        "a": None,
        "b": None,
        "html": {"a": None, "b": None},
    }
    raw = json.dumps(frames)
    assert names_in(raw, models) == [] and "tiny" not in raw
    text_keys = {"type", "side", "text", "done"}
    for frame in frames:
        assert set(frame) in (text_keys, text_keys | {"html", "html_chars"}, {"type", "status", "a", "b", "html"}), (
            frame
        )
    partial = [f for f in frames if f["type"] == "battle.text" and not f["done"]]
    assert partial, "no partial text was streamed"
    stored = Battle.objects.select_related("response_a", "response_b").get(pk=battle.pk)
    assert stored.status == BattleStatus.READY
    final = {"a": stored.response_a.text, "b": stored.response_b.text}
    assert frames[-1] == {
        "type": "battle.status",
        "status": "ready",
        **final,
        "html": {side: rendering.text_to_html(text) for side, text in final.items()},
    }
    for frame in partial:  # every partial text is a prefix of the final one
        assert final[frame["side"]].startswith(frame["text"])
    # the streamed text is rendered now and then (a side's first partial at least), always for its final text
    for side in ("a", "b"):
        mine = [f for f in partial if f["side"] == side]
        assert not mine or "html" in mine[0]
    for frame in frames:
        if frame["type"] == "battle.text" and "html" in frame:
            assert frame["html_chars"] == len(frame["text"])
            assert frame["html"] == rendering.text_to_html(frame["text"])
    done = [f for f in frames if f["type"] == "battle.text" and f["done"]]
    assert {f["side"]: f["html"] for f in done} == {side: rendering.text_to_html(text) for side, text in final.items()}
    # ... and the streamed answer is exactly what batched generation samples with the same seed
    from workers.ml.generation import CausalLM
    from workers.runtime import sampling_params

    lm = CausalLM(models[0].path)
    params = sampling_params(models[0], max_new_tokens=None, temperature=None, top_p=None)
    expected = lm.generate(["What do bees make?"], [battle_seed(battle.pk, "a", models[0])], params)[0].text
    assert stored.response_a.text == expected


@pytest.mark.django_db(transaction=True)
def test_socket_refuses_other_sessions_and_visitors_without_one():
    models = make_models(2)
    owner, stranger = SessionStore(), SessionStore()
    owner.create()
    stranger.create()
    battle = Battle.objects.create(
        prompt=Prompt.objects.create(content="p"),
        model_a=models[0],
        model_b=models[1],
        session_hash=_identity(owner.session_key).session_hash,
    )

    async def attempt(session_key: str | None) -> tuple[bool, int | None]:
        communicator = _socket(battle.pk, session_key)
        connected, code = await communicator.connect()
        await communicator.disconnect()
        return connected, code

    assert async_to_sync(attempt)(stranger.session_key) == (False, 4404)
    assert async_to_sync(attempt)(None) == (False, 4401)
    assert async_to_sync(attempt)(owner.session_key)[0] is True


@pytest.mark.django_db
def test_pregenerated_draw_from_a_chosen_campaign_and_only_from_the_public_pool(make_campaign):
    models = make_models(2)

    def rows(tag: str) -> list[dict]:
        return [
            {
                "prompt": f"{tag} question?",
                "responses": [{"text": "x", "model": models[0].label}, {"text": "y", "model": models[1].label}],
            }
        ]

    public = make_campaign(rows=rows("public"), name="Public pool")
    private = make_campaign(rows=rows("private"), name="Private study")
    client = APIClient()
    # the page offers the pool's campaigns
    page = client.get("/arena/")
    assert "Public pool" in page.content.decode() and "Private study" in page.content.decode()
    drawn = client.post(BATTLES, {"mode": "pregenerated", "campaign": public.pk}, format="json").json()
    assert drawn["prompt"] == "public question?"
    with override_settings(ARENA_POOL_CAMPAIGNS=["Public pool"]):
        page = client.get("/arena/").content.decode()
        assert "Public pool" in page and "Private study" not in page
        refused = client.post(BATTLES, {"mode": "pregenerated", "campaign": private.pk}, format="json")
        assert refused.status_code == 404
        for _ in range(3):  # without a choice, only the pool is drawn from
            any_drawn = client.post(BATTLES, {"mode": "pregenerated"}, format="json").json()
            assert any_drawn["prompt"] == "public question?"
