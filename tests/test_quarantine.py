"""quarantine moves rejected files aside with a record; restore puts back every byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import snapshot
from corpus import write_clean_folder

from toolkit.cli import main
from toolkit.errors import QuarantineError
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
    assert main(["quarantine", str(tmp_path / "s"), "--into", str(tmp_path / "q")]) == 1
    assert main(["restore", str(tmp_path / "nothing")]) == 1
