"""Train a model on the accepted rows of validated manifests; write one run folder.

The run folder holds everything needed to trust and repeat the run: the manifest with its
`split` column, run.json (options, seed, profile, classes, versions, timings, files left
out), model.keras, history.csv, metrics.json (test split), the learning curves, confusion
matrix and reliability plots, and the fit diagnosis the tutorial teaches. Checkpoints are
written every epoch, so an interrupted run continues with `resume=True`.

A run trains on one device (`default`), on every local GPU (`mirrored`), or across the
processes of a TF_CONFIG cluster (`multiworker`). Every worker runs the same steps on the same
split; tf.data hands each its part of every global batch, and only the chief writes the run
folder: the others write into a temporary folder of their own, removed when they finish.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit import DISTRIBUTION, __version__
from toolkit.audit import AuditResult, audit_decoded, read_exclusion
from toolkit.errors import RecordError, TrainingError, UsageError
from toolkit.familiarity import accuracy_by_familiarity, fit_familiarity, write_familiarity
from toolkit.groups import NEAR_PHASH_DISTANCE
from toolkit.manifest import ACCEPTED, normalise_manifest, read_manifest, write_manifest
from toolkit.models import InputSpec, ModelRecipe, get_recipe
from toolkit.opinion import (
    OPINIONS,
    STACK_INPUTS,
    FeaturesOf,
    SecondOpinion,
    backbone_features,
    data_folders,
    face_found,
    fit_regression,
    fit_stack,
    opinions,
    out_of_folder,
    per_root_sample,
    write_opinion,
)
from toolkit.paths import atomic_write_json
from toolkit.pipeline import (
    DEFAULT_MEMORY_BYTES,
    DEFAULT_RATIOS,
    SPLITS,
    DecodedImages,
    check_paths,
    class_names,
    decode_rows,
    make_dataset,
    split_manifest,
)
from toolkit.pretrained import require_weights
from toolkit.profiles import Profile
from toolkit.runs import (
    BEST_WEIGHTS,
    CACHE,
    CHECKPOINTS,
    CONFUSION_PNG,
    CURVES_PNG,
    FAMILIARITY_NPZ,
    FINISHED,
    HISTORY_CSV,
    METRICS_JSON,
    MODEL_FILE,
    OPINION_NPZ,
    RELIABILITY_PNG,
    RUN_JSON,
    TRAINING,
    Run,
    check_resumable_files,
    failure_recorded,
    load_model,
    read_history,
    read_run_config,
    record_finished,
    write_model,
)
from toolkit.scan import DEFAULT_MAX_DECODE_PIXELS
from toolkit.scores import (
    apply_temperature,
    embed,
    fit_temperature,
    predict_proba,
    score_predictions,
)
from validations.rules import NearDuplicate

log = logging.getLogger(__name__)

#: Class weights are used when the largest class outnumbers the smallest by more than this.
IMBALANCE_RATIO = 1.2
#: The tutorial's reading of the curves: val_loss this many times the loss is overfitting.
OVERFIT_RATIO = 1.5
#: Where a run trains: one device, every local GPU, or every process of a TF_CONFIG cluster.
STRATEGIES = ("default", "mirrored", "multiworker")
#: What training imports beyond the package itself: the `train` extra (pyproject.toml).
TRAIN_EXTRA_MODULES = ("tensorflow", "sklearn")


@dataclass(frozen=True)
class TrainOptions:
    """How to train; None takes the model recipe's default."""

    model: str = "default"
    epochs: int | None = None
    batch_size: int = 32
    seed: int = 0
    ratios: tuple[float, float, float] = DEFAULT_RATIOS
    learning_rate: float | None = None
    patience: int | None = None
    image_size: int | None = None
    memory_bytes: int = DEFAULT_MEMORY_BYTES
    strategy: str = "default"  # one of STRATEGIES; batch_size is global, split across replicas
    second_opinion: bool | None = None  # stack a pretrained network's opinion (two classes)


@dataclass(frozen=True)
class Worker:
    """This process's place among the processes training one run: worker `index` of `count`."""

    index: int = 0
    count: int = 1

    @property
    def is_chief(self) -> bool:
        """The chief (worker 0) writes the run folder; the others write nothing there."""
        return self.index == 0


@dataclass
class TrainResult:
    """What a finished run reports back (all of it is also in the run folder)."""

    folder: Path
    labels: list[str]
    split_counts: dict[str, dict[str, int]]
    history: dict[str, list[float]]
    metrics: dict[str, Any]
    diagnosis: str
    left_out: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    audit: AuditResult | None = None  # the label audit, unless switched off


def merge_manifests(manifests: list[pd.DataFrame]) -> pd.DataFrame:
    """One manifest from several validated ones; each row keeps its data root in `root`.

    Classes merge by folder name: `happy` of one root and `happy` of another are one class.
    """
    frames = []
    for m in manifests:
        if "status" not in m.columns:
            raise TrainingError("this manifest was scanned but never validated; run validate")
        frame = m.copy()
        if "root" not in frame.columns or frame["root"].isna().all():
            frame["root"] = str(m.attrs.get("root") or ".")
        frames.append(frame)
    merged = normalise_manifest(pd.concat(frames, ignore_index=True))
    merged.attrs = {
        "root": frames[0]["root"].iloc[0] if len(frames) == 1 and len(frames[0]) else None,
        "roots": sorted({str(r) for f in frames for r in f["root"].dropna().unique()}),
        "profiles": sorted({str(m.attrs.get("profile")) for m in manifests}),
    }
    return merged


def read_worker(strategy: str, environ: Mapping[str, str] | None = None) -> Worker:
    """This process's place among the training processes: from TF_CONFIG under multiworker.

    TensorFlow's order: the `chief` task, if the cluster has one, is worker 0 and the
    `worker` tasks follow it; without a chief, worker 0 is the chief.
    """
    if _check_strategy(strategy) != "multiworker":
        return Worker()
    text = (os.environ if environ is None else environ).get("TF_CONFIG")
    if not text:
        raise UsageError(
            "--strategy multiworker needs TF_CONFIG: the cluster and this process's task, as "
            'in {"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}}'
        )
    try:
        tf_config = json.loads(text)
        cluster, task = tf_config["cluster"], tf_config["task"]
        kind, index = str(task["type"]), int(task["index"])
        chiefs, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise UsageError(f"TF_CONFIG is not a cluster and a task: {exc!r}") from exc
    tasks = {"chief": chiefs, "worker": workers}.get(kind)
    if tasks is None or not 0 <= index < len(tasks) or len(chiefs) > 1:
        raise UsageError(
            f"TF_CONFIG's task {kind} {index} is not one of its cluster's {len(chiefs)} chief "
            f"and {len(workers)} worker tasks (at most one chief; no evaluator or ps)"
        )
    return Worker(
        index=index + len(chiefs) if kind == "worker" else 0, count=len(chiefs) + len(workers)
    )


def _check_strategy(name: str) -> str:
    if name not in STRATEGIES:
        raise UsageError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return name


@contextmanager
def worker_folder(out: Path, worker: Worker) -> Iterator[Path]:
    """Where this process writes: the run folder for the chief; for any other worker a
    temporary folder of its own (under TMPDIR), removed when it is done, failed or not."""
    if worker.is_chief:
        out.mkdir(parents=True, exist_ok=True)
        yield out
        return
    folder = Path(tempfile.mkdtemp(prefix=f"toolkit-worker{worker.index}-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def make_strategy(name: str) -> Any:
    """The tf.distribute strategy called `name` (see STRATEGIES).

    Under multiworker this waits until every worker of TF_CONFIG's cluster has started it.
    """
    import tensorflow as tf

    if _check_strategy(name) == "mirrored":
        if not tf.config.list_physical_devices("GPU"):
            log.warning("--strategy mirrored found no GPU: training on the CPU as one replica")
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()  # reads TF_CONFIG itself
    return tf.distribute.get_strategy()


@dataclass(frozen=True, eq=False)
class Plan:
    """What a run will train, settled before TensorFlow starts: the checked options, the
    split manifest, the recipe and its input, the classes and each split's counts."""

    out: Path
    options: TrainOptions
    manifest: pd.DataFrame
    recipe: ModelRecipe
    spec: InputSpec
    labels: list[str]
    counts: dict[str, dict[str, int]]
    epochs: int
    worker: Worker
    resume: bool = False
    #: files declaring more pixels are not decoded: the profile's limit, as the scan's
    max_pixels: int = DEFAULT_MAX_DECODE_PIXELS
    #: run.json's `excluded`: the label_issues.csv trained without, its digest, the count
    excluded: dict[str, Any] | None = None
    #: the pretrained network's opinion is stacked with the network's (toolkit.opinion)
    second_opinion: bool = False


def train_model(
    manifest: pd.DataFrame | None,
    out: Path,
    options: TrainOptions = TrainOptions(),
    *,
    profile: Profile | None = None,
    profile_specs: Sequence[str] | None = None,
    resume: bool = False,
    command: str = "",
    jobs: int | None = None,
    progress: bool = False,
    callbacks: list[Any] | None = None,
    exclude: Path | None = None,
    audit: bool = True,
) -> TrainResult:
    """Split, decode, fit with early stopping and checkpoints, score the test split.

    The steps, in order: plan, decode, fit, calibrate and score, fit the familiarity score,
    audit the labels (unless `audit` is off), write the run. `exclude` is a label_issues.csv
    whose files are left out before the split.
    `profile` is the one the data was validated with (its near-duplicate distance groups the
    split); run.json records it, with `profile_specs` (each data folder's, as given) when
    given. `callbacks` are extra Keras callbacks (the run's own come first).
    """
    started = time.perf_counter()
    plan = plan_run(manifest, Path(out), options, profile=profile, resume=resume, exclude=exclude)
    strategy = make_strategy(plan.options.strategy)
    record = _run_record(
        plan, strategy, profile=profile, profile_specs=profile_specs, command=command
    )
    # the run folder (or this worker's own); a run that dies says so in its run.json
    with worker_folder(plan.out, plan.worker) as folder, failure_recorded(folder):
        _start_run(plan, folder, record)
        decoded = decode_splits(plan, folder, jobs=jobs, progress=progress)
        model, history = fit_model(
            plan, decoded, folder, strategy, progress=progress, callbacks=callbacks or []
        )
        metrics, scored_proba = calibrate_and_score(plan, model, decoded, folder, record)
        audited = None
        if plan.worker.is_chief and plan.second_opinion:
            metrics, scored_proba = fit_run_opinion(
                plan, model, decoded, folder, record, metrics, scored_proba, jobs=jobs,
                progress=progress,
            )  # fmt: skip
        if plan.worker.is_chief:
            # one embedding pass serves the familiarity score and the audit
            run = Run(folder, model, plan.labels, plan.spec, record)
            embeddings = {split: embed(run, part) for split, part in decoded.items()}
            metrics["familiarity"] = fit_run_familiarity(
                plan, decoded, embeddings, folder, record, metrics["split"], scored_proba
            )
            if audit:
                audited = audit_labels(plan, model, decoded, folder, record, embeddings)
        result = write_run(plan, folder, record, metrics, history, decoded, started)
        result.audit = audited
        return result


def refuse_exclude_on_resume(resume: bool, exclude: object) -> None:
    """Refuse (UsageError) an exclude list for a resumed run: it keeps the files it split."""
    if resume and exclude is not None:
        raise UsageError("--exclude applies to a new run; a resumed run keeps its files")


def require_train_extra() -> None:
    """Refuse (UsageError) where the `train` extra is not installed, before any data is read:
    `pip install .` validates, and training says what to install."""
    missing = [m for m in TRAIN_EXTRA_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(
            f"training needs {' and '.join(missing)}, which the package alone does not "
            f"install: pip install '{DISTRIBUTION}[train]' (or, from a clone, "
            "pip install '.[train]')"
        )


def plan_run(
    manifest: pd.DataFrame | None,
    out: Path,
    options: TrainOptions,
    *,
    profile: Profile | None = None,
    resume: bool = False,
    exclude: Path | None = None,
) -> Plan:
    """Plan: the options (a resumed run's own), the files excluded, the split, and what
    will be trained. Every refusal that needs no TensorFlow happens here, before the run
    folder is made."""
    require_train_extra()
    refuse_exclude_on_resume(resume, exclude)
    if resume:
        config, manifest = _resume_state(out)
        options = recorded_options(config, out / RUN_JSON)
    worker = read_worker(options.strategy)
    excluded = None
    if not resume:
        if manifest is None:
            raise UsageError("give a validated manifest or a data folder to train on")
        # every worker looks before make_strategy's barrier, so before the chief writes it
        if (out / RUN_JSON).exists():
            raise UsageError(
                f"{out} already holds a run; pass --resume to continue it or pick another --out"
            )
        check_paths(manifest, roots_exist=True)  # before the run folder is made
        if exclude is not None:
            manifest, excluded = read_exclusion(exclude, _roots(manifest)).apply(manifest)
        manifest = split_manifest(
            manifest,
            options.ratios,
            seed=options.seed,
            max_phash_distance=near_distance(profile),
        )
    assert manifest is not None  # read back on resume, checked above otherwise
    recipe = get_recipe(options.model)
    spec = (
        recipe.input
        if options.image_size is None
        else InputSpec(options.image_size, recipe.input.channels, recipe.input.crop_faces)
    )
    labels = class_names(manifest)
    if len(labels) < 2:
        raise TrainingError(f"need at least two classes with accepted files, found {labels}")
    counts = _split_counts(manifest, labels)
    for split in ("train", "validation"):
        if sum(counts[split].values()) == 0:
            raise TrainingError(
                f"the {split} split is empty: {int((manifest['status'] == ACCEPTED).sum())} "
                f"accepted files are too few for ratios {list(options.ratios)}"
            )
    epochs = options.epochs or recipe.epochs
    second_opinion = plan_second_opinion(options, recipe, labels)
    max_pixels = (
        profile.scan_options().max_decode_pixels
        if profile is not None
        else DEFAULT_MAX_DECODE_PIXELS
    )
    return Plan(
        out,
        options,
        manifest,
        recipe,
        spec,
        labels,
        counts,
        epochs,
        worker,
        resume,
        max_pixels,
        excluded,
        second_opinion,
    )


def plan_second_opinion(options: TrainOptions, recipe: ModelRecipe, labels: list[str]) -> bool:
    """Whether the run stacks the pretrained network's opinion: the recipe's choice unless
    the options say; two classes only (asked for with more: a UsageError), and the weights
    must be installed (refused before anything is decoded)."""
    wanted = recipe.second_opinion if options.second_opinion is None else options.second_opinion
    if not wanted:
        return False
    if len(labels) != 2:
        if options.second_opinion:
            raise UsageError(f"the second opinion is for two classes, not {len(labels)}")
        log.info("no second opinion: it is for two classes, and there are %d", len(labels))
        return False
    require_weights("the recipe's second opinion (--no-second-opinion trains without it)")
    return True


def _roots(manifest: pd.DataFrame) -> list[str]:
    """The data folders a manifest's paths are relative to."""
    if "root" in manifest.columns and manifest["root"].notna().any():
        return [str(r) for r in manifest["root"].dropna().unique()]
    return [str(manifest.attrs.get("root") or ".")]


def _run_record(
    plan: Plan,
    strategy: Any,
    *,
    profile: Profile | None,
    profile_specs: Sequence[str] | None,
    command: str,
) -> dict[str, Any]:
    """run.json as training starts: what the run is, and where and how it trains."""
    options, recipe = plan.options, plan.recipe
    return {
        "command": command,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": TRAINING,
        # the values used, the model's own where none was given (a resumed run reads them)
        "options": {
            **asdict(options),
            "ratios": list(options.ratios),
            "epochs": plan.epochs,
            "learning_rate": options.learning_rate or recipe.learning_rate,
            "patience": options.patience or recipe.patience,
            "image_size": plan.spec.size,
            "second_opinion": plan.second_opinion,
        },
        "model": {
            "name": recipe.name,
            "summary": recipe.summary,
            "epochs": plan.epochs,
            "tta_flip": recipe.tta_flip,
            "second_opinion": plan.second_opinion,
        },
        "input": asdict(plan.spec),
        "labels": plan.labels,
        "split_counts": plan.counts,
        "replicas": int(strategy.num_replicas_in_sync),
        "workers": plan.worker.count,
        "profile": _profile_record(profile, profile_specs),
        "roots": plan.manifest.attrs.get("roots") or [plan.manifest.attrs.get("root")],
        "versions": _versions(),
        **({"excluded": plan.excluded} if plan.excluded is not None else {}),
    }


def _start_run(plan: Plan, folder: Path, record: dict[str, Any]) -> None:
    """A new run writes its manifest and run.json ("training") first; a resumed worker other
    than the chief starts from the chief's checkpoints."""
    if plan.resume and not plan.worker.is_chief:
        _seed_worker_folder(plan.out, folder)
    if not plan.resume:
        write_manifest(plan.manifest, folder)
        atomic_write_json(folder / RUN_JSON, record)


def decode_splits(
    plan: Plan, folder: Path, *, jobs: int | None = None, progress: bool = False
) -> dict[str, DecodedImages]:
    """Decode: each split's accepted rows as arrays (cached in the run folder while it
    trains); a file that cannot be decoded is left out, and said so."""
    manifest = plan.manifest
    decoded = {
        split: decode_rows(
            manifest[manifest["split"] == split],
            plan.spec,
            plan.labels,
            root=Path(manifest.attrs.get("root") or "."),
            cache_file=folder / CACHE / f"{split}.npy",
            memory_bytes=plan.options.memory_bytes,
            max_pixels=plan.max_pixels,
            jobs=jobs,
            progress=progress,
        )
        for split in SPLITS
    }
    if len(decoded["train"]) == 0 or len(decoded["validation"]) == 0:
        raise TrainingError("no train or validation image could be decoded; see left_out")
    return decoded


def calibrate_and_score(
    plan: Plan,
    model: Any,
    decoded: dict[str, DecodedImages],
    folder: Path,
    record: dict[str, Any],
) -> tuple[dict[str, Any], np.ndarray]:
    """Calibrate and score: one temperature, fitted on the validation split and applied to
    every score; the metrics of the test split (the validation split when it is empty), and
    that split's calibrated probabilities."""
    run = Run(folder, model, plan.labels, plan.spec, record)
    val = decoded["validation"]
    temperature = fit_temperature(val.labels, predict_proba(run, val, calibrated=False))
    test = decoded["test"] if len(decoded["test"]) else val
    scored_split = "test" if len(decoded["test"]) else "validation"
    raw = predict_proba(run, test, calibrated=False)
    proba = apply_temperature(raw, temperature)
    return {
        "split": scored_split,
        **score_predictions(test.labels, proba, plan.labels),
        "temperature": temperature,
        "expected_calibration_error_before_temperature": score_predictions(
            test.labels, raw, plan.labels
        )["expected_calibration_error"],
    }, proba


def fit_run_opinion(
    plan: Plan,
    model: Any,
    decoded: dict[str, DecodedImages],
    folder: Path,
    record: dict[str, Any],
    metrics: dict[str, Any],
    scored_proba: np.ndarray,
    *,
    jobs: int | None = None,
    progress: bool = False,
    features_of: FeaturesOf | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """Second opinion: the pretrained features' regression on the train split (at most
    PER_ROOT pictures a data folder), the stack on the validation split, written into the run
    folder; the scored split's metrics become the stacked answer's (the network's alone stay
    under `network`), and its probabilities are returned (the network's where an extra view
    of a file failed). A split with one class cannot fit it: the run goes without, and says
    so (`metrics` and `scored_proba`, the network's, are returned as they are).
    `features_of` stands in for the backbone (a cache)."""
    started = time.perf_counter()
    run = Run(
        folder, model, plan.labels, plan.spec, {**record, "temperature": metrics["temperature"]}
    )
    manifest = plan.manifest
    root = Path(manifest.attrs.get("root") or ".")

    def read(rows: pd.DataFrame, spec: InputSpec) -> DecodedImages:
        return decode_rows(
            rows, spec, plan.labels, root=root, max_pixels=plan.max_pixels, jobs=jobs
        )

    rows = {
        split: manifest[manifest["split"] == split].iloc[part.kept or []].reset_index(drop=True)
        for split, part in decoded.items()
    }
    if features_of is None:

        def features_of(part: pd.DataFrame) -> tuple[np.ndarray, dict[int, str]]:
            return backbone_features(part, read, plan.spec.crop_faces, progress=progress)

    sample = per_root_sample(rows["train"], plan.options.seed)

    def without(why: str) -> tuple[dict[str, Any], np.ndarray]:
        (folder / OPINION_NPZ).unlink(missing_ok=True)  # no earlier fit stays
        record["second_opinion"] = {"skipped": why}
        log.warning("no second opinion: %s", why)
        return metrics, scored_proba

    x, failed = features_of(rows["train"].iloc[sample])
    fit = np.setdiff1d(np.arange(len(sample)), list(failed))
    y = decoded["train"].labels[sample][fit]
    if len(np.unique(y)) < 2:
        return without("the train split's pictures are all of one class")
    regression = SecondOpinion(
        *fit_regression(x[fit], y), stack_coef=np.zeros(len(STACK_INPUTS)), stack_intercept=0.0
    )
    val = decoded["validation"]
    x_val, failed_val = features_of(rows["validation"])
    found, failed = opinions(
        run, rows["validation"], val, read, regression, features_of=lambda _: (x_val, failed_val)
    )
    found[:, OPINIONS.index("regression")], crossed = out_of_folder(
        regression,
        x[fit],
        y,
        data_folders(rows["train"].iloc[sample])[fit],
        x_val,
        data_folders(rows["validation"]),
    )
    keep = np.setdiff1d(np.arange(len(val)), list(failed))
    if len(np.unique(val.labels[keep])) < 2:
        return without("the validation split's pictures are all of one class")
    face = face_found(rows["validation"])
    coef, intercept = fit_stack(found[keep], val.labels[keep], face[keep])
    opinion = replace(regression, stack_coef=coef, stack_intercept=intercept)
    write_opinion(folder, opinion)

    split = metrics["split"]
    if split != "validation":
        found, failed = opinions(
            run, rows[split], decoded[split], read, opinion, features_of=features_of
        )
    scored = decoded[split]
    keep = np.setdiff1d(np.arange(len(scored)), list(failed))
    proba = opinion.answer(found, face_found(rows[split]))
    answered = score_predictions(scored.labels[keep], proba[keep], plan.labels)
    record["second_opinion"] = {
        **opinion.record(),
        "n_regression": len(fit),
        "out_of_folder": len(crossed),
        "seconds": round(time.perf_counter() - started, 1),
    }
    # fitted again (add_second_opinion on a run that has one): the network's stay as they were
    network = metrics.get("network") or {
        k: metrics[k] for k in ("accuracy", "expected_calibration_error", "roc_auc")
    }
    proba[list(failed)] = found[list(failed), 0]  # the network's own, for the familiarity split
    return {
        **metrics,
        **answered,
        "network": network,
        "second_opinion": {"weights": record["second_opinion"]["weights"], "left_out": len(failed)},
    }, proba


def add_second_opinion(
    folder: Path,
    *,
    jobs: int | None = None,
    progress: bool = False,
    features_of: FeaturesOf | None = None,
) -> dict[str, Any]:
    """Fit the second opinion onto a finished run, as training fits it after the network
    (the network, its temperature and its split unchanged): second_opinion.npz, run.json's
    record and metrics.json's scores of the stacked answer. Returns the new metrics."""
    from toolkit.runs import load_run

    folder = Path(folder)
    run = load_run(folder)
    config = dict(run.config)
    if config.get("status") != FINISHED:
        raise UsageError(f"{folder}: not a finished run")
    options = replace(recorded_options(config, folder / RUN_JSON), second_opinion=True)
    if len(run.labels) != 2:
        raise UsageError(f"the second opinion is for two classes, not {len(run.labels)}")
    require_weights("the second opinion")
    manifest = read_manifest(folder)
    root = Path(manifest.attrs.get("root") or ".")
    decoded = {
        split: decode_rows(
            manifest[manifest["split"] == split], run.spec, run.labels, root=root, jobs=jobs
        )
        for split in SPLITS
    }
    plan = Plan(
        folder, options, manifest, get_recipe(options.model), run.spec, run.labels,
        _split_counts(manifest, run.labels), int(config["options"]["epochs"]), Worker(),
        second_opinion=True,
    )  # fmt: skip
    metrics = json.loads((folder / METRICS_JSON).read_text(encoding="utf-8"))
    metrics, _ = fit_run_opinion(
        plan, run.model, decoded, folder, config, metrics, np.zeros(0), jobs=jobs,
        progress=progress, features_of=features_of,
    )  # fmt: skip
    config["model"] = {**config["model"], "second_opinion": True}
    config["options"] = {**config["options"], "second_opinion": True}
    atomic_write_json(folder / METRICS_JSON, metrics)
    atomic_write_json(folder / RUN_JSON, config)
    return metrics


def fit_run_familiarity(
    plan: Plan,
    decoded: dict[str, DecodedImages],
    embeddings: dict[str, np.ndarray],
    folder: Path,
    record: dict[str, Any],
    scored_split: str,
    scored_proba: np.ndarray,
) -> dict[str, Any]:
    """Fit the familiarity score on the train and validation embeddings, write it into the
    run folder, record it in run.json; metrics.json's `familiarity`: accuracy on the scored
    split's familiar and unfamiliar pictures (or why the score is unavailable)."""
    why = None
    if not all(np.isfinite(e).all() for e in embeddings.values()):
        why = "the network's embeddings hold NaN or infinity: no familiarity score"
    else:
        try:
            score = fit_familiarity(
                embeddings["train"], embeddings["validation"], seed=plan.options.seed
            )
        except ValueError as exc:  # every unit dead: no embedding has a direction
            why = str(exc)
    if why is not None:
        (folder / FAMILIARITY_NPZ).unlink(missing_ok=True)  # no earlier fit stays
        record["familiarity"] = {"skipped": why}
        return {"unavailable": why}
    write_familiarity(folder, score)
    record["familiarity"] = score.record()
    novelty = score.novelty(embeddings[scored_split])
    return accuracy_by_familiarity(decoded[scored_split].labels, scored_proba, novelty)


def audit_labels(
    plan: Plan,
    model: Any,
    decoded: dict[str, DecodedImages],
    folder: Path,
    record: dict[str, Any],
    embeddings: dict[str, np.ndarray] | None = None,
) -> AuditResult:
    """Audit: rank every decoded file by how likely its label is wrong (toolkit.audit);
    label_issues.csv and its gallery go into the run folder, the summary into run.json."""
    run = Run(folder, model, plan.labels, plan.spec, record)
    result = audit_decoded(
        run, plan.manifest, decoded, seed=plan.options.seed, embeddings=embeddings
    )
    record["audit"] = result.record()
    return result


def write_run(
    plan: Plan,
    folder: Path,
    record: dict[str, Any],
    metrics: dict[str, Any],
    history: dict[str, list[float]],
    decoded: dict[str, DecodedImages],
    started: float,
) -> TrainResult:
    """Write the run: metrics.json with the fit diagnosis, the plots, and run.json marked
    finished (its temperature, epochs, seconds, the files left out); the cache goes."""
    diagnosis = diagnose_fit(history)
    metrics["diagnosis"] = diagnosis
    atomic_write_json(folder / METRICS_JSON, metrics)
    _plot(folder, history, metrics, plan.labels, plan.recipe.name)

    shutil.rmtree(folder / CACHE, ignore_errors=True)
    seconds = time.perf_counter() - started
    left_out = [p for d in decoded.values() for p in d.problems]
    record["temperature"] = metrics["temperature"]
    record_finished(
        folder,
        record,
        epochs_run=len(history.get("loss", [])),
        seconds=round(seconds, 1),
        left_out=[{"path": p, "why": w} for p, w in left_out],
        diagnosis=diagnosis,
    )
    return TrainResult(
        plan.out, plan.labels, plan.counts, history, metrics, diagnosis, left_out, seconds
    )


def _profile_record(profile: Profile | None, specs: Sequence[str] | None) -> dict[str, Any]:
    """run.json's `profile`: the profile as plain data, and each data folder's spec."""
    if profile is None:
        return {}
    record = profile.as_dict()
    if specs is not None:
        record["specs"] = list(specs)
    return record


def near_distance(profile: Profile | None) -> int:
    """Near duplicates stay together in one split, at the profile's `near_duplicate` distance
    (the rule's default where the profile has none)."""
    near = [r for r in (profile.rules if profile else ()) if isinstance(r, NearDuplicate)]
    return near[0].max_phash_distance if near else NEAR_PHASH_DISTANCE


def _resume_state(out: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    config = read_run_config(out)
    if config.get("status") == FINISHED:
        raise UsageError(f"{out}: this run finished; nothing to resume")
    manifest = read_manifest(out)
    if "split" not in manifest.columns:
        raise TrainingError(f"{out}: the run's manifest has no split column")
    check_resumable_files(out)
    return config, manifest


def recorded_options(config: dict[str, Any], path: Path) -> TrainOptions:
    """The options run.json recorded, each checked: an edited record is refused (exit 2)."""
    options = config.get("options")
    names = {f.name for f in fields(TrainOptions)}
    if not isinstance(options, dict) or not set(options) <= names:
        raise RecordError(path, "options", f"expected an object with keys among {sorted(names)}")

    def whole(value: object, low: int, *, none: bool = False) -> bool:
        if value is None:
            return none
        return isinstance(value, int) and not isinstance(value, bool) and value >= low

    checks = {
        "model": lambda v: isinstance(v, str),
        "strategy": lambda v: isinstance(v, str),
        "epochs": lambda v: whole(v, 1, none=True),
        "patience": lambda v: whole(v, 0, none=True),
        "image_size": lambda v: whole(v, 8, none=True),
        "batch_size": lambda v: whole(v, 1),
        "seed": lambda v: whole(v, 0),
        "memory_bytes": lambda v: whole(v, 0),
        "second_opinion": lambda v: v is None or isinstance(v, bool),
        "learning_rate": lambda v: v is None or (_finite(v) and v > 0),
        "ratios": lambda v: isinstance(v, list) and len(v) == 3 and all(map(_finite, v)),
    }
    for key, value in options.items():
        if not checks[key](value):
            raise RecordError(path, f"options.{key}", f"not a value training writes: {value!r:.60}")
    return TrainOptions(**{**options, "ratios": tuple(options.get("ratios", DEFAULT_RATIOS))})


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _split_counts(manifest: pd.DataFrame, labels: list[str]) -> dict[str, dict[str, int]]:
    table = manifest[manifest["status"] == ACCEPTED].groupby(["split", "label"]).size()
    return {s: {c: int(table.get((s, c), 0)) for c in labels} for s in SPLITS}


def class_weights(y: np.ndarray, n_classes: int) -> dict[int, float] | None:
    """Inverse-frequency weights when the classes are imbalanced, else None."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    present = counts[counts > 0]
    if len(present) < 2 or present.max() / present.min() <= IMBALANCE_RATIO:
        return None
    return {i: float(len(y) / (n_classes * c)) for i, c in enumerate(counts) if c > 0}


def fit_model(
    plan: Plan,
    decoded: dict[str, DecodedImages],
    folder: Path,
    strategy: Any,
    *,
    progress: bool = False,
    callbacks: list[Any] | None = None,
) -> tuple[Any, dict[str, list[float]]]:
    """Fit: build the recipe's model, fit it with early stopping and a checkpoint every
    epoch (continuing a resumed run), keep the best epoch's weights, save model.keras.

    Returns the model to score, as saved, and the history of the whole run.
    """
    import keras

    recipe, options, labels = plan.recipe, plan.options, plan.labels
    binary = len(labels) == 2
    with strategy.scope():  # variables (weights, optimizer, metrics) live on every replica
        model = recipe.build(
            input_shape=decoded["train"].images.shape[1:],
            n_classes=len(labels),
            learning_rate=options.learning_rate or recipe.learning_rate,
            seed=options.seed,
        )
    if plan.worker.count > 1:
        _fit_across_workers(model, strategy)
    train_ds = make_dataset(
        decoded["train"],
        batch_size=options.batch_size,
        shuffle=True,
        seed=options.seed,
        binary=binary,
    )
    val_ds = make_dataset(decoded["validation"], batch_size=options.batch_size, binary=binary)
    checkpoints = folder / CHECKPOINTS
    history_csv = folder / HISTORY_CSV
    best_so_far = _best_val_loss(folder) if plan.resume else None
    run_callbacks = [
        keras.callbacks.BackupAndRestore(
            str(checkpoints / "backup"), double_checkpoint=True, delete_checkpoint=False
        ),
        keras.callbacks.CSVLogger(str(history_csv), append=plan.resume),
        _best_weights_callback(keras, checkpoints / BEST_WEIGHTS, best_so_far),
        keras.callbacks.EarlyStopping(
            monitor="val_loss",
            patience=options.patience or recipe.patience,
            restore_best_weights=True,
        ),
        *(callbacks or []),
    ]
    if recipe.reduce_lr:
        run_callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.5, patience=3, min_lr=1e-5, verbose=0
            )
        )
    weights = class_weights(decoded["train"].labels, len(labels))
    verbose = (1 if sys.stderr.isatty() else 2) if progress else 0
    try:
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=plan.epochs,
            callbacks=run_callbacks,
            class_weight=weights,
            shuffle=False,  # the dataset reshuffles itself every epoch
            verbose=verbose,
        )
    finally:  # an interrupted fit skips on_train_end, which closes history.csv
        logger = run_callbacks[1]
        if getattr(logger, "csv_file", None) is not None and not logger.csv_file.closed:
            logger.csv_file.close()
    best = checkpoints / BEST_WEIGHTS
    if best.exists():  # the best epoch over the whole run, interruptions included
        model.load_weights(str(best))
    history = read_history(folder)
    write_model(model, folder)  # on every worker: saving may read collectively
    if options.strategy != "default":  # scored outside the strategy, as saved
        model = load_model(folder / MODEL_FILE)
    return model, history


def _fit_across_workers(model: Any, strategy: Any) -> None:
    """Work around two Keras 3 bugs that stop fit() across workers (keras-team/keras#20585).

    fit() builds the model from its first batch all-reduced as an (x, y) tuple, which
    collective reduce rejects: build it from this worker's own batch instead (only its shapes
    and dtypes are read). And each step's scalar logs are averaged along an axis 0 they lack:
    give them one. Epoch logs, which early stopping and checkpoints read, come from the
    metrics' variables summed over every worker, so all workers see the same val_loss.
    """
    import keras
    import tensorflow as tf

    def build(iterator: Any = None, data_batch: Any = None) -> None:
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = keras.tree.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0], next(batches)
                )
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    def with_axis(step: Any) -> Any:
        return lambda data: {k: tf.reshape(v, [1]) for k, v in step(data).items()}

    model._maybe_symbolic_build = build
    model.train_step = with_axis(model.train_step)
    model.test_step = with_axis(model.test_step)


def _seed_worker_folder(out: Path, folder: Path) -> None:
    """A resumed worker starts from the chief's checkpoints and history, as the chief does:
    every worker must restore the same epoch and weights, and agree on the best val_loss."""
    if (out / CHECKPOINTS).is_dir():
        shutil.copytree(out / CHECKPOINTS, folder / CHECKPOINTS, dirs_exist_ok=True)
    if (out / HISTORY_CSV).is_file():
        shutil.copy2(out / HISTORY_CSV, folder / HISTORY_CSV)


def _best_weights_callback(keras: Any, target: Path, best_so_far: float | None) -> Any:
    """Keras' ModelCheckpoint(save_best_only) on val_loss, but written atomically: a run
    killed while saving keeps the previous best weights, never half an HDF5 file."""

    class AtomicBestWeights(keras.callbacks.Callback):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.best = np.inf if best_so_far is None else best_so_far

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            value = (logs or {}).get("val_loss")
            if value is None or not value < self.best:
                return
            self.best = float(value)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{os.getpid()}.{target.name}")  # keeps .weights.h5
            try:
                self.model.save_weights(str(tmp))
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)

    return AtomicBestWeights()


def _best_val_loss(folder: Path) -> float | None:
    values = read_history(folder).get("val_loss") or []
    return float(min(values)) if values else None


def diagnose_fit(history: dict[str, list[float]]) -> str:
    """The tutorial's reading of loss against val_loss, in words, with the numbers."""
    loss, val = history.get("loss") or [], history.get("val_loss") or []
    if not loss or not val:
        return "no diagnosis: the run has no loss/val_loss history"
    best = int(np.argmin(val))
    last_loss, last_val = loss[-1], val[-1]
    where = f"after {len(loss)} epochs (best val_loss {val[best]:.3f} at epoch {best + 1})"
    if last_loss > last_val:
        return (
            f"underfitting: loss {last_loss:.3f} is above val_loss {last_val:.3f} {where}; "
            "the model has not yet fit its own training data (more epochs or capacity help; "
            "augmentation and dropout also raise the training loss)"
        )
    if last_val > OVERFIT_RATIO * last_loss:
        return (
            f"overfitting: loss fell to {last_loss:.3f} while val_loss is {last_val:.3f} "
            f"({last_val / max(last_loss, 1e-12):.1f}x) {where}; early stopping kept the "
            "best epoch's weights (more data, augmentation or regularisation help)"
        )
    return (
        f"good fit: loss {last_loss:.3f} and val_loss {last_val:.3f} are within "
        f"{OVERFIT_RATIO}x of each other {where}"
    )


def _plot(out: Path, history: dict, metrics: dict, labels: list[str], name: str) -> None:
    from toolkit.report.training import plot_confusion, plot_curves, plot_reliability

    plot_curves(history, out / CURVES_PNG, title=f"{name}: {metrics['diagnosis'].split(':')[0]}")
    plot_confusion(metrics["confusion_matrix"], labels, out / CONFUSION_PNG)
    plot_reliability(
        metrics["calibration_bins"], metrics["expected_calibration_error"], out / RELIABILITY_PNG
    )


def _versions() -> dict[str, str]:
    import keras
    import PIL
    import tensorflow as tf

    return {
        "toolkit": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "pillow": PIL.__version__,
        "cpus": str(os.cpu_count()),
    }
