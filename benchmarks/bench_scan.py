"""Suite 1: `toolkit validate` (full manifest, every rule) against the tutorial's clean-up
loop (cv2.imread plus an imghdr type check per file), files per second on the same folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import DataSet, DataSets, Plan, paired
from figures import Session, best, spread
from tutorial import tutorial_cleanup

from toolkit.cli import main
from toolkit.faces import RUNTIME_ENV, available_runtimes
from toolkit.manifest import read_manifest


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "scan_set" in metafunc.fixturenames:
        quick = metafunc.config.getoption("--quick")
        names = ["photos"] if quick else ["renotte", "mratashnejad"]
        metafunc.parametrize("scan_set", names, indirect=True)


@pytest.fixture
def scan_set(request: pytest.FixtureRequest, datasets: DataSets) -> DataSet:
    """The folder of this parameter: a shared real set, or a generated one in its place."""
    return datasets.get(request.param, "photos" if request.param == "mratashnejad" else "demo")


def _entries(root: Path) -> tuple[int, int]:
    """(every file below root, the files inside its class folders)."""
    every = [p for p in root.rglob("*") if not p.is_dir()]
    return len(every), sum(1 for p in every if p.parent != root)


def _validate(data: DataSet, out: Path, *extra: str) -> tuple[int, dict]:
    """`toolkit validate DATA --no-html`: scan and every rule, manifest and report.json
    written; report.html is left out, a fixed cost of rendering, not of checking files."""
    args = [str(data.root), "--profile", data.profile, "--out", str(out), "--no-html", *extra]
    code = main(["validate", *args])
    return code, json.loads((out / "report.json").read_text(encoding="utf-8"))


def test_validate_against_the_tutorial_cleanup_loop(
    benchmark, scan_set: DataSet, plan: Plan, results: Session, judge, datasets, tmp_path: Path
) -> None:
    n_entries, n_class_files = _entries(scan_set.root)
    out = tmp_path / "run"
    benchmark.group = f"scan: {scan_set.name}"
    run = paired(
        benchmark,
        lambda: _validate(scan_set, out),
        lambda: tutorial_cleanup(scan_set.root),
        rounds=plan.rounds,
    )

    code, report = run.ours_result
    assert code in (0, 1), f"toolkit validate exited {code}"
    assert report["n_files"] == n_entries
    assert report["n_accepted"] + report["n_rejected"] == n_entries
    assert report["n_accepted"] > 0
    assert run.baseline_result.n_files == n_class_files
    datasets.remember(scan_set, read_manifest(out))

    ours = n_entries / best(run.ours)
    tutorial = n_class_files / best(run.baseline)
    label = scan_set.label
    results.add(
        "scan",
        "toolkit validate --no-html (faces, hashes, all rules)",
        ours,
        "files/s",
        label,
        spread(run.ours),
    )
    results.add(
        "scan",
        "tutorial clean-up loop (cv2.imread + imghdr)",
        tutorial,
        "files/s",
        label,
        spread(run.baseline),
    )
    seconds = report.get("seconds") or {}
    if isinstance(seconds, dict) and seconds.get("scan"):  # the last round's own split
        share = 100 * seconds["scan"] / run.ours[-1]
        results.add("scan", "share of toolkit validate spent scanning", share, "%", label)
    ratio = judge(
        "validate_vs_tutorial", ours / tutorial, "toolkit validate / tutorial loop, files/s", label
    )
    assert ratio.passed, (
        f"toolkit validate ran {ours:.1f} files/s, the tutorial's loop {tutorial:.1f} files/s: "
        f"{ratio.value:.2f}x, below the floor {ratio.limit}"
    )


def test_validate_without_faces_against_the_tutorial_cleanup_loop(
    benchmark, scan_set: DataSet, plan: Plan, results: Session, tmp_path: Path
) -> None:
    """What the face pass costs: the same command with --no-faces (reported, not judged)."""
    n_entries, n_class_files = _entries(scan_set.root)
    out = tmp_path / "run"
    benchmark.group = f"scan: {scan_set.name}"
    run = paired(
        benchmark,
        lambda: _validate(scan_set, out, "--no-faces"),
        lambda: tutorial_cleanup(scan_set.root),
        rounds=plan.rounds,
    )
    code, report = run.ours_result
    assert code in (0, 1) and report["n_files"] == n_entries
    assert run.baseline_result.n_files == n_class_files
    ours = n_entries / best(run.ours)
    tutorial = n_class_files / best(run.baseline)
    label = scan_set.label
    results.add(
        "scan", "toolkit validate --no-html --no-faces", ours, "files/s", label, spread(run.ours)
    )
    results.info(
        "scan",
        "toolkit validate --no-faces / tutorial loop, files/s (face pass cost)",
        ours / tutorial,
        label,
    )


def test_validate_with_opencv_running_the_face_detector(
    benchmark,
    scan_set: DataSet,
    plan: Plan,
    results: Session,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What LiteRT gains: the same command with OpenCV's dnn module running the detector, the
    runtime used where LiteRT has no wheel (reported, not judged)."""
    if "litert" not in available_runtimes():
        pytest.skip("LiteRT is not installed: the scan already runs the detector with OpenCV")
    n_entries, _ = _entries(scan_set.root)
    out = tmp_path / "run"
    benchmark.group = f"scan: {scan_set.name}"

    def with_opencv() -> tuple[int, dict]:
        monkeypatch.setenv(RUNTIME_ENV, "opencv")  # the scan's workers inherit it
        try:
            return _validate(scan_set, out)
        finally:
            monkeypatch.delenv(RUNTIME_ENV)

    run = paired(benchmark, with_opencv, lambda: _validate(scan_set, out), rounds=plan.rounds)
    code, report = run.ours_result
    assert code in (0, 1) and report["n_files"] == n_entries
    assert run.baseline_result[1]["n_accepted"] == report["n_accepted"]
    ours = n_entries / best(run.ours)
    label = scan_set.label
    results.add(
        "scan", "toolkit validate --no-html, OpenCV running the detector", ours, "files/s",
        label, spread(run.ours),
    )  # fmt: skip
    results.info(
        "scan",
        "toolkit validate, LiteRT / OpenCV running the detector, files/s",
        best(run.ours) / best(run.baseline),
        label,
    )
