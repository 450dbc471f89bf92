"""Preference exports: filters and options (filters.py), reading item bundles (source.py), binarising rankings
and ratings into pairs (pairs.py), row formats (formats.py), and JSONL/Parquet writers and the live JSONL and
Parquet streams (writers.py)."""

from annotations.export.filters import (
    FILE_EXTENSIONS,
    FORMATS,
    ExportFilters,
    ExportOptions,
    filters_parse,
    format_check,
    formats_parse,
    options_parse,
)
from annotations.export.writers import ExportRun, export_files, file_sha256, stream_jsonl, stream_parquet

__all__ = [
    "FILE_EXTENSIONS",
    "FORMATS",
    "ExportFilters",
    "ExportOptions",
    "ExportRun",
    "export_files",
    "file_sha256",
    "filters_parse",
    "format_check",
    "formats_parse",
    "options_parse",
    "stream_jsonl",
    "stream_parquet",
]
