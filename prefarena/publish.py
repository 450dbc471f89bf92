"""Publishing a folder atomically: write into a scratch folder, hash and fsync, rename into place.

Dataset snapshots (annotations/snapshots.py) and trained weights (workers/training/runner.py) are both written this
way, so a reader sees a finished folder or none: every file is made durable (fsync) and hashed, then the
scratch folder is renamed onto its final name in one `os.replace` (atomic on one filesystem). A folder already
at the final name was left by an attempt that died between its rename and the database row recording it; it
is removed first (the row, written after the rename, decides what is published).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path
from typing import Any

BLOCK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def files_hash(folder: Path) -> dict[str, dict[str, Any]]:
    """Every file under the folder (relative name -> bytes and sha256), each fsynced first."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        fsync_file(path)
        files[path.relative_to(folder).as_posix()] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    return files


def folder_read_only(folder: Path) -> None:
    """Files of a published folder are read-only (a snapshot never changes once written)."""
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


def folder_remove(folder: Path) -> None:
    """Remove a folder, read-only files included; a missing one is fine."""
    if not folder.exists():
        return
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(stat.S_IWUSR | stat.S_IRUSR)
    shutil.rmtree(folder, ignore_errors=True)


def folder_publish(scratch: Path, final: Path) -> None:
    """Rename the finished scratch folder onto `final` (after removing a stale one), then fsync the parent so
    the rename itself survives a crash. Call after every file in it is written and fsynced."""
    folder_remove(final)
    os.replace(scratch, final)
    descriptor = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
