"""Suite 6: whole processes side by side on the same folder: `toolkit validate` (report
included), the tutorial's clean-up loop, and the peer tools fastdup and cleanvision.

Every side runs as a process of its own, as a user starts it, so each one's start-up (its
imports, its models) is counted. Round by round, every side runs once in turn on the same
files, so all share the machine's noise; a ratio compares the fastest rounds. Files per
second divide the folder's file count by each side's seconds, so every ratio is a ratio of
seconds on the same files (the counts each side looked at are reported beside them).

The peers run by `peer_run.py` under `--peers-python` (this interpreter unless given): they
are no dependency of the toolkit, only of the bench environment; where one is not
importable its row says "not installed" and its test skips.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from bench_incremental import Folder, copy_web_sets
from conftest import DataSets, Plan
from figures import Session, best, spread

HERE = Path(__file__).resolve().parent
PEERS = ("fastdup", "cleanvision")
#: exit status of peer_run.py when its peer is not importable
PEER_MISSING = 3


@dataclass
class Process:
    """One side: its command line (given a round's scratch folder) and its rounds."""

    name: str
    what: str
    argv: Callable[[Path], list[str]]
    ok: tuple[int, ...] = (0,)
    #: what the side found, from its scratch folder and stdout (default: stdout's last line)
    read: Callable[[Path, bytes], dict] | None = None
    seconds: list[float] = field(default_factory=list)
    result: dict = field(default_factory=dict)

    def run(self, scratch: Path) -> None:
        """Start the process and wait for it; its seconds and what it found kept. (No peak
        RSS: a child's ru_maxrss starts at this big process's, see memory_probe.py.)"""
        scratch.mkdir(parents=True, exist_ok=True)
        argv = self.argv(scratch)
        with open(scratch / "stderr.txt", "wb") as err:
            started = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err)
            out, _ = proc.communicate()
            seconds = time.perf_counter() - started
        code = proc.returncode
        assert code in self.ok, (
            f"{self.name} exited {code}: {' '.join(argv)}\n"
            + (scratch / "stderr.txt").read_text(encoding="utf-8", errors="replace")[-3000:]
        )
        self.seconds.append(seconds)
        self.result = (self.read or _last_json_line)(scratch, out)


def _last_json_line(scratch: Path, out: bytes) -> dict:
    lines = out.decode("utf-8", errors="replace").strip().splitlines()
    return json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}


def _report_json(scratch: Path, out: bytes) -> dict:
    """What toolkit validate wrote: its report.json, and whether report.html is beside it."""
    report = json.loads((scratch / "out" / "report.json").read_text(encoding="utf-8"))
    return {**report, "has_html": (scratch / "out" / "report.html").is_file()}


@dataclass
class SideBySide:
    """The folder, its file count, and every side's rounds."""

    folder: Folder
    n_files: int
    sides: dict[str, Process]
    missing: dict[str, str]


def peer_installed(python: str, peer: str) -> str | None:
    """None if `peer` imports under `python`, else why not."""
    if not Path(python).exists():
        return f"not installed: no {python} (tox -e peers makes it)"
    probe = f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({peer!r}) else 3)"
    try:
        code = subprocess.run([python, "-c", probe], capture_output=True, timeout=60).returncode
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{python} cannot run: {exc}"
    return None if code == 0 else f"not installed in {python}"


def ours(folder: Folder, *extra: str) -> Callable[[Path], list[str]]:
    """`toolkit validate` as a user types it; --no-cache, so every round scans every file."""
    return lambda scratch: [
        sys.executable, "-m", "toolkit", "validate", str(folder.root),
        "-p", folder.profile, "-o", str(scratch / "out"), "--no-cache", *extra,
    ]  # fmt: skip


def measure(folder: Folder, python: str, rounds: int, base: Path) -> SideBySide:
    """Every side once per round, in turn; a warm-up round of the cheap sides first (the
    page cache then holds the folder for everyone)."""
    n_files = sum(1 for p in folder.root.rglob("*") if p.is_file())
    sides = {
        "ours": Process(
            "ours", "toolkit validate (report.html included)", ours(folder), (0, 1), _report_json
        ),
        "ours-no-html": Process(
            "ours-no-html",
            "toolkit validate --no-html",
            ours(folder, "--no-html"),
            (0, 1),
            _report_json,
        ),
        "tutorial": Process(
            "tutorial",
            "tutorial clean-up loop (cv2.imread + imghdr), as a process",
            lambda _: [sys.executable, str(HERE / "tutorial.py"), str(folder.root)],
        ),
    }
    missing = {}
    for peer in PEERS:
        why = peer_installed(python, peer)
        if why is not None:
            missing[peer] = why
            continue
        sides[peer] = Process(
            peer,
            f"{peer}, its default run, as a process",
            lambda scratch, peer=peer: [
                *(python, str(HERE / "peer_run.py"), peer),
                *(str(folder.root), str(scratch / "work")),
            ],
        )
    for name in ("ours", "tutorial"):  # warm-up, not counted
        sides[name].run(base / f"warmup-{name}")
    for side in sides.values():
        side.seconds.clear()
    for i in range(rounds):
        for name, side in sides.items():
            scratch = base / f"{name}-{i}"
            side.run(scratch)
            shutil.rmtree(scratch, ignore_errors=True)  # the peers' work folders are large
    return SideBySide(folder, n_files, sides, missing)


@pytest.fixture(scope="module")
def side_by_side(
    plan: Plan,
    datasets: DataSets,
    results: Session,
    pytestconfig: pytest.Config,
    tmp_path_factory: pytest.TempPathFactory,
) -> SideBySide:
    """The full run's three shared web sets copied into one folder (the quick run's
    generated photos), every side measured on it, every figure recorded."""
    base = tmp_path_factory.mktemp("peers")
    folder = None if plan.quick else copy_web_sets(base / "web")
    if folder is None:
        photos = datasets.get("photos")
        folder = Folder(photos.root, photos.profile, photos.label)
    python = pytestconfig.getoption("--peers-python") or sys.executable
    run = measure(folder, python, plan.peer_rounds, base)
    label = folder.label
    for side in run.sides.values():
        results.add(
            "peers", f"{side.what}", run.n_files / best(side.seconds), "files/s", label,
            spread(side.seconds),
        )  # fmt: skip
    for peer, why in run.missing.items():
        results.notes.append(f"peers: {peer} {why}: its row is left out")
    return run


def _judged(side_by_side: SideBySide, judge: Callable, other: str, key: str) -> None:
    ours = side_by_side.sides["ours"]
    theirs = side_by_side.sides[other]
    ratio = judge(
        key,
        best(theirs.seconds) / best(ours.seconds),
        f"toolkit validate (report included) / {other}, files/s, whole processes",
        side_by_side.folder.label,
    )
    assert ratio.passed, (
        f"toolkit validate took {best(ours.seconds):.2f} s, {other} {best(theirs.seconds):.2f} s "
        f"on {side_by_side.n_files:,} files: {ratio.value:.2f}x, not {ratio.limit_text()}"
    )


def test_validate_against_the_tutorial_loop_whole_process(side_by_side: SideBySide, judge) -> None:
    ours = side_by_side.sides["ours"].result
    assert ours["n_files"] == side_by_side.n_files and ours["has_html"]
    assert ours["n_accepted"] > 0
    assert not side_by_side.sides["ours-no-html"].result["has_html"]
    tutorial = side_by_side.sides["tutorial"].result
    assert 0 < tutorial["n_files"] <= side_by_side.n_files
    _judged(side_by_side, judge, "tutorial", "validate_vs_tutorial_process")


@pytest.mark.parametrize("peer", PEERS, ids=["fastdup, default run", "cleanvision, find_issues"])
def test_validate_against_a_peer_whole_process(side_by_side: SideBySide, judge, peer: str) -> None:
    if peer in side_by_side.missing:
        pytest.skip(f"{peer} {side_by_side.missing[peer]}")
    found = side_by_side.sides[peer].result
    assert found.get("peer") == peer and found.get("n_files", 0) > 0, found
    _judged(side_by_side, judge, peer, f"validate_vs_{peer}")
