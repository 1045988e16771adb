"""Rendering only: a Validation (findings + manifest) in, report files out."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from toolkit.manifest import RUN_ID_KEY
from toolkit.paths import atomic_write_json, open_regular

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
#: How much of a report's start (and, for report.json, its end) is read to recognise it.
_PEEK_BYTES = 64 * 1024
#: report.json's key that every version of it has, near its end (after the findings).
_JSON_SIGNATURE = b'"toolkit_version": "'
#: report.html's head names its generator, in every version of it.
_HTML_SIGNATURE = b'<meta name="generator" content="toolkit'
_JSON_RUN_ID = re.compile(rb'^\{\s*"' + RUN_ID_KEY.encode() + rb'": "([0-9a-f]+)"')
_HTML_RUN_ID = re.compile(rb'<meta name="toolkit-run-id" content="([0-9a-f]+)">')


def write_report_json(report: dict[str, Any], out_dir: Path) -> Path:
    """Write report.json (UTF-8, stable key order as built) atomically into `out_dir`.

    The run id, when the report has one, comes first, so a reader finds it without parsing
    the findings."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / REPORT_JSON
    if RUN_ID_KEY in report:
        report = {RUN_ID_KEY: report[RUN_ID_KEY], **report}
    atomic_write_json(target, report)
    return target


def _peek(path: Path) -> tuple[bytes, bytes]:
    """The first and last _PEEK_BYTES of a regular file (links are not followed); empty
    when it is anything else."""
    if Path(path).is_symlink():
        return b"", b""
    try:
        with open_regular(path) as fh:
            head = fh.read(_PEEK_BYTES)
            fh.seek(0, 2)
            fh.seek(max(fh.tell() - _PEEK_BYTES, 0))
            return head, fh.read(_PEEK_BYTES)
    except OSError:
        return b"", b""


def is_report_json(path: Path) -> bool:
    """`path` is a report.json the toolkit wrote: a JSON object naming the toolkit version."""
    head, tail = _peek(path)
    return head.lstrip().startswith(b"{") and (_JSON_SIGNATURE in head or _JSON_SIGNATURE in tail)


def report_json_run_id(path: Path) -> str | None:
    """The run id a report.json records first (None: none, an older report)."""
    found = _JSON_RUN_ID.match(_peek(path)[0])
    return found.group(1).decode() if found else None


def is_report_html(path: Path) -> bool:
    """`path` is a report.html the toolkit wrote: its head names the toolkit as generator."""
    return _HTML_SIGNATURE in _peek(path)[0]


def report_html_run_id(path: Path) -> str | None:
    """The run id a report.html's head records (None: none, an older report)."""
    found = _HTML_RUN_ID.search(_peek(path)[0])
    return found.group(1).decode() if found else None
