"""Images as content: storing (validated, re-encoded, content-addressed), serving with safe headers and access
checks, and importing image items through JSONL and the API (JSON with data URIs, multipart with files)."""

from __future__ import annotations

import base64
import io
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from annotations import services
from annotations.images import ImageRejected, image_decode
from annotations.models import Item, Prompt, Response, StoredImage

pytestmark = pytest.mark.usefixtures("media_dir")  # images stored in a fresh folder per test


def picture(color: str = "red", *, fmt: str = "PNG", size: tuple[int, int] = (32, 24), exif: bool = False) -> bytes:
    image = Image.new("RGB", size, color)
    out = io.BytesIO()
    params: dict[str, Any] = {}
    if exif:
        data = Image.Exif()
        data[0x010F] = "SecretCam"  # Make
        data[0x8825] = {2: (51.0, 30.0, 0.0)}  # GPS latitude
        params["exif"] = data.tobytes()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def noisy_png() -> bytes:
    out = io.BytesIO()
    Image.frombytes("RGB", (64, 48), random.Random(0).randbytes(64 * 48 * 3)).save(out, format="PNG")
    return out.getvalue()


def data_uri(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def stored_files(media: Path) -> list[Path]:
    return [p for p in media.rglob("*") if p.is_file()] if media.exists() else []


# --- storing --------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_image_store_re_encodes_without_exif_and_stores_once(media_dir):
    # given a JPEG carrying camera and GPS EXIF
    original = picture("blue", fmt="JPEG", exif=True)
    assert b"SecretCam" in original
    # when it is stored twice
    first = services.image_store(original, declared_type="image/jpeg")
    second = services.image_store(original)
    # then one row, one file, re-encoded: same picture, no EXIF
    assert first.pk == second.pk and StoredImage.objects.count() == 1
    files = stored_files(media_dir)
    assert len(files) == 1 and files[0].name == f"{first.sha256}.jpg"
    stored = files[0].read_bytes()
    assert b"SecretCam" not in stored and b"Exif" not in stored
    with Image.open(io.BytesIO(stored)) as reread:
        assert reread.format == "JPEG" and reread.size == (32, 24) and not reread.getexif()
    assert (first.content_type, first.width, first.height) == ("image/jpeg", 32, 24)


def test_gif_keeps_its_first_frame_as_png():
    frames = [Image.new("P", (8, 8), i) for i in (1, 2)]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:])
    decoded = image_decode(out.getvalue(), declared_type="image/gif")
    assert decoded.content_type == "image/png"
    with Image.open(io.BytesIO(decoded.data)) as reread:
        assert reread.format == "PNG" and getattr(reread, "n_frames", 1) == 1


@pytest.mark.parametrize(
    ("data", "declared", "message"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, None, "image, or corrupt"),
        (noisy_png()[:300], None, "corrupt or truncated"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', None, "SVG images are refused"),
        (picture(), "image/svg+xml", "'image/svg+xml' is not accepted"),
        (picture(), "image/jpeg", "declared as image/jpeg but the data is a PNG image"),
        (picture(), "text/html", "'text/html' is not accepted"),
        (b"GIF89a" + b"\x00" * 10, None, "corrupt"),
    ],
    ids=["not-an-image", "truncated", "svg", "svg-declared", "wrong-type", "html-declared", "empty-gif"],
)
@pytest.mark.django_db
def test_image_store_refuses_and_stores_nothing(media_dir, data, declared, message):
    with pytest.raises(ImageRejected, match=re.escape(message)):
        services.image_store(data, declared_type=declared)
    assert StoredImage.objects.count() == 0 and stored_files(media_dir) == []


@pytest.mark.django_db
def test_image_store_refuses_too_many_pixels_before_decoding(settings):
    settings.PREFARENA_IMAGE_MAX_PIXELS = 100
    with pytest.raises(ImageRejected, match="32x24 pixels; images may have at most 100 pixels"):
        services.image_store(picture())


# --- importing ------------------------------------------------------------------------------------------
def _image_rows(images: list[str], prompt_image: str | None = None) -> list[dict[str, Any]]:
    prompt: Any = "A red square"
    if prompt_image is not None:
        prompt = [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe this"},
                    {"type": "image_url", "image_url": {"url": prompt_image}},
                ],
            }
        ]
    return [{"prompt": prompt, "responses": [{"image": src, "model": f"m{n}"} for n, src in enumerate(images)]}]


@pytest.mark.django_db
def test_jsonl_import_takes_relative_paths_and_data_uris(tmp_path, make_campaign, media_dir):
    # given a JSONL file beside an images folder, one image given as a data URI
    campaign = make_campaign(name="t2i")
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "red.png").write_bytes(picture("red"))
    rows = _image_rows(["imgs/red.png", data_uri(picture("green"))], prompt_image="imgs/red.png")
    rows[0]["responses"][1]["text"] = "a green square"
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    # when it is imported
    call_command("import_items", "--campaign", "t2i", str(path))
    # then the item's responses are images and its prompt names the red one
    item = Item.objects.get(campaign=campaign)
    responses = [link.response for link in item.item_responses.order_by("position")]
    assert [r.image is not None for r in responses] == [True, True]
    assert responses[1].text == "a green square" and responses[0].text == ""
    red = responses[0].image
    assert list(item.prompt.images.all()) == [red]
    assert item.prompt.content[0]["content"][1] == {"type": "image_url", "image_url": {"url": f"sha256:{red.sha256}"}}
    assert StoredImage.objects.count() == 2 and len(stored_files(media_dir)) == 2


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("../outside.png", "leads outside the JSONL file's folder"),
        ("/etc/passwd", "is an absolute path"),
        ("imgs/missing.png", "no file 'imgs/missing.png'"),
        ("imgs/huge.png", "52,428,800 bytes; images may be at most"),
        ("imgs/drawing.svg", "SVG images are refused"),
        ("https://example.org/cat.png", "never fetched from URLs"),
    ],
)
@pytest.mark.django_db
def test_jsonl_import_refuses_bad_images_and_stores_nothing(tmp_path, make_campaign, media_dir, source, message):
    make_campaign(name="t2i")
    base = tmp_path / "base"
    (base / "imgs").mkdir(parents=True)
    (tmp_path / "outside.png").write_bytes(picture())
    (base / "imgs" / "ok.png").write_bytes(picture("blue"))
    with (base / "imgs" / "huge.png").open("wb") as handle:
        handle.truncate(50 * 1024 * 1024)  # 50 MB, sparse: refused by its size before it is read
    (base / "imgs" / "drawing.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    path = base / "items.jsonl"
    # the good row first: a bad second line must leave nothing behind either
    lines = _image_rows(["imgs/ok.png", "imgs/ok.png"]) + _image_rows(["imgs/ok.png", source])
    path.write_text("\n".join(json.dumps(r) for r in lines))
    with pytest.raises(CommandError, match=message) as caught:
        call_command("import_items", "--campaign", "t2i", str(path))
    assert "line 2: 'responses'[1].image" in str(caught.value) and "nothing was imported" in str(caught.value)
    assert (
        Item.objects.count() == Prompt.objects.count() == Response.objects.count() == StoredImage.objects.count() == 0
    )
    assert stored_files(media_dir) == []


@pytest.mark.django_db
def test_api_multipart_import_then_lease_and_serve_with_safe_headers(api, staff, make_user, make_campaign, client):
    # given a campaign with an annotator and an outsider
    annotator, outsider = make_user("ann"), make_user("outsider")
    campaign = make_campaign(name="t2i", annotators=[annotator])
    items = _image_rows(["left", "right"], prompt_image=data_uri(picture("yellow")))
    # when a manager uploads the two images as files
    answer = api(staff).post(
        f"/api/v1/campaigns/{campaign.pk}/items/",
        {
            "items": json.dumps(items),
            "left": _upload("left.png", picture("red"), "image/png"),
            "right": _upload("right.webp", picture("blue", fmt="WEBP"), "image/webp"),
        },
        format="multipart",
    )
    assert answer.status_code == 201, answer.content
    # then the annotator's lease shows both images and the prompt's, with URLs they may open
    lease = api(annotator).post(f"/api/v1/campaigns/{campaign.pk}/next/").json()
    urls = [r["image"]["url"] for r in lease["responses"]]
    assert all(u.startswith("/images/") for u in urls) and len(set(urls)) == 2
    assert {r["image"]["content_type"] for r in lease["responses"]} == {"image/png", "image/webp"}
    assert lease["prompt_html"][0]["images"] == [lease["prompt"][0]["content"][1]["image_url"]["url"]]
    client.force_login(annotator)
    served = client.get(urls[0])
    assert served.status_code == 200
    assert served["Content-Type"] in ("image/png", "image/webp")
    assert served["X-Content-Type-Options"] == "nosniff"
    assert served["Content-Disposition"].startswith("inline; filename=")
    assert "sandbox" in served["Content-Security-Policy"] and "default-src 'none'" in served["Content-Security-Policy"]
    assert b"".join(served.streaming_content)[:4] in (b"\x89PNG", b"RIFF")
    # and nobody else does
    client.force_login(outsider)
    assert client.get(urls[0]).status_code == 404
    client.logout()
    assert client.get(urls[0]).status_code == 404
    # unless the image is public (arena content)
    StoredImage.objects.filter(sha256=urls[0].rsplit("/", 1)[1]).update(is_public=True)
    assert client.get(urls[0]).status_code == 200


def _upload(name: str, data: bytes, content_type: str) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type=content_type)


@pytest.mark.parametrize(
    ("upload", "message"),
    [
        (("bad.png", b"\x89PNG\r\n\x1a\nnot really", "image/png"), "corrupt"),
        (("x.svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml"), "'image/svg+xml' is not accepted"),
        (("x.png", b"0" * (50 * 1024 * 1024), "image/png"), "52,428,800 bytes; images may be at most"),
        (("x.jpg", picture(), "image/jpeg"), "declared as image/jpeg but the data is a PNG image"),
    ],
    ids=["corrupt", "svg", "50MB", "wrong-mime"],
)
@pytest.mark.django_db
def test_api_import_refuses_bad_uploads_and_stores_nothing(api, staff, make_campaign, media_dir, upload, message):
    campaign = make_campaign(name="t2i")
    items = _image_rows([data_uri(picture("green")), "file"])
    answer = api(staff).post(
        f"/api/v1/campaigns/{campaign.pk}/items/",
        {"items": json.dumps(items), "file": _upload(*upload)},
        format="multipart",
    )
    assert answer.status_code == 400, answer.content
    assert message in answer.json()["detail"] and "items[0]: 'responses'[1].image" in answer.json()["detail"]
    assert Item.objects.count() == StoredImage.objects.count() == 0 and stored_files(media_dir) == []


@pytest.mark.django_db
def test_api_json_import_takes_data_uris_only(api, staff, make_campaign, media_dir):
    campaign = make_campaign(name="t2i")
    svg = data_uri(b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml")
    refused = api(staff).post(
        f"/api/v1/campaigns/{campaign.pk}/items/", {"items": _image_rows([svg, "left"])}, format="json"
    )
    assert refused.status_code == 400 and "'image/svg+xml' is not accepted" in refused.json()["detail"]
    named = api(staff).post(
        f"/api/v1/campaigns/{campaign.pk}/items/",
        {"items": _image_rows([data_uri(picture()), "left"])},
        format="json",
    )
    assert named.status_code == 400 and "base64 data URI" in named.json()["detail"]
    assert StoredImage.objects.count() == 0 and stored_files(media_dir) == []
    ok = api(staff).post(
        f"/api/v1/campaigns/{campaign.pk}/items/",
        {"items": _image_rows([data_uri(picture()), data_uri(picture("black", fmt="JPEG"), "image/jpeg")])},
        format="json",
    )
    assert ok.status_code == 201 and StoredImage.objects.count() == 2


@pytest.mark.django_db
def test_gold_and_agreement_work_for_image_items(api, staff, make_user, make_campaign):
    # given two image items judged by two annotators, one of them gold
    alice, bob = make_user("alice"), make_user("bob")
    rows = [
        _image_rows([data_uri(picture(a)), data_uri(picture(b))])[0] for a, b in [("red", "blue"), ("green", "black")]
    ]
    rows[0]["gold"] = {"choice": "a"}
    campaign = make_campaign(name="t2i", rows=rows, annotators=[alice, bob], overlap=2)
    for annotator, canonical in ((alice, "a"), (bob, "b")):
        for _ in range(2):
            lease = api(annotator).post(f"/api/v1/campaigns/{campaign.pk}/next/").json()
            # answer in presented terms: the canonical choice is shown where presented_order puts it
            shown = "a" if lease["presented_order"][0] == (0 if canonical == "a" else 1) else "b"
            answer = api(annotator).post(
                f"/api/v1/items/{lease['item']}/judgments/", {"choice": shown, "strength": "clear"}, format="json"
            )
            assert answer.status_code == 201, answer.content
    # then gold accuracy and agreement are computed as for text
    quality = api(staff).get(f"/api/v1/campaigns/{campaign.pk}/stats/").json()["quality"]
    assert (quality["gold"]["n"], quality["gold"]["correct"]) == (2, 1)
    assert quality["judgments"] == 4 and quality["alpha"]["value"] is not None  # they always disagreed
