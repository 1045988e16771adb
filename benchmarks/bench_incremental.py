"""Suite 5: re-validating a folder that barely changed, against validating it the first time.

Each round runs `toolkit validate --no-html` four times on one writable copy of the folder:
a first run (`--no-cache`: every file scanned), the same folder unchanged, the folder with
1% of its files touched (their times change, so they are scanned again), and the folder
unchanged under another profile whose rules differ (one threshold) but whose scan options
do not. Every ratio compares figures of the same rounds; the whole process start-up is not
in them (the runs share one interpreter, as the other suites' do).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from bench_memory import write_faces_folder
from conftest import SHARED, DataSets, Plan, paired
from figures import Session, best, spread

from toolkit.check import SCAN_COUNTS_KEY
from toolkit.cli import main

#: The shared web sets the issue measures on, copied into one folder (happy/, sad/).
WEB_SETS = ("renotte", "mratashnejad", "pranjalameta")
#: The large generated folder of the full run (48x48 JPEGs, the `small-faces` profile).
LARGE_FILES = 20_000
#: The share of files the "1% changed" run touches.
CHANGED_SHARE = 0.01


@dataclass(frozen=True)
class Folder:
    """A writable folder to re-validate, its profile, and how the table names it."""

    root: Path
    profile: str
    label: str


@dataclass
class Rounds:
    """Wall seconds and report.json of each kind of run, round by round."""

    seconds: dict[str, list[float]] = field(default_factory=dict)
    reports: dict[str, dict] = field(default_factory=dict)

    def run(self, kind: str, folder: Folder, out: Path, profile: str, *extra: str) -> dict:
        """Time one `toolkit validate --no-html` run; its report.json."""
        args = [str(folder.root), "-p", profile, "-o", str(out), "--no-html", *extra]
        started = time.perf_counter()
        code = main(["validate", *args])
        self.seconds.setdefault(kind, []).append(time.perf_counter() - started)
        assert code in (0, 1), f"toolkit validate exited {code} ({kind})"
        self.reports[kind] = json.loads((out / "report.json").read_text(encoding="utf-8"))
        return self.reports[kind]

    def counted(self, kind: str) -> list[float]:
        """The seconds of the counted rounds (the first, a warm-up, is left out where there
        are more)."""
        times = self.seconds[kind]
        return times[1:] if len(times) > 1 else times

    def best(self, kind: str) -> float:
        """The fastest counted round."""
        return best(self.counted(kind))


def copy_web_sets(target: Path) -> Folder | None:
    """The shared web sets' class folders copied into one folder, names prefixed by set."""
    if not all((SHARED / name).is_dir() for name in WEB_SETS):
        return None
    n = 0
    for name in WEB_SETS:
        for label in ("happy", "sad"):
            (target / label).mkdir(parents=True, exist_ok=True)
            for path in sorted((SHARED / name / label).iterdir()):
                if path.is_file() and not path.is_symlink():
                    shutil.copy2(path, target / label / f"{name}-{path.name}")
                    n += 1
    return Folder(target, "tutorial", f"3 shared web sets ({n:,} files, copied)")


def other_profile(base: str, folder: Path) -> str:
    """A profile file that extends `base` with one threshold changed (a dataset rule's, so
    the verdicts stay comparable), the scan options unchanged."""
    path = folder / f"{base}-tuned.toml"
    path.write_text(
        f'name = "{base}-tuned"\nextends = "{base}"\n[rules.min_files_per_class]\nmin_files = 2\n',
        encoding="utf-8",
    )
    return str(path)


def touch_share(root: Path, share: float, turn: int) -> int:
    """Give `share` of the files (a different slice each turn) new times; how many."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    k = max(1, round(len(files) * share))
    stamp = time.time_ns() + turn
    for path in files[turn * k % len(files) :][:k]:
        os.utime(path, ns=(stamp, stamp))
    return k


def measure(benchmark: object, folder: Folder, base: Path, rounds: int) -> Rounds:
    """Alternate, round by round: a first run (timed by `paired` as the baseline), then the
    unchanged, 1%-changed and profile-only runs (timed here, with their own figures)."""
    runs = Rounds()
    out = base / "out"
    tuned = other_profile(folder.profile, base)
    turn = iter(range(1_000))

    def first() -> dict:
        return runs.run("first", folder, out, folder.profile, "--no-cache")

    def again() -> dict:
        runs.run("unchanged", folder, out, folder.profile)
        touch_share(folder.root, CHANGED_SHARE, next(turn))
        runs.run("changed", folder, out, folder.profile)
        return runs.run("profile", folder, out, tuned)

    paired(benchmark, again, first, rounds=rounds)
    return runs


def record(runs: Rounds, folder: Folder, results: Session, judge: Callable) -> dict[str, object]:
    """Figures and ratios of one folder; the judged ratios, for the test to assert."""
    n = runs.reports["first"]["n_files"]
    first, unchanged = runs.best("first"), runs.best("unchanged")
    changed, profile = runs.best("changed"), runs.best("profile")
    label = folder.label
    for kind, what in (
        ("first", "first run (--no-cache: every file scanned)"),
        ("unchanged", "second run, folder unchanged"),
        ("changed", f"{CHANGED_SHARE:.0%} of the files changed"),
        ("profile", "only the profile changed"),
    ):
        results.add(
            "incremental", what, n / runs.best(kind), "files/s", label, spread(runs.counted(kind))
        )
    scan_first = runs.reports["first"]["seconds"]["scan"]
    scan_again = runs.reports["unchanged"]["seconds"]["scan"]
    if scan_again:
        results.info(
            "incremental",
            "scan step: first / unchanged (last round)",
            scan_first / scan_again,
            label,
        )
    return {
        "unchanged": judge(
            "revalidate_unchanged",
            first / unchanged,
            "first run / unchanged re-run, seconds",
            label,
        ),
        "changed": judge(
            "revalidate_one_percent",
            max(changed - unchanged, 0.0) / first,
            f"{CHANGED_SHARE:.0%} changed: seconds over an unchanged re-run / a first run's",
            label,
        ),
        "profile": judge(
            "revalidate_profile_only", first / profile, "first run / profile-only re-run", label
        ),
    }


def check_counts(runs: Rounds) -> None:
    """What each kind of run scanned: the report says, and a user would notice otherwise."""
    n = runs.reports["first"]["n_files"]
    assert runs.reports["first"][SCAN_COUNTS_KEY] == {"n_reused": 0, "n_scanned": n}
    assert runs.reports["unchanged"][SCAN_COUNTS_KEY] == {"n_reused": n, "n_scanned": 0}
    k = max(1, round(n * CHANGED_SHARE))
    assert runs.reports["changed"][SCAN_COUNTS_KEY] == {"n_reused": n - k, "n_scanned": k}
    assert runs.reports["profile"][SCAN_COUNTS_KEY] == {"n_reused": n, "n_scanned": 0}
    assert runs.reports["profile"]["profile"]["name"].endswith("-tuned")


def assert_ratios(judged: dict) -> None:
    for ratio in judged.values():
        assert ratio.passed, f"{ratio.what}: {ratio.value:.3f}, not {ratio.limit_text()}"


@pytest.fixture
def web_folder(plan: Plan, datasets: DataSets, tmp_path: Path) -> Folder:
    """The full run's three shared web sets, or the quick run's generated photos, copied."""
    target = tmp_path / "web"
    if not plan.quick:
        found = copy_web_sets(target)
        if found is not None:
            return found
    photos = datasets.get("photos")
    shutil.copytree(photos.root, target)
    return Folder(target, photos.profile, f"{photos.label}, copied")


def test_revalidating_the_web_sets(
    benchmark, web_folder: Folder, plan: Plan, results: Session, judge, tmp_path: Path
) -> None:
    benchmark.group = "incremental: web sets"
    runs = measure(benchmark, web_folder, tmp_path, plan.rounds)
    check_counts(runs)
    assert_ratios(record(runs, web_folder, results, judge))


def test_revalidating_a_large_generated_folder(
    benchmark, plan: Plan, results: Session, judge, tmp_path: Path
) -> None:
    if plan.quick:
        pytest.skip("full run only: generating the large folder takes minutes")
    root = write_faces_folder(tmp_path / "large", LARGE_FILES)
    folder = Folder(root, "small-faces", f"generated 48x48 JPEGs ({LARGE_FILES:,} files)")
    benchmark.group = "incremental: large folder"
    runs = measure(benchmark, folder, tmp_path, 1)
    check_counts(runs)
    assert_ratios(record(runs, folder, results, judge))
