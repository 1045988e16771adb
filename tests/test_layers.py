"""The default model's own Keras layers: the fused batch normalisation computes what Keras'
layer computes, and the one-pass augmentation draws what its ranges say."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from toolkit.layers import FusedBatchNormalization, RandomAugment


def _pair(momentum: float = 0.9, **kwargs) -> tuple[keras.layers.Layer, keras.layers.Layer]:
    """Keras' BatchNormalization and ours, built with the same non-trivial weights."""
    theirs = keras.layers.BatchNormalization(momentum=momentum, **kwargs)
    ours = FusedBatchNormalization(momentum=momentum, **kwargs)
    for layer in (theirs, ours):
        layer.build((None, 5, 5, 4))
        layer.set_weights(
            [
                w
                for w, present in (
                    (np.arange(1, 5, dtype="float32"), layer.scale),
                    (np.linspace(-1, 1, 4, dtype="float32"), layer.center),
                    (np.full(4, 0.5, "float32"), True),
                    (np.full(4, 2.0, "float32"), True),
                )
                if present
            ]
        )
    return theirs, ours


@pytest.fixture
def batch() -> tf.Tensor:
    return tf.constant(np.random.default_rng(0).normal(2.0, 3.0, (8, 5, 5, 4)).astype("float32"))


@pytest.mark.parametrize("center_scale", [True, False])
def test_fused_batch_normalization_trains_as_keras_does(batch, center_scale: bool) -> None:
    theirs, ours = _pair(center=center_scale, scale=center_scale)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(batch)
        y_theirs, y_ours = theirs(batch, training=True), ours(batch, training=True)
        loss_theirs, loss_ours = tf.reduce_sum(y_theirs**3), tf.reduce_sum(y_ours**3)
    np.testing.assert_allclose(y_ours, y_theirs, atol=1e-5)
    grad_theirs = tape.gradient(loss_theirs, batch)
    np.testing.assert_allclose(tape.gradient(loss_ours, batch), grad_theirs, rtol=1e-4, atol=1e-3)
    for theirs_w, ours_w in zip(theirs.weights, ours.weights, strict=True):
        np.testing.assert_allclose(ours_w.numpy(), theirs_w.numpy(), rtol=1e-6, atol=1e-6)
    # the moving statistics moved (by 1 - momentum of the way to the biased batch moments)
    batch_var = np.var(batch.numpy(), axis=(0, 1, 2))
    np.testing.assert_allclose(ours.moving_variance.numpy(), 0.9 * 2.0 + 0.1 * batch_var, rtol=1e-5)


def test_fused_batch_normalization_infers_with_the_moving_statistics(batch) -> None:
    theirs, ours = _pair()
    inferred = ours(batch, training=False)
    np.testing.assert_allclose(inferred, theirs(batch, training=False), atol=1e-5)
    expected = (batch.numpy() - 0.5) / np.sqrt(2.0 + 1e-3) * np.arange(1, 5) + np.linspace(-1, 1, 4)
    np.testing.assert_allclose(ours(batch), expected, rtol=1e-5, atol=1e-5)
    # a frozen layer keeps its statistics, even called in training
    ours.trainable = False
    ours(batch, training=True)
    np.testing.assert_allclose(ours.moving_mean.numpy(), 0.5)


def test_fused_batch_normalization_falls_back_where_the_kernel_does_not_apply() -> None:
    flat = tf.constant(np.random.default_rng(1).normal(size=(6, 3)).astype("float32"))
    theirs = keras.layers.BatchNormalization()
    ours = FusedBatchNormalization()
    np.testing.assert_allclose(ours(flat, training=True), theirs(flat, training=True), atol=1e-5)
    assert not FusedBatchNormalization(epsilon=1e-6)._fusable(tf.zeros((1, 2, 2, 1)), None)
    assert not ours._fusable(tf.zeros((1, 2, 2, 1)), tf.ones((1, 2, 2)))
    assert FusedBatchNormalization()._fusable(tf.zeros((1, 2, 2, 1)), None)


def _augment(**ranges) -> RandomAugment:
    nothing = dict(flip=False, rotation=0.0, zoom=0.0, translation=0.0, contrast=0.0)
    return RandomAugment(**{**nothing, "brightness": 0.0, **ranges}, seed=3)


def _images(n: int = 16, side: int = 24) -> np.ndarray:
    rng = np.random.default_rng(2)
    return rng.uniform(0.2, 0.8, (n, side, side, 3)).astype("float32")


def test_augment_is_the_identity_outside_training_and_with_empty_ranges() -> None:
    images = _images()
    np.testing.assert_array_equal(RandomAugment(seed=0)(images, training=False), images)
    np.testing.assert_array_equal(RandomAugment(seed=0)(images), images)  # not said: inference
    np.testing.assert_allclose(_augment()(images, training=True), images, atol=1e-5)


def test_augment_mirrors_about_half_the_images() -> None:
    images = _images(64)
    out = _augment(flip=True)(images, training=True).numpy()
    same = np.isclose(out, images, atol=1e-5).all(axis=(1, 2, 3))
    mirrored = np.isclose(out, images[:, :, ::-1], atol=1e-5).all(axis=(1, 2, 3))
    assert (same | mirrored).all()
    assert 16 <= mirrored.sum() <= 48


def _points(layer: RandomAugment, u: list[float], side: int = 48) -> np.ndarray:
    """Where the output's corners and centre read the input, for one draw u (7 values)."""
    t = layer.transforms(tf.constant([u], "float32"), float(side), float(side)).numpy()[0]
    corners = np.array([[0, 0], [side - 1, 0], [0, side - 1], [(side - 1) / 2] * 2], "float32")
    x, y = corners[:, 0], corners[:, 1]
    return np.stack([t[0] * x + t[1] * y + t[2], t[3] * x + t[4] * y + t[5]], axis=1)


def test_augment_geometry_spans_its_ranges_about_the_centre() -> None:
    layer = RandomAugment(seed=0)  # rotation 0.06 turn, zoom 0.1, translation 0.06
    centre = np.array([23.5, 23.5])
    # no draw: every point reads itself
    identity = _points(layer, [1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(identity[:, :2], _points(_augment(), [0] * 7)[:, :2], atol=1e-4)
    np.testing.assert_allclose(identity[3], centre, atol=1e-4)
    # mirror: x flips about the centre
    np.testing.assert_allclose(_points(layer, [-1, 0, 0, 0, 0, 0, 0])[0], [47, 0], atol=1e-4)
    # zoom 1.1 at the top of the range: the corner reads 10% further out, the centre stays
    zoomed = _points(layer, [1, 0, 1, 0, 0, 0, 0])
    np.testing.assert_allclose(zoomed[0], centre - 1.1 * centre, atol=1e-4)
    np.testing.assert_allclose(zoomed[3], centre, atol=1e-4)
    # the full rotation: 0.06 of a turn, 21.6 degrees, about the centre
    turned = _points(layer, [1, 1, 0, 0, 0, 0, 0])[0] - centre
    angle = math.degrees(math.atan2(turned[1], turned[0]) - math.atan2(-23.5, -23.5))
    assert angle == pytest.approx(21.6, abs=1e-3)
    # the full shift: 6% of the side, both ways
    np.testing.assert_allclose(
        _points(layer, [1, 0, 0, -1, 1, 0, 0])[3], centre + np.array([0.06, -0.06]) * 48, atol=1e-4
    )


def test_augment_changes_contrast_and_brightness_within_range() -> None:
    images = _images(64)
    brighter = _augment(brightness=0.15)(images, training=True).numpy() - images
    offsets = brighter.mean(axis=(1, 2, 3))
    flat = offsets[:, None, None, None] * np.ones_like(images)
    np.testing.assert_allclose(brighter, flat, atol=1e-5)  # one offset per image
    assert offsets.min() >= -0.15 - 1e-6 and offsets.max() <= 0.15 + 1e-6
    assert offsets.max() - offsets.min() > 0.15  # spread over the range, not one value
    contrasted = _augment(contrast=0.25)(images, training=True).numpy()
    spread = contrasted.std(axis=(1, 2)) / images.std(axis=(1, 2))
    assert spread.min() >= 0.75 - 1e-4 and spread.max() <= 1.25 + 1e-4
    assert spread.max() - spread.min() > 0.25
    np.testing.assert_allclose(contrasted.mean(axis=(1, 2)), images.mean(axis=(1, 2)), atol=1e-5)
    wild = _augment(contrast=5.0, brightness=2.0)(images, training=True).numpy()
    assert wild.min() >= 0.0 and wild.max() <= 1.0


def test_augment_erases_one_rectangle_in_the_share_of_images_asked() -> None:
    images = np.full((256, 24, 24, 3), 0.5, "float32")
    assert (_augment(erase=0.0)(images, training=True).numpy() == 0.5).all()
    out = _augment(erase=0.5, erase_area=(0.1, 0.2))(images, training=True).numpy()
    changed = (out != 0.5).any(axis=3)  # noise hits exactly 0.5 with probability ~0
    erased = changed.any(axis=(1, 2))
    assert 96 <= erased.sum() <= 160  # about half, not none or all
    for mask in changed[erased]:
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
        assert mask.sum() == box  # one filled rectangle
        assert box <= 0.2 * 24 * 24 + 2 * 24  # its area at most the range's top (+ a pixel edge)
    inside = changed[erased].sum(axis=(1, 2)) / (24 * 24)
    assert np.median(inside) > 0.05  # not clipped away to slivers
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert _augment(erase=0.5).get_config()["erase"] == 0.5


def test_augment_draws_differ_per_image_and_repeat_per_seed() -> None:
    images = np.repeat(_images(1), 8, axis=0)
    first = RandomAugment(seed=5)(images, training=True).numpy()
    again = RandomAugment(seed=5)(images, training=True).numpy()
    np.testing.assert_array_equal(first, again)
    assert len({first[i].tobytes() for i in range(8)}) == 8


def test_a_model_of_both_layers_saves_and_loads_in_safe_mode(tmp_path: Path) -> None:
    inputs = keras.Input((12, 12, 3))
    x = RandomAugment(seed=1, zoom=0.2)(inputs)
    x = keras.layers.Conv2D(4, 3)(x)
    x = FusedBatchNormalization(momentum=0.8)(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, compile=False, safe_mode=True)
    images = _images(4, 12)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0))
    assert loaded.layers[1].get_config()["zoom"] == 0.2
    assert loaded.layers[3].momentum == 0.8


def test_the_default_model_trains_through_the_fused_kernels() -> None:
    """Guards the speed-up: every batch norm of the built model is one FusedBatchNormV3 and
    its augmentation one resampling (a silent fallback to Keras' ops would only be slow)."""
    from toolkit.models import build_cnn

    model = build_cnn((48, 48, 3))
    step = tf.function(lambda x: model(x, training=True))
    graph = step.get_concrete_function(tf.TensorSpec((None, 48, 48, 3), tf.float32)).graph
    kinds = [op.type for op in graph.get_operations()]
    n_norms = sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert n_norms == 10
    assert kinds.count("FusedBatchNormV3") == n_norms
    assert kinds.count("ImageProjectiveTransformV3") == 1


# ------------------------------------------------------------------ colour (issue 28, item 3)

#: ITU-R BT.601 luma, the Y of YIQ: what the colour options keep.
LUMA = np.array([0.299, 0.587, 0.114], "float32")
COLOUR_OFF = dict(saturation=0.0, hue=0.0, grayscale=0.0, posterize=0.0)


def _apply(matrices: tf.Tensor, pixels: np.ndarray) -> np.ndarray:
    """Each image's pixels (batch, ..., 3) through its 3x3 colour matrix, clipped as the layer
    clips."""
    return np.clip(np.einsum("b...c,bdc->b...d", pixels, matrices.numpy()), 0.0, 1.0)


def _draws(*rows: list[float]) -> tf.Tensor:
    """Colour draws in [0, 1], columns: saturation, hue, grayscale, posterize, levels."""
    return tf.constant([r + [0.5] * (5 - len(r)) for r in rows], "float32")


def test_augment_with_colour_off_draws_exactly_what_it_drew_before_the_colour_options() -> None:
    """A seeded run and a saved model's augmentation repeat bit for bit: the colour options at
    0 add no random draw. The figures were recorded from the layer before they existed."""
    images = np.random.default_rng(11).uniform(0.0, 1.0, (4, 8, 8, 3)).astype("float32")
    before = RandomAugment(seed=7, erase=0.5)(images, training=True).numpy()
    off = RandomAugment(seed=7, erase=0.5, **COLOUR_OFF)(images, training=True).numpy()
    np.testing.assert_array_equal(off, before)
    recorded_means = [
        [0.43040088, 0.46471754, 0.47258422],
        [0.54244781, 0.58836836, 0.57012236],
        [0.70749938, 0.61886740, 0.62844646],
        [0.40961301, 0.45400250, 0.45138267],
    ]
    recorded_row = [
        [0.25204313, 0.12881337, 0.40877908],
        [0.65020216, 0.41445628, 0.71977335],
        [0.38337404, 0.48739624, 0.37226388],
        [0.59450507, 0.70827824, 0.24457069],
    ]
    np.testing.assert_allclose(off.mean(axis=(1, 2)), recorded_means, atol=1e-6)
    np.testing.assert_allclose(off[0, 3, :4], recorded_row, atol=1e-6)


def test_half_a_turn_of_hue_turns_pure_red_cyan() -> None:
    red = np.zeros((1, 2, 2, 3), "float32")
    red[..., 0] = 1.0
    layer = _augment(hue=0.5)
    turned = _apply(layer.colour_matrices(_draws([0.5, 1.0, 1.0])), red)  # the top of the range
    r, g, b = turned[0, 0, 0]
    assert r < 0.05 and g > 0.5 and b > 0.5 and abs(g - b) < 0.05
    none = _apply(layer.colour_matrices(_draws([0.5, 0.5, 1.0])), red)  # the middle: no turn
    np.testing.assert_allclose(none, red, atol=1e-5)


@pytest.mark.parametrize(
    ("ranges", "draw"),
    [
        (dict(saturation=1.0), [0.0, 0.5, 1.0]),
        (dict(grayscale=1.0), [0.5, 0.5, 0.0]),
        (dict(grayscale=1.0, saturation=0.5, hue=0.1), [0.9, 0.2, 0.3]),
    ],
    ids=[
        "saturation drawn at 0 leaves grey of the same luma",
        "an image drawn for grayscale loses its chroma, keeping its luma",
        "grayscale wins over any saturation and hue drawn with it",
    ],
)
def test_dropping_chroma_gives_grey_of_the_same_luma(ranges: dict, draw: list[float]) -> None:
    images = _images(2, 6)
    grey = _apply(_augment(**ranges).colour_matrices(_draws(draw, draw)), images)
    np.testing.assert_allclose(grey[..., 0], grey[..., 1], atol=1e-5)
    np.testing.assert_allclose(grey[..., 1], grey[..., 2], atol=1e-5)
    np.testing.assert_allclose(grey[..., 0], images @ LUMA, atol=1e-5)


def test_saturation_scales_chroma_within_its_range() -> None:
    # pixels in [0.35, 0.65]: chroma at 1.5 times stays inside [0, 1], so nothing clips
    images = np.random.default_rng(5).uniform(0.35, 0.65, (64, 8, 8, 3)).astype("float32")
    out = _augment(saturation=0.5)(images, training=True).numpy()
    grey_in, grey_out = images @ LUMA, out @ LUMA
    np.testing.assert_allclose(grey_out, grey_in, atol=1e-5)
    chroma = np.abs(out - grey_out[..., None]).sum(axis=(1, 2, 3))
    factor = chroma / np.abs(images - grey_in[..., None]).sum(axis=(1, 2, 3))
    assert factor.min() >= 0.5 - 1e-4 and factor.max() <= 1.5 + 1e-4
    assert factor.max() - factor.min() > 0.5  # spread over the range, not one value


def test_grayscale_drops_the_chroma_of_the_share_of_images_asked() -> None:
    out = _augment(grayscale=0.25)(_images(256), training=True).numpy()
    grey = np.isclose(out, out[..., :1], atol=1e-5).all(axis=(1, 2, 3))
    assert 40 <= grey.sum() <= 88  # about a quarter
    assert (_augment(grayscale=1.0)(_images(8), training=True).numpy().std(axis=3) < 1e-5).all()


def test_posterize_quantises_each_image_to_3_to_6_levels_in_the_share_asked() -> None:
    images = _images(256)
    out = _augment(posterize=0.25)(images, training=True).numpy()
    levels = []
    for before, after in zip(images, out, strict=True):
        if np.allclose(before, after, atol=1e-5):
            continue
        fits = [n for n in range(3, 7) if np.allclose(after * (n - 1), np.round(after * (n - 1)))]
        assert fits, "a posterized image off every grid of 3-6 levels"
        levels.append(fits[0])
    assert 40 <= len(levels) <= 88  # about a quarter
    assert set(levels) == {3, 4, 5, 6}


def test_colour_options_leave_grey_inputs_as_they_were() -> None:
    grey = _images(8)[..., :1]
    plain = RandomAugment(seed=4)(grey, training=True).numpy()
    coloured = RandomAugment(seed=4, saturation=0.5, hue=0.1, grayscale=0.5)(grey, training=True)
    np.testing.assert_array_equal(coloured.numpy(), plain)


@settings(max_examples=40, deadline=None)
@given(
    draws=hnp.arrays(np.float32, (3, 5), elements=st.floats(0.0, 1.0, width=32)),
    saturation=st.floats(0.0, 1.0),
    hue=st.floats(0.0, 0.5),
    grayscale=st.floats(0.0, 1.0),
)
def test_property_colour_matrices_scale_and_turn_chroma_as_drawn(
    draws, saturation, hue, grayscale
) -> None:
    matrices = _augment(saturation=saturation, hue=hue, grayscale=grayscale).colour_matrices(
        tf.constant(draws)
    )
    m = matrices.numpy().astype("float64")
    np.testing.assert_allclose(LUMA @ m, np.broadcast_to(LUMA, (3, 3)), atol=1e-5)  # luma kept
    np.testing.assert_allclose(m.sum(axis=2), 1.0, atol=1e-5)  # grey stays that grey
    # in YIQ, each matrix scales the chroma plane (I, Q) by the saturation drawn (0 if drawn
    # grey) and turns it by the hue drawn, a fraction of a full turn either way
    yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    d = draws.astype("float64")
    kept = draws[:, 2] >= np.float32(grayscale)  # compared in float32, as the layer does
    scale = (1.0 + (2.0 * d[:, 0] - 1.0) * saturation) * kept
    angle = (2.0 * d[:, 1] - 1.0) * hue * 2.0 * math.pi
    a, b = scale * np.cos(angle), scale * np.sin(angle)
    one, zero = np.ones_like(a), np.zeros_like(a)
    expected = np.stack([[one, zero, zero], [zero, a, -b], [zero, b, a]]).transpose(2, 0, 1)
    np.testing.assert_allclose(yiq @ m @ np.linalg.inv(yiq), expected, atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    pixels=hnp.arrays(np.float32, (4, 5, 5, 3), elements=st.floats(0.0, 1.0, width=32)),
    saturation=st.floats(0.0, 2.0),
    hue=st.floats(0.0, 0.5),
    grayscale=st.floats(0.0, 1.0),
    posterize=st.floats(0.0, 1.0),
)
def test_property_augmented_pixels_stay_in_0_1(
    seed, pixels, saturation, hue, grayscale, posterize
) -> None:
    layer = RandomAugment(
        seed=seed, saturation=saturation, hue=hue, grayscale=grayscale, posterize=posterize
    )
    out = layer(pixels, training=True).numpy()
    assert out.shape == pixels.shape
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0


def test_colour_options_travel_in_the_config_and_a_saved_model(tmp_path: Path) -> None:
    options = dict(saturation=0.5, hue=0.08, grayscale=0.2, posterize=0.3)
    inputs = keras.Input((12, 12, 3))
    x = RandomAugment(seed=1, **options)(inputs)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, compile=False, safe_mode=True)
    config = loaded.layers[1].get_config()
    assert {k: config[k] for k in options} == options
    # a model saved before the colour options existed names none of them: it loads without
    old = {k: v for k, v in RandomAugment(seed=1).get_config().items() if k not in options}
    assert {k: RandomAugment.from_config(old).get_config()[k] for k in options} == COLOUR_OFF


def test_colour_is_one_matrix_product_and_absent_when_off() -> None:
    """Guards the layer's cost: with the colour options off the training graph holds no
    colour op at all; with them on, the pixels go through one per-image matrix product."""

    def kinds(**options) -> list[str]:
        layer = RandomAugment(seed=0, **options)
        step = tf.function(lambda x: layer(x, training=True))
        spec = tf.TensorSpec((None, 12, 12, 3), tf.float32)
        return [op.type for op in step.get_concrete_function(spec).graph.get_operations()]

    off, on = kinds(), kinds(saturation=0.5, hue=0.08, grayscale=0.2)
    pixel_products = {"Einsum", "BatchMatMulV2", "BatchMatMulV3"}
    assert not pixel_products & set(off)
    assert len(off) < len(on)
    assert sum(k == "Einsum" for k in on) == 1
