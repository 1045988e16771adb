"""The second opinion: a network pretrained on ImageNet reads each picture beside the run's own.

The run's network learnt from faces, most of them FER2013's; the sad emoji, clipart and
crying children of scraped folders are not faces it has seen. Three opinions of the
probability of labels[1] are stacked for each picture:

- `network`: the run's network as it scores (the face crop; calibrated by its temperature);
- `network_whole`: the same network on the whole picture (the same as `network` where the
  scan found no face);
- `regression`: a logistic regression on EfficientNet-Lite0's ImageNet features
  (toolkit.pretrained) of both views at 224 px, fitted on the train split (at most
  `PER_ROOT` pictures of each data folder: a 28,000-face set would cost minutes and outvote
  the web folders).

The stack, a logistic regression on the three opinions' log odds fitted on the validation
split, weighs them and calibrates the answer (where the run learnt from several data
folders, it reads each validation picture's regression opinion from a regression fitted
without that picture's folder, `out_of_folder`, so it trusts the regression as far as it
carries to a folder it has not seen): for a run that has one it takes the
temperature's place in the answers of `evaluate`, `predict` and the test split's metrics.
The temperature stays for the network's own scores (familiarity, the label audit). Two
classes only. Measured: docs/model-quality.md, "A pretrained second opinion".

The fitted opinion is a file of the run folder (`OPINION_NPZ`), read back as untrusted
input: a file that breaks the format is refused whole (exit 2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.errors import RecordError
from toolkit.models import InputSpec
from toolkit.pipeline import DecodedImages
from toolkit.pretrained import BACKBONE, WIDTH, features
from toolkit.runs import OPINION_NPZ, Run, read_run_arrays, write_run_arrays
from toolkit.scores import per_class, predict_proba

#: The backbone's input side, its ImageNet size (160 px costs half and calibrated worse).
SIZE = 224
#: The regression's inverse regularisation on the standardised features.
C = 0.003
#: At most this many train-split pictures of one data folder fit the regression.
PER_ROOT = 2000
#: The stack's inverse regularisation: little on thousands of validation pictures, enough on
#: a few dozen that the stack does not follow their noise.
STACK_C = 1.0
#: The opinions, in the stack's order.
OPINIONS = ("network", "network_whole", "regression")
#: What the stack reads: the opinions' log odds, whether the scan found a face, and each
#: opinion's log odds where it did (a face crop's opinions are worth more than a whole
#: picture's: leave-one-source-out mean 85.8 -> 86.8%, worst 79.8 -> 80.2%).
STACK_INPUTS = (*OPINIONS, "face", *(f"face*{k}" for k in OPINIONS))
#: The views the backbone reads: the face crop (the whole picture where no face was found)
#: and the whole picture.
VIEWS = ("face", "whole")
#: OPINION_NPZ's format name: a reader refuses any other.
FORMAT = "toolkit-second-opinion-1"
#: Rows decoded at 224 px at a time (150 KB each): the pixels go once read.
CHUNK = 256
_FACE_COLUMNS = ("face_x", "face_y", "face_w", "face_h")

#: Decodes manifest rows for an input spec; rows that cannot be used go to `.problems` and
#: `.kept` says which decoded (toolkit.pipeline.decode_rows, or predict's own reader).
Reader = Callable[[pd.DataFrame, InputSpec], DecodedImages]


@dataclass(frozen=True)
class SecondOpinion:
    """The fitted regression (on standardised features of both views) and the stack."""

    mean: np.ndarray  # (2 * WIDTH,)
    scale: np.ndarray  # (2 * WIDTH,)
    coef: np.ndarray  # (2 * WIDTH,)
    intercept: float
    stack_coef: np.ndarray  # (len(STACK_INPUTS),)
    stack_intercept: float
    size: int = SIZE

    def regression(self, x: np.ndarray) -> np.ndarray:
        """The regression's probability of labels[1] from (n, 2 * WIDTH) features."""
        z = ((np.asarray(x, np.float64) - self.mean) / self.scale) @ self.coef + self.intercept
        return _sigmoid(z)

    def answer(self, opinions: np.ndarray, face: np.ndarray) -> np.ndarray:
        """The stacked probability of labels[1] from (n, 3) opinions (OPINIONS' order) and
        whether the scan found a face in each picture."""
        return stack_proba(self.stack_coef, self.stack_intercept, opinions, face)

    def record(self) -> dict[str, Any]:
        """run.json's `second_opinion`: what it is and how much each opinion counts."""
        return {
            "file": OPINION_NPZ,
            "backbone": BACKBONE,
            "size": self.size,
            "c": C,
            "per_root": PER_ROOT,
            "weights": {
                k: round(float(w), 4) for k, w in zip(STACK_INPUTS, self.stack_coef, strict=True)
            },
        }


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))


def logit(p: np.ndarray) -> np.ndarray:
    """Probabilities as log odds, clipped away from 0 and 1."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


# ----------------------------------------------------------------------------- fitting


def fit_regression(x: np.ndarray, y: np.ndarray, c: float = C) -> tuple[Any, ...]:
    """(mean, scale, coef, intercept) of a balanced logistic regression on standardised x."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=c, max_iter=3000, class_weight="balanced")
    model.fit(scaler.transform(x), y)
    return scaler.mean_, scaler.scale_, model.coef_[0], float(model.intercept_[0])


def stack_inputs(opinions: np.ndarray, face: np.ndarray | None) -> np.ndarray:
    """What the stack reads (STACK_INPUTS): the opinions' log odds, then, with `face`, the
    flag and the log odds where it is set; the log odds alone without."""
    z = logit(opinions)
    if face is None:
        return z
    f = np.asarray(face, np.float64).reshape(-1, 1)
    return np.hstack([z, f, z * f])


def stack_proba(
    coef: np.ndarray, intercept: float, opinions: np.ndarray, face: np.ndarray | None = None
) -> np.ndarray:
    """A stack's (`fit_stack`'s coef and intercept) probability of labels[1]."""
    return _sigmoid(stack_inputs(opinions, face) @ coef + intercept)


def fit_stack(
    opinions: np.ndarray, y: np.ndarray, face: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """(coef, intercept) of a logistic regression on `stack_inputs`."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=STACK_C, max_iter=1000).fit(stack_inputs(opinions, face), y)
    return model.coef_[0], float(model.intercept_[0])


def out_of_folder(
    full: SecondOpinion,
    x: np.ndarray,
    y: np.ndarray,
    roots: np.ndarray,
    x_val: np.ndarray,
    val_roots: np.ndarray,
) -> tuple[np.ndarray, list[str]]:
    """The regression's probability of labels[1] for each validation row, fitted without the
    train pictures of the row's own data folder wherever the other folders' hold both classes
    (`full`'s elsewhere: one folder, or one class without it), and the folders so scored. The
    stack fitted on these learns how far the regression carries to a folder it has not seen,
    not how well it knows pictures of folders it learnt from."""
    out = full.regression(x_val)
    roots, val_roots = np.asarray(roots).astype(str), np.asarray(val_roots).astype(str)
    scored = []
    for root in sorted(set(val_roots)):
        others = roots != root
        if len(np.unique(y[others])) < 2:
            continue
        fitted = SecondOpinion(*fit_regression(x[others], y[others]), full.stack_coef, 0.0)
        rows = val_roots == root
        out[rows] = fitted.regression(x_val[rows])
        scored.append(root)
    return out, scored


def data_folders(rows: pd.DataFrame) -> np.ndarray:
    """Each row's data folder (the `root` column), or one unnamed folder for all rows."""
    if "root" not in rows.columns:
        return np.full(len(rows), "", dtype=object)
    return rows["root"].astype(str).to_numpy()


def per_root_sample(rows: pd.DataFrame, seed: int, cap: int = PER_ROOT) -> np.ndarray:
    """Positions of at most `cap` rows of each data folder (the `root` column), drawn with
    `seed`; every row where there is no root column and at most `cap` rows."""
    roots = pd.Series(data_folders(rows), index=rows.index)
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for _, positions in sorted(roots.reset_index(drop=True).groupby(roots.values).indices.items()):
        picked.extend(positions if len(positions) <= cap else rng.choice(positions, cap, False))
    return np.sort(np.asarray(picked, dtype=int))


# ----------------------------------------------------------------------------- the views


def has_face_box(rows: pd.DataFrame, spec: InputSpec) -> np.ndarray:
    """Rows whose face crop differs from the whole picture: a face box, and a spec that
    crops to it."""
    if not spec.crop_faces or not set(_FACE_COLUMNS) <= set(rows.columns):
        return np.zeros(len(rows), dtype=bool)
    return rows[list(_FACE_COLUMNS)].notna().all(axis=1).to_numpy()


def face_found(rows: pd.DataFrame) -> np.ndarray:
    """Whether the scan found a face in each row's picture (its face box is recorded)."""
    return has_face_box(rows, InputSpec(crop_faces=True))


def _kept_and_failed(n: int, decoded: DecodedImages) -> tuple[list[int], dict[int, str]]:
    """Which of the `n` rows given to a Reader it decoded, and why each other one failed (by
    position; a Reader lists its problems in the rows' order)."""
    kept = list(decoded.kept) if decoded.kept is not None else list(range(len(decoded)))
    failed = sorted(set(range(n)) - set(kept))
    whys = [why for _, why in decoded.problems]
    return kept, {
        i: whys[k] if k < len(whys) else "could not be decoded" for k, i in enumerate(failed)
    }


def _read_aligned(read: Reader, rows: pd.DataFrame, spec: InputSpec) -> tuple[np.ndarray, dict]:
    """`rows` decoded for `spec`, one slot per row (zeros where it failed), and the failures
    by position."""
    if len(rows) == 0:
        return np.zeros((0, *spec.shape), np.uint8), {}
    decoded = read(rows, spec)
    kept, failed = _kept_and_failed(len(rows), decoded)
    images = np.zeros((len(rows), *spec.shape), np.uint8)
    images[kept] = decoded.images
    return images, failed


def backbone_features(
    rows: pd.DataFrame, read: Reader, crop_faces: bool, *, size: int = SIZE, progress: bool = False
) -> tuple[np.ndarray, dict[int, str]]:
    """(n, 2 * WIDTH): the backbone's features of each row's face crop and whole picture (one
    decode and one pass where both are the same picture), and the rows that failed."""
    face_spec = InputSpec(size, 3, crop_faces=crop_faces)
    out = np.zeros((len(rows), 2 * WIDTH), np.float32)
    problems: dict[int, str] = {}
    starts = range(0, len(rows), CHUNK)
    if progress:
        from toolkit.progress import progress_bar

        starts = progress_bar(starts, desc="pretrained features", unit="chunk", leave=False)
    for start in starts:
        part = rows.iloc[start : start + CHUNK]
        pixels, failed = _read_aligned(read, part, face_spec)
        face = features(pixels)
        whole = face.copy()
        boxed = np.flatnonzero(has_face_box(part, face_spec))
        if len(boxed):
            pixels, more = _read_aligned(
                read, part.iloc[boxed], replace(face_spec, crop_faces=False)
            )
            whole[boxed] = features(pixels)
            failed |= {int(boxed[i]): why for i, why in more.items()}
        out[start : start + len(part)] = np.hstack([face, whole])
        problems |= {start + i: why for i, why in failed.items()}
    return out, problems


def network_whole(
    run: Run, rows: pd.DataFrame, read: Reader, network: np.ndarray
) -> tuple[np.ndarray, dict[int, str]]:
    """The run's calibrated probability of labels[1] on each row's whole picture: `network`
    (its face-crop opinion) where both are the same picture; and the rows that failed."""
    out = np.asarray(network, np.float64).copy()
    boxed = np.flatnonzero(has_face_box(rows, run.spec))
    if not len(boxed):
        return out, {}
    spec = replace(run.spec, crop_faces=False)
    decoded = read(rows.iloc[boxed], spec)
    kept, failed = _kept_and_failed(len(boxed), decoded)
    out[boxed[kept]] = per_class(predict_proba(run, decoded))[:, 1]
    return out, {int(boxed[i]): why for i, why in failed.items()}


FeaturesOf = Callable[[pd.DataFrame], tuple[np.ndarray, dict[int, str]]]


def opinions(
    run: Run,
    rows: pd.DataFrame,
    decoded: DecodedImages,
    read: Reader,
    opinion: SecondOpinion,
    *,
    network: np.ndarray | None = None,
    features_of: FeaturesOf | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """(n, 3) opinions of `rows` (those `decoded` holds at the run's input, in its order; the
    stack of `opinion` is not used), and the rows an extra view failed for (by position).
    `network` is the run's calibrated `predict_proba` of `decoded` where already computed;
    `features_of` stands in for the backbone (a cache of its features)."""
    if network is None:
        network = predict_proba(run, decoded)
    network = per_class(network)[:, 1]
    whole, problems = network_whole(run, rows, read, network)
    if features_of is None:
        x, failed = backbone_features(rows, read, run.spec.crop_faces, size=opinion.size)
    else:
        x, failed = features_of(rows)
    return np.c_[network, whole, opinion.regression(x)], problems | failed


def answer_proba(
    run: Run,
    rows: pd.DataFrame,
    decoded: DecodedImages,
    read: Reader,
    *,
    network: np.ndarray | None = None,
    features_of: FeaturesOf | None = None,
) -> tuple[np.ndarray, DecodedImages, np.ndarray | None]:
    """The run's answers for `rows` (those `decoded` holds, in its order): the stacked
    probability of labels[1] where the run has a second opinion, else the network's
    (`network`, the calibrated `predict_proba`, where already computed). Rows an extra view
    failed for are left out: the DecodedImages returned lacks them (its `problems` say why),
    and the third item is the positions kept (None when all are)."""
    opinion = read_opinion(run.folder)
    if opinion is None:
        return (predict_proba(run, decoded) if network is None else network), decoded, None
    found, failed = opinions(
        run, rows, decoded, read, opinion, network=network, features_of=features_of
    )
    proba = opinion.answer(found, face_found(rows))
    if not failed:
        return proba, decoded, None
    keep = np.setdiff1d(np.arange(len(decoded)), sorted(failed))
    kept = decoded.kept if decoded.kept is not None else list(range(len(decoded)))
    left = DecodedImages(
        images=decoded.images[keep],
        labels=decoded.labels[keep],
        paths=[decoded.paths[i] for i in keep],
        problems=[*decoded.problems, *((decoded.paths[i], failed[i]) for i in sorted(failed))],
        kept=[kept[i] for i in keep],
    )
    return proba[keep], left, keep


# ----------------------------------------------------------------------------- the file

_KEYS = {"format", "mean", "scale", "coef", "intercept", "stack_coef", "stack_intercept", "size"}


def write_opinion(folder: Path, opinion: SecondOpinion) -> Path:
    """OPINION_NPZ in the run folder, written whole or not at all."""
    return write_run_arrays(
        folder,
        OPINION_NPZ,
        format=np.array(FORMAT),
        mean=np.asarray(opinion.mean, np.float64),
        scale=np.asarray(opinion.scale, np.float64),
        coef=np.asarray(opinion.coef, np.float64),
        intercept=np.array(opinion.intercept, np.float64),
        stack_coef=np.asarray(opinion.stack_coef, np.float64),
        stack_intercept=np.array(opinion.stack_intercept, np.float64),
        size=np.array(opinion.size, np.int64),
    )


def read_opinion(folder: Path) -> SecondOpinion | None:
    """The run's fitted second opinion, checked before use; None when the run has none. A
    file that breaks the format is refused with a RecordError (exit 2)."""
    path = Path(folder) / OPINION_NPZ
    arrays = read_run_arrays(folder, OPINION_NPZ, _KEYS)
    if arrays is None:
        return None
    for key, problem in _problems(arrays):
        raise RecordError(path, key, problem)
    return SecondOpinion(
        arrays["mean"],
        arrays["scale"],
        arrays["coef"],
        float(arrays["intercept"]),
        arrays["stack_coef"],
        float(arrays["stack_intercept"]),
        int(arrays["size"]),
    )


def _problems(arrays: dict[str, np.ndarray]) -> list[tuple[str, str]]:
    """(key, why) for each array a reader would trust wrongly."""
    fmt = arrays["format"]
    if fmt.shape != () or fmt.dtype.kind != "U" or str(fmt) != FORMAT:
        return [("format", f"expected {FORMAT!r}, got {str(fmt)[:40]!r}")]
    found = []
    shapes = {
        "mean": (2 * WIDTH,),
        "scale": (2 * WIDTH,),
        "coef": (2 * WIDTH,),
        "intercept": (),
        "stack_coef": (len(STACK_INPUTS),),
        "stack_intercept": (),
    }
    for key, shape in shapes.items():
        a = arrays[key]
        if a.shape != shape or a.dtype.kind != "f" or not np.isfinite(a).all():
            found.append(
                (key, f"expected finite numbers of shape {shape}, got {a.dtype} {a.shape}")
            )
    if found:
        return found
    if not (arrays["scale"] > 0).all():
        found.append(("scale", "expected every deviation above 0"))
    size = arrays["size"]
    if size.shape != () or size.dtype.kind not in "iu" or not 32 <= int(size) <= 1024:
        found.append(("size", f"expected a side of 32 to 1024 px, got {size!r:.40}"))
    return found
