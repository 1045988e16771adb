"""Familiarity: whether a picture is like the ones the model was trained on.

A classifier answers for every picture, and answers a yellow sad emoji "happy" with high
confidence when nothing like it was in its training data. This score says when an
answer is a guess: a picture's novelty is the distance from its penultimate-layer embedding
(L2-normalised) to the K-th nearest normalised embedding of a training picture (Sun et al.
2022, "Out-of-distribution detection with deep nearest neighbors"), divided by the distance
that FAMILIAR_QUANTILE of the validation pictures fall at or under. Novelty 1 is the fence:
above it a picture is unfamiliar. Fitting needs no out-of-distribution pictures, only the
embeddings the label audit already computes at the end of training.

The fitted score is a file of the run folder (`FAMILIARITY_NPZ`, named in toolkit.runs): its
format, writing it and reading it back (checked: a record read back is untrusted) live here.
docs/model-quality.md has the measurement that chose this method over class-conditional
Mahalanobis distance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import RecordError
from toolkit.runs import FAMILIARITY_NPZ, read_run_arrays, write_run_arrays
from toolkit.scores import predicted_ids

#: The neighbour whose distance is the score: the K-th nearest training picture.
K_NEIGHBOUR = 10
#: Share of validation pictures the fence keeps familiar.
FAMILIAR_QUANTILE = 0.95
#: Training embeddings kept as the reference (a seeded sample beyond this bounds the file
#: and each prediction's cost).
MAX_REFERENCE = 20_000
#: The file's `format` entry: what a reader of this version accepts.
FORMAT = "toolkit-familiarity-knn/1"
#: The arrays of the file, and nothing else.
_KEYS = frozenset({"format", "reference", "k", "threshold", "quantile"})
#: Unit rows may be off by rounding, not more.
_UNIT_TOLERANCE = 1e-3
#: A fence of 0 (validation pictures that copy training ones) still divides.
_MIN_FENCE = 1e-6
#: What predict and the reports say about an unfamiliar picture.
UNFAMILIAR_NOTE = "unlike the training pictures: treat this answer as a guess"


@dataclass(frozen=True)
class Familiarity:
    """A fitted familiarity score: the normalised training embeddings and the fence."""

    reference: np.ndarray  # (n, d) float32, unit rows
    k: int  # the neighbour whose distance is the score
    threshold: float  # the distance FAMILIAR_QUANTILE of validation pictures fall under
    quantile: float

    @property
    def width(self) -> int:
        """The embedding width this score was fitted on (the model's penultimate layer)."""
        return int(self.reference.shape[1])

    def novelty(self, embeddings: np.ndarray) -> np.ndarray:
        """(n,) each embedding's K-th neighbour distance in multiples of the fence: at or
        under 1 familiar, above it unfamiliar."""
        distance = kth_neighbour_distance(normalise(embeddings), self.reference, self.k)
        return distance / max(self.threshold, _MIN_FENCE)

    def record(self) -> dict[str, Any]:
        """run.json's `familiarity`: the file and how its fence was set."""
        return {
            "file": FAMILIARITY_NPZ,
            "method": f"distance to the {self.k}th nearest training picture's normalised "
            "penultimate-layer embedding (Sun et al. 2022)",
            "fence": f"the distance {self.quantile:.0%} of validation pictures fall under",
            "threshold": round(self.threshold, 6),
            "n_reference": len(self.reference),
        }


def is_familiar(novelty: np.ndarray) -> np.ndarray:
    """Whether each novelty is at or under the fence: the picture is like the training ones."""
    return np.asarray(novelty) <= 1.0


def why_unavailable(config: dict[str, Any]) -> str:
    """Why a run (its run.json `config`) has no familiarity score, in words."""
    record = config.get("familiarity")
    if isinstance(record, dict) and isinstance(record.get("skipped"), str):
        return record["skipped"]
    if isinstance(record, dict):  # run.json says it was fitted: the file went missing since
        return f"the run's {FAMILIARITY_NPZ} is missing"
    return f"the run has no {FAMILIARITY_NPZ} (trained before the familiarity score existed)"


def normalise(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero), as float32."""
    x = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def nearest_distances(
    z: np.ndarray, reference: np.ndarray, k: int, *, skip_self: bool = False, block: int = 1024
) -> np.ndarray:
    """Each row's Euclidean distances to its k nearest rows of `reference`, nearest first
    (its own zero distance left out with `skip_self`; fewer columns where `reference` is
    shorter), in blocks of rows to bound memory. The familiarity score reads the k-th, the
    label audit's outliers the mean."""
    k = min(k + skip_self, len(reference))
    squared = (reference**2).sum(axis=1)
    out = np.empty((len(z), k - int(skip_self)))
    for start in range(0, len(z), block):
        rows = z[start : start + block]
        d2 = (rows**2).sum(axis=1)[:, None] + squared[None, :] - 2 * rows @ reference.T
        nearest = np.sort(np.partition(np.maximum(d2, 0), k - 1, axis=1)[:, :k], axis=1)
        out[start : start + block] = np.sqrt(nearest[:, int(skip_self) :])
    return out


def kth_neighbour_distance(z: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """Each row's Euclidean distance to its k-th nearest row of `reference`."""
    if not len(z):
        return np.zeros(0)
    return nearest_distances(z, reference, k)[:, -1]


def fit_familiarity(
    train: np.ndarray,
    validation: np.ndarray,
    *,
    k: int = K_NEIGHBOUR,
    quantile: float = FAMILIAR_QUANTILE,
    seed: int = 0,
) -> Familiarity:
    """The score from training embeddings (the reference) and validation embeddings (the
    fence: the K-th neighbour distance `quantile` of them fall at or under)."""
    reference = normalise(train)
    # an embedding too short to scale (all zeros: a picture that wakes no unit) has no
    # direction, and the file holds unit rows only
    reference = reference[np.abs(np.linalg.norm(reference, axis=1) - 1) <= _UNIT_TOLERANCE]
    if len(reference) > MAX_REFERENCE:
        keep = np.random.default_rng(seed).choice(len(reference), MAX_REFERENCE, replace=False)
        reference = reference[np.sort(keep)]
    if not len(reference) or not len(validation):
        raise ValueError(
            "the familiarity score needs training embeddings that are not all zeros, and "
            "validation embeddings"
        )
    k = max(1, min(k, len(reference)))
    distance = kth_neighbour_distance(normalise(validation), reference, k)
    threshold = float(np.quantile(distance, quantile, method="higher"))
    return Familiarity(reference, k, threshold, quantile)


def accuracy_by_familiarity(
    y_true: np.ndarray, proba: np.ndarray, novelty: np.ndarray
) -> dict[str, Any]:
    """How many pictures are unfamiliar, and the accuracy on the familiar and the
    unfamiliar ones: where the model's answers can be trusted, and where they are guesses."""
    y_true = np.asarray(y_true, dtype=int)
    right = predicted_ids(proba) == y_true
    familiar = is_familiar(novelty)
    out: dict[str, Any] = {"n_unfamiliar": int((~familiar).sum())}
    for key, mask in (("familiar", familiar), ("unfamiliar", ~familiar)):
        n = int(mask.sum())
        out[key] = {"n": n, "accuracy": float(right[mask].mean()) if n else None}
    return out


# ----------------------------------------------------------------------------- the file


def write_familiarity(folder: Path, familiarity: Familiarity) -> Path:
    """FAMILIARITY_NPZ in the run folder, written whole or not at all."""
    return write_run_arrays(
        folder,
        FAMILIARITY_NPZ,
        format=np.array(FORMAT),
        reference=familiarity.reference.astype(np.float32),
        k=np.array(familiarity.k, dtype=np.int64),
        threshold=np.array(familiarity.threshold, dtype=np.float64),
        quantile=np.array(familiarity.quantile, dtype=np.float64),
    )


def read_familiarity(folder: Path, width: int | None = None) -> Familiarity | None:
    """The run's fitted score, checked before use; None when the run has none (trained
    before the score existed). A file that breaks the format, or was fitted on embeddings
    of another `width` than the model's, is refused with a RecordError (exit 2)."""
    path = Path(folder) / FAMILIARITY_NPZ
    arrays = read_run_arrays(folder, FAMILIARITY_NPZ, _KEYS)
    if arrays is None:
        return None
    for key, problem in _problems(arrays, width):
        raise RecordError(path, key, problem)
    reference = arrays["reference"]
    return Familiarity(
        reference.astype(np.float32),
        int(arrays["k"]),
        float(arrays["threshold"]),
        float(arrays["quantile"]),
    )


def _problems(arrays: dict[str, np.ndarray], width: int | None) -> list[tuple[str, str]]:
    """(key, why) for each array a reader would trust wrongly."""
    found = []
    fmt = arrays["format"]
    if fmt.shape != () or fmt.dtype.kind != "U" or str(fmt) != FORMAT:
        found.append(("format", f"expected {FORMAT!r}, got {str(fmt)[:40]!r}"))
    reference = arrays["reference"]
    if reference.ndim != 2 or reference.dtype.kind != "f" or not all(reference.shape):
        found.append(("reference", f"expected (n, d) numbers, got {reference.dtype} "
                      f"{reference.shape}"))  # fmt: skip
        return found
    norms = np.linalg.norm(reference.astype(np.float64), axis=1)
    if not np.all(np.abs(norms - 1) <= _UNIT_TOLERANCE):  # NaN fails too
        found.append(("reference", "expected unit rows (normalised embeddings)"))
    if width is not None and reference.shape[1] != width:
        found.append(("reference", f"fitted on {reference.shape[1]}-wide embeddings, the "
                      f"model's are {width} wide"))  # fmt: skip
    k = arrays["k"]
    if k.shape != () or k.dtype.kind not in "iu" or not 1 <= int(k) <= len(reference):
        found.append(("k", f"expected a whole number 1-{len(reference)}, got {k!r:.40}"))
    threshold = arrays["threshold"]
    if threshold.shape != () or threshold.dtype.kind != "f" or not 0 <= threshold <= 2:
        # distances between unit vectors lie in [0, 2]
        found.append(("threshold", f"expected a number in [0, 2], got {threshold!r:.40}"))
    quantile = arrays["quantile"]
    if quantile.shape != () or quantile.dtype.kind != "f" or not 0 < quantile <= 1:
        found.append(("quantile", f"expected a number in (0, 1], got {quantile!r:.40}"))
    return found
