"""The one entry point: scan a folder and judge it against a profile -> a `Validation`.

"Scan, then validate" is one step to every caller (the CLI's validate and train, evaluate,
the benchmarks, a Python user), and where it runs is an engine's business: `LocalEngine`
scans with processes on this machine and judges one pandas manifest; `DaskEngine` does both
on a Dask cluster (toolkit.cluster) and never holds the whole manifest in one process.
Both judge with the same rules and the same table builders (toolkit.validate), so both give
the same findings and verdict. `check_into` also writes a check's outputs into OUT as one
staged set (toolkit.outputs); the guard on OUT stays with the caller, before any work.
Nothing here prints.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import pandas as pd

from toolkit.errors import DatasetFailedError, ToolkitError, UsageError
from toolkit.outputs import Staging
from toolkit.profiles import DEFAULT_PROFILE, Profile, load_profile
from toolkit.scan import ScanOptions
from toolkit.validate import Runner, Validation

#: The engines `check_folder` (and `toolkit validate --engine`) knows by name.
ENGINES = ("local", "dask")
#: report.json's key for how many rows the scan reused from the previous manifest and how
#: many it scanned ({"n_reused": .., "n_scanned": ..}); the Dask engine scans every file
SCAN_COUNTS_KEY = "scan_counts"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckOptions:
    """How to scan, and where the engine writes the manifest (none: it writes nothing)."""

    scan: ScanOptions
    jobs: int | None = None
    progress: bool = False
    #: the folder the manifest goes into (the caller's staging folder)
    out: Path | None = None
    #: stamped into the manifest's metadata, so the report and the manifest name one run
    run_id: str | None = None
    #: an earlier manifest whose rows of unchanged files the scan may reuse (the local
    #: engine's; toolkit.scan.rescan_folder decides which): not there, not a manifest, or
    #: of another folder, and every file is scanned
    previous: Path | None = None
    #: who runs the rules (Runner.LIBRARIES for Great Expectations' own results)
    runner: Runner = Runner.FAST


@runtime_checkable
class Engine(Protocol):
    """Where a check runs: scans `source`, judges it, writes the manifest into `options.out`
    (in the engine's own format) and says how many seconds each step took."""

    name: ClassVar[str]

    def check(
        self, source: str, profile: Profile, options: CheckOptions
    ) -> tuple[Validation, dict[str, float]]:
        """(the validation, wall seconds per step)."""
        ...


@dataclass(frozen=True)
class LocalEngine:
    """Processes on this machine (toolkit.scan), one pandas manifest (toolkit.validate)."""

    name: ClassVar[str] = "local"

    def check(
        self, source: str, profile: Profile, options: CheckOptions
    ) -> tuple[Validation, dict[str, float]]:
        """Scan into a DataFrame (reusing `options.previous`'s rows of unchanged files), judge
        it, write manifest.parquet into `options.out`."""
        from toolkit.manifest import RUN_ID_KEY, write_manifest
        from toolkit.scan import rescan_folder
        from toolkit.validate import validate_manifest

        started = time.perf_counter()
        manifest, counts = rescan_folder(
            Path(source),
            _previous_manifest(options.previous),
            jobs=options.jobs,
            options=options.scan,
            progress=options.progress,
        )
        scanned = time.perf_counter()
        result = validate_manifest(manifest, profile, options.runner)
        result.extra[SCAN_COUNTS_KEY] = asdict(counts)
        seconds = {
            "scan": round(scanned - started, 2),
            "validate": round(time.perf_counter() - scanned, 2),
        }
        if options.run_id is not None:
            result.manifest.attrs[RUN_ID_KEY] = options.run_id
        if options.out is not None:
            write_manifest(result.manifest, options.out)
        return result, seconds


def _previous_manifest(path: Path | None) -> pd.DataFrame | None:
    """The manifest at `path` when there is one that reads back whole, else None: a record
    that fails its checks (toolkit.manifest.read_manifest) is simply no cache."""
    from toolkit.manifest import read_manifest

    if path is None or not os.path.lexists(path):
        return None
    try:
        return read_manifest(path)
    except ToolkitError as exc:
        log.info("scanning every file: the previous manifest is not reused: %s", exc)
        return None


@dataclass(frozen=True)
class DaskEngine:
    """A Dask cluster: a running scheduler's address, or a LocalCluster of `workers`.

    Writes the manifest as partitioned Parquet; hands the manifest back to this process
    only up to `max_files` files (report.html draws every file), else `manifest` is None."""

    name: ClassVar[str] = "dask"
    scheduler: str | None = None
    workers: int | None = None
    max_files: int | None = None

    def check(
        self, source: str, profile: Profile, options: CheckOptions
    ) -> tuple[Validation, dict[str, float]]:
        """Scan and judge on the cluster; write OUT/manifest.parquet/part.N.parquet."""
        from toolkit.cluster import HTML_MAX_FILES, ClusterOptions, validate_on_dask

        result, seconds = validate_on_dask(
            source,
            profile,
            ClusterOptions(scheduler=self.scheduler, n_workers=self.workers),
            options.scan,
            out=options.out,
            run_id=options.run_id,
            max_files=HTML_MAX_FILES if self.max_files is None else self.max_files,
            runner=options.runner,
        )
        # the cluster scans every file: it never reads an earlier manifest
        n_files = result.counts.n_files if result.counts is not None else len(result.manifest)
        result.extra[SCAN_COUNTS_KEY] = {"n_reused": 0, "n_scanned": n_files}
        return result, seconds


def engine_named(name: str, *, scheduler: str | None = None, workers: int | None = None) -> Engine:
    """The engine behind an `--engine` name; cluster options only with the Dask engine."""
    if name not in ENGINES:
        raise UsageError(f"unknown engine {name!r}: choose {' or '.join(ENGINES)}")
    if (scheduler or workers) and name != "dask":
        raise UsageError("--scheduler and --workers need --engine dask")
    return DaskEngine(scheduler, workers) if name == "dask" else LocalEngine()


def check_folder(
    root: str | Path,
    profile: Profile | str,
    *,
    engine: str | Engine = "local",
    jobs: int | None = None,
    detect_faces: bool = True,
    progress: bool = False,
    out: Path | None = None,
    run_id: str | None = None,
    previous: Path | None = None,
    runner: Runner = Runner.FAST,
) -> Validation:
    """Scan `root` and judge every file and the dataset against `profile` (a Profile, or
    a name or file load_profile takes). `out`: write the manifest there (the engine's
    format). `previous`: a manifest of `root` whose rows of unchanged files the local
    engine reuses (`CheckOptions.previous`). `runner`: who runs the rules (the same
    findings either way). The seconds each step took are in the result's `seconds`."""
    rules = profile if isinstance(profile, Profile) else load_profile(profile)
    chosen = engine_named(engine) if isinstance(engine, str) else engine
    options = CheckOptions(
        scan=rules.scan_options(detect_faces=detect_faces),
        jobs=jobs,
        progress=progress,
        out=out,
        run_id=run_id,
        previous=previous,
        runner=runner,
    )
    result, seconds = chosen.check(str(root), rules, options)
    return replace(result, seconds=seconds)


class HtmlWriter(Protocol):
    """Renders report.html into a folder, returns its path: toolkit.report.html's
    write_report_html, passed in by the caller, since rendering is a later stage."""

    def __call__(
        self, validation: Validation, report: dict[str, Any], out_dir: Path, *, jobs: int | None
    ) -> Path:
        """Write report.html into `out_dir`."""
        ...


@dataclass(frozen=True)
class CheckedOutputs:
    """What `check_into` left in OUT, at the paths they have once in place."""

    validation: Validation
    report: dict[str, Any]
    report_json: Path
    report_html: Path | None
    data_docs: Path | None
    #: report.html was asked for, but the engine kept the manifest on the cluster (too big)
    html_skipped: bool
    #: perf_counter() when the check ended (before the reports were written)
    checked_at: float


def check_into(
    out: Path,
    source: str,
    profile: Profile | str,
    engine: str | Engine = "local",
    *,
    jobs: int | None = None,
    detect_faces: bool = True,
    html: HtmlWriter | None = None,
    data_docs: bool = False,
    command: str = "",
    progress: bool = False,
    cache: bool = True,
) -> CheckedOutputs:
    """`check_folder`, writing manifest, report.json, report.html (with `html`) and Data Docs
    into OUT as one staged set (toolkit.outputs). The caller passes OUT through
    `check_output` and `check_replaceable` before this starts any work. `cache`: reuse
    the rows of unchanged files from the manifest OUT already holds (a check of the same
    folder; the set being replaced), as `check_folder`'s `previous`. `data_docs` has the
    libraries run the rules (`Runner.LIBRARIES`): Data Docs are built from GX's results."""
    from toolkit.manifest import MANIFEST_PARQUET
    from toolkit.outputs import new_run_id, staged_outputs

    run_id = new_run_id()
    with staged_outputs(out, run_id) as staging:  # every output lands together, or none
        result = check_folder(
            source,
            profile,
            engine=engine,
            jobs=jobs,
            detect_faces=detect_faces,
            progress=progress,
            out=staging.folder,
            run_id=run_id,
            previous=Path(out) / MANIFEST_PARQUET if cache else None,
            runner=Runner.LIBRARIES if data_docs else Runner.FAST,
        )
        checked_at = time.perf_counter()
        report, report_html, docs, report_json = _write_reports(
            result, staging, html=html, data_docs=data_docs, command=command, jobs=jobs
        )
    return CheckedOutputs(
        validation=result,
        report=report,
        report_json=staging.final(report_json),
        report_html=staging.final(report_html) if report_html else None,
        data_docs=staging.final(docs) if docs else None,
        html_skipped=html is not None and result.manifest is None,
        checked_at=checked_at,
    )


def write_checked(
    out: Path, result: Validation, *, html: HtmlWriter | None = None, command: str = ""
) -> CheckedOutputs:
    """What `check_into` writes, for a check already done (`check_folder`'s result): its
    manifest, report.json and report.html (with `html`) into OUT as one staged set, under a
    new run id. The caller passes OUT through `check_output` and `check_replaceable` first."""
    from toolkit.manifest import RUN_ID_KEY, write_manifest
    from toolkit.outputs import new_run_id, staged_outputs

    if result.manifest is None:
        raise UsageError("the Dask engine kept this manifest on its cluster: validate with --out")
    with staged_outputs(out, new_run_id()) as staging:
        result.manifest.attrs[RUN_ID_KEY] = staging.run_id  # manifest and report: one run
        write_manifest(result.manifest, staging.folder)
        report, report_html, _, report_json = _write_reports(
            result, staging, html=html, data_docs=False, command=command, jobs=None
        )
    return CheckedOutputs(
        validation=result,
        report=report,
        report_json=staging.final(report_json),
        report_html=staging.final(report_html) if report_html else None,
        data_docs=None,
        html_skipped=False,
        checked_at=time.perf_counter(),
    )


def _write_reports(
    result: Validation,
    staging: Staging,
    *,
    html: HtmlWriter | None,
    data_docs: bool,
    command: str,
    jobs: int | None,
) -> tuple[dict[str, Any], Path | None, Path | None, Path]:
    """The advice, then report.html (with `html`), Data Docs and report.json into the
    staging folder: (the report, report.html, data_docs' index, report.json) as written."""
    from toolkit.outputs import DATA_DOCS_DIR
    from toolkit.report import write_report_json
    from toolkit.validate import advise

    began = time.perf_counter()
    advice = advise(result)  # what the other built-in profiles make of the same scan
    result.seconds["advice"] = round(time.perf_counter() - began, 2)
    result.extra.update(
        run_id=staging.run_id,
        command=command,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        seconds=dict(result.seconds),
        advice=advice.as_dict(),
    )
    report = result.to_report()
    report_html = docs = None
    if html is not None and result.manifest is not None:
        began = time.perf_counter()
        report_html = html(result, report, staging.folder, jobs=jobs)
        report["seconds"]["report"] = round(time.perf_counter() - began, 2)
    if data_docs:
        from toolkit.gx import write_data_docs

        began = time.perf_counter()
        docs = write_data_docs(
            result.suite_results,
            staging.folder / DATA_DOCS_DIR,
            f"toolkit-validate-{staging.run_id}",
        )
        staging.mark(docs.parent)
        report["seconds"]["data_docs"] = round(time.perf_counter() - began, 2)
    return report, report_html, docs, write_report_json(report, staging.folder)


def profiles_for(roots: Sequence[object], given: Sequence[str] | None) -> list[str]:
    """The profile of each data folder: one given for all (the default profile when none
    is), or one given per folder."""
    given = list(given or [DEFAULT_PROFILE])
    if len(given) == 1:
        return given * len(roots)
    if len(given) != len(roots):
        raise UsageError(f"give one --profile, or one per data folder ({len(roots)})")
    return given


def check_roots(
    roots: Sequence[Path],
    specs: Sequence[str],
    *,
    jobs: int | None = None,
    progress: bool = False,
    on_checked: Callable[[Path, Validation, Profile], None] | None = None,
) -> list[pd.DataFrame]:
    """Check each folder training will read, with its profile; each judged manifest gets its
    `root` column. A folder that failed a blocking dataset rule is refused
    (DatasetFailedError): nothing is trained on it. `on_checked` hears of each folder."""
    frames = []
    for root, spec in zip(roots, specs, strict=True):
        rules = load_profile(spec)
        result = check_folder(root, rules, jobs=jobs, progress=progress)
        if on_checked is not None:
            on_checked(root, result, rules)
        if not result.passed:
            raise DatasetFailedError(root, result.failed_rules)
        frame = result.manifest
        frame["root"] = str(Path(root).resolve())
        frames.append(frame)
    return frames
