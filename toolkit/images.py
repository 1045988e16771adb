"""Pixels in any Pillow mode made plain, the same way for the scan, the pipeline and the report.

Also what one decoded image may cost: a picture is flattened (and shrunk, where the caller
needs less than every pixel) one band of rows at a time, so that beside the decoded pixels
a process holds only a band and the result; and big decodes take turns within a process,
so that threads decoding side by side hold one big image at a time, not one each.
"""

from __future__ import annotations

import ctypes
import functools
import io
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

#: Integer modes deeper than 8 bits per pixel.
_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
#: The most bytes Pillow holds per decoded pixel, in any mode (RGB is padded to four).
MAX_BYTES_PER_PIXEL = 4
#: Images that may decode to more bytes than this take turns (`decode_turn`).
TURN_BYTES = 64 * 2**20
#: Bytes per pixel that decoding a format holds at its peak, where its decoder keeps more
#: than Pillow's picture (MAX_BYTES_PER_PIXEL): libwebp's canvas and its copy handed to
#: Pillow; libavif's RGB buffer. JPEG 2000 and TIFF are reckoned from their header in
#: `decode_bytes`.
_DECODER_BYTES_PER_PIXEL = {"WEBP": 16, "AVIF": 12}
#: TIFF compressions that Pillow decodes itself, row by row: none and PackBits.
_ROW_BY_ROW_TIFF = (1, 32773)
#: `flatten_reduced` converts bands of about this many decoded bytes at a time.
BAND_BYTES = 4 * 2**20
#: EXIF orientation -> the PIL.Image.Transpose value that turns the stored pixels upright.
UPRIGHT = {2: 0, 3: 3, 4: 1, 5: 5, 6: 4, 7: 6, 8: 2}

_turn = threading.Lock()
#: Pillow's bomb limit is one setting for the whole process: it is lifted under this lock.
_pillow_limit = threading.Lock()


def open_declared(data: bytes) -> Any:
    """`PIL.Image.open` on bytes, without Pillow's decompression-bomb refusal, so that the
    caller can read a bomb's declared size and judge it against its own limit before any
    pixel is decoded. Pillow checks only while it opens, and its limit is process-wide:
    it is lifted for the open alone, under a lock, so threads opening images side by side
    never leave it lifted for the rest of the process."""
    from PIL import Image

    with _pillow_limit, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(io.BytesIO(data))
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def flatten(img: Any, *, extrema: tuple[float, float] | None = None) -> Any:
    """Any Pillow mode -> L or RGB: alpha over white, 16-bit and float scaled to 8 bits,
    CMYK and palette converted.

    Pillow's own convert("L") clips 16-bit values at 255, which turns most 16-bit scans
    white (and gives every one the same perceptual hash). 32-bit integer and float pictures
    are scaled by their own range; `extrema`, the (min, max) of the whole picture, scales a
    band of it the same way.
    """
    from PIL import Image

    if img.mode in _DEEP_MODES:
        arr = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            top = 65535.0
        else:
            top = max(float(extrema[1] if extrema else arr.max()), 1.0)
        return Image.fromarray(np.clip(arr * 255.0 / top, 0, 255).astype(np.uint8), "L")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        low, high = extrema if extrema else (arr.min(), arr.max())
        span = max(float(high - low), 1e-9)
        return Image.fromarray(((arr - low) * 255.0 / span).astype(np.uint8), "L")
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


def flatten_reduced(
    img: Any,
    factor: int = 1,
    *,
    box: tuple[int, int, int, int] | None = None,
    band_px: int | None = None,
) -> Any:
    """flatten(img) cropped to `box` and box-averaged `factor` times (as Image.reduce),
    made `band_px` rows at a time (about BAND_BYTES' worth unless given).

    The pixels are those of flattening, cropping and reducing the whole picture, but no
    converted full-size copy is ever held: alpha over white alone makes three.
    """
    from PIL import Image

    img.load()
    left, top, right, bottom = box or (0, 0, *img.size)
    if (factor <= 1 and box is None and img.mode in ("L", "RGB")) or right <= left:
        return flatten(img.crop(box) if box else img)
    extrema = img.getextrema() if img.mode in (*_DEEP_MODES, "F") else None
    rows = band_px or max(1, BAND_BYTES // (MAX_BYTES_PER_PIXEL * (right - left)))
    rows = max(factor, rows // factor * factor)  # whole boxes per band: the same averages
    out = None
    for y in range(top, bottom, rows):
        part = flatten(img.crop((left, y, right, min(y + rows, bottom))), extrema=extrema)
        if factor > 1:
            part = part.reduce(factor)
        if out is None:
            size = (-(-(right - left) // factor), -(-(bottom - top) // factor))
            out = Image.new(part.mode, size)
        out.paste(part, (0, (y - top) // factor))
    return out


def decode_bytes(img: Any) -> int:
    """The most memory decoding `img` (opened, not loaded) may hold, from its header: its
    first frame at the size it will decode to, and what the format's decoder keeps beside."""
    width, height = img.size
    per_pixel = _DECODER_BYTES_PER_PIXEL.get(img.format, MAX_BYTES_PER_PIXEL)
    if img.format == "JPEG2000":  # OpenJPEG: each sample a 32-bit integer, and tile buffers
        per_pixel = MAX_BYTES_PER_PIXEL + 5 * len(img.getbands())
    cost = width * height * per_pixel
    tags = getattr(img, "tag_v2", {})
    if img.format == "TIFF" and tags.get(259, 1) not in _ROW_BY_ROW_TIFF:
        # libtiff reads a strip or tile whole, at the file's own depth
        depth = tags.get(258, (8,))
        pixel_bytes = max(1, -(-sum(depth if isinstance(depth, tuple) else (depth,)) // 8))
        if 322 in tags:
            cost += int(tags[322]) * int(tags.get(323, 1)) * pixel_bytes
        else:
            cost += min(int(tags.get(278, height) or height), height) * width * pixel_bytes
    return cost


@contextmanager
def decode_turn(img: Any) -> Iterator[None]:
    """Hold while decoding and flattening `img`, and close it inside once its full-size
    pixels are no longer needed: pictures that may decode to more than TURN_BYTES wait for
    each other, so that threads side by side hold one at a time."""
    if decode_bytes(img) <= TURN_BYTES:
        yield
        return
    with _turn:
        try:
            yield
        finally:
            _return_freed_memory()


@functools.cache
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):  # not glibc: its allocator returns big blocks itself
        return None


def _return_freed_memory() -> None:
    # glibc keeps what a thread freed in that thread's arena: without this, each decoding
    # thread would keep a big picture's worth, and the next big one, on another thread,
    # would add to it
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def upright(img: Any, orientation: object) -> Any:
    """`img` turned as its EXIF `orientation` (1-8) says; unchanged for anything else."""
    from PIL import Image

    if orientation not in UPRIGHT:
        return img
    return img.transpose(Image.Transpose(UPRIGHT[orientation]))  # type: ignore[index]
