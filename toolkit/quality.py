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
#: Below this standard deviation of luma (0-1) a picture has no contrast to measure edges or
#: colour against: its `sharpness` and `chroma_ratio` are not defined (None). It is flat,
#: which `entropy_bits` says.
MIN_CONTRAST_STD = 0.02


def measure_quality(plain: Any) -> dict[str, float | None]:
    """The quality scores of a decoded, flattened picture (a PIL image in mode "L" or "RGB"),
    keyed by their manifest columns (toolkit.manifest documents them):

    - `luma_p99`, `luma_p05`: the 99th and 5th percentiles of luma (0 black, 1 white);
    - `sharpness`: the standard deviation of the Laplacian over that of luma (edges' share
      of the picture's contrast, so darkening or fading a picture does not blur it);
      None for a picture too small or too flat to have edges;
    - `entropy_bits`: Shannon entropy of the 256-level luma histogram (0-8 bits);
    - `chroma_ratio`: the 99th percentile of chroma (max(R, G, B) - min(R, G, B)) over the
      luma range (99th - 1st percentile): 0 for a grey picture, even one saved as RGB; as a
      ratio, darkening or fading a colour photo leaves it unchanged. None when flat.
    """
    from PIL import Image

    small = _fixed_size(plain, Image)
    rgb = np.asarray(small, dtype=np.float32) / 255.0
    if rgb.ndim == 2:
        luma, chroma = rgb, np.zeros(1, dtype=np.float32)
    else:
        # ITU-R BT.601 luma, as Pillow's convert("L") weighs the channels
        luma = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        chroma = rgb.max(axis=2) - rgb.min(axis=2)
    levels = np.clip(np.rint(luma * 255.0), 0, 255).astype(np.intp)
    counts = np.bincount(levels.ravel(), minlength=256)
    share = counts[counts > 0] / levels.size
    high, low, bottom = np.percentile(luma, [DARK_PERCENTILE, LIGHT_PERCENTILE, 1.0])
    has_contrast = min(luma.shape) >= 3 and float(luma.std()) >= MIN_CONTRAST_STD
    colour = float(np.percentile(chroma, DARK_PERCENTILE)) / max(float(high - bottom), 1 / 255)
    return {
        "luma_p99": _rounded(high),
        "luma_p05": _rounded(low),
        "sharpness": _sharpness(luma) if has_contrast else None,
        "entropy_bits": _rounded(-(share * np.log2(share)).sum()),
        "chroma_ratio": _rounded(colour) if has_contrast else None,
    }


def _fixed_size(plain: Any, image_module: Any) -> Any:
    w, h = plain.size
    scale = QUALITY_SIDE_PX / max(w, h)
    if scale >= 1.0:
        return plain
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return plain.resize(size, image_module.Resampling.BOX)


def _sharpness(luma: np.ndarray) -> float:
    centre = luma[1:-1, 1:-1]
    laplacian = luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4.0 * centre
    return _rounded(float(laplacian.std()) / float(luma.std()))


def _rounded(value: float) -> float:
    # four decimals: the same score on every machine and engine (float32 sums may differ
    # in their last bits), and more than a threshold needs
    return round(float(value), 4)
