"""The label audit: which accepted files a trained model says are filed under the wrong class.

A file's label is judged by probabilities from a model that never trained on that file's
label: the run's network turns every accepted file (train, validation and test splits) into
its penultimate-layer embedding, and a logistic regression fitted on the other folds of a
k-fold split scores each file (seconds, instead of k trainings of the network). The network
itself did see the training files, so the probabilities are out of sample for the logistic
regression only. `toolkit.crossfit` gives probabilities from networks that never saw each
file instead (`OutOfSample`), at the cost of more trainings.

Confident learning (Northcutt et al., 2021), written here in numpy, turns those probabilities
into findings: each class's threshold is the mean probability its own files get; a file
counts towards (given label, true class) when the class's probability reaches its threshold;
that confident joint, calibrated to the class counts, says how many files of each given label
belong elsewhere; those with the widest margin for the other class are flagged, and none whose
given label is also the most probable class. Flagged files are ranked by their probability of
the given label (self-confidence), lowest first.

The findings land in the run folder as label_issues.csv (one home for its columns and for
reading it back: `toolkit train --exclude RUN/label_issues.csv` trains without them) and a
gallery of the top suspects. The same embeddings give outliers.csv: files far from their
nearest neighbours (pictures of neither class: quote cards, logos, collages).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.errors import RecordError, UsageError
from toolkit.familiarity import nearest_distances
from toolkit.manifest import ACCEPTED, read_manifest
from toolkit.paths import (
    atomic_write,
    atomic_write_json,
    read_regular,
    relative_problem,
    root_problem,
)
from toolkit.pipeline import SPLITS, DecodedImages, decode_rows
from toolkit.runs import (
    LABEL_ISSUES_CSV,
    LABEL_ISSUES_PNG,
    OUTLIERS_CSV,
    OUTLIERS_PNG,
    RUN_JSON,
    Run,
    load_run,
    read_run_config,
)
from toolkit.scores import embed

log = logging.getLogger(__name__)

#: Folds of the cross-fitted logistic regression: each file is scored by the fit without it.
N_FOLDS = 5
#: Inverse L2 strength of the logistic regression on the standardised embeddings: strong,
#: as the embeddings have as many dimensions as a small class has files (docs/ has the
#: comparison of strengths)
LOGISTIC_C = 0.01
#: label_issues.csv's columns, in order; `score` is the out-of-sample probability of the
#: given label (lower is more suspect), `root` the data folder the path is relative to.
ISSUE_COLUMNS = ("path", "root", "split", "given_label", "suggested_label", "score")
#: outliers.csv's columns; `score` is the file's mean distance to its nearest neighbours in
#: the other folds, in multiples of the median such distance (see `outlier_scores`).
OUTLIER_COLUMNS = ("path", "root", "split", "given_label", "score")
#: run.json's `audit.method` for each source of out-of-sample probabilities.
EMBEDDINGS_METHOD = (
    "confident learning (prune by noise rate) on k-fold logistic regression of the network's "
    "penultimate-layer embeddings"
)
NETWORKS_METHOD = (
    "confident learning (prune by noise rate) on the probabilities of k networks trained with "
    "the run's recipe, each scoring the fold of files it never trained on"
)
#: Neighbours an outlier's distance is averaged over.
N_NEIGHBOURS = 10
#: Files of the other folds whose neighbour distances set the typical one (a sample bounds
#: the cost on large sets).
TYPICAL_SAMPLE = 2000
#: An outlier lies beyond Q3 + this many interquartile ranges of the scores (Tukey's "far out").
OUTLIER_IQR = 3.0
#: Probabilities within this of each other count as equal (the given label wins a tie).
_TIE = 1e-6


# ----------------------------------------------------------------------------- the method


@dataclass(frozen=True)
class LabelIssues:
    """Confident learning's verdict on n files: which labels look wrong, and how sure."""

    thresholds: np.ndarray  # (k,) mean probability of each class among its own files
    joint: np.ndarray  # (k, k) calibrated confident joint: rows given label, columns true
    is_issue: np.ndarray  # (n,) bool
    self_confidence: np.ndarray  # (n,) probability of the given label
    suggested: np.ndarray  # (n,) the most probable class

    @property
    def ranked(self) -> np.ndarray:
        """Indices of the flagged files, the least self-confident first (ties: file order)."""
        flagged = np.flatnonzero(self.is_issue)
        return flagged[np.argsort(self.self_confidence[flagged], kind="stable")]


def confident_thresholds(labels: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Each class's mean probability among the files given that class (2, above any
    probability, for a class no file is given: nothing is confidently in it)."""
    k = proba.shape[1]
    means = [proba[labels == c, c].mean() if np.any(labels == c) else 2.0 for c in range(k)]
    return np.maximum(np.asarray(means, dtype=float), 2 * _TIE)


def confident_joint(labels: np.ndarray, proba: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Counts of (given label, true class) over files confidently in some class: the class
    reaching its threshold, or the most probable of several that do. Uncalibrated; each
    diagonal cell at least 1."""
    k = proba.shape[1]
    confident = proba >= thresholds - _TIE
    n_confident = confident.sum(axis=1)
    guess = np.where(n_confident > 1, proba.argmax(axis=1), confident.argmax(axis=1))
    counted = n_confident > 0
    # counted (true, given) and transposed, as cleanlab does: the memory layout orders the
    # calibration's float sums, whose last bit breaks its rounding ties
    by_true = np.zeros((k, k), dtype=np.int64)
    np.add.at(by_true, (guess[counted], labels[counted]), 1)
    joint = by_true.T
    np.fill_diagonal(joint, np.maximum(joint.diagonal(), 1))
    return joint


def calibrate_joint(joint: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Scale each row to its label's file count and the whole to the number of files, as
    whole counts that keep each row's total."""
    k = len(joint)
    counts = np.bincount(labels, minlength=k).astype(float)
    # in cleanlab's order of operations: rounding ties then fall the same way
    rows = (joint.T / np.maximum(joint.sum(axis=1), 1e-100) * counts).T
    scaled = rows / max(np.sum(rows), 1e-100) * counts.sum()
    return np.vstack([_round_keeping_sum(row) for row in scaled])


def _round_keeping_sum(values: np.ndarray) -> np.ndarray:
    """Whole numbers summing to the rounded sum of `values`: the cells furthest from their
    rounding take the difference."""
    values = np.asarray(values, dtype=float)
    out = values.round()
    target = round(float(values.sum()))
    while abs(out.sum() - target) > _TIE:
        step = 1 if target > out.sum() else -1
        n = min(int(abs(target - out.sum())), len(values))
        for i in np.argsort(values - out)[::-step][:n]:  # the largest remainders go up
            out[i] += step
    return out.astype(np.int64)


def _keep_one_per_class(joint: np.ndarray) -> np.ndarray:
    """(true class, given label) counts to prune, leaving each given label at least one
    file it keeps: a diagonal raised to 1 takes the difference from that label's others."""
    prune = joint.T.astype(float)
    diagonal = prune.diagonal().copy()
    raised = np.maximum(diagonal, 1)
    others = np.maximum(np.count_nonzero(prune, axis=0) - 1.0, 1.0)
    prune = np.maximum(prune - (raised - diagonal) / others, 0)
    np.fill_diagonal(prune, raised)
    return np.trunc(prune).astype(np.int64)  # a share of a file is not pruned


def find_label_issues(labels: Sequence[int] | np.ndarray, proba: np.ndarray) -> LabelIssues:
    """Confident learning on out-of-sample probabilities `proba` (n, k) of files given
    `labels` (n,): for each given label, as many files as the calibrated confident joint
    says belong to each other class, those with the widest margin for that class; never a
    file whose given label is the most probable class."""
    labels = np.asarray(labels, dtype=np.int64)
    proba = np.asarray(proba, dtype=float)
    if proba.ndim != 2 or len(proba) != len(labels):
        raise ValueError(f"expected (n, k) probabilities for {len(labels)} labels")
    thresholds = confident_thresholds(labels, proba)
    joint = calibrate_joint(confident_joint(labels, proba, thresholds), labels)
    prune = _keep_one_per_class(joint)
    is_issue = np.zeros(len(labels), dtype=bool)
    for given in range(proba.shape[1]):
        members = np.flatnonzero(labels == given)
        if len(members) <= 1:  # a class of one keeps its file
            continue
        for true in range(proba.shape[1]):
            n = int(prune[true, given])
            if true == given or n <= 0:
                continue
            margin = proba[members, true] - proba[members, given]
            is_issue[members[np.argsort(-margin, kind="stable")[:n]]] = True
    rows = np.arange(len(labels))
    self_confidence = proba[rows, labels]
    favoured = proba.copy()
    favoured[rows, labels] += _TIE
    agrees = favoured.argmax(axis=1) == labels
    return LabelIssues(thresholds, joint, is_issue & ~agrees, self_confidence, proba.argmax(axis=1))


def cross_fit_proba(
    embeddings: np.ndarray, labels: np.ndarray, *, folds: int = N_FOLDS, seed: int = 0
) -> np.ndarray:
    """(n, k) probabilities, each row from a logistic regression fitted on the other folds
    (stratified), on embeddings standardised by those folds alone."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels, dtype=np.int64)
    k = int(labels.max()) + 1
    proba = np.zeros((len(labels), k))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_rows, score_rows in splitter.split(embeddings, labels):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=LOGISTIC_C, max_iter=2000))
        with warnings.catch_warnings(record=True) as caught:
            # a fold that does not converge still ranks its files; say so, don't stop
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(embeddings[fit_rows], labels[fit_rows])
        for warning in caught:
            log.info("label audit: %s", warning.message)
        proba[np.ix_(score_rows, model.classes_)] = model.predict_proba(embeddings[score_rows])
    return proba


def outlier_scores(
    embeddings: np.ndarray, labels: np.ndarray, *, folds: int = N_FOLDS, seed: int = 0
) -> np.ndarray:
    """Each file's mean distance to its N_NEIGHBOURS nearest files of the other folds (in
    embeddings standardised by those folds), in multiples of the median such distance among
    those folds' own files: about 1 for a typical file, large for one unlike any other.
    Neighbours, not class centroids: a very broad smile is far from the happy centroid but
    close to other broad smiles; a quote card is close to nothing."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels, dtype=np.int64)
    scores = np.zeros(len(labels))
    rng = np.random.default_rng(seed)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_rows, score_rows in splitter.split(embeddings, labels):
        fit = embeddings[fit_rows]
        mean, scale = fit.mean(axis=0), fit.std(axis=0) + 1e-9
        fit_z = ((fit - mean) / scale).astype(np.float32)
        sample = rng.choice(len(fit_z), size=min(len(fit_z), TYPICAL_SAMPLE), replace=False)
        typical = float(np.median(_neighbour_distance(fit_z[sample], fit_z, skip_self=True)))
        score_z = ((embeddings[score_rows] - mean) / scale).astype(np.float32)
        scores[score_rows] = _neighbour_distance(score_z, fit_z) / (typical or 1.0)
    return scores


def _neighbour_distance(
    z: np.ndarray, reference: np.ndarray, *, skip_self: bool = False
) -> np.ndarray:
    """Each row's mean Euclidean distance to its N_NEIGHBOURS nearest rows of `reference`
    (its own zero distance left out with `skip_self`)."""
    return nearest_distances(z, reference, N_NEIGHBOURS, skip_self=skip_self).mean(axis=1)


def outlier_fence(scores: np.ndarray) -> float:
    """The score beyond which a file is an outlier: Q3 + OUTLIER_IQR x IQR."""
    if not len(scores):
        return np.inf
    q1, q3 = np.percentile(scores, [25, 75])
    return float(q3 + OUTLIER_IQR * (q3 - q1))


def usable_folds(labels: np.ndarray, n_classes: int, folds: int = N_FOLDS) -> int:
    """Folds the smallest class allows (each fold's fit must see every class): 0 when a
    class has fewer than 2 files, and nothing can be audited."""
    smallest = int(np.bincount(labels, minlength=n_classes).min()) if len(labels) else 0
    return min(folds, smallest) if smallest >= 2 else 0


# ----------------------------------------------------------------------------- a run's audit


@dataclass
class AuditResult:
    """The audit of one run: every scored file, the flagged ones ranked, the method's facts."""

    folder: Path
    labels: list[str]
    scored: pd.DataFrame  # one row per scored file: ISSUE_COLUMNS, then is_issue
    issues: pd.DataFrame  # the flagged rows, ranked (what label_issues.csv holds)
    folds: int
    why_not: str | None = None  # set when nothing could be audited
    proba: np.ndarray | None = None  # (n, k) the out-of-sample probabilities, scored's order
    outliers: pd.DataFrame | None = None  # files far from every class, the farthest first
    method: str = EMBEDDINGS_METHOD
    networks: dict[str, Any] | None = None  # run.json's record of the cross-fitted networks

    def record(self) -> dict[str, Any]:
        """run.json's `audit`: what label_issues.csv is and how it was made."""
        return {
            "file": LABEL_ISSUES_CSV,
            "n_scored": len(self.scored),
            "n_flagged": len(self.issues),
            "outliers": {
                "file": OUTLIERS_CSV,
                "n_flagged": 0 if self.outliers is None else len(self.outliers),
                "fence": f"Q3 + {OUTLIER_IQR} x IQR of the mean distances to the "
                f"{N_NEIGHBOURS} nearest files of the other folds",
            },
            "folds": self.folds,
            "method": self.method,
            **({"networks": self.networks} if self.networks else {}),
            **({"skipped": self.why_not} if self.why_not else {}),
        }


def audit_decoded(
    run: Run,
    manifest: pd.DataFrame,
    decoded: Mapping[str, DecodedImages],
    *,
    seed: int = 0,
    folds: int = N_FOLDS,
    embeddings: Mapping[str, np.ndarray] | None = None,
    given_proba: OutOfSample | None = None,
) -> AuditResult:
    """Audit the decoded splits of a run's manifest; write label_issues.csv and the gallery
    into the run folder. `decoded[split]` holds that split's accepted rows, as decoded;
    `embeddings[split]` their embeddings where the caller has them (`embed` otherwise).
    `given_proba`: each file's out-of-sample probabilities from elsewhere (networks that
    never trained on it), instead of the regression on the embeddings."""
    frames, images, parts = [], [], []
    for split in SPLITS:
        part = decoded.get(split)
        if part is None or len(part) == 0:
            continue
        rows = manifest[manifest["split"] == split]
        kept = rows.iloc[part.kept] if part.kept is not None else rows
        root = str(manifest.attrs.get("root") or ".")
        roots = file_roots(kept, root)
        frames.append(
            pd.DataFrame(
                {
                    "path": part.paths,
                    "root": list(roots),
                    "split": split,
                    "label_id": part.labels.astype(np.int64),
                }
            )
        )
        images.append(part)
        parts.append(embed(run, part) if embeddings is None else embeddings[split])
    scored = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    labels = scored["label_id"].to_numpy() if len(scored) else np.zeros(0, dtype=np.int64)
    k = usable_folds(labels, len(run.labels), folds)
    features = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    why_not = None
    if k == 0:
        why_not = "a class has fewer than 2 decoded files: nothing to cross-fit"
    elif not np.isfinite(features).all():
        # a diverged training: the run's metrics still stand, its embeddings rank nothing
        why_not = "the network's embeddings hold NaN or infinity: nothing to cross-fit"
    if why_not is not None:
        result = AuditResult(
            run.folder, run.labels, scored, _issue_frame(scored.iloc[:0]), 0,
            why_not=why_not, outliers=pd.DataFrame(columns=list(OUTLIER_COLUMNS)),
        )  # fmt: skip
        write_label_issues(run.folder, result.issues)  # no earlier audit's findings stay
        atomic_write(run.folder / OUTLIERS_CSV, lambda fh: result.outliers.to_csv(fh, index=False))
        for png in (LABEL_ISSUES_PNG, OUTLIERS_PNG):
            (run.folder / png).unlink(missing_ok=True)
        return result
    if given_proba is None:
        proba = cross_fit_proba(features, labels, folds=k, seed=seed)
    else:
        proba = given_proba.lookup(scored["root"], scored["path"], len(run.labels))
    verdict = find_label_issues(labels, proba)
    names = np.asarray(run.labels, dtype=object)
    scored = scored.assign(
        given_label=names[labels],
        suggested_label=names[verdict.suggested],
        score=verdict.self_confidence.round(6),
        is_issue=verdict.is_issue,
    )
    issues = _issue_frame(scored.iloc[verdict.ranked])
    write_label_issues(run.folder, issues)
    _draw(
        run.folder / LABEL_ISSUES_PNG,
        issues,
        verdict.ranked,
        images,
        f"label audit: the most suspect labels ({LABEL_ISSUES_CSV} has all {len(issues)})",
    )
    distance = outlier_scores(features, labels, folds=k, seed=seed)
    far = np.flatnonzero(distance > outlier_fence(distance))
    far = far[np.argsort(-distance[far], kind="stable")]
    outliers = scored.assign(score=distance.round(3)).iloc[far]
    outliers = outliers.loc[:, list(OUTLIER_COLUMNS)].reset_index(drop=True)
    atomic_write(run.folder / OUTLIERS_CSV, lambda fh: outliers.to_csv(fh, index=False))
    _draw(
        run.folder / OUTLIERS_PNG,
        outliers,
        far,
        images,
        f"outliers: files far from every class ({OUTLIERS_CSV} has all {len(outliers)})",
    )
    scored = scored.drop(columns="label_id").assign(outlier_score=distance.round(3))
    folds_used = k if given_proba is None else given_proba.folds
    return AuditResult(
        run.folder, run.labels, scored, issues, folds_used, proba=proba, outliers=outliers,
        method=EMBEDDINGS_METHOD if given_proba is None else NETWORKS_METHOD,
        networks=None if given_proba is None else given_proba.record,
    )  # fmt: skip


@dataclass(frozen=True)
class OutOfSample:
    """Probabilities made elsewhere, keyed by (real root, path): `folds` models, each scoring
    the files it never trained on; `record` says in run.json how they were made."""

    proba: Mapping[tuple[str, str], np.ndarray]
    folds: int
    record: dict[str, Any]

    def lookup(self, roots: Sequence[str], paths: Sequence[str], n_classes: int) -> np.ndarray:
        """(n, n_classes) probabilities of these files; RecordError where one was not scored."""
        out = np.zeros((len(paths), n_classes))
        for i, key in enumerate(zip(map(str, roots), map(str, paths), strict=True)):
            found = self.proba.get(key)
            if found is None or len(found) != n_classes:
                raise RecordError(
                    Path(key[0]) / key[1], "audit", "no cross-fitted network scored this file"
                )
            out[i] = found
        return out


def file_roots(rows: pd.DataFrame, default_root: str) -> list[str]:
    """The real path of the data folder each manifest row's path is relative to (its `root`
    column, else the manifest's root): label_issues.csv means the same from any folder."""
    roots = rows["root"].astype(str) if "root" in rows.columns else [default_root] * len(rows)
    return _reals(roots)


def file_keys(rows: pd.DataFrame, default_root: str | None = None) -> list[tuple[str, str]]:
    """(real root, path) of each manifest row: how label_issues.csv, `--exclude` and the
    networks' audit name a file. `default_root`: the manifest's root (its attrs' otherwise)."""
    root = default_root if default_root is not None else str(rows.attrs.get("root") or ".")
    return list(zip(file_roots(rows, root), rows["path"].astype(str), strict=True))


def run_files(folder: Path, config: Mapping[str, Any]) -> tuple[pd.DataFrame, Any]:
    """The run's accepted files that have a split (its manifest's rows, attrs kept) and the
    profile it was validated with; RecordError when the manifest has no split."""
    from toolkit.profiles import load_profile

    manifest = read_manifest(folder)
    if "split" not in manifest.columns:
        raise RecordError(folder / "manifest.parquet", "split", "the run's manifest has no split")
    accepted = manifest[(manifest["status"] == ACCEPTED) & manifest["split"].notna()]
    accepted.attrs = dict(manifest.attrs)
    return accepted, load_profile(config.get("profile", {}).get("spec") or None)


def _issue_frame(rows: pd.DataFrame) -> pd.DataFrame:
    if rows.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in ISSUE_COLUMNS})
    return rows.loc[:, list(ISSUE_COLUMNS)].reset_index(drop=True)


def _draw(
    target: Path, rows: pd.DataFrame, order: np.ndarray, parts: list[DecodedImages], title: str
) -> None:
    """A gallery of the files at `order` (into the concatenated parts), as the model saw
    them, captioned from their `rows` (in the same order)."""
    from toolkit.report.training import MAX_SUSPECTS, plot_gallery

    offsets = np.cumsum([0] + [len(p) for p in parts])

    def image(i: int) -> np.ndarray:
        part = int(np.searchsorted(offsets, i, side="right") - 1)
        return np.asarray(parts[part].images[i - offsets[part]])

    captions = []
    for row in rows.head(MAX_SUSPECTS).itertuples():
        if "suggested_label" in rows.columns:
            lines = [f"filed {row.given_label}, looks {row.suggested_label}",
                     f"p(filed) {float(row.score):.2f}"]  # fmt: skip
        else:
            lines = [f"filed {row.given_label}", f"{float(row.score):.1f}x a typical distance"]
        captions.append([str(row.path), *lines])
    plot_gallery(captions, [image(int(i)) for i in order[:MAX_SUSPECTS]], target, title)


def write_label_issues(folder: Path, issues: pd.DataFrame) -> Path:
    """label_issues.csv, written whole or not at all."""
    target = Path(folder) / LABEL_ISSUES_CSV
    atomic_write(target, lambda fh: issues.to_csv(fh, index=False, columns=list(ISSUE_COLUMNS)))
    return target


def audit_run(
    folder: Path,
    *,
    jobs: int | None = None,
    progress: bool = False,
    folds: int = N_FOLDS,
    given_proba: OutOfSample | None = None,
) -> AuditResult:
    """`toolkit audit RUN`: decode the run's accepted files as training did, audit them,
    write label_issues.csv and the gallery, and record the audit in run.json.
    `given_proba`: out-of-sample probabilities from networks that never saw each file
    (`toolkit.crossfit`), instead of the regression on this run's embeddings."""
    folder = Path(folder)
    run = load_run(folder)
    accepted, profile = run_files(folder, run.config)
    limit = profile.scan_options().max_decode_pixels
    decoded = {
        split: decode_rows(
            accepted[accepted["split"] == split],
            run.spec,
            run.labels,
            root=Path(accepted.attrs.get("root") or "."),
            max_pixels=limit,
            jobs=jobs,
            progress=progress,
        )
        for split in SPLITS
    }
    seed = int(run.config.get("options", {}).get("seed", 0) or 0)
    result = audit_decoded(run, accepted, decoded, seed=seed, folds=folds, given_proba=given_proba)
    config = read_run_config(folder)
    config["audit"] = result.record()
    atomic_write_json(folder / RUN_JSON, config)
    return result


# ----------------------------------------------------------------------------- --exclude


@dataclass(frozen=True)
class Exclusion:
    """The files a label_issues.csv names, checked against the data being trained."""

    file: Path
    sha256: str
    keys: frozenset[tuple[str, str]]  # (real root, path)

    def apply(self, manifest: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
        """The manifest without the listed files, and run.json's `excluded` record."""
        listed = np.array([key in self.keys for key in file_keys(manifest)], dtype=bool)
        kept = manifest[~listed]
        kept.attrs = dict(manifest.attrs)
        return kept, {
            "file": str(self.file),
            "sha256": self.sha256,
            "n_listed": len(self.keys),
            "n_excluded": int(listed.sum()),
        }


def read_exclusion(path: Path, roots: Sequence[str]) -> Exclusion:
    """A label_issues.csv to train without, refused (UsageError, exit 2) when it is not one
    (its columns differ) or names a file outside the data folders being trained."""
    path = Path(path)
    try:
        data = read_regular(path)
    except OSError as exc:
        raise UsageError(f"--exclude {path}: cannot read it: {exc.strerror or exc}") from None
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, encoding="utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"--exclude {path}: not a {LABEL_ISSUES_CSV}: {exc}") from None
    if tuple(frame.columns) != ISSUE_COLUMNS:
        raise UsageError(
            f"--exclude {path}: not a {LABEL_ISSUES_CSV} (`toolkit audit` writes one): its "
            f"columns are {list(frame.columns)[:8]}, expected {list(ISSUE_COLUMNS)}"
        )
    real_roots = {_real(r) for r in roots}
    real: dict[str, str] = {}
    keys = set()
    for line, (rel, root) in enumerate(zip(frame["path"], frame["root"], strict=True), start=2):
        why = relative_problem(rel) or root_problem(root, must_exist=False)
        if why is None and root not in real:
            real[root] = _real(root)
        if why is None and real[root] not in real_roots:
            why = f"its root {root!r} is not one of the data folders trained on"
        if why is not None:
            raise UsageError(
                f"--exclude {path}: line {line} names a file outside the data folders "
                f"({rel!r:.80}: {why}); nothing trained"
            )
        keys.add((real[root], rel))
    return Exclusion(path, hashlib.sha256(data).hexdigest(), frozenset(keys))


def _reals(roots: Sequence[object]) -> list[str]:
    """Each root as its real path, resolved once per distinct root (a split has one or a few)."""
    real: dict[str, str] = {}
    for root in map(str, roots):
        if root not in real:
            real[root] = _real(root)
    return [real[str(root)] for root in roots]


def _real(root: str) -> str:
    return os.path.realpath(root)
