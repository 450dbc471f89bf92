"""prefarena/publish.py: the one way snapshots and trained weights reach their final folder."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from prefarena import publish


def scratch_with(tmp_path: Path, files: dict[str, bytes]) -> Path:
    scratch = tmp_path / ".tmp-1"
    for name, content in files.items():
        (scratch / name).parent.mkdir(parents=True, exist_ok=True)
        (scratch / name).write_bytes(content)
    return scratch


def test_files_are_hashed_by_relative_name(tmp_path):
    scratch = scratch_with(tmp_path, {"a.jsonl": b"x" * 3, "sub/b.bin": b""})
    assert publish.files_hash(scratch) == {
        "a.jsonl": {"bytes": 3, "sha256": hashlib.sha256(b"xxx").hexdigest()},
        "sub/b.bin": {"bytes": 0, "sha256": hashlib.sha256(b"").hexdigest()},
    }


def test_publishing_replaces_a_stale_read_only_folder_and_leaves_no_scratch(tmp_path):
    final = tmp_path / "snapshot-1"
    stale = scratch_with(tmp_path, {"old.jsonl": b"old", "deep/old.bin": b"old"})
    publish.folder_read_only(stale)
    os.replace(stale, final)  # what an attempt that died before recording its folder left behind
    scratch = scratch_with(tmp_path, {"new.jsonl": b"new"})
    publish.folder_read_only(scratch)

    publish.folder_publish(scratch, final)

    assert sorted(p.name for p in final.iterdir()) == ["new.jsonl"]
    assert (final / "new.jsonl").read_bytes() == b"new"
    assert not stat.S_IMODE((final / "new.jsonl").stat().st_mode) & stat.S_IWUSR  # still read-only
    assert not scratch.exists()


def test_removing_a_read_only_tree_and_a_missing_one(tmp_path):
    folder = scratch_with(tmp_path, {"a": b"1", "b/c": b"2"})
    publish.folder_read_only(folder)
    publish.folder_remove(folder)
    assert not folder.exists()
    publish.folder_remove(tmp_path / "never-made")  # no error
