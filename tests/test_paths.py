"""Path safety: recorded paths stay inside their root; special files are named, never waited on."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit.errors import RecordError
from toolkit.paths import (
    NotRegularFileError,
    check_record_paths,
    inside_problem,
    open_regular,
    read_regular,
    relative_problem,
    root_problem,
)


def _special(tmp_path: Path, kind: str) -> Path:
    """A FIFO, a unix socket or a folder, each named like a photo."""
    path = tmp_path / f"{kind}.jpg"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()  # the socket file stays after the socket closes
    else:
        path.mkdir()
    return path


@pytest.mark.parametrize(
    ("kind", "words"),
    [("fifo", "FIFO"), ("socket", "socket"), ("folder", "folder")],
    ids=["a FIFO opens at once and is refused", "a socket is refused", "a folder is refused"],
)
def test_open_regular_names_what_a_special_file_is(tmp_path: Path, kind: str, words: str) -> None:
    path = _special(tmp_path, kind)
    with pytest.raises(NotRegularFileError, match=words) as err:
        open_regular(path)
    assert err.value.path == str(path) and isinstance(err.value, OSError)
    assert words in (err.value.strerror or "")


def test_open_regular_reads_a_regular_file_blocking(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(b"x" * 100_000)
    with open_regular(path) as fh:
        assert os.get_blocking(fh.fileno())  # reads wait for data, as on any file
        assert fh.read() == b"x" * 100_000
    assert read_regular(path) == b"x" * 100_000


def test_a_character_device_is_refused() -> None:
    with pytest.raises(NotRegularFileError, match="character device"):
        open_regular("/dev/null")


@pytest.mark.parametrize(
    ("rel", "words"),
    [
        ("../../etc/passwd", "climbs out"),
        ("happy/../../x.jpg", "climbs out"),
        ("/etc/passwd", "absolute"),
        ("", "empty"),
        ("./", "the root itself"),
        ("happy/a\x00.jpg", "NUL"),
        (None, "null"),
        (5, "int"),
    ],
    ids=[
        "a path climbing out",
        "a path climbing out midway",
        "an absolute path",
        "an empty path",
        "the root itself",
        "a NUL byte",
        "a missing path",
        "a number",
    ],
)
def test_unsafe_recorded_paths_are_named(rel: object, words: str) -> None:
    why = relative_problem(rel)
    assert why is not None and words in why


@pytest.mark.parametrize(
    "rel",
    ["happy/a.jpg", "a b/c\\d.jpg", "happy/..hidden.jpg", "happy/./a.jpg", "sad/\\x80.jpg"],
    ids=[
        "a plain path",
        "a backslash is a name character on POSIX",
        "two dots inside a name",
        "a dot folder",
        "an escaped undecodable name",
    ],
)
def test_safe_recorded_paths_pass(rel: str) -> None:
    assert relative_problem(rel) is None


def test_a_symlinked_parent_folder_leading_out_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "happy").symlink_to(outside)
    assert "leads outside" in str(inside_problem(root, "happy/a.jpg"))
    (root / "sad").mkdir()
    assert inside_problem(root, "sad/a.jpg") is None


@pytest.mark.parametrize(
    ("root", "words"),
    [("relative/root", "absolute"), ("/no/such/folder", "existing"), (None, "null"),
     ("/tmp\x00x", "NUL"), (7, "int")],
    ids=["a relative root", "a root that is gone", "no root", "a NUL byte", "a number"],
)  # fmt: skip
def test_bad_recorded_roots_are_named(root: object, words: str) -> None:
    assert words in str(root_problem(root))


def test_check_record_paths_names_the_record_and_the_entry(tmp_path: Path) -> None:
    with pytest.raises(RecordError) as err:
        check_record_paths(["a/b.jpg", "../x"], source=tmp_path / "q.json", key="files")
    assert err.value.exit_code == 2 and err.value.key == "files[1]"
    assert str(err.value).startswith(f"{tmp_path / 'q.json'}: files[1]: '../x' climbs out")


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rel=st.text(st.sampled_from("ab./\\\x00:~ "), max_size=12))
def test_an_accepted_path_always_stays_inside_its_root(tmp_path: Path, rel: str) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True, exist_ok=True)
    if inside_problem(root, rel) is None:
        joined = os.path.realpath(root / rel)
        assert os.path.commonpath([os.path.realpath(root), joined]) == os.path.realpath(root)


def test_atomic_write_json_writes_indented_utf8_with_one_trailing_newline(tmp_path: Path) -> None:
    """The one JSON writer (report.json, run.json, metrics.json, quarantine.json) writes the
    bytes each of them wrote before it."""
    from toolkit.paths import atomic_write_json

    target = tmp_path / "record.json"
    atomic_write_json(target, {"path": "happy/émoji😀.jpg", "n": 2, "where": Path("a/b")})
    assert target.read_bytes() == (
        '{\n  "path": "happy/émoji😀.jpg",\n  "n": 2,\n  "where": "a/b"\n}\n'.encode()
    )
    assert not [p for p in tmp_path.iterdir() if p.name != "record.json"]  # no temp file left
