"""A crash is not a verdict: an unexpected exception exits 3 with one line naming the file
being processed and where its traceback went; --debug prints the traceback instead."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_PROFILE
from corpus import write_single_class_folder

import toolkit.models
import toolkit.pipeline
import toolkit.quarantine
import toolkit.report.thumbnails
import toolkit.validate
from toolkit.cli import main
from toolkit.errors import (
    DatasetFailedError,
    ManifestError,
    UsageError,
    processed_path,
    processing,
)

CRASH_LINE = re.compile(
    r"toolkit: internal error while (?P<where>.+?): RuntimeError: boom; "
    r"traceback written to (?P<file>\S+) \(rerun with --debug to print it\)"
)


def boom(*args: Any, **kwargs: Any) -> Any:
    """A stand-in for any step: it crashes."""
    raise RuntimeError("boom")


def crashing_for(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
    """`real`, except that it crashes on the file whose path ends with `name`."""

    def step(*args: Any, **kwargs: Any) -> Any:
        if any(str(a.get("path", "") if isinstance(a, dict) else a).endswith(name) for a in args):
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    return step


def validate_args(root: Path, tmp_path: Path, *extra: str) -> list[str]:
    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY_PROFILE, encoding="utf-8")
    return ["validate", str(root), "-p", str(profile), "-o", str(tmp_path / "run"), *extra]


def the_crash_line(err: str) -> re.Match[str]:
    lines = err.strip().splitlines()
    match = CRASH_LINE.fullmatch(lines[-1]) if lines else None
    assert match is not None, err
    return match


def test_a_crash_while_validating_exits_3_and_writes_the_traceback_to_a_file(
    clean_root: Path,
    tmp_path: Path,
    crash_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(toolkit.validate, "validate_manifest", boom)
    code = main(validate_args(clean_root, tmp_path))
    err = capsys.readouterr().err
    assert code == 3
    line = the_crash_line(err)
    assert line["where"] == "running toolkit validate"
    assert "Traceback" not in err  # behind --debug
    written = Path(line["file"])
    assert written.parent == crash_dir and written.name.startswith("toolkit-crash-")
    text = written.read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in text and "RuntimeError: boom" in text
    assert "toolkit validate " in text  # the command that crashed
    assert not any(clean_root.rglob("toolkit-crash-*"))


@pytest.mark.parametrize(
    "at_end",
    [False, True],
    ids=["--debug before the command", "--debug after the command's arguments"],
)
def test_debug_prints_the_traceback_instead_and_still_exits_3(
    at_end: bool,
    clean_root: Path,
    tmp_path: Path,
    crash_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(toolkit.validate, "validate_manifest", boom)
    args = validate_args(clean_root, tmp_path)
    code = main([*args, "--debug"] if at_end else ["--debug", *args])
    err = capsys.readouterr().err
    assert code == 3
    assert "Traceback (most recent call last)" in err and "RuntimeError: boom" in err
    assert err.strip().splitlines()[-1] == (
        "toolkit: internal error while running toolkit validate: RuntimeError: boom"
    )
    assert list(crash_dir.iterdir()) == []


def test_a_crash_on_one_file_of_the_report_names_that_file(
    clean_root: Path,
    tmp_path: Path,
    crash_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    victim = sorted(p.relative_to(clean_root) for p in clean_root.rglob("*.jpg"))[2].as_posix()
    thumbnail = crashing_for(victim, toolkit.report.thumbnails._thumbnail)
    monkeypatch.setattr(toolkit.report.thumbnails, "_thumbnail", thumbnail)
    strict = tmp_path / "strict.toml"  # every file rejected, so every file gets a thumbnail
    strict.write_text('extends = "tutorial"\n[rules.min_file_bytes]\nmin_bytes = 1000000\n')
    code = main(["validate", str(clean_root), "-p", str(strict), "-o", str(tmp_path / "run")])
    line = the_crash_line(capsys.readouterr().err)
    assert code == 3
    assert line["where"] == f"processing {clean_root / victim}"
    assert f"while processing {clean_root / victim}" in Path(line["file"]).read_text()


def test_a_crash_while_quarantining_names_the_file_being_moved(
    tmp_path: Path,
    crash_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = write_single_class_folder(tmp_path / "one")
    (root / "sad").mkdir()
    (root / "sad" / "notes.txt").write_text("not an image")
    assert main(validate_args(root, tmp_path)) == 1  # notes.txt is rejected
    capsys.readouterr()
    monkeypatch.setattr(toolkit.quarantine, "_move_verified", boom)
    code = main(["quarantine", str(tmp_path / "run"), "--into", str(tmp_path / "q")])
    line = the_crash_line(capsys.readouterr().err)
    assert code == 3
    assert line["where"] == f"processing {root / 'sad' / 'notes.txt'}"


def test_a_crash_while_decoding_for_training_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_single_class_folder(tmp_path / "one")
    rows = pd.DataFrame(
        {"path": sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))}
    )
    rows["label"] = "happy"
    load = crashing_for(rows["path"][1], toolkit.pipeline.load_image)
    monkeypatch.setattr(toolkit.pipeline, "load_image", load)
    spec = toolkit.models.InputSpec(8, 3, False)
    with pytest.raises(RuntimeError, match="boom") as err:
        toolkit.pipeline.decode_rows(rows, spec, ["happy"], root=root, jobs=2)
    assert processed_path(err.value) == str(root / rows["path"][1])


def test_a_crash_while_predicting_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import toolkit.predict

    read = crashing_for("second.jpg", lambda *args: (np.zeros((8, 8, 3), np.uint8), {}))
    monkeypatch.setattr(toolkit.predict, "_read", read)
    monkeypatch.setattr(toolkit.predict, "embedding_width", lambda run: 8)
    monkeypatch.setattr(toolkit.predict, "read_familiarity", lambda folder, width: None)
    run = SimpleNamespace(spec=SimpleNamespace(crop_faces=False), folder=tmp_path)
    paths = [tmp_path / "first.jpg", tmp_path / "second.jpg"]
    with pytest.raises(RuntimeError, match="boom") as err:
        toolkit.predict.predict_files(tmp_path, paths, run=run)  # type: ignore[arg-type]
    assert processed_path(err.value) == str(tmp_path / "second.jpg")


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (UsageError("--out is the data folder"), 2, "toolkit: error: --out is the data folder"),
        (ManifestError(Path("m.parquet"), "not a manifest"), 2,
         "toolkit: error: m.parquet: not a manifest"),
        (DatasetFailedError(Path("data"), ["class_balance"]), 1,
         "toolkit: error: data: the dataset failed class_balance; run `toolkit validate` on it "
         "to see why, or train with a profile that fits it"),
    ],
    ids=["a refusal keeps exit 2", "a manifest that cannot be used is refused with exit 2",
         "a dataset that failed keeps exit 1"],
)  # fmt: skip
def test_the_toolkits_own_errors_keep_their_exit_codes(
    error: Exception,
    code: int,
    line: str,
    clean_root: Path,
    tmp_path: Path,
    crash_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(toolkit.validate, "validate_manifest", refuse)
    assert main(validate_args(clean_root, tmp_path)) == code
    assert capsys.readouterr().err.strip().splitlines() == [line]
    assert list(crash_dir.iterdir()) == []


def test_a_dataset_that_fails_still_exits_1(
    tmp_path: Path, crash_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_single_class_folder(tmp_path / "one")
    assert main(validate_args(root, tmp_path)) == 1
    assert "internal error" not in capsys.readouterr().err
    assert list(crash_dir.iterdir()) == []


def test_ctrl_c_exits_130_with_one_line(
    clean_root: Path,
    tmp_path: Path,
    crash_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def interrupt(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(toolkit.validate, "validate_manifest", interrupt)
    assert main(validate_args(clean_root, tmp_path)) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "toolkit: interrupted"
    assert list(crash_dir.iterdir()) == []


def test_help_lists_debug_and_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--debug" in text
    assert "3 internal error" in text


def test_a_crash_message_is_one_line_whatever_the_file_name_holds(
    tmp_path: Path,
    crash_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def crash(*args: Any, **kwargs: Any) -> Any:
        with processing(tmp_path / "a\nb\x1b[31m.jpg"):
            raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(toolkit.validate, "validate_manifest", crash)
    root = write_single_class_folder(tmp_path / "one")
    assert main(validate_args(root, tmp_path)) == 3
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert (
        f"while processing {tmp_path}/a\\nb\\x1b[31m.jpg: RuntimeError: boom\\nsecond line" in line
    )


# ----------------------------------------------------------------------------- units


def test_processing_names_the_innermost_file_and_leaves_toolkit_errors_alone() -> None:
    with pytest.raises(RuntimeError) as err, processing("outer.jpg"), processing("inner.jpg"):
        raise RuntimeError("boom")
    assert processed_path(err.value) == "inner.jpg"
    assert "while processing inner.jpg" in err.value.__notes__
    with pytest.raises(UsageError) as refused, processing("x.jpg"):
        raise UsageError("refused")
    assert processed_path(refused.value) is None


def test_processing_is_found_through_a_wrapping_exception() -> None:
    with pytest.raises(ValueError) as err:
        try:
            with processing("x.jpg"):
                raise RuntimeError("boom")
        except RuntimeError as exc:
            raise ValueError("wrapped") from exc
    assert processed_path(err.value) == "x.jpg"


def test_a_failed_training_says_so_in_its_run_record(
    tmp_path: Path,
    crash_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from test_train import write_learnable_folder

    data = write_learnable_folder(tmp_path / "data", n_per_class=8)
    victim = data / "sad" / "sad_003.png"
    load = crashing_for(str(victim), toolkit.pipeline.load_image)
    monkeypatch.setattr(toolkit.pipeline, "load_image", load)
    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY_PROFILE, encoding="utf-8")
    run = tmp_path / "run"
    code = main(
        ["train", str(data), "--model", "seed", "--image-size", "32", "--epochs", "1",
         "--profile", str(profile), "--out", str(run), "--batch-size", "4"]
    )  # fmt: skip
    line = the_crash_line(capsys.readouterr().err)
    assert code == 3 and line["where"] == f"processing {victim}"
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed"
    assert record["error"] == f"RuntimeError: boom (while processing {victim})"
