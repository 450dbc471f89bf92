"""The image_pairs export (Pick-a-Pic style): Parquet with embedded images and JSONL with image files, both loaded
back with `datasets.load_dataset` with the images decoded; the text formats name images by their hash. Snapshots
and the live export carry it as one Parquet file, with the other formats' access rules, hashes and refusals."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import storages
from django.core.management import CommandError, call_command
from django.test import Client
from PIL import Image

from annotations import services, snapshots
from annotations.models import DatasetSnapshot, Item, Judgment, MemberRole, StoredImage

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("media_dir")]


COLORS = ["red", "green", "blue", "orange", "purple", "black"]


def uri(color: str) -> str:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


@pytest.fixture
def image_campaign(make_campaign: Any, make_user: Any) -> Any:
    """Three judged image pairs: A wins, B wins, a tie."""
    rows = [
        {
            "prompt": f"A {COLORS[2 * i]} canvas",
            "responses": [
                {"image": uri(COLORS[2 * i]), "model": "painter-a"},
                {"image": uri(COLORS[2 * i + 1]), "model": "painter-b"},
            ],
        }
        for i in range(3)
    ]
    campaign = make_campaign(rows=rows, name="t2i")
    annotator = make_user("rater")
    for item, choice in zip(Item.objects.filter(campaign=campaign).order_by("id"), ["a", "b", "tie"], strict=True):
        Judgment.objects.create(item=item, annotator=annotator, choice=choice, strength="clear", source="human")
    return campaign


def _export(tmp_path: Path, campaign: Any, layout: str) -> Path:
    target = tmp_path / f"out-{layout}"
    call_command(
        "export_preferences",
        "--format",
        "image_pairs",
        "--output",
        str(target),
        "--layout",
        layout,
        "--campaign",
        str(campaign.pk),
        "--include-ties",
        "--quiet",
    )
    return target


def _check(dataset: Any) -> None:
    rows = sorted(dataset, key=lambda r: r["item_id"])
    assert len(rows) == 3
    assert [(r["label_0"], r["label_1"], r["preference"]) for r in rows] == [
        (1.0, 0.0, "image_0"),
        (0.0, 1.0, "image_1"),
        (0.5, 0.5, "tie"),
    ]
    first = rows[0]
    assert first["caption"] == "A red canvas"
    assert isinstance(first["image_0"], Image.Image) and first["image_0"].size == (40, 30)
    assert first["image_0"].convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    assert first["image_1"].convert("RGB").getpixel((0, 0)) == (0, 128, 0)
    assert (first["model_0"], first["model_1"]) == ("painter-a", "painter-b")


def test_parquet_layout_loads_with_images_decoded(tmp_path, image_campaign):
    from datasets import load_dataset

    target = _export(tmp_path, image_campaign, "parquet")
    card = (target / "README.md").read_text()
    assert "Parquet with the images embedded" in card and "diffusers" in card
    dataset = load_dataset(
        "parquet", data_files=str(target / "image_pairs.parquet"), split="train", cache_dir=str(tmp_path / "hf")
    )
    _check(dataset)


def test_files_layout_loads_with_images_decoded_and_relative_paths(tmp_path, image_campaign):
    from datasets import load_dataset

    target = _export(tmp_path, image_campaign, "files")
    assert "JSONL plus image files" in (target / "README.md").read_text()
    lines = [json.loads(line) for line in (target / "metadata.jsonl").read_text().splitlines()]
    assert all((target / line["image_0_file_name"]).is_file() for line in lines)
    assert all(not Path(line["image_1_file_name"]).is_absolute() for line in lines)
    dataset = load_dataset("imagefolder", data_dir=str(target), split="train", cache_dir=str(tmp_path / "hf"))
    _check(dataset)


def test_text_formats_name_images_by_hash_and_image_pairs_wants_a_folder(tmp_path, image_campaign):
    out = tmp_path / "pairs.jsonl"
    call_command("export_preferences", "--format", "pairwise", "--output", str(out), "--quiet")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and all(r["chosen"].startswith("sha256:") for r in rows)
    with pytest.raises(CommandError, match="names a folder"):
        call_command("export_preferences", "--format", "image_pairs", "--output", str(tmp_path / "x.parquet"))


# --- image_pairs in snapshots and the live export --------------------------------------------------------------
def stored_pixels(sha256: str) -> bytes:
    """The pixels of a stored image, read back from the storage as the image page serves it."""
    stored = StoredImage.objects.get(sha256=sha256)
    with storages["default"].open(stored.storage_name, "rb") as handle:
        return Image.open(handle).convert("RGB").tobytes()


def _check_stored(dataset: Any) -> None:
    """The rows of `image_campaign` (as `_check`), each image decoded to the pixels stored under its uid."""
    _check(dataset)
    for row in dataset:
        for side in ("image_0", "image_1"):
            assert row[side].convert("RGB").tobytes() == stored_pixels(row[f"{side}_uid"])


def _load(data: bytes, tmp_path: Path, name: str) -> Any:
    from datasets import load_dataset

    path = tmp_path / f"{name}.parquet"
    path.write_bytes(data)
    return load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(tmp_path / f"hf-{name}"))


def _body(response: Any) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


@pytest.fixture
def image_manager(image_campaign: Any, make_user: Any) -> Any:
    user = make_user("image-manager")
    services.membership_set(campaign=image_campaign, user=user, role=MemberRole.MANAGER)
    return user


def test_a_snapshot_with_image_pairs_is_built_listed_downloaded_and_loaded(
    tmp_path: Path, image_campaign: Any, image_manager: Any, make_campaign: Any, make_user: Any, api: Any
) -> None:
    # given a second campaign of the same manager whose one item shows the same image twice (no pair to learn)
    same = make_campaign(rows=[{"prompt": "twice", "responses": [{"image": uri("red")}, {"image": uri("red")}]}])
    services.membership_set(campaign=same, user=image_manager, role=MemberRole.MANAGER)
    Judgment.objects.create(item=same.items.get(), annotator=make_user("rater2"), choice="a", source="human")
    client = Client()
    client.force_login(image_manager)
    assert "image_pairs (image preferences" in client.get("/datasets/").content.decode()
    # when they create a snapshot with pairwise and image_pairs from the Datasets page, conversational rows
    response = client.post(
        "/datasets/",
        {
            "name": "pictures",
            "campaigns": [str(image_campaign.pk), str(same.pk)],
            "formats": ["pairwise", "image_pairs"],
            "pair_mode": "all",
            "exclude_flagged": "on",
            "include_ties": "on",
            "conversational": "on",
        },
    )
    snapshot = DatasetSnapshot.objects.get()
    assert response.status_code == 302 and snapshot.formats == ["pairwise", "image_pairs"]
    assert snapshots.snapshot_build(snapshot.pk) is None
    snapshot.refresh_from_db()
    assert snapshot.status == "succeeded", snapshot.error
    # then its files are the text formats' two and one Parquet file of image pairs, recorded as the others are
    assert set(snapshot.files) == {"pairwise.jsonl", "pairwise.parquet", "image_pairs.parquet", "README.md"}
    assert snapshot.row_counts == {"pairwise": 3, "image_pairs": 3}
    assert snapshot.stats["dropped_identical_pairs"] == 1  # counted once, though both formats left it out
    assert snapshot.content_hash == snapshots.content_hash(snapshot.files)
    meta = snapshot.files["image_pairs.parquet"]
    assert meta["rows"] == 3 and meta["bytes"] > 0 and len(meta["sha256"]) == 64
    # the page lists and links it, the card counts its rows and says how to load it
    page = client.get(f"/datasets/{snapshot.pk}/").content.decode()
    download = f"/api/v1/datasets/{snapshot.pk}/files/image_pairs.parquet"
    assert f'href="{download}"' in page and '<td>image_pairs</td><td class="num">3</td>' in page
    card = _body(client.get(f"/api/v1/datasets/{snapshot.pk}/files/README.md")).decode()
    assert "| image_pairs | 3 | `image_pairs.parquet` |" in card and 'load_dataset("parquet"' in card
    # the download, through the page's link, is the recorded file, and datasets decodes the stored images
    response = client.get(download)
    assert response.status_code == 200 and response["Content-Type"] == "application/vnd.apache.parquet"
    data = _body(response)
    assert len(data) == meta["bytes"] and hashlib.sha256(data).hexdigest() == meta["sha256"]
    _check_stored(_load(data, tmp_path, "snapshot"))
    # the pairwise file of the same pass holds message lists, and the image pairs came from its pairs
    pairwise = [
        json.loads(line)
        for line in _body(client.get(download.replace("image_pairs.parquet", "pairwise.jsonl"))).splitlines()
    ]
    assert all(isinstance(row["chosen"], list) for row in pairwise) and len(pairwise) == 3
    # there is no JSONL of image pairs, and a manager of other campaigns sees none of it
    assert client.get(download.replace(".parquet", ".jsonl")).status_code == 404
    assert api(image_manager).get(download).status_code == 200
    other = make_user("other-manager")
    services.membership_set(campaign=make_campaign(name="other"), user=other, role=MemberRole.MANAGER)
    assert api(other).get(download).status_code == 404
    assert api(other).get(f"/api/v1/datasets/{snapshot.pk}/").status_code == 404


def test_image_pairs_snapshots_hash_the_same_data_the_same(image_campaign: Any, staff: Any, make_user: Any) -> None:
    def built(name: str) -> DatasetSnapshot:
        snapshot = snapshots.snapshot_create(
            name=name,
            filters={"campaigns": [image_campaign.pk]},
            formats=["image_pairs"],
            options={"include_ties": True},
            created_by=staff,
        )
        assert snapshots.snapshot_build(snapshot.pk) is None
        return DatasetSnapshot.objects.get(pk=snapshot.pk)

    first, second = built("a"), built("b")
    assert first.status == second.status == "succeeded"
    assert set(first.files) == {"image_pairs.parquet", "README.md"}
    assert first.content_hash == second.content_hash
    assert first.files["image_pairs.parquet"]["sha256"] == second.files["image_pairs.parquet"]["sha256"]
    written = Path(first.directory) / "image_pairs.parquet"  # published read-only, as every snapshot file
    assert not written.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    # a judgment more, another label: another hash
    item = Item.objects.filter(campaign=image_campaign).latest("id")
    for n in range(2):
        Judgment.objects.create(item=item, annotator=make_user(f"late{n}"), choice="a", source="human")
    assert built("c").content_hash != first.content_hash


def test_the_live_export_sends_image_pairs_as_a_parquet_file_that_loads(
    tmp_path: Path, image_campaign: Any, image_manager: Any, api: Any, staff: Any
) -> None:
    # when the manager asks for the campaign's image pairs (the layout named or not)
    client = api(image_manager)
    url = f"/api/v1/export/image_pairs.parquet?campaign={image_campaign.pk}&include_ties=1"
    response = client.get(url)
    # then the file is streamed with the Parquet type and name, and loads with the stored images decoded
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "application/vnd.apache.parquet"
    assert response["Content-Disposition"] == 'attachment; filename="image_pairs.parquet"'
    data = _body(response)
    _check_stored(_load(data, tmp_path, "live"))
    assert _body(client.get(url + "&layout=parquet")) == data
    # the same rows as the snapshot of the same filters and options
    snapshot = snapshots.snapshot_create(
        name="same",
        filters={"campaigns": [image_campaign.pk]},
        formats=["image_pairs"],
        options={"include_ties": True},
    )
    assert snapshots.snapshot_build(snapshot.pk) is None
    import pyarrow.parquet as pq

    from_snapshot = pq.read_table(
        snapshots.snapshot_file_path(DatasetSnapshot.objects.get(pk=snapshot.pk), "image_pairs", "parquet")
    )
    assert pq.read_table(io.BytesIO(data)).equals(from_snapshot)
    # filters apply as to every format: no judgment after 2999, no pair
    empty = _body(
        api(staff).get(f"/api/v1/export/image_pairs.parquet?campaign={image_campaign.pk}&created_after=2999-01-01")
    )
    assert pq.read_table(io.BytesIO(empty)).num_rows == 0


def test_a_campaign_without_images_gives_an_empty_valid_file(
    tmp_path: Path, make_campaign: Any, make_user: Any, api: Any, staff: Any
) -> None:
    # given a judged campaign of text responses
    text = make_campaign(kind="pairwise", items=2, name="words")
    for item in text.items.all():
        Judgment.objects.create(item=item, annotator=make_user(f"reader{item.pk}"), choice="a", source="human")
    # the live export: a Parquet file with no rows whose schema declares the image columns (as the other formats'
    # empty files, it has no row group; datasets.load_dataset refuses any Parquet file without rows)
    import pyarrow.parquet as pq
    from datasets import Features
    from datasets import Image as ImageFeature

    response = api(staff).get(f"/api/v1/export/image_pairs.parquet?campaign={text.pk}")
    assert response.status_code == 200 and response["Content-Type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(_body(response)))
    assert table.num_rows == 0 and table.column_names[:3] == ["image_0", "image_1", "caption"]
    features = Features.from_arrow_schema(table.schema)
    assert isinstance(features["image_0"], ImageFeature) and isinstance(features["image_1"], ImageFeature)
    assert _body(api(staff).get(f"/api/v1/export/pairwise.jsonl?campaign={text.pk}")).count(b"\n") == 2
    # a snapshot: zero image pairs, the file recorded all the same
    snapshot = snapshots.snapshot_create(
        name="words", filters={"campaigns": [text.pk]}, formats=["pairwise", "image_pairs"], options={}
    )
    assert snapshots.snapshot_build(snapshot.pk) is None
    snapshot.refresh_from_db()
    assert snapshot.status == "succeeded" and snapshot.row_counts == {"pairwise": 2, "image_pairs": 0}
    assert snapshot.files["image_pairs.parquet"]["rows"] == 0


def test_access_to_image_pairs_is_the_other_formats(
    image_campaign: Any, image_manager: Any, make_user: Any, api: Any
) -> None:
    annotator = make_user("looks-only")
    services.membership_set(campaign=image_campaign, user=annotator, role=MemberRole.ANNOTATOR)
    outsider = make_user("stranger")
    campaign = image_campaign.pk
    for user, query, status in [
        (annotator, f"campaign={campaign}", 403),  # annotates, does not manage: everyone's judgments are in it
        (outsider, f"campaign={campaign}", 404),  # cannot see it
        (outsider, "", 403),  # manages nothing
        (image_manager, f"campaign={campaign}", 200),
    ]:
        images = api(user).get(f"/api/v1/export/image_pairs.parquet?{query}")
        text = api(user).get(f"/api/v1/export/pairwise.parquet?{query}")
        assert (images.status_code, text.status_code) == (status, status), (user, query)
        if status != 200:
            assert images.json() == text.json()
    assert api(None).get(f"/api/v1/export/image_pairs.parquet?campaign={campaign}").status_code in (401, 403)
    # nor may the annotator make a snapshot of it
    body = {"name": "x", "formats": ["image_pairs"], "filters": {"campaigns": [campaign]}}
    assert api(annotator).post("/api/v1/datasets/", body, format="json").status_code == 403
    assert api(outsider).post("/api/v1/datasets/", body, format="json").status_code == 404
    assert DatasetSnapshot.objects.count() == 0


@pytest.mark.parametrize(
    ("url", "field", "message"),
    [
        ("/api/v1/export/image_pairs.jsonl", "format", "Parquet only"),
        ("/api/v1/export/image_pairs.parquet?layout=files", "layout", "is a folder"),
        ("/api/v1/export/image_pairs.parquet?layout=zip", "layout", "unknown layout 'zip'"),
        ("/api/v1/export/pairwise.parquet?layout=parquet", "layout", "image_pairs format only"),
        ("/api/v1/export/pairwise.jsonl?layout=files", "layout", "layout"),
        ("/api/v1/export/images.parquet", "format", "unknown format 'images'"),
        ("/api/v1/export/image_pairs.parquet?pair_mode=best", "pair_mode", "must be one of"),
    ],
)
def test_bad_image_export_requests_are_400_with_a_message(
    image_campaign: Any, api: Any, staff: Any, url: str, field: str, message: str
) -> None:
    accept = "application/vnd.apache.parquet" if ".parquet" in url else "application/x-ndjson, application/json"
    response = api(staff).get(url, HTTP_ACCEPT=accept)
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/json"
    assert field in response.json() and message in response.json()["detail"], response.json()


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"formats": ["image_pairs"], "options": {"layout": "files"}}, "layout", "is a folder"),
        ({"formats": ["image_pairs"], "options": {"layout": "tar"}}, "layout", "unknown layout"),
        ({"formats": ["pairwise"], "options": {"layout": "parquet"}}, "layout", "image_pairs format only"),
        ({"formats": ["image_pairs", "png"]}, "formats", "unknown format 'png'"),
        ({"formats": ["image_pairs"], "options": {"include_ties": "perhaps"}}, "include_ties", "true or false"),
    ],
)
def test_bad_image_snapshots_are_400_and_store_nothing(
    image_campaign: Any, image_manager: Any, api: Any, body: dict[str, Any], field: str, message: str
) -> None:
    payload = {"name": "pictures", "filters": {"campaigns": [image_campaign.pk]}, **body}
    response = api(image_manager).post("/api/v1/datasets/", payload, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json() and message in response.json()["detail"], response.json()
    assert DatasetSnapshot.objects.count() == 0
    # the layout that fits one file is taken (and not stored: it is the only one)
    if field == "layout" and body["formats"] == ["image_pairs"]:
        good = {**payload, "options": {"layout": "parquet"}}
        created = api(image_manager).post("/api/v1/datasets/", good, format="json")
        assert created.status_code == 201 and "layout" not in created.json()["options"]


def test_the_image_stream_sends_a_row_group_per_16_mib_of_images(image_campaign: Any, monkeypatch: Any) -> None:
    import pyarrow.parquet as pq

    from annotations.export import filters_parse, image_rows, options_parse, stream_parquet

    # given a byte budget of a row group smaller than one image (the real one is 16 MiB)
    monkeypatch.setattr(image_rows, "IMAGE_GROUP_BYTES", 1)
    filters = filters_parse({"campaigns": [image_campaign.pk]})
    # when the live stream is read chunk by chunk
    chunks = list(stream_parquet("image_pairs", filters, options_parse({"include_ties": True})))
    # then each pair went out as its own row group as soon as it was read, before the footer
    assert chunks[0] == b"PAR1"
    metadata = pq.ParquetFile(io.BytesIO(b"".join(chunks))).metadata
    assert [metadata.row_group(n).num_rows for n in range(metadata.num_row_groups)] == [1, 1, 1]
    assert len(chunks) in (4, 5)  # the magic bytes, a chunk per row group, the footer (alone or with the last)
