"""The image_pairs export (Pick-a-Pic style): Parquet with embedded images and JSONL with image files, both loaded
back with `datasets.load_dataset` with the images decoded; the text formats name images by their hash."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from annotations.models import Item, Judgment

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media_dir(settings: Any, tmp_path: Path) -> Path:
    media = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(media)}},
    }
    return media


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
