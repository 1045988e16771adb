"""toolkit.outputs: the output-folder guard, and one run's outputs landing together."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit.errors import OutputError
from toolkit.manifest import RUN_ID_KEY, empty_manifest, read_manifest, write_manifest
from toolkit.outputs import (
    DATA_DOCS_DIR,
    STAGING_PREFIX,
    Staging,
    check_new_folder,
    check_output,
    check_replaceable,
    new_run_id,
    read_run_id,
    read_run_ids,
    replace_output,
    staged_outputs,
)
from toolkit.report import REPORT_HTML, REPORT_JSON, write_report_json


def _data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "happy").mkdir(parents=True)
    (root / "happy" / "a.jpg").write_bytes(b"\xff\xd8 a photo")
    return root


def _write_set(folder: Path, run_id: str, *, html: bool = True) -> None:
    """What a validate run writes: a manifest, report.json and (optionally) report.html."""
    manifest = empty_manifest()
    manifest.attrs = {"root": "/data", RUN_ID_KEY: run_id}
    write_manifest(manifest, folder)
    write_report_json({"passed": True, "toolkit_version": "0", RUN_ID_KEY: run_id}, folder)
    if html:
        (folder / REPORT_HTML).write_text(
            '<!doctype html><html><head><meta name="generator" content="toolkit 0">\n'
            f'<meta name="toolkit-run-id" content="{run_id}">\n</head></html>\n'
        )


# --------------------------------------------------------------------------------------
# The guard


def _symlink_into_data(tmp_path: Path, root: Path) -> Path:
    link = tmp_path / "link"
    link.symlink_to(root / "happy", target_is_directory=True)
    return link / "out"


def _a_file(tmp_path: Path, root: Path) -> Path:
    (tmp_path / "notes.txt").write_text("mine")
    return tmp_path / "notes.txt"


def _dangling_symlink(tmp_path: Path, root: Path) -> Path:
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    return tmp_path / "gone"


def _under_a_file(tmp_path: Path, root: Path) -> Path:
    (tmp_path / "notes.txt").write_text("mine")
    return tmp_path / "notes.txt" / "out"


@pytest.mark.parametrize(
    ("make_out", "problem"),
    [
        (lambda tmp, root: root, "--out is the data folder"),
        (lambda tmp, root: root / "happy", "--out lies inside the data folder"),
        (lambda tmp, root: root / "new" / "deeper", "--out lies inside the data folder"),
        (lambda tmp, root: root / "happy" / ".." / "..", "--out contains the data folder"),
        (lambda tmp, root: tmp, "--out contains the data folder"),
        (_symlink_into_data, "--out lies inside the data folder"),
        (_a_file, "--out is a regular file, not a folder"),
        (_under_a_file, "cannot be created"),
        (_dangling_symlink, "--out is a symlink to nothing"),
    ],
    ids=[
        "the output folder is the data folder",
        "the output folder is a class folder of the data",
        "a new output folder would be made inside the data",
        "a dotted spelling of the data's parent holds the data",
        "the output folder holds the data folder",
        "a symlink leads the output folder into the data",
        "the output path is an existing file",
        "the output folder would have to be made under a file",
        "the output path is a symlink to nothing",
    ],
)
def test_an_output_folder_that_would_touch_the_data_or_cannot_be_written_is_refused(
    tmp_path: Path, make_out, problem: str
) -> None:
    root = _data(tmp_path)
    out = make_out(tmp_path, root)
    with pytest.raises(OutputError, match=problem) as refused:
        check_output(out, [root])
    assert refused.value.path == out and str(refused.value).count("\n") == 0
    assert not (root / "happy" / "out").exists() and not (root / "new").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder; see the file case")
def test_a_folder_without_write_permission_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(OutputError, match="cannot be written"):
        check_output(locked / "out", [])


@pytest.mark.parametrize(
    "roots",
    [[], ["s3://bucket/data"], ["memory://data"], ["{tmp}/runs/data/missing"]],
    ids=[
        "no data folder",
        "an s3 URL cannot overlap a local folder",
        "nor a memory URL",
        "a data folder that does not exist (its command reports that)",
    ],
)
def test_an_output_folder_beside_the_data_is_accepted_and_not_created(
    tmp_path: Path, roots: list[str]
) -> None:
    root = _data(tmp_path)
    out = tmp_path / "runs" / "data"
    roots = [r.format(tmp=tmp_path) for r in roots]
    assert check_output(out, [root, *roots]) == out
    assert not out.exists()  # the check creates nothing


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data_parts=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3),
    out_parts=st.lists(st.sampled_from(["a", "b", "c"]), min_size=0, max_size=4),
)
def test_an_output_folder_is_refused_exactly_when_it_and_the_data_nest(
    tmp_path_factory: pytest.TempPathFactory, data_parts: list[str], out_parts: list[str]
) -> None:
    base = tmp_path_factory.mktemp("nest")
    root = base.joinpath(*data_parts)
    root.mkdir(parents=True)
    out = base.joinpath(*out_parts)
    n = min(len(data_parts), len(out_parts))
    nested = data_parts[:n] == out_parts[:n]  # one is the other, or lies inside it
    if nested:
        with pytest.raises(OutputError, match="the data folder"):
            check_output(out, [root])
    else:
        check_output(out, [root])


def test_a_new_run_needs_a_new_or_empty_folder(tmp_path: Path) -> None:
    check_new_folder(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    check_new_folder(tmp_path / "empty")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "history.csv").write_text("mine")
    with pytest.raises(OutputError, match="already holds files"):
        check_new_folder(tmp_path / "busy")


# --------------------------------------------------------------------------------------
# Never replace what the toolkit did not write


def _user_folder_named_manifest(out: Path) -> Path:
    (out / "manifest.parquet").mkdir()
    (out / "manifest.parquet" / "photo.jpg").write_bytes(b"\xff\xd8 my photo")
    return out / "manifest.parquet"


def _user_report_json(out: Path) -> Path:
    (out / REPORT_JSON).write_text('{"passed": 3, "failed": 1}')
    return out / REPORT_JSON


def _folder_named_report_json(out: Path) -> Path:
    (out / REPORT_JSON).mkdir()
    return out / REPORT_JSON


def _user_csv(out: Path) -> Path:
    (out / "manifest.csv").write_text("name,score\nann,3\n")
    return out / "manifest.csv"


def _user_html(out: Path) -> Path:
    (out / REPORT_HTML).write_text("<html><body>my page</body></html>")
    return out / REPORT_HTML


def _symlinked_report(out: Path) -> Path:
    (out.parent / "mine.json").write_text('{"toolkit_version": "0"}')
    (out / REPORT_JSON).symlink_to(out.parent / "mine.json")
    return out / REPORT_JSON


def _user_data_docs(out: Path) -> Path:
    (out / DATA_DOCS_DIR).mkdir()
    (out / DATA_DOCS_DIR / "index.html").write_text("<html>my docs</html>")
    return out / DATA_DOCS_DIR


@pytest.mark.parametrize(
    "make",
    [_user_folder_named_manifest, _user_report_json, _folder_named_report_json, _user_csv,
     _user_html, _symlinked_report, _user_data_docs],
    ids=["a user folder named manifest.parquet, with a photo in it",
         "a user file named report.json that is not a report",
         "a folder where report.json would go",
         "a CSV of the user's named manifest.csv",
         "a page of the user's named report.html",
         "report.json is a symlink to a file of the user's",
         "a folder of the user's named data_docs"],
)  # fmt: skip
def test_what_the_toolkit_did_not_write_is_never_replaced(tmp_path: Path, make) -> None:
    out = tmp_path / "out"
    out.mkdir()
    theirs = make(out)
    before = sorted(str(p) for p in out.rglob("*"))
    with pytest.raises(OutputError, match="not an output the toolkit wrote") as refused:
        check_replaceable(out)
    assert refused.value.path == theirs
    with pytest.raises(OutputError), staged_outputs(out, new_run_id()) as staging:
        _write_set(staging.folder, staging.run_id)
    assert sorted(str(p) for p in out.rglob("*")) == before  # nothing moved, nothing left


def test_write_manifest_refuses_a_user_folder_named_manifest_parquet(tmp_path: Path) -> None:
    theirs = _user_folder_named_manifest(tmp_path)
    with pytest.raises(OutputError, match="not an output the toolkit wrote"):
        write_manifest(empty_manifest(), tmp_path)
    assert (theirs / "photo.jpg").read_bytes() == b"\xff\xd8 my photo"


def test_outputs_the_toolkit_wrote_are_recognised_and_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    _write_set(out, "0" * 32)
    check_replaceable(out)
    # a Dask-style folder of parts is ours too, and a file manifest replaces it
    parts = tmp_path / "parts"
    parts.mkdir()
    write_manifest(empty_manifest(), tmp_path / "tmp")
    os.replace(tmp_path / "tmp" / "manifest.parquet", parts / "part.0.parquet")
    replace_output(parts, out / "manifest.parquet")
    check_replaceable(out)
    write_manifest(empty_manifest(), out)
    assert (out / "manifest.parquet").is_file()


def test_a_folder_of_parts_holding_a_stray_file_is_not_ours(tmp_path: Path) -> None:
    target = tmp_path / "manifest.parquet"
    write_manifest(empty_manifest(), tmp_path / "tmp")
    target.mkdir()
    os.replace(tmp_path / "tmp" / "manifest.parquet", target / "part.0.parquet")
    (target / "holiday.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(OutputError):
        replace_output(tmp_path / "tmp", target)
    assert (target / "holiday.jpg").exists()


# --------------------------------------------------------------------------------------
# One run's outputs land together


def test_every_output_of_a_run_records_its_run_id(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_id = new_run_id()
    with staged_outputs(out, run_id) as staging:
        _write_set(staging.folder, run_id)
        (staging.folder / DATA_DOCS_DIR).mkdir()
        staging.mark(staging.folder / DATA_DOCS_DIR)
    assert read_run_ids(out) == dict.fromkeys(
        ["manifest.parquet", DATA_DOCS_DIR, REPORT_HTML, REPORT_JSON], run_id
    )
    assert read_run_id(out) == run_id
    assert read_manifest(out).attrs[RUN_ID_KEY] == run_id
    assert json.loads((out / REPORT_JSON).read_text())[RUN_ID_KEY] == run_id
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.parquet", "manifest.csv", DATA_DOCS_DIR, REPORT_HTML, REPORT_JSON]
    )  # no staging folder left


def test_a_run_that_fails_before_its_commit_leaves_the_previous_set(tmp_path: Path) -> None:
    out = tmp_path / "out"
    old = new_run_id()
    with staged_outputs(out, old) as staging:
        _write_set(staging.folder, old)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    new = new_run_id()
    with pytest.raises(RuntimeError, match="killed"), staged_outputs(out, new) as staging:
        manifest = empty_manifest()
        manifest.attrs = {RUN_ID_KEY: new}
        write_manifest(manifest, staging.folder)  # the manifest is written, the report is not
        raise RuntimeError("killed between the manifest and the report")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert read_run_id(out) == old


def test_a_new_set_removes_the_earlier_outputs_it_has_none_of(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with staged_outputs(out, "a" * 32) as staging:
        _write_set(staging.folder, staging.run_id)
    (out / "notes.txt").write_text("mine")
    with staged_outputs(out, "b" * 32) as staging:  # --no-html this time
        _write_set(staging.folder, staging.run_id, html=False)
    assert not (out / REPORT_HTML).exists()  # an old page beside a new manifest would mix
    assert read_run_id(out) == "b" * 32
    assert (out / "notes.txt").read_text() == "mine"


def test_outputs_of_two_runs_are_told_apart(tmp_path: Path) -> None:
    _write_set(tmp_path, "a" * 32)
    write_report_json({"toolkit_version": "0", RUN_ID_KEY: "b" * 32}, tmp_path)
    with pytest.raises(OutputError, match="outputs of different runs"):
        read_run_id(tmp_path)


def test_a_killed_run_s_staging_folder_is_removed_by_the_next_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    dead = Staging(out, new_run_id()).folder
    dead.mkdir(parents=True)
    (dead / "report.json.tmp").write_text("{")
    alive = Staging(out, new_run_id()).folder
    alive.mkdir()
    fcntl = pytest.importorskip("fcntl")
    held = os.open(alive, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # another run, still writing
    try:
        with staged_outputs(out, new_run_id()) as staging:
            _write_set(staging.folder, staging.run_id)
    finally:
        os.close(held)
    assert not dead.exists() and alive.exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(STAGING_PREFIX)] == [alive.name]


@pytest.mark.parametrize("resolved", [False, True], ids=["as written", "resolved"])
def test_a_staged_path_names_its_final_place_under_a_relative_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resolved: bool
) -> None:
    monkeypatch.chdir(tmp_path)
    staging = Staging(Path("runs") / "data", "c" * 32)
    staged = staging.folder / DATA_DOCS_DIR / "index.html"  # gx hands back resolved paths
    staged.parent.mkdir(parents=True)
    shown = staging.final(staged.resolve() if resolved else staged)
    assert shown == Path("runs") / "data" / DATA_DOCS_DIR / "index.html"


def test_a_failed_first_run_leaves_no_output_folder(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "data"
    with pytest.raises(RuntimeError), staged_outputs(out, new_run_id()):
        raise RuntimeError("the scan failed")
    assert not out.exists()


def test_a_manifest_written_by_hand_reads_back_without_a_run_id(tmp_path: Path) -> None:
    manifest = empty_manifest()
    manifest.attrs = {"root": "/data"}
    write_manifest(manifest, tmp_path)
    assert read_run_id(tmp_path) is None
    pd.testing.assert_frame_equal(read_manifest(tmp_path), manifest, check_dtype=False)


@pytest.mark.parametrize(
    ("header", "ours"),
    [
        ("path,label,extension,is_hidden,sha256,width_px\n", True),
        ("path,label,sha256,a_column_added_later\r\n", True),
        ("path,label,score\n", False),
        ("name,sha256\n", False),
        ("", False),
    ],
    ids=[
        "a manifest's header",
        "a manifest with a column added in a later version",
        "a user's table with path and label but no sha256",
        "a user's table of hashes",
        "an empty file",
    ],
)
def test_a_manifest_csv_is_recognised_by_its_core_columns(
    tmp_path: Path, header: str, ours: bool
) -> None:
    from toolkit.manifest import is_manifest_csv

    (tmp_path / "manifest.csv").write_bytes(header.encode())
    assert is_manifest_csv(tmp_path / "manifest.csv") is ours
