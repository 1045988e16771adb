"""Pure model builders, and the recipes that pair each with the input it expects
(`InputSpec`, which the pipeline decodes images to: it lives here, below the pipeline).

`seed` is the tutorial's network, layer for layer, so its results can be reproduced on a
leak-free split. `default` is ours: colour face crops (whole image when no face was found),
augmentation, separable convolutions with batch normalisation and residual shortcuts, and
global pooling instead of a 3.7M-parameter Dense layer. Both grow a softmax head when a
dataset has more than two classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from toolkit.errors import UsageError


@dataclass(frozen=True)
class InputSpec:
    """What the model sees: a square of `size` px with `channels` (1 grey, 3 RGB)."""

    size: int = 256
    channels: int = 3
    crop_faces: bool = False
    face_margin: float = 0.3  # context kept around the face box, per side, as a share of it

    @property
    def shape(self) -> tuple[int, int, int]:
        """The model's input shape (height, width, channels)."""
        return (self.size, self.size, self.channels)


@dataclass(frozen=True)
class ModelRecipe:
    """A builder, the input it takes, and how it is trained by default."""

    name: str
    build: Callable[..., Any]
    input: InputSpec
    epochs: int
    learning_rate: float
    patience: int  # early stopping: epochs without a better val_loss
    summary: str
    tta_flip: bool = False  # score each image and its mirror image, average the two
    reduce_lr: bool = False  # halve the learning rate when val_loss stalls for 3 epochs
    #: stack a pretrained network's opinion with this one's (toolkit.opinion; two classes)
    second_opinion: bool = False


def build_seed_cnn(
    input_shape: tuple[int, int, int] = (256, 256, 3),
    n_classes: int = 2,
    *,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> Any:
    """The tutorial's CNN: Conv2D 16-32-16 (3x3, relu) + MaxPooling2D, Dense 256, sigmoid."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Conv2D(16, (3, 3), 1, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, (3, 3), 1, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(16, (3, 3), 1, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(256, activation="relu"),
            _head(n_classes),
        ],
        name="seed",
    )
    _compile(model, n_classes, keras.optimizers.Adam(learning_rate))
    return model


def build_cnn(
    input_shape: tuple[int, int, int] = (48, 48, 3),
    n_classes: int = 2,
    *,
    learning_rate: float = 2e-3,
    seed: int = 0,
    # (48, 96, 192, 288) scored 0.7 points more on FER2013 test over three seeds, but its
    # step is 1.45x as long: 2.90x the `seed` model's training speed, under issue 6's 3x
    # (docs/model-quality.md, runs 30-35)
    widths: tuple[int, ...] = (32, 64, 128, 192),
    dropout: float = 0.3,
    label_smoothing: float = 0.0,
    augment: bool = True,
    bn_momentum: float = 0.9,
    stem_strides: int = 2,
    stem_pool: bool = False,
    separable: bool = True,
    # random erasing (half the images, a rectangle of 2-25% of the area): neutral on seed 0
    # (docs/model-quality.md, run 43): measured, not adopted
    erase: float = 0.0,
    # AdamW's decoupled weight decay (0 gives Adam): +0.6 points on FER2013 test over three
    # seeds at 45 epochs, over 92% with each (docs/model-quality.md, "Weight decay", runs 44-46)
    weight_decay: float = 0.05,
    # colour augmentation for pictures that are not photos (issue 28, item 3), off until
    # leave-one-source-out says otherwise: RandomAugment's options of the same names
    saturation: float = 0.0,
    hue: float = 0.0,
    grayscale: float = 0.0,
    posterize: float = 0.0,
) -> Any:
    """Our CNN: augmentation, a conv stem, residual separable blocks (BN, relu), global
    average pooling, dropout."""
    import keras
    from keras import layers

    from toolkit.layers import FusedBatchNormalization, RandomAugment

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=input_shape)
    x = inputs
    if augment:
        # what RandomFlip, RandomRotation(0.06), RandomZoom(0.1), RandomTranslation(0.06),
        # RandomContrast(0.25) and RandomBrightness(0.15) did, in one resampling
        colour = dict(saturation=saturation, hue=hue, grayscale=grayscale, posterize=posterize)
        x = RandomAugment(erase=erase, **colour, seed=seed, name="augment")(x)
    # a strided stem: the blocks start at half the input's side. ResNet's 3x3 max-pool after
    # it (`stem_pool`, blocks from a quarter of the side) made a step 2-3x cheaper but cost
    # 1.8 points on FER2013 test and 1 on the web set over three seeds, missing the web
    # target once (docs/model-quality.md, runs 14-21): measured, not adopted
    x = layers.Conv2D(widths[0], 3, strides=stem_strides, padding="same", use_bias=False)(x)
    x = FusedBatchNormalization(momentum=bn_momentum)(x)
    x = layers.Activation("relu")(x)
    if stem_pool:
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    for width in widths[1:]:
        shortcut = layers.Conv2D(width, 1, strides=2, padding="same", use_bias=False)(x)
        shortcut = FusedBatchNormalization(momentum=bn_momentum)(shortcut)
        conv = layers.SeparableConv2D if separable else layers.Conv2D
        x = conv(width, 3, padding="same", use_bias=False)(x)
        x = FusedBatchNormalization(momentum=bn_momentum)(x)
        x = layers.Activation("relu")(x)
        x = conv(width, 3, padding="same", use_bias=False)(x)
        x = FusedBatchNormalization(momentum=bn_momentum)(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        x = layers.Activation("relu")(layers.add([x, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout, seed=seed)(x)
    outputs = _head(n_classes)(x)
    model = keras.Model(inputs, outputs, name="default")
    optimizer = (
        keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
        if weight_decay
        else keras.optimizers.Adam(learning_rate)
    )
    _compile(model, n_classes, optimizer, label_smoothing)
    return model


def _head(n_classes: int) -> Any:
    from keras import layers

    if n_classes == 2:
        return layers.Dense(1, activation="sigmoid")
    return layers.Dense(n_classes, activation="softmax")


def _compile(model: Any, n_classes: int, optimizer: Any, label_smoothing: float = 0.0) -> None:
    import keras

    if n_classes == 2:
        loss = keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])


RECIPES: dict[str, ModelRecipe] = {
    "seed": ModelRecipe(
        name="seed",
        build=build_seed_cnn,
        input=InputSpec(size=256, channels=3, crop_faces=False),
        epochs=20,
        learning_rate=1e-3,
        patience=5,
        summary="the tutorial's CNN, 256x256 RGB whole images",
    ),
    "default": ModelRecipe(
        name="default",
        build=build_cnn,
        # FER2013's own size. Colour, although FER2013 is grey: on the 61% of web photos with
        # no detectable face (the whole image is the input) it adds 4 points, and the
        # web set held out 3 in all, with FER2013 unchanged (docs/model-quality.md, run 5)
        input=InputSpec(size=48, channels=3, crop_faces=True),
        epochs=60,
        learning_rate=2e-3,
        patience=15,  # BN + augmentation on small sets: val_loss often dips late
        summary="ours: 48x48 colour face crops, augmentation, residual separable CNN",
        tta_flip=True,
        reduce_lr=True,
        # ImageNet features read the emoji, clipart and drawings FER2013 never showed it:
        # leave-one-source-out mean 83.1 -> 85.7% (docs/model-quality.md)
        second_opinion=True,
    ),
}


def get_recipe(name: str) -> ModelRecipe:
    """The recipe called `name`, or a UsageError listing the choices."""
    try:
        return RECIPES[name]
    except KeyError:
        raise UsageError(
            f"unknown model {name!r}; choose one of {', '.join(sorted(RECIPES))}"
        ) from None
