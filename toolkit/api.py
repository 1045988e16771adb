"""The Python API, for notebooks: what `toolkit validate` and `toolkit train` do, handed
back as objects instead of printed lines and exit codes.

A thin layer over the same entry points the CLI calls (toolkit.check, toolkit.train), with
the CLI's guards: an output folder among the data, or a file of the user's at an output's
name, is refused (OutputError) before anything is written. `import toolkit` exposes
`validate_folder`, `train_folder` and `CheckResult` lazily (toolkit/__init__.py).

    import toolkit
    result = toolkit.validate_folder("data/", profile="scraped")
    result                                   # verdict, counts, findings per rule
    result.manifest[result.manifest.status == "rejected"]
    result.write_report("runs/data")         # manifest, report.json, report.html
    run = toolkit.train_folder("data/", "runs/data-default", profile="scraped")
"""

from __future__ import annotations

import html as html_text
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.text import escape_controls

if TYPE_CHECKING:
    import pandas as pd

    from toolkit.audit import AuditResult
    from toolkit.profiles import Profile
    from toolkit.train import TrainOptions, TrainResult
    from toolkit.validate import Finding, Validation

Folder = str | PathLike[str]

#: How many rules the one-line summary names (the HTML summary lists every one).
SUMMARY_RULES = 5


@dataclass(frozen=True)
class CheckResult:
    """One folder checked against one profile: the judged manifest, the findings, the
    verdict; `write_report` writes what `toolkit validate` writes."""

    #: the folder that was checked, as given
    source: str
    validation: Validation

    @property
    def manifest(self) -> pd.DataFrame:
        """One row per file: its measurements, `status` (accepted/rejected) and `reasons`."""
        return self.validation.manifest

    @property
    def findings(self) -> list[Finding]:
        """Every problem found, files' and the dataset's; `f.line()` is the linter line."""
        return self.validation.findings

    @property
    def passed(self) -> bool:
        """No blocking rule about the whole dataset broke: training may use the accepted
        files."""
        return self.validation.passed

    @property
    def failed_rules(self) -> list[str]:
        """The blocking dataset rules that broke (sorted): why it failed."""
        return self.validation.failed_rules

    @property
    def profile(self) -> str:
        """The name of the profile the folder was judged against."""
        return self.validation.profile.name

    @property
    def n_files(self) -> int:
        """Files found."""
        return len(self.manifest)

    @property
    def n_accepted(self) -> int:
        """Files that may reach training."""
        return len(self.validation.accepted)

    @property
    def n_rejected(self) -> int:
        """Files that may not."""
        return len(self.validation.rejected)

    def by_rule(self) -> dict[str, int]:
        """Findings per rule of the profile, most first (rules that found nothing left out)."""
        counts = self.validation.by_rule()
        return dict(sorted(((r, n) for r, n in counts.items() if n), key=lambda rn: -rn[1]))

    def write_report(self, out: Folder, *, html: bool = True) -> Path:
        """Write manifest, report.json and report.html (with `html`) into the folder `out`,
        as `toolkit validate --out` does, and return the report's path (report.html, or
        report.json without it). Refuses (OutputError) a folder among the data, and
        replaces only outputs the toolkit wrote."""
        from toolkit.check import write_checked
        from toolkit.outputs import check_output, check_replaceable

        out = Path(out)
        check_output(out, [self.source], option="the report folder")
        check_replaceable(out)
        render = None
        if html:
            from toolkit.report.html import write_report_html as render
        written = write_checked(out, self.validation, html=render)
        return written.report_html or written.report_json

    def _verdict(self) -> str:
        if self.passed:
            return "PASSED"
        return f"FAILED ({', '.join(self.failed_rules)})" if self.failed_rules else "FAILED"

    def __repr__(self) -> str:
        rules = list(self.by_rule().items())
        shown = ", ".join(f"{rule} {n:,}" for rule, n in rules[:SUMMARY_RULES])
        hidden = len(rules) - SUMMARY_RULES
        more = f", and {hidden} more rules" if hidden > 0 else ""
        return escape_controls(
            f"<CheckResult {self.source}: {self._verdict()}; {self.n_accepted:,} of "
            f"{self.n_files:,} files accepted, {self.n_rejected:,} rejected; profile "
            f"{self.profile}; findings: {shown or 'none'}{more}>"
        )

    def _repr_html_(self) -> str:
        """The summary as a table, for Jupyter (every name escaped)."""
        e = html_text.escape
        rows = "".join(
            f"<tr><td>{e(rule)}</td><td style='text-align:right'>{n:,}</td></tr>"
            for rule, n in self.by_rule().items()
        )
        return (
            f"<p><b>{e(self.source)}</b>: <b>{e(self._verdict())}</b>; "
            f"{self.n_accepted:,} of {self.n_files:,} files accepted, "
            f"{self.n_rejected:,} rejected; profile {e(self.profile)}</p>"
            f"<table><tr><th>rule</th><th>findings</th></tr>{rows}</table>"
        )


def validate_folder(
    data: Folder,
    profile: str | PathLike[str] | None = None,
    *,
    jobs: int | None = None,
    detect_faces: bool = True,
    progress: bool = False,
) -> CheckResult:
    """Scan `data` (one folder per class) and judge every file and the dataset against
    `profile` (a built-in name or a .toml/.yaml file; the default profile when None), as
    `toolkit validate` does; writes nothing (see `CheckResult.write_report`)."""
    from toolkit.check import check_folder
    from toolkit.profiles import DEFAULT_PROFILE

    source = str(data)
    spec = DEFAULT_PROFILE if profile is None else str(profile)
    result = check_folder(source, spec, jobs=jobs, detect_faces=detect_faces, progress=progress)
    return CheckResult(source, result)


def train_folder(
    data: Folder | Sequence[Folder],
    out: Folder,
    *,
    profile: str | PathLike[str] | Sequence[str | PathLike[str]] | None = None,
    model: str = "default",
    epochs: int | None = None,
    batch_size: int = 32,
    seed: int = 0,
    image_size: int | None = None,
    jobs: int | None = None,
    progress: bool = False,
    second_opinion: bool | None = None,
) -> TrainResult:
    """Check each data folder with its profile (one for all, or one per folder), then train
    `model` on the accepted files into the new run folder `out`, as `toolkit train` does
    (`second_opinion`: as `--second-opinion/--no-second-opinion`; None, the model's).
    Returns the run: its folder, labels, metrics, history. Raises DatasetFailedError when
    a folder fails a blocking rule (nothing is trained)."""
    from toolkit.train import TrainOptions

    roots = [Path(data)] if isinstance(data, str | PathLike) else [Path(d) for d in data]
    given = [profile] if isinstance(profile, str | PathLike) else list(profile or [])
    options = TrainOptions(
        model=model, epochs=epochs, batch_size=batch_size, seed=seed, image_size=image_size,
        second_opinion=second_opinion,
    )  # fmt: skip
    return start_training(
        Path(out),
        options,
        data=roots,
        profiles=[str(p) for p in given],
        jobs=jobs,
        progress=progress,
        option="the run folder",
    )


def audit_run(
    run: Folder, *, networks: int | None = None, jobs: int | None = None, progress: bool = False
) -> AuditResult:
    """Rank every accepted file of the run folder `run` by how likely its label is wrong, as
    `toolkit audit` does: label_issues.csv (the flagged files, most suspect first) and
    label_issues.png are written into the run folder. Returns the ranking and the flags.
    `networks`: train that many networks with the run's recipe, each scoring the files it
    never saw (`toolkit audit --networks`), instead of the regression on the embeddings."""
    if networks is not None:
        from toolkit.crossfit import audit_with_networks

        return audit_with_networks(Path(run), networks, jobs=jobs, progress=progress)
    from toolkit.audit import audit_run as audit

    return audit(Path(run), jobs=jobs, progress=progress)


def start_training(
    out: Path,
    options: TrainOptions,
    *,
    data: Sequence[Path] = (),
    manifests: Sequence[Path] = (),
    profiles: Sequence[str] | None = None,
    jobs: int | None = None,
    progress: bool = False,
    command: str = "",
    option: str = "--out",
    on_checked: Callable[[Path, Validation, Profile], None] | None = None,
    before_fit: Callable[[], None] | None = None,
    exclude: Path | None = None,
    audit: bool = True,
) -> TrainResult:
    """What `toolkit train` and `train_folder` do once parsed: refuse what cannot work before
    any scan (no train extra, an unknown model or strategy, a run folder among the data or
    not new), check each data folder with its profile (or read validated `manifests`), then
    train. `on_checked` hears of each folder checked; `before_fit` runs just before
    TensorFlow starts (the CLI quiets TensorFlow's start-up lines there). `exclude` (a
    label_issues.csv) is checked before any scan; `audit` ranks the labels after training."""
    from toolkit.audit import read_exclusion
    from toolkit.check import check_roots, profiles_for
    from toolkit.manifest import read_manifest
    from toolkit.models import get_recipe
    from toolkit.outputs import check_new_folder, check_output
    from toolkit.profiles import DEFAULT_PROFILE, load_profile
    from toolkit.train import merge_manifests, read_worker, require_train_extra, train_model

    require_train_extra()  # before a long scan
    get_recipe(options.model)  # so do an unknown model,
    read_worker(options.strategy)  # an unknown strategy and a bad TF_CONFIG
    frames = [read_manifest(m) for m in manifests]
    # the run folder stays clear of every data folder, before a scan or TensorFlow starts
    roots = [f.attrs["root"] for f in frames if f.attrs.get("root")] if manifests else data
    check_output(out, roots, option=option)
    check_new_folder(out, option=option)
    if exclude is not None:  # refused before a long scan
        read_exclusion(exclude, [str(Path(r).resolve()) for r in roots])
    if manifests:
        specs = [str(f.attrs.get("profile") or DEFAULT_PROFILE) for f in frames]
    else:
        specs = profiles_for(data, profiles)  # none given: the default profile
        frames = check_roots(data, specs, jobs=jobs, progress=progress, on_checked=on_checked)
    if before_fit is not None:
        before_fit()
    return train_model(
        merge_manifests(frames),
        out,
        options,
        profile=load_profile(specs[0]),
        profile_specs=specs,
        command=command,
        jobs=jobs,
        progress=progress,
        exclude=exclude,
        audit=audit,
    )
