"""The tutorial's type test, `imghdr.what`, which Python 3.13 removed: its rules, restated.

Used only to prove the toolkit keeps every file the tutorial's clean-up keeps.
"""

from __future__ import annotations

from pathlib import Path


def what(path: Path) -> str | None:
    """The image type imghdr would name for this file, or None."""
    with open(path, "rb") as fh:
        h = fh.read(32)
    if h[6:10] in (b"JFIF", b"Exif") or h[:4] == b"\xff\xd8\xff\xdb":
        return "jpeg"
    if h.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if h[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if h[:2] in (b"MM", b"II"):
        return "tiff"
    if h.startswith(b"BM"):
        return "bmp"
    if h.startswith(b"RIFF") and h[8:12] == b"WEBP":
        return "webp"
    return None
