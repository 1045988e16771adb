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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from toolkit.manifest import ACCEPTED
from toolkit.paths import atomic_write_text
from toolkit.report import REPORT_HTML
from toolkit.report.charts import (
    Chart,
    plot_classes,
    plot_dimensions,
    plot_file_sizes,
    plot_scores,
    shown,
)
from toolkit.report.thumbnails import Thumbnail, make_thumbnails
from validations.rules import QualityRule

if TYPE_CHECKING:
    from toolkit.validate import Finding, Validation

log = logging.getLogger(__name__)

#: Files shown per rule (in path order); the rest are counted: "and N more". A file that
#: breaks several rules is shown once, under the first of them on the page, with all of them.
MAX_FILES_PER_GROUP = 8
#: Sets of the same picture shown per rule, and files shown per set.
MAX_SETS_PER_RULE = 8
MAX_FILES_PER_SET = 6
#: Files shown in a thumbnail strip (files where no face was found). The page shows examples;
#: report.json and the manifest hold every file.
MAX_FILES_PER_STRIP = 16
#: Dataset-wide findings listed (one per class at most for most rules).
MAX_DATASET_FINDINGS = 200


@dataclass(frozen=True)
class ShownFile:
    """One file on the page: its path, class, every rule it breaks (rule, severity,
    detail), whether it was kept for training, and its thumbnail."""

    path: str
    label: str
    findings: tuple[tuple[str, str, str], ...]
    thumb: Thumbnail
    #: "kept" (accepted: it reaches training) or "rejected"
    status: str = ""


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
    #: flagged files shown once already, under another rule or in a set of copies
    n_elsewhere: int = 0
    #: an image-quality rule's scores over every file, with its threshold
    chart: Chart | None = None

    @property
    def n_more(self) -> int:
        """Flagged files the page does not show."""
        return self.n_files - len(self.files) - self.n_elsewhere

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
    of_file: dict[str, list[Finding]] = defaultdict(list)
    for f in validation.findings:
        if kinds.get(f.rule) != "dataset":
            of_file[f.path].append(f)
    ordered = sorted(by_rule.items(), key=lambda kv: list(rules).index(kv[0]))
    # sets first: a copy is shown beside its twin; then each other file once, in page order
    sets = [_group(rules[n], found, rows, of_file, validation, set()) for n, found in ordered
            if rules[n].report_layout == "sets"]  # fmt: skip
    placed = {f.path for g in sets for s in g.sets for f in s.files}
    page_order = sorted(
        (kv for kv in ordered if rules[kv[0]].report_layout != "sets"),
        key=lambda kv: _PAGE_ORDER[(rules[kv[0]].severity == "error", rules[kv[0]].report_layout)],
    )
    groups = [_group(rules[n], found, rows, of_file, validation, placed) for n, found in page_order]
    groups += sets
    shown = {f.path for g in groups for f in g.files} | {
        f.path for g in groups for s in g.sets for f in s.files
    }
    bound = validation.profile.scan_options().max_decode_pixels  # what the scan decoded
    thumbs = make_thumbnails(
        rows.loc[sorted(shown)], manifest.attrs.get("root"), max_pixels=bound, jobs=jobs
    )
    for g in groups:
        g.files = [_with_thumb(f, thumbs) for f in g.files]
        if isinstance(rules[g.rule], QualityRule):
            g.chart = _score_chart(rules[g.rule], manifest)
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


def _score_chart(rule: QualityRule, manifest: pd.DataFrame) -> Chart:
    return plot_scores(
        rule.scores(manifest),
        rule.violations(manifest),
        rule=rule.name,
        words=rule.score_words,
        threshold=rule.threshold,
        breaks_above=rule.breaks_above,
    )


#: Where a grid or strip sits on the page (rejected files, no face, other warnings): a file
#: is shown under the first group on the page that flags it.
_PAGE_ORDER = {(True, "grid"): 0, (True, "strip"): 1, (False, "strip"): 1, (False, "grid"): 2}


def _group(
    rule: Any,
    found: list[Finding],
    rows: pd.DataFrame,
    of_file: dict[str, list[Finding]],
    validation: Validation,
    placed: set[str],
) -> FileGroup:
    """The rule's files not yet `placed` on the page (sets: every member, beside its
    twins); the files it shows are added to `placed`."""
    layout = str(rule.report_layout)
    group = FileGroup(rule.name, rule.rule, rule.severity, layout, n_files=len(found))
    if layout == "sets":
        members = _sets(rule, found, validation.manifest)
        group.n_sets = len(members)
        group.sets = [
            FileSet(
                [_shown(p, of_file, rows) for p in paths[:MAX_FILES_PER_SET]],
                max(0, len(paths) - MAX_FILES_PER_SET),
            )
            for paths in members[:MAX_SETS_PER_RULE]
        ]
        return group
    cap = MAX_FILES_PER_STRIP if layout == "strip" else MAX_FILES_PER_GROUP
    fresh = sorted({f.path for f in found} - placed)
    group.n_elsewhere = len({f.path for f in found}) - len(fresh)
    group.files = [_shown(path, of_file, rows) for path in fresh[:cap]]
    placed.update(fresh[:cap])
    return group


def _sets(rule: Any, found: list[Finding], manifest: pd.DataFrame) -> list[list[str]]:
    """Each set of files holding the same picture that a flagged file belongs to, in path
    order. The sets are the rule's own (`DatasetRule.report_sets`)."""
    flagged_paths = {f.path for f in found}
    flagged = manifest[manifest["path"].isin(list(flagged_paths))]
    ids = rule.report_sets(manifest, flagged)
    pool = manifest.loc[ids.index]
    sets = [
        sorted(map(str, paths))
        for paths in pool["path"].groupby(ids.astype(object), dropna=True).agg(list)
    ]
    sets = [paths for paths in sets if len(paths) > 1 and any(p in flagged_paths for p in paths)]
    return sorted(sets, key=lambda paths: paths[0])


def _shown(path: str, of_file: dict[str, list[Finding]], rows: pd.DataFrame) -> ShownFile:
    """A file with all its findings, blocking ones first, and whether it was kept."""
    label = rows.at[path, "label"] if path in rows.index else None
    status = rows.at[path, "status"] if path in rows.index else None
    found = sorted(of_file.get(path, []), key=lambda f: (f.severity != "error", f.rule))
    return ShownFile(
        path,
        "" if pd.isna(label) else str(label),
        tuple((f.rule, f.severity, f.detail) for f in found),
        Thumbnail(None),
        "" if pd.isna(status) else ("kept" if status == ACCEPTED else "rejected"),
    )


def _with_thumb(f: ShownFile, thumbs: dict[str, Thumbnail]) -> ShownFile:
    return replace(f, thumb=thumbs[f.path])


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
