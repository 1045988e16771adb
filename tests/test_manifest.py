"""Manifests round-trip through Parquet with their metadata, and are written atomically."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from toolkit.errors import ManifestError
from toolkit.manifest import COLUMNS, atomic_write_text, read_manifest, write_manifest
from toolkit.scan import scan_folder


def test_round_trip_keeps_rows_dtypes_and_root(clean_root: Path, tmp_path: Path) -> None:
    manifest = scan_folder(clean_root, jobs=1)
    write_manifest(manifest, tmp_path / "out")
    back = read_manifest(tmp_path / "out")
    pd.testing.assert_frame_equal(back, manifest)
    assert back.attrs["root"] == str(clean_root.resolve())
    assert list(back.columns) == list(COLUMNS)


@pytest.mark.parametrize("content", [None, b"not parquet", "columns"])
def test_unreadable_manifests_are_named(tmp_path: Path, content: object) -> None:
    path = tmp_path / "manifest.parquet"
    if content == "columns":
        pd.DataFrame({"x": [1]}).to_parquet(path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    assert str(path) in str(err.value)


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    atomic_write_text(target, "old")

    class Boom(Exception):
        pass

    from toolkit.manifest import atomic_write

    def half(fh: object) -> None:
        fh.write("half")  # type: ignore[attr-defined]
        raise Boom

    with pytest.raises(Boom):
        atomic_write(target, half)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
