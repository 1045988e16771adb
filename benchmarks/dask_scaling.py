"""The local engine against Dask with 1 and 2 workers on one generated tree (issue 8).

    python benchmarks/dask_scaling.py --files 100000 --out runs/scaling   # ~15 min on 2 cores

Writes OUT/data (a two-class tree of 32 px JPEGs, 2,000 a folder, every 100th a copy of
the file before under the other class (a label conflict); kept for
the next run), then validates it once per engine, each in a fresh process so peak memory is
its own, and prints (and writes to OUT/scaling.json) files per second, peak resident memory
of the driver and of each worker, and the seconds of each step. Not part of any test run:
docs/scaling.md quotes its output.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PROFILE = """
name = "scaling"
description = "tutorial rules with byte limits that fit 32 px JPEGs"
extends = "tutorial"
[rules.min_file_bytes]
min_bytes = 200
[rules.max_duplicate_share]
max_share = 0.05
"""


def write_tree(root: Path, n_files: int, seed: int = 0) -> None:
    """n_files 32x32 JPEGs alternating happy/ and sad/, 2,000 a folder; every 100th a copy
    of the file before it, so under the other class."""
    from PIL import Image

    done = root.with_name(f"{root.name}.complete")
    if done.exists() and int(done.read_text()) == n_files:
        return
    rng = np.random.default_rng(seed)
    previous = b""
    for i in range(n_files):
        label = ("happy", "sad")[i % 2]
        folder = root / label / f"batch{i // 2000:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        if i % 100 == 99:
            data = previous  # an exact copy of the file before it
        else:
            small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            img = Image.fromarray(small).resize((32, 32), Image.Resampling.BICUBIC)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=90)
            data = previous = buf.getvalue()
        (folder / f"{i:07d}.jpg").write_bytes(data)
    done.write_text(str(n_files))


def _peak_rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_engine(engine: str, workers: int, data: Path, profile: Path, out: Path) -> dict:
    """Validate `data` in this process with one engine; figures as a dict."""
    import resource

    from toolkit.check import DaskEngine, check_folder
    from toolkit.profiles import load_profile

    rules = load_profile(str(profile))
    started = time.perf_counter()
    if engine == "local":
        result = check_folder(data, rules, jobs=workers, out=out)
        steps = {"scan": result.seconds["scan"], "validate": result.seconds["validate"]}
        steps["write"] = time.perf_counter() - started - sum(steps.values())
        n_files, worker_mb = (
            len(result.manifest),
            [resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024],
        )
    else:
        from toolkit.cluster import ClusterOptions, connect

        # a cluster of our own, joined by address: its workers' memory is read before it stops
        with connect(ClusterOptions(n_workers=workers)) as client:
            up = time.perf_counter()
            on_dask = DaskEngine(scheduler=client.scheduler.address)
            result = check_folder(data, rules, engine=on_dask, out=out)
            steps = {"cluster_start": up - started}
            steps.update(
                (k.removeprefix("dask_"), v) for k, v in result.seconds.items() if "dask_" in k
            )
            steps["write"] = result.seconds["write"]
            worker_mb = sorted(client.run(_peak_rss_mb).values())
            n_files = result.counts.n_files if result.counts else 0
    seconds = time.perf_counter() - started
    return {
        "engine": engine,
        "workers": workers,
        "n_files": n_files,
        "seconds": round(seconds, 1),
        "files_per_s": round(n_files / seconds, 1),
        "driver_peak_mb": round(_peak_rss_mb(), 1),
        "worker_peak_mb": [round(m, 1) for m in worker_mb],
        "steps_s": {k: round(v, 2) for k, v in steps.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("runs/scaling"))
    parser.add_argument("--one", nargs=2, metavar=("ENGINE", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    data, profile = args.out / "data", args.out / "scaling.toml"
    if args.one:  # the child: one engine, figures as the last line
        engine, workers = args.one[0], int(args.one[1])
        figures = run_engine(engine, workers, data, profile, args.out / f"{engine}{workers}")
        print(json.dumps(figures))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    profile.write_text(PROFILE, encoding="utf-8")
    began = time.perf_counter()
    write_tree(data, args.files)
    print(f"tree of {args.files:,} files ready in {time.perf_counter() - began:.0f} s", flush=True)
    results = []
    for engine, workers in (("local", 2), ("dask", 1), ("dask", 2)):
        done = subprocess.run(
            [sys.executable, __file__, "--files", str(args.files), "--out", str(args.out),
             "--one", engine, str(workers)],
            capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )  # fmt: skip
        if done.returncode:
            print(done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(done.returncode)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    (args.out / "scaling.json").write_text(
        json.dumps({"machine": machine, "runs": results}, indent=2)
    )


if __name__ == "__main__":
    main()
