"""The hostile corpus end to end: every file judged by a named rule, nothing lost, nothing in.

One place for the guarantees a scraped folder needs (the corpus itself: tests/corpus.py):
each hostile case ends with the rule below; validate, train, evaluate and predict leave the
data root as they found it; training reads only accepted files and names every one that
changed since validation; writes are atomic, even under kill -9; two validations of one
folder at once both finish with the same answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY_PROFILE, snapshot
from corpus import (
    HOSTILE_CASES,
    OUTSIDE_FOLDER,
    HostileCorpus,
    write_clean_folder,
    write_hostile_folder,
    write_image,
)

from toolkit.cli import main
from toolkit.manifest import read_manifest
from toolkit.outputs import read_run_id, read_run_ids
from toolkit.scan import display_path, list_entries

#: Each hostile case -> the rule that rejects it, or ("warning", rule) when the file is
#: accepted with a warning, or None when it is a good image that must be accepted.
#: This table is the closing note of issue 7; a case missing here fails the test below.
VERDICTS: dict[str, str | tuple[str, str] | None] = {
    "zero_byte": "allowed_format",
    "truncated_jpeg": "decodable",
    "truncated_png": "decodable",
    "random_bytes_jpg": "decodable",
    "html_as_jpg": "decodable",
    "text_as_jpg": "decodable",
    "svg": "decodable",
    "animated_gif": "not_animated",
    "cmyk_jpeg": None,
    "png16": None,
    "grayscale": None,
    "palette_png": None,
    "rgba_png": None,
    "exif_rotated_jpeg": None,
    "tiny_1x1": "min_file_bytes",  # 67 bytes; the small-faces profile has min_side
    "bomb": "max_pixels",
    "dangling_symlink": "readable",
    "symlink_loop": "readable",
    "symlink_loop_other": "readable",
    "symlink_outside_root": "readable",
    "unreadable": "readable",
    "non_utf8_name": "valid_file_name",
    "html_injection_name": None,
    "nested_deep": None,
    "ds_store": "not_hidden",
    "ds_store_in_class": "not_hidden",
    "appledouble": "not_hidden",
    "png_named_jpg": ("warning", "format_matches_extension"),
    "webp": "allowed_format",
    "bmp": None,
    "exact_duplicate": ("warning", "exact_duplicate"),
    "exact_duplicate_of": None,  # the first copy is kept; the other is flagged
    "label_conflict": "label_conflict",
    "label_conflict_other": "label_conflict",
    "stray_root_file": "in_class_folder",
    "stray_root_file_other": "in_class_folder",
}
#: Cases that are folders, not files: judged as dataset findings, not manifest rows.
#: A folder named photo.jpg is walked like any folder (its files would be rows).
FOLDER_CASES = {"empty_class": "min_files_per_class", "dir_named_jpg": None}

#: What scanning a decompression bomb may add to peak memory (MB). Its header declares
#: 1.6 GB of pixels; the max_pixels limit is checked from the header, before decoding.
BOMB_MEMORY_LIMIT_MB = 100

#: The tiny profile with the class-count rules as warnings, so the corpus can be trained on.
LENIENT_PROFILE = (
    TINY_PROFILE.replace("min_files = 2", 'min_files = 2\nseverity = "warning"')
    + '[rules.class_balance]\nseverity = "warning"\n'
)
assert LENIENT_PROFILE.count("warning") == 2


def _profile(tmp_path: Path, text: str = TINY_PROFILE) -> Path:
    path = tmp_path / "profile.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _validate(root: Path, profile: Path, out: Path) -> pd.DataFrame:
    main(["validate", str(root), "-p", str(profile), "-o", str(out), "--no-html"])
    return read_manifest(out).set_index("path")


def _outside_root(hostile: HostileCorpus) -> Path:
    return hostile.root.parent / OUTSIDE_FOLDER


def test_the_verdict_table_covers_every_case(hostile: HostileCorpus) -> None:
    assert set(HOSTILE_CASES) <= set(VERDICTS) | set(FOLDER_CASES)
    assert set(hostile.cases) | set(hostile.skipped) == set(VERDICTS) | set(FOLDER_CASES)


def test_every_hostile_case_ends_with_its_rule(hostile: HostileCorpus, tmp_path: Path) -> None:
    out = tmp_path / "out"
    manifest = _validate(hostile.root, _profile(tmp_path), out)
    # every entry below the root is a row: nothing silently skipped
    assert set(manifest.index) == {display_path(p) for p in list_entries(hostile.root)}
    for case, rel in hostile.cases.items():
        if case in FOLDER_CASES:
            continue
        verdict = VERDICTS[case]
        if case in hostile.skipped and case == "unreadable":
            verdict = None  # running as root: mode 000 does not stop reading
        row = manifest.loc[display_path(rel)]
        reasons = set(str(row["reasons"]).split(";")) if pd.notna(row["reasons"]) else set()
        warned = set(str(row["warnings"]).split(";")) if pd.notna(row["warnings"]) else set()
        if verdict is None:
            assert row["status"] == "accepted", (case, reasons)
        elif isinstance(verdict, tuple):
            assert row["status"] == "accepted" and verdict[1] in warned, (case, reasons, warned)
        else:
            assert row["status"] == "rejected" and verdict in reasons, (case, reasons)
    findings = json.loads((out / "report.json").read_text())["findings"]
    folder_rules = {f["rule"] for f in findings if f["path"] == "neutral/"}
    assert "min_files_per_class" in folder_rules
    assert not any(p.startswith(hostile.cases["dir_named_jpg"]) for p in manifest.index)


def test_a_symlink_out_of_the_root_is_never_read(hostile: HostileCorpus, tmp_path: Path) -> None:
    manifest = _validate(hostile.root, _profile(tmp_path), tmp_path / "out")
    row = manifest.loc[hostile.cases["symlink_outside_root"]]
    assert not row["is_inside_root"] and pd.isna(row["sha256"]) and pd.isna(row["width_px"])
    assert "outside the data root" in row["read_error"]
    assert manifest["is_inside_root"].sum() == len(manifest) - 1


@pytest.fixture(scope="module")
def trained_on_hostile(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Validate the corpus, then change three accepted files, then train on the manifest."""
    base = tmp_path_factory.mktemp("hostile-train")
    hostile = write_hostile_folder(base / "hostile")
    profile = _profile(base, LENIENT_PROFILE)
    checked = base / "checked"
    manifest = _validate(hostile.root, profile, checked)
    accepted = set(manifest.index[manifest["status"] == "accepted"])
    gone, rewritten, relinked = [*hostile.clean["happy"][:1], *hostile.clean["sad"][:2]]
    (hostile.root / gone).unlink()
    write_image(hostile.root / rewritten, seed=4242)
    (hostile.root / relinked).unlink()
    os.symlink(_outside_root(hostile) / "secret.jpg", hostile.root / relinked)
    before = snapshot(hostile.root)
    run = base / "run"
    code = main(
        ["train", "--manifest", str(checked / "manifest.parquet"), "--model", "seed",
         "--image-size", "32", "--epochs", "2", "--batch-size", "4", "--out", str(run)]
    )  # fmt: skip
    return {"hostile": hostile, "run": run, "code": code, "accepted": accepted, "before": before,
            "changed": {gone: "vanished", rewritten: "changed", relinked: "outside the data root"},
            "profile": profile, "base": base}  # fmt: skip


def test_training_reads_only_accepted_files_and_names_each_changed_one(
    trained_on_hostile: dict,
) -> None:
    t = trained_on_hostile
    assert t["code"] == 0
    run_manifest = read_manifest(t["run"])
    in_split = set(run_manifest.loc[run_manifest["split"].notna(), "path"])
    assert in_split == t["accepted"]  # rejected files never get a split
    left_out = {d["path"]: d["why"] for d in json.loads((t["run"] / "run.json").read_text())
                ["left_out"]}  # fmt: skip
    assert set(left_out) == set(t["changed"])
    for path, why in t["changed"].items():
        assert why in left_out[path], (path, left_out[path])


def test_no_command_changes_the_data_root(trained_on_hostile: dict, tmp_path: Path) -> None:
    t = trained_on_hostile
    hostile: HostileCorpus = t["hostile"]
    outside = snapshot(_outside_root(hostile))
    assert snapshot(hostile.root) == t["before"]  # training
    main(["validate", str(hostile.root), "-p", str(t["profile"]), "-o", str(tmp_path / "v")])
    main(["evaluate", str(t["run"]), str(hostile.root), "--profile", str(t["profile"])])
    files = [str(hostile.root / rel) for rel in hostile.cases.values() if rel]
    main(["predict", str(t["run"]), *files])
    assert snapshot(hostile.root) == t["before"]
    assert snapshot(_outside_root(hostile)) == outside


def test_predict_names_each_bad_file_and_labels_the_good_ones(
    trained_on_hostile: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    t = trained_on_hostile
    hostile: HostileCorpus = t["hostile"]
    good = ["cmyk_jpeg", "png16", "grayscale", "palette_png", "rgba_png", "exif_rotated_jpeg",
            "bmp", "nested_deep", "html_injection_name",
            "symlink_outside_root"]  # named on the command line: the user's own choice  # fmt: skip
    bad = ["zero_byte", "truncated_jpeg", "random_bytes_jpg", "html_as_jpg", "svg", "bomb",
           "dir_named_jpg", "dangling_symlink", "symlink_loop"]  # fmt: skip
    files = [str(hostile.root / hostile.cases[c]) for c in good + bad]
    code = main(["predict", str(t["run"]), "--json", *files])
    results = json.loads(capsys.readouterr().out)
    assert code == 1 and [r["path"] for r in results] == files
    for case, result in zip(good + bad, results, strict=True):
        assert (result["error"] is not None) == (case in bad), (case, result)


def test_evaluate_scores_the_good_files_and_counts_the_rejected(
    trained_on_hostile: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    t = trained_on_hostile
    code = main(["evaluate", str(t["run"]), str(t["hostile"].root), "--profile",
                 str(t["profile"]), "--json"])  # fmt: skip
    scores = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (
        scores["n_scored"] > 0
        and scores["n_rejected"] >= len([v for v in VERDICTS.values() if isinstance(v, str)]) - 1
    )  # the label conflict's two files count once each; skipped cases may be absent


# --------------------------------------------------------------------------------------
# Atomic writes and concurrency, with real processes

_TOOLKIT = [sys.executable, "-m", "toolkit"]


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}


def _assert_whole_or_absent(out: Path) -> None:
    """Whatever validate left in `out` reads back whole; no temporary file is left visible."""
    if (out / "manifest.parquet").exists():
        read_manifest(out)
    if (out / "report.json").exists():
        json.loads((out / "report.json").read_text())
    if (out / "manifest.csv").exists():
        pd.read_csv(out / "manifest.csv")
    if (out / "report.html").exists():
        assert (out / "report.html").read_text().rstrip().endswith("</html>")


def _writing(out: Path) -> bool:
    """A temporary output file is being written: in OUT, or in a run's staging folder."""
    for folder in [out, *out.glob(".staging-*")]:
        try:
            if any(name.endswith(".tmp") for name in os.listdir(folder)):
                return True
        except FileNotFoundError:  # the staging folder was just renamed away
            continue
    return False


def _kill_validation(
    root: Path, profile: Path, out: Path, *, at_first_write: bool, after: float = 60.0
) -> int:
    """Run `toolkit validate --no-cache` in a process and kill -9 it: at its first temporary
    output file (mid-write), or `after` seconds (anywhere)."""
    proc = subprocess.Popen(
        [*_TOOLKIT, "validate", str(root), "-p", str(profile), "-o", str(out), "--no-cache"],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + (60 if at_first_write else after)
    while proc.poll() is None and time.monotonic() < deadline:
        if at_first_write and _writing(out):
            break
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    return proc.wait()


@pytest.mark.parametrize(
    "at_first_write", [True, False], ids=["mid-write", "after a whole run's work"]
)
def test_a_validation_killed_leaves_whole_files_or_the_old_ones(
    hostile: HostileCorpus, tmp_path: Path, at_first_write: bool
) -> None:
    out = tmp_path / "out"
    profile = _profile(tmp_path)
    started = time.monotonic()
    main(["validate", str(hostile.root), "-p", str(profile), "-o", str(out)])
    # as long as a run in this process, which paid no start-up: the killed process pays it
    # and rescans all, so it is still at work, past its start-up when the work is longer
    after = time.monotonic() - started
    before = read_manifest(out)
    code = _kill_validation(hostile.root, profile, out, at_first_write=at_first_write, after=after)
    assert code == -signal.SIGKILL  # killed before it finished, not after
    _assert_whole_or_absent(out)
    pd.testing.assert_frame_equal(read_manifest(out), before)  # old, or new and identical


def test_two_validations_of_one_folder_at_once_both_finish_alike(
    hostile: HostileCorpus, tmp_path: Path
) -> None:
    profile = _profile(tmp_path)
    outs = [tmp_path / "a", tmp_path / "b", tmp_path / "a"]  # two share one output folder
    procs = [
        subprocess.Popen(
            [*_TOOLKIT, "validate", str(hostile.root), "-p", str(profile), "-o", str(out)],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for out in outs
    ]
    errors = [p.communicate(timeout=180)[1].decode(errors="replace")[-2000:] for p in procs]
    assert [p.returncode for p in procs] == [1, 1, 1], errors  # 1: the empty class fails
    for out in set(outs):
        _assert_whole_or_absent(out)
        assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
        assert read_run_id(out)  # one run's set, never a mix of the two
    a, b = read_manifest(tmp_path / "a"), read_manifest(tmp_path / "b")
    pd.testing.assert_frame_equal(a, b)


def test_the_bomb_is_judged_in_bounded_memory(hostile: HostileCorpus, tmp_path: Path) -> None:
    # 40000 x 40000 px decoded would take 1.6 GB; the header check must keep the scan small
    root = tmp_path / "bomb"
    (root / "sad").mkdir(parents=True)
    (root / "sad" / "bomb.png").write_bytes((hostile.root / hostile.cases["bomb"]).read_bytes())
    probe = (
        "import resource, sys; from toolkit.scan import scan_folder; from PIL import Image;"
        "import cv2;"  # what a scan imports, before the baseline
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        "m = scan_folder(sys.argv[1], jobs=1);"
        "assert not m['is_decodable'].any(), m.T;"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(root)], env=_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    grown_mb = int(done.stdout.split()[-1])
    assert grown_mb < BOMB_MEMORY_LIMIT_MB, f"scanning the bomb took {grown_mb} MB more"


# --------------------------------------------------------------------------------------
# The output folder: every writing command refuses, before any work, an output among the
# data, a file, or a folder it cannot write, and never replaces what it did not write

_REFUSED_OUTPUT = "toolkit: error: "


def _one_line_refusal(code: int, capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(_REFUSED_OUTPUT), (code, err)
    return lines[0]


def test_validate_into_a_class_folder_refuses_and_keeps_the_user_s_files(
    clean_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the example: a user folder named manifest.parquet (a photo in it) and a user
    # report.json in the class folder; today's toolkit deleted the one and overwrote the other
    happy = clean_root / "happy"
    write_image(happy / "manifest.parquet" / "holiday.jpg", seed=7)
    (happy / "report.json").write_text('{"my": "notes"}\n', encoding="utf-8")
    before = snapshot(clean_root)
    code = main(["validate", str(clean_root), "-p", str(_profile(tmp_path)), "--out", str(happy)])
    line = _one_line_refusal(code, capsys)
    assert f"{happy}: --out lies inside the data folder" in line
    assert snapshot(clean_root) == before  # every byte, and no new file (manifest.csv...)


def _user_file(tmp_path: Path, root: Path) -> Path:
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    return tmp_path / "notes.txt"


def _under_user_file(tmp_path: Path, root: Path) -> Path:
    # the one unwritable place a test can make as root: below a regular file
    return _user_file(tmp_path, root) / "out"


def _symlink_into_data(tmp_path: Path, root: Path) -> Path:
    (tmp_path / "link").symlink_to(root / "sad", target_is_directory=True)
    return tmp_path / "link"


def _holding_user_report(tmp_path: Path, root: Path) -> Path:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.json").write_text('{"passed": 3}', encoding="utf-8")
    return tmp_path / "out"


def _holding_folder_named_report_html(tmp_path: Path, root: Path) -> Path:
    (tmp_path / "out" / "report.html").mkdir(parents=True)
    (tmp_path / "out" / "report.html" / "index.html").write_text("mine", encoding="utf-8")
    return tmp_path / "out"


@pytest.mark.parametrize(
    ("make_out", "problem"),
    [
        (lambda tmp, root: root, "--out is the data folder"),
        (lambda tmp, root: tmp, "--out contains the data folder"),
        (_symlink_into_data, "--out lies inside the data folder"),
        (_user_file, "--out is a regular file, not a folder"),
        (_under_user_file, "--out cannot be created"),
        (_holding_user_report, "not an output the toolkit wrote"),
        (_holding_folder_named_report_html, "not an output the toolkit wrote"),
    ],
    ids=[
        "the output folder is the data folder",
        "the output folder holds the data folder",
        "the output folder is a symlink to a class folder",
        "the output path is an existing file",
        "the output folder would be made below a file",
        "the output folder holds a report.json the toolkit did not write",
        "the output folder holds a folder where report.html would go",
    ],
)
def test_validate_refuses_an_output_folder_it_must_not_write(
    clean_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], make_out, problem: str
) -> None:
    out = make_out(tmp_path, clean_root)
    (tmp_path / "profile").mkdir()
    profile = _profile(tmp_path / "profile")  # before the snapshot: tmp_path holds the data
    before = snapshot(tmp_path)
    code = main(["validate", str(clean_root), "-p", str(profile), "--out", str(out)])
    assert problem in _one_line_refusal(code, capsys)
    assert snapshot(tmp_path) == before
    assert not list(tmp_path.rglob(".staging-*"))


@pytest.fixture
def validated_run(clean_root: Path, tmp_path: Path) -> Path:
    """A validate run folder of the clean folder, beside it."""
    run = tmp_path / "run"
    assert main(["validate", str(clean_root), "-p", str(_profile(tmp_path)), "-o", str(run),
                 "--no-html", "--no-faces"]) == 0  # fmt: skip
    return run


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "{data}", "--out", "{data}/happy"],
        ["validate", "{data}", "--out", "{data}/happy", "--engine", "dask", "--workers", "1"],
        ["scan", "{data}", "--out", "{data}/sad/scan"],
        ["train", "{data}", "--out", "{data}/happy/run"],
        ["train", "--manifest", "{run}", "--out", "{data}/run"],
        ["train", "--manifest", "{run}", "--out", "{run}"],
        ["quarantine", "{run}", "--into", "{data}/quarantine"],
        ["quarantine", "{run}", "--into", "{run}/quarantine"],
        ["quarantine", "{run}", "--into", "{data}/.."],
    ],
    ids=[
        "validate into a class folder",
        "validate on Dask into a class folder, before a cluster starts",
        "scan into a class folder",
        "train into a class folder",
        "train on a manifest into its data folder",
        "train on a manifest into its own validate folder",
        "quarantine into the data folder",
        "quarantine into the run folder",
        "quarantine into a folder holding the data",
    ],
)
def test_every_writing_command_refuses_an_output_among_the_data(
    clean_root: Path,
    validated_run: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    capsys.readouterr()
    before, run_before = snapshot(clean_root), snapshot(validated_run)
    args = [a.format(data=clean_root, run=validated_run) for a in argv]
    began = time.monotonic()
    line = _one_line_refusal(main(args), capsys)
    assert any(why in line for why in ("the data folder", "the run folder", "already holds"))
    assert time.monotonic() - began < 10  # refused before a scan, a cluster or TensorFlow
    assert snapshot(clean_root) == before and snapshot(validated_run) == run_before
    assert not (clean_root / "happy" / "run").exists() and not (clean_root / "run").exists()


@pytest.mark.parametrize(
    "command",
    [["validate", "."], ["scan", "."], ["train", "."]],
    ids=["validate", "scan", "train"],
)
def test_the_default_output_folder_is_checked_too(
    clean_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    monkeypatch.chdir(clean_root)  # runs/<name> would land inside the data
    before = snapshot(clean_root)
    line = _one_line_refusal(main(command), capsys)
    assert "lies inside the data folder" in line
    assert snapshot(clean_root) == before and not (clean_root / "runs").exists()


@pytest.mark.parametrize(
    "out",
    ["{data}/happy/run", "{busy}"],
    ids=["the run folder inside the data", "a folder holding files but no run"],
)
def test_train_refuses_before_tensorflow_starts(clean_root: Path, tmp_path: Path, out: str) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "history.csv").write_text("epoch,loss\n", encoding="utf-8")
    probe = (
        "import sys; from toolkit.cli import main; code = main(sys.argv[1:]);"
        "print(code, 'tensorflow' in sys.modules)"
    )
    target = out.format(data=clean_root, busy=busy)
    done = subprocess.run(
        [sys.executable, "-c", probe, "train", str(clean_root), "--out", target],
        env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.stdout.split()[-2:] == ["2", "False"], done.stderr[-2000:]
    assert "lies inside the data folder" in done.stderr or "already holds files" in done.stderr
    assert not (clean_root / "happy" / "run").exists()
    assert (busy / "history.csv").read_text(encoding="utf-8") == "epoch,loss\n"


def test_a_dask_manifest_never_replaces_a_user_folder(
    clean_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    write_image(out / "manifest.parquet" / "holiday.jpg", seed=7)
    before = snapshot(out)
    code = main(["validate", str(clean_root), "-p", str(_profile(tmp_path)), "-o", str(out),
                 "--engine", "dask", "--workers", "1"])  # fmt: skip
    assert "manifest.parquet: is not an output the toolkit wrote" in _one_line_refusal(code, capsys)
    assert snapshot(out) == before


# --------------------------------------------------------------------------------------
# One run's outputs belong together: a run id in each, put in place together


def test_every_output_of_one_validation_carries_its_run_id(
    clean_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    profile = str(_profile(tmp_path))
    ids = []
    for _ in range(2):
        main(["validate", str(clean_root), "-p", profile, "-o", str(out), "--no-faces",
              "--data-docs"])  # fmt: skip
        found = read_run_ids(out)
        assert set(found) == {"manifest.parquet", "report.json", "report.html", "data_docs"}
        ids.append(read_run_id(out))
        assert json.loads((out / "report.json").read_text())["run_id"] == ids[-1]
        assert read_manifest(out).attrs["run_id"] == ids[-1]
    assert ids[0] != ids[1]  # each run its own id
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    main(["scan", str(clean_root), "-o", str(out), "--no-faces"])  # a scan replaces the set
    assert set(read_run_ids(out)) == {"manifest.parquet"} and read_run_id(out) != ids[1]


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


def test_a_validation_that_dies_after_its_manifest_leaves_the_previous_set(
    clean_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_dir: Path
) -> None:
    import toolkit.report

    out = tmp_path / "out"
    args = ["validate", str(clean_root), "-p", str(_profile(tmp_path)), "-o", str(out),
            "--no-faces"]  # fmt: skip
    main(args)
    before, old_id = _outputs(out), read_run_id(out)

    def die(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed after the manifest, before report.json")

    monkeypatch.setattr(toolkit.report, "write_report_json", die)
    with contextlib.suppress(RuntimeError):  # raised, or exit 3 where the CLI maps crashes
        main(args)
    assert _outputs(out) == before and read_run_id(out) == old_id
    assert sorted(p.name for p in out.iterdir()) == sorted(before)


def test_a_validation_killed_mid_write_leaves_one_run_s_outputs(
    clean_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    profile = _profile(tmp_path)
    main(["validate", str(clean_root), "-p", str(profile), "-o", str(out)])
    before, old_id = _outputs(out), read_run_id(out)
    assert _kill_validation(clean_root, profile, out, at_first_write=True) == -signal.SIGKILL
    assert _outputs(out) == before and read_run_id(out) == old_id  # its staging is all it left
    main(["validate", str(clean_root), "-p", str(profile), "-o", str(out)])
    assert read_run_id(out) not in (None, old_id)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # the dead run's too


# --------------------------------------------------------------------------------------
# Records read back are untrusted input (issue 26, item 2): every command that reads a
# manifest, quarantine.json or run.json refuses an edited one with exit 2 and one line,
# before it reads, moves or trains anything, and nothing outside the folders is touched.


def _small_validated(base: Path) -> tuple[Path, Path]:
    """A clean two-class folder validated with the tiny profile: (data root, run folder)."""
    root = base / "data"
    write_clean_folder(root, n_per_class=6)
    (root / "happy" / "broken.jpg").write_bytes(b"<html>403</html>")  # one to quarantine
    checked = base / "checked"
    assert main(["validate", str(root), "-p", str(_profile(base)), "-o", str(checked)]) == 0
    return root, checked


def _edit_parquet(target: Path, path0: object = "keep", root: object = "keep") -> None:
    """Rewrite a manifest.parquet as an attacker could: the first path, the recorded root."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(target)
    if path0 != "keep":
        paths = table.column("path").to_pylist()
        paths[0] = path0
        if isinstance(path0, int):  # a whole column of numbers
            paths = [path0 + i for i in range(len(paths))]
        index = table.column_names.index("path")
        table = table.set_column(index, "path", pa.array(paths))
    meta = dict(table.schema.metadata or {})
    if root != "keep":
        attrs = json.loads(meta[b"toolkit"])
        attrs["root"] = root
        meta[b"toolkit"] = json.dumps(attrs).encode()
    pq.write_table(table.replace_schema_metadata(meta), target)


def _one_error_line(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("toolkit: error: "), lines
    assert all(w in lines[0] for w in words), (words, lines[0])
    return lines[0]


#: An edited manifest -> (first path, recorded root, what the refusal says)
EDITED_MANIFESTS = {
    "a NUL byte in a path": ("happy/a\x00.jpg", "keep", "holds a NUL byte"),
    "a path climbing out": ("../../outside/secret.jpg", "keep", "climbs out"),
    "an absolute path": ("/etc/passwd", "keep", "is absolute"),
    "a null path": (None, "keep", "have no path"),
    "a path that is a number": (7, "keep", "not text"),
    "a relative recorded root": ("keep", "data", "not an absolute path"),
    "a recorded root with a NUL byte": ("keep", "/tmp\x00/data", "holds a NUL byte"),
}


@pytest.mark.parametrize("command", ["train --manifest", "quarantine"])
@pytest.mark.parametrize("case", list(EDITED_MANIFESTS), ids=list(EDITED_MANIFESTS))
def test_an_edited_manifest_is_refused_by_every_command_reading_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, case: str
) -> None:
    root, checked = _small_validated(tmp_path)
    path0, recorded_root, words = EDITED_MANIFESTS[case]
    _edit_parquet(checked / "manifest.parquet", path0, recorded_root)
    before, outside = snapshot(root), snapshot(tmp_path / "checked")
    capsys.readouterr()
    if command == "quarantine":
        args = ["quarantine", str(checked), "--into", str(tmp_path / "q")]
    else:
        args = ["train", "--manifest", str(checked / "manifest.parquet"), "--model", "seed",
                "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 2
    _one_error_line(capsys, "manifest.parquet", words)
    assert snapshot(root) == before and snapshot(tmp_path / "checked") == outside
    assert not (tmp_path / "q" / "quarantine.json").exists()


def test_training_refuses_a_manifest_whose_data_folder_is_gone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, checked = _small_validated(tmp_path)
    root.rename(tmp_path / "moved")
    capsys.readouterr()
    code = main(["train", "--manifest", str(checked / "manifest.parquet"), "--model", "seed",
                 "--out", str(tmp_path / "run")])  # fmt: skip
    assert code == 2
    _one_error_line(capsys, "root", "not an existing folder")
    assert not (tmp_path / "run" / "run.json").exists()


def test_restore_refuses_a_record_moving_a_file_between_two_outside_places(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The example of the issue: `..` in quarantine.json once moved a file from outside both
    folders to another place outside them."""
    root, checked = _small_validated(tmp_path)
    into = tmp_path / "q" / "deeper"
    assert main(["quarantine", str(checked), "--into", str(into)]) == 0
    secret = tmp_path / "outside" / "secret.jpg"
    secret.parent.mkdir()
    secret.write_bytes(b"not yours")
    record = json.loads((into / "quarantine.json").read_text())
    record["files"].append({"path": "../../outside/secret.jpg", "moved": True,
                            "sha256": hashlib.sha256(b"not yours").hexdigest()})  # fmt: skip
    (into / "quarantine.json").write_text(json.dumps(record))
    before = snapshot(root)
    capsys.readouterr()
    assert main(["restore", str(into)]) == 2
    _one_error_line(capsys, "quarantine.json: files[1].path", "climbs out")
    assert secret.read_bytes() == b"not yours" and snapshot(root) == before
    assert not (tmp_path.parent / "outside").exists()


def _craft_run(run: Path, case: str, fifo_swap: Callable[[Path], Path]) -> None:
    config = json.loads((run / "run.json").read_text())
    config["status"] = "training"  # so that --resume reads it too
    if case == "labels that are not a list":
        config["labels"] = "happy"
    elif case == "a negative image size":
        config["input"]["size"] = -1
    elif case == "an unknown input key":
        config["input"]["path"] = "/etc/passwd"
    elif case == "a duplicate label":
        config["labels"] = ["happy", "happy"]
    elif case == "a model file linked out of the run":
        (run / "model.keras").rename(run.parent / "model.keras")
        (run / "model.keras").symlink_to(run.parent / "model.keras")
    elif case == "a model file that is a FIFO":
        fifo_swap(run / "model.keras")
    (run / "run.json").write_text(json.dumps(config))


CRAFTED_RUNS = {
    "labels that are not a list": "labels",
    "a negative image size": "input.size",
    "an unknown input key": "input",
    "a duplicate label": "labels",
    "a model file linked out of the run": "leads outside",
    "a model file that is a FIFO": "FIFO",
}


#: Each command with each crafted run it reads (resuming reads no model.keras, but its own
#: checkpoints: see the test after this one).
RUN_READERS = [
    (command, case)
    for command in ("evaluate", "predict", "audit", "train --resume")
    for case in CRAFTED_RUNS
    if not (command == "train --resume" and "model file" in case)
]


@pytest.mark.parametrize(
    ("command", "case"), RUN_READERS, ids=[f"{cmd}: {case}" for cmd, case in RUN_READERS]
)
def test_a_crafted_run_json_is_refused_by_every_command_reading_it(
    trained_on_hostile: dict,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fifo_swap: Callable[[Path], Path],
    command: str,
    case: str,
) -> None:
    run = tmp_path / "runs" / "run"
    shutil.copytree(trained_on_hostile["run"], run)
    _craft_run(run, case, fifo_swap)
    data = tmp_path / "data"
    write_clean_folder(data, n_per_class=2)
    before = snapshot(data)
    capsys.readouterr()
    args = {
        "evaluate": ["evaluate", str(run), str(data)],
        "predict": ["predict", str(run), str(data / "happy" / "happy_000.jpg")],
        "audit": ["audit", str(run)],
        "train --resume": ["train", "--resume", "--out", str(run)],
    }[command]
    assert main(args) == 2
    _one_error_line(capsys, CRAFTED_RUNS[case])
    assert snapshot(data) == before


def test_a_resumed_run_with_crafted_options_is_refused(
    trained_on_hostile: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_on_hostile["run"], run)
    config = json.loads((run / "run.json").read_text())
    config.update(status="training", options={**config["options"], "batch_size": "4; rm -rf"})
    (run / "run.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(run)]) == 2
    _one_error_line(capsys, "run.json: options.batch_size")


@pytest.mark.parametrize(
    "case",
    ["history.csv is a FIFO", "a checkpoint is a link out of the run", "checkpoints is a link"],
)
def test_a_resumed_run_refuses_special_files_among_its_checkpoints(
    trained_on_hostile: dict,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fifo_swap: Callable[[Path], Path],
    case: str,
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_on_hostile["run"], run)
    config = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**config, "status": "training"}))
    (tmp_path / "elsewhere").mkdir()
    if case == "history.csv is a FIFO":
        fifo_swap(run / "history.csv")
    elif case == "checkpoints is a link":
        shutil.rmtree(run / "checkpoints", ignore_errors=True)
        (run / "checkpoints").symlink_to(tmp_path / "elsewhere")
    else:
        (run / "checkpoints").mkdir(exist_ok=True)
        (run / "checkpoints" / "best.weights.h5").unlink(missing_ok=True)
        (run / "checkpoints" / "best.weights.h5").symlink_to(tmp_path / "elsewhere" / "w.h5")
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(run)]) == 2
    _one_error_line(capsys, "not what training writes")


def test_a_resumed_run_with_an_edited_manifest_is_refused(
    trained_on_hostile: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_on_hostile["run"], run)
    config = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**config, "status": "training"}))
    _edit_parquet(run / "manifest.parquet", "../../../etc/passwd")
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(run)]) == 2
    _one_error_line(capsys, "manifest.parquet: path[0]", "climbs out")


# --------------------------------------------------------------------------------------
# Special files wherever a path is opened (issue 26, item 3): a file swapped for a FIFO (or
# a socket, or a folder) after validation is named, never waited on. The fifo_swap fixture
# fails a test that blocks instead of letting it hang the run.


def test_the_scan_names_a_file_swapped_for_a_fifo_after_its_stat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fifo_swap: Callable[[Path], Path]
) -> None:
    from toolkit.scan import FileScanner, ScanOptions

    write_clean_folder(tmp_path / "data", n_per_class=1)
    stat_only = FileScanner._fill_stat

    def stat_then_swap(self: FileScanner, row: dict, full: str) -> None:
        stat_only(self, row, full)  # it was a regular file here ...
        fifo_swap(Path(full))  # ... and is a FIFO when the scan opens it

    monkeypatch.setattr(FileScanner, "_fill_stat", stat_then_swap)
    row = FileScanner(tmp_path / "data", ScanOptions(detect_faces=False)).scan(
        "happy/happy_000.jpg"
    )
    assert not row["is_readable"] and "FIFO" in row["read_error"]


def test_training_leaves_out_a_file_swapped_for_a_fifo(
    tmp_path: Path, fifo_swap: Callable[[Path], Path]
) -> None:
    root, checked = _small_validated(tmp_path)
    fifo_swap(root / "sad" / "sad_000.jpg")
    run = tmp_path / "run"
    code = main(
        ["train", "--manifest", str(checked / "manifest.parquet"), "--model", "seed",
         "--image-size", "32", "--epochs", "1", "--batch-size", "4", "--out", str(run)]
    )  # fmt: skip
    assert code == 0
    left_out = {d["path"]: d["why"] for d in json.loads((run / "run.json").read_text())
                ["left_out"]}  # fmt: skip
    assert list(left_out) == ["sad/sad_000.jpg"] and "FIFO" in left_out["sad/sad_000.jpg"]


def test_evaluate_leaves_out_a_file_swapped_for_a_fifo_after_validation(
    trained_on_hostile: dict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fifo_swap: Callable[[Path], Path],
) -> None:
    import toolkit.validate

    data = tmp_path / "data"
    write_clean_folder(data, n_per_class=3)
    validate = toolkit.validate.validate_manifest

    def validate_then_swap(*args: object, **kwargs: object) -> object:
        result = validate(*args, **kwargs)
        fifo_swap(data / "happy" / "happy_001.jpg")  # accepted, then swapped
        return result

    monkeypatch.setattr(toolkit.validate, "validate_manifest", validate_then_swap)
    capsys.readouterr()
    code = main(["evaluate", str(trained_on_hostile["run"]), str(data), "--profile",
                 str(trained_on_hostile["profile"]), "--json"])  # fmt: skip
    scores = json.loads(capsys.readouterr().out)
    assert code == 0 and scores["n_scored"] == 5
    (left,) = scores["left_out"]
    assert left["path"] == "happy/happy_001.jpg" and "FIFO" in left["why"]


@pytest.mark.parametrize(
    "kind",
    ["fifo", "socket", "folder", "fifo after the scan"],
    ids=["a FIFO", "a unix socket", "a folder named x.jpg", "a file swapped after its scan"],
)
def test_predict_gives_a_special_file_its_error_line(
    trained_on_hostile: dict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fifo_swap: Callable[[Path], Path],
    kind: str,
) -> None:
    from toolkit.scan import FileScanner

    write_clean_folder(tmp_path / "data", n_per_class=1)
    good, special = tmp_path / "data" / "happy" / "happy_000.jpg", tmp_path / "x.jpg"
    if kind == "fifo":
        fifo_swap(special)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(special))
        sock.close()
    elif kind == "folder":
        special.mkdir()
    else:
        shutil.copy(good, special)
        scan = FileScanner.scan

        def scan_then_swap(self: FileScanner, rel: str) -> dict:
            row = scan(self, rel)
            if rel.endswith("x.jpg"):
                fifo_swap(special)
            return row

        monkeypatch.setattr(FileScanner, "scan", scan_then_swap)
    capsys.readouterr()
    code = main(["predict", str(trained_on_hostile["run"]), "--json", str(good), str(special)])
    results = json.loads(capsys.readouterr().out)
    assert code == 1 and [r["error"] is None for r in results] == [True, False]
    assert "regular file" in results[1]["error"], results[1]
