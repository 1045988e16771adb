"""Rendering only: a Validation (findings + manifest) in, report files out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from toolkit.manifest import atomic_write_text

REPORT_JSON = "report.json"


def write_report_json(report: dict[str, Any], out_dir: Path) -> Path:
    """Write report.json (UTF-8, stable key order as built) atomically into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / REPORT_JSON
    atomic_write_text(target, json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n")
    return target
