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
import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from toolkit.errors import QuarantineError, RecordError, processing
from toolkit.manifest import REJECTED, read_manifest
from toolkit.outputs import check_output
from toolkit.paths import (
    NotRegularFileError,
    atomic_write_json,
    file_kind,
    inside_problem,
    open_regular,
    read_regular,
    relative_problem,
    root_problem,
)

RECORD = "quarantine.json"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


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
    why = root_problem(manifest.attrs.get("root"), must_exist=False)
    if why is not None:  # none recorded: never "." (wherever the command happens to run)
        raise RecordError(Path(run_dir), "metadata root", why)
    root = Path(manifest.attrs["root"])
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
    for row in manifest[manifest["status"] == REJECTED].itertuples(index=False):
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
    atomic_write_json(record_path, record)  # the plan is on disk before the first file moves
    _move_all(record, record_path, entries, root, into, moved=True)
    return QuarantineRecord(record_path, len(entries), skipped)


def restore_quarantined(into: Path) -> int:
    """Move every file of a quarantine back to its original path; returns how many."""
    into = Path(into)
    record_path = into / RECORD
    record = read_record(record_path)
    root = Path(record["root"])
    moved = [e for e in record["files"] if e["moved"]]
    for entry in moved:  # every file is checked before the first one moves
        src = into / entry["path"]
        if src.is_symlink() or not src.is_file():
            kind = file_kind(src.lstat().st_mode) if os.path.lexists(src) else "missing"
            raise QuarantineError(src, f"is {kind}, not the file quarantine moved; none restored")
    clashes = [e["path"] for e in moved if (root / e["path"]).exists()]
    if clashes:
        raise QuarantineError(
            root / clashes[0], f"exists again; restoring would overwrite it ({len(clashes)} such)"
        )
    _move_all(record, record_path, moved, into, root, moved=False)
    done = record_path.with_name(f"{RECORD}.restored-{datetime.now(UTC):%Y%m%dT%H%M%S}")
    record_path.rename(done)
    return len(moved)


def read_record(record_path: Path) -> dict[str, Any]:
    """quarantine.json, checked whole before anything in it is used: a RecordError names the
    first entry that no quarantine writes (a path that is absolute, climbs out with `..` or
    leads through a link outside its folder, a hash that is not SHA-256 hex, a duplicate)."""
    try:
        record = json.loads(read_regular(record_path).decode("utf-8"))
    except FileNotFoundError:
        raise QuarantineError(record_path, "no quarantine record here") from None
    except NotRegularFileError as exc:
        raise RecordError(record_path, "file", exc.strerror or str(exc)) from None
    except OSError as exc:
        raise RecordError(record_path, "file", f"cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:  # not UTF-8, or not JSON
        raise RecordError(record_path, "file", f"not a JSON record: {exc}") from None
    if not isinstance(record, dict) or not isinstance(record.get("files"), list):
        raise RecordError(record_path, "files", "expected an object with a list of files")
    why = root_problem(record.get("root"))
    if why is not None:
        raise RecordError(record_path, "root", why)
    seen: set[str] = set()
    for i, entry in enumerate(record["files"]):
        key = f"files[{i}]"
        if not isinstance(entry, dict):
            raise RecordError(record_path, key, f"expected an object, got {entry!r:.80}")
        why = _entry_problem(entry, record["root"], record_path.parent, seen)
        if why is not None:
            field_name, problem = why
            raise RecordError(record_path, f"{key}.{field_name}", problem)
        seen.add(entry["path"])
    return record


def _entry_problem(
    entry: dict[str, Any], root: str, into: Path, seen: set[str]
) -> tuple[str, str] | None:
    """(field, why) for the first field of a record entry that no quarantine writes."""
    rel = entry.get("path")
    why = relative_problem(rel)
    if why is not None:
        return "path", why
    for base in (root, into):  # both ends of the move stay inside their folders
        why = inside_problem(base, rel)
        if why is not None:
            return "path", why
    if rel in seen:
        return "path", f"{rel!r} appears twice"
    if not isinstance(entry.get("sha256"), str) or not _SHA256_HEX.fullmatch(entry["sha256"]):
        return "sha256", f"expected 64 hex digits, got {entry.get('sha256')!r:.80}"
    if not isinstance(entry.get("moved"), bool):
        return "moved", f"expected true or false, got {entry.get('moved')!r:.80}"
    return None


def _why_not_movable(root: Path, row: Any) -> str:
    if not row.is_valid_name:
        return "its name is not valid UTF-8; move it by hand"
    src = root / row.path
    if inside_problem(root, row.path) is not None:  # a class folder now a link out of the root
        return "leads outside the data root; not moved"
    if not src.is_file() or src.is_symlink():
        return "not a regular file (links and special files stay where they are)"
    if row.sha256 is None or not isinstance(row.sha256, str):
        return "it could not be read when scanned"
    try:
        if _sha256(src) != row.sha256:
            return "changed since the scan; validate again first"
    except OSError as exc:  # swapped for a FIFO or a folder since the check above
        return f"cannot read: {exc.strerror or exc}"
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
        atomic_write_json(record_path, record)


def _move_verified(src: Path, dst: Path, sha256: str) -> None:
    if os.path.lexists(dst):
        raise QuarantineError(dst, "already exists; nothing is overwritten")
    try:
        digest = _sha256(src)
    except OSError as exc:  # a FIFO or a folder put in its place: never waited on
        raise QuarantineError(src, f"cannot read: {exc.strerror or exc}; left in place") from None
    if digest != sha256:
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
    with open_regular(path) as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
