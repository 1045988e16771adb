"""The benchmark session: options, inputs, the limits each ratio is held to, the summary.

`tox -e bench` runs every suite on the shared real sets (generated images where absent)
and holds each ratio to the issue's target; `--quick` (`tox -e bench-quick`, CI) runs them
on small generated folders with few rounds and holds each ratio to a regression floor.
No benchmark ever asserts an absolute time: a ratio compares two figures of the same run,
measured round by round in alternation (`paired`), so both share the machine's noise.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # corpus.py and imghdr_compat.py, shared with the tests
sys.path.append(str(ROOT))  # `benchmarks.loso` for the modules also run as `python -m benchmarks.X`

from figures import (  # noqa: E402
    Ratio,
    Session,
    describe_machine,
    finish_machine,
    render_table,
)

SHARED = ROOT.parent / "shared" / "datasets"
RESULTS_DIR = ROOT / "benchmarks" / "results"
SUITE_ORDER = (
    "bench_startup",
    "bench_scan",
    "bench_incremental",
    "bench_peers",
    "bench_pipeline",
    "bench_train",
    "bench_memory",
)


@dataclass(frozen=True)
class Limit:
    """What a ratio means and the bound it is held to: "floor" (>=) or "ceiling" (<=)."""

    kind: str
    target: float  # the number, asserted by the full run
    quick: float  # the regression floor (or ceiling) the quick run asserts


#: Every judged ratio. `target` is the issue's; `quick` sits below what the quick run
#: measures on the 2-core CI machine by a margin for its noise, so a real regression (a
#: stage twice as slow) still fails it.
LIMITS: dict[str, Limit] = {
    # toolkit validate files/s / the tutorial's clean-up loop files/s
    "validate_vs_tutorial": Limit("floor", 1.5, 0.15),
    # our tf.data pipeline images/s / image_dataset_from_directory + x/255 images/s
    "pipeline_first_epoch": Limit("floor", 1.0, 0.25),
    "pipeline_cached_epoch": Limit("floor", 10.0, 2.0),
    # default model training images/s / seed model training images/s
    "default_vs_seed_train": Limit("floor", 3.0, 1.5),
    # default / seed model accuracy on a set neither saw (full run only; test split if none)
    "default_vs_seed_accuracy": Limit("floor", 1.0, 1.0),
    # scan seconds per file at the larger folder / at the smaller (linear: about 1)
    "scan_time_per_file_growth": Limit("ceiling", 1.25, 1.5),
    # peak resident memory of the scan at the larger folder / at the smaller (flat)
    "scan_peak_rss_growth": Limit("ceiling", 1.25, 1.25),
    # peak resident memory of a training epoch, less the decoded cache, larger / smaller
    "train_peak_rss_growth": Limit("ceiling", 1.15, 1.15),
    # toolkit validate on a 2-file folder, whole process with its report, seconds / those of
    # `python -c "import pandas, PIL.Image, cv2"` (issue 30's 1.5 s over that floor's 0.55 s
    # on the 2-core machine)
    "startup_vs_import_floor": Limit("ceiling", 2.7, 4.0),
    # toolkit validate: a first run's seconds / a re-run's on the unchanged folder
    "revalidate_unchanged": Limit("floor", 10.0, 3.0),
    # 1% of the files changed: the re-run's seconds over an unchanged re-run's, as a share
    # of a first run's (the changed files' own cost: about 1%)
    "revalidate_one_percent": Limit("ceiling", 0.03, 0.15),
    # a first run's seconds / a re-run's under another profile with the same scan options
    # (the issue sets no number: every rule and the advice step run again, the scan not)
    "revalidate_profile_only": Limit("floor", 5.0, 3.0),
    # whole processes on the same files, report included: the tutorial loop's seconds, and
    # each peer's default run's, / toolkit validate's (its files/s over theirs)
    "validate_vs_tutorial_process": Limit("floor", 1.0, 0.1),
    "validate_vs_fastdup": Limit("floor", 2.5, 1.2),
    "validate_vs_cleanvision": Limit("floor", 5.0, 0.9),
    # the label audit against a seeded 10% of flipped labels: flagged files that were
    # flipped, and flipped files flagged (a share, not a ratio of times)
    "audit_precision": Limit("floor", 0.8, 0.8),
    "audit_recall": Limit("floor", 0.8, 0.8),
    # the same, audited by cross-fitted networks (`toolkit audit --networks`)
    "audit_networks_precision": Limit("floor", 0.8, 0.8),
    "audit_networks_recall": Limit("floor", 0.8, 0.8),
    # each image-quality rule's precision and recall on known corruptions of good photos
    # (shares, not times: the quick run's generated photos are held to them too)
    "quality_precision": Limit("floor", 0.9, 0.9),
    "quality_recall": Limit("floor", 0.9, 0.9),
    # the scan's seconds with the quality scores / without them, in one process
    "quality_scan_cost": Limit("ceiling", 1.10, 1.3),
}

#: Targets the full run is known to miss, and why (see docs/performance.md).
#: Each is an xfail(strict=True) there: the ratio is still asserted and reported, and the day
#: it is met the run fails until the entry is removed. The quick run's floors are not affected.
KNOWN_MISSES: dict[str, str] = {
    "validate_vs_tutorial": (
        "per file, the decode check (2.25 ms of one core on mratashnejad), the face network "
        "(1.4-2 ms with LiteRT), resizing for the hash and the detector (1.4 ms) and the rest "
        "come to about 5.8 ms, against the loop's one decode (2.8 ms): about 0.97x on two "
        "cores at best, 1.44x with nothing but the decode and the network; 0.64-0.95x"
    ),
    "audit_precision": (
        "the flags are only as good as the model: 16 CPU epochs on 3,000 FER2013 faces per "
        "class give out-of-sample probabilities 85% right on the true labels, and its own "
        "confident mistakes outnumber the flips it misses; cleanlab flags the same files"
    ),
    "audit_recall": (
        "as audit_precision: flipped training files were fitted by the network whose "
        "embeddings score them, so the train split's recall trails the held-out splits'"
    ),
    "validate_vs_tutorial_process": (
        "the steady-state scan already runs at about the loop's pace on two cores (see "
        "validate_vs_tutorial); the whole process adds start-up, every rule, the advice and "
        "the report on top, where the loop has only its cv2 import"
    ),
}

#: Targets the full run meets or misses by the machine's noise: an xfail(strict=False) there,
#: so the table says which it was that day without failing the run (the quick run's floor
#: still catches a regression).
AT_PARITY: dict[str, str] = {
    "pipeline_first_epoch": (
        "both sides spend most of the epoch in libjpeg-turbo decoding the same bytes; ours "
        "decodes at reduced DCT scale but also re-hashes each file and composites transparent "
        "PNGs at full size: 0.98-1.19x over nine runs of one day, 0.84-0.97x on earlier days"
    ),
    "validate_vs_fastdup": (
        "fastdup's default run and ours both use both cores; the ratio moves with the load of "
        "the machine (ours has more single-threaded steps after its scan than fastdup)"
    ),
    "validate_vs_cleanvision": (
        "cleanvision decodes each file several times in a process pool; the ratio moves with "
        "the load of the machine, as validate_vs_fastdup's"
    ),
}


@dataclass(frozen=True)
class Plan:
    """How big and how long: the full run's real sets, or the quick run's small folders."""

    quick: bool
    rounds: int  # timed rounds of each comparison, after one warm-up round
    cached_rounds: int
    train_steps: int  # training steps per timed round
    infer_images: int
    memory_files: tuple[int, int]  # folder sizes the scan and training memory compare
    accuracy: bool  # train both models to the end and compare accuracy (slow)
    demo_per_class: int  # files per class of the generated sets
    peer_rounds: int  # timed rounds of the whole-process comparison (bench_peers)


FULL = Plan(
    quick=False,
    rounds=3,
    cached_rounds=5,
    train_steps=8,
    infer_images=256,
    memory_files=(1_000, 10_000),
    accuracy=True,
    demo_per_class=150,
    peer_rounds=2,
)
QUICK = Plan(
    quick=True,
    rounds=2,
    cached_rounds=5,
    train_steps=5,
    infer_images=64,
    memory_files=(300, 1_200),
    accuracy=False,
    demo_per_class=100,
    peer_rounds=2,
)

_SESSION = pytest.StashKey[Session]()
_STARTED = pytest.StashKey[float]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("toolkit benchmarks")
    group.addoption(
        "--quick",
        action="store_true",
        help="small generated inputs, few rounds, regression floors instead of targets (CI)",
    )
    group.addoption(
        "--floor",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"hold ratio NAME to VALUE instead (repeatable); names: {', '.join(LIMITS)}",
    )
    group.addoption(
        "--peers-python",
        default=None,
        metavar="PATH",
        help="the interpreter that runs fastdup and cleanvision [this one]; neither is a "
        "dependency of the toolkit",
    )
    group.addoption(
        "--bench-json",
        default=None,
        metavar="PATH",
        help="where to write the figures [benchmarks/results/<full|quick>.json]",
    )


def pytest_configure(config: pytest.Config) -> None:
    overrides = _parse_floors(config.getoption("--floor", default=[]) or [])
    mode = "quick" if config.getoption("--quick", default=False) else "full"
    limits = {
        key: overrides.get(key, limit.quick if mode == "quick" else limit.target)
        for key, limit in LIMITS.items()
    }
    session = Session(mode=mode, machine=describe_machine(_versions()), limits=limits)
    config.stash[_SESSION] = session
    config.stash[_STARTED] = time.perf_counter()


def _parse_floors(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in LIMITS:
            raise pytest.UsageError(
                f"--floor takes NAME=VALUE with NAME one of {', '.join(LIMITS)}; got {item!r}"
            )
        try:
            out[name] = float(value)
        except ValueError:
            raise pytest.UsageError(f"--floor {name}: {value!r} is not a number") from None
    return out


def _versions() -> dict[str, str | None]:
    """Library versions from their metadata: importing TensorFlow here would start threads."""
    out: dict[str, str | None] = {}
    for dist in ("tensorflow", "keras", "numpy", "pillow", "opencv-python-headless", "pandas"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the suites in the issue's order: scan, pipeline, training, memory."""
    rank = {name: i for i, name in enumerate(SUITE_ORDER)}
    items.sort(key=lambda item: rank.get(item.module.__name__ if item.module else "", 99))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    session = config.stash.get(_SESSION, None)
    if session is None or not (session.figures or session.ratios):
        return
    finish_machine(session.machine, config.stash[_STARTED])
    terminalreporter.section("toolkit benchmarks: figures and ratios")
    for line in render_table(session):
        terminalreporter.write_line(line)
    target = config.getoption("--bench-json") or RESULTS_DIR / f"{session.mode}.json"
    path = session.write_json(Path(target))
    terminalreporter.write_line(f"(written to {path})")


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def plan(pytestconfig: pytest.Config) -> Plan:
    """The quick plan under --quick, else the full one."""
    return QUICK if pytestconfig.getoption("--quick") else FULL


@pytest.fixture(scope="session")
def results(pytestconfig: pytest.Config) -> Session:
    """The session's figures and ratios; printed and written at the end."""
    return pytestconfig.stash[_SESSION]


@pytest.fixture
def judge(results: Session, plan: Plan, request: pytest.FixtureRequest) -> Callable[..., Ratio]:
    """Record a ratio with its limit; the test asserts `ratio.passed` with its own message.

    In the full run, a ratio listed in KNOWN_MISSES turns its test into a strict xfail, one
    in AT_PARITY into a plain one.
    """

    def record(key: str, value: float, what: str, dataset: str) -> Ratio:
        limit = LIMITS[key]
        known_miss = not plan.quick and (key in KNOWN_MISSES or key in AT_PARITY)
        if known_miss:
            strict = key in KNOWN_MISSES
            why = f"known miss: {KNOWN_MISSES[key]}" if strict else f"at parity: {AT_PARITY[key]}"
            request.applymarker(pytest.mark.xfail(reason=why, strict=strict))
        return results.judge(
            Ratio(
                key=key,
                suite=_suite_of(request),
                what=what,
                value=float(value),
                limit=results.limits[key],
                kind=limit.kind,
                target=limit.target,
                dataset=dataset,
                known_miss=known_miss,
            )
        )

    return record


def _suite_of(request: pytest.FixtureRequest) -> str:
    return request.module.__name__.removeprefix("bench_")


@dataclass(frozen=True)
class DataSet:
    """A folder to benchmark on, the profile that fits it, and how the table names it."""

    name: str
    root: Path
    profile: str
    label: str


class DataSets:
    """Real sets from ../shared/datasets where present, generated folders otherwise."""

    def __init__(self, factory: pytest.TempPathFactory, plan: Plan, results: Session) -> None:
        self._factory = factory
        self._plan = plan
        self._results = results
        self._cache: dict[str, DataSet] = {}
        self._validated: dict[str, Any] = {}

    def get(self, name: str, fallback: str = "demo") -> DataSet:
        """A shared set (`renotte`, `mratashnejad`, `fer2013/train`, ...: FER2013 with the
        `small-faces` profile, the rest with `tutorial`; `fallback` where absent) or a generated
        one: `demo` (the demo set's drawn faces and defects) or `photos` (photo-sized JPEGs)."""
        if name not in self._cache:
            self._cache[name] = self._make(name, fallback)
        return self._cache[name]

    def _make(self, name: str, fallback: str) -> DataSet:
        if name == "demo":
            from toolkit.demo import write_demo_data

            root = self._factory.mktemp("demo")
            demo = write_demo_data(root, n_per_class=self._plan.demo_per_class, seed=0)
            return DataSet(name, root, "tutorial", f"generated demo set ({demo.n_files:,} files)")
        if name == "photos":
            n = 2 * self._plan.demo_per_class
            root = write_photo_folder(self._factory.mktemp("photos"), n)
            return DataSet(name, root, "tutorial", f"generated 640x480 JPEGs ({n:,} files)")
        path = SHARED / name
        if path.is_dir():
            n = sum(1 for _ in _class_files(path))
            profile = "small-faces" if name.startswith("fer2013") else "tutorial"
            return DataSet(name, path, profile, f"{name} ({n:,} files, shared)")
        self._results.notes.append(f"{path} is absent: the {fallback} set stands in for it")
        return self.get(fallback)

    def validated(self, data: DataSet) -> Any:
        """The validated manifest of `data` (scanned once per session)."""
        if data.name not in self._validated:
            from toolkit.check import check_folder

            self._validated[data.name] = check_folder(data.root, data.profile).manifest
        return self._validated[data.name]

    def remember(self, data: DataSet, manifest: Any) -> None:
        """Keep a manifest validated elsewhere (the scan suite's last round)."""
        self._validated.setdefault(data.name, manifest)


@pytest.fixture(scope="session")
def datasets(tmp_path_factory: pytest.TempPathFactory, plan: Plan, results: Session) -> DataSets:
    """Where each suite's images come from."""
    return DataSets(tmp_path_factory, plan, results)


def write_photo_folder(root: Path, n: int, size: tuple[int, int] = (640, 480)) -> Path:
    """n distinct photo-sized JPEGs (smooth colour fields with sensor-like noise, about
    100 KB each, so decoding costs what a web photo's does), half happy, half sad; seeded."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        low = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        base = np.asarray(low.resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
        noise = rng.normal(0, 12, base.shape).astype(np.int16)
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        target = root / ("happy" if i % 2 == 0 else "sad") / f"photo_{i:04d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(target, quality=90)
    return root


def _class_files(root: Path) -> Any:
    for dirpath, _, names in os.walk(root):
        if Path(dirpath) != root:
            yield from names


# --- measuring ------------------------------------------------------------------------------


@dataclass
class Paired:
    """Seconds per timed round of ours and of the baseline, and each side's last result."""

    ours: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    ours_result: Any = None
    baseline_result: Any = None


def paired(
    benchmark: Any,
    ours: Callable[[], Any],
    baseline: Callable[[], Any],
    *,
    rounds: int,
    warmup_rounds: int = 1,
) -> Paired:
    """Time `ours` (through pytest-benchmark) and `baseline` in alternation, round by round.

    The baseline runs in each round's setup, so the two take turns on the machine and share
    whatever else it is doing; a warm-up round of each (imports, caches, tracing) is not
    counted. Both sides are timed here the same way; pytest-benchmark keeps ours too.
    """
    run = Paired()
    seen = {"baseline": 0, "ours": 0}

    def setup() -> None:
        started = time.perf_counter()
        run.baseline_result = baseline()
        seconds = time.perf_counter() - started
        seen["baseline"] += 1
        if seen["baseline"] > warmup_rounds:
            run.baseline.append(seconds)

    def timed() -> Any:
        started = time.perf_counter()
        run.ours_result = ours()
        seconds = time.perf_counter() - started
        seen["ours"] += 1
        if seen["ours"] > warmup_rounds:
            run.ours.append(seconds)
        return run.ours_result

    benchmark.pedantic(timed, setup=setup, rounds=rounds, warmup_rounds=warmup_rounds)
    if not run.ours:  # --benchmark-disable runs the target once, as a warm-up would count
        run.ours, run.baseline = [seconds_of(ours)], [seconds_of(baseline)]
    return run


def seconds_of(fn: Callable[[], Any]) -> float:
    """Wall seconds of one call."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started
