"""Start-up: `toolkit validate` on a small folder imports only what it uses.

Great Expectations, pandera and matplotlib each cost more to import than validating a small
folder takes, so the default path runs the rules itself and draws its charts as SVG; GX
and pandera run the same rules when the user asks for GX's own output (`--data-docs`).
The times are the benchmark's business (benchmarks/bench_startup.py); here, what a fresh
process imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from corpus import write_clean_folder

#: Libraries the default path must not import: each costs a second or so of start-up.
HEAVY = ("great_expectations", "pandera", "tensorflow", "matplotlib")

_RUN = """
import json, sys
from toolkit.cli import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as fh:
    json.dump({"code": code, "modules": sorted(sys.modules)}, fh)
"""


def _validate_in_fresh_process(tmp_path: Path, *args: str) -> tuple[int, set[str], dict]:
    """Run `toolkit validate ARGS` in a new interpreter: its exit code, the top-level
    packages it imported, and its report.json."""
    seen = tmp_path / "modules.json"
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", _RUN, str(seen), "validate", *args, "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    found = json.loads(seen.read_text())
    packages = {name.split(".")[0] for name in found["modules"]}
    report = json.loads((out / "report.json").read_text())
    return found["code"], packages, report


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("startup") / "data"
    write_clean_folder(root)
    return root


def test_validate_imports_no_heavy_library_and_says_who_judged(
    small: Path, tiny_profile: Path, tmp_path: Path
) -> None:
    args = (str(small), "-p", str(tiny_profile))
    code, packages, report = _validate_in_fresh_process(tmp_path, *args)
    assert code == 0
    assert packages.isdisjoint(HEAVY), sorted(packages & set(HEAVY))
    assert packages.isdisjoint({"imagehash", "scipy"})  # the scan hashes with numpy alone
    assert report["judged_by"] == {"file_rules": "pandas", "dataset_rules": "numpy"}
    assert (tmp_path / "out" / "report.html").is_file()


def test_data_docs_has_the_libraries_judge_and_they_agree(
    small: Path, tiny_profile: Path, tmp_path: Path
) -> None:
    args = (str(small), "-p", str(tiny_profile))
    fast = _validate_in_fresh_process(tmp_path / "fast", *args)
    code, packages, report = _validate_in_fresh_process(tmp_path / "gx", *args, "--data-docs")
    assert {"great_expectations", "pandera"} <= packages
    assert report["judged_by"] == {"file_rules": "pandera", "dataset_rules": "great_expectations"}
    assert (tmp_path / "gx" / "out" / "data_docs" / "index.html").is_file()
    same = ("passed", "n_accepted", "n_rejected", "by_rule", "findings", "classes")
    assert code == fast[0] and {k: report[k] for k in same} == {k: fast[2][k] for k in same}
