"""Two Keras layers of the `default` model, each doing in one or two TensorFlow kernels what
Keras' own layers do in dozens: on a 2-core CPU a training step of that small network was
mostly bookkeeping between tiny ops (docs/model-quality.md, "Faster steps").

- `FusedBatchNormalization`: Keras 3's BatchNormalization, same weights and arithmetic,
  computed by TensorFlow's fused kernel (FusedBatchNormV3, oneDNN on x86). Keras 3 builds
  batch normalisation from ~10 separate ops (moments, then the affine map) and their
  gradients; that was 45% of the step's CPU time.
- `RandomAugment`: the default model's augmentation (mirror, rotation, zoom, translation,
  contrast, brightness; random erasing if asked) as one affine resampling of the batch
  and one pointwise map, where the six Keras layers resample three times. Colour options
  (saturation, hue, grayscale; posterize), off by default, add one per-image 3x3 colour
  matrix product: for pictures that are not photos (issue 28), measured before adopted.

Importing this module registers both with Keras, so a saved model loads in safe mode
(`toolkit.runs.load_model` imports it before loading).
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

#: RGB -> YIQ (NTSC, ITU-R BT.601 luma). The colour options act on the chroma plane (I, Q)
#: and keep the luma Y, so a picture keeps its light and shade whatever colour it turns.
_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype="float64"
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)
# a per-image colour matrix is LUMA + a * CHROMA + b * TURN: a scales the chroma plane by
# a = k cos(angle) and turns it by b = k sin(angle); three constant 3x3 matrices, so a batch
# of colour matrices is two broadcasts, no matrix product per image
_LUMA = (_YIQ_TO_RGB[:, :1] @ _RGB_TO_YIQ[:1]).astype("float32")  # every channel := Y
_CHROMA = (np.eye(3) - _YIQ_TO_RGB[:, :1] @ _RGB_TO_YIQ[:1]).astype("float32")
_TURN = (_YIQ_TO_RGB @ np.array([[0, 0, 0], [0, 0, -1], [0, 1, 0]]) @ _RGB_TO_YIQ).astype("float32")
#: Posterized images keep this many levels per channel, drawn per image.
POSTERIZE_LEVELS = (3, 6)

#: Below this, TensorFlow's fused kernel raises its epsilon (a cuDNN limit), so the fused
#: path would not compute what the layer's config says.
_MIN_FUSED_EPSILON = 1.001e-5


@keras.saving.register_keras_serializable(package="toolkit")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` run by one fused TensorFlow kernel per call.

    Same weights, same moving-statistics update (biased batch variance, as Keras 3), same
    outputs to float rounding; whatever the fused kernel does not cover (other backends,
    masks, renorm, an axis other than the last of a 4-D float32 input, a tiny epsilon)
    falls back to Keras' own arithmetic.
    """

    def _fusable(self, inputs: Any, mask: Any) -> bool:
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.renorm
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and inputs.dtype == "float32"
            and self.epsilon >= _MIN_FUSED_EPSILON
        )

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        gamma = self.gamma if self.scale else tf.ones([channels], inputs.dtype)
        beta = self.beta if self.center else tf.zeros([channels], inputs.dtype)
        if training and self.trainable:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, epsilon=self.epsilon, is_training=True
            )
            # the kernel returns the unbiased (n - 1) batch variance; Keras averages the
            # biased one into its moving statistics
            n = tf.cast(tf.size(inputs) // channels, variance.dtype)
            variance = variance * ((n - 1.0) / n)
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
            self.moving_variance.assign(
                self.moving_variance * momentum + variance * (1.0 - momentum)
            )
            return outputs
        outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
            inputs,
            gamma,
            beta,
            mean=self.moving_mean,
            variance=self.moving_variance,
            epsilon=self.epsilon,
            is_training=False,
        )
        return outputs


@keras.saving.register_keras_serializable(package="toolkit")
class RandomAugment(keras.layers.Layer):
    """Random mirror, rotation, zoom and translation (one bilinear resampling), then
    contrast and brightness (one pointwise map), per image; identity outside training.

    The ranges mean what the Keras layers' arguments of the same names mean:
    `rotation` a fraction of a full turn either way, `zoom` and `translation` fractions of
    the image's side, `contrast` the spread of the factor around 1 applied about each
    channel's mean, `brightness` an offset in the input's units; pixels are in [0, 1] and
    the result is clipped to it.

    Colour, after contrast and brightness, on RGB inputs only (a no-op on other channel
    counts), keeping each pixel's luma: `saturation` scales the chroma by a factor in
    [1 - saturation, 1 + saturation], `hue` turns it by up to that fraction of a full turn
    either way, `grayscale` is the probability of dropping it altogether; then `posterize`,
    the probability of quantising each channel to 3-6 levels (any channel count). All 0
    by default: then the layer draws the same random numbers as it did before they existed.
    """

    def __init__(
        self,
        *,
        flip: bool = True,
        rotation: float = 0.06,
        zoom: float = 0.1,
        translation: float = 0.06,
        contrast: float = 0.25,
        brightness: float = 0.15,
        erase: float = 0.0,
        erase_area: tuple[float, float] = (0.02, 0.25),
        fill_mode: str = "reflect",
        saturation: float = 0.0,
        hue: float = 0.0,
        grayscale: float = 0.0,
        posterize: float = 0.0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.flip, self.rotation, self.zoom = flip, rotation, zoom
        self.translation, self.contrast, self.brightness = translation, contrast, brightness
        self.erase, self.erase_area = erase, tuple(erase_area)
        self.saturation, self.hue = saturation, hue
        self.grayscale, self.posterize = grayscale, posterize
        self.fill_mode, self.seed = fill_mode, seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = False

    def call(self, images: Any, training: Any = None) -> Any:
        if not training:
            return images
        shape = ops.shape(images)
        batch = shape[0]
        height = ops.cast(shape[1], "float32")
        width = ops.cast(shape[2], "float32")
        u = keras.random.uniform((batch, 7), -1.0, 1.0, seed=self.seed_generator)
        transform = self.transforms(u, height, width)
        x = ops.image.affine_transform(
            images, transform, interpolation="bilinear", fill_mode=self.fill_mode
        )
        mean = ops.mean(x, axis=(1, 2), keepdims=True)
        factor = ops.reshape(1.0 + u[:, 5] * self.contrast, (-1, 1, 1, 1))
        offset = ops.reshape(u[:, 6] * self.brightness, (-1, 1, 1, 1))
        x = ops.clip((x - mean) * factor + mean + offset, 0.0, 1.0)
        colour = images.shape[-1] == 3 and (self.saturation or self.hue or self.grayscale)
        # drawn only when used: with every option off, a seeded run repeats the draws of a
        # run (or a saved model) from before these options existed
        if colour or self.posterize:
            v = keras.random.uniform((batch, 5), 0.0, 1.0, seed=self.seed_generator)
            if colour:
                matrices = self.colour_matrices(v)
                x = ops.clip(ops.einsum("bhwc,bdc->bhwd", x, matrices), 0.0, 1.0)
            if self.posterize:
                x = self.posterized(x, v)
        if self.erase > 0.0:
            x = self.erased(x)
        return x

    def colour_matrices(self, v: Any) -> Any:
        """The (batch, 3, 3) matrices M, each pixel's RGB x turning into M x, for draws `v`
        in [0, 1], columns: saturation, hue, grayscale (then posterize's two)."""
        scale = 1.0 + (2.0 * v[:, 0] - 1.0) * self.saturation
        keep = ops.where(v[:, 2] < self.grayscale, 0.0, 1.0)
        angle = (2.0 * v[:, 1] - 1.0) * (self.hue * 2.0 * math.pi)
        a = ops.reshape(scale * keep * ops.cos(angle), (-1, 1, 1))
        b = ops.reshape(scale * keep * ops.sin(angle), (-1, 1, 1))
        return ops.convert_to_tensor(_LUMA) + a * _CHROMA + b * _TURN

    def posterized(self, images: Any, v: Any) -> Any:
        """With probability `posterize` per image (draw column 3), each channel rounded to
        one of 3-6 evenly spaced levels over [0, 1] (how many: draw column 4)."""
        low, high = POSTERIZE_LEVELS
        steps = ops.floor(low + v[:, 4] * (high - low + 1)) - 1.0  # levels - 1, 2..5
        steps = ops.reshape(ops.minimum(steps, high - 1.0), (-1, 1, 1, 1))
        flat = ops.round(images * steps) / steps
        on = ops.reshape(v[:, 3] < self.posterize, (-1, 1, 1, 1))
        return ops.where(on, flat, images)

    def erased(self, images: Any) -> Any:
        """Random erasing (Zhong et al., 2017): with probability `erase`, a rectangle of
        `erase_area` of the image (aspect ratio 0.3-3.3) is replaced by uniform noise."""
        shape = ops.shape(images)
        v = keras.random.uniform((shape[0], 5), 0.0, 1.0, seed=self.seed_generator)
        low, high = self.erase_area
        area = low + v[:, 0] * (high - low)
        ratio = ops.exp(math.log(0.3) + v[:, 1] * (math.log(3.3) - math.log(0.3)))
        half_h = ops.reshape(ops.sqrt(area * ratio) / 2.0, (-1, 1, 1, 1))
        half_w = ops.reshape(ops.sqrt(area / ratio) / 2.0, (-1, 1, 1, 1))
        cy = ops.reshape(v[:, 2], (-1, 1, 1, 1))
        cx = ops.reshape(v[:, 3], (-1, 1, 1, 1))
        on = ops.reshape(v[:, 4] < self.erase, (-1, 1, 1, 1))
        rows = (ops.cast(ops.arange(shape[1]), "float32") + 0.5) / ops.cast(shape[1], "float32")
        cols = (ops.cast(ops.arange(shape[2]), "float32") + 0.5) / ops.cast(shape[2], "float32")
        inside_y = ops.abs(ops.reshape(rows, (1, -1, 1, 1)) - cy) < half_h
        inside_x = ops.abs(ops.reshape(cols, (1, 1, -1, 1)) - cx) < half_w
        mask = ops.logical_and(ops.logical_and(inside_y, inside_x), on)
        noise = keras.random.uniform(shape, 0.0, 1.0, seed=self.seed_generator)
        return ops.where(mask, noise, images)

    def transforms(self, u: Any, height: Any, width: Any) -> Any:
        """The (batch, 8) projective transforms (`ops.image.affine_transform`'s layout)
        for draws `u` in [-1, 1], columns: mirror (< 0 mirrors), rotation, zoom, shift
        x, shift y (then contrast and brightness, used by `call`)."""
        mirror = ops.where(u[:, 0] < 0.0, -1.0, 1.0) if self.flip else ops.ones_like(u[:, 0])
        angle = u[:, 1] * (self.rotation * 2.0 * math.pi)
        zoom = 1.0 + u[:, 2] * self.zoom
        shift_x = u[:, 3] * (self.translation * width)
        shift_y = u[:, 4] * (self.translation * height)
        # each output pixel p reads the input at c + zoom * R(angle) * M * (p - c) - shift,
        # c the centre, M the mirror: one matrix, so one resampling
        cos, sin = ops.cos(angle) * zoom, ops.sin(angle) * zoom
        a0, a1 = cos * mirror, -sin
        b0, b1 = sin * mirror, cos
        cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
        a2 = cx - a0 * cx - a1 * cy - shift_x
        b2 = cy - b0 * cx - b1 * cy - shift_y
        zero = ops.zeros_like(a0)
        return ops.stack([a0, a1, a2, b0, b1, b2, zero, zero], axis=1)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "flip": self.flip,
            "rotation": self.rotation,
            "zoom": self.zoom,
            "translation": self.translation,
            "contrast": self.contrast,
            "brightness": self.brightness,
            "erase": self.erase,
            "erase_area": list(self.erase_area),
            "fill_mode": self.fill_mode,
            "saturation": self.saturation,
            "hue": self.hue,
            "grayscale": self.grayscale,
            "posterize": self.posterize,
            "seed": self.seed,
        }
