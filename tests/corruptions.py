"""Known corruptions of a good photo, one per image-quality rule, with the rule each breaks.

Shared by tests/test_quality.py (known answers) and benchmarks/bench_quality.py (precision
and recall over real photos). Each corruption is strong enough that a person would call the
copy dark, washed out, blurred, flat, stretched or grey at a glance.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def _scaled(img: Image.Image, fn: Callable[[np.ndarray], np.ndarray]) -> Image.Image:
    pixels = np.asarray(img.convert("RGB"), dtype=np.float32)
    return Image.fromarray(np.clip(np.rint(fn(pixels)), 0, 255).astype(np.uint8))


def darkened(img: Image.Image) -> Image.Image:
    """A fifth of the light: nearly black."""
    return _scaled(img, lambda a: a * 0.2)


def brightened(img: Image.Image) -> Image.Image:
    """Four fifths of the way to white: washed out."""
    return _scaled(img, lambda a: 255 - (255 - a) * 0.2)


def blurred(img: Image.Image) -> Image.Image:
    """A Gaussian blur of a fortieth of the longer side: out of focus at any size."""
    return img.convert("RGB").filter(ImageFilter.GaussianBlur(max(img.size) / 40))


def flattened(img: Image.Image) -> Image.Image:
    """Its mean colour with a fiftieth of the contrast left: one flat colour."""

    def flat(a: np.ndarray) -> np.ndarray:
        mean = a.mean(axis=(0, 1))
        return mean + (a - mean) * 0.02

    return _scaled(img, flat)


def stretched(img: Image.Image) -> Image.Image:
    """The longer side four times as long: a banner."""
    w, h = img.size
    return img.convert("RGB").resize((w * 4, h) if w >= h else (w, h * 4))


def greyed(img: Image.Image) -> Image.Image:
    """Grey, saved as RGB (as many scans and black-and-white photos are)."""
    return img.convert("L").convert("RGB")


#: corruption name -> (how to make it, the rule it must break)
CORRUPTIONS: dict[str, tuple[Callable[[Image.Image], Image.Image], str]] = {
    "darkened": (darkened, "not_dark"),
    "brightened": (brightened, "not_washed_out"),
    "blurred": (blurred, "not_blurry"),
    "flattened": (flattened, "min_entropy"),
    "stretched": (stretched, "max_aspect_ratio"),
    "greyed": (greyed, "not_grayscale"),
}


def textured_photo(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A stand-in for a good photo: smooth colour gradients, sharp-edged shapes in many
    colours, and fine grain, all seeded."""
    rng = np.random.default_rng(seed)
    field = rng.integers(30, 226, size=(4, 5, 3), dtype=np.uint8)
    img = Image.fromarray(field).resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    w, h = size
    for _ in range(12):
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        x1, y1 = x0 + int(rng.integers(10, w // 3)), y0 + int(rng.integers(10, h // 3))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    grain = rng.normal(0, 6, size=(h, w, 3))
    return _scaled(img, lambda a: a + grain)
