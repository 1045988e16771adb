"""The `toolkit` command: parse, call one verb, map ToolkitError to an exit code.

Exit codes: 0 the dataset passed (or the verb succeeded), 1 it failed a blocking rule
(predict: a file failed), 2 the command was used wrongly or an input was refused (missing
folder, bad profile value, bad option), 3 internal error: a crash, never a verdict on the
data (one line names the file being processed and where the traceback went; --debug prints
it), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from toolkit import __version__
from toolkit.errors import ToolkitError, UsageError, processed_path
from toolkit.text import escape_controls

app = typer.Typer(
    name="toolkit",
    help="Check a folder of images (one folder per class) before you train on it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    epilog="Exit codes: 0 passed, 1 the dataset failed a blocking rule (predict: a file "
    "failed), 2 wrong usage or a refused input, 3 internal error (a crash, not a verdict; "
    "--debug prints its traceback), 130 interrupted.",
)

#: Exit code of a crash: a bug or an unforeseen condition, never a verdict on the data.
EXIT_INTERNAL_ERROR = 3
#: Exit code of Ctrl-C, as shells report a process ended by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130

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
    bool,
    typer.Option(
        "--faces/--no-faces",
        help="Find faces (BlazeFace, run by LiteRT or else OpenCV; TOOLKIT_FACE_RUNTIME picks).",
    ),
]


@app.command()
def validate(
    data: Annotated[
        str | None,
        typer.Argument(
            help="Folder holding one folder per class; with --engine dask also an fsspec URL. "
            "[default: the demo set]"
        ),
    ] = None,
    profile: ProfileOpt = "tutorial",
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder for manifest and report [runs/<folder name>]."),
    ] = None,
    jobs: JobsOpt = None,
    faces: FacesOpt = True,
    html: Annotated[
        bool, typer.Option("--html/--no-html", help="Write report.html beside report.json.")
    ] = True,
    data_docs: Annotated[
        bool,
        typer.Option(
            "--data-docs", help="Also build Great Expectations Data Docs into OUT/data_docs."
        ),
    ] = False,
    engine: Annotated[
        str,
        typer.Option(
            "--engine", help="local (processes on this machine) or dask (a Dask cluster)."
        ),
    ] = "local",
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            help="Address of a running Dask scheduler to join (tcp://host:8786); without it "
            "--engine dask starts a LocalCluster.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=1, help="LocalCluster worker processes [one per core]."),
    ] = None,
    cache: Annotated[
        bool,
        typer.Option(
            "--cache/--no-cache",
            help="Reuse the rows of unchanged files (same size, times, inode and SHA-256) "
            "from the manifest in --out; --no-cache scans every file again.",
        ),
    ] = True,
) -> None:
    """Scan DATA, judge every file and the dataset, write manifest, report.json, report.html.

    Exit code 0 when the dataset passes every blocking rule, 1 when it does not.
    """
    from toolkit.check import check_into, engine_named
    from toolkit.cluster import HTML_MAX_FILES
    from toolkit.outputs import check_output, check_replaceable
    from toolkit.profiles import load_profile

    render = None
    if html:
        from toolkit.report.html import write_report_html as render

    started = time.perf_counter()
    source = data if data is not None else str(_ensure_demo_data(DEMO_DIR))
    rules = load_profile(profile)  # a bad profile fails before a long scan
    chosen = engine_named(engine, scheduler=scheduler, workers=workers)
    out = out or RUNS_DIR / (_folder_name(source) or "data")
    check_output(out, [source])  # so does an output folder among the data, or a bad one
    check_replaceable(out)
    written = check_into(
        out,
        source,
        rules,
        chosen,
        jobs=jobs,
        detect_faces=faces,
        html=render,
        data_docs=data_docs,
        command=_command_line(),
        progress=True,
        cache=cache,
    )
    if written.html_skipped:
        typer.echo(
            f"report.html skipped: over {HTML_MAX_FILES:,} files (report.json has every finding)",
            err=True,
        )
    result = written.validation
    shown = written.report_html or written.report_json
    seconds = written.checked_at - started
    _echo_summary(source, written.report, result, shown, seconds, written.data_docs)
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
    from toolkit.manifest import RUN_ID_KEY, write_manifest
    from toolkit.outputs import check_output, check_replaceable, new_run_id, staged_outputs
    from toolkit.scan import ScanOptions, scan_folder

    check_output(out, [data])
    check_replaceable(out)
    run_id = new_run_id()
    manifest = scan_folder(data, jobs=jobs, options=ScanOptions(detect_faces=faces), progress=True)
    manifest.attrs[RUN_ID_KEY] = run_id
    with staged_outputs(out, run_id) as staging:
        target = staging.final(write_manifest(manifest, staging.folder))
    _say(f"scanned {len(manifest):,} files -> {target}")


@app.command()
def train(
    data: Annotated[
        list[Path] | None,
        typer.Argument(help="Data folders (one folder per class each); classes merge by name."),
    ] = None,
    manifest: Annotated[
        list[Path] | None,
        typer.Option("--manifest", "-m", help="Train on a validated manifest (repeatable)."),
    ] = None,
    model: Annotated[str, typer.Option(help="seed (the tutorial's CNN) or default (ours).")] = (
        "default"
    ),
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run folder [runs/<data>-<model>].")
    ] = None,
    profile: Annotated[
        list[str] | None,
        typer.Option("--profile", "-p", help="Profile per data folder, or one for all [tutorial]."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Most epochs [the model's].")] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Images per step, over all replicas together.")
    ] = 32,
    seed: Annotated[int, typer.Option(help="Seed of the split, the weights, shuffling.")] = 0,
    split: Annotated[
        str, typer.Option(help="train,validation,test shares of the accepted files.")
    ] = "0.7,0.2,0.1",
    image_size: Annotated[
        int | None, typer.Option(min=8, help="Input side in px [the model's].")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the interrupted run in --out.")
    ] = False,
    jobs: JobsOpt = None,
    strategy: Annotated[
        str,
        typer.Option(
            help="default (one device), mirrored (every local GPU) or multiworker (the "
            "processes TF_CONFIG names; run the same command in each)."
        ),
    ] = "default",
    exclude: Annotated[
        Path | None,
        typer.Option(help="A run's label_issues.csv: train without the files it lists."),
    ] = None,
    audit: Annotated[
        bool, typer.Option("--audit/--no-audit", help="Rank the labels after training.")
    ] = True,
    second_opinion: Annotated[
        bool | None,
        typer.Option(
            "--second-opinion/--no-second-opinion",
            help="Stack a pretrained network's opinion with the model's [the model's: on for "
            "default, two classes].",
        ),
    ] = None,
) -> None:
    """Validate DATA (only files that pass are used), split it, train, score the test split,
    then audit the labels (label_issues.csv: files the model says are filed wrongly).

    Writes model.keras, history.csv, metrics.json, plots and run.json into the run folder.
    """
    from toolkit.pipeline import DEFAULT_RATIOS
    from toolkit.train import TrainOptions, refuse_exclude_on_resume, train_model

    options = TrainOptions(
        model=model,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        ratios=_parse_ratios(split) if split else DEFAULT_RATIOS,
        image_size=image_size,
        strategy=strategy,
        second_opinion=second_opinion,
    )
    if resume:
        if out is None:
            raise UsageError("--resume needs the --out folder of the run to continue")
        refuse_exclude_on_resume(resume, exclude)  # before TensorFlow starts
        from toolkit.runs import read_run_config

        read_run_config(out)  # a folder holding no run is refused before TensorFlow starts
        _start_tensorflow()
        result = train_model(
            None,
            out,
            resume=True,
            command=_command_line(),
            jobs=jobs,
            progress=True,
            audit=audit,
        )
        _echo_training(result)
        return
    from toolkit.api import start_training
    from toolkit.runs import RUN_JSON

    sources = manifest or data or [_ensure_demo_data(DEMO_DIR)]
    out = out or _run_folder(sources, model, from_manifests=bool(manifest))
    if (out / RUN_JSON).exists():
        raise UsageError(f"{out} already holds a run; pass --resume to continue it or pick --out")
    result = start_training(
        out,
        options,
        data=[] if manifest else sources,
        manifests=manifest or [],
        profiles=profile,
        jobs=jobs,
        progress=True,
        command=_command_line(),
        on_checked=_say_checked,
        before_fit=_start_tensorflow,
        exclude=exclude,
        audit=audit,
    )
    _echo_training(result)


@app.command()
def audit(
    run: Annotated[Path, typer.Argument(help="A run folder written by `toolkit train`.")],
    networks: Annotated[
        int | None,
        typer.Option(
            help="Train K networks with the run's recipe, each scoring the files it never "
            "saw (about K-1 trainings; kept in RUN/cross-fit/, an interrupted audit resumes) "
            "[default: seconds, from the run's own embeddings].",
            metavar="K",
        ),
    ] = None,
    jobs: JobsOpt = None,
) -> None:
    """Rank every accepted file of RUN by how likely its label is wrong (confident learning
    on out-of-sample probabilities); write RUN/label_issues.csv and label_issues.png.

    `toolkit train ... --exclude RUN/label_issues.csv` trains again without them.
    """
    from toolkit.runs import check_run_folder

    if networks is not None:
        from toolkit.crossfit import check_networks

        check_networks(networks)  # refused before TensorFlow starts, as a wrong folder is
    check_run_folder(run)
    _start_tensorflow()
    if networks is None:
        from toolkit.audit import audit_run

        _echo_audit(audit_run(run, jobs=jobs, progress=True))
        return
    from toolkit.crossfit import audit_with_networks

    def on_network(i: int, k: int, n_train: int, n_held: int) -> None:
        _say(f"network {i} of {k}: trains on {n_train:,} files, scores the other {n_held:,}")

    _echo_audit(audit_with_networks(run, networks, jobs=jobs, progress=True, on_network=on_network))


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run folder written by `toolkit train`.")],
    data: Annotated[list[Path], typer.Argument(help="Labelled data folders the run never saw.")],
    profile: Annotated[
        str | None, typer.Option("--profile", "-p", help="Profile to validate DATA [the run's].")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores as JSON.")] = False,
    jobs: JobsOpt = None,
) -> None:
    """Validate DATA with the run's profile and score the run's model on what passed."""
    import json

    from toolkit.errors import DataRootError
    from toolkit.runs import check_run_folder

    check_run_folder(run)  # a wrong run or data folder is refused before TensorFlow starts
    for root in data:
        if not root.is_dir():
            raise DataRootError(root, "not a folder" if root.exists() else "no such folder")
    _start_tensorflow()
    from toolkit.evaluate import evaluate_run

    scores = evaluate_run(run, data, profile=profile, jobs=jobs, progress=not as_json)
    if as_json:
        typer.echo(json.dumps(scores, indent=2))
        return
    _say(
        f"{', '.join(map(str, data))}: scored {scores['n_scored']:,} files "
        f"({scores['n_rejected']:,} rejected by profile {scores['profile']}, "
        f"{scores['n_left_out']:,} left out)"
    )
    labels = scores["labels"]
    if scores.get("positive_label") is not None:
        _say(
            f"  positive class: {scores['positive_label']} (precision, recall and F1 are its own; "
            "ROC-AUC ranks its probability)"
        )
    else:
        _say(f"  {len(labels)} classes: precision, recall, F1 and ROC-AUC are their mean")
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "expected_calibration_error"):
        value = scores[key]
        typer.echo(f"  {key:<28}{'n/a' if value is None else f'{value:.3f}'}")
    _say("  confusion matrix (rows: true class, columns: predicted class)")
    for line in confusion_table(labels, scores["confusion_matrix"]):
        _say(f"    {line}")
    for key, group in scores.get("by_face", {}).items():
        right = "n/a" if group["accuracy"] is None else f"{group['accuracy']:.3f}"
        _say(f"  accuracy, {key.replace('_', ' '):<18}{right} ({group['n']:,} files)")
    _echo_familiarity(scores["familiarity"])


def _echo_familiarity(found: dict[str, Any]) -> None:
    """Accuracy on the pictures like the training ones and on the others (evaluate, train)."""
    if "unavailable" in found:
        _say(f"  familiarity: unavailable: {found['unavailable']}")
        return
    for key in ("familiar", "unfamiliar"):
        group = found[key]
        right = "n/a" if group["accuracy"] is None else f"{group['accuracy']:.3f}"
        _say(f"  accuracy, {key:<18}{right} ({group['n']:,} files)")


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="A run folder written by `toolkit train`.")],
    images: Annotated[list[Path], typer.Argument(help="Image files to label.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list.")] = False,
) -> None:
    """Print the label and its probability for each image; exit 1 if any file failed."""
    import json

    from toolkit.runs import check_run_folder

    check_run_folder(run)  # a wrong run folder is refused before TensorFlow starts
    _start_tensorflow()
    from toolkit.predict import predict_files, unavailable_note

    results = predict_files(run, images)
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        for r in results:
            _say(r.line(), err=r.error is not None)
    if any(r.error is None and r.novelty is None for r in results):
        _say(unavailable_note(run), err=True)
    if any(r.error is not None for r in results):
        raise typer.Exit(1)


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="A run folder written by `toolkit train`.")],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="savedmodel (TensorFlow) or tflite (LiteRT).")
    ] = "savedmodel",
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="A new folder for the export [RUN/export/FORMAT]."),
    ] = None,
) -> None:
    """Write the run's model for serving without the toolkit: uint8 pixels in, one
    probability per class out (scaling, flip averaging and calibration inside).

    Beside it, labels.txt names the classes and export.json says what to do to an image
    first (decode, crop the face, resize).
    """
    from toolkit.export import export_target

    export_target(run, fmt, out)  # a wrong run, format or folder is refused before TensorFlow
    _start_tensorflow()
    from toolkit.export import export_run

    done = export_run(run, fmt, out)
    size = "x".join(map(str, done.input_shape))
    _say(
        f"{done.path}: {done.format} export of {run}; input uint8 {size} "
        f"({'face crops' if done.crop_faces else 'whole images'}), output the probabilities "
        f"of {', '.join(done.labels)}; see export.json"
    )
    if done.left_out:
        _say(f"not in the export: {done.left_out}")


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
    _say(f"moved {record.n_moved} rejected files into {into} (record: {record.path})")
    for line in record.skipped:
        _say(f"  not moved: {line}")


@app.command()
def restore(
    folder: Annotated[Path, typer.Argument(help="A quarantine folder.")],
) -> None:
    """Put every quarantined file back where it was, byte for byte."""
    from toolkit.quarantine import restore_quarantined

    n = restore_quarantined(folder)
    _say(f"restored {n} files from {folder}")


def _parse_ratios(text: str) -> tuple[float, float, float]:
    from toolkit.pipeline import check_ratios

    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--split takes three numbers like 0.7,0.2,0.1, got {text!r}") from None
    return check_ratios(values)


def _run_folder(sources: list[Path], model: str, *, from_manifests: bool) -> Path:
    """runs/<data>-<model>: the data folder's name, a lone manifest's folder's, or "merged"."""
    name = Path(sources[0]).resolve().name if len(sources) == 1 else "merged"
    if from_manifests and len(sources) == 1:
        name = Path(sources[0]).resolve().parent.name
    return RUNS_DIR / f"{name}-{model}"


def _say_checked(root: Path, result: Any, rules: Any) -> None:
    _say(
        f"{root}: {len(result.manifest):,} files, {len(result.accepted):,} accepted, "
        f"{len(result.rejected):,} rejected (profile {rules.name})",
        err=True,
    )


def _say(line: str, *, err: bool = False) -> None:
    """Print one line holding names from the data: their controls and bidi overrides are
    shown escaped, never obeyed by the terminal (the names themselves stay as they are)."""
    typer.echo(escape_controls(line), err=err)


def _echo_training(result: Any) -> None:
    echo = _say
    echo(f"classes: {', '.join(result.labels)}; files per split:")
    for split, counts in result.split_counts.items():
        echo(f"  {split:<11}" + "  ".join(f"{k} {v:,}" for k, v in counts.items()))
    for path, why in result.left_out[:MAX_FINDING_LINES]:
        echo(f"{path}: left out: {why}", err=True)
    m = result.metrics
    echo(
        f"{m['split']} split: accuracy {m['accuracy']:.3f}, F1 {m['f1']:.3f}, ROC-AUC "
        f"{'n/a' if m['roc_auc'] is None else format(m['roc_auc'], '.3f')}, "
        f"ECE {m['expected_calibration_error']:.3f} ({m['n_scored']} files)"
    )
    if "network" in m:  # the answer stacks the pretrained network's opinion
        net = m["network"]
        echo(
            f"  the network alone: accuracy {net['accuracy']:.3f}, ECE "
            f"{net['expected_calibration_error']:.3f}; the answer stacks it with a pretrained "
            "network's second opinion (run.json: second_opinion)"
        )
    if "familiarity" in m:  # the chief's: where the familiarity score was fitted
        _echo_familiarity(m["familiarity"])
    echo(f"fit: {result.diagnosis}")
    if result.audit is not None:
        _echo_audit(result.audit)
    echo(f"run folder: {result.folder} ({result.seconds:.0f} s)")


def _echo_audit(audit: Any) -> None:
    """The label audit: one line per suspect (most suspect first), then the count."""
    from toolkit.runs import LABEL_ISSUES_CSV, OUTLIERS_CSV

    if audit.why_not:
        _say(f"label audit skipped: {audit.why_not}")
        return
    issues = audit.issues
    for row in issues.head(MAX_FINDING_LINES).itertuples():
        _say(
            f"{row.path}: label_issue: filed as {row.given_label}, looks {row.suggested_label} "
            f"(p({row.given_label}) {float(row.score):.2f})",
            err=True,
        )
    if len(issues) > MAX_FINDING_LINES:
        _say(f"...and {len(issues) - MAX_FINDING_LINES:,} more", err=True)
    _say(
        f"label audit: {len(issues):,} of {len(audit.scored):,} files look mislabelled "
        f"({audit.folds}-fold); see {audit.folder / LABEL_ISSUES_CSV}"
    )
    outliers = audit.outliers
    if outliers is not None and len(outliers):
        for row in outliers.head(MAX_FINDING_LINES).itertuples():
            _say(
                f"{row.path}: outlier: {float(row.score):.1f}x a typical file's distance from "
                "its nearest neighbours",
                err=True,
            )
        if len(outliers) > MAX_FINDING_LINES:
            _say(f"...and {len(outliers) - MAX_FINDING_LINES:,} more", err=True)
        _say(
            f"warning: {len(outliers):,} files look unlike every class (not a face, a logo, "
            f"a collage?); see {audit.folder / OUTLIERS_CSV}",
            err=True,
        )


def confusion_table(labels: list[str], matrix: list[list[int]]) -> list[str]:
    """The confusion matrix as aligned lines: a header of predicted classes, then one row per
    true class; names shown escaped (a control character cannot break the columns)."""
    names = [escape_controls(str(name)) for name in labels]
    cells = [[f"{count:,}" for count in row] for row in matrix]
    width = max(len(text) for text in [*names, *(c for row in cells for c in row)])
    first = max(len(name) for name in names)
    header = " " * first + "".join(f"  {name:>{width}}" for name in names)
    rows = [
        f"{name:<{first}}" + "".join(f"  {c:>{width}}" for c in row)
        for name, row in zip(names, cells, strict=True)
    ]
    return [header.rstrip(), *rows]


def _ensure_demo_data(folder: Path) -> Path:
    from toolkit.demo import write_demo_data

    demo = write_demo_data(folder)
    if demo.created:
        typer.echo(f"wrote the demo set into {folder} ({demo.n_files} files)", err=True)
    return folder


#: The arguments of the running command (main's argv, or the process's).
_ARGV: list[str] = []


def _command_line() -> str:
    return "toolkit " + " ".join(shlex.quote(a) for a in _ARGV or sys.argv[1:])


def _folder_name(source: str) -> str:
    """The data folder's own name, for the default output folder (paths or URLs)."""
    if "://" in source:
        return source.rstrip("/").rsplit("/", 1)[-1]
    return Path(source).resolve().name


def _echo_summary(
    data: str | Path,
    report: dict[str, Any],
    result: Any,
    report_path: Path,
    seconds: float,
    data_docs: Path | None = None,
) -> None:
    """What a user acts on first: the dataset-wide findings and the advice, then counts
    per rule, then a few example files per rule (one line per file, all its rules)."""
    echo = _say
    echo(
        f"{data}: {report['n_files']:,} files, profile {report['profile']['name']}, {seconds:.1f} s"
    )
    echo(f"  {'class':<16}{'files':>8}{'accepted':>10}")
    for label, c in report["classes"].items():
        echo(f"  {label:<16}{c['n_files']:>8,}{c['n_accepted']:>10,}")
    echo(f"  accepted {report['n_accepted']:,}, rejected {report['n_rejected']:,}")
    kinds = {name: r["kind"] for name, r in report["rules"].items()}
    dataset_wide = [f for f in result.findings if kinds.get(f.rule) == "dataset"]
    by_file = [f for f in result.findings if kinds.get(f.rule) != "dataset"]
    echo("dataset-wide:")
    if not dataset_wide:
        echo("  no rule about the dataset as a whole broke")
    for f in sorted(dataset_wide, key=lambda f: (f.severity != "error", f.path, f.rule)):
        echo(f"  {f.line()} [{f.severity}]")
    for line in _advice_lines(report):
        echo(f"  {line}")
    for severity, title in (("error", "rejected by rule"), ("warning", "warnings")):
        counts = {
            k: v
            for k, v in report["by_rule"].items()
            if v and report["rules"][k]["severity"] == severity
        }
        if counts:
            parts = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda x: -x[1]))
            echo(f"{title}: {parts}")
    examples = _examples(by_file, report["rules"])
    if examples:
        echo(
            f"examples, at most {EXAMPLES_PER_RULE} files per rule "
            f"(all {len(result.findings):,} findings: {report_path}):"
        )
    for rule, lines in examples:
        echo(f"  {rule} ({report['by_rule'].get(rule, 0):,}):")
        for line in lines:
            echo(f"    {line}")
    verdict = "PASSED" if result.passed else f"FAILED ({', '.join(result.failed_rules)})"
    echo(f"report: {report_path}")
    if data_docs is not None:
        echo(f"data docs: {data_docs}")
    echo(f"verdict: {verdict}; manifest and report in {report_path.parent}")


#: Example files printed per rule; report.json and report.html list the rest.
EXAMPLES_PER_RULE = 3


def _examples(findings: list[Any], rules: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(rule, lines) for each rule that flagged files, blocking rules first and most files
    first; each file printed once, on one line holding all its rules. A rule's examples
    are, where it has them, files that break it alone: the clearest cases."""
    of_file: dict[str, list[Any]] = {}
    for f in sorted(findings, key=lambda f: (rules[f.rule]["severity"] != "error", f.rule)):
        of_file.setdefault(f.path, []).append(f)
    n_per_rule: dict[str, int] = {}
    for f in findings:
        n_per_rule[f.rule] = n_per_rule.get(f.rule, 0) + 1
    order = sorted(n_per_rule, key=lambda r: (rules[r]["severity"] != "error", -n_per_rule[r], r))
    shown: set[str] = set()
    out = []
    for rule in order:
        candidates = sorted(
            {f.path for f in findings if f.rule == rule} - shown,
            key=lambda path: (len(of_file[path]), path),
        )[:EXAMPLES_PER_RULE]
        if not candidates:
            continue
        shown.update(candidates)
        lines = [
            f"{path}: " + "; ".join(f"{f.rule}: {f.detail}" for f in of_file[path])
            for path in candidates
        ]
        out.append((rule, lines))
    return out


def _advice_lines(report: dict[str, Any]) -> list[str]:
    """The rules that reject more than the advice share, and what each other built-in
    profile would accept of the same files (report.json's "advice")."""
    advice, profile = report.get("advice") or {}, report["profile"]["name"]
    n_files = advice.get("n_files", 0)
    lines = [
        f"{rule} rejects {n:,} of {n_files:,} files ({n / n_files:.0%}; over "
        f"{advice['share']:.0%} suggests the data is not what profile {profile} expects)"
        for rule, n in advice.get("rules", {}).items()
    ]
    others = advice.get("other_profiles") or {}
    if lines and others:
        for name, o in others.items():
            undecided = (
                f", and up to {o['n_undecided']:,} more this scan did not decode"
                if o["n_undecided"]
                else ""
            )
            lines.append(
                f"the {name} profile would accept {o['n_accepted']:,} of {n_files:,}"
                f"{undecided} ({'passes' if o['passed'] else 'fails'})"
            )
        # which profile fits is the user's call (thumbnails or face crops?), not the count's
        lines.append("`toolkit profiles` says which data each is for; pick one with --profile")
    return lines


#: Options of the app callback that commands read: only --verbose so far.
_OPTIONS: dict[str, bool] = {"verbose": False}
#: TensorFlow's start-up lines: absl's "I0000 00:00:..." format and the two notes that follow.
_TF_NOISE = re.compile(
    r"[IWE]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] |WARNING: All log messages before absl::InitializeLog|"
    r"To enable the following instructions: "
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"toolkit {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help="On an internal error (exit 3), print the traceback instead of writing it "
            "to a file. Works anywhere on the command line.",
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            help="Show TensorFlow's own log lines (hidden by default, as is anything it logs "
            "below an error). Works anywhere on the command line.",
        ),
    ] = False,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=_print_version,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    # main() reads --debug itself, wherever it stands; declared here for --help and the parser
    del debug, show_version
    _OPTIONS["verbose"] = verbose


def _start_tensorflow() -> None:
    """Import TensorFlow and find its devices before a command uses them, with its start-up
    log lines (CUDA probing, oneDNN and CPU-feature notes, written by C++ straight to the
    stderr descriptor) kept off the terminal unless --verbose or the user's own
    TF_CPP_MIN_LOG_LEVEL asks for them. Any other line written meanwhile is shown."""
    if _OPTIONS["verbose"] or "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        import tensorflow  # noqa: F401

        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"  # what C++ logs later: errors only
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # the CUDA probe logs here, not at import
            tf.get_logger().setLevel("ERROR")
            from absl import logging as absl_logging

            absl_logging.set_verbosity(absl_logging.ERROR)
            absl_logging.set_stderrthreshold(absl_logging.ERROR)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [
                line
                for line in captured.read().decode("utf-8", "replace").splitlines()
                if not _TF_NOISE.match(line)
            ]
            if kept:
                typer.echo("\n".join(kept), err=True)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of exiting (the console script exits)."""
    args = list(sys.argv[1:] if argv is None else argv)
    _ARGV[:] = args
    args, debug = _debug_first(args)
    args, _ = _debug_first(args, flag="--verbose")
    try:
        app(args=args, prog_name="toolkit")
    except SystemExit as exc:  # typer's way out: usage errors exit 2, `typer.Exit(n)` n
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if code == EXIT_INTERRUPTED and _caused_by(exc, KeyboardInterrupt):
            typer.echo("toolkit: interrupted", err=True)
        return code
    except ToolkitError as exc:  # its message may name a path from the data: escaped
        typer.echo(escape_controls(f"toolkit: error: {exc}"), err=True)
        return exc.exit_code
    except KeyboardInterrupt:  # outside a command (typer turns one inside into exit 130)
        typer.echo("toolkit: interrupted", err=True)
        return EXIT_INTERRUPTED
    except Exception as exc:
        _report_crash(exc, args, debug=debug)
        return EXIT_INTERNAL_ERROR
    return 0


def _debug_first(args: list[str], flag: str = "--debug") -> tuple[list[str], bool]:
    """The arguments with `flag` (anywhere before `--`) moved in front of the command,
    where the app's option takes it; and whether it was given."""
    end = args.index("--") if "--" in args else len(args)
    if flag not in args[:end]:
        return args, False
    return [flag, *(a for a in args[:end] if a != flag), *args[end:]], True


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _report_crash(exc: Exception, args: list[str], *, debug: bool) -> None:
    """One line on stderr for an unexpected exception: what the toolkit was doing, the
    exception, and the file holding its traceback (printed instead under --debug)."""
    path = processed_path(exc)
    verb = next((a for a in args if not a.startswith("-")), "")
    doing = f"processing {path}" if path is not None else f"running toolkit {verb}".rstrip()
    # names and messages come from the data: escaped, they cannot break the one line
    line = escape_controls(f"toolkit: internal error while {doing}: {type(exc).__name__}: {exc}")
    text = "".join(traceback.format_exception(exc))
    if debug:  # line by line, so the traceback keeps its shape
        typer.echo("\n".join(map(escape_controls, text.split("\n"))), err=True, nl=False)
        typer.echo(line, err=True)
        return
    try:
        # the system's temporary folder: never the data root or the output folder
        fd, name = tempfile.mkstemp(prefix="toolkit-crash-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
            fh.write(f"{_command_line()}\n")
            fh.write(f"toolkit {__version__}, Python {platform.python_version()}, ")
            fh.write(f"{platform.platform()}, {datetime.now(UTC).isoformat(timespec='seconds')}")
            fh.write(f"\n\n{text}")
        where = f"traceback written to {name} (rerun with --debug to print it)"
    except OSError as err:
        where = f"the traceback could not be written ({err}); rerun with --debug to print it"
    typer.echo(f"{line}; {escape_controls(where)}", err=True)
