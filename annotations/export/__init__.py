"""Preference exports: filters and options (filters.py), reading item bundles (source.py), binarising rankings
and ratings into pairs (pairs.py), row formats (formats.py; image_pairs: image_rows.py, its folder export
images.py), and JSONL/Parquet writers and the live JSONL and Parquet streams (writers.py)."""

from annotations.export.filters import (
    EXPORT_FORMATS,
    FILE_EXTENSIONS,
    FORMATS,
    IMAGE_PAIRS,
    ExportFilters,
    ExportOptions,
    filters_parse,
    format_check,
    format_extension_check,
    format_extensions,
    formats_parse,
    layout_parse,
    options_parse,
)
from annotations.export.writers import ExportRun, export_files, file_sha256, stream_jsonl, stream_parquet

__all__ = [
    "EXPORT_FORMATS",
    "FILE_EXTENSIONS",
    "FORMATS",
    "IMAGE_PAIRS",
    "ExportFilters",
    "ExportOptions",
    "ExportRun",
    "export_files",
    "file_sha256",
    "filters_parse",
    "format_check",
    "format_extension_check",
    "format_extensions",
    "formats_parse",
    "layout_parse",
    "options_parse",
    "stream_jsonl",
    "stream_parquet",
]
