"""Image-quality scores of one decoded picture: how dark, washed out, blurred, flat or grey it is.

The scan measures them on the copy it has already decoded (`toolkit.scan`), never decoding a
file twice. Every score is read from one fixed-size copy (`QUALITY_SIDE_PX` on the longer
side), so it does not depend on how far the scan reduced the picture while decoding (a JPEG
decoded at 1/8 scores as at full size). The thresholds that turn a score into a finding are
the rules' (validations/rules.py) and the profiles'; this module only measures.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: The longer side of the copy every score is measured on; smaller pictures are measured as
#: they are (enlarging one would blur it).
QUALITY_SIDE_PX = 128
#: The share of the darkest pixels ignored by `luma_p05` and of the brightest by `luma_p99`:
#: a few specks of JPEG ringing or a tiny highlight do not make a picture bright or dark.
DARK_PERCENTILE, LIGHT_PERCENTILE = 99.0, 5.0
#: Below this standard deviation of luma (0-1), a couple of grey levels of JPEG noise, a
#: picture is one flat colour: only `entropy_bits` describes it. Its exposure, sharpness and
#: colour are None, so a blank page is one finding (min_entropy), not also "dark" or
#: "washed out" for the colour it happens to be.
MIN_CONTRAST_STD = 0.01


def measure_quality(plain: Any, gray: Any = None) -> dict[str, float | None]:
    """The quality scores of a decoded, flattened picture (a PIL image in mode "L" or "RGB"),
    keyed by their manifest columns (toolkit.manifest documents them):

    - `luma_p99`, `luma_p05`: the 99th and 5th percentiles of luma (0 black, 1 white);
    - `sharpness`: the standard deviation of the Laplacian over that of luma (edges' share
      of the picture's contrast, so darkening or fading a picture does not blur it);
    - `entropy_bits`: Shannon entropy of the 256-level luma histogram (0-8 bits);
    - `chroma_ratio`: the 99th percentile of chroma (max(R, G, B) - min(R, G, B)) over the
      luma range (99th - 1st percentile): 0 for a grey picture, even one saved as RGB; as a
      ratio, darkening or fading a colour photo leaves it unchanged.

    `gray` is a grey copy of `plain` the caller has already, at least `QUALITY_SIDE_PX` on
    its longer side unless `plain` is smaller (the scan's copy for the perceptual hash). All
    but `entropy_bits` are None for a flat picture (`MIN_CONTRAST_STD`) or one under 3
    pixels a side. Percentiles are read from 256-level histograms: whole levels, the same on
    every machine.
    """
    if gray is None:
        gray = plain if plain.mode == "L" else plain.convert("L")
    small = _fixed_size(gray, "BOX")
    gray = np.asarray(small)
    counts = np.bincount(gray.ravel(), minlength=256)
    levels = np.arange(256, dtype=np.float64) / 255.0
    n = gray.size
    mean = float(counts @ levels) / n
    spread = float(np.sqrt(max(float(counts @ (levels - mean) ** 2) / n, 0.0)))
    high, low, bottom = _percentiles(counts, (DARK_PERCENTILE, LIGHT_PERCENTILE, 1.0))
    share = counts[counts > 0] / n
    has_contrast = min(gray.shape) >= 3 and spread >= MIN_CONTRAST_STD
    if plain.mode == "L":
        colour = 0.0
    else:
        # a sample of pixels is enough for a percentile, and costs a tenth of averaging them
        rgb = np.asarray(_fixed_size(plain, "NEAREST"))
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]  # a reduction over a 3-long axis is slow
        chroma = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
        (colour,) = _percentiles(np.bincount(chroma.ravel(), minlength=256), (DARK_PERCENTILE,))
    return {
        "luma_p99": high if has_contrast else None,
        "luma_p05": low if has_contrast else None,
        "sharpness": _sharpness(gray, spread) if has_contrast else None,
        "entropy_bits": _rounded(-(share * np.log2(share)).sum()),
        "chroma_ratio": _rounded(colour / max(high - bottom, 1 / 255)) if has_contrast else None,
    }


def _percentiles(counts: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """For each of `qs`, the lowest level (0-1) at or below which that percent of the counted
    pixels lie."""
    below = np.cumsum(counts)
    levels = np.searchsorted(below, np.array(qs) / 100.0 * below[-1])
    return [_rounded(min(int(level), 255) / 255.0) for level in levels]


def _fixed_size(plain: Any, resample: str) -> Any:
    from PIL import Image

    w, h = plain.size
    scale = QUALITY_SIDE_PX / max(w, h)
    if scale >= 1.0:
        return plain
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if resample == "NEAREST":
        return plain.resize(size, Image.Resampling.NEAREST)
    # whole-box averaging first (cheap), then the last step to the exact size
    return plain.resize(size, Image.Resampling.BOX, reducing_gap=2.0)


def _sharpness(gray: np.ndarray, spread: float) -> float:
    luma = gray.astype(np.float32) / 255.0
    centre = luma[1:-1, 1:-1]
    laplacian = luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4.0 * centre
    return _rounded(float(laplacian.std()) / spread)


def _rounded(value: float) -> float:
    # four decimals: the same score on every machine and engine (float32 sums may differ
    # in their last bits), and more than a threshold needs
    return round(float(value), 4)
