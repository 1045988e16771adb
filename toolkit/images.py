"""Pixels in any Pillow mode made plain, the same way for the scan, the pipeline and the report."""

from __future__ import annotations

from typing import Any

import numpy as np

#: Integer modes deeper than 8 bits per pixel.
_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def flatten(img: Any) -> Any:
    """Any Pillow mode -> L or RGB: alpha over white, 16-bit and float scaled to 8 bits,
    CMYK and palette converted.

    Pillow's own convert("L") clips 16-bit values at 255, which turns most 16-bit scans
    white (and gives every one the same perceptual hash).
    """
    from PIL import Image

    if img.mode in _DEEP_MODES:
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        return Image.fromarray(np.clip(arr * 255.0 / top, 0, 255).astype(np.uint8), "L")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        span = max(float(arr.max() - arr.min()), 1e-9)
        return Image.fromarray(((arr - arr.min()) * 255.0 / span).astype(np.uint8), "L")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        img.mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode in ("L", "RGB"):
        return img
    return img.convert("RGB")
