"""benchmarks/bench_ood.py's arithmetic, without a model: the figures it reports for a score
on a scored set, and their mean and worst over the folds."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.loso`, as -m runs it
from benchmarks import bench_ood  # benchmarks/ is not a package the tests install


def test_judge_reports_who_is_flagged_and_how_the_flagged_fare() -> None:
    score = np.array([0.1, 0.2, 1.0, 1.5, 2.0])
    right = np.array([True, True, True, False, False])
    has_face = np.array([True, True, False, False, True])
    sure = np.array([True, True, True, True, False])
    found = bench_ood.judge(score, 1.0, right, has_face, sure)
    assert (found["n"], found["n_flagged"]) == (5, 2)  # above the fence, not at it
    assert found["flagged_share_face"] == pytest.approx(1 / 3)
    assert found["flagged_share_no_face"] == pytest.approx(1 / 2)
    assert (found["accuracy_flagged"], found["accuracy_unflagged"]) == (0.0, 1.0)
    assert found["auroc_wrong"] == 1.0  # every wrong answer scores above every right one
    assert (found["n_confident_errors"], found["confident_errors_flagged"]) == (1, 1.0)


def test_judge_says_n_a_where_a_figure_has_no_pictures() -> None:
    right = np.array([True, True])
    found = bench_ood.judge(np.array([0.1, 0.2]), 1.0, right, np.ones(2, bool), np.ones(2, bool))
    assert found["accuracy_flagged"] is None and found["flagged_share_no_face"] is None
    assert found["auroc_wrong"] is None  # no wrong answer to rank


def _fold(auroc: float, flagged_face: float) -> dict:
    figures = {
        "flagged_share_face": flagged_face,
        "flagged_share_no_face": 0.5,
        "accuracy_flagged": 0.6,
        "accuracy_unflagged": 0.9,
        "auroc_wrong": auroc,
    }
    return {bench_ood.SHIPPED: {"source": figures, "fer_test": figures}}


def test_the_summary_gives_the_mean_and_the_worst_fold() -> None:
    found = bench_ood.summary([_fold(0.9, 0.05), _fold(0.7, 0.15)])["source"]
    assert found["auroc_wrong"] == {"mean": pytest.approx(0.8), "worst": 0.7}
    # flagging faces (photos, what the model was trained on) is the worse direction
    assert found["flagged_share_face"] == {"mean": pytest.approx(0.1), "worst": 0.15}
