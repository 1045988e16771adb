"""Evaluation: a trained run's model against labelled images it has never seen.

`evaluate_run` scans and validates a folder with the run's profile, then scores the accepted
files the way training scored its test split (`toolkit.scores`), split by whether a face was
found where the model crops faces.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.errors import UsageError
from toolkit.familiarity import (
    Familiarity,
    accuracy_by_familiarity,
    read_familiarity,
    why_unavailable,
)
from toolkit.manifest import ACCEPTED
from toolkit.models import InputSpec
from toolkit.opinion import answer_proba
from toolkit.pipeline import DecodedImages, decode_rows
from toolkit.runs import Run, load_run
from toolkit.scores import (
    embedding_width,
    predict_and_embed,
    predict_proba,
    predicted_ids,
    score_predictions,
)

log = logging.getLogger(__name__)


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


def score_familiarity(
    run: Run,
    familiarity: Familiarity | None,
    decoded: DecodedImages,
    proba: np.ndarray,
    embeddings: np.ndarray | None,
) -> dict[str, Any]:
    """How many scored pictures are unlike the training pictures, and the accuracy on those
    and on the others; or why the run cannot say (it has no familiarity score)."""
    if familiarity is None or embeddings is None:
        return {"unavailable": why_unavailable(run.config)}
    novelty = familiarity.novelty(embeddings)
    return accuracy_by_familiarity(decoded.labels, proba, novelty)


def evaluate_run(
    folder: Path,
    data: list[Path],
    *,
    profile: str | None = None,
    jobs: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Scan and validate `data` with the run's profile (or `profile`), score what passed."""
    from toolkit.check import check_folder
    from toolkit.manifest import normalise_manifest
    from toolkit.profiles import load_profile

    run = load_run(folder)
    # a broken familiarity file is refused before the data is scanned
    familiarity = read_familiarity(run.folder, embedding_width(run))
    rules = load_profile(profile or run.config.get("profile", {}).get("spec") or None)
    frames = []
    for root in data:
        checked = check_folder(
            root, rules, jobs=jobs, detect_faces=run.spec.crop_faces, progress=progress
        ).manifest
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
    limit = rules.scan_options().max_decode_pixels
    decoded = decode_rows(
        known, run.spec, run.labels, max_pixels=limit, jobs=jobs, progress=progress
    )
    embeddings = None
    if familiarity is None:
        proba = predict_proba(run, decoded)
    else:  # one pass of the network: the answers, and how familiar each picture is
        proba, embeddings = predict_and_embed(run, decoded)

    def read(rows: pd.DataFrame, spec: InputSpec) -> DecodedImages:
        return decode_rows(rows, spec, run.labels, max_pixels=limit, jobs=jobs)

    # the stacked answer where the run has a second opinion (toolkit.opinion)
    rows = known.iloc[decoded.kept or []].reset_index(drop=True)
    proba, decoded, kept = answer_proba(run, rows, decoded, read, network=proba)
    if kept is not None and embeddings is not None:
        embeddings = embeddings[kept]
    scores = score_predictions(decoded.labels, proba, run.labels)
    if run.spec.crop_faces:
        faces = known["n_faces"].fillna(0).to_numpy() > 0
        scores["by_face"] = accuracy_by_face(decoded.labels, proba, faces[decoded.kept])
    scores["familiarity"] = score_familiarity(run, familiarity, decoded, proba, embeddings)
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
