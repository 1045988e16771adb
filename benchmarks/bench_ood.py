"""The familiarity score on pictures from sources a run never saw: does it flag the answers
that are guesses?

For each trained leave-one-source-out run (benchmarks/loso.py; read only, nothing trained),
the run's own train and validation splits are embedded as the end of training embeds them;
each candidate score is fitted on them (fence: the distance 95% of validation pictures fall
under) and judged on the held-out source (less its copies of training files, as the fold is
scored) and on FER2013 test:

- the share flagged among pictures with a detected face and without one (`n_faces`);
- the accuracy on flagged and unflagged pictures;
- the AUROC of the score for "the model is wrong" (0.5: the score knows nothing of errors).

Candidates: the kNN distance (Sun et al. 2022) at several K, the score as `toolkit train`
fits it (`shipped`: toolkit.familiarity, its own fence), class-conditional Mahalanobis
distance with a shared covariance (Lee et al. 2018), and the model's own doubt (1 - the
calibrated probability of its answer) as the baseline any score must add to. The `shipped`
figures are also summarised over the runs: the mean and the worst fold. Embeddings are
cached in --cache, so a second run is seconds. The folds' folder is only read: its
manifests must exist (benchmarks/loso.py writes them).

    python -m benchmarks.bench_ood --loso runs/loso --cache /tmp/ood/cache --json ood.json \\
        --run renotte-default-e45-s0 --run mratashnejad-default-e45-s0 \\
        --run pranjalameta-default-e45-s0 --run 6lvcknight-default-e45-s0 \\
        --run muxspace-default-e45-s0
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.loso import run_rows, runs_parser
from toolkit.familiarity import (
    FAMILIAR_QUANTILE,
    fit_familiarity,
    kth_neighbour_distance,
    normalise,
)

#: The K of the kNN candidates.
KS = (1, 5, 10, 50)
#: An answer given with at least this probability is a confident one.
CONFIDENT = 0.9
#: The method `toolkit train` ships (toolkit.familiarity, as fitted there).
SHIPPED = "shipped"
#: The figures summarised over the folds, with how the worst fold is picked.
SUMMARISED = {
    "flagged_share_face": max,
    "flagged_share_no_face": min,
    "accuracy_flagged": max,
    "accuracy_unflagged": min,
    "auroc_wrong": min,
}
#: Ridge added to the shared covariance's diagonal, relative to its mean variance.
RIDGE = 1e-3


def mahalanobis_scorer(train: np.ndarray, labels: np.ndarray) -> Callable[[np.ndarray], Any]:
    """Lee et al. 2018: the smallest Mahalanobis distance to a class mean, one covariance
    shared by the classes (the embeddings as they are, not normalised)."""
    classes = np.unique(labels)
    means = np.stack([train[labels == c].mean(axis=0) for c in classes])
    centred = train - means[np.searchsorted(classes, labels)]
    cov = centred.T @ centred / len(train)
    cov += RIDGE * np.trace(cov) / len(cov) * np.eye(len(cov))
    precision = np.linalg.inv(cov)

    def score(x: np.ndarray) -> np.ndarray:
        d = [np.einsum("ij,jk,ik->i", x - m, precision, x - m) for m in means]
        return np.min(d, axis=0)

    return score


def knn_scorer(train: np.ndarray, k: int) -> Callable[[np.ndarray], Any]:
    """Sun et al. 2022: the distance to the k-th nearest normalised training embedding."""
    reference = normalise(train)
    return lambda x: kth_neighbour_distance(normalise(x), reference, k)


def judge(
    score: np.ndarray, fence: float, right: np.ndarray, has_face: np.ndarray, sure: np.ndarray
) -> dict[str, Any]:
    """The figures of one score on one scored set; `sure`: the answers given with a
    probability of at least CONFIDENT (the errors the model's own doubt cannot flag)."""
    from sklearn.metrics import roc_auc_score

    flagged = score > fence
    sure_wrong = sure & ~right

    def share(mask: np.ndarray) -> float | None:
        return float(flagged[mask].mean()) if mask.any() else None

    def accuracy(mask: np.ndarray) -> float | None:
        return float(right[mask].mean()) if mask.any() else None

    wrong = ~right
    return {
        "n": len(score),
        "n_flagged": int(flagged.sum()),
        "flagged_share": float(flagged.mean()),
        "flagged_share_face": share(has_face),
        "flagged_share_no_face": share(~has_face),
        "accuracy_flagged": accuracy(flagged),
        "accuracy_unflagged": accuracy(~flagged),
        "auroc_wrong": float(roc_auc_score(wrong, score)) if 0 < wrong.sum() < len(wrong) else None,
        "n_confident_errors": int(sure_wrong.sum()),
        "confident_errors_flagged": share(sure_wrong),
    }


def _embedded(
    run: Any, rows: pd.DataFrame, cache: Path, jobs: int | None, *, proba: bool = True
) -> dict[str, Any]:
    """Embeddings, calibrated probabilities (unless not `proba`), labels and has-face of
    `rows`, cached."""
    from toolkit.pipeline import decode_rows
    from toolkit.scores import embed, predict_proba

    if cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    known = rows[rows["label"].isin(run.labels)]
    decoded = decode_rows(known, run.spec, run.labels, jobs=jobs)
    faces = known["n_faces"].fillna(0).to_numpy() > 0
    found = {
        "embeddings": embed(run, decoded),
        "proba": predict_proba(run, decoded) if proba else np.zeros(0),
        "labels": decoded.labels.astype(np.int64),
        "has_face": faces[decoded.kept] if decoded.kept is not None else faces,
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **found)
    return found


def measure(loso: Path, name: str, cache: Path, jobs: int | None = None) -> dict[str, Any]:
    """Every candidate's figures on one leave-one-source-out run."""
    from toolkit.runs import load_run
    from toolkit.scores import predicted_classes, predicted_ids

    run = load_run(loso / name)
    accepted, unseen, fer = run_rows(loso, name)
    started = time.perf_counter()
    parts = {}
    for split in ("train", "validation", "test"):
        rows = accepted[accepted["split"] == split]
        target = cache / f"{name}-{split}.npz"
        parts[split] = _embedded(run, rows, target, jobs, proba=split != "train")
    parts["source"] = _embedded(run, unseen, cache / f"{name}-source.npz", jobs)
    parts["fer_test"] = _embedded(run, fer, cache / f"{name}-fer.npz", jobs)
    embed_seconds = time.perf_counter() - started

    train = parts["train"]
    scorers: dict[str, Callable[[np.ndarray], Any]] = {
        f"knn_k{k}": knn_scorer(train["embeddings"], k) for k in KS
    }
    scorers["mahalanobis"] = mahalanobis_scorer(train["embeddings"], train["labels"])
    # what `toolkit train` fits and `predict` applies: novelty in multiples of its own fence
    shipped = fit_familiarity(train["embeddings"], parts["validation"]["embeddings"])
    held_out = name.split("-")[0]
    out: dict[str, Any] = {"run": name, "held_out": held_out, "embed_seconds": embed_seconds}
    for method, scorer in [*scorers.items(), (SHIPPED, shipped.novelty), ("doubt", None)]:
        started = time.perf_counter()

        def score(part: dict[str, Any], scorer: Any = scorer) -> np.ndarray:
            if scorer is None:  # the model's own doubt: 1 - the probability of its answer
                return 1 - predicted_classes(part["proba"])[1]
            return np.asarray(scorer(part["embeddings"]))

        fence = (
            1.0
            if method == SHIPPED
            else float(np.quantile(score(parts["validation"]), FAMILIAR_QUANTILE))
        )
        found = {}
        for key in ("test", "source", "fer_test"):
            part = parts[key]
            right = predicted_ids(part["proba"]) == part["labels"]
            sure = predicted_classes(part["proba"])[1] >= CONFIDENT
            found[key] = judge(score(part), fence, right, part["has_face"].astype(bool), sure)
        found["seconds"] = time.perf_counter() - started
        out[method] = found
    return out


def table(results: Sequence[dict[str, Any]]) -> list[str]:
    """One line per run, set and method."""
    lines = [
        "fold | set | method | flagged | face / no face | acc flagged / unflagged | AUROC wrong"
        " | confident errors flagged"
    ]

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.1%}"

    for result in results:
        for method, found in result.items():
            if not isinstance(found, dict):
                continue
            for key in ("test", "source", "fer_test"):
                f = found[key]
                auroc = "n/a" if f["auroc_wrong"] is None else f"{f['auroc_wrong']:.3f}"
                lines.append(
                    f"{result['held_out']} | {key} | {method} | {f['n_flagged']}/{f['n']} "
                    f"({pct(f['flagged_share'])}) | {pct(f['flagged_share_face'])} / "
                    f"{pct(f['flagged_share_no_face'])} | {pct(f['accuracy_flagged'])} / "
                    f"{pct(f['accuracy_unflagged'])} | {auroc} | "
                    f"{pct(f['confident_errors_flagged'])} of {f['n_confident_errors']}"
                )
    return lines


def summary(results: Sequence[dict[str, Any]], method: str = SHIPPED) -> dict[str, Any]:
    """Each SUMMARISED figure of `method` on each scored set: the mean over the folds and the
    worst fold's (the highest flagged share of faces or accuracy of flagged pictures, the
    lowest of the others)."""
    out: dict[str, Any] = {}
    for key in ("source", "fer_test"):
        found = {}
        for figure, worst in SUMMARISED.items():
            values = [r[method][key][figure] for r in results if r[method][key][figure] is not None]
            found[figure] = {
                "mean": float(np.mean(values)) if values else None,
                "worst": worst(values) if values else None,
            }
        out[key] = found
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Measure each --run, print the table, write --json."""
    parser = runs_parser(__doc__)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/bench-ood-cache"))
    parser.add_argument("--jobs", type=int)
    args = parser.parse_args(argv)
    results = [measure(args.loso, name, args.cache, args.jobs) for name in args.run]
    print("\n".join(table(results)))
    over = summary(results)
    for key, found in over.items():
        print(f"{SHIPPED}, {key}, over {len(results)} fold(s): " + "; ".join(
            f"{figure} mean {f['mean']:.3f} worst {f['worst']:.3f}"
            for figure, f in found.items() if f["mean"] is not None
        ))  # fmt: skip
    if args.json:
        found = {"folds": results, "summary": over}
        args.json.write_text(json.dumps(found, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
