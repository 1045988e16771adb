"""Deterministic generators of tiny test images and folders for the test-suite's fixtures.

Every generator is seeded (``numpy.random.default_rng(seed)``) and writes byte-identical
files on every run. Images are smooth random patterns (low-res noise upsampled), so two
seeds give clearly different perceptual hashes and near-duplicate checks have something
real to compare.

- ``write_image`` / ``encode_image`` / ``make_image``: one small image, any mode/format.
- ``write_image_of_exact_bytes``: a valid JPEG or PNG of exactly N bytes (file-size rules).
- ``write_clean_folder``: a clean two-class folder of distinct JPEGs.
- ``write_hostile_folder``: one folder holding every hostile case in ``HOSTILE_CASES``.
- ``write_single_class_folder``: a root with only ``happy/``.
- ``write_flipped_folder``: bright happy and dark sad squares, a few filed under the other
  class (the label audit's known answers).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, features

__all__ = [
    "BOMB_SIDE_PX",
    "EXIF_ORIENTATION_TAG",
    "HOSTILE_CASES",
    "N_FLIPPED",
    "N_PER_CLASS",
    "HostileCorpus",
    "encode_image",
    "make_image",
    "min_exact_bytes",
    "write_clean_folder",
    "write_flipped_folder",
    "write_hostile_folder",
    "write_image",
    "write_image_of_exact_bytes",
    "write_single_class_folder",
]

# Side of the low-res noise grid that is upsampled into an image: 8x8 fills the 8x8 DCT
# block a perceptual hash looks at, so different seeds land far apart (min phash distance
# 18 bits over 60 seeds at 32x32).
_GRID = 8

# One id per hostile case, in the order write_hostile_folder creates them.
HOSTILE_CASES: tuple[str, ...] = (
    "zero_byte",
    "truncated_jpeg",
    "truncated_png",
    "random_bytes_jpg",
    "html_as_jpg",
    "text_as_jpg",
    "svg",
    "animated_gif",
    "cmyk_jpeg",
    "png16",
    "grayscale",
    "palette_png",
    "rgba_png",
    "exif_rotated_jpeg",
    "tiny_1x1",
    "bomb",
    "dir_named_jpg",
    "dangling_symlink",
    "symlink_loop",
    "symlink_outside_root",
    "unreadable",
    "non_utf8_name",
    "html_injection_name",
    "nested_deep",
    "ds_store",
    "appledouble",
    "png_named_jpg",
    "webp",
    "bmp",
    "exact_duplicate",
    "label_conflict",
    "empty_class",
    "stray_root_file",
)

BOMB_SIDE_PX = 40_000
#: The folder beside the root that the symlink_outside_root case points into.
OUTSIDE_FOLDER = "outside-the-root"
EXIF_ORIENTATION_TAG = 0x0112

_FORMAT_ALIASES = {"JPG": "JPEG", "TIF": "TIFF"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PAD_TEXT = b"padding to an exact file size; "


# --------------------------------------------------------------------------- images


def make_image(size: tuple[int, int] = (32, 32), mode: str = "RGB", seed: int = 0) -> Image.Image:
    """Return a smooth random image (upsampled low-res noise) of the given size and mode."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, size=(_GRID, _GRID, 3), dtype=np.uint8)
    rgb = Image.fromarray(low).resize(size, Image.Resampling.BICUBIC)
    if mode == "RGB":
        return rgb
    if mode == "RGBA":
        rgba = rgb.copy()
        rgba.putalpha(Image.linear_gradient("L").resize(size))
        return rgba
    if mode == "P":
        return rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    if mode == "I;16":
        # Spread 8-bit grey over the full 16-bit range so the high byte carries the image.
        grey = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257
        return Image.frombytes("I;16", size, grey.astype("<u2").tobytes())
    return rgb.convert(mode)


def encode_image(
    *,
    size: tuple[int, int] = (32, 32),
    mode: str = "RGB",
    fmt: str = "JPEG",
    seed: int = 0,
    **save_kwargs: object,
) -> bytes:
    """Return the encoded bytes of ``make_image(size, mode, seed)`` in format ``fmt``."""
    buffer = io.BytesIO()
    make_image(size, mode, seed).save(buffer, format=_normalise_format(fmt), **save_kwargs)
    return buffer.getvalue()


def write_image(
    path: Path,
    *,
    size: tuple[int, int] = (32, 32),
    mode: str = "RGB",
    fmt: str = "JPEG",
    seed: int = 0,
    pad_to_bytes: int | None = None,
    **save_kwargs: object,
) -> Path:
    """Write a smooth random image to ``path`` (parents created); pad JPEG/PNG to a size."""
    data = encode_image(size=size, mode=mode, fmt=fmt, seed=seed, **save_kwargs)
    if pad_to_bytes is not None and len(data) < pad_to_bytes:
        fmt = _normalise_format(fmt)
        # "At least": a PNG can only grow by the size of its smallest exact re-encoding.
        floor = _min_padded_bytes(data, fmt)
        data = _pad_to_exact(data, fmt, max(pad_to_bytes, floor))
    return _write_bytes(path, data)


def min_exact_bytes(
    fmt: str = "JPEG",
    *,
    size: tuple[int, int] = (32, 32),
    mode: str = "RGB",
    seed: int = 0,
    **save_kwargs: object,
) -> int:
    """Return the smallest n for which ``write_image_of_exact_bytes`` can hit n (and any more)."""
    fmt = _normalise_format(fmt)
    data = encode_image(size=size, mode=mode, fmt=fmt, seed=seed, **save_kwargs)
    return _min_padded_bytes(data, fmt)


def write_image_of_exact_bytes(
    path: Path,
    n_bytes: int,
    fmt: str = "JPEG",
    seed: int = 0,
    *,
    size: tuple[int, int] = (32, 32),
    mode: str = "RGB",
    **save_kwargs: object,
) -> Path:
    """Write a valid, decodable JPEG or PNG of exactly ``n_bytes`` bytes to ``path``.

    The pixels are those of ``make_image(size, mode, seed)``; only padding differs (JPEG:
    COM segments or 0xFF fill bytes; PNG: tEXt chunks and empty deflate blocks). Raises
    ValueError if ``n_bytes`` is below ``min_exact_bytes(...)`` for these arguments.
    """
    fmt = _normalise_format(fmt)
    data = encode_image(size=size, mode=mode, fmt=fmt, seed=seed, **save_kwargs)
    floor = _min_padded_bytes(data, fmt)
    if n_bytes < floor:
        width, height = size
        msg = (
            f"{n_bytes} bytes is too small for a {width}x{height} {mode} {fmt}: the smallest "
            f"exact size is {floor} bytes; ask for at least {floor} or a smaller size"
        )
        raise ValueError(msg)
    return _write_bytes(path, _pad_to_exact(data, fmt, n_bytes))


# --------------------------------------------------------------------------- padding


def _normalise_format(fmt: str) -> str:
    fmt = fmt.upper()
    return _FORMAT_ALIASES.get(fmt, fmt)


def _min_padded_bytes(data: bytes, fmt: str) -> int:
    if fmt == "JPEG":
        return len(data)
    if fmt == "PNG":
        return len(_pad_png(data, extra=0))
    msg = f"exact sizes and pad_to_bytes support JPEG and PNG, not {fmt!r}"
    raise ValueError(msg)


def _pad_to_exact(data: bytes, fmt: str, n_bytes: int) -> bytes:
    if fmt == "JPEG":
        padded = _pad_jpeg(data, n_bytes - len(data))
    else:
        padded = _pad_png(data, extra=n_bytes - _min_padded_bytes(data, fmt))
    assert len(padded) == n_bytes, (len(padded), n_bytes)
    return padded


def _padding_text(n: int) -> bytes:
    return (_PAD_TEXT * (n // len(_PAD_TEXT) + 1))[:n]


def _pad_jpeg(data: bytes, extra: int) -> bytes:
    """Insert ``extra`` bytes after the APPn segments: COM segments, or 1-3 fill bytes."""
    if extra < 0:
        msg = f"cannot shrink a JPEG by {-extra} bytes"
        raise ValueError(msg)
    if extra == 0:
        return data
    pos = 2  # after SOI; keep JFIF/EXIF APPn segments where sniffers expect them
    while pos + 4 <= len(data) and data[pos] == 0xFF and 0xE0 <= data[pos + 1] <= 0xEF:
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    if extra < 4:
        # Shorter than the smallest segment: 0xFF fill bytes before a marker are legal
        # (ITU T.81 B.1.1.2) and libjpeg and Pillow skip them silently.
        insert = b"\xff" * extra
    else:
        max_segment = 4 + 0xFFFF - 2  # marker + length field + at most 65533 bytes
        n_segments = -(-extra // max_segment)
        payload = extra - 4 * n_segments
        sizes = [payload // n_segments] * n_segments
        sizes[0] += payload - sum(sizes)
        insert = b"".join(
            b"\xff\xfe" + (size + 2).to_bytes(2, "big") + _padding_text(size) for size in sizes
        )
    return data[:pos] + insert + data[pos:]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    if not data.startswith(_PNG_SIGNATURE):
        msg = "not a PNG"
        raise ValueError(msg)
    chunks, pos = [], len(_PNG_SIGNATURE)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def _pack_bits(bits: list[int]) -> bytes:
    bits = bits + [0] * (-len(bits) % 8)
    return bytes(
        sum(bit << i for i, bit in enumerate(bits[start : start + 8]))
        for start in range(0, len(bits), 8)
    )


def _deflate_tail(m: int, stored_final: bool) -> bytes:
    """Return ``m`` empty fixed-Huffman blocks then an empty final block, byte-aligned."""
    # Bits are LSB-first: BFINAL, then BTYPE (01 fixed, 00 stored); fixed EOB is 7 zeros.
    bits = [0, 1, 0, *[0] * 7] * m
    if stored_final:
        return _pack_bits([*bits, 1, 0, 0]) + b"\x00\x00\xff\xff"
    return _pack_bits([*bits, 1, 1, 0, *[0] * 7])


def _deflate_tails() -> dict[int, bytes]:
    """Map extra bytes (0..19 over the 2-byte minimum) to an empty-block deflate tail."""
    tails: dict[int, bytes] = {}
    for m in range(32):
        for stored_final in (False, True):
            tail = _deflate_tail(m, stored_final)
            tails.setdefault(len(tail) - 2, tail)
    return {extra: tails[extra] for extra in range(20)}


_DEFLATE_TAILS = _deflate_tails()
_TEXT_KEYWORD = b"Comment"
_TEXT_OVERHEAD = 12 + len(_TEXT_KEYWORD) + 1
_TEXT_CHUNK_MAX = 1_000_000  # below Pillow's MAX_TEXT_CHUNK, so it reads them back


def _pad_png(data: bytes, extra: int) -> bytes:
    """Re-encode a PNG with one IDAT, ``extra`` bytes longer than its smallest such form.

    The zlib stream is the same compressed scanlines, sync-flushed, then empty deflate
    blocks chosen to add 0-19 bytes; larger amounts go into tEXt chunks before IEND.
    """
    if extra < 0:
        msg = f"cannot shrink a PNG by {-extra} bytes"
        raise ValueError(msg)
    chunks = _png_chunks(data)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    compressor = zlib.compressobj(9)
    head = compressor.compress(raw) + compressor.flush(zlib.Z_SYNC_FLUSH)
    texts: list[bytes] = []
    while extra >= _TEXT_OVERHEAD:
        n_text = min(extra - _TEXT_OVERHEAD, _TEXT_CHUNK_MAX)
        texts.append(_png_chunk(b"tEXt", _TEXT_KEYWORD + b"\x00" + _padding_text(n_text)))
        extra -= _TEXT_OVERHEAD + n_text
    idat = head + _DEFLATE_TAILS[extra] + struct.pack(">I", zlib.adler32(raw))
    out = [_PNG_SIGNATURE]
    idat_written = False
    for kind, body in chunks:
        if kind == b"IDAT":
            if not idat_written:
                out.append(_png_chunk(b"IDAT", idat))
                idat_written = True
        elif kind == b"IEND":
            out.extend(texts)
            out.append(_png_chunk(b"IEND", body))
        else:
            out.append(_png_chunk(kind, body))
    return b"".join(out)


def _write_bytes(path: Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- folders


def write_clean_folder(
    root: Path,
    n_per_class: int = 4,
    classes: tuple[str, ...] = ("happy", "sad"),
    size: tuple[int, int] = (32, 32),
    seed: int = 0,
) -> dict[str, list[str]]:
    """Write distinct JPEGs as ``root/<class>/<class>_NNN.jpg``; return {class: [paths]}."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    layout: dict[str, list[str]] = {}
    for class_index, name in enumerate(classes):
        layout[name] = []
        for i in range(n_per_class):
            rel = f"{name}/{name}_{i:03d}.jpg"
            write_image(root / rel, size=size, seed=seed * 100_000 + class_index * 1_000 + i)
            layout[name].append(rel)
    return layout


def write_single_class_folder(root: Path, n_images: int = 4, seed: int = 0) -> Path:
    """Write a root holding only ``happy/`` with ``n_images`` JPEGs; return the root."""
    write_clean_folder(root, n_per_class=n_images, classes=("happy",), seed=seed)
    return Path(root)


@dataclass(frozen=True)
class HostileCorpus:
    """What write_hostile_folder made: case id -> relative POSIX path, and what it skipped.

    A case id is in ``cases`` when its file, folder or link exists. ``skipped`` says why a
    case is missing, or why its property could not be enforced (e.g. ``unreadable`` when
    running as root: the file exists with mode 000 but can still be read). Companion keys
    name a case's second path: ``exact_duplicate_of``, ``label_conflict_other``,
    ``symlink_loop_other``, ``ds_store_in_class``, ``stray_root_file_other``.
    """

    root: Path
    cases: dict[str, str | None]
    skipped: dict[str, str]
    clean: dict[str, list[str]] = field(default_factory=dict)

    def path(self, case: str) -> Path:
        """Return the absolute path of ``case``; KeyError if it was not created."""
        rel = self.cases[case]
        if rel is None:
            msg = f"case {case!r} is a folder-level property with no path"
            raise ValueError(msg)
        return self.root / rel


class _SkipCase(Exception):
    """This OS or filesystem cannot produce the case; the message says why."""


_HTML_ERROR_PAGE = b"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>403 Forbidden</title></head>
<body>
<h1>403 Forbidden</h1>
<p>You don't have permission to access this resource.</p>
<hr><address>nginx/1.18.0 (Ubuntu)</address>
</body>
</html>
"""

_TEXT_ERROR = b"Sorry, this image is no longer available.\nIt may have been removed by its owner.\n"

_SVG = b"""<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">
  <circle cx="32" cy="32" r="30" fill="#ffd93b"/>
  <circle cx="22" cy="26" r="4" fill="#3e4347"/>
  <circle cx="42" cy="26" r="4" fill="#3e4347"/>
  <path d="M18 40 Q32 54 46 40" stroke="#3e4347" stroke-width="4" fill="none"/>
</svg>
"""

_README = b"# Faces\n\nScraped 2021-03-04 with an image downloader; one folder per label.\n"
_NOTES = b"todo:\n- remove the memes from happy/\n- ask about the neutral ones\n"


class _HostileWriter:
    """Creates the hostile cases one by one; every image gets its own seed."""

    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.base_seed = seed * 100_000
        # Cases that exist but whose property this machine cannot enforce: case -> why.
        self.notes: dict[str, str] = {}

    def seed_for(self, case_index: int, k: int = 0) -> int:
        return self.base_seed + 10 * case_index + k

    def image(self, rel: str, seed: int, **kwargs: object) -> str:
        write_image(self.root / rel, seed=seed, **kwargs)
        return rel

    def raw(self, rel: str, data: bytes) -> str:
        _write_bytes(self.root / rel, data)
        return rel

    def junk(self, header: bytes, total: int, seed: int) -> bytes:
        rng = np.random.default_rng(seed)
        return header + rng.integers(0, 256, total - len(header), dtype=np.uint8).tobytes()


def _bomb_png() -> bytes:
    """A PNG whose IHDR says 40000x40000 grey, with only the first rows' zeros in IDAT."""
    ihdr = struct.pack(">IIBBBBB", BOMB_SIDE_PX, BOMB_SIDE_PX, 8, 0, 0, 0, 0)
    # 16 rows (filter byte + zeros) compress to well under 1 KB; the rest is never written,
    # so nothing near 1.6 GB is ever allocated here.
    rows = zlib.compress(b"\x00" * ((BOMB_SIDE_PX + 1) * 16), 9)
    return (
        _PNG_SIGNATURE
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", rows)
        + _png_chunk(b"IEND", b"")
    )


def _case_makers(w: _HostileWriter) -> dict[str, Callable[[int], Mapping[str, str | None]]]:
    root = w.root

    def zero_byte(i: int) -> Mapping[str, str | None]:
        return {"zero_byte": w.raw("happy/download.jpg", b"")}

    def truncated_jpeg(i: int) -> Mapping[str, str | None]:
        data = encode_image(size=(96, 96), seed=w.seed_for(i))
        return {"truncated_jpeg": w.raw("happy/IMG_20190612_143012.jpg", data[: len(data) // 2])}

    def truncated_png(i: int) -> Mapping[str, str | None]:
        data = encode_image(size=(64, 64), fmt="PNG", seed=w.seed_for(i))
        rel = "sad/Screenshot 2021-03-04 at 10.12.55.png"
        return {"truncated_png": w.raw(rel, data[: len(data) // 2])}

    def random_bytes_jpg(i: int) -> Mapping[str, str | None]:
        return {"random_bytes_jpg": w.raw("happy/th.jpg", w.junk(b"", 2048, w.seed_for(i)))}

    def html_as_jpg(i: int) -> Mapping[str, str | None]:
        return {"html_as_jpg": w.raw("happy/images (3).jpg", _HTML_ERROR_PAGE)}

    def text_as_jpg(i: int) -> Mapping[str, str | None]:
        return {"text_as_jpg": w.raw("sad/OIP.jpg", _TEXT_ERROR)}

    def svg(i: int) -> Mapping[str, str | None]:
        return {"svg": w.raw("happy/smiley.svg", _SVG)}

    def animated_gif(i: int) -> Mapping[str, str | None]:
        frames = [make_image((32, 32), "P", w.seed_for(i, k)) for k in range(3)]
        buffer = io.BytesIO()
        frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
        return {"animated_gif": w.raw("happy/giphy.gif", buffer.getvalue())}

    def cmyk_jpeg(i: int) -> Mapping[str, str | None]:
        rel = "sad/stock-photo-sad-man.jpg"
        return {"cmyk_jpeg": w.image(rel, w.seed_for(i), mode="CMYK")}

    def png16(i: int) -> Mapping[str, str | None]:
        return {"png16": w.image("sad/scan_16bit.png", w.seed_for(i), mode="I;16", fmt="PNG")}

    def grayscale(i: int) -> Mapping[str, str | None]:
        return {"grayscale": w.image("sad/old_photo_bw.jpg", w.seed_for(i), mode="L")}

    def palette_png(i: int) -> Mapping[str, str | None]:
        rel = "happy/emoji_smile.png"
        return {"palette_png": w.image(rel, w.seed_for(i), mode="P", fmt="PNG")}

    def rgba_png(i: int) -> Mapping[str, str | None]:
        rel = "happy/smile-transparent.png"
        return {"rgba_png": w.image(rel, w.seed_for(i), mode="RGBA", fmt="PNG")}

    def exif_rotated_jpeg(i: int) -> Mapping[str, str | None]:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION_TAG] = 6  # stored landscape, shown portrait (rotate 90 CW)
        rel = "sad/IMG_0042.JPG"
        image = w.image(rel, w.seed_for(i), size=(48, 32), exif=exif.tobytes())
        return {"exif_rotated_jpeg": image}

    def tiny_1x1(i: int) -> Mapping[str, str | None]:
        return {"tiny_1x1": w.image("happy/pixel.png", w.seed_for(i), size=(1, 1), fmt="PNG")}

    def bomb(i: int) -> Mapping[str, str | None]:
        return {"bomb": w.raw("sad/panorama_huge.png", _bomb_png())}

    def dir_named_jpg(i: int) -> Mapping[str, str | None]:
        (root / "happy/photo.jpg").mkdir(parents=True)
        return {"dir_named_jpg": "happy/photo.jpg"}

    def dangling_symlink(i: int) -> Mapping[str, str | None]:
        os.symlink("../old_downloads/missing.jpg", root / "happy/missing.jpg")
        return {"dangling_symlink": "happy/missing.jpg"}

    def symlink_loop(i: int) -> Mapping[str, str | None]:
        os.symlink("b.jpg", root / "sad/a.jpg")
        os.symlink("a.jpg", root / "sad/b.jpg")
        return {"symlink_loop": "sad/a.jpg", "symlink_loop_other": "sad/b.jpg"}

    def symlink_outside_root(i: int) -> Mapping[str, str | None]:
        # a good image, but beside the root: its content must not get in through a link
        w.image(f"../{OUTSIDE_FOLDER}/secret.jpg", w.seed_for(i))
        os.symlink(f"../../{OUTSIDE_FOLDER}/secret.jpg", root / "happy/linked.jpg")
        return {"symlink_outside_root": "happy/linked.jpg"}

    def non_utf8_name(i: int) -> Mapping[str, str | None]:
        if os.name != "posix":
            raise _SkipCase(f"file names are text on {os.name}; no bytes to make invalid")
        name = b"caf\xe9.jpg"  # Latin-1 'café', as unzipped from an old Windows archive
        folder = os.fsencode(root / "happy")
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(encode_image(seed=w.seed_for(i)))
        if name not in os.listdir(folder):
            raise _SkipCase("the filesystem stored the name under other bytes")
        return {"non_utf8_name": "happy/" + os.fsdecode(name)}

    def html_injection_name(i: int) -> Mapping[str, str | None]:
        rel = "sad/<img src=x onerror=alert(1)>.jpg"
        return {"html_injection_name": w.image(rel, w.seed_for(i))}

    def nested_deep(i: int) -> Mapping[str, str | None]:
        return {"nested_deep": w.image("happy/a/b/c/deep.jpg", w.seed_for(i))}

    def ds_store(i: int) -> Mapping[str, str | None]:
        header = b"\x00\x00\x00\x01Bud1"
        return {
            "ds_store": w.raw(".DS_Store", w.junk(header, 6148, w.seed_for(i))),
            "ds_store_in_class": w.raw("happy/.DS_Store", w.junk(header, 6148, w.seed_for(i, 1))),
        }

    def appledouble(i: int) -> Mapping[str, str | None]:
        header = b"\x00\x05\x16\x07\x00\x02\x00\x00" + b"Mac OS X        "
        return {"appledouble": w.raw("sad/._IMG_0042.JPG", w.junk(header, 4096, w.seed_for(i)))}

    def png_named_jpg(i: int) -> Mapping[str, str | None]:
        return {"png_named_jpg": w.image("sad/images18.jpg", w.seed_for(i), fmt="PNG")}

    def webp(i: int) -> Mapping[str, str | None]:
        if not features.check("webp"):
            raise _SkipCase("this Pillow was built without WebP support")
        return {"webp": w.image("happy/smile.webp", w.seed_for(i), fmt="WEBP")}

    def bmp(i: int) -> Mapping[str, str | None]:
        return {"bmp": w.image("sad/frown.bmp", w.seed_for(i), fmt="BMP")}

    def exact_duplicate(i: int) -> Mapping[str, str | None]:
        data = encode_image(seed=w.seed_for(i))
        return {
            "exact_duplicate_of": w.raw("happy/images (1).jpg", data),
            "exact_duplicate": w.raw("happy/images (2).jpg", data),
        }

    def label_conflict(i: int) -> Mapping[str, str | None]:
        data = encode_image(seed=w.seed_for(i))
        return {
            "label_conflict": w.raw("happy/stock-portrait.jpg", data),
            "label_conflict_other": w.raw("sad/stock-portrait (1).jpg", data),
        }

    def empty_class(i: int) -> Mapping[str, str | None]:
        (root / "neutral").mkdir()
        return {"empty_class": "neutral"}

    def stray_root_file(i: int) -> Mapping[str, str | None]:
        return {
            "stray_root_file": w.raw("README.md", _README),
            "stray_root_file_other": w.raw("notes.txt", _NOTES),
        }

    def unreadable(i: int) -> Mapping[str, str | None]:
        rel = w.image("sad/IMG_0007.jpg", w.seed_for(i))
        os.chmod(root / rel, 0)
        try:
            with open(root / rel, "rb") as handle:
                handle.read(1)
        except PermissionError:
            return {"unreadable": rel}
        w.notes["unreadable"] = (
            "mode 000 does not stop this process reading (running as root or with "
            "CAP_DAC_OVERRIDE); the file exists with mode 000 but stays readable"
        )
        return {"unreadable": rel}

    return {
        "zero_byte": zero_byte,
        "truncated_jpeg": truncated_jpeg,
        "truncated_png": truncated_png,
        "random_bytes_jpg": random_bytes_jpg,
        "html_as_jpg": html_as_jpg,
        "text_as_jpg": text_as_jpg,
        "svg": svg,
        "animated_gif": animated_gif,
        "cmyk_jpeg": cmyk_jpeg,
        "png16": png16,
        "grayscale": grayscale,
        "palette_png": palette_png,
        "rgba_png": rgba_png,
        "exif_rotated_jpeg": exif_rotated_jpeg,
        "tiny_1x1": tiny_1x1,
        "bomb": bomb,
        "dir_named_jpg": dir_named_jpg,
        "dangling_symlink": dangling_symlink,
        "symlink_loop": symlink_loop,
        "symlink_outside_root": symlink_outside_root,
        "unreadable": unreadable,
        "non_utf8_name": non_utf8_name,
        "html_injection_name": html_injection_name,
        "nested_deep": nested_deep,
        "ds_store": ds_store,
        "appledouble": appledouble,
        "png_named_jpg": png_named_jpg,
        "webp": webp,
        "bmp": bmp,
        "exact_duplicate": exact_duplicate,
        "label_conflict": label_conflict,
        "empty_class": empty_class,
        "stray_root_file": stray_root_file,
    }


def write_hostile_folder(root: Path, seed: int = 0) -> HostileCorpus:
    """Write every case in HOSTILE_CASES, plus 3 clean JPEGs per class, into ``root``.

    ``root`` is created if missing and should be empty. A case the OS or filesystem
    refuses (OSError) is recorded in ``skipped`` instead of raising.
    """
    root = Path(root)
    for folder in ("happy", "sad"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    w = _HostileWriter(root, seed)
    clean = {
        name: [
            w.image(f"{name}/{name}_{k:03d}.jpg", w.base_seed + 90_000 + 100 * class_index + k)
            for k in range(3)
        ]
        for class_index, name in enumerate(("happy", "sad"))
    }
    makers = _case_makers(w)
    cases: dict[str, str | None] = {}
    skipped: dict[str, str] = {}
    for case_index, case in enumerate(HOSTILE_CASES):
        try:
            made = makers[case](case_index)
        except _SkipCase as exc:
            skipped[case] = str(exc)
        except (OSError, NotImplementedError) as exc:
            skipped[case] = f"{type(exc).__name__}: {exc}"
        else:
            cases.update(made)
    skipped.update(w.notes)
    return HostileCorpus(root=root, cases=cases, skipped=skipped, clean=clean)


N_PER_CLASS = 20
#: Files written into the other class's folder: the audit must find them.
N_FLIPPED = 2


def write_flipped_folder(root: Path) -> list[str]:
    """Bright happy, dark sad images; N_FLIPPED of each class filed under the other.
    Returns the flipped files' paths."""
    rng = np.random.default_rng(0)
    flipped = []
    for name, level, other in (("happy", 200, "sad"), ("sad", 50, "happy")):
        for i in range(N_PER_CLASS + N_FLIPPED):
            pixels = np.clip(rng.normal(level, 25, size=(8, 8, 3)), 0, 255).astype(np.uint8)
            img = Image.fromarray(pixels).resize((32, 32), Image.Resampling.BICUBIC)
            folder = name if i < N_PER_CLASS else other
            (root / folder).mkdir(parents=True, exist_ok=True)
            img.save(root / folder / f"{name}_{i:03d}.png")
            if i >= N_PER_CLASS:
                flipped.append(f"{folder}/{name}_{i:03d}.png")
    return flipped
