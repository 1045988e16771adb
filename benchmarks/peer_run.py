"""One peer tool's whole run on a folder, as a process of its own, for `bench_peers.py`.

    python peer_run.py fastdup|cleanvision DATA WORK

Imports the peer, runs it the way its documentation starts (fastdup: `create(...).run()`;
cleanvision: `Imagelab(...).find_issues()`) on DATA, with WORK for whatever it writes, and
prints one JSON line on stdout: the peer, its version, the files it looked at and what it
found. Everything the peer prints itself goes to stderr. Exit status 3 and a JSON line with
`"missing"` when the peer is not importable here, so the benchmark can say "not installed".

A process per run, so the peer's start-up (its imports, its models) is counted as it is for
`toolkit validate`. Neither peer is a dependency of the toolkit: fastdup is CC BY-NC-ND and
lives only in the bench environment (tox.ini `[testenv:bench]`).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import sys
from pathlib import Path
from typing import Any

#: exit status when the peer cannot be imported in this interpreter
MISSING = 3


def run_fastdup(data: Path, work: Path) -> dict[str, Any]:
    """fastdup's default run: stats, embeddings, similarity, components, outliers."""
    import fastdup

    fd = fastdup.create(work_dir=str(work), input_dir=str(data))
    fd.run(overwrite=True)
    invalid = fd.invalid_instances()
    return {
        "n_files": int(fd.num_instances()) + len(invalid),
        "n_invalid": len(invalid),
        "n_similar_pairs": len(fd.similarity()),
        "n_outliers": len(fd.outliers()),
    }


def run_cleanvision(data: Path, work: Path) -> dict[str, Any]:
    """cleanvision's default `find_issues()`: every built-in issue type."""
    from cleanvision import Imagelab

    lab = Imagelab(data_path=str(data))
    lab.find_issues()
    summary = lab.issue_summary
    return {
        "n_files": len(lab.issues),
        "n_issue_types": len(summary),
        "n_issues": int(summary["num_images"].sum()),
    }


PEERS = {
    "fastdup": (run_fastdup, "fastdup"),
    "cleanvision": (run_cleanvision, "cleanvision"),
}


def main(argv: list[str]) -> int:
    name, data, work = argv[0], Path(argv[1]), Path(argv[2])
    run, dist = PEERS[name]
    out: dict[str, Any] = {"peer": name}
    try:
        out["version"] = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        out["missing"] = f"{dist} is not installed in {sys.executable}"
        print(json.dumps(out), flush=True)
        return MISSING
    work.mkdir(parents=True, exist_ok=True)
    with _stdout_to_stderr():
        out.update(run(data, work))
    print(json.dumps(out), flush=True)
    return 0


@contextlib.contextmanager
def _stdout_to_stderr() -> Any:
    """The peers' own chatter (Python's and their C++ code's, on descriptor 1) goes to
    stderr, so stdout holds the JSON line alone."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
