"""The `toolkit` command: parse, call one verb, map ToolkitError to an exit code.

Exit codes: 0 the dataset passed (or the verb succeeded), 1 it failed a blocking rule,
2 the command was used wrongly (missing folder, unknown profile, bad option).
"""

from __future__ import annotations

import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from toolkit.errors import ToolkitError

app = typer.Typer(
    name="toolkit",
    help="Check a folder of images (one folder per class) before you train on it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

DEMO_DIR = Path("data/demo")
RUNS_DIR = Path("runs")
MAX_FINDING_LINES = 20

ProfileOpt = Annotated[
    str,
    typer.Option(
        "--profile",
        "-p",
        help="Built-in profile name (tutorial, small-faces) or a .toml/.yaml profile file.",
    ),
]
JobsOpt = Annotated[
    int | None, typer.Option("--jobs", "-j", min=1, help="Processes to scan with [all cores].")
]
FacesOpt = Annotated[
    bool, typer.Option("--faces/--no-faces", help="Count faces with OpenCV's Haar cascade.")
]


@app.command()
def validate(
    data: Annotated[
        Path | None,
        typer.Argument(help="Folder holding one folder per class. [default: the demo set]"),
    ] = None,
    profile: ProfileOpt = "tutorial",
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder for manifest and report [runs/<folder name>]."),
    ] = None,
    jobs: JobsOpt = None,
    faces: FacesOpt = True,
) -> None:
    """Scan DATA, judge every file and the dataset, write manifest + report.json.

    Exit code 0 when the dataset passes every blocking rule, 1 when it does not.
    """
    from toolkit.manifest import write_manifest
    from toolkit.profiles import load_profile
    from toolkit.report import write_report_json
    from toolkit.scan import ScanOptions, scan_folder
    from toolkit.validate import validate_manifest

    started = time.perf_counter()
    if data is None:
        data = _ensure_demo_data(DEMO_DIR)
    rules = load_profile(profile)  # a bad profile fails before a long scan
    out = out or RUNS_DIR / (data.resolve().name or "data")
    manifest = scan_folder(data, jobs=jobs, options=ScanOptions(detect_faces=faces), progress=True)
    scanned = time.perf_counter()
    result = validate_manifest(manifest, rules)
    finished = time.perf_counter()
    result.extra.update(
        command=_command_line(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        seconds={"scan": round(scanned - started, 2), "validate": round(finished - scanned, 2)},
    )
    report = result.to_report()
    write_manifest(result.manifest, out)
    report_path = write_report_json(report, out)
    _echo_summary(data, report, result.findings, report_path, finished - started)
    if not result.passed:
        raise typer.Exit(1)


@app.command()
def scan(
    data: Annotated[Path, typer.Argument(help="Folder holding one folder per class.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the manifest.")] = Path(
        "runs/scan"
    ),
    jobs: JobsOpt = None,
    faces: FacesOpt = True,
) -> None:
    """Scan DATA into a manifest (no rules): one row per file found."""
    from toolkit.manifest import write_manifest
    from toolkit.scan import ScanOptions, scan_folder

    manifest = scan_folder(data, jobs=jobs, options=ScanOptions(detect_faces=faces), progress=True)
    target = write_manifest(manifest, out)
    typer.echo(f"scanned {len(manifest):,} files -> {target}")


@app.command("demo-data")
def demo_data(
    folder: Annotated[Path, typer.Argument(help="Where to write the demo set.")] = DEMO_DIR,
    n_per_class: Annotated[int, typer.Option(min=4, help="Clean images per class.")] = 60,
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
) -> None:
    """Write the deterministic synthetic happy/sad demo set (with real-world defects)."""
    from toolkit.demo import write_demo_data

    demo = write_demo_data(folder, n_per_class=n_per_class, seed=seed)
    verb = "wrote" if demo.created else "kept the existing"
    typer.echo(f"{verb} demo set in {folder} ({demo.n_files} files)")


@app.command()
def profiles() -> None:
    """List the built-in profiles and their rules."""
    from toolkit.profiles import builtin_profiles, load_profile

    for name in builtin_profiles():
        prof = load_profile(name)
        typer.echo(f"{name}: {prof.description}")
        for rule in prof.rules:
            typer.echo(f"  {rule.name:<26} {rule.severity:<8} {rule.rule}")


@app.command()
def quarantine(
    run: Annotated[Path, typer.Argument(help="Folder of a validate run (holds the manifest).")],
    into: Annotated[Path, typer.Option("--into", help="Folder to move rejected files into.")],
) -> None:
    """Move the run's rejected files into INTO, with a record `restore` puts back."""
    from toolkit.quarantine import quarantine_rejected

    record = quarantine_rejected(run, into)
    typer.echo(f"moved {record.n_moved} rejected files into {into} (record: {record.path})")
    for line in record.skipped:
        typer.echo(f"  not moved: {line}")


@app.command()
def restore(
    folder: Annotated[Path, typer.Argument(help="A quarantine folder.")],
) -> None:
    """Put every quarantined file back where it was, byte for byte."""
    from toolkit.quarantine import restore_quarantined

    n = restore_quarantined(folder)
    typer.echo(f"restored {n} files from {folder}")


def _ensure_demo_data(folder: Path) -> Path:
    from toolkit.demo import write_demo_data

    demo = write_demo_data(folder)
    if demo.created:
        typer.echo(f"wrote the demo set into {folder} ({demo.n_files} files)", err=True)
    return folder


def _command_line() -> str:
    return "toolkit " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _echo_summary(
    data: Path, report: dict[str, Any], findings: list[Any], report_path: Path, seconds: float
) -> None:
    echo = typer.echo
    echo(
        f"{data}: {report['n_files']:,} files, profile {report['profile']['name']}, {seconds:.1f} s"
    )
    echo(f"  {'class':<16}{'files':>8}{'accepted':>10}")
    for label, c in report["classes"].items():
        echo(f"  {label:<16}{c['n_files']:>8,}{c['n_accepted']:>10,}")
    echo(f"  accepted {report['n_accepted']:,}, rejected {report['n_rejected']:,}")
    for severity, title in (("error", "rejected by rule"), ("warning", "warnings")):
        counts = {
            k: v
            for k, v in report["by_rule"].items()
            if v and report["rules"][k]["severity"] == severity
        }
        if counts:
            parts = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda x: -x[1]))
            echo(f"  {title}: {parts}")
    ordered = sorted(findings, key=lambda f: (f.severity != "error", f.path == ".", f.path, f.rule))
    for f in ordered[:MAX_FINDING_LINES]:
        echo(f.line())
    if len(ordered) > MAX_FINDING_LINES:
        echo(f"...and {len(ordered) - MAX_FINDING_LINES:,} more, see {report_path}")
    failed = sorted(
        {
            f.rule
            for f in findings
            if f.severity == "error" and report["rules"][f.rule]["kind"] == "dataset"
        }
    )
    verdict = "PASSED" if report["passed"] else f"FAILED ({', '.join(failed)})"
    echo(f"verdict: {verdict}; manifest and report in {report_path.parent}")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of exiting (the console script exits)."""
    try:
        app(args=argv, prog_name="toolkit")
    except SystemExit as exc:  # typer's way out: usage errors exit 2, `typer.Exit(n)` n
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except ToolkitError as exc:
        typer.echo(f"toolkit: error: {exc}", err=True)
        return exc.exit_code
    return 0
