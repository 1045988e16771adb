"""Runs a profile's rules over a manifest -> findings, a verdict, accepted/rejected rows.

File rules are pandas tests of each row; dataset rules declare what they expect of tables
derived from the manifest, in Great Expectations' vocabulary (toolkit.expect). Who runs
them is a `Runner`: by default the toolkit calls the file rules itself and judges the
expectations with its own interpreter, since importing pandera and Great Expectations costs
seconds, more than validating a small folder; `Runner.LIBRARIES` runs the same rules as a
lazy pandera schema and as GX suites, with the same findings, for GX's own results (Data
Docs) and as the tests' reference. A file is rejected when it breaks any blocking ("error")
rule; the dataset fails when a blocking dataset-wide rule fails on what is left. Nothing
here touches the user's files.
"""

from __future__ import annotations

import enum
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from toolkit import __version__
from toolkit.expect import judge_table
from toolkit.manifest import ACCEPTED, DATASET_PATH, REJECTED, normalise_manifest
from toolkit.profiles import Profile
from toolkit.text import escape_controls
from validations.rules import DatasetRule, FileRule, Table

log = logging.getLogger(__name__)


class Runner(enum.StrEnum):
    """Who runs the rules: both give the same findings, in the same order."""

    #: the toolkit: each file rule's `violations` called directly, each dataset rule's
    #: expectation judged by toolkit.expect; neither library is imported
    FAST = "fast"
    #: the libraries: a lazy pandera schema of the file rules, Great Expectations suites of
    #: the dataset rules (whose results `Validation.suite_results` keeps, for Data Docs)
    LIBRARIES = "libraries"

    def judged_by(self) -> dict[str, str]:
        """report.json's "judged_by": what ran the file rules and the dataset rules."""
        if self is Runner.LIBRARIES:
            return {"file_rules": "pandera", "dataset_rules": "great_expectations"}
        return {"file_rules": "pandas", "dataset_rules": "numpy"}


@dataclass(frozen=True, order=True)
class Finding:
    """One problem: which file (or class folder, or "." for the dataset) broke which rule."""

    path: str
    rule: str
    severity: str
    detail: str

    def line(self) -> str:
        """The linter-style line: `path: rule: detail`, safe to print (controls escaped)."""
        return escape_controls(f"{self.path}: {self.rule}: {self.detail}")


@dataclass
class Validation:
    """The outcome of validating one manifest against one profile."""

    manifest: pd.DataFrame
    findings: list[Finding]
    profile: Profile
    passed: bool
    #: the aggregates the report quotes (the Dask engine has no manifest in one process)
    counts: DatasetCounts | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: Great Expectations' results of the dataset suites (for Data Docs; not in the report)
    suite_results: list[Any] = field(default_factory=list, repr=False)
    #: wall seconds per step of the engine that checked it (toolkit.check; report.json's)
    seconds: dict[str, float] = field(default_factory=dict, repr=False)
    #: who ran the rules
    runner: Runner = Runner.FAST

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
        dataset = {r.name for r in self.profile.rules if r.kind == "dataset"}
        return sorted({f.rule for f in self.blocking_findings if f.rule in dataset})

    def by_rule(self) -> dict[str, int]:
        """Number of findings per rule of the profile (zeros included)."""
        counts = dict.fromkeys((r.name for r in self.profile.rules), 0)
        for f in self.findings:
            counts[f.rule] = counts.get(f.rule, 0) + 1
        return counts

    def classes(self) -> dict[str, dict[str, int]]:
        """Files and accepted files per class, empty class folders included."""
        counts = self.counts.classes if self.counts else class_counts(self.manifest)
        return {
            str(r.label): {"n_files": int(r.n_files), "n_accepted": int(r.n_accepted)}
            for r in counts.itertuples(index=False)
        }

    @property
    def root(self) -> str | None:
        """The scanned data folder."""
        return self.extra.get("root") or self.manifest.attrs.get("root")

    def to_report(self) -> dict[str, Any]:
        """The report.json document (stable keys)."""
        counts = self.counts or DatasetCounts.of(self.manifest)
        return {
            "passed": self.passed,
            "n_files": counts.n_files,
            "n_accepted": counts.n_accepted,
            "n_rejected": counts.n_rejected,
            "by_rule": self.by_rule(),
            "classes": self.classes(),
            "rules": {
                r.name: {"rule": r.rule, "severity": r.severity, "kind": r.kind}
                for r in self.profile.rules
            },
            "findings": [asdict(f) for f in self.findings],
            "profile": self.profile.as_dict(),
            "root": self.root,
            "toolkit_version": __version__,
            "judged_by": self.runner.judged_by(),
            **{k: v for k, v in self.extra.items() if k != "root"},
        }


def validate_manifest(
    manifest: pd.DataFrame, profile: Profile, runner: Runner = Runner.FAST, *, worded: bool = True
) -> Validation:
    """Judge every row and the dataset as a whole; returns the manifest with verdicts.

    The steps are the ones the Dask engine (toolkit.cluster) runs on partitions and
    aggregates: file rules per row, content rules on the rows that share content or a
    path with another, dataset rules on counts. `worded=False` leaves the file and content
    rules' findings without path and detail (empty): the same verdicts, for a caller that
    only counts them (the advice).
    """
    attrs = {**manifest.attrs, "profile": profile.spec}
    frame = normalise_manifest(manifest).reset_index(drop=True)
    # pandas deep-copies attrs into every frame and column derived from one, and the rules
    # derive thousands: they judge the bare rows, the verdicts get the attrs back
    frame.attrs = {}
    suite_results: list[Any] = []
    row_findings: dict[int, list[Finding]] = defaultdict(list)
    for index, finding in judge_files(frame, profile, runner, worded=worded):
        row_findings[index].append(finding)
    n_hashed, n_unique = duplicate_counts(frame)
    grouped, dataset_findings = judge_groups(
        frame, n_hashed, n_unique, profile, suite_results, runner, worded=worded
    )
    for index, finding in grouped:
        row_findings[index].append(finding)

    blocking = {i for i, fs in row_findings.items() if any(f.severity == "error" for f in fs)}
    status = pd.Series(ACCEPTED, index=frame.index, dtype="string")
    status[list(blocking)] = REJECTED
    frame["status"] = status
    frame["reasons"] = _joined(row_findings, frame.index, "error")
    frame["warnings"] = _joined(row_findings, frame.index, "warning")
    frame.attrs = attrs

    counts = DatasetCounts.of(frame)
    dataset_findings += judge_dataset(counts, profile, suite_results, runner)
    findings = sorted(f for fs in row_findings.values() for f in fs) + sorted(dataset_findings)
    passed = not any(f.severity == "error" for f in dataset_findings)
    log.info("validated %d files: %d rejected, passed=%s", len(frame), len(blocking), passed)
    return Validation(
        manifest=frame,
        findings=findings,
        profile=profile,
        passed=passed,
        counts=counts,
        suite_results=suite_results,
        runner=runner,
    )


@dataclass(frozen=True)
class DatasetCounts:
    """The aggregates the dataset-wide rules and the report judge: small at any scale."""

    n_files: int
    n_accepted: int
    n_rejected: int
    #: label, n_files, n_accepted per class (sorted), empty class folders included
    classes: pd.DataFrame

    @classmethod
    def of(cls, frame: pd.DataFrame) -> DatasetCounts:
        """The counts of a validated pandas manifest."""
        return cls(
            n_files=len(frame),
            n_accepted=int((frame["status"] == ACCEPTED).sum()),
            n_rejected=int((frame["status"] == REJECTED).sum()),
            classes=class_counts(frame),
        )


def judge_files(
    frame: pd.DataFrame, profile: Profile, runner: Runner = Runner.FAST, *, worded: bool = True
) -> list[tuple[int, Finding]]:
    """The file rules on a manifest or a partition of one: (row index, finding) for every
    failure of every file, by rule in the profile's order, then by row (`validate_manifest`
    says what `worded` is)."""
    if runner is Runner.LIBRARIES:
        return _run_file_rules_with_pandera(frame, profile.file_rules)
    return _run_file_rules(frame, profile.file_rules, worded)


def duplicate_counts(frame: pd.DataFrame) -> tuple[int, int]:
    """Rows with a SHA-256 and distinct SHA-256 values among them."""
    hashed = frame["sha256"].dropna()
    return len(hashed), int(hashed.nunique())


def judge_groups(
    candidates: pd.DataFrame,
    n_hashed: int,
    n_unique_sha256: int,
    profile: Profile,
    keep: list[Any] | None = None,
    runner: Runner = Runner.FAST,
    *,
    worded: bool = True,
) -> tuple[list[tuple[int, Finding]], list[Finding]]:
    """The dataset rules that run before rejection: (file findings, dataset findings).

    `candidates` holds every row that shares content (bytes, or a perceptual hash within
    the rules' distances) or a path with another row, or more; the rest cannot break these
    rules, so the Dask engine sends only candidates here.
    """
    rules = [r for r in profile.dataset_rules if not r.after_rejection]
    evidence = Evidence(candidates=candidates, n_hashed=n_hashed, n_unique_sha256=n_unique_sha256)
    per_file: list[tuple[int, Finding]] = []
    dataset: list[Finding] = []
    for index, finding in _run_dataset_rules(evidence, rules, runner, keep, worded):
        (per_file.append((index, finding)) if index is not None else dataset.append(finding))
    return per_file, dataset


def judge_dataset(
    counts: DatasetCounts,
    profile: Profile,
    keep: list[Any] | None = None,
    runner: Runner = Runner.FAST,
) -> list[Finding]:
    """The dataset rules that run on the verdicts (class counts, rejected share)."""
    rules = [r for r in profile.dataset_rules if r.after_rejection]
    out = []
    for index, finding in _run_dataset_rules(Evidence(counts=counts), rules, runner, keep):
        assert index is None, "rules run after rejection judge the dataset, not files"
        out.append(finding)
    return out


def _joined(found: dict[int, list[Finding]], index: pd.Index, severity: str) -> pd.Series:
    # one array built at once: setting Arrow-backed strings item by item costs 0.1 ms each
    values = [
        ";".join(sorted({f.rule for f in found[i] if f.severity == severity})) if i in found else ""
        for i in index
    ]
    return pd.Series(pd.array(values, dtype="string"), index=index)


# --------------------------------------------------------------------------------------
# file rules: the toolkit's own runner, then pandera's (--data-docs)


def _run_file_rules(
    frame: pd.DataFrame, rules: list[FileRule], worded: bool = True
) -> list[tuple[int, Finding]]:
    if not rules or frame.empty:
        return []
    out = []
    for rule in rules:
        broken = frame.index[rule.violations(frame).astype(bool).to_numpy()]
        if worded:
            out.extend(_findings(rule, frame, broken))
        else:  # the wording is most of the cost, and the verdicts do not read it
            out.extend((int(i), Finding("", rule.name, rule.severity, "")) for i in broken)
    return out


def _findings(rule: FileRule, frame: pd.DataFrame, index: Any) -> list[tuple[int, Finding]]:
    """The findings of `rule` on the rows at `index`, by row, worded in one call (a frame
    built per finding costs a millisecond or more, thousands of times in a folder of photos)."""
    rows = frame.loc[index]
    return [
        (int(i), Finding(path, rule.name, rule.severity, detail))
        for i, path, detail in zip(index, rows["path"], rule.details(rows), strict=True)
    ]


def _run_file_rules_with_pandera(
    frame: pd.DataFrame, rules: list[FileRule]
) -> list[tuple[int, Finding]]:
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
    for check, group in pairs.groupby("check", sort=False):
        rule = by_name[str(check)]
        out.extend(_findings(rule, frame, group["index"].astype(int).tolist()))
    return out


# --------------------------------------------------------------------------------------
# Dataset rules: tables, and their expectations judged (toolkit.expect, or toolkit.gx)


def class_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """label, n_files, n_accepted per class (sorted), empty class folders included."""
    labelled = frame[frame["label"].notna()]
    accepted = labelled[labelled["status"] == ACCEPTED]
    return class_table(
        labelled.groupby("label").size(),
        accepted.groupby("label").size(),
        frame.attrs.get("class_folders", []),
    )


def class_table(
    n_files: pd.Series, n_accepted: pd.Series, class_folders: list[str]
) -> pd.DataFrame:
    """The per-class table from counts by label (any engine's), empty folders included."""
    names = sorted(set(map(str, n_files.index)) | set(class_folders))
    n_files = n_files.rename(index=str).reindex(names, fill_value=0)
    n_acc = n_accepted.rename(index=str).reindex(names, fill_value=0)
    return pd.DataFrame(
        {
            "label": names,
            "n_files": n_files.to_numpy(dtype="int64"),
            "n_accepted": n_acc.to_numpy(dtype="int64"),
        }
    )


@dataclass(frozen=True)
class Evidence:
    """What the table builders build from: before rejection, the candidate rows and the
    hash counts; after it, the counts per class and status. Both engines hand over these,
    so both judge the same tables."""

    candidates: pd.DataFrame | None = None
    n_hashed: int = 0
    n_unique_sha256: int = 0
    counts: DatasetCounts | None = None

    def need_candidates(self) -> pd.DataFrame:
        """The candidate rows (a rule on the files table runs before rejection)."""
        assert self.candidates is not None, "file-group rules need the candidate rows"
        return self.candidates

    def need_counts(self) -> DatasetCounts:
        """The counts (a rule on an after-rejection table runs on the verdicts)."""
        assert self.counts is not None, "after-rejection rules need the counts"
        return self.counts


def files_table(evidence: Evidence) -> pd.DataFrame:
    """One row per candidate file (its rules add their columns with `prepare`)."""
    return evidence.need_candidates()[["path", "label"]].copy()


def duplicates_table(evidence: Evidence) -> pd.DataFrame:
    """One row: hashed rows, copies among them, their share (no row when nothing hashed)."""
    n_hashed = evidence.n_hashed
    if not n_hashed:
        return pd.DataFrame(columns=["n_rows", "n_copies", "share"])
    n_copies = n_hashed - evidence.n_unique_sha256
    return pd.DataFrame(
        {"n_rows": [n_hashed], "n_copies": [n_copies], "share": [n_copies / n_hashed]}
    )


def classes_table(evidence: Evidence) -> pd.DataFrame:
    """One row per class folder: files, accepted files, the largest class and the ratio."""
    classes = evidence.need_counts().classes.copy()
    largest = classes.loc[classes["n_accepted"].idxmax()] if len(classes) else None
    classes["largest"] = largest["label"] if largest is not None else ""
    classes["n_largest"] = int(largest["n_accepted"]) if largest is not None else 0
    classes["ratio_to_largest"] = (
        classes["n_accepted"] / classes["n_largest"] if len(classes) else []
    )
    classes["ratio_to_largest"] = classes["ratio_to_largest"].fillna(0.0)
    return classes


def classes_present_table(evidence: Evidence) -> pd.DataFrame:
    """One row per class with at least one accepted file."""
    classes = evidence.need_counts().classes
    return classes[classes["n_accepted"] > 0][["label"]]


def dataset_table(evidence: Evidence) -> pd.DataFrame:
    """One row: files, rejected files, their share."""
    counts = evidence.need_counts()
    n = counts.n_files
    return pd.DataFrame(
        {
            "n_files": [n],
            "n_rejected": [counts.n_rejected],
            "rejected_share": [counts.n_rejected / n if n else 0.0],
        }
    )


#: The one builder of each table dataset rules judge (both engines go through these).
TABLE_BUILDERS: dict[Table, Callable[[Evidence], pd.DataFrame]] = {
    Table.FILES: files_table,
    Table.DUPLICATES: duplicates_table,
    Table.CLASSES: classes_table,
    Table.CLASSES_PRESENT: classes_present_table,
    Table.DATASET: dataset_table,
}


def _run_dataset_rules(
    evidence: Evidence,
    rules: list[DatasetRule],
    runner: Runner = Runner.FAST,
    keep: list[Any] | None = None,
    worded: bool = True,
) -> list[tuple[int | None, Finding]]:
    if not rules:
        return []

    by_table: dict[Table, list[DatasetRule]] = defaultdict(list)
    for rule in rules:
        by_table[Table(rule.table)].append(rule)
    out: list[tuple[int | None, Finding]] = []
    for name, table_rules in by_table.items():
        table = TABLE_BUILDERS[name](evidence)
        if name is Table.FILES:
            frame = evidence.need_candidates()
            for rule in table_rules:
                table = table.join(rule.prepare(frame))
        if table.empty and not name.judged_when_empty:
            continue
        expected = {r.name: r.expectation() for r in table_rules}
        if runner is Runner.LIBRARIES:
            from toolkit.gx import run_suite

            outcomes = run_suite(name.value, table, expected, keep)
        else:
            outcomes = judge_table(table.reset_index(drop=True), expected)
        for rule in table_rules:
            outcome = outcomes[rule.name]
            if outcome.success:
                continue
            if outcome.unexpected_rows and not worded:
                for pos in outcome.unexpected_rows:
                    index = int(table.index[pos]) if rule.per_file else None
                    out.append((index, Finding("", rule.name, rule.severity, "")))
            elif outcome.unexpected_rows:
                for pos in outcome.unexpected_rows:
                    row = table.iloc[pos]
                    path = name.finding_path(row)
                    index = int(table.index[pos]) if rule.per_file else None
                    out.append((index, Finding(path, rule.name, rule.severity, rule.detail(row))))
            else:
                summary = rule.summarise(table)
                finding = Finding(DATASET_PATH, rule.name, rule.severity, rule.detail(summary))
                out.append((None, finding))
    return out


# --------------------------------------------------------------------------------------
# Advice: when one rule rejects much of a folder, what the other built-in profiles make of it

#: A rule that rejects more than this share of the files says more about the profile than
#: about the files: the folder may hold another kind of data (thumbnails, face crops) than
#: the profile was written for, and another built-in profile may fit it.
ADVICE_SHARE = 0.25


@dataclass(frozen=True)
class ProfileOutcome:
    """What one other profile makes of the same scanned files."""

    n_accepted: int
    passed: bool
    #: files this scan left undecoded (over its pixel limit) that the profile's own scan
    #: would decode: judged as this scan left them (rejected), so n_accepted may be low by
    #: at most this many
    n_undecided: int = 0


@dataclass(frozen=True)
class Advice:
    """The rules that reject more than `share` of the files, and, only when there are
    such rules, what each other built-in profile would accept of the same scan."""

    share: float
    n_files: int
    #: rule -> files it rejects, for the rules over the share (most first)
    rules: dict[str, int]
    other_profiles: dict[str, ProfileOutcome]

    def as_dict(self) -> dict[str, Any]:
        """report.json's "advice"."""
        return {
            "share": self.share,
            "n_files": self.n_files,
            "rules": dict(self.rules),
            "other_profiles": {k: asdict(v) for k, v in self.other_profiles.items()},
        }


def rejected_per_rule(manifest: pd.DataFrame) -> dict[str, int]:
    """Files each blocking rule rejects (a file rejected by two rules counts under both)."""
    reasons = manifest["reasons"].fillna("")
    names = reasons[reasons != ""].str.split(";").explode()
    return {str(k): int(v) for k, v in names.value_counts().items()}


def advise(validation: Validation, share: float = ADVICE_SHARE) -> Advice:
    """The rules over `share`, and the other built-in profiles re-judging the same manifest.

    Nothing is scanned again. Every built-in profile decodes what its `max_pixels` allows,
    so a profile with a higher limit than the scan's would have decoded the files between
    the two limits: those are counted in `n_undecided`, not guessed. Needs the manifest in
    this process (the Dask engine hands it back only for folders report.html can draw).
    """
    from toolkit.profiles import builtin_profiles, load_profile

    manifest = validation.manifest
    if manifest is None or manifest.empty:
        return Advice(share, 0, {}, {})
    n_files = len(manifest)
    heavy = {r: n for r, n in rejected_per_rule(manifest).items() if n > share * n_files}
    heavy = dict(sorted(heavy.items(), key=lambda kv: (-kv[1], kv[0])))
    others: dict[str, ProfileOutcome] = {}
    if heavy:
        scanned = validation.profile.scan_options().max_decode_pixels
        pixels = manifest["width_px"].astype("Float64") * manifest["height_px"].astype("Float64")
        for name in builtin_profiles():
            if name == validation.profile.spec:  # a built-in's spec is its name
                continue
            other = load_profile(name)
            limit = other.scan_options().max_decode_pixels
            undecided = int(((pixels > scanned) & (pixels <= limit)).fillna(False).sum())
            judged = validate_manifest(manifest, other, worded=False)
            others[name] = ProfileOutcome(len(judged.accepted), judged.passed, undecided)
    return Advice(share, n_files, heavy, others)
