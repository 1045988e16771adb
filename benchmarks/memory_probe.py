"""Run one stage in a fresh process and print its peak resident memory as JSON (last line).

    python benchmarks/memory_probe.py scan DATA OUT PROFILE   # scan, then validate; manifest -> OUT
    python benchmarks/memory_probe.py train MANIFEST_DIR OUT  # one epoch of the default model

A fresh process per measurement, because peak RSS (ru_maxrss) only ever grows: what it
reports is this stage's peak and nothing a previous stage left behind.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path


def peak_rss_bytes() -> int:
    """Peak resident set size of this process, in bytes: VmHWM, which starts afresh at exec
    (ru_maxrss does not on Linux: a child forked from a big parent inherits its peak)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def peak_rss_children_bytes() -> int:
    """Peak resident set size of the largest finished child (the scan's workers), in bytes."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def current_rss_bytes() -> int:
    """Resident set size now, from /proc (0 where there is none)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
    except OSError:
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def probe_scan(data: Path, out: Path, profile: str) -> dict:
    """Scan and validate `data` with every core; the manifest is written to `out`.

    Not toolkit.check.check_folder: the probe reads the peak memory between the two steps."""
    from toolkit.manifest import write_manifest
    from toolkit.profiles import load_profile
    from toolkit.scan import scan_folder
    from toolkit.validate import validate_manifest

    rules = load_profile(profile)
    before = current_rss_bytes()
    started = time.perf_counter()
    manifest = scan_folder(data, options=rules.scan_options())
    scanned = time.perf_counter()
    peak_scan = peak_rss_bytes()
    result = validate_manifest(manifest, rules)
    write_manifest(result.manifest, out)
    return {
        "n_files": len(manifest),
        "n_accepted": len(result.accepted),
        "scan_seconds": scanned - started,
        "rss_before_bytes": before,
        "peak_rss_scan_bytes": peak_scan,
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_rss_worker_bytes": peak_rss_children_bytes(),
        "manifest_bytes": int(manifest.memory_usage(deep=True).sum()),
    }


def probe_train(manifest_dir: Path, out: Path) -> dict:
    """One epoch of the default recipe on a validated manifest (split, decode, fit, score)."""
    from toolkit.manifest import read_manifest
    from toolkit.profiles import load_profile
    from toolkit.train import TrainOptions, train_model

    manifest = read_manifest(manifest_dir)
    before = current_rss_bytes()
    started = time.perf_counter()
    result = train_model(
        manifest,
        out,
        TrainOptions(model="default", epochs=1, seed=0),
        profile=load_profile(str(manifest.attrs.get("profile") or "small-faces")),
    )
    from toolkit.models import get_recipe

    spec = get_recipe("default").input
    n_images = sum(sum(c.values()) for c in result.split_counts.values()) - len(result.left_out)
    return {
        "n_files": len(manifest),
        "n_images": n_images,
        "n_epochs": len(result.history.get("loss", [])),
        "train_seconds": time.perf_counter() - started,
        "rss_before_bytes": before,
        "peak_rss_bytes": peak_rss_bytes(),
        "cache_bytes": n_images * spec.size * spec.size * spec.channels,
        "accuracy": result.metrics.get("accuracy"),
    }


def main(argv: list[str]) -> int:
    kind, *args = argv
    if kind == "scan":
        report = probe_scan(Path(args[0]), Path(args[1]), args[2])
    elif kind == "train":
        report = probe_train(Path(args[0]), Path(args[1]))
    else:
        raise SystemExit(f"unknown probe {kind!r}; use scan or train")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
