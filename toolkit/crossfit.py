"""The thorough label audit: k networks trained with a run's own recipe, each on all but one
fold of the run's accepted files, each scoring the fold it never trained on.

The audit at the end of training scores files by a regression on the run's embeddings,
which is out of sample for the regression only: the network itself learnt the training
files' labels, so a wrong label it memorised looks right. Here every file's probabilities
come from a network that never saw that file, or a copy of it: folds are dealt as the
run's split is (by class, copies together, seeded). It costs about k - 1 trainings.

Each network is a run folder of its own under RUN/cross-fit/ (fold-1 ... fold-k), trained
on its folds with the run's options, validated on a share of them as the run's ratios say,
calibrated on that share; an interrupted audit resumes at the network it stopped in, and a
finished network is reused when it trained on the same files.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.audit import AuditResult, OutOfSample, audit_run, file_keys, run_files
from toolkit.errors import TrainingError, UsageError
from toolkit.manifest import ACCEPTED, read_manifest
from toolkit.pipeline import decode_rows, fold_manifest
from toolkit.runs import CROSS_FIT, FINISHED, RUN_JSON, load_run, read_run_config
from toolkit.scores import per_class, predict_proba
from toolkit.train import TrainOptions, near_distance, recorded_options, train_model

#: The fewest networks: with one, no file would be left out of its training.
MIN_NETWORKS = 2

#: Told of each network as it starts: (which, of how many, files it trains on, files it scores).
OnNetwork = Callable[[int, int, int, int], None]


def audit_with_networks(
    folder: Path,
    networks: int,
    *,
    jobs: int | None = None,
    progress: bool = False,
    on_network: OnNetwork | None = None,
) -> AuditResult:
    """`toolkit audit RUN --networks K`: train (or reuse) the K networks, score each file by
    the one that never trained on it, then audit the run on those probabilities: RUN's
    label_issues.csv, gallery and run.json's `audit`, as `toolkit audit` writes them."""
    check_networks(networks)
    folder = Path(folder)
    config = read_run_config(folder)
    with_split, profile = run_files(folder, config)
    options = fold_options(recorded_options(config, folder / RUN_JSON))
    accepted = with_split.drop(columns="split")
    accepted.attrs = dict(with_split.attrs)
    labels = list(config.get("labels") or [])
    fold = fold_manifest(
        accepted, networks, seed=options.seed, max_phash_distance=near_distance(profile)
    )
    root = str(accepted.attrs.get("root") or ".")
    started = time.perf_counter()
    proba: dict[tuple[str, str], np.ndarray] = {}
    for i in range(networks):
        training, held = accepted[fold != i], accepted[fold == i]
        training.attrs = dict(accepted.attrs)
        if on_network is not None:
            on_network(i + 1, networks, len(training), len(held))
        target = folder / CROSS_FIT / f"fold-{i + 1}"
        train_network(training, target, options, profile, jobs=jobs, progress=progress)
        network = load_run(target)
        if network.labels != labels:
            raise TrainingError(
                f"network {i + 1} of {networks} learnt the classes {network.labels}, not the "
                f"run's {labels}: a class has too few files for {networks} networks"
            )
        decoded = decode_rows(
            held,
            network.spec,
            labels,
            root=Path(root),
            max_pixels=profile.scan_options().max_decode_pixels,
            jobs=jobs,
            progress=progress,
        )
        scored = held.iloc[decoded.kept] if decoded.kept is not None else held
        found = per_class(predict_proba(network, decoded))
        proba.update(zip(file_keys(scored, root), found, strict=True))
    record = {
        "folder": CROSS_FIT,
        "count": networks,
        "seconds": round(time.perf_counter() - started, 1),
    }
    given = OutOfSample(proba, networks, record)
    return audit_run(folder, jobs=jobs, progress=progress, given_proba=given)


def check_networks(networks: int) -> None:
    """Refuse (UsageError, exit 2) fewer than MIN_NETWORKS networks."""
    if networks < MIN_NETWORKS:
        raise UsageError(f"--networks must be at least {MIN_NETWORKS}, got {networks}")


def fold_options(options: TrainOptions) -> TrainOptions:
    """The run's options for one network: the same recipe and seed, the files shared between
    train and validation in the run's proportion (no test split: the held-out fold is the
    test), on one device unless the run used every local GPU; no second opinion (the audit
    reads the network's own probabilities)."""
    train, validation = options.ratios[0], options.ratios[1]
    return replace(
        options,
        ratios=(train / (train + validation), validation / (train + validation), 0.0),
        strategy="mirrored" if options.strategy == "mirrored" else "default",
        second_opinion=False,
    )


def train_network(
    training: pd.DataFrame,
    target: Path,
    options: TrainOptions,
    profile: Any,
    *,
    jobs: int | None = None,
    progress: bool = False,
) -> None:
    """Train one network into `target`: reuse it when it finished on these very files,
    resume it when it was interrupted, else train it new."""
    if not (target / RUN_JSON).exists():
        train_model(training, target, options, profile=profile, jobs=jobs, progress=progress,
                    audit=False)  # fmt: skip
        return
    config = read_run_config(target)
    had = read_manifest(target)
    had = had[had["status"] == ACCEPTED]
    want, have = set(file_keys(training)), set(file_keys(had))
    if have != want:
        raise UsageError(
            f"{target} holds a network trained on other files than this run's fold "
            f"({len(have ^ want):,} differ); move it aside to train it again"
        )
    if config.get("status") != FINISHED:
        train_model(None, target, resume=True, jobs=jobs, progress=progress, audit=False)
