"""scan_folder: one row per entry found, the right facts per file, never an exception."""

from __future__ import annotations

import errno
import logging
import os
import sys
import threading
import types
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import pandas as pd
import pytest
from conftest import iou, snapshot
from corpus import HostileCorpus, encode_image, write_image
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import toolkit.scan as scan_module
from toolkit.errors import DataRootError
from toolkit.profiles import load_profile
from toolkit.scan import ScanOptions, perceptual_hash, scan_folder, sniff_format
from toolkit.validate import validate_manifest


@pytest.fixture
def hostile_manifest(hostile: HostileCorpus) -> pd.DataFrame:
    return scan_folder(hostile.root, jobs=1).set_index("path")


def test_clean_folder_rows(clean_root: Path) -> None:
    manifest = scan_folder(clean_root, jobs=1)
    assert len(manifest) == 8
    assert manifest["label"].value_counts().to_dict() == {"happy": 4, "sad": 4}
    assert manifest["is_decodable"].all()
    assert (manifest["detected_format"] == "jpeg").all()
    assert (manifest[["width_px", "height_px"]] == 32).all().all()
    assert manifest["sha256"].str.len().eq(64).all() and manifest["phash"].str.len().eq(16).all()
    assert manifest.attrs["class_folders"] == ["happy", "sad"]


@pytest.mark.parametrize(
    ("case", "column", "expected"),
    [
        ("zero_byte", "detected_format", "empty"),
        ("truncated_jpeg", "detected_format", "jpeg"),
        ("truncated_png", "detected_format", "png"),
        ("html_as_jpg", "detected_format", "html"),
        ("text_as_jpg", "detected_format", "text"),
        ("svg", "detected_format", "svg"),
        ("animated_gif", "n_frames", 3),
        ("cmyk_jpeg", "mode", "CMYK"),
        ("png16", "mode", "I;16"),
        ("grayscale", "channels", 1),
        ("palette_png", "mode", "P"),
        ("rgba_png", "channels", 4),
        ("exif_rotated_jpeg", "exif_orientation", 6),
        ("tiny_1x1", "width_px", 1),
        ("bomb", "width_px", 40000),
        ("png_named_jpg", "detected_format", "png"),
        ("webp", "detected_format", "webp"),
        ("bmp", "detected_format", "bmp"),
        ("nested_deep", "label", "happy"),
        ("ds_store", "is_hidden", True),
        ("appledouble", "is_hidden", True),
        ("stray_root_file", "label", pd.NA),
        ("dangling_symlink", "read_error", "dangling symlink (its target does not exist)"),
        ("symlink_loop", "read_error", "symlink loop"),
        ("symlink_outside_root", "is_inside_root", False),
        ("dangling_symlink", "is_inside_root", True),
        ("html_injection_name", "is_decodable", True),
    ],
    ids=lambda v: str(v),
)
def test_hostile_case_row(
    hostile: HostileCorpus, hostile_manifest: pd.DataFrame, case: str, column: str, expected
) -> None:
    value = hostile_manifest.loc[hostile.cases[case], column]
    assert (pd.isna(value) and expected is pd.NA) or value == expected


def test_sixteen_bit_images_are_hashed_by_their_picture(
    hostile: HostileCorpus, hostile_manifest: pd.DataFrame
) -> None:
    # Pillow's convert("L") clips 16-bit values: every such scan would hash as a blank
    blank = hostile_manifest.loc[hostile.cases["tiny_1x1"], "phash"]
    row = hostile_manifest.loc[hostile.cases["png16"]]
    assert row["is_decodable"] and row["phash"] != blank


@pytest.mark.parametrize(
    "case",
    ["zero_byte", "truncated_jpeg", "truncated_png", "random_bytes_jpg", "html_as_jpg", "svg",
     "bomb"],
)  # fmt: skip
def test_undecodable_files_carry_the_decoders_reason(
    hostile: HostileCorpus, hostile_manifest: pd.DataFrame, case: str
) -> None:
    row = hostile_manifest.loc[hostile.cases[case]]
    assert not row["is_decodable"]
    assert isinstance(row["decode_error"], str) and row["decode_error"]


def test_bomb_is_judged_from_its_header_without_decoding(
    hostile: HostileCorpus, hostile_manifest: pd.DataFrame
) -> None:
    row = hostile_manifest.loc[hostile.cases["bomb"]]
    assert "over the scan's" in row["decode_error"] and row["height_px"] == 40000


def test_every_entry_is_a_row_and_the_folder_is_untouched(hostile: HostileCorpus) -> None:
    before = snapshot(hostile.root)
    manifest = scan_folder(hostile.root, jobs=1)
    assert snapshot(hostile.root) == before
    paths = set(manifest["path"])
    for case, rel in hostile.cases.items():
        if case in ("dir_named_jpg", "empty_class", "non_utf8_name"):
            continue
        assert rel in paths, case
    assert "happy/caf\\xe9.jpg" in paths  # shown escaped, still listed
    assert manifest.attrs["class_folders"] == ["happy", "neutral", "sad"]


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_parallel_scan_gives_the_same_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    for i in range(70):
        write_image(tmp_path / ("happy" if i % 2 else "sad") / f"{i}.jpg", seed=i)
    serial = scan_folder(tmp_path, jobs=1)
    monkeypatch.setattr(scan_module, "_start_method", lambda: method)
    parallel = scan_folder(tmp_path, jobs=2)
    pd.testing.assert_frame_equal(serial, parallel)


def test_a_scan_forks_only_a_process_without_threads_or_opencv(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delitem(sys.modules, "cv2", raising=False)
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    assert scan_module._start_method() == "fork"
    monkeypatch.setattr(threading, "active_count", lambda: 2)  # as TensorFlow or tqdm would
    assert scan_module._start_method() == "forkserver"
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    monkeypatch.setitem(sys.modules, "cv2", types.ModuleType("cv2"))  # its pool may be running
    assert scan_module._start_method() == "forkserver"


def test_faces_can_be_skipped(clean_root: Path) -> None:
    manifest = scan_folder(clean_root, options=ScanOptions(detect_faces=False))
    assert manifest["n_faces"].isna().all()


@pytest.mark.parametrize("make", ["missing", "file"])
def test_bad_root_is_a_usage_error(tmp_path: Path, make: str) -> None:
    root = tmp_path / "data"
    if make == "file":
        root.write_text("x")
    with pytest.raises(DataRootError) as err:
        scan_folder(root)
    assert err.value.exit_code == 2 and str(root) in str(err.value)


@pytest.mark.parametrize(
    ("head", "expected"),
    [(b"", "empty"), (b"\xff\xd8\xff\xe0", "jpeg"), (b"BM\x00\x00", "bmp"),
     (b"<svg xmlns='x'>", "svg"), (b"<?xml version='1.0'?><svg>", "svg"),
     (b"<?xml version='1.0'?><doc/>", "xml"), (b"<!DOCTYPE html><html>", "html"),
     (b"plain words", "text"), (b"caf\xc3", "text"), (b"\x00\x01\x02\x03\xfe", "unknown"),
     (b"%PDF-1.4", "pdf")],
    ids=["empty", "jpeg", "bmp", "svg", "svg with xml prolog", "other xml", "html", "text",
         "text cut mid-character", "binary junk", "pdf"],
)  # fmt: skip
def test_sniff_format(head: bytes, expected: str) -> None:
    assert sniff_format(head) == expected


def test_face_boxes_are_in_the_files_own_pixels_at_any_size(tmp_path: Path) -> None:
    """The detector sees a reduced copy (JPEGs decoded at a reduced DCT scale, others
    box-filtered, then letterboxed to 128 px); the box it finds must come back in the stored
    file's pixels, for big and small files."""
    from PIL import Image

    from toolkit.demo import write_demo_data

    demo = tmp_path / "demo"
    write_demo_data(demo, n_per_class=6)
    found = scan_folder(demo, jobs=1)
    found = found[(found["n_faces"] >= 1) & (found["detected_format"] == "jpeg")]
    assert len(found) >= 2, "the demo faces are drawn for a face detector to find"
    row = found.iloc[0]
    box = tuple(float(row[k]) for k in ("face_x", "face_y", "face_w", "face_h"))
    picture = Image.open(demo / row["path"]).convert("RGB")
    sized = tmp_path / "sized" / "happy"
    sized.mkdir(parents=True)
    # 1,000+ px (a JPEG decoded at 1/4 scale; a PNG box-filtered before the detector),
    # and a small JPEG
    cases = {"x4.0.jpg": 4.0, "x4.0.png": 4.0, "x0.5.jpg": 0.5}
    for name, k in cases.items():
        size = (round(picture.width * k), round(picture.height * k))
        picture.resize(size, Image.Resampling.LANCZOS).save(sized / name, quality=95)
    rows = scan_folder(sized.parent, jobs=1).set_index("path")
    for name, k in cases.items():
        got = rows.loc[f"happy/{name}"]
        assert got["n_faces"] >= 1, f"no face found at {k}x"
        expected = tuple(v * k for v in box)
        found_box = tuple(float(got[c]) for c in ("face_x", "face_y", "face_w", "face_h"))
        assert iou(found_box, expected) > 0.6, (k, found_box, expected)


# ------------------------------------------------------------ every entry becomes a row

#: Folders below a class, and the length of each name: the file's path (about 8,200 bytes)
#: is longer than Linux's PATH_MAX (4,096), so no single call can name it.
DEEP_LEVELS, DEEP_NAME_CHARS = 200, 40


def write_deep_file(root: Path) -> str:
    """A JPEG at the bottom of DEEP_LEVELS nested folders below root/happy; its relative
    path. Made one folder at a time through directory descriptors, as nothing else can."""
    names = [f"{i:03d}".ljust(DEEP_NAME_CHARS, "d") for i in range(DEEP_LEVELS)]
    fd = os.open(root / "happy", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in names:
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        out = os.open("deep.jpg", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd)
        with os.fdopen(out, "wb") as fh:
            fh.write(encode_image(size=(32, 32)))
    finally:
        os.close(fd)
    return "/".join(["happy", *names, "deep.jpg"])


def test_a_file_below_a_path_longer_than_the_system_allows_is_a_rejected_row(
    clean_root: Path, tiny_profile: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rel = write_deep_file(clean_root)
    assert len(os.fsencode(str(clean_root / rel))) > os.pathconf(clean_root, "PC_PATH_MAX")
    manifest = scan_folder(clean_root, jobs=1)
    assert len(manifest) == 9  # the eight clean files and the deep one: none lost
    row = manifest.set_index("path").loc[rel]
    assert not row["is_readable"]
    assert row["read_error"] == f"cannot stat: {os.strerror(errno.ENAMETOOLONG)}"
    result = validate_manifest(manifest, load_profile(tiny_profile))
    lines = [f.line() for f in result.findings]
    assert f"{rel}: readable: cannot stat: File name too long" in lines
    assert len(result.accepted) == 8
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # a row, not a log


def _locked_folder(
    monkeypatch: pytest.MonkeyPatch, locked: Path, step: str, error: OSError
) -> None:
    """Make the OS refuse `locked` (we run as root: chmod cannot) at one step of the walk:
    opening it (os.open), or listing it once open (os.scandir, by descriptor or by path)."""
    real_open, real_scandir = os.open, os.scandir
    fds: set[int] = set()

    def is_locked(path: object) -> bool:
        return isinstance(path, str | bytes | os.PathLike) and os.fsdecode(path) in (
            locked.name,
            str(locked),
        )

    def fake_open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        if step == "open" and is_locked(path):
            raise error
        fd = real_open(path, flags, mode, dir_fd=dir_fd)
        if is_locked(path):
            fds.add(fd)
        return fd

    def fake_scandir(path: Any = ".") -> Any:
        if step == "list" and (path in fds if isinstance(path, int) else is_locked(path)):
            raise error
        return real_scandir(path)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "scandir", fake_scandir)


@pytest.mark.parametrize(
    ("step", "error", "words"),
    [
        ("open", PermissionError(errno.EACCES, "Permission denied"), "Permission denied"),
        ("list", PermissionError(errno.EACCES, "Permission denied"), "Permission denied"),
        ("list", OSError(errno.EIO, "Input/output error"), "Input/output error"),
    ],
    ids=[
        "a folder the system will not open is a row",
        "a folder that opens but will not list is a row",
        "a folder on a failing disk is a row",
    ],
)
def test_a_folder_the_walk_cannot_list_is_a_rejected_row(
    clean_root: Path,
    tiny_profile: Path,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
    error: OSError,
    words: str,
) -> None:
    write_image(clean_root / "sad" / "locked" / "inside.jpg")
    with monkeypatch.context() as patched:
        _locked_folder(patched, clean_root / "sad" / "locked", step, error)
        manifest = scan_folder(clean_root, jobs=1)
    rows = manifest.set_index("path")
    assert "sad/locked/inside.jpg" not in rows.index  # what the folder holds is unknown ...
    assert rows.loc["sad/locked", "read_error"] == f"cannot list: {words}"  # ... it is a row
    assert len(manifest) == 9
    result = validate_manifest(manifest, load_profile(tiny_profile))
    assert f"sad/locked: readable: cannot list: {words}" in [f.line() for f in result.findings]
    assert len(result.accepted) == 8


def test_a_folder_the_walk_cannot_list_is_a_row_in_a_parallel_scan_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    write_image(root / "sad" / "locked" / "inside.jpg")
    for i in range(4):
        write_image(root / "happy" / f"{i}.jpg", seed=i)
    monkeypatch.setattr(scan_module, "PARALLEL_MIN_FILES", 1)
    monkeypatch.setattr(scan_module, "_start_method", lambda: "fork")
    with monkeypatch.context() as patched:
        _locked_folder(patched, root / "sad" / "locked", "list", PermissionError(13, "Denied"))
        manifest = scan_folder(root, jobs=2)
    assert manifest.set_index("path").loc["sad/locked", "read_error"] == "cannot list: Denied"
    assert manifest["is_readable"].sum() == 4


def test_a_data_root_the_walk_cannot_list_is_a_usage_error(
    clean_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patched:
        _locked_folder(patched, clean_root, "list", PermissionError(13, "Permission denied"))
        with pytest.raises(DataRootError) as err:
            scan_folder(clean_root, jobs=1)
    assert err.value.exit_code == 2 and "cannot list: Permission denied" in str(err.value)


def test_without_folder_descriptors_the_walk_joins_paths_and_still_makes_every_row(
    clean_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_image(clean_root / "sad" / "locked" / "inside.jpg")
    write_image(clean_root / "happy" / "a" / "b" / "nested.jpg")
    monkeypatch.setattr(scan_module, "_WALK_BY_FD", False)  # as on Windows
    with monkeypatch.context() as patched:
        _locked_folder(patched, clean_root / "sad" / "locked", "list", PermissionError(13, "No"))
        rows = scan_folder(clean_root, jobs=1).set_index("path")
    assert rows.loc["sad/locked", "read_error"] == "cannot list: No"
    assert rows.loc["happy/a/b/nested.jpg", "is_decodable"]
    assert len(rows) == 10


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_the_walk_leaves_no_folder_open_even_when_stopped_early(clean_root: Path) -> None:
    write_image(clean_root / "happy" / "a" / "b" / "nested.jpg")
    before = len(os.listdir("/proc/self/fd"))
    walk = scan_module.list_entries(clean_root)
    next(walk)  # folders are open now, one per level ...
    walk.close()  # ... and closed when the caller stops
    assert len(list(scan_module.list_entries(clean_root))) == 9
    assert len(os.listdir("/proc/self/fd")) == before


# ------------------------------------------------------------------ the perceptual hash


@settings(max_examples=40, deadline=None)
@given(
    width=st.integers(8, 400),
    height=st.integers(8, 400),
    low=st.integers(0, 254),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_perceptual_hash_is_imagehash_phash_of_the_same_picture(
    width: int, height: int, low: int, seed: int
) -> None:
    # the near-duplicate distances were chosen for imagehash's hash: they keep their meaning
    rng = np.random.default_rng(seed)
    pixels = rng.integers(low, 256, (height, width), dtype=np.uint8)
    grey = Image.fromarray(pixels, "L")
    assert perceptual_hash(grey) == str(imagehash.phash(grey))


@pytest.mark.parametrize(
    "level", [1, 128, 255], ids=["a near-black page", "a mid-grey page", "a white page"]
)
def test_a_flat_picture_has_one_hash_whatever_its_size_or_grey(level: int) -> None:
    # its AC coefficients all tie the median: every bit but the mean's is 0, on every machine
    hashes = {perceptual_hash(Image.new("L", size, level)) for size in [(50, 40), (300, 7)]}
    assert hashes == {"8000000000000000"}
