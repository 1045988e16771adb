"""Scoring: a trained run's model against labelled images it has never seen.

`score_predictions` turns labels and predicted probabilities into the metrics a run folder
and `toolkit evaluate --json` report (scikit-learn computes them). `evaluate_run` scans and
validates a folder with the run's profile, then scores the accepted files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.errors import ManifestError, RecordError, UsageError
from toolkit.paths import inside_problem, open_regular, read_regular
from toolkit.pipeline import DecodedImages, InputSpec, decode_rows, make_dataset
from toolkit.validate import ACCEPTED

log = logging.getLogger(__name__)

RUN_JSON = "run.json"
MODEL_FILE = "model.keras"
N_CALIBRATION_BINS = 10


@dataclass
class Run:
    """A finished training run, loaded for scoring."""

    folder: Path
    model: Any
    labels: list[str]
    spec: InputSpec
    config: dict[str, Any]

    @property
    def binary(self) -> bool:
        """Two classes: one sigmoid output, the probability of labels[1]."""
        return len(self.labels) == 2


def read_run_config(folder: Path) -> dict[str, Any]:
    """run.json of a run folder, checked before use: a ManifestError when there is none, a
    RecordError (exit 2) naming the first key that no training run writes."""
    path = Path(folder) / RUN_JSON
    if not os.path.lexists(path):
        raise ManifestError(path, "not a run folder (no run.json; train one with `toolkit train`)")
    try:
        config = json.loads(read_regular(path).decode("utf-8"))
    except (OSError, ValueError) as exc:  # a FIFO or a folder, not UTF-8, not JSON
        raise RecordError(path, "file", f"unreadable run record: {exc}") from None
    if not isinstance(config, dict):
        raise RecordError(path, "file", f"expected an object, got {type(config).__name__}")
    for key, problem in _run_config_problems(config):
        raise RecordError(path, key, problem)
    return config


def _run_config_problems(config: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(key, why) for each value of run.json the commands that read it back would trust."""
    labels = config.get("labels")
    if (
        not isinstance(labels, list)
        or len(labels) < 2
        or not all(isinstance(x, str) and x and "\x00" not in x for x in labels)
        or len(set(labels)) != len(labels)
    ):
        yield "labels", f"expected two or more distinct class names, got {labels!r:.80}"
    spec = config.get("input")
    fields = {f.name for f in dataclasses.fields(InputSpec)}
    if not isinstance(spec, dict) or not set(spec) <= fields:
        yield "input", f"expected an object with keys among {sorted(fields)}, got {spec!r:.80}"
        return
    if not _is_int(spec.get("size", 1)) or not 1 <= spec.get("size", 1) <= MAX_INPUT_PX:
        yield "input.size", f"expected a whole number 1-{MAX_INPUT_PX}, got {spec['size']!r:.40}"
    if spec.get("channels", 3) not in (1, 3) or isinstance(spec.get("channels"), bool):
        yield "input.channels", f"expected 1 or 3, got {spec['channels']!r:.40}"
    if not isinstance(spec.get("crop_faces", False), bool):
        yield "input.crop_faces", f"expected true or false, got {spec['crop_faces']!r:.40}"
    margin = spec.get("face_margin", 0.0)
    if not _is_number(margin) or not 0 <= margin <= 10:
        yield "input.face_margin", f"expected a number 0-10, got {margin!r:.40}"
    temperature = config.get("temperature")
    if temperature is not None and (not _is_number(temperature) or not temperature > 0):
        yield "temperature", f"expected a number above 0, got {temperature!r:.40}"
    model = config.get("model", {})
    if not isinstance(model, dict) or not isinstance(model.get("tta_flip", False), bool):
        yield "model", f"expected an object with tta_flip true or false, got {model!r:.80}"
    profile = config.get("profile", {})
    spec_text = profile.get("spec", "") if isinstance(profile, dict) else None
    if not isinstance(spec_text, str) or "\x00" in spec_text:
        yield "profile", f"expected an object with the profile's spec (text), got {profile!r:.80}"
    if not isinstance(config.get("status", ""), str):
        yield "status", f"expected text, got {config['status']!r:.40}"


#: The largest input side a run.json may ask for: a bigger one is an edit, not a model.
MAX_INPUT_PX = 4096


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def model_file(folder: Path) -> Path:
    """The run's model file: a regular file inside the run folder (not a link out of it, nor
    a FIFO Keras would wait on), or a ManifestError / RecordError saying why not."""
    model_path = Path(folder) / MODEL_FILE
    if not os.path.lexists(model_path):
        raise ManifestError(model_path, "the run has no model (did training finish?)")
    why = inside_problem(folder, MODEL_FILE)
    if why is not None:
        raise RecordError(model_path, MODEL_FILE, why)
    try:
        with open_regular(model_path):
            pass
    except OSError as exc:
        raise RecordError(model_path, MODEL_FILE, exc.strerror or str(exc)) from None
    return model_path


def load_run(folder: Path) -> Run:
    """Load a run's model in Keras' safe mode (no code from the file runs) and its config."""
    folder = Path(folder)
    config = read_run_config(folder)  # refused before TensorFlow loads
    model_path = model_file(folder)

    import keras

    import toolkit.layers  # noqa: F401  (registers the default model's layers)

    try:
        model = keras.models.load_model(model_path, compile=False, safe_mode=True)
    except Exception as exc:
        raise ManifestError(model_path, f"cannot load the model safely: {exc}") from exc
    spec = InputSpec(**config["input"])
    labels = list(config["labels"])
    # run.json must describe this model: an edited one would fail later, mid-prediction
    outputs, wanted = model.output_shape[-1], 1 if len(labels) == 2 else len(labels)
    if outputs != wanted:
        raise RecordError(folder / RUN_JSON, "labels", f"{len(labels)} classes for a model "
                          f"with {outputs} output(s)")  # fmt: skip
    shape = tuple(model.input_shape[1:])
    if any(d is not None and d != s for d, s in zip(shape, spec.shape, strict=False)):
        raise RecordError(folder / RUN_JSON, "input", f"{spec.shape} for a model taking {shape}")
    return Run(folder, model, labels, spec, config)


def predict_proba(
    run: Run, decoded: DecodedImages, batch_size: int = 64, *, calibrated: bool = True
) -> np.ndarray:
    """Probabilities per image: (n,) of labels[1] for two classes, else (n, n_classes).

    With the run's `tta_flip`, each image is also scored mirrored and the two averaged;
    `calibrated` applies the temperature fitted on the validation split after training.
    """
    if len(decoded) == 0:
        return np.zeros((0,) if run.binary else (0, len(run.labels)), dtype=np.float32)
    import tensorflow as tf

    ds = make_dataset(decoded, batch_size=batch_size, shuffle=False, binary=run.binary)
    images = ds.map(lambda x, y: x)
    proba = run.model.predict(images, verbose=0)
    if run.config.get("model", {}).get("tta_flip"):
        mirrored = images.map(tf.image.flip_left_right)
        proba = (proba + run.model.predict(mirrored, verbose=0)) / 2
    proba = proba[:, 0] if run.binary else proba
    temperature = run.config.get("temperature") if calibrated else None
    return proba if temperature is None else apply_temperature(proba, float(temperature))


def predicted_ids(proba: np.ndarray) -> np.ndarray:
    """Class index per image: labels[1] above 0.5 for two classes, else the most probable."""
    return predicted_classes(proba)[0]


def predicted_classes(proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class index per image and its probability; a tie goes to the first label (argmax),
    the same rule for evaluate's scores and predict's answers."""
    full = np.stack([1 - proba, proba], axis=1) if proba.ndim == 1 else np.asarray(proba)
    if not len(full):
        return np.zeros(0, dtype=int), np.zeros(0)
    ids = full.argmax(axis=1)
    return ids, full[np.arange(len(full)), ids]


def accuracy_by_face(
    y_true: np.ndarray, proba: np.ndarray, has_face: np.ndarray
) -> dict[str, dict[str, Any]]:
    """Accuracy where the scan found a face and where it did not: a face-crop model sees
    the whole image in the second group, which is where its errors tend to be."""
    y_true = np.asarray(y_true, dtype=int)
    y_pred = predicted_ids(proba)
    has_face = np.asarray(has_face, dtype=bool)
    out: dict[str, dict[str, Any]] = {}
    for key, mask in (("face_found", has_face), ("no_face", ~has_face)):
        n = int(mask.sum())
        right = float(np.mean(y_pred[mask] == y_true[mask])) if n else None
        out[key] = {"n": n, "accuracy": right}
    return out


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


def evaluate_run(
    folder: Path,
    data: list[Path],
    *,
    profile: str | None = None,
    jobs: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Scan and validate `data` with the run's profile (or `profile`), score what passed."""
    from toolkit.manifest import normalise_manifest
    from toolkit.profiles import load_profile
    from toolkit.scan import scan_folder
    from toolkit.validate import validate_manifest

    run = load_run(folder)
    rules = load_profile(profile or run.config.get("profile", {}).get("spec") or None)
    frames = []
    for root in data:
        manifest = scan_folder(
            root,
            jobs=jobs,
            options=rules.scan_options(detect_faces=run.spec.crop_faces),
            progress=progress,
        )
        checked = validate_manifest(manifest, rules).manifest
        checked["root"] = str(Path(root).resolve())
        frames.append(checked)
    merged = normalise_manifest(pd.concat(frames, ignore_index=True))
    accepted = merged[merged["status"] == ACCEPTED]
    known = accepted[accepted["label"].isin(run.labels)]
    unknown = sorted(set(accepted["label"].dropna()) - set(run.labels))
    if known.empty:
        raise UsageError(
            f"nothing to score in {', '.join(map(str, data))}: no accepted file has a label "
            f"the model knows ({', '.join(run.labels)})"
        )
    decoded = decode_rows(known, run.spec, run.labels, jobs=jobs, progress=progress)
    proba = predict_proba(run, decoded)
    scores = score_predictions(decoded.labels, proba, run.labels)
    if run.spec.crop_faces:
        faces = known["n_faces"].fillna(0).to_numpy() > 0
        scores["by_face"] = accuracy_by_face(decoded.labels, proba, faces[decoded.kept])
    return {
        "run": str(folder),
        "data": [str(p) for p in data],
        "profile": rules.name,
        "n_files": len(merged),
        "n_rejected": int((merged["status"] != ACCEPTED).sum()),
        "n_unknown_label": int(len(accepted) - len(known)),
        "unknown_labels": unknown,
        "n_left_out": len(decoded.problems),
        "left_out": [{"path": p, "why": w} for p, w in decoded.problems],
        **scores,
    }
