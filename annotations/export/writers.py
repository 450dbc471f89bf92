"""Running an export: one pass over item bundles feeding JSONL and Parquet streams, JSONL files and Parquet files
(image_pairs: Parquet with the images embedded, export/image_rows.py)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from annotations.export.fast import fast_path_applies, pairwise_lines
from annotations.export.filters import IMAGE_PAIRS, ExportFilters, ExportOptions
from annotations.export.formats import Row, arrow_schema, rows_build
from annotations.export.image_rows import IMAGE_GROUP_ROWS, ImagePairs, ImagePairsSink
from annotations.export.source import (
    FORMAT_NEEDS,
    J_SOURCE,
    ItemBundle,
    ItemSummary,
    adjudications_for,
    bundles,
    campaign_infos,
    export_transaction,
    reliability_for,
    summarise,
    summary_passes,
)
from prefarena.publish import file_sha256  # noqa: F401 - the package's public name (annotations.export)

# Rows per yielded chunk of the live stream, and per Parquet row group batch. Under ASGI each chunk costs a
# thread hop (api_datasets.py `_chunks_async`): 256 KB chunks took a 1M-row export over daphne from ~70,000
# to ~94,000 rows/s against 64 KB ones, for a few hundred KB more memory.
STREAM_ROWS_PER_CHUNK = 4000
STREAM_CHUNK_BYTES = 256 * 1024  # characters, ~bytes for mostly-ASCII text
PARQUET_BATCH_ROWS = 5000
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
encode_row: Callable[[Any], str] = _ENCODER.encode


class ExportRun:
    """The item-level part of an export: reliabilities, flagged judges, per-item filters, statistics."""

    def __init__(self, filters: ExportFilters, options: ExportOptions) -> None:
        self.filters, self.options = filters, options
        self.campaigns = campaign_infos(filters)
        self.reliability = reliability_for(filters)
        self.flagged = (
            self.reliability.flagged(threshold=options.flag_threshold, min_evidence=options.flag_min_evidence)
            if filters.exclude_flagged
            else set()
        )
        self.items_read = 0
        self.items_kept = 0
        self.judgments_by_source: Counter[str] = Counter()
        self.agreement_sum = 0.0
        self.agreement_n = 0
        self.margin_sum = 0.0
        self.margin_n = 0
        self.dropped_identical_pairs: Counter[str] = Counter()  # per format: rows whose chosen == rejected
        self.adjudications = adjudications_for(filters)  # reviewers' labels replace the resolved ones
        self.items_adjudicated = 0
        self.image_pairs = ImagePairs()
        # The last item's pairwise rows: image_pairs is made from them, so a pass writing both formats builds
        # (and counts the identical pairs of) each item's pairs once.
        self.last_pairwise: tuple[ItemBundle, list[Row]] | None = None

    def rows(self, fmt: str, bundle: ItemBundle, summary: ItemSummary) -> list[Row]:
        """The item's rows of `fmt` (formats.py `rows_build`; image_pairs: image_rows.py from the pairwise rows),
        counting the pairs left out as identical."""
        if fmt == IMAGE_PAIRS:
            return self.image_pairs.rows(bundle, self.rows("pairwise", bundle, summary))
        if fmt == "pairwise" and self.last_pairwise is not None and self.last_pairwise[0] is bundle:
            return self.last_pairwise[1]
        rows, dropped = rows_build(fmt, bundle, summary, self.options)
        if dropped:
            self.dropped_identical_pairs[fmt] += dropped
        if fmt == "pairwise":
            self.last_pairwise = (bundle, rows)
        return rows

    def items(
        self, formats: Iterable[str], on_item: Callable[[int], None] | None = None
    ) -> Iterator[tuple[ItemBundle, ItemSummary]]:
        """Bundles that pass every filter, with their summaries; `on_item(items_read)` after each read."""
        needs = frozenset().union(*(FORMAT_NEEDS[fmt] for fmt in formats))
        for bundle in bundles(self.filters, self.campaigns, needs):
            self.items_read += 1
            summary = summarise(bundle, self.options, self.reliability, self.flagged, self.adjudications)
            if on_item is not None:
                on_item(self.items_read)
            if summary is None or not summary_passes(summary, self.filters):
                continue
            self.items_kept += 1
            if summary.label_source == "adjudicated":
                self.items_adjudicated += 1
            for judgment in bundle.judgments:
                self.judgments_by_source[judgment[J_SOURCE]] += 1
            if summary.agreement is not None:
                self.agreement_sum += summary.agreement
                self.agreement_n += 1
            if summary.margin is not None:
                self.margin_sum += summary.margin
                self.margin_n += 1
            yield bundle, summary

    def stats(self) -> dict[str, Any]:
        measured = {k: v for k, v in self.reliability.reliability.items() if self.reliability.evidence.get(k)}
        return {
            "items_read": self.items_read,
            "items_exported": self.items_kept,
            "judgments": sum(self.judgments_by_source.values()),
            "mean_agreement": self.agreement_sum / self.agreement_n if self.agreement_n else None,
            "mean_margin": self.margin_sum / self.margin_n if self.margin_n else None,
            "judges_measured": len(measured),
            "mean_judge_reliability": sum(measured.values()) / len(measured) if measured else None,
            "judges_flagged": len(self.flagged),
            "dropped_identical_pairs": sum(self.dropped_identical_pairs.values()),
            "adjudicated_items": self.items_adjudicated,
        }


def stream_jsonl(
    fmt: str,
    filters: ExportFilters,
    options: ExportOptions,
    *,
    rows_per_chunk: int = STREAM_ROWS_PER_CHUNK,
    fast: bool | None = None,
) -> Generator[bytes, None, None]:
    """JSONL of one format, in chunks of ~rows_per_chunk lines (or ~STREAM_CHUNK_BYTES); one transaction.

    `fast` None picks the fast pairwise path (export/fast.py) where it applies; False forces the general
    path (items -> summaries -> row dicts -> encoder); True asks for the fast path where it applies.
    """
    if fmt == IMAGE_PAIRS:  # callers check first (filters.py `format_extension_check`): a 400, not this
        raise ValueError(f"{IMAGE_PAIRS} is written as Parquet only")
    with export_transaction():
        run = ExportRun(filters, options)
        if fast is not False and fast_path_applies(fmt, run.campaigns):
            lines_in = pairwise_lines(
                filters,
                options,
                run.campaigns,
                run.reliability,
                run.flagged,
                encode_row,
                run.dropped_identical_pairs,
                run.adjudications,
            )
        else:
            lines_in = (
                encode_row(row) for bundle, summary in run.items([fmt]) for row in run.rows(fmt, bundle, summary)
            )
        lines: list[str] = []
        size = 0
        for line in lines_in:
            lines.append(line)
            size += len(line)
            if len(lines) >= rows_per_chunk or size >= STREAM_CHUNK_BYTES:
                lines.append("")
                yield "\n".join(lines).encode()
                lines, size = [], 0
        if lines:
            lines.append("")
            yield "\n".join(lines).encode()


class ParquetSink:
    """Rows of one format appended in batches (one row group each) to a Parquet file with the format's schema.

    `where` is a path, or the live stream's `ChunkBuffer`.
    """

    def __init__(
        self, where: Path | ChunkBuffer, fmt: str, options: ExportOptions, *, rows_per_group: int = PARQUET_BATCH_ROWS
    ) -> None:
        import pyarrow.parquet as pq

        self.schema = arrow_schema(fmt, options)
        self.writer = pq.ParquetWriter(
            str(where) if isinstance(where, Path) else where, self.schema, compression="zstd"
        )
        self.rows_per_group = rows_per_group
        self.batch: list[Row] = []

    def add(self, rows: list[Row]) -> None:
        self.batch.extend(rows)
        if len(self.batch) >= self.rows_per_group:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if self.batch:
            self.writer.write_table(pa.Table.from_pylist(self.batch, schema=self.schema))
            self.batch = []

    def close(self) -> None:
        self.flush()
        self.writer.close()


class ChunkBuffer:
    """A write-only file for pyarrow's ParquetWriter that keeps what it was given until `take()` hands it over.

    The writer writes the magic bytes when it opens, a whole row group per `write_table`, and the footer (the
    row groups' offsets and statistics) when it closes, so what `take()` returns after each of these is a
    finished piece of the file: the live stream sends it and keeps nothing.
    """

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        chunk = bytes(data)  # pyarrow hands over a buffer it reuses
        self.parts.append(chunk)
        self.position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts = []
        return data


def parquet_sink(
    where: Path | ChunkBuffer, fmt: str, options: ExportOptions, *, rows_per_group: int = PARQUET_BATCH_ROWS
) -> ParquetSink | ImagePairsSink:
    """The Parquet writer of a format: its fixed schema, or image_pairs' with the images embedded (whose row
    groups are smaller: IMAGE_GROUP_ROWS pairs at most, image_rows.py)."""
    if fmt == IMAGE_PAIRS:
        return ImagePairsSink(where, rows_per_group=min(rows_per_group, IMAGE_GROUP_ROWS))
    return ParquetSink(where, fmt, options, rows_per_group=rows_per_group)


def stream_parquet(
    fmt: str, filters: ExportFilters, options: ExportOptions, *, rows_per_group: int = PARQUET_BATCH_ROWS
) -> Generator[bytes, None, None]:
    """A Parquet file of one format, sent as it is written: the header, then each row group of ~rows_per_group
    rows as soon as it is full, then the footer; one transaction, one row group in memory at a time."""
    buffer = ChunkBuffer()
    with export_transaction():
        run = ExportRun(filters, options)
        sink = parquet_sink(buffer, fmt, options, rows_per_group=rows_per_group)
        try:
            yield buffer.take()  # the magic bytes: the response starts before the first row group is read
            for bundle, summary in run.items([fmt]):
                rows = run.rows(fmt, bundle, summary)
                if not rows:
                    continue
                sink.add(rows)  # writes a row group when the batch is full
                if buffer.parts:
                    yield buffer.take()
        finally:
            sink.close()  # on an early close too: the writer's native resources are released
        yield buffer.take()


class JsonlSink:
    def __init__(self, path: Path) -> None:
        self.handle: IO[str] = path.open("w", encoding="utf-8", newline="\n")

    def add(self, rows: list[Row]) -> None:
        for row in rows:
            self.handle.write(encode_row(row))
            self.handle.write("\n")

    def close(self) -> None:
        self.handle.close()


def export_files(
    outputs: dict[str, list[Path]],
    filters: ExportFilters,
    options: ExportOptions,
    *,
    on_item: Callable[[int], None] | None = None,
) -> tuple[dict[str, int], ExportRun]:
    """Write every format of `outputs` ({format: [paths ending .jsonl or .parquet]}; image_pairs: .parquet only)
    in one pass.

    Returns rows per format and the run (statistics). Paths are created or truncated.
    """
    if any(p.suffix != ".parquet" for p in outputs.get(IMAGE_PAIRS, [])):
        raise ValueError(f"{IMAGE_PAIRS} is written as Parquet only, not {[p.name for p in outputs[IMAGE_PAIRS]]}")
    sinks: dict[str, list[Any]] = {}
    for fmt, paths in outputs.items():
        sinks[fmt] = [parquet_sink(p, fmt, options) if p.suffix == ".parquet" else JsonlSink(p) for p in paths]
    rows: Counter[str] = Counter({fmt: 0 for fmt in outputs})
    try:
        with export_transaction():
            run = ExportRun(filters, options)
            for bundle, summary in run.items(outputs, on_item):
                for fmt, fmt_sinks in sinks.items():
                    built = run.rows(fmt, bundle, summary)
                    if built:
                        rows[fmt] += len(built)
                        for sink in fmt_sinks:
                            sink.add(built)
    finally:
        for fmt_sinks in sinks.values():
            for sink in fmt_sinks:
                sink.close()
    return dict(rows), run
