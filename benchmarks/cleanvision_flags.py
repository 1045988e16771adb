"""cleanvision's per-file image-property flags on one folder, as CSV, for bench_quality.py.

    python cleanvision_flags.py DATA OUT.csv

Runs `Imagelab(data_path=DATA).find_issues(...)` with cleanvision's default thresholds for
the issue types the toolkit's quality rules answer, and writes one row per file: its path
relative to DATA and one 0/1 column per issue type. Run with any interpreter where
cleanvision is installed (it is no dependency of the toolkit); exit status 3 when it is not.
"""

from __future__ import annotations

import csv
import os
import sys

ISSUES = ("dark", "light", "blurry", "low_information", "odd_aspect_ratio", "grayscale")


def main(data: str, out: str) -> int:
    """Write the flags; 3 when cleanvision is missing."""
    try:
        from cleanvision import Imagelab
    except ImportError:
        return 3
    lab = Imagelab(data_path=data)
    lab.find_issues({name: {} for name in ISSUES})
    issues = lab.issues
    root = os.path.abspath(data)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", *ISSUES])
        for path, row in issues.iterrows():
            rel = os.path.relpath(os.path.abspath(str(path)), root).replace(os.sep, "/")
            writer.writerow([rel, *(int(bool(row[f"is_{name}_issue"])) for name in ISSUES)])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
