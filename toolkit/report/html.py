"""report.html: one self-contained page a user reads to decide what to fix before training.

Rendering only: a Validation and its report.json document in, one HTML file out. Charts
and thumbnails are embedded as data: URIs and the page loads nothing (a Content Security
Policy forbids it), so it opens from disk anywhere. Every text that comes from a file name
or image metadata goes through Jinja2's autoescaping. Groups are capped (the full lists
stay in report.json and the manifest), so the page stays a few MB on 100,000 files.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from toolkit.paths import atomic_write_text
from toolkit.report import REPORT_HTML
from toolkit.report.charts import Chart, plot_classes, plot_dimensions, plot_file_sizes, shown
from toolkit.report.thumbnails import Thumbnail, make_thumbnails

if TYPE_CHECKING:
    from toolkit.validate import Finding, Validation

log = logging.getLogger(__name__)

#: Files shown per rule (in path order); the rest are counted: "and N more".
MAX_FILES_PER_GROUP = 24
#: Sets of the same picture shown per rule, and files shown per set.
MAX_SETS_PER_RULE = 12
MAX_FILES_PER_SET = 6
#: Files shown in a thumbnail strip (files where no face was found).
MAX_FILES_PER_STRIP = 48
#: Dataset-wide findings listed (one per class at most for most rules).
MAX_DATASET_FINDINGS = 200


@dataclass(frozen=True)
class ShownFile:
    """One file on the page: its path, class, what is wrong with it, and its thumbnail."""

    path: str
    label: str
    detail: str
    thumb: Thumbnail


@dataclass(frozen=True)
class FileSet:
    """Files holding the same picture (shown side by side); `n_more` not shown."""

    files: list[ShownFile]
    n_more: int


@dataclass
class FileGroup:
    """The files one rule flagged: shown as a grid, as sets, or as a strip."""

    rule: str
    words: str
    severity: str
    layout: str
    n_files: int
    files: list[ShownFile] = field(default_factory=list)
    sets: list[FileSet] = field(default_factory=list)
    n_sets: int = 0

    @property
    def n_more(self) -> int:
        """Flagged files the page does not show."""
        return self.n_files - len(self.files)

    @property
    def n_more_sets(self) -> int:
        """Sets the page does not show."""
        return self.n_sets - len(self.sets)


def write_report_html(
    validation: Validation, report: dict[str, Any], out_dir: Path, *, jobs: int | None = None
) -> Path:
    """Write report.html (atomically) into `out_dir`; returns its path."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    context = _context(validation, report, jobs)
    context["report_seconds"] = time.perf_counter() - started
    target = out_dir / REPORT_HTML
    atomic_write_text(target, _template().render(**context))
    log.info("wrote %s in %.2f s", target, time.perf_counter() - started)
    return target


def _context(validation: Validation, report: dict[str, Any], jobs: int | None) -> dict[str, Any]:
    from toolkit.validate import class_counts

    manifest = validation.manifest
    rules = {r.name: r for r in validation.profile.rules}
    kinds = {name: r["kind"] for name, r in report["rules"].items()}
    by_rule: dict[str, list[Finding]] = defaultdict(list)
    dataset_wide = []
    for f in validation.findings:
        (dataset_wide if kinds.get(f.rule) == "dataset" else by_rule[f.rule]).append(f)

    rows = manifest.drop_duplicates("path").set_index("path", drop=False)
    groups = [
        _group(rules[name], found, rows, validation)
        for name, found in sorted(by_rule.items(), key=lambda kv: list(rules).index(kv[0]))
    ]
    shown = {f.path for g in groups for f in g.files} | {
        f.path for g in groups for s in g.sets for f in s.files
    }
    bound = validation.profile.scan_options().max_decode_pixels  # what the scan decoded
    thumbs = make_thumbnails(
        rows.loc[sorted(shown)], manifest.attrs.get("root"), max_pixels=bound, jobs=jobs
    )
    for g in groups:
        g.files = [_with_thumb(f, thumbs) for f in g.files]
        g.sets = [FileSet([_with_thumb(f, thumbs) for f in s.files], s.n_more) for s in g.sets]

    def threshold(rule: str, param: str) -> Any:
        return getattr(rules.get(rule), param, None)

    charts: list[Chart] = [
        plot_classes(
            class_counts(manifest),
            min_ratio=threshold("class_balance", "min_ratio"),
            min_files=threshold("min_files_per_class", "min_files"),
        ),
        plot_file_sizes(manifest, min_bytes=threshold("min_file_bytes", "min_bytes")),
        plot_dimensions(
            manifest,
            min_side=threshold("min_side", "min_px"),
            max_pixels=threshold("max_pixels", "max_pixels"),
        ),
    ]
    failed = sorted({f.rule for f in dataset_wide if f.severity == "error"})
    seconds = dict(report.get("seconds") or {})
    seconds.pop("report", None)
    return {
        "report": report,
        "failed": failed,
        "n_warned": int((manifest["warnings"].fillna("") != "").sum()),
        "rule_rows": [
            {
                **report["rules"][name],
                "name": name,
                "n": report["by_rule"].get(name, 0),
                "has_group": name in by_rule,
            }
            for name in report["rules"]
        ],
        "charts": charts,
        "rejected": [g for g in groups if g.severity == "error" and g.layout == "grid"],
        "sets": [g for g in groups if g.layout == "sets"],
        "strips": [g for g in groups if g.layout == "strip"],
        "warned": [g for g in groups if g.severity != "error" and g.layout == "grid"],
        "strip_rules": [r for r in rules.values() if r.report_layout == "strip"],
        "dataset_findings": dataset_wide[:MAX_DATASET_FINDINGS],
        "n_more_dataset_findings": max(0, len(dataset_wide) - MAX_DATASET_FINDINGS),
        "seconds": seconds,
        "limits": {
            "group": MAX_FILES_PER_GROUP,
            "sets": MAX_SETS_PER_RULE,
            "set": MAX_FILES_PER_SET,
            "strip": MAX_FILES_PER_STRIP,
        },
    }


def _group(
    rule: Any, found: list[Finding], rows: pd.DataFrame, validation: Validation
) -> FileGroup:
    layout = str(rule.report_layout)
    group = FileGroup(rule.name, rule.rule, rule.severity, layout, n_files=len(found))
    if layout == "sets":
        members = _sets(rule, found, validation.manifest)
        group.n_sets = len(members)
        group.sets = [
            FileSet(
                [_shown(p, details.get(p, ""), rows) for p in paths[:MAX_FILES_PER_SET]],
                max(0, len(paths) - MAX_FILES_PER_SET),
            )
            for paths, details in members[:MAX_SETS_PER_RULE]
        ]
        return group
    cap = MAX_FILES_PER_STRIP if layout == "strip" else MAX_FILES_PER_GROUP
    group.files = [_shown(f.path, f.detail, rows) for f in sorted(found)[:cap]]
    return group


def _sets(
    rule: Any, found: list[Finding], manifest: pd.DataFrame
) -> list[tuple[list[str], dict[str, str]]]:
    """Each set of files holding the same picture, in path order, with the flagged details.

    The sets are the rule's own (`DatasetRule.report_sets`), rebuilt for the flagged files.
    """
    details = {f.path: f.detail for f in found}
    flagged = manifest[manifest["path"].isin(list(details))]
    ids = rule.report_sets(manifest, flagged)
    pool = manifest.loc[ids.index]
    sets = [
        sorted(map(str, paths))
        for paths in pool["path"].groupby(ids.astype(object), dropna=True).agg(list)
    ]
    sets = [paths for paths in sets if len(paths) > 1 and any(p in details for p in paths)]
    sets.sort(key=lambda paths: paths[0])
    return [(paths, details) for paths in sets]


def _shown(path: str, detail: str, rows: pd.DataFrame) -> ShownFile:
    label = rows.at[path, "label"] if path in rows.index else None
    return ShownFile(path, "" if pd.isna(label) else str(label), detail, Thumbnail(None))


def _with_thumb(f: ShownFile, thumbs: dict[str, Thumbnail]) -> ShownFile:
    return ShownFile(f.path, f.label, f.detail, thumbs[f.path])


def _template() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("toolkit.report", "templates"),
        autoescape=True,  # every file name and metadata string is text, never markup
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["n"] = lambda value: f"{value:,}"
    env.filters["shown"] = shown  # a name as a reader sees it: controls and bidi escaped
    return env.get_template("report.html.j2")
