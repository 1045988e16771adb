"""Small JPEG thumbnails of the user's files (data: URIs), or a line saying why there is none.

Files are opened read-only, and only those the manifest says decode and declare at most
`max_pixels` pixels: a decompression bomb is never decoded, not even for a thumbnail.
JPEGs decode at reduced scale (libjpeg DCT scaling), so a 24 MP photo costs a few ms;
other formats decode whole, one big picture at a time, and are shrunk while flattened.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import ExifTags, Image

from toolkit.errors import processing
from toolkit.images import decode_turn, flatten_reduced, upright
from toolkit.paths import leads_outside, open_regular

log = logging.getLogger(__name__)

#: Longest side of a thumbnail, in pixels.
THUMB_SIDE_PX = 96
#: JPEG quality of thumbnails: small files, faces still recognisable.
THUMB_QUALITY = 70
_BYTE_ESCAPE = re.compile(rb"\\x([0-9a-f]{2})")


@dataclass(frozen=True)
class Thumbnail:
    """A thumbnail as a data: URI with its size, or (src None) the reason there is none."""

    src: str | None
    width: int = 0
    height: int = 0
    reason: str | None = None


def make_thumbnails(
    rows: pd.DataFrame,
    root: Path | str | None,
    *,
    max_pixels: int,
    side: int = THUMB_SIDE_PX,
    jobs: int | None = None,
) -> dict[str, Thumbnail]:
    """A thumbnail (or the reason for none) for each manifest row, by path."""
    root = Path(root) if root else None
    if root is None or not root.is_dir():
        missing = Thumbnail(None, reason=f"no thumbnail: the data folder {root} is not here")
        return dict.fromkeys(rows["path"].astype(str), missing)
    records = rows.drop_duplicates("path").to_dict("records")
    jobs = jobs or min(8, os.cpu_count() or 1)

    def one(row: dict) -> Thumbnail:
        with processing(os.path.join(root, str(row["path"]))):  # a crash names the file
            return _thumbnail(row, root, max_pixels, side)

    # Pillow warns above 89 MP; our own bound (max_pixels) has already decided what opens.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with ThreadPoolExecutor(max_workers=jobs) as pool:  # decoders release the GIL
            thumbs = pool.map(one, records)
            return {str(r["path"]): t for r, t in zip(records, thumbs, strict=True)}


def _thumbnail(row: dict, root: Path, max_pixels: int, side: int) -> Thumbnail:
    if not _true(row.get("is_readable")):
        return Thumbnail(None, reason=f"not read: {_text(row.get('read_error'), 'unreadable')}")
    if not _true(row.get("is_decodable")):
        why = _text(row.get("decode_error"), "does not decode")
        return Thumbnail(
            None, reason=why if why.startswith("not decoded") else f"not decoded: {why}"
        )
    width, height = row.get("width_px"), row.get("height_px")
    if pd.notna(width) and pd.notna(height) and int(width) * int(height) > max_pixels:
        return Thumbnail(None, reason=_too_large(int(width), int(height), max_pixels))
    try:
        return _encode(_file_path(root, row), max_pixels, side)
    except Exception as exc:  # the file changed since the scan, or Pillow refused it
        log.debug("no thumbnail for %s: %s", row["path"], exc)
        return Thumbnail(None, reason=f"no thumbnail: {type(exc).__name__}: {exc}")


def _encode(path: str, max_pixels: int, side: int) -> Thumbnail:
    # a FIFO put where a file was would otherwise wait forever for a writer
    with open_regular(path) as fh, Image.open(fh) as img:
        if img.width * img.height > max_pixels:  # replaced since the scan: judge again
            return Thumbnail(None, reason=_too_large(img.width, img.height, max_pixels))
        if img.format == "JPEG":
            img.draft("RGB", (side, side))
        img.seek(0)
        # others are box-averaged while they are flattened, to no less than twice the side
        # (as thumbnail()'s own first step would), so a big PNG is never converted whole
        factor = 1 if img.format == "JPEG" else max(1, max(img.size) // (2 * side))
        with decode_turn(img):
            img.load()
            orientation = img.getexif().get(ExifTags.Base.Orientation)
            picture = flatten_reduced(img, factor).convert("RGB")
            img.close()  # the full-size pixels go before the next big decode's turn
    picture = upright(picture, orientation)
    picture.thumbnail((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    picture.save(buf, format="JPEG", quality=THUMB_QUALITY)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return Thumbnail(f"data:image/jpeg;base64,{data}", picture.width, picture.height)


def _file_path(root: Path, row: dict) -> str:
    """The OS path of a manifest row (names that were not UTF-8 come back to their bytes)."""
    rel = str(row["path"])
    if _true(row.get("is_valid_name"), default=True):
        path = os.path.join(root, rel)
    else:
        raw = _BYTE_ESCAPE.sub(lambda m: bytes([int(m[1], 16)]), rel.encode("utf-8"))
        path = os.fsdecode(os.path.join(os.fsencode(root), raw))
    target = leads_outside(os.path.realpath(root), path)
    if target is not None:  # an edited manifest, or a file swapped for a link since the scan
        raise OSError(f"leads outside the data root, to {target}; not read")
    return path


def _too_large(width: int, height: int, max_pixels: int) -> str:
    return (
        f"not decoded: declares {width}x{height} = {width * height:,} px, "
        f"over the {max_pixels:,} px bound (a decompression bomb?)"
    )


def _true(value: object, default: bool = False) -> bool:
    return default if value is None or value is pd.NA else bool(value)


def _text(value: object, default: str) -> str:
    return default if value is None or value is pd.NA or value != value else str(value)
