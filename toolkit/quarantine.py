"""The tutorial's clean-up, undoable: move rejected files aside, and put them back.

Validation never touches a user's file. A user who wants the rejected files out of the
class folders asks for it explicitly with `toolkit quarantine`; every move is written to
`quarantine.json` first, and `toolkit restore` uses that record to put each file back,
byte for byte (checked by SHA-256), never overwriting anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from toolkit.errors import QuarantineError, processing
from toolkit.manifest import atomic_write_text, read_manifest
from toolkit.outputs import check_output

RECORD = "quarantine.json"


@dataclass
class QuarantineRecord:
    """What one quarantine did: the record file, files moved, and files it left alone."""

    path: Path
    n_moved: int
    skipped: list[str] = field(default_factory=list)


def quarantine_rejected(run_dir: Path, into: Path) -> QuarantineRecord:
    """Move the rejected files of a validate run into `into`, keeping their relative paths."""
    manifest = read_manifest(Path(run_dir))
    if "status" not in manifest:
        raise QuarantineError(Path(run_dir), "the manifest has no verdicts: run `validate` first")
    root = Path(manifest.attrs.get("root") or "")
    if not root.is_dir():
        raise QuarantineError(root, "the data folder of this run is gone")
    into = Path(into)
    # moving files into the data folder, the run folder or a folder holding either loses them
    check_output(into, [root], option="--into")
    check_output(into, [Path(run_dir)], option="--into", what="the run folder")
    record_path = into / RECORD
    if record_path.exists():
        raise QuarantineError(record_path, "already holds a quarantine: restore it first")
    into.mkdir(parents=True, exist_ok=True)

    entries: list[dict[str, Any]] = []
    skipped: list[str] = []
    for row in manifest[manifest["status"] == "rejected"].itertuples(index=False):
        reason = _why_not_movable(root, row)
        if reason:
            skipped.append(f"{row.path}: {reason}")
            continue
        entries.append(
            {"path": row.path, "sha256": row.sha256, "reasons": row.reasons, "moved": False}
        )
    record: dict[str, Any] = {
        "root": str(root.resolve()),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": entries,
    }
    _save(record_path, record)  # the plan is on disk before the first file moves
    _move_all(record, record_path, entries, root, into, moved=True)
    return QuarantineRecord(record_path, len(entries), skipped)


def restore_quarantined(into: Path) -> int:
    """Move every file of a quarantine back to its original path; returns how many."""
    into = Path(into)
    record_path = into / RECORD
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise QuarantineError(record_path, "no quarantine record here") from None
    root = Path(record["root"])
    moved = [e for e in record["files"] if e["moved"]]
    clashes = [e["path"] for e in moved if (root / e["path"]).exists()]
    if clashes:
        raise QuarantineError(
            root / clashes[0], f"exists again; restoring would overwrite it ({len(clashes)} such)"
        )
    _move_all(record, record_path, moved, into, root, moved=False)
    done = record_path.with_name(f"{RECORD}.restored-{datetime.now(UTC):%Y%m%dT%H%M%S}")
    record_path.rename(done)
    return len(moved)


def _why_not_movable(root: Path, row: Any) -> str:
    if not row.is_valid_name:
        return "its name is not valid UTF-8; move it by hand"
    src = root / row.path
    if not src.is_file() or src.is_symlink():
        return "not a regular file (links and special files stay where they are)"
    if row.sha256 is None or not isinstance(row.sha256, str):
        return "it could not be read when scanned"
    if _sha256(src) != row.sha256:
        return "changed since the scan; validate again first"
    return ""


def _move_all(
    record: dict[str, Any],
    record_path: Path,
    entries: list[dict[str, Any]],
    src_root: Path,
    dst_root: Path,
    *,
    moved: bool,
) -> None:
    """Move each entry from src_root to dst_root, saving the record after every file."""
    for entry in entries:
        src, dst = src_root / entry["path"], dst_root / entry["path"]
        with processing(src):  # a crash names the file it was moving
            dst.parent.mkdir(parents=True, exist_ok=True)
            _move_verified(src, dst, entry["sha256"])
        entry["moved"] = moved
        _save(record_path, record)


def _move_verified(src: Path, dst: Path, sha256: str) -> None:
    if dst.exists():
        raise QuarantineError(dst, "already exists; nothing is overwritten")
    if _sha256(src) != sha256:
        raise QuarantineError(src, "its bytes differ from the record; left in place")
    try:
        os.link(src, dst)  # same file system: the new name exists before the old one goes
        os.unlink(src)
    except OSError:
        shutil.copy2(src, dst)
        if _sha256(dst) != sha256:
            dst.unlink()
            raise QuarantineError(dst, "copy differs from the original; original kept") from None
        os.unlink(src)


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _save(path: Path, record: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
