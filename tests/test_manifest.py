"""Manifests round-trip through Parquet with their metadata, and are written atomically."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.errors import ManifestError, RecordError
from toolkit.manifest import COLUMNS, read_manifest, write_manifest
from toolkit.paths import atomic_write_text, relative_problem
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

    from toolkit.paths import atomic_write

    def half(fh: object) -> None:
        fh.write("half")  # type: ignore[attr-defined]
        raise Boom

    with pytest.raises(Boom):
        atomic_write(target, half)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


# --------------------------------------------------------------------------------------
# A manifest read back is untrusted input (issue 26, item 2)


def _write_edited(tmp_path: Path, paths: list[object], attrs: dict | None = None) -> Path:
    """A manifest.parquet as a user (or an attacker) could edit one: any path values."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pd.DataFrame({"path": paths, "label": ["happy"] * len(paths)})
    frame["sha256"] = "0" * 64
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = {b"toolkit": json.dumps(attrs if attrs is not None else {"root": "/data"}).encode()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    target = tmp_path / "edited" / "manifest.parquet"
    target.parent.mkdir(exist_ok=True)
    pq.write_table(table, target)
    return target


@pytest.mark.parametrize(
    ("paths", "words"),
    [
        (["happy/a.jpg", "happy/b\x00.jpg"], "path[1]: 'happy/b\\x00.jpg' holds a NUL byte"),
        (["happy/a.jpg", None], "path: 1 row(s) have no path"),
        ([5, 6], "path: holds int64 values, not text"),
        (["happy/a.jpg", "../../etc/passwd"], "path[1]: '../../etc/passwd' climbs out"),
        (["/etc/passwd"], "path[0]: '/etc/passwd' is absolute"),
        ([""], "path[0]: an empty path"),
    ],
    ids=[
        "a NUL byte",
        "a null",
        "numbers",
        "a path climbing out",
        "an absolute path",
        "an empty path",
    ],
)
def test_a_manifest_with_an_unsafe_path_is_refused_whole(
    tmp_path: Path, paths: list[object], words: str
) -> None:
    target = _write_edited(tmp_path, paths)
    with pytest.raises(RecordError) as err:
        read_manifest(target)
    assert err.value.exit_code == 2
    assert str(err.value).startswith(f"{target}: {words}")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("attrs", "key"),
    [
        ({"root": "data/relative"}, "metadata root"),
        ({"root": 5}, "metadata root"),
        ({"root": "/data\x00/x"}, "metadata root"),
        ({"roots": ["/data", "relative"]}, "metadata roots[1]"),
        ({"roots": "/data"}, "metadata roots"),
        ({"profile": ["tutorial"]}, "metadata profile"),
        ({"class_folders": [1, 2]}, "metadata class_folders"),
        ([1, 2], "metadata"),
    ],
    ids=[
        "a relative root",
        "a root that is a number",
        "a root with a NUL byte",
        "a relative root among several",
        "roots that are not a list",
        "a profile that is not text",
        "class folders that are not text",
        "metadata that is not an object",
    ],
)
def test_a_manifest_with_a_bad_recorded_root_is_refused(
    tmp_path: Path, attrs: object, key: str
) -> None:
    target = _write_edited(tmp_path, ["happy/a.jpg"], attrs)  # type: ignore[arg-type]
    with pytest.raises(RecordError, match=re.escape(f"{target}: {key}: ")):
        read_manifest(target)


def test_a_manifest_with_safe_paths_and_no_root_reads(tmp_path: Path) -> None:
    target = _write_edited(tmp_path, ["happy/a.jpg", "sad/b c.jpg"], {"root": None})
    assert read_manifest(target)["path"].tolist() == ["happy/a.jpg", "sad/b c.jpg"]


def test_a_manifest_that_is_a_fifo_is_refused_without_waiting(
    tmp_path: Path, fifo_swap: Callable[[Path], Path]
) -> None:
    target = fifo_swap(tmp_path / "manifest.parquet")
    with pytest.raises(ManifestError, match="FIFO"):
        read_manifest(target)


_PATH_TEXT = st.one_of(st.text(max_size=16), st.text(st.sampled_from("./a\x00\\"), max_size=8))


@settings(max_examples=50, deadline=None)
@given(paths=st.lists(_PATH_TEXT, min_size=1, max_size=4))
def test_every_path_a_manifest_reads_back_stays_inside_its_root(paths: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        target = _write_edited(Path(tmp), list(paths), {"root": str(root)})
        try:
            back = read_manifest(target)
        except RecordError:
            assert any(relative_problem(p) for p in paths)  # refused only for a reason
            return  # refused whole: nothing in it is used
        for rel in back["path"]:
            joined = os.path.normpath(os.path.join(root, rel))
            assert os.path.commonpath([root, joined]) == str(root) and joined != str(root)
