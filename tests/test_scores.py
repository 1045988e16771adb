"""Scores shared by training and evaluation: the metrics, the calibration error, the
temperature that calibrates, the probabilities of a run (mirrored where the recipe says),
and the one tie rule by which evaluate and predict pick a class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from toolkit.models import InputSpec
from toolkit.pipeline import DecodedImages
from toolkit.runs import Run
from toolkit.scores import (
    apply_temperature,
    fit_temperature,
    predict_proba,
    predicted_classes,
    score_predictions,
)


def test_scores_of_perfect_and_of_known_predictions() -> None:
    perfect = score_predictions(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.9, 0.8]), ["a", "b"])
    assert perfect["accuracy"] == perfect["f1"] == perfect["roc_auc"] == 1.0
    assert perfect["confusion_matrix"] == [[2, 0], [0, 2]]
    mixed = score_predictions(np.array([0, 0, 1, 1]), np.array([0.6, 0.2, 0.9, 0.4]), ["a", "b"])
    assert mixed["accuracy"] == 0.5
    assert mixed["confusion_matrix"] == [[1, 1], [1, 1]]
    assert mixed["per_class"]["b"]["recall"] == 0.5
    assert mixed["roc_auc"] == 0.75


def test_calibration_error_is_the_gap_between_confidence_and_accuracy() -> None:
    y = np.array([1] * 10)
    always_right_at_90 = score_predictions(y, np.full(10, 0.9), ["a", "b"])
    assert always_right_at_90["expected_calibration_error"] == pytest.approx(0.1)
    half_right = score_predictions(np.array([1, 0] * 5), np.full(10, 0.75), ["a", "b"])
    assert half_right["expected_calibration_error"] == pytest.approx(0.25)
    one_class = score_predictions(y, np.full(10, 0.9), ["a", "b"])
    assert one_class["roc_auc"] is None


def test_multiclass_scores_use_macro_averages() -> None:
    proba = np.eye(3)[[0, 1, 2, 2]] * 0.8 + 0.2 / 3
    scores = score_predictions(np.array([0, 1, 2, 1]), proba, ["a", "b", "c"])
    assert scores["accuracy"] == 0.75
    assert scores["roc_auc"] is not None
    assert scores["positive_label"] is None


def test_temperature_softens_overconfident_and_keeps_calibrated_scores() -> None:
    rng = np.random.default_rng(0)
    p_true = rng.uniform(0.05, 0.95, 4000)
    y = (rng.uniform(size=4000) < p_true).astype(int)
    assert fit_temperature(y, p_true) == pytest.approx(1.0, abs=0.1)
    overconfident = apply_temperature(p_true, 0.4)  # logits 2.5x too large
    t = fit_temperature(y, overconfident)
    assert t == pytest.approx(2.5, rel=0.15)
    before = score_predictions(y, overconfident, ["a", "b"])["expected_calibration_error"]
    after = score_predictions(y, apply_temperature(overconfident, t), ["a", "b"])
    assert after["expected_calibration_error"] < before / 2
    assert after["accuracy"] == score_predictions(y, overconfident, ["a", "b"])["accuracy"]


def test_temperature_works_on_softmax_outputs() -> None:
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    assert apply_temperature(proba, 1.0) == pytest.approx(proba)
    soft = apply_temperature(proba, 100.0)
    assert soft == pytest.approx(np.full((2, 3), 1 / 3), abs=0.01)
    assert soft.sum(axis=1) == pytest.approx([1.0, 1.0])


def test_flip_averaging_scores_each_image_and_its_mirror() -> None:
    class LeftHalfBrightness:
        """A stand-in model: the mean of the left half of each image."""

        def predict(self, ds: object, verbose: int = 0) -> np.ndarray:
            return np.concatenate([x.numpy()[:, :, :2].mean(axis=(1, 2, 3)) for x in ds])[:, None]

    images = np.zeros((2, 4, 4, 1), np.uint8)
    images[:, :, 2:] = 255  # dark left half, bright right half
    decoded = DecodedImages(images, np.zeros(2, np.int32), ["a", "b"])
    plain = Run(Path("."), LeftHalfBrightness(), ["x", "y"], InputSpec(4, 1), {"model": {}})
    flipped = Run(
        Path("."), LeftHalfBrightness(), ["x", "y"], InputSpec(4, 1), {"model": {"tta_flip": True}}
    )
    assert predict_proba(plain, decoded) == pytest.approx([0.0, 0.0])
    assert predict_proba(flipped, decoded) == pytest.approx([0.5, 0.5])


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, st.integers(0, 20), elements=st.floats(0.0, 1.0)))
def test_two_classes_pick_the_second_only_above_one_half(proba: np.ndarray) -> None:
    ids, confidence = predicted_classes(proba)
    assert ids.tolist() == (proba > 0.5).astype(int).tolist()  # a tie goes to labels[0]
    assert confidence == pytest.approx(np.maximum(proba, 1 - proba))


@settings(max_examples=50, deadline=None)
@given(
    # off 0.5 by more than rounding: exactly there both sides give labels[0]
    arrays(
        np.float64,
        st.integers(1, 20),
        elements=st.floats(0.01, 0.99).filter(lambda p: abs(p - 0.5) > 1e-6),
    ),
    st.floats(0.05, 20.0),
)
def test_a_temperature_never_changes_which_class_is_picked(
    proba: np.ndarray, temperature: float
) -> None:
    scaled = apply_temperature(proba, temperature)
    assert ((scaled > 0.5) == (proba > 0.5)).all()
    assert apply_temperature(proba, 1.0) == pytest.approx(proba)
