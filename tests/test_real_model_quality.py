"""Issue 28 on the real sets: the `default` model, leave-one-source-out (benchmarks/loso.py).

Its own tox env (`tox -e model-quality`), not the default run nor CI's: CI runs the smaller
version in test_model_quality.py (both models on the same 1,200 FER2013 train faces, scored
on 600 test faces). Each fold trains on four of the five web sources of ../shared/datasets
plus FER2013 train and is scored on the fifth, never seen (its copies of training files
left out), and on FER2013 test.

The whole protocol is five trainings. Where that does not fit, environment variables pick a
cheaper run with the same assertions: LOSO_FOLDS=day (one fold, a different one each day)
or a comma list of sources; LOSO_EPOCHS=N (fewer epochs than the recipe's); LOSO_OUT=DIR
keeps the runs and scores, so a second call reuses what the first finished.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import date
from pathlib import Path

import pytest
from conftest import shared_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import loso  # benchmarks/ is not a package the tests install

pytestmark = pytest.mark.quality
TARGETS = loso.Targets()


def chosen_folds(spec: str | None, today: date) -> list[str]:
    """LOSO_FOLDS: unset or "all" for every source, "day" for the fold of the day, or names."""
    if spec in (None, "", "all"):
        return list(loso.SOURCES)
    if spec == "day":
        return [loso.fold_of_the_day(today)]
    return [name.strip() for name in spec.split(",")]


@pytest.fixture(scope="module")
def folds(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    shared_dataset(loso.FER_TRAIN)  # skips, saying why, where the shared sets are absent
    names = chosen_folds(os.environ.get("LOSO_FOLDS"), date.today())
    epochs = int(os.environ["LOSO_EPOCHS"]) if os.environ.get("LOSO_EPOCHS") else None
    out = Path(os.environ.get("LOSO_OUT") or tmp_path_factory.mktemp("loso"))
    results = [loso.run_fold(f, out, epochs=epochs) for f in loso.make_folds(names)]
    print("\n" + "\n".join(loso.table(results)))
    print(f"leave-one-source-out (issue 28): {json.dumps(loso.summarise(results))}")
    return results


def test_every_source_left_out_scores_at_least_the_worst_target(folds: list[dict]) -> None:
    for fold in folds:
        assert fold["source"]["n"] >= 150, fold["fold"]
        assert fold["source"]["accuracy"] >= TARGETS.worst, fold["fold"]


def test_the_mean_over_every_source_meets_the_target(folds: list[dict]) -> None:
    if len(folds) < len(loso.SOURCES):
        pytest.skip(f"{len(folds)} of {len(loso.SOURCES)} folds ran: no mean over the sources")
    assert loso.summarise(folds)["mean"] >= TARGETS.mean


def test_fer2013_test_meets_the_target_in_every_fold(folds: list[dict]) -> None:
    for fold in folds:
        assert fold["fer"]["n"] >= 3000
        assert fold["fer"]["accuracy"] >= TARGETS.fer, fold["fold"]


def test_probabilities_are_calibrated_on_each_source(folds: list[dict]) -> None:
    for fold in folds:
        assert fold["source"]["ece"] <= TARGETS.ece, fold["fold"]
        assert fold["fer"]["ece"] <= TARGETS.ece, fold["fold"]


def test_training_fits_in_twenty_minutes(folds: list[dict]) -> None:
    for fold in folds:
        if fold["train_minutes"] is not None:  # None: a run folder reused from LOSO_OUT
            minutes = fold["train_minutes"] + fold["validate_minutes"]
            assert minutes <= TARGETS.train_minutes, fold["fold"]
