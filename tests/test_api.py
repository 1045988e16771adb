"""The Python API (toolkit.validate_folder, toolkit.train_folder): what the CLI's validate and
train do, handed back as objects for a notebook, with the CLI's guard on the user's files."""

from __future__ import annotations

import html
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import TINY_PROFILE, snapshot
from corpus import HostileCorpus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_train import write_learnable_folder

import toolkit
import toolkit.train
from toolkit.check import check_folder
from toolkit.cli import main
from toolkit.errors import OutputError, UsageError
from toolkit.manifest import read_manifest


def test_a_clean_folder_passes_with_every_file_in_the_manifest(
    clean_root: Path, tiny_profile: Path
) -> None:
    result = toolkit.validate_folder(clean_root, profile=str(tiny_profile))
    assert result.passed
    assert len(result.manifest) == 8
    assert result.n_accepted == 8
    assert not result.findings
    assert "PASSED" in repr(result) and "8 of 8 files accepted" in repr(result)


def test_a_hostile_folder_lists_its_findings_and_rejected_files(
    hostile: HostileCorpus, tiny_profile: Path
) -> None:
    result = toolkit.validate_folder(hostile.root, profile=str(tiny_profile))
    expected = check_folder(hostile.root, str(tiny_profile))
    assert result.passed == expected.passed
    assert [f.line() for f in result.findings] == [f.line() for f in expected.findings]
    assert result.n_rejected == len(expected.rejected) > 0
    assert len(result.manifest) == len(expected.manifest)
    assert f"{result.n_rejected} rejected" in repr(result)


def test_a_dataset_that_fails_a_blocking_rule_says_failed(tmp_path: Path) -> None:
    (tmp_path / "data" / "happy").mkdir(parents=True)  # one class: min_classes fails
    result = toolkit.validate_folder(tmp_path / "data")
    assert not result.passed
    assert "min_classes" in result.failed_rules
    assert "FAILED" in repr(result) and "min_classes" in repr(result)


def test_the_notebook_summary_is_html_with_the_names_escaped(tmp_path: Path) -> None:
    data = tmp_path / "<b>data"
    (data / "happy").mkdir(parents=True)
    page = toolkit.validate_folder(data)._repr_html_()
    assert "FAILED" in page and "min_classes" in page
    assert "<b>data" not in page and "&lt;b&gt;data" in page


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=st.text(min_size=1, max_size=30))
def test_any_folder_name_prints_as_one_line_and_renders_as_text(
    clean_root: Path, tiny_profile: Path, name: str
) -> None:
    checked = _checked(clean_root, tiny_profile)
    result = replace(checked, source=name)
    assert "\n" not in repr(result) and "\x1b" not in repr(result)
    assert html.escape(name) in result._repr_html_()


_CHECKED: dict[Path, toolkit.CheckResult] = {}


def _checked(root: Path, profile: Path) -> toolkit.CheckResult:
    """One check per folder, for the examples a property test draws on it."""
    if root not in _CHECKED:
        _CHECKED[root] = toolkit.validate_folder(root, profile=str(profile))
    return _CHECKED[root]


@pytest.mark.parametrize(
    "where",
    [lambda data: data, lambda data: data / "happy" / "report", lambda data: data.parent],
    ids=["the data folder itself", "a folder inside the data", "a folder holding the data"],
)
def test_write_report_refuses_an_output_among_the_data(
    clean_root: Path, tiny_profile: Path, where
) -> None:
    result = toolkit.validate_folder(clean_root, profile=str(tiny_profile))
    before = snapshot(clean_root)
    with pytest.raises(OutputError, match="never writes among the files it reads"):
        result.write_report(where(clean_root))
    assert snapshot(clean_root) == before


def test_write_report_refuses_to_replace_a_users_own_file(
    clean_root: Path, tiny_profile: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text('{"mine": true}', encoding="utf-8")
    result = toolkit.validate_folder(clean_root, profile=str(tiny_profile))
    with pytest.raises(OutputError):
        result.write_report(out)
    assert json.loads((out / "report.json").read_text(encoding="utf-8")) == {"mine": True}


def test_write_report_writes_what_the_cli_writes(
    hostile: HostileCorpus, tiny_profile: Path, tmp_path: Path
) -> None:
    by_cli, by_api = tmp_path / "cli", tmp_path / "api"
    main(["validate", str(hostile.root), "--profile", str(tiny_profile), "--out", str(by_cli)])
    result = toolkit.validate_folder(hostile.root, profile=str(tiny_profile))
    shown = result.write_report(by_api)
    assert shown == by_api / "report.html"
    assert sorted(p.name for p in by_api.iterdir()) == sorted(p.name for p in by_cli.iterdir())
    cli_report = json.loads((by_cli / "report.json").read_text(encoding="utf-8"))
    api_report = json.loads((by_api / "report.json").read_text(encoding="utf-8"))
    varying = {"run_id", "command", "created_at", "seconds"}
    assert {k: v for k, v in api_report.items() if k not in varying} == {
        k: v for k, v in cli_report.items() if k not in varying
    }
    # the manifest and the report name one run, as the CLI's do
    assert read_manifest(by_api).attrs["run_id"] == api_report["run_id"]


def test_a_second_write_report_replaces_the_first(
    clean_root: Path, tiny_profile: Path, tmp_path: Path
) -> None:
    result = toolkit.validate_folder(clean_root, profile=str(tiny_profile))
    result.write_report(tmp_path / "out", html=False)
    first = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    result.write_report(tmp_path / "out", html=False)
    second = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert first["run_id"] != second["run_id"]
    assert not (tmp_path / "out" / "report.html").exists()


def test_train_folder_returns_the_run_with_its_metrics(tmp_path: Path) -> None:
    data = write_learnable_folder(tmp_path / "data")
    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY_PROFILE, encoding="utf-8")
    before = snapshot(data)
    run = toolkit.train_folder(
        data, tmp_path / "run", profile=str(profile), model="seed", epochs=1, image_size=32,
        batch_size=4, second_opinion=True,
    )  # fmt: skip
    assert run.folder == tmp_path / "run"
    assert "network" in run.metrics  # the second opinion, asked for on the tutorial's CNN
    assert run.labels == ["happy", "sad"]
    assert 0.0 <= run.metrics["accuracy"] <= 1.0
    assert (run.folder / "model.keras").is_file()
    assert snapshot(data) == before


def test_train_folder_refuses_a_run_folder_inside_the_data(tmp_path: Path) -> None:
    data = write_learnable_folder(tmp_path / "data")
    with pytest.raises(OutputError, match="never writes among the files it reads"):
        toolkit.train_folder(data, data / "run")
    assert not (data / "run").exists()


def test_train_folder_without_the_train_extra_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(toolkit.train, "TRAIN_EXTRA_MODULES", ("tensorflow", "no_such_module"))
    data = write_learnable_folder(tmp_path / "data")
    with pytest.raises(UsageError, match=r"pip install 'imagefolder-toolkit\[train\]'"):
        toolkit.train_folder(data, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_import_toolkit_stays_cheap() -> None:
    code = (
        "import sys, toolkit; toolkit.__version__; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'pandas', 'tensorflow', 'keras', 'great_expectations', 'PIL', 'cv2'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_api_names_are_listed_and_unknown_names_still_fail() -> None:
    assert {"validate_folder", "train_folder", "CheckResult"} <= set(dir(toolkit))
    with pytest.raises(AttributeError, match="no_such_thing"):
        toolkit.no_such_thing  # noqa: B018
