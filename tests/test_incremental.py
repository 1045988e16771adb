"""Re-validation: rows of unchanged files are reused from the previous manifest in OUT, and
the outputs are the ones a full scan gives, whatever changed in between."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from corpus import HostileCorpus, write_clean_folder, write_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit.check import SCAN_COUNTS_KEY
from toolkit.cli import main
from toolkit.manifest import RUN_ID_KEY, read_manifest, write_manifest
from toolkit.scan import SCANNER_KEY, ScanOptions, rescan_folder, scan_folder

#: report.json keys that differ between two runs on the same files by design.
VOLATILE = {RUN_ID_KEY, "created_at", "seconds", "command", SCAN_COUNTS_KEY}


def validate(root: Path, out: Path, profile: Path, *extra: str) -> dict:
    """`toolkit validate` (no faces, no HTML) -> its report.json."""
    argv = ["validate", str(root), "-p", str(profile), "-o", str(out), "--no-faces", "--no-html"]
    assert main([*argv, *extra]) in (0, 1)
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def stable(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in VOLATILE}


def assert_same_manifest(cached: Path, full: Path) -> None:
    """The manifests hold the same rows and metadata, but for the run id."""
    a, b = read_manifest(cached), read_manifest(full)
    pd.testing.assert_frame_equal(a, b)
    assert {k: v for k, v in a.attrs.items() if k != RUN_ID_KEY} == {
        k: v for k, v in b.attrs.items() if k != RUN_ID_KEY
    }


def keep_times(path: Path, write: Callable[[], None]) -> None:
    """Run `write` on `path`, then put its access and modification times back."""
    before = path.stat()
    write()
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def rewrite_same_size(root: Path) -> None:
    path = root / "happy/happy_000.jpg"
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    keep_times(path, lambda: path.write_bytes(bytes(data)))


def swap_for_symlink(root: Path) -> None:
    path = root / "sad/sad_001.jpg"
    path.unlink()
    path.symlink_to("sad_002.jpg")


CHANGES: dict[str, Callable[[Path], None]] = {
    "a file added": lambda root: write_image(root / "sad/new.jpg", seed=99),
    "a file deleted": lambda root: (root / "happy/happy_001.jpg").unlink(),
    "a file rewritten in place, same size, mtime put back": rewrite_same_size,
    "a file renamed": lambda root: (root / "happy/happy_002.jpg").rename(root / "happy/z.jpg"),
    "a file swapped for a symlink": swap_for_symlink,
    "a file truncated": lambda root: (root / "sad/sad_003.jpg").write_bytes(b"\xff\xd8\xff"),
    "a file duplicated into the other class": lambda root: shutil.copy(
        root / "happy/happy_003.jpg", root / "sad/copy.jpg"
    ),
}


def test_an_unchanged_folder_is_not_scanned_again(
    clean_root: Path, tiny_profile: Path, tmp_path: Path
) -> None:
    first = validate(clean_root, tmp_path / "out", tiny_profile)
    second = validate(clean_root, tmp_path / "out", tiny_profile)
    assert first[SCAN_COUNTS_KEY] == {"n_reused": 0, "n_scanned": 8}
    assert second[SCAN_COUNTS_KEY] == {"n_reused": 8, "n_scanned": 0}
    assert stable(second) == stable(first)


@pytest.mark.parametrize("change", list(CHANGES.values()), ids=list(CHANGES))
def test_after_a_change_the_cached_run_gives_what_a_full_scan_gives(
    change: Callable[[Path], None], clean_root: Path, tiny_profile: Path, tmp_path: Path
) -> None:
    validate(clean_root, tmp_path / "cached", tiny_profile)
    change(clean_root)
    cached = validate(clean_root, tmp_path / "cached", tiny_profile)
    full = validate(clean_root, tmp_path / "full", tiny_profile, "--no-cache")
    assert stable(cached) == stable(full)
    assert_same_manifest(tmp_path / "cached", tmp_path / "full")
    counts = cached[SCAN_COUNTS_KEY]
    assert counts["n_scanned"] <= 2  # only what changed (nothing, for a deletion)
    assert counts["n_reused"] + counts["n_scanned"] == cached["n_files"]
    assert full[SCAN_COUNTS_KEY]["n_reused"] == 0


def test_a_file_whose_stat_matches_but_bytes_differ_is_scanned_again(clean_root: Path) -> None:
    """The hash guard: the previous row claims other bytes for a file whose size, times and
    inode all still match (as a file rewritten within the clock's resolution would)."""
    options = ScanOptions(detect_faces=False)
    previous = scan_folder(clean_root, jobs=1, options=options)
    forged = previous.copy()
    forged.attrs = dict(previous.attrs)
    forged.loc[0, "sha256"] = "0" * 64
    forged.loc[0, "width_px"] = 12345  # what the stale row would wrongly keep
    manifest, counts = rescan_folder(clean_root, forged, jobs=1, options=options)
    assert (counts.n_reused, counts.n_scanned) == (7, 1)
    pd.testing.assert_frame_equal(manifest, previous)


def test_a_file_whose_decode_ran_out_of_memory_is_scanned_again(clean_root: Path) -> None:
    options = ScanOptions(detect_faces=False)
    previous = scan_folder(clean_root, jobs=1, options=options)
    failed = previous.copy()
    failed.attrs = dict(previous.attrs)
    failed.loc[0, ["is_decodable", "decode_error"]] = [False, "MemoryError: "]
    manifest, counts = rescan_folder(clean_root, failed, jobs=1, options=options)
    assert (counts.n_reused, counts.n_scanned) == (7, 1)
    pd.testing.assert_frame_equal(manifest, previous)


def test_a_file_that_is_not_an_image_is_not_decoded_again(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_clean_folder(root, n_per_class=2)
    (root / "sad" / "notes.jpg").write_text("not a picture", encoding="utf-8")
    options = ScanOptions(detect_faces=False)
    previous = scan_folder(root, jobs=1, options=options)
    assert previous["decode_error"].notna().sum() == 1
    manifest, counts = rescan_folder(root, previous, jobs=1, options=options)
    assert (counts.n_reused, counts.n_scanned) == (5, 0)
    pd.testing.assert_frame_equal(manifest, previous)


def test_changing_only_the_profile_rules_reruns_the_rules_not_the_scan(
    clean_root: Path, tiny_profile: Path, tmp_path: Path
) -> None:
    stricter = tmp_path / "stricter.toml"
    stricter.write_text(
        tiny_profile.read_text(encoding="utf-8").replace("min_bytes = 100", "min_bytes = 10000"),
        encoding="utf-8",
    )
    validate(clean_root, tmp_path / "out", tiny_profile)
    cached = validate(clean_root, tmp_path / "out", stricter)
    full = validate(clean_root, tmp_path / "full", stricter, "--no-cache")
    assert cached[SCAN_COUNTS_KEY] == {"n_reused": 8, "n_scanned": 0}
    assert not cached["passed"] and cached["n_rejected"] == 8
    assert stable(cached) == stable(full)


@pytest.mark.parametrize(
    "earlier",
    [ScanOptions(detect_faces=True), ScanOptions(max_decode_pixels=1000, max_decode_bytes=4000)],
    ids=["rows scanned with faces on", "rows scanned under other decode limits"],
)
def test_rows_scanned_under_other_scan_options_are_scanned_again(
    earlier: ScanOptions, clean_root: Path
) -> None:
    previous = scan_folder(clean_root, jobs=1, options=earlier)
    now = ScanOptions(detect_faces=False)
    manifest, counts = rescan_folder(clean_root, previous, jobs=1, options=now)
    assert (counts.n_reused, counts.n_scanned) == (0, 8)
    pd.testing.assert_frame_equal(manifest, scan_folder(clean_root, jobs=1, options=now))


def other_version(scanner: dict) -> None:
    scanner["versions"]["toolkit"] = "0.0.1"


def other_pillow(scanner: dict) -> None:
    scanner["versions"]["pillow"] = "1.0"


def other_code(scanner: dict) -> None:
    scanner["code"] = "0" * 64


def other_numpy(scanner: dict) -> None:
    versions = scanner["versions"]
    versions["numpy"] += ".post1"  # the hash and the scores are numpy arithmetic


def hashed_by_imagehash(scanner: dict) -> None:
    # what manifests scanned before the perceptual hash moved to numpy recorded
    del scanner["versions"]["numpy"]
    scanner["versions"]["imagehash"] = "4.3.1"


@pytest.mark.parametrize(
    "edit",
    [other_version, other_pillow, other_code, other_numpy, hashed_by_imagehash],
    ids=[
        "rows from another toolkit version",
        "rows decoded by another Pillow",
        "rows written by other scanning code (a source checkout edited)",
        "rows hashed and scored by another numpy",
        "rows hashed by imagehash, in a manifest cached before the hash moved to numpy",
    ],
)
def test_rows_from_another_scanner_are_scanned_again(
    edit: Callable[[dict], None], clean_root: Path
) -> None:
    options = ScanOptions(detect_faces=False)
    previous = scan_folder(clean_root, jobs=1, options=options)
    assert rescan_folder(clean_root, previous, jobs=1, options=options)[1].n_reused == 8
    edit(previous.attrs[SCANNER_KEY])
    assert rescan_folder(clean_root, previous, jobs=1, options=options)[1].n_reused == 0


def test_a_manifest_of_another_folder_in_out_is_not_reused(
    clean_root: Path, tiny_profile: Path, tmp_path: Path
) -> None:
    twin = tmp_path / "twin"
    shutil.copytree(clean_root, twin)
    validate(clean_root, tmp_path / "out", tiny_profile)
    report = validate(twin, tmp_path / "out", tiny_profile)
    assert report[SCAN_COUNTS_KEY] == {"n_reused": 0, "n_scanned": 8}


def test_a_previous_manifest_that_fails_its_checks_means_a_full_scan(
    clean_root: Path, tiny_profile: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    validate(clean_root, out, tiny_profile)
    edited = read_manifest(out)
    edited.loc[0, "path"] = "../outside.jpg"  # read_manifest refuses it
    write_manifest(edited, out)
    report = validate(clean_root, out, tiny_profile)
    assert report[SCAN_COUNTS_KEY] == {"n_reused": 0, "n_scanned": 8}
    assert report["passed"]


def test_a_hostile_folder_rescanned_gives_the_full_scan(hostile: HostileCorpus) -> None:
    options = ScanOptions(detect_faces=False)
    previous = scan_folder(hostile.root, jobs=1, options=options)
    manifest, counts = rescan_folder(hostile.root, previous, jobs=1, options=options)
    pd.testing.assert_frame_equal(manifest, previous)
    assert manifest.attrs == previous.attrs
    # links, special files, unreadable and undecodable entries are always scanned again
    rescanned = ~previous["is_readable"] | previous["is_symlink"] | ~previous["is_valid_name"]
    assert counts.n_scanned >= int(rescanned.sum()) > 0


OPS = st.lists(
    st.tuples(st.sampled_from(["add", "delete", "rewrite", "rename", "link"]), st.integers(0, 7)),
    max_size=4,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS)
def test_any_sequence_of_changes_rescans_to_the_full_scan(
    ops: list[tuple[str, int]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("prop")
    write_clean_folder(root, n_per_class=4)
    options = ScanOptions(detect_faces=False)
    previous = scan_folder(root, jobs=1, options=options)
    for n, (op, i) in enumerate(ops):
        files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        if not files:
            break
        path = files[i % len(files)]
        if op == "add":
            write_image(path.parent / f"added{n}.jpg", seed=500 + n)
        elif op == "delete":
            path.unlink()
        elif op == "rewrite":
            write_image(path, seed=700 + n)
        elif op == "rename":
            path.rename(path.parent / f"renamed{n}.jpg")
        else:
            path.unlink()
            path.symlink_to(files[(i + 1) % len(files)].name)
    manifest, counts = rescan_folder(root, previous, jobs=1, options=options)
    pd.testing.assert_frame_equal(manifest, scan_folder(root, jobs=1, options=options))
    assert counts.n_reused + counts.n_scanned == len(manifest)
