"""quarantine moves rejected files aside with a record; restore puts back every byte."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import snapshot
from corpus import write_clean_folder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit.cli import main
from toolkit.errors import QuarantineError, RecordError
from toolkit.quarantine import quarantine_rejected, restore_quarantined


@pytest.fixture
def validated(tmp_path: Path, tiny_profile: Path) -> tuple[Path, Path]:
    root = tmp_path / "data"
    write_clean_folder(root, n_per_class=4)
    (root / "happy" / "broken.jpg").write_bytes(b"<html>403</html>")
    (root / "sad" / "empty.jpg").write_bytes(b"")
    run = tmp_path / "run"
    assert main(["validate", str(root), "-p", str(tiny_profile), "-o", str(run)]) == 0
    return root, run


def test_round_trip_restores_every_byte(validated: tuple[Path, Path], tmp_path: Path) -> None:
    root, run = validated
    before = snapshot(root)
    into = tmp_path / "q"
    assert main(["quarantine", str(run), "--into", str(into)]) == 0
    assert not (root / "happy" / "broken.jpg").exists()
    assert (into / "happy" / "broken.jpg").read_bytes() == b"<html>403</html>"
    record = json.loads((into / "quarantine.json").read_text())
    assert sorted(e["path"] for e in record["files"]) == ["happy/broken.jpg", "sad/empty.jpg"]
    assert len(snapshot(root)) == len(before) - 2
    assert main(["restore", str(into)]) == 0
    assert snapshot(root) == before


def test_quarantine_refuses_a_file_changed_since_the_scan(
    validated: tuple[Path, Path], tmp_path: Path
) -> None:
    root, run = validated
    (root / "happy" / "broken.jpg").write_bytes(b"now something else")
    record = quarantine_rejected(run, tmp_path / "q")
    assert record.n_moved == 1
    assert record.skipped == ["happy/broken.jpg: changed since the scan; validate again first"]
    assert (root / "happy" / "broken.jpg").exists()


def test_restore_never_overwrites(validated: tuple[Path, Path], tmp_path: Path) -> None:
    root, run = validated
    quarantine_rejected(run, tmp_path / "q")
    (root / "happy" / "broken.jpg").write_bytes(b"a new file with the old name")
    with pytest.raises(QuarantineError, match="exists again"):
        restore_quarantined(tmp_path / "q")
    assert (root / "happy" / "broken.jpg").read_bytes() == b"a new file with the old name"


def test_quarantine_needs_a_validated_run(tmp_path: Path, clean_root: Path) -> None:
    main(["scan", str(clean_root), "-o", str(tmp_path / "s"), "--no-faces"])
    assert main(["quarantine", str(tmp_path / "s"), "--into", str(tmp_path / "q")]) == 2
    assert main(["restore", str(tmp_path / "nothing")]) == 2


# --------------------------------------------------------------------------------------
# quarantine.json read back is untrusted input (issue 26, item 2)


def _quarantined(validated: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path, Path]:
    """Quarantine the two rejected files; returns (root, into, a secret file outside both)."""
    root, run = validated
    into = tmp_path / "q" / "inner"  # deeper than the root: `..` paths lead to two places
    assert main(["quarantine", str(run), "--into", str(into)]) == 0
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"not yours to move")
    return root, into, outside / "secret.jpg"


def _edit_record(into: Path, edit: Callable[[dict], object]) -> None:
    record = json.loads((into / "quarantine.json").read_text())
    edit(record)
    (into / "quarantine.json").write_text(json.dumps(record))


def _entry(secret: Path, path: str) -> dict:
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    return {"path": path, "sha256": digest, "reasons": "readable", "moved": True}


#: record edit -> the key the refusal names
CRAFTED: dict[str, tuple[Callable[[dict, Path], object], str]] = {
    "a path climbing out with ..": (
        lambda r, s: r["files"].append(_entry(s, "../../outside/secret.jpg")),
        "files[2].path",
    ),
    "an absolute path": (lambda r, s: r["files"].append(_entry(s, str(s))), "files[2].path"),
    "a path through a link out of the quarantine folder": (
        lambda r, s: r["files"].append(_entry(s, "link/secret.jpg")),
        "files[2].path",
    ),
    "a path with a NUL byte": (
        lambda r, s: r["files"].append(_entry(s, "happy/a\x00.jpg")),
        "files[2].path",
    ),
    "a path that is a number": (lambda r, s: r["files"][0].update(path=5), "files[0].path"),
    "a duplicate entry": (lambda r, s: r["files"].append(dict(r["files"][0])), "files[2].path"),
    "a hash that is not SHA-256": (
        lambda r, s: r["files"][1].update(sha256="abc"),
        "files[1].sha256",
    ),
    "moved that is not a boolean": (
        lambda r, s: r["files"][1].update(moved="yes"),
        "files[1].moved",
    ),
    "a relative root": (lambda r, s: r.update(root="data"), "root"),
    "a root that is gone": (lambda r, s: r.update(root=str(s.parent / "gone")), "root"),
    "a root with a NUL byte": (lambda r, s: r.update(root=r["root"] + "\x00"), "root"),
    "files that are not a list": (lambda r, s: r.update(files={"a": 1}), "files"),
}


@pytest.mark.parametrize("case", list(CRAFTED), ids=list(CRAFTED))
def test_restore_refuses_a_crafted_record_before_moving_anything(
    validated: tuple[Path, Path], tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root, into, secret = _quarantined(validated, tmp_path)
    (into / "link").symlink_to(secret.parent)
    edit, key = CRAFTED[case]
    _edit_record(into, lambda r: edit(r, secret))
    before = (snapshot(root), snapshot(into), snapshot(secret.parent))
    assert main(["restore", str(into)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"quarantine.json: {key}: " in err[0], err
    assert (snapshot(root), snapshot(into), snapshot(secret.parent)) == before


@pytest.mark.parametrize(
    "text",
    [b"{not json", b"\xff\xfe", b"[1, 2]"],
    ids=["not JSON", "not UTF-8", "not an object"],
)
def test_restore_refuses_a_record_that_is_not_one(
    validated: tuple[Path, Path], tmp_path: Path, text: bytes
) -> None:
    _, into, _ = _quarantined(validated, tmp_path)
    (into / "quarantine.json").write_bytes(text)
    with pytest.raises(RecordError, match=r"quarantine\.json: "):
        restore_quarantined(into)


_PIECES = st.sampled_from(["..", "outside", "secret.jpg", "happy", "broken.jpg", "link", ".", ""])


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rel=st.one_of(
        st.text(max_size=20),
        st.lists(_PIECES, min_size=1, max_size=6).map("/".join),
        st.lists(_PIECES, min_size=1, max_size=4).map(lambda p: "/" + "/".join(p)),
    )
)
def test_no_recorded_path_moves_a_file_outside_the_two_folders(
    validated: tuple[Path, Path], tmp_path: Path, rel: str
) -> None:
    _, run = validated
    into = tmp_path / "q" / "inner"  # deeper than the root: `..` paths lead to two places
    if not (into / "quarantine.json").exists():
        quarantine_rejected(run, into)
        (tmp_path / "outside").mkdir(exist_ok=True)
        (tmp_path / "outside" / "secret.jpg").write_bytes(b"not yours to move")
        (into / "link").symlink_to(tmp_path / "outside")
    secret = tmp_path / "outside" / "secret.jpg"
    outside = snapshot(secret.parent)
    names = [sorted(p.name for p in d.iterdir()) for d in (tmp_path, tmp_path.parent)]
    record = json.loads((into / "quarantine.json").read_text())
    record["files"] = [_entry(secret, rel)]
    (into / "quarantine.json").write_text(json.dumps(record))
    with contextlib.suppress(RecordError, QuarantineError):  # refused: also fine
        restore_quarantined(into)
    assert snapshot(secret.parent) == outside
    assert [sorted(p.name for p in d.iterdir()) for d in (tmp_path, tmp_path.parent)] == names
    if not (into / "quarantine.json").exists():  # restored: the next example needs a record
        next(into.glob("quarantine.json.restored-*")).rename(into / "quarantine.json")


# --------------------------------------------------------------------------------------
# Special files where a quarantined or rejected file was (issue 26, item 3)


@pytest.mark.parametrize("kind", ["fifo", "folder"], ids=["a FIFO", "a folder"])
def test_restore_refuses_a_special_file_in_place_of_a_moved_one(
    validated: tuple[Path, Path], tmp_path: Path, kind: str, fifo_swap: Callable
) -> None:
    root, into, _ = _quarantined(validated, tmp_path)
    moved = into / "happy" / "broken.jpg"
    if kind == "fifo":
        fifo_swap(moved)
    else:
        moved.unlink()
        moved.mkdir()
    before = snapshot(root)
    assert main(["restore", str(into)]) == 2
    assert snapshot(root) == before and (into / "quarantine.json").exists()


def test_quarantine_skips_a_rejected_file_swapped_for_a_fifo(
    validated: tuple[Path, Path], tmp_path: Path, fifo_swap: Callable
) -> None:
    root, run = validated
    fifo_swap(root / "happy" / "broken.jpg")
    record = quarantine_rejected(run, tmp_path / "q")
    assert record.n_moved == 1
    assert record.skipped == [
        "happy/broken.jpg: not a regular file (links and special files stay where they are)"
    ]


def test_quarantine_never_moves_through_a_class_folder_linked_out(
    validated: tuple[Path, Path], tmp_path: Path
) -> None:
    root, run = validated
    elsewhere = tmp_path / "elsewhere"
    (root / "happy").rename(elsewhere)  # the same files, now outside the data root
    (root / "happy").symlink_to(elsewhere)
    before = snapshot(elsewhere)
    record = quarantine_rejected(run, tmp_path / "q")
    assert "happy/broken.jpg: leads outside the data root; not moved" in record.skipped
    assert snapshot(elsewhere) == before


@pytest.mark.parametrize(
    "root", [None, "data"], ids=["a manifest with no recorded root", "a relative recorded root"]
)
def test_quarantine_never_takes_the_current_folder_for_a_missing_root(
    validated: tuple[Path, Path], tmp_path: Path, root: str | None
) -> None:
    import pyarrow.parquet as pq

    _, run = validated
    table = pq.read_table(run / "manifest.parquet")
    meta = dict(table.schema.metadata or {})
    meta[b"toolkit"] = json.dumps({**json.loads(meta[b"toolkit"]), "root": root}).encode()
    pq.write_table(table.replace_schema_metadata(meta), run / "manifest.parquet")
    with pytest.raises(RecordError, match="root"):
        quarantine_rejected(run, tmp_path / "q")
    assert not (tmp_path / "q" / "quarantine.json").exists()
