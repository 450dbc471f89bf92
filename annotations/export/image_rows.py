"""The `image_pairs` rows and their Parquet file: what every writer of the format shares (export/images.py).

A row is one `pairwise` pair whose two sides are stored images (text formats name an image response by its
reference `sha256:<hex>`, export/source.py `response_text`), put in the item's canonical order: `image_0` and
`image_1` (so the preferred image is not always first), `label_0` / `label_1` (1 / 0, 0 / 1, or 0.5 / 0.5 for a
tie when `include_ties`), `preference`, `p_0` (P(image_0 is better)), the models, judgment counts and agreement.
Until a writer embeds or copies them, the images are `ImageRef`s (where the bytes are stored, the file's name in
an export). Pairs where either side is not a stored image are left out.

The Parquet file (`ImagePairsSink`) embeds the images as the `datasets` Image feature (a struct of `bytes` and
`path`, declared in the schema's `huggingface` metadata), so `datasets.load_dataset("parquet", data_files=...)`
decodes them to PIL images. Snapshots, the live stream and `export_preferences` write it through this one sink.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from django.core.files.storage import storages

from annotations.export.columns import Row
from annotations.export.formats import prompt_text
from annotations.export.source import ItemBundle
from annotations.images import EXTENSION, reference_hash
from annotations.models import StoredImage

SIDES = ("image_0", "image_1")
IMAGES_FOLDER = "images"
# A row group holds at most this many pairs, or this many bytes of images, whichever comes first (the group is
# written once it passes the budget): a live stream keeps one row group in memory (images of up to
# PREFARENA_IMAGE_MAX_BYTES each), a text format's 5,000 rows would be gigabytes. Measured (benchmarks/README.md,
# "Live image_pairs export"): 16 MiB groups peak at ~140 MB above the process's baseline, 32 MiB ones at ~260 MB,
# flat from 150 to 450 MiB of images.
IMAGE_GROUP_ROWS = 64
IMAGE_GROUP_BYTES = 16 * 1024 * 1024
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


@dataclass(frozen=True)
class ImageRef:
    """A stored image as a row holds it before a writer reads its bytes."""

    storage_name: str  # the file in the `default` storage (StoredImage.storage_name)
    path: str  # its name inside an export: images/<sha256>.<ext>


def image_bytes(ref: ImageRef) -> bytes:
    with storages["default"].open(ref.storage_name, "rb") as handle:
        return bytes(handle.read())


def _text(completion: Any) -> Any:
    """A pairwise row's completion as its text (a conversational export holds it as a message list)."""
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return completion[-1].get("content")
    return completion


class ImagePairs:
    """Pairwise rows of one export pass turned into image pairs; each image's row looked up once per pass."""

    def __init__(self) -> None:
        self.refs: dict[str, ImageRef | None] = {}  # sha256 -> its file; None: no stored image has that hash

    def _resolve(self, hashes: set[str]) -> None:
        unknown = hashes - self.refs.keys()
        if not unknown:
            return
        for sha256 in unknown:
            self.refs[sha256] = None  # a text response that merely looks like a reference
        stored = StoredImage.objects.filter(sha256__in=unknown).values_list("sha256", "storage_name", "content_type")
        for sha256, name, content_type in stored:
            self.refs[sha256] = ImageRef(name, f"{IMAGES_FOLDER}/{sha256}.{EXTENSION[content_type]}")

    def rows(self, bundle: ItemBundle, pairwise: list[Row]) -> list[Row]:
        """The image pairs among one item's `pairwise` rows (as export/formats.py built them)."""
        refs = [text for text, _ in bundle.responses]
        sides = []
        for row in pairwise:
            chosen_text, rejected_text = _text(row["chosen"]), _text(row["rejected"])
            chosen, rejected = reference_hash(chosen_text), reference_hash(rejected_text)
            if chosen is not None and rejected is not None:
                sides.append((row, chosen_text, rejected_text, chosen, rejected))
        self._resolve({sha256 for side in sides for sha256 in side[3:]})
        out = []
        for row, chosen_text, rejected_text, chosen, rejected in sides:
            chosen_ref, rejected_ref = self.refs[chosen], self.refs[rejected]
            if chosen_ref is None or rejected_ref is None:
                continue
            chosen_first = refs.index(chosen_text) < refs.index(rejected_text)
            if row["is_tie"]:
                labels, preference = (0.5, 0.5), "tie"
            else:
                labels, preference = ((1.0, 0.0), "image_0") if chosen_first else ((0.0, 1.0), "image_1")
            first, second = (0, 1) if chosen_first else (1, 0)
            hashes, images = (chosen, rejected), (chosen_ref, rejected_ref)
            models = (row["model_chosen"], row["model_rejected"])
            out.append(
                {
                    "image_0": images[first],
                    "image_1": images[second],
                    "caption": prompt_text(bundle.prompt),
                    "label_0": labels[0],
                    "label_1": labels[1],
                    "preference": preference,
                    "p_0": row["p_chosen"] if chosen_first else 1.0 - row["p_chosen"],
                    "image_0_uid": hashes[first],
                    "image_1_uid": hashes[second],
                    "model_0": models[first],
                    "model_1": models[second],
                    "is_tie": row["is_tie"],
                    "n_judgments": row["n_judgments"],
                    "agreement": row["agreement"],
                    "source": row["source"],
                    "item_id": row["item_id"],
                    "campaign": row["campaign"],
                }
            )
        return out


def features_metadata() -> bytes:
    """The `datasets` features of the Parquet file (schema metadata key `huggingface`)."""
    features: dict[str, Any] = {side: {"_type": "Image"} for side in SIDES}
    for name, dtype in SCALAR_COLUMNS:
        features[name] = {"dtype": dtype, "_type": "Value"}
    return json.dumps({"info": {"features": features}}).encode()


def arrow_schema() -> Any:
    import pyarrow as pa

    types = {"string": pa.string(), "float64": pa.float64(), "bool": pa.bool_(), "int64": pa.int64()}
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    fields = [(side, image) for side in SIDES] + [(name, types[dtype]) for name, dtype in SCALAR_COLUMNS]
    return pa.schema(fields, metadata={b"huggingface": features_metadata()})


class ImagePairsSink:
    """image_pairs rows appended to a Parquet file with the images' bytes embedded, a row group per
    `rows_per_group` pairs or IMAGE_GROUP_BYTES of images; `where` is a path or a writable file (the live
    stream's buffer). The writers' sink interface: `add`, `flush`, `close`."""

    def __init__(self, where: Path | IO[bytes] | Any, *, rows_per_group: int = IMAGE_GROUP_ROWS) -> None:
        import pyarrow.parquet as pq

        self.schema = arrow_schema()
        # The images' bytes are PNG, JPEG or WebP already: zstd and a dictionary gain nothing on them and cost a
        # copy and CPU (measured: writing 30 MiB of PNGs took 5x longer, for the same size); the other columns
        # are compressed as every format's.
        images = [f"{side}.bytes" for side in SIDES]
        others = [name for name in self.schema.names if name not in SIDES] + [f"{side}.path" for side in SIDES]
        self.writer = pq.ParquetWriter(
            str(where) if isinstance(where, Path) else where,
            self.schema,
            compression={**dict.fromkeys(images, "none"), **dict.fromkeys(others, "zstd")},
            use_dictionary=others,
        )
        self.rows_per_group = rows_per_group
        self.batch: list[Row] = []
        self.batch_bytes = 0

    def add(self, rows: list[Row]) -> None:
        for row in rows:
            embedded = dict(row)
            for side in SIDES:
                ref: ImageRef = row[side]
                data = image_bytes(ref)
                embedded[side] = {"bytes": data, "path": ref.path}
                self.batch_bytes += len(data)
            self.batch.append(embedded)
        if len(self.batch) >= self.rows_per_group or self.batch_bytes >= IMAGE_GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if self.batch:
            self.writer.write_table(pa.Table.from_pylist(self.batch, schema=self.schema))
            self.batch, self.batch_bytes = [], 0

    def close(self) -> None:
        # An empty export is a file with the schema (and its features) and no row group, as every format's:
        # pyarrow and pandas read zero rows; `datasets.load_dataset` 5.2 refuses any Parquet file without rows
        # ("corresponds to no data"; an empty row group fails worse, "BatchSize must be greater than 0").
        self.flush()
        self.writer.close()
