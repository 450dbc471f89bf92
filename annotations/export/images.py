"""The `image_pairs` export: pairwise preferences between two images, Pick-a-Pic / HPS style.

One row per resolved pair of image responses (the `pairwise` format's pairs: pairwise items, and ranked or
rated items binarised by `pair_mode`): `caption` (the prompt's text), `image_0` and `image_1` (in the item's
canonical order, so the preferred image is not always first), `label_0` / `label_1` (1 / 0, 0 / 1, or 0.5 /
0.5 for a tie when `include_ties`), `preference` ("image_0", "image_1", "tie"), `p_0` (P(image_0 is better)),
the models, judgment counts and agreement. Pairs where either side is not an image are left out.

Two layouts of a folder, written into a scratch folder and renamed into place (`prefarena.publish`):
- `parquet`: `image_pairs.parquet` with the images' bytes embedded as the `datasets` Image feature (a struct of
  `bytes` and `path`, declared in the schema's `huggingface` metadata), so `datasets.load_dataset("parquet",
  data_files=...)` decodes them to PIL images;
- `files`: `metadata.jsonl` with `image_0_file_name` / `image_1_file_name` relative paths and the images under
  `images/` beside it, the layout of `datasets`' imagefolder loader (`load_dataset("imagefolder", data_dir=...)`
  decodes `image_0` and `image_1`); any JSONL reader gets the paths.
Both have a README.md dataset card saying which layout it is and what it feeds.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from django.core.files.storage import storages

from annotations.export.filters import ExportFilters, ExportOptions
from annotations.export.formats import prompt_text
from annotations.export.source import ItemBundle, ItemSummary, export_transaction
from annotations.export.writers import ExportRun, encode_row
from annotations.images import EXTENSION, reference_hash
from annotations.models import StoredImage
from prefarena.publish import folder_publish, folder_remove, fsync_file

IMAGE_PAIRS = "image_pairs"
LAYOUTS = ("parquet", "files")
PARQUET_NAME = "image_pairs.parquet"
METADATA_NAME = "metadata.jsonl"
IMAGES_FOLDER = "images"
PARQUET_BATCH_ROWS = 64  # images are large: a row group of 64 pairs holds ~128 images
# Columns besides the two images, in order, with their `datasets` Value dtype.
SCALAR_COLUMNS = (
    ("caption", "string"),
    ("label_0", "float64"),
    ("label_1", "float64"),
    ("preference", "string"),
    ("p_0", "float64"),
    ("image_0_uid", "string"),
    ("image_1_uid", "string"),
    ("model_0", "string"),
    ("model_1", "string"),
    ("is_tie", "bool"),
    ("n_judgments", "int64"),
    ("agreement", "float64"),
    ("source", "string"),
    ("item_id", "int64"),
    ("campaign", "string"),
)


class ImagePairs:
    """Pairwise rows of one export pass turned into image pairs; each image's file read once per pass."""

    def __init__(self, run: ExportRun) -> None:
        self.run = run
        self.files: dict[str, tuple[str, str]] = {}  # sha256 -> (storage name, content type)

    def image(self, sha256: str) -> tuple[str, str]:
        if sha256 not in self.files:
            name, content_type = StoredImage.objects.values_list("storage_name", "content_type").get(sha256=sha256)
            self.files[sha256] = (name, content_type)
        return self.files[sha256]

    def rows(self, bundle: ItemBundle, summary: ItemSummary) -> list[dict[str, Any]]:
        refs = [text for text, _ in bundle.responses]
        out = []
        for row in self.run.rows("pairwise", bundle, summary):
            chosen, rejected = reference_hash(row["chosen"]), reference_hash(row["rejected"])
            if chosen is None or rejected is None:
                continue  # a text response: not an image pair
            chosen_first = refs.index(row["chosen"]) < refs.index(row["rejected"])
            first, second = (chosen, rejected) if chosen_first else (rejected, chosen)
            p_0 = row["p_chosen"] if chosen_first else 1.0 - row["p_chosen"]
            if row["is_tie"]:
                labels, preference = (0.5, 0.5), "tie"
            else:
                labels, preference = ((1.0, 0.0), "image_0") if chosen_first else ((0.0, 1.0), "image_1")
            models = (row["model_chosen"], row["model_rejected"])
            out.append(
                {
                    "caption": prompt_text(bundle.prompt),
                    "image_0_uid": first,
                    "image_1_uid": second,
                    "label_0": labels[0],
                    "label_1": labels[1],
                    "preference": preference,
                    "p_0": p_0,
                    "model_0": models[0] if chosen_first else models[1],
                    "model_1": models[1] if chosen_first else models[0],
                    "is_tie": row["is_tie"],
                    "n_judgments": row["n_judgments"],
                    "agreement": row["agreement"],
                    "source": row["source"],
                    "item_id": row["item_id"],
                    "campaign": row["campaign"],
                }
            )
        return out


def _features_metadata() -> bytes:
    """The `datasets` features of the Parquet layout (schema metadata key `huggingface`)."""
    features: dict[str, Any] = {"image_0": {"_type": "Image"}, "image_1": {"_type": "Image"}}
    for name, dtype in SCALAR_COLUMNS:
        features[name] = {"dtype": dtype, "_type": "Value"}
    return json.dumps({"info": {"features": features}}).encode()


def _arrow_schema() -> Any:
    import pyarrow as pa

    types = {"string": pa.string(), "float64": pa.float64(), "bool": pa.bool_(), "int64": pa.int64()}
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    fields = [("image_0", image), ("image_1", image)] + [(name, types[dtype]) for name, dtype in SCALAR_COLUMNS]
    return pa.schema(fields, metadata={b"huggingface": _features_metadata()})


def _file_name(sha256: str, content_type: str) -> str:
    return f"{IMAGES_FOLDER}/{sha256}.{EXTENSION[content_type]}"


def _read(name: str) -> bytes:
    with storages["default"].open(name, "rb") as handle:
        return bytes(handle.read())


def _rows(
    filters: ExportFilters, options: ExportOptions, on_item: Callable[[int], None] | None
) -> Iterator[tuple[ImagePairs, list[dict[str, Any]]]]:
    with export_transaction():
        run = ExportRun(filters, replace(options, conversational=False))
        pairs = ImagePairs(run)
        for bundle, summary in run.items(["pairwise"], on_item):
            built = pairs.rows(bundle, summary)
            if built:
                yield pairs, built


def _write_parquet(folder: Path, rows: Iterator[tuple[ImagePairs, list[dict[str, Any]]]]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _arrow_schema()
    count, batch = 0, []
    with pq.ParquetWriter(str(folder / PARQUET_NAME), schema, compression="zstd") as writer:
        for pairs, built in rows:
            for row in built:
                for side in ("image_0", "image_1"):
                    name, content_type = pairs.image(row[f"{side}_uid"])
                    row[side] = {"bytes": _read(name), "path": _file_name(row[f"{side}_uid"], content_type)}
                batch.append(row)
            if len(batch) >= PARQUET_BATCH_ROWS:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                count, batch = count + len(batch), []
        if batch or not count:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            count += len(batch)
    return count


def _write_files(folder: Path, rows: Iterator[tuple[ImagePairs, list[dict[str, Any]]]]) -> int:
    (folder / IMAGES_FOLDER).mkdir()
    written: set[str] = set()
    count = 0
    with (folder / METADATA_NAME).open("w", encoding="utf-8") as metadata:
        for pairs, built in rows:
            for row in built:
                line: dict[str, Any] = {}
                for side in ("image_0", "image_1"):
                    sha256 = row[f"{side}_uid"]
                    name, content_type = pairs.image(sha256)
                    relative = _file_name(sha256, content_type)
                    if relative not in written:
                        (folder / relative).write_bytes(_read(name))
                        written.add(relative)
                    line[f"{side}_file_name"] = relative
                line.update(row)
                metadata.write(encode_row(line) + "\n")
                count += 1
    return count


CARD = """# {title}

Pairwise image preferences exported by PrefArena (`image_pairs` format, Pick-a-Pic / HPS style): {rows} pairs.

**Layout: {layout_text}**

| column | meaning |
|---|---|
| `caption` | the prompt the images answer (text; a vision prompt's images appear as `<image sha256:…>`) |
| `image_0`, `image_1` | the two images, in the item's order (not preferred-first) |
| `label_0`, `label_1` | 1 / 0 when image_0 is preferred, 0 / 1 for image_1, 0.5 / 0.5 for a tie |
| `preference` | `image_0`, `image_1` or `tie`; `p_0` is P(image_0 is better) from the judgments |
| `image_0_uid`, `image_1_uid` | sha256 of each image as stored (re-encoded, no EXIF) |
| `model_0`, `model_1`, `n_judgments`, `agreement`, `source`, `item_id`, `campaign` | provenance |

Loading it:

```python
{loading}
```

What it feeds: preference fine-tuning of text-to-image models, e.g. diffusers' Diffusion-DPO training script
(`examples/research_projects/diffusion_dpo/train_diffusion_dpo.py`, which reads `caption`, `jpg_0`/`jpg_1` and
`label_0`: rename the image columns, or point its column arguments at `image_0`/`image_1`), and reward models for
images such as ImageReward or PickScore (pairs of images with a preferred side).
"""

LAYOUT_TEXT = {
    "parquet": f"Parquet with the images embedded (`{PARQUET_NAME}`; the `datasets` Image feature: each image is a "
    "struct of `bytes` and `path`).",
    "files": f"JSONL plus image files: `{METADATA_NAME}` holds one pair a line, with `image_0_file_name` and "
    f"`image_1_file_name` paths relative to it; the images are in `{IMAGES_FOLDER}/`.",
}
LOADING = {
    "parquet": 'from datasets import load_dataset\nds = load_dataset("parquet", data_files="FOLDER/'
    + PARQUET_NAME
    + '")["train"]\nds[0]["image_0"]  # a PIL image',
    "files": 'from datasets import load_dataset\nds = load_dataset("imagefolder", data_dir="FOLDER")["train"]\n'
    'ds[0]["image_0"]  # a PIL image',
}


def export_image_pairs(
    target: Path,
    filters: ExportFilters,
    options: ExportOptions,
    *,
    layout: str = "parquet",
    title: str = "PrefArena image preferences",
    on_item: Callable[[int], None] | None = None,
) -> int:
    """Write the image_pairs export of `filters` into the folder `target` (replaced if it exists) in `layout`
    ("parquet" or "files"); returns the number of pairs."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        rows = _rows(filters, options, on_item)
        count = _write_parquet(scratch, rows) if layout == "parquet" else _write_files(scratch, rows)
        card = CARD.format(title=title, rows=count, layout_text=LAYOUT_TEXT[layout], loading=LOADING[layout])
        (scratch / "README.md").write_text(card, encoding="utf-8")
        for path in scratch.rglob("*"):
            if path.is_file():
                fsync_file(path)
        folder_publish(scratch, target)
    except BaseException:
        folder_remove(scratch)
        raise
    return count
