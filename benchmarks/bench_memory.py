"""Suite 4: peak resident memory of a scan and of a training epoch, and how scan time and
memory grow from the smaller generated folder to the larger (1,000 and 10,000 files in the
full run): time should grow with the files, memory should not, beyond the decoded cache.

Each stage runs in a fresh process (memory_probe.py), because a peak only ever grows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Plan
from corpus import write_image
from figures import Session

PROBE = Path(__file__).with_name("memory_probe.py")
PROFILE = "small-faces"  # 48x48 grey files, as FER2013's
MB = 1024**2


def write_faces_folder(root: Path, n: int) -> Path:
    """n distinct 48x48 grey JPEGs (about 1 KB each), half happy, half sad; seeded."""
    for i in range(n):
        label = "happy" if i % 2 == 0 else "sad"
        write_image(root / label / f"{i:05d}.jpg", size=(48, 48), mode="L", seed=i, quality=90)
    return root


def run_probe(*args: str | Path) -> dict:
    """Run memory_probe.py in a fresh interpreter; its JSON report."""
    done = subprocess.run(
        [sys.executable, str(PROBE), *map(str, args)], capture_output=True, text=True
    )
    assert done.returncode == 0, f"probe {args[0]} failed:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def scans(plan: Plan, tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict]:
    """Scan + validate each folder size in its own process, sizes alternating, twice in the
    full run; per size the fastest round's time and the smallest peak (the least disturbed)."""
    base = tmp_path_factory.mktemp("memory")
    folders = {n: write_faces_folder(base / f"files{n}", n) for n in plan.memory_files}
    reports: dict[int, list[dict]] = {n: [] for n in plan.memory_files}
    for _ in range(1 if plan.quick else 2):
        for n, folder in folders.items():
            reports[n].append(run_probe("scan", folder, base / f"manifest{n}", PROFILE))
    out = {}
    for n, rounds in reports.items():
        fastest = min(rounds, key=lambda r: r["scan_seconds"])
        out[n] = {
            **fastest,
            "peak_rss_scan_bytes": min(r["peak_rss_scan_bytes"] for r in rounds),
            "peak_rss_worker_bytes": min(r["peak_rss_worker_bytes"] for r in rounds),
            "manifest_dir": base / f"manifest{n}",
        }
    return out


def test_scan_time_grows_with_the_files_and_memory_does_not(
    scans: dict[int, dict], plan: Plan, results: Session, judge
) -> None:
    small, large = plan.memory_files
    for n, report in scans.items():
        assert report["n_files"] == n and report["n_accepted"] == n
        label = f"generated 48x48 JPEGs ({n:,} files)"
        results.add(
            "memory", "scan (faces, hashes), files/s", n / report["scan_seconds"], "files/s", label
        )
        results.add(
            "memory",
            "scan, peak RSS of the main process",
            report["peak_rss_scan_bytes"] / MB,
            "MB",
            label,
            f"{report['rss_before_bytes'] / MB:.0f} MB after imports; manifest "
            f"{report['manifest_bytes'] / MB:.1f} MB",
        )
        results.add(
            "memory",
            "scan, peak RSS of a worker process",
            report["peak_rss_worker_bytes"] / MB,
            "MB",
            label,
        )
    sizes = f"{large:,} vs {small:,} files"
    per_file = {n: scans[n]["scan_seconds"] / n for n in (small, large)}
    time_growth = judge(
        "scan_time_per_file_growth",
        per_file[large] / per_file[small],
        "scan seconds per file, larger / smaller folder",
        sizes,
    )
    rss = {n: scans[n]["peak_rss_scan_bytes"] for n in (small, large)}
    rss_growth = judge(
        "scan_peak_rss_growth",
        rss[large] / rss[small],
        "scan peak RSS, larger / smaller folder",
        sizes,
    )
    worker = {n: scans[n]["peak_rss_worker_bytes"] for n in (small, large)}
    results.info(
        "memory",
        "scan worker peak RSS, larger / smaller folder",
        worker[large] / worker[small],
        sizes,
    )
    assert time_growth.passed, (
        f"a scan took {per_file[small] * 1000:.2f} ms a file at {small:,} files and "
        f"{per_file[large] * 1000:.2f} ms at {large:,}: {time_growth.value:.2f}x, "
        f"above the ceiling {time_growth.limit}"
    )
    assert rss_growth.passed, (
        f"scan peak RSS {rss[small] / MB:.0f} MB at {small:,} files, {rss[large] / MB:.0f} MB "
        f"at {large:,}: {rss_growth.value:.2f}x, above the ceiling {rss_growth.limit}"
    )


def test_training_epoch_memory_grows_only_by_the_decoded_cache(
    scans: dict[int, dict], plan: Plan, results: Session, judge, tmp_path: Path
) -> None:
    small, large = plan.memory_files
    reports = {
        n: run_probe("train", scans[n]["manifest_dir"], tmp_path / f"run{n}")
        for n in (small, large)
    }
    beyond = {}
    for n, report in reports.items():
        assert report["n_epochs"] == 1 and report["n_images"] == n
        label = f"generated 48x48 JPEGs ({n:,} files)"
        results.add(
            "memory",
            "training epoch (default model), peak RSS",
            report["peak_rss_bytes"] / MB,
            "MB",
            label,
            f"decoded cache {report['cache_bytes'] / MB:.1f} MB; {report['train_seconds']:.0f} s",
        )
        beyond[n] = report["peak_rss_bytes"] - report["cache_bytes"]
    growth = judge(
        "train_peak_rss_growth",
        beyond[large] / beyond[small],
        "training peak RSS less the cache, larger / smaller folder",
        f"{large:,} vs {small:,} files",
    )
    assert growth.passed, (
        f"a training epoch peaked {beyond[small] / MB:.0f} MB beyond its cache at {small:,} "
        f"files and {beyond[large] / MB:.0f} MB at {large:,}: {growth.value:.2f}x, above the "
        f"ceiling {growth.limit}"
    )
