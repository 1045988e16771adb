"""Runs a profile's rules over a manifest -> findings, a verdict, accepted/rejected rows.

File rules run as one pandera schema (lazy, so every failure of every file is collected);
dataset rules run as Great Expectations suites over tables derived from the manifest.
A file is rejected when it breaks any blocking ("error") rule; the dataset fails when a
blocking dataset-wide rule fails on what is left. Nothing here touches the user's files.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from toolkit import __version__
from toolkit.manifest import normalise_manifest
from toolkit.profiles import Profile
from toolkit.rules import DatasetRule, FileRule

log = logging.getLogger(__name__)

ACCEPTED, REJECTED = "accepted", "rejected"
DATASET_PATH = "."


@dataclass(frozen=True, order=True)
class Finding:
    """One problem: which file (or class folder, or "." for the dataset) broke which rule."""

    path: str
    rule: str
    severity: str
    detail: str

    def line(self) -> str:
        """The linter-style line: `path: rule: detail`."""
        return f"{self.path}: {self.rule}: {self.detail}"


@dataclass
class Validation:
    """The outcome of validating one manifest against one profile."""

    manifest: pd.DataFrame
    findings: list[Finding]
    profile: Profile
    passed: bool
    extra: dict[str, Any] = field(default_factory=dict)
    #: Great Expectations' results of the dataset suites (for Data Docs; not in the report)
    suite_results: list[Any] = field(default_factory=list, repr=False)

    @property
    def accepted(self) -> pd.DataFrame:
        """The rows that may reach training."""
        return self.manifest[self.manifest["status"] == ACCEPTED]

    @property
    def rejected(self) -> pd.DataFrame:
        """The rows that may not."""
        return self.manifest[self.manifest["status"] == REJECTED]

    @property
    def blocking_findings(self) -> list[Finding]:
        """Findings of rules with severity "error"."""
        return [f for f in self.findings if f.severity == "error"]

    @property
    def failed_rules(self) -> list[str]:
        """The blocking rules about the whole dataset that broke: why it failed (sorted)."""
        dataset = {r.name for r in self.profile.rules if _kind(r) == "dataset"}
        return sorted({f.rule for f in self.blocking_findings if f.rule in dataset})

    def by_rule(self) -> dict[str, int]:
        """Number of findings per rule of the profile (zeros included)."""
        counts = dict.fromkeys((r.name for r in self.profile.rules), 0)
        for f in self.findings:
            counts[f.rule] = counts.get(f.rule, 0) + 1
        return counts

    def classes(self) -> dict[str, dict[str, int]]:
        """Files and accepted files per class, empty class folders included."""
        counts = class_counts(self.manifest)
        return {
            str(r.label): {"n_files": int(r.n_files), "n_accepted": int(r.n_accepted)}
            for r in counts.itertuples(index=False)
        }

    def to_report(self) -> dict[str, Any]:
        """The report.json document (stable keys)."""
        return {
            "passed": self.passed,
            "n_files": len(self.manifest),
            "n_accepted": int((self.manifest["status"] == ACCEPTED).sum()),
            "n_rejected": int((self.manifest["status"] == REJECTED).sum()),
            "by_rule": self.by_rule(),
            "classes": self.classes(),
            "rules": {
                r.name: {"rule": r.rule, "severity": r.severity, "kind": _kind(r)}
                for r in self.profile.rules
            },
            "findings": [asdict(f) for f in self.findings],
            "profile": self.profile.as_dict(),
            "root": self.manifest.attrs.get("root"),
            "toolkit_version": __version__,
            **self.extra,
        }


def validate_manifest(manifest: pd.DataFrame, profile: Profile) -> Validation:
    """Judge every row and the dataset as a whole; returns the manifest with verdicts."""
    attrs = dict(manifest.attrs)
    frame = normalise_manifest(manifest).reset_index(drop=True)
    frame.attrs = {**attrs, "profile": profile.spec}
    row_findings: dict[int, list[Finding]] = defaultdict(list)

    for index, finding in _run_file_rules(frame, profile.file_rules):
        row_findings[index].append(finding)

    before = [r for r in profile.dataset_rules if not r.after_rejection]
    after = [r for r in profile.dataset_rules if r.after_rejection]
    dataset_findings: list[Finding] = []
    suite_results: list[Any] = []
    for index, finding in _run_dataset_rules(frame, before, suite_results):
        (
            row_findings[index].append(finding)
            if index is not None
            else dataset_findings.append(finding)
        )

    blocking = {i for i, fs in row_findings.items() if any(f.severity == "error" for f in fs)}
    status = pd.Series(ACCEPTED, index=frame.index, dtype="string")
    status[list(blocking)] = REJECTED
    frame["status"] = status
    frame["reasons"] = _joined(row_findings, frame.index, "error")
    frame["warnings"] = _joined(row_findings, frame.index, "warning")

    for index, finding in _run_dataset_rules(frame, after, suite_results):
        assert index is None, "rules run after rejection judge the dataset, not files"
        dataset_findings.append(finding)

    findings = sorted(f for fs in row_findings.values() for f in fs) + sorted(dataset_findings)
    passed = not any(f.severity == "error" for f in dataset_findings)
    log.info("validated %d files: %d rejected, passed=%s", len(frame), len(blocking), passed)
    return Validation(
        manifest=frame,
        findings=findings,
        profile=profile,
        passed=passed,
        suite_results=suite_results,
    )


def _joined(found: dict[int, list[Finding]], index: pd.Index, severity: str) -> pd.Series:
    out = pd.Series("", index=index, dtype="string")
    for i, fs in found.items():
        out[i] = ";".join(sorted({f.rule for f in fs if f.severity == severity}))
    return out


def _kind(rule: Any) -> str:
    if isinstance(rule, FileRule):
        return "file"
    return "file group" if rule.per_file else "dataset"


# --------------------------------------------------------------------------------------
# pandera: file rules


def _run_file_rules(frame: pd.DataFrame, rules: list[FileRule]) -> list[tuple[int, Finding]]:
    if not rules or frame.empty:
        return []
    import pandera.pandas as pa

    by_name = {r.name: r for r in rules}
    checks = [pa.Check(lambda df, r=r: ~r.violations(df).astype(bool), name=r.name) for r in rules]
    # The checks only need the columns they read; a narrow frame keeps failure cases small.
    schema = pa.DataFrameSchema(checks=checks)
    narrow = frame.drop(columns=[c for c in ("status", "reasons", "warnings") if c in frame])
    try:
        schema.validate(narrow, lazy=True)
        return []
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    broken = cases[cases["index"].isna()]
    if not broken.empty:  # a check raised instead of answering: a bug, keep its text
        raise RuntimeError(f"a file rule could not run: {broken.iloc[0].to_dict()}")
    out = []
    pairs = cases[["index", "check"]].drop_duplicates()
    for index, check in pairs.itertuples(index=False):
        rule = by_name[str(check)]
        row = frame.loc[int(index)]
        out.append((int(index), Finding(row["path"], rule.name, rule.severity, rule.detail(row))))
    return out


# --------------------------------------------------------------------------------------
# Great Expectations: dataset rules


def class_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """label, n_files, n_accepted per class (sorted), empty class folders included."""
    labelled = frame[frame["label"].notna()]
    names = sorted(set(labelled["label"]) | set(frame.attrs.get("class_folders", [])))
    n_files = labelled.groupby("label").size().reindex(names, fill_value=0)
    accepted = labelled[labelled["status"] == ACCEPTED]
    n_acc = accepted.groupby("label").size().reindex(names, fill_value=0)
    return pd.DataFrame(
        {"label": names, "n_files": n_files.to_numpy(), "n_accepted": n_acc.to_numpy()}
    )


def _tables(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The tables dataset rules judge, built lazily by name."""
    tables: dict[str, pd.DataFrame] = {}
    tables["files"] = frame[["path", "label"]].copy()
    tables["hashed"] = frame.loc[frame["sha256"].notna(), ["path", "sha256"]].copy()
    if "status" in frame:
        classes = class_counts(frame)
        largest = classes.loc[classes["n_accepted"].idxmax()] if len(classes) else None
        classes["largest"] = largest["label"] if largest is not None else ""
        classes["n_largest"] = int(largest["n_accepted"]) if largest is not None else 0
        classes["ratio_to_largest"] = (
            classes["n_accepted"] / classes["n_largest"] if len(classes) else []
        )
        classes["ratio_to_largest"] = classes["ratio_to_largest"].fillna(0.0)
        tables["classes"] = classes
        tables["classes_present"] = classes[classes["n_accepted"] > 0][["label"]]
        n_rejected = int((frame["status"] == REJECTED).sum())
        tables["dataset"] = pd.DataFrame(
            {
                "n_files": [len(frame)],
                "n_rejected": [n_rejected],
                "rejected_share": [n_rejected / len(frame) if len(frame) else 0.0],
            }
        )
    return tables


def _run_dataset_rules(
    frame: pd.DataFrame, rules: list[DatasetRule], keep: list[Any] | None = None
) -> list[tuple[int | None, Finding]]:
    if not rules:
        return []
    from toolkit.gx import run_suite

    tables = _tables(frame)
    by_table: dict[str, list[DatasetRule]] = defaultdict(list)
    for rule in rules:
        by_table[rule.table].append(rule)
    out: list[tuple[int | None, Finding]] = []
    for name, table_rules in by_table.items():
        table = tables[name]
        for rule in table_rules:
            if name == "files":
                table = table.join(rule.prepare(frame))
        if table.empty and name != "classes_present":
            continue
        outcomes = run_suite(name, table, {r.name: r.expectation() for r in table_rules}, keep)
        for rule in table_rules:
            outcome = outcomes[rule.name]
            if outcome.success:
                continue
            if outcome.unexpected_rows:
                for pos in outcome.unexpected_rows:
                    row = table.iloc[pos]
                    path = _finding_path(name, row)
                    index = int(table.index[pos]) if rule.per_file else None
                    out.append((index, Finding(path, rule.name, rule.severity, rule.detail(row))))
            else:
                summary = rule.summarise(table)
                finding = Finding(DATASET_PATH, rule.name, rule.severity, rule.detail(summary))
                out.append((None, finding))
    return out


def _finding_path(table: str, row: pd.Series) -> str:
    if table in ("classes", "classes_present"):
        return f"{row['label']}/"
    return str(row["path"]) if "path" in row else DATASET_PATH
