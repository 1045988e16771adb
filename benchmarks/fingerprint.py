"""What a refactor must not change: the manifest, report.json and a seeded training run's
metrics on the demo set, reduced to one JSON document of digests.

    python benchmarks/fingerprint.py --out runs/fingerprint > before.json
    ... change the code ...
    python benchmarks/fingerprint.py --out runs/fingerprint2 > after.json
    diff before.json after.json        # no output: behaviour unchanged

Only what differs between any two runs by design is left out: the run id, clocks and
durations, the command line; and the folder it runs in and the checkout it runs from are
written as `<cwd>` and `<checkout>`, so two checkouts or two folders compare equal.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

#: report.json, run.json and manifest keys that change on every run by design, or with the
#: checkout and the file system rather than with behaviour (the scanner's code digest, inodes).
VOLATILE = {
    "run_id", "created_at", "finished_at", "started_at", "seconds", "command", "scanner",
    "scan_counts",
}  # fmt: skip
#: Manifest columns that say where and when a file sits on disk, not what it holds.
DISK_COLUMNS = ("mtime_ns", "inode", "ctime_ns")


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in sorted(value.items()) if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    if isinstance(value, str):
        return _places(value)
    return value


def _places(text: str) -> str:
    """`text` with the folder it ran in and the checkout it ran from named, not spelt out."""
    import validations

    checkout = str(Path(validations.__file__).resolve().parents[1])
    return text.replace(checkout, "<checkout>").replace(os.getcwd(), "<cwd>")


def _digest(value: Any) -> str:
    text = json.dumps(_stable(value), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _manifest_digest(folder: Path) -> dict[str, Any]:
    from toolkit.manifest import read_manifest

    frame = read_manifest(folder)
    buffer = io.StringIO()
    frame.drop(columns=[c for c in DISK_COLUMNS if c in frame]).to_csv(buffer, index=False)
    table = _places(buffer.getvalue())
    attrs = {k: v for k, v in frame.attrs.items() if k not in VOLATILE}
    return {
        "rows": len(frame),
        "columns": [c for c in frame.columns if c not in DISK_COLUMNS],
        "table_sha256": hashlib.sha256(table.encode()).hexdigest(),
        "attrs_sha256": _digest(attrs),
    }


def fingerprint(out: Path, epochs: int) -> dict[str, Any]:
    """Validate and train on the demo set into `out`; the digests of what they wrote."""
    from toolkit.cli import main

    shutil.rmtree(out, ignore_errors=True)
    checked, run = out / "validate", out / "train"
    code = main(["validate", "--out", str(checked), "--no-html"])
    report = json.loads((checked / "report.json").read_text())
    code_train = main(
        ["train", "--out", str(run), "--seed", "0", "--epochs", str(epochs), "--jobs", "1"]
    )
    metrics = json.loads((run / "metrics.json").read_text())
    return {
        "validate_exit": code,
        "manifest": _manifest_digest(checked),
        "report_json": _stable(report),
        "train_exit": code_train,
        "train_manifest": _manifest_digest(run),
        "metrics": _stable(metrics),
    }


def main(argv: list[str] | None = None) -> int:
    """Print the fingerprint as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/fingerprint"))
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):  # the commands' own output is not the result
        result = fingerprint(args.out, args.epochs)
    json.dump(result, sys.stdout, indent=1, sort_keys=True, default=str)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
