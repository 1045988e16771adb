"""The `toolkit` command as a user runs it: exit codes, summary, files written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import snapshot
from corpus import HostileCorpus, write_single_class_folder
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit import __version__
from toolkit.cli import main
from toolkit.manifest import read_manifest


def test_validate_clean_folder_passes(
    clean_root: Path, tiny_profile: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main(["validate", str(clean_root), "--profile", str(tiny_profile), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "verdict: PASSED" in printed and "accepted 8, rejected 0" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is True and report["n_accepted"] == 8
    assert set(report) >= {"passed", "n_files", "n_accepted", "n_rejected", "by_rule", "classes",
                           "findings", "profile", "toolkit_version"}  # fmt: skip
    assert report["classes"] == {"happy": {"n_files": 4, "n_accepted": 4},
                                 "sad": {"n_files": 4, "n_accepted": 4}}  # fmt: skip
    assert len(pd.read_csv(out / "manifest.csv")) == 8
    assert (read_manifest(out)["status"] == "accepted").all()


def test_validate_hostile_folder_names_file_and_rule_and_changes_nothing(
    hostile: HostileCorpus, tiny_profile: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(hostile.root)
    out = tmp_path / "run"
    code = main(["validate", str(hostile.root), "-p", str(tiny_profile), "-o", str(out)])
    printed = capsys.readouterr().out
    assert snapshot(hostile.root) == before
    assert code == 1  # the empty neutral/ class breaks min_files_per_class
    verdict = printed.strip().splitlines()[-1]
    assert verdict.startswith("verdict: FAILED (") and "min_files_per_class" in verdict, verdict
    assert f"{hostile.cases['zero_byte']}: allowed_format: content is empty" in printed
    report = json.loads((out / "report.json").read_text())
    rules_of = {}
    for f in report["findings"]:
        rules_of.setdefault(f["path"], set()).add(f["rule"])
    expected = {
        "zero_byte": "allowed_format", "truncated_jpeg": "decodable", "svg": "decodable",
        "html_as_jpg": "decodable", "random_bytes_jpg": "decodable", "animated_gif": "not_animated",
        "bomb": "max_pixels", "dangling_symlink": "readable", "symlink_loop": "readable",
        "ds_store": "not_hidden", "appledouble": "not_hidden", "png_named_jpg":
        "format_matches_extension", "webp": "allowed_format", "stray_root_file": "in_class_folder",
        "label_conflict": "label_conflict", "label_conflict_other": "label_conflict",
        "exact_duplicate": "exact_duplicate",
    }  # fmt: skip
    for case, rule in expected.items():
        assert rule in rules_of.get(hostile.cases[case], set()), case
    assert {"min_files_per_class", "class_balance"} == rules_of["neutral/"]
    manifest = read_manifest(out).set_index("path")
    assert manifest.loc[hostile.cases["truncated_jpeg"], "status"] == "rejected"
    assert manifest.loc[hostile.cases["exact_duplicate"], "status"] == "accepted"  # a warning
    assert report["n_files"] == len(manifest) == report["n_accepted"] + report["n_rejected"]


def test_single_class_fails_min_classes(
    tmp_path: Path, tiny_profile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_single_class_folder(tmp_path / "one")
    code = main(["validate", str(root), "-p", str(tiny_profile), "-o", str(tmp_path / "r")])
    assert code == 1
    assert ".: min_classes: 1 class with accepted files, 2 needed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["validate", "{tmp}/nope"], "no such folder"),
        (["validate", "{clean}", "--profile", "no-such-profile"], "no such built-in profile"),
        (["validate", "{clean}", "--jobs", "0"], "Invalid value"),
        (["frobnicate"], "No such command"),
    ],
    ids=["missing folder", "unknown profile", "bad option value", "unknown command"],
)
def test_usage_errors_exit_2_with_one_line(
    args: list[str], message: str, clean_root: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    argv = [a.format(tmp=tmp_path, clean=clean_root) for a in args]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_scan_writes_a_manifest_only(clean_root: Path, tmp_path: Path) -> None:
    assert main(["scan", str(clean_root), "-o", str(tmp_path / "s"), "--no-faces"]) == 0
    manifest = read_manifest(tmp_path / "s")
    assert len(manifest) == 8 and "status" not in manifest


def test_profiles_lists_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles"]) == 0
    printed = capsys.readouterr().out
    assert "tutorial:" in printed and "small-faces:" in printed
    assert "file size >= 9,216 bytes" in printed


def test_python_dash_m_and_help_answer() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "toolkit", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "validate" in done.stdout


def test_readme_quick_start_commands_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "tox -e validate" in quick and "\n    tox " in quick
    tox_ini = (Path(__file__).resolve().parents[1] / "tox.ini").read_text()
    assert "commands = toolkit validate {posargs}" in tox_ini  # what `tox -e validate` runs
    monkeypatch.chdir(tmp_path)
    assert main(["validate"]) == 0  # no folder: the demo set, generated once
    printed = capsys.readouterr()
    assert "wrote the demo set into data/demo" in printed.err
    assert "verdict: PASSED" in printed.out and "label_conflict" in printed.out
    report = json.loads((tmp_path / "runs" / "demo" / "report.json").read_text())
    assert report["by_rule"]["label_conflict"] == 2 and report["by_rule"]["decodable"] >= 2


def _write_big_png(path: Path) -> Path:
    """A 12000x9000 px (108 MP) one-bit black PNG: over 100 MP, yet small on disk and quick
    to decode."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("1", (12000, 9000)).save(path)
    return path


@pytest.mark.parametrize(
    ("max_pixels", "decoded", "rules"),
    [(200_000_000, True, ["min_entropy"]), (None, False, ["decodable", "max_pixels"])],
    ids=[
        "a profile that raises max_pixels gets a 108 MP image decoded, its flat black a warning",
        "the tutorial's 100 MP limit leaves it undecoded and rejected by max_pixels",
    ],
)
def test_max_pixels_of_the_profile_is_the_scans_decode_limit(
    clean_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    max_pixels: int | None, decoded: bool, rules: list[str],
) -> None:  # fmt: skip
    from conftest import TINY_PROFILE

    _write_big_png(clean_root / "happy" / "big.png")
    profile = tmp_path / "big.toml"
    extra = "" if max_pixels is None else f"[rules.max_pixels]\nmax_pixels = {max_pixels}\n"
    profile.write_text(TINY_PROFILE + extra, encoding="utf-8")
    out = tmp_path / "run"
    code = main(["validate", str(clean_root), "-p", str(profile), "-o", str(out), "--no-faces"])
    capsys.readouterr()
    row = read_manifest(out).set_index("path").loc["happy/big.png"]
    assert bool(row["is_decodable"]) is decoded
    findings = json.loads((out / "report.json").read_text())["findings"]
    assert sorted(f["rule"] for f in findings if f["path"] == "happy/big.png") == rules
    assert row["status"] == ("accepted" if decoded else "rejected")
    assert code == 0


def test_max_pixels_lowered_in_the_profile_stops_the_scan_decoding_above_it(
    clean_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import TINY_PROFILE

    profile = tmp_path / "low.toml"
    profile.write_text(TINY_PROFILE + "[rules.max_pixels]\nmax_pixels = 1000\n", encoding="utf-8")
    out = tmp_path / "run"
    main(["validate", str(clean_root), "-p", str(profile), "-o", str(out), "--no-faces"])
    capsys.readouterr()
    manifest = read_manifest(out)
    assert len(manifest) == 8 and not manifest["is_decodable"].any()  # 32x32 = 1024 px each
    assert manifest["decode_error"].str.startswith("not decoded: declares 32x32").all()
    assert manifest["decode_error"].str.endswith("over the scan's 1,000 px limit").all()


# ---------------------------------------------------------------- issue 29: CLI conventions


def _toolkit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`toolkit ARGS` in a fresh process with stdout and stderr captured (neither a terminal);
    the last stdout line says the exit code and whether TensorFlow was imported."""
    probe = (
        "import sys; from toolkit.cli import main; code = main(sys.argv[1:]);"
        "print(code, 'tensorflow' in sys.modules)"
    )
    environ = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-c", probe, *args], env={**environ, **(env or {})},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_version_prints_the_packages_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"toolkit {__version__}\n"


def _fake_run(folder: Path, *, model: bool) -> Path:
    """A run folder whose run.json reads back; with `model` a model file (not a real one)."""
    folder.mkdir(parents=True)
    record = {"status": "finished", "labels": ["happy", "sad"], "input": {"size": 32},
              "model": {"name": "seed"}, "profile": {"name": "tiny", "spec": "tiny"}}  # fmt: skip
    (folder / "run.json").write_text(json.dumps(record), encoding="utf-8")
    if model:
        (folder / "model.keras").write_bytes(b"not opened before the folders are checked")
    return folder


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("evaluate {missing} {data}", "not a run folder"),
        ("predict {missing} {data}/happy/x.png", "not a run folder"),
        ("evaluate {data} {data}", "not a run folder"),
        ("predict {no_model} {data}/happy/x.png", "the run has no model"),
        ("evaluate {no_model} {data}", "the run has no model"),
        ("evaluate {run} {missing}", "no such folder"),
    ],
    ids=[
        "evaluate is given a folder that does not exist",
        "predict is given a folder that does not exist",
        "evaluate is given a data folder instead of a run",
        "predict is given a run that never saved its model",
        "evaluate is given a run that never saved its model",
        "evaluate is given a data folder that does not exist",
    ],
)
def test_a_wrong_folder_is_refused_before_tensorflow_starts(
    clean_root: Path, tmp_path: Path, case: str, expected: str
) -> None:
    folders = {
        "missing": tmp_path / "nowhere",
        "data": clean_root,
        "no_model": _fake_run(tmp_path / "unfinished", model=False),
        "run": _fake_run(tmp_path / "run", model=True),
    }
    done = _toolkit(*case.format(**folders).split())
    assert done.stdout.split()[-2:] == ["2", "False"], done.stderr[-2000:]
    assert expected in done.stderr


@pytest.mark.parametrize(
    "flag",
    ["--verbose", "--debug", "--json"],
    ids=["a global flag after the command", "another global flag", "a command's own option"],
)
def test_global_flags_work_anywhere_on_the_command_line(flag: str) -> None:
    from toolkit.cli import _debug_first

    moved, given = _debug_first(["train", "data", flag], flag="--verbose")
    assert given == (flag == "--verbose")
    assert moved == (["--verbose", "train", "data"] if given else ["train", "data", flag])


@pytest.fixture(scope="module")
def quiet_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One tiny training run and one evaluation, each in a fresh process whose stderr is a
    pipe (not a terminal), as in a CI log or `2> log.txt`."""
    from conftest import TINY_PROFILE
    from test_train import write_learnable_folder

    base = tmp_path_factory.mktemp("quiet")
    data = write_learnable_folder(base / "data", n_per_class=8)
    profile = base / "tiny.toml"
    profile.write_text(TINY_PROFILE, encoding="utf-8")
    run = base / "run"
    trained = _toolkit("train", str(data), "--model", "seed", "--image-size", "32",
                       "--epochs", "1", "--profile", str(profile), "--out", str(run),
                       "--batch-size", "4")  # fmt: skip
    evaluated = _toolkit("evaluate", str(run), str(data))
    return {"train": trained, "evaluate": evaluated, "run": run, "data": data}


@pytest.mark.parametrize("verb", ["train", "evaluate"], ids=["training", "evaluation"])
def test_tensorflow_start_up_noise_stays_off_stderr(quiet_run: dict[str, Any], verb: str) -> None:
    done = quiet_run[verb]
    assert done.stdout.split()[-1:] == ["True"] and done.stdout.split()[-2] == "0", done.stderr
    noise = [line for line in done.stderr.splitlines() if re.match(r"[IWE]0000 ", line)]
    assert noise == []
    assert "oneDNN custom operations" not in done.stderr
    assert "Could not find cuda drivers" not in done.stderr


def test_verbose_lets_tensorflows_own_lines_through(quiet_run: dict[str, Any]) -> None:
    done = _toolkit("evaluate", str(quiet_run["run"]), str(quiet_run["data"]), "--verbose")
    assert done.stdout.split()[-2] == "0", done.stderr[-2000:]
    assert re.search(r"^[IWE]0000 ", done.stderr, re.MULTILINE), done.stderr[-2000:]


@pytest.mark.parametrize("verb", ["train", "evaluate"], ids=["training", "evaluation"])
def test_no_progress_bar_fills_a_redirected_stderr(quiet_run: dict[str, Any], verb: str) -> None:
    stderr = quiet_run[verb].stderr
    assert "decoding" not in stderr and "file/s" not in stderr and "img/s" not in stderr
    assert "\r" not in stderr


@pytest.mark.parametrize(
    ("is_terminal", "drawn"),
    [(True, True), (False, False)],
    ids=["stderr is a terminal: a bar", "stderr is redirected: the items as they are"],
)
def test_a_progress_bar_is_drawn_only_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, is_terminal: bool, drawn: bool
) -> None:
    import io

    from tqdm import tqdm

    from toolkit.progress import progress_bar

    stream = io.StringIO()
    monkeypatch.setattr(stream, "isatty", lambda: is_terminal)
    monkeypatch.setattr(sys, "stderr", stream)
    items = [1, 2, 3]
    bar = progress_bar(items, total=3, desc="decoding")
    assert list(bar) == items
    assert isinstance(bar, tqdm) is drawn
    assert ("decoding" in stream.getvalue()) is drawn


def test_evaluate_names_the_positive_class_and_prints_no_python_reprs(
    quiet_run: dict[str, Any],
) -> None:
    out = quiet_run["evaluate"].stdout
    assert "positive class: sad" in out
    table = out.split("columns: predicted class)\n")[1].splitlines()
    assert table[0].split() == ["happy", "sad"]
    assert [row.split()[0] for row in table[1:3]] == ["happy", "sad"]
    assert sum(int(n) for row in table[1:3] for n in row.split()[1:]) == 16
    trained = quiet_run["train"].stdout
    assert "classes: happy, sad;" in trained
    for printed in (out, trained):
        assert not re.search(r"\[\[|\['|', '", printed), printed


@pytest.mark.parametrize(
    ("labels", "matrix", "expected"),
    [
        (["happy", "sad"], [[16, 0], [1, 15]],
         ["       happy    sad", "happy     16      0", "sad        1     15"]),
        (["a", "b", "c"], [[1200, 0, 3], [0, 7, 0], [2, 0, 9]],
         ["       a      b      c", "a  1,200      0      3", "b      0      7      0",
          "c      2      0      9"]),
        (["ok", "bad\x1b[2J"], [[1, 0], [0, 1]],
         ["                    ok  bad\\x1b[2J", "ok                   1           0",
          "bad\\x1b[2J           0           1"]),
    ],
    ids=[
        "two classes",
        "three classes and a count with thousands",
        "a class name holding a terminal escape is shown escaped, columns kept",
    ],
)  # fmt: skip
def test_the_confusion_matrix_prints_as_a_table_with_class_names(
    labels: list[str], matrix: list[list[int]], expected: list[str]
) -> None:
    from toolkit.cli import confusion_table

    assert confusion_table(labels, matrix) == expected


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.text(min_size=1, max_size=12), min_size=2, max_size=4, unique=True),
    st.integers(0, 10**6),
)
def test_any_class_names_give_a_confusion_table_of_aligned_lines_a_terminal_cannot_obey(
    labels: list[str], count: int
) -> None:
    from toolkit.cli import confusion_table
    from toolkit.text import escape_controls

    matrix = [[count if i == j else 0 for j in range(len(labels))] for i in range(len(labels))]
    header, *rows = confusion_table(labels, matrix)
    assert len(rows) == len(labels)
    assert len({len(row) for row in rows}) == 1 and len(header.rstrip()) <= len(rows[0])
    # nothing a terminal would obey is left: escaping again changes nothing
    assert all(escape_controls(line) == line for line in (header, *rows))
