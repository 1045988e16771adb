"""The pretrained second opinion's measurement (benchmarks/loso_pretrained.py): the
combinations of opinions it compares, on toolkit.opinion's regression and stack."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import loso_pretrained as lp
from toolkit.opinion import fit_stack


def test_the_stack_follows_the_opinion_that_is_right_on_validation() -> None:
    rng = np.random.default_rng(1)
    n = 400
    y = rng.integers(0, 2, n)
    right = np.clip(0.8 * y + 0.1 + rng.normal(0, 0.05, n), 0.01, 0.99)
    guess = rng.uniform(0.01, 0.99, n)  # says nothing
    stack = fit_stack(np.c_[right, guess], y)
    w_right, w_guess = stack[0]
    assert w_right > 5 * abs(w_guess)
    assert ((lp.stacked(stack, np.c_[right, guess]) > 0.5) == y).mean() > 0.95
    # fitted on the labels it is given (the validation split's): the wrong ones, and it
    # follows them
    assert fit_stack(np.c_[right, guess], 1 - y)[0][0] < 0


def test_the_regression_learns_from_the_features_of_the_train_split() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 600)
    x = rng.normal(size=(600, 16)) + y[:, None]  # every feature carries some of the class
    regression = lp.Regression.fit(x[:400], y[:400], c=1.0)
    assert ((regression.proba(x[400:]) > 0.5) == y[400:]).mean() > 0.9


def test_summary_gives_mean_worst_and_the_worst_ece_and_fer() -> None:
    def fold(source: float, ece: float, fer: float) -> dict:
        opinion = {"source": {"accuracy": source, "ece": ece}, "fer_test": {"accuracy": fer}}
        return {
            f"{where}_{who}": opinion[where]
            for where in ("source", "fer_test")
            for who in lp.COMBINATIONS
        }

    got = lp.summary([fold(0.8, 0.02, 0.93), fold(0.9, 0.06, 0.91)])["all"]
    assert got == {"mean": 0.85, "worst": 0.8, "worst_ece": 0.06, "worst_fer_test": 0.91}
