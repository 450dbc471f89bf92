"""The `image_pairs` export as a folder (`manage.py export_preferences --format image_pairs --output DIR`).

Pairwise preferences between two images, Pick-a-Pic / HPS style: the rows of export/image_rows.py (one per
resolved pair of image responses: pairwise items, and ranked or rated items binarised by `pair_mode`).

Two layouts of a folder, written into a scratch folder and renamed into place (`prefarena.publish`):
- `parquet`: `image_pairs.parquet` with the images' bytes embedded as the `datasets` Image feature (a struct of
  `bytes` and `path`, declared in the schema's `huggingface` metadata), so `datasets.load_dataset("parquet",
  data_files=...)` decodes them to PIL images; the same file a snapshot holds and the live export sends;
- `files`: `metadata.jsonl` with `image_0_file_name` / `image_1_file_name` relative paths and the images under
  `images/` beside it, the layout of `datasets`' imagefolder loader (`load_dataset("imagefolder", data_dir=...)`
  decodes `image_0` and `image_1`); any JSONL reader gets the paths. Only this command writes it: the API and
  snapshots hand out single files.
Both have a README.md dataset card saying which layout it is and what it feeds.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from annotations.export.filters import IMAGE_LAYOUTS, IMAGE_PAIRS, ExportFilters, ExportOptions
from annotations.export.image_rows import IMAGES_FOLDER, SIDES, ImagePairsSink, ImageRef, image_bytes
from annotations.export.source import export_transaction
from annotations.export.writers import ExportRun, encode_row
from prefarena.publish import folder_publish, folder_remove, fsync_file

LAYOUTS = IMAGE_LAYOUTS
PARQUET_NAME = f"{IMAGE_PAIRS}.parquet"
METADATA_NAME = "metadata.jsonl"


def _rows(
    filters: ExportFilters, options: ExportOptions, on_item: Callable[[int], None] | None
) -> Iterator[list[dict[str, Any]]]:
    with export_transaction():
        run = ExportRun(filters, options)
        for bundle, summary in run.items([IMAGE_PAIRS], on_item):
            built = run.rows(IMAGE_PAIRS, bundle, summary)
            if built:
                yield built


def _write_parquet(folder: Path, rows: Iterator[list[dict[str, Any]]]) -> int:
    count = 0
    sink = ImagePairsSink(folder / PARQUET_NAME)
    try:
        for built in rows:
            sink.add(built)
            count += len(built)
    finally:
        sink.close()
    return count


def _write_files(folder: Path, rows: Iterator[list[dict[str, Any]]]) -> int:
    (folder / IMAGES_FOLDER).mkdir()
    written: set[str] = set()
    count = 0
    with (folder / METADATA_NAME).open("w", encoding="utf-8") as metadata:
        for built in rows:
            for row in built:
                line: dict[str, Any] = {}
                for side in SIDES:
                    ref: ImageRef = row[side]
                    if ref.path not in written:
                        (folder / ref.path).write_bytes(image_bytes(ref))
                        written.add(ref.path)
                    line[f"{side}_file_name"] = ref.path
                line.update((key, value) for key, value in row.items() if key not in SIDES)
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
