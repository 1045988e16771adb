"""Scores: a run's probabilities, calibrated, and the metrics computed from them.

Training (on its test split) and evaluation (on new data) score the same way, so both
import this: the probabilities of a run's model (mirrored too, where the recipe says so),
the class each gets (one tie rule for evaluate's scores and predict's answers), the
temperature that calibrates them, and the metrics a run folder and `toolkit evaluate
--json` report (scikit-learn computes them).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from toolkit.pipeline import DecodedImages, make_dataset
from toolkit.runs import Run

#: Equal-width confidence bins of the expected calibration error and the reliability plot.
N_CALIBRATION_BINS = 10


def predict_proba(
    run: Run, decoded: DecodedImages, batch_size: int = 64, *, calibrated: bool = True
) -> np.ndarray:
    """Probabilities per image: (n,) of labels[1] for two classes, else (n, n_classes).

    With the run's `tta_flip`, each image is also scored mirrored and the two averaged;
    `calibrated` applies the temperature fitted on the validation split after training.
    """
    if len(decoded) == 0:
        return np.zeros((0,) if run.binary else (0, len(run.labels)), dtype=np.float32)
    return _as_probabilities(run, model_outputs(run, run.model, decoded, batch_size), calibrated)


def embedding_width(run: Run) -> int:
    """How many numbers `embed` gives per image: the width of the classification head's input."""
    return int(run.model.layers[-1].input.shape[-1])


def embed(run: Run, decoded: DecodedImages, batch_size: int = 256) -> np.ndarray:
    """Each image's penultimate-layer output: what the run's classification head reads,
    from the same scaled input the model is scored on (`make_dataset`), averaged with the
    mirror image's where the run scores mirror images too."""
    import keras

    if len(decoded) == 0:
        return np.zeros((0, embedding_width(run)), dtype=np.float32)
    embedder = keras.Model(run.model.inputs, run.model.layers[-1].input)
    return np.asarray(model_outputs(run, embedder, decoded, batch_size), dtype=np.float32)


def predict_and_embed(
    run: Run, decoded: DecodedImages, batch_size: int = 64, *, calibrated: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """`predict_proba`'s probabilities and `embed`'s embeddings from one pass of the network
    (predict and evaluate need both: the answer, and whether the picture is familiar)."""
    import keras

    if len(decoded) == 0:
        return predict_proba(run, decoded, calibrated=calibrated), embed(run, decoded)
    head = run.model.layers[-1]  # the classification head: its output is the model's
    both = keras.Model(run.model.inputs, [head.output, head.input])
    proba, embeddings = model_outputs(run, both, decoded, batch_size)
    return _as_probabilities(run, proba, calibrated), np.asarray(embeddings, dtype=np.float32)


def _as_probabilities(run: Run, proba: np.ndarray, calibrated: bool) -> np.ndarray:
    proba = proba[:, 0] if run.binary else proba
    temperature = run.config.get("temperature") if calibrated else None
    return proba if temperature is None else apply_temperature(proba, float(temperature))


def model_outputs(run: Run, model: Any, decoded: DecodedImages, batch_size: int) -> Any:
    """What `model` (the run's, or one on its input, such as its penultimate layer) outputs
    for each image, scaled as the run is scored (`make_dataset`) and, with the run's
    `tta_flip`, averaged with the mirror image's output; a list for a model of several
    outputs."""
    import tensorflow as tf

    images = make_dataset(decoded, batch_size=batch_size, binary=run.binary).map(lambda x, y: x)
    found = model.predict(images, verbose=0)
    if run.config.get("model", {}).get("tta_flip"):
        mirrored = model.predict(images.map(tf.image.flip_left_right), verbose=0)
        if isinstance(found, list):
            return [(a + b) / 2 for a, b in zip(found, mirrored, strict=True)]
        found = (found + mirrored) / 2
    return found


def predicted_ids(proba: np.ndarray) -> np.ndarray:
    """Class index per image: labels[1] above 0.5 for two classes, else the most probable."""
    return predicted_classes(proba)[0]


def per_class(proba: np.ndarray) -> np.ndarray:
    """(n, n_classes) probabilities: `predict_proba`'s (n,) of labels[1] for two classes as
    two columns; more classes as they are."""
    return np.stack([1 - proba, proba], axis=1) if proba.ndim == 1 else np.asarray(proba)


def predicted_classes(proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class index per image and its probability; a tie goes to the first label (argmax),
    the same rule for evaluate's scores and predict's answers."""
    full = per_class(proba)
    if not len(full):
        return np.zeros(0, dtype=int), np.zeros(0)
    ids = full.argmax(axis=1)
    return ids, full[np.arange(len(full)), ids]


#: Probabilities are kept this far from 0 and 1 before taking logits.
_EPS = 1e-7


def _logits(proba: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(proba, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p)) if p.ndim == 1 else np.log(p)


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Soften (T > 1) or sharpen (T < 1) probabilities: logits divided by T."""
    z = _logits(proba) / temperature
    if z.ndim == 1:
        return 1.0 / (1.0 + np.exp(-z))
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(y_true: np.ndarray, proba: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of `y_true` (Guo et al.
    2017, "On calibration of modern neural networks"), searched over 0.05-20."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(y_true, dtype=int)

    def nll(log_t: float) -> float:
        p = np.clip(apply_temperature(proba, float(np.exp(log_t))), _EPS, 1 - _EPS)
        if p.ndim == 1:
            return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
        return float(-np.mean(np.log(p[np.arange(len(y)), y])))

    best = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(best.x))


def score_predictions(y_true: np.ndarray, proba: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Accuracy, precision, recall, F1, ROC-AUC, confusion matrix, per class, and
    calibration (expected calibration error over 10 equal-width confidence bins)."""
    from sklearn import metrics

    y_true = np.asarray(y_true, dtype=int)
    binary = proba.ndim == 1
    y_pred, confidence = predicted_classes(proba)
    ids = list(range(len(labels)))
    average = "binary" if binary else "macro"
    kw: dict[str, Any] = {"labels": ids, "zero_division": 0}
    if binary:
        kw["pos_label"] = 1
    precision, recall, f1, _ = metrics.precision_recall_fscore_support(
        y_true, y_pred, average=average, **kw
    )
    per_p, per_r, per_f, per_n = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=ids, zero_division=0
    )
    present = np.unique(y_true)
    if len(present) < 2:
        roc_auc = None  # undefined with one class present
    elif binary:
        roc_auc = float(metrics.roc_auc_score(y_true, proba))
    else:
        roc_auc = float(
            metrics.roc_auc_score(
                y_true, np.asarray(proba), multi_class="ovr", average="macro", labels=ids
            )
        )
    calibration = _calibration(confidence, y_pred == y_true)
    return {
        "n_scored": len(y_true),
        "labels": list(labels),
        "positive_label": labels[1] if binary else None,
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)) if len(y_true) else None,
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "roc_auc": roc_auc,
        "confusion_matrix": metrics.confusion_matrix(y_true, y_pred, labels=ids).tolist(),
        "per_class": {
            name: {
                "precision": float(per_p[i]),
                "recall": float(per_r[i]),
                "f1": float(per_f[i]),
                "support": int(per_n[i]),
            }
            for i, name in enumerate(labels)
        },
        "expected_calibration_error": calibration["ece"],
        "calibration_bins": calibration["bins"],
    }


def _calibration(confidence: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    """ECE: the gap between confidence and accuracy, averaged over bins by their size."""
    edges = np.linspace(0.0, 1.0, N_CALIBRATION_BINS + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, N_CALIBRATION_BINS - 1)
    bins, ece = [], 0.0
    for b in range(N_CALIBRATION_BINS):
        inside = which == b
        n = int(inside.sum())
        if n == 0:
            continue
        conf, acc = float(confidence[inside].mean()), float(correct[inside].mean())
        ece += n / len(confidence) * abs(conf - acc)
        bins.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "n": n,
                "confidence": conf,
                "accuracy": acc,
            }
        )
    return {"ece": float(ece) if len(confidence) else None, "bins": bins}
