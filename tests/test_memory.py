"""What one big image may cost: every decoder holds the decoded pixels once, plus small
copies, and takes turns with other big ones, so a folder of them costs no more than one.

Each measurement runs in a fresh Python (peak RSS only ever grows within a process): the
child decodes a small image first, so that imports and the face model are in the baseline,
then the big ones, and prints how far its peak grew.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import imagehash
import numpy as np
import pytest
from conftest import iou
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from toolkit import images
from toolkit.demo import write_demo_data
from toolkit.scan import DRAFT_SIDE_PX, FileScanner, ScanOptions, _phash_copy

#: Side of the big test image: 144 MB decoded as RGBA, a few KB as a PNG.
BIG_SIDE_PX = 6000
DECODED_BYTES = BIG_SIDE_PX * BIG_SIDE_PX * 4
#: What a big image may add to a process's peak: the decoded pixels once, and half that for
#: everything else (bands, reduced copies, the face pass, allocator slack). Converting the
#: whole picture, as alpha over white did, costs several times the decoded pixels.
ALLOWED_GROWTH_BYTES = DECODED_BYTES * 3 // 2


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """happy/ with three big RGBA PNGs (flat colour, an alpha ramp) and a small JPEG."""
    root = tmp_path_factory.mktemp("big") / "data"
    (root / "happy").mkdir(parents=True)
    ramp = np.linspace(0, 255, BIG_SIDE_PX, dtype=np.uint8)
    for i in range(3):
        pixels = np.empty((BIG_SIDE_PX, BIG_SIDE_PX, 4), np.uint8)
        pixels[..., :3] = (40 + 60 * i, 120, 200)
        pixels[..., 3] = ramp[None, :]
        Image.fromarray(pixels, "RGBA").save(root / "happy" / f"big{i}.png", compress_level=1)
    small = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(small).save(root / "happy" / "small.jpg")
    return root


needs_rusage = pytest.mark.skipif(sys.platform == "win32", reason="no resource module")


def _peak_growth(body: str, root: Path) -> int:
    """Run `body` in a fresh Python, with `root`, `big` (the big PNGs' paths) and `peak()`
    in scope; the bytes by which its peak RSS grew after the body set `before = peak()`."""
    script = (
        textwrap.dedent(
            """
        import json, resource, sys
        from pathlib import Path
        root = Path(sys.argv[1])
        big = sorted(str(p.relative_to(root)) for p in root.glob("*/big*.png"))
        def peak():  # ru_maxrss counts KiB, except on macOS, where it counts bytes
            unit = 1 if sys.platform == "darwin" else 1024
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit
        """
        )
        + textwrap.dedent(body)
        + "\nprint(json.dumps(peak() - before))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(root)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return int(json.loads(done.stdout.strip().splitlines()[-1]))


@needs_rusage
@pytest.mark.parametrize("faces", [True, False], ids=["with the face pass", "without it"])
def test_scanning_big_pngs_holds_the_decoded_pixels_once(big_folder: Path, faces: bool) -> None:
    growth = _peak_growth(
        f"""
        from toolkit.scan import FileScanner, ScanOptions
        scanner = FileScanner(root, ScanOptions(detect_faces={faces}))
        assert scanner.scan("happy/small.jpg")["is_decodable"]
        before = peak()
        rows = [scanner.scan(rel) for rel in big]
        assert all(r["is_decodable"] and r["phash"] for r in rows), rows
        """,
        big_folder,
    )
    assert growth < ALLOWED_GROWTH_BYTES, f"{growth / 2**20:.0f} MiB"


@needs_rusage
def test_thumbnails_of_big_pngs_take_turns(big_folder: Path) -> None:
    growth = _peak_growth(
        """
        import pandas as pd
        from toolkit.report.thumbnails import make_thumbnails
        def rows(paths):
            return pd.DataFrame({"path": paths, "is_readable": True, "is_decodable": True,
                                 "width_px": pd.NA, "height_px": pd.NA})
        assert make_thumbnails(rows(["happy/small.jpg"]), root, max_pixels=10**8)
        before = peak()
        thumbs = make_thumbnails(rows(big), root, max_pixels=10**8, jobs=len(big))
        assert all(t.src for t in thumbs.values()), thumbs
        """,
        big_folder,
    )
    assert growth < ALLOWED_GROWTH_BYTES, f"{growth / 2**20:.0f} MiB"


@needs_rusage
def test_training_decodes_of_big_pngs_take_turns(big_folder: Path) -> None:
    growth = _peak_growth(
        """
        import pandas as pd
        from toolkit.models import InputSpec
        from toolkit.pipeline import decode_rows
        spec = InputSpec(size=64)
        def rows(paths):
            return pd.DataFrame({"path": paths, "label": "happy"})
        assert not decode_rows(rows(["happy/small.jpg"]), spec, ["happy"], root=root).problems
        before = peak()
        decoded = decode_rows(rows(big), spec, ["happy"], root=root, jobs=len(big))
        assert not decoded.problems and decoded.images.min() > 0, decoded.problems
        """,
        big_folder,
    )
    assert growth < ALLOWED_GROWTH_BYTES, f"{growth / 2**20:.0f} MiB"


def test_a_face_in_a_big_png_is_boxed_in_the_files_pixels(tmp_path: Path) -> None:
    demo = write_demo_data(tmp_path / "demo", n_per_class=4)
    scanner = FileScanner(demo.root, ScanOptions())
    planted = {rel for rels in demo.defects.values() for rel in rels}
    rows = [scanner.scan(p.relative_to(demo.root).as_posix()) for p in demo.root.rglob("*.jpg")]
    row = next(r for r in rows if r["n_faces"] == 1 and r["path"] not in planted)
    scale = 8
    with Image.open(demo.root / row["path"]) as small:
        big = small.convert("RGBA").resize((small.width * scale, small.height * scale))
    big.save(tmp_path / "big.png", compress_level=1)
    found = FileScanner(tmp_path, ScanOptions()).scan("big.png")
    assert found["n_faces"] == 1
    expected = tuple(row[k] * scale for k in ("face_x", "face_y", "face_w", "face_h"))
    got = tuple(found[k] for k in ("face_x", "face_y", "face_w", "face_h"))
    assert iou(got, expected) > 0.6, (got, expected)


@pytest.mark.parametrize(
    ("mode", "fmt", "size"),
    [("RGBA", "PNG", (700, 500)), ("I;16", "PNG", (300, 900)), ("RGB", "JPEG", (1600, 1200))],
    ids=["a transparent PNG", "a 16-bit PNG", "a photo, decoded at reduced DCT scale"],
)
def test_ordinary_images_hash_as_the_whole_flattened_picture(
    tmp_path: Path, mode: str, fmt: str, size: tuple[int, int]
) -> None:
    img = _any_mode(mode, size, seed=5)
    img.save(tmp_path / "pic", format=fmt)
    row = FileScanner(tmp_path, ScanOptions(detect_faces=False)).scan("pic")
    with Image.open(tmp_path / "pic") as opened:
        if fmt == "JPEG":
            opened.draft("RGB", (DRAFT_SIDE_PX, DRAFT_SIDE_PX))
        whole = images.flatten(opened)
        assert row["phash"] == str(imagehash.phash(_phash_copy(whole.convert("L"))))


# ------------------------------------------------------------- what the reduced copy holds

MODES = ["RGB", "RGBA", "LA", "L", "P", "PA", "I;16", "I", "F", "CMYK", "LAB", "1"]


def _any_mode(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    rgba = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8), "RGBA")
    if mode in ("I;16", "I", "F"):
        deep = Image.fromarray(rng.integers(0, 2**16, (size[1], size[0])).astype(np.uint16))
        return deep if mode == "I;16" else deep.convert(mode)
    if mode == "P":
        return rgba.convert("RGB").convert("P")
    if mode == "PA":
        return rgba.convert("PA")
    return rgba.convert(mode)


@pytest.mark.parametrize("mode", MODES, ids=[f"{m} pixels" for m in MODES])
def test_flattening_by_bands_gives_the_same_pixels_as_whole(mode: str) -> None:
    img = _any_mode(mode, (37, 301), seed=len(mode))
    whole = images.flatten(img.copy())
    banded = images.flatten_reduced(img, 1, band_px=16)
    assert banded.mode == whole.mode
    assert np.array_equal(np.asarray(banded), np.asarray(whole))


@pytest.mark.parametrize("mode", MODES, ids=[f"{m} pixels" for m in MODES])
def test_a_reduced_copy_is_the_box_average_of_the_flattened_picture(mode: str) -> None:
    img = _any_mode(mode, (53, 130), seed=7)
    expected = images.flatten(img.copy()).reduce(3)
    reduced = images.flatten_reduced(img, 3, band_px=16)
    assert reduced.size == expected.size == (18, 44)
    assert np.array_equal(np.asarray(reduced), np.asarray(expected))


def test_a_box_of_the_picture_is_flattened_and_reduced_alone() -> None:
    img = _any_mode("RGBA", (80, 60), seed=3)
    box = (10, 5, 70, 47)
    expected = images.flatten(img.copy()).crop(box).reduce(4)
    assert np.array_equal(np.asarray(images.flatten_reduced(img, 4, box=box, band_px=8)), expected)


@settings(max_examples=40, deadline=None)
@given(
    mode=st.sampled_from(MODES),
    width=st.integers(1, 40),
    height=st.integers(1, 40),
    factor=st.integers(1, 6),
    band_px=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_any_banding_gives_the_pixels_of_the_whole_picture(
    mode: str, width: int, height: int, factor: int, band_px: int, seed: int
) -> None:
    img = _any_mode(mode, (width, height), seed)
    expected = images.flatten(img.copy()).reduce(factor)
    reduced = images.flatten_reduced(img, factor, band_px=band_px)
    assert np.array_equal(np.asarray(reduced), np.asarray(expected))


# ---------------------------------------------- decoders that hold more than the picture

SIDE_PX = (3000, 2000)


def _write_16_bit_tiff(path: Path) -> None:
    """A 16-bit RGBA TIFF, deflated in one strip (Pillow cannot write one), which libtiff
    reads whole at 8 bytes a pixel before Pillow's 4."""
    import struct
    import zlib

    width, height = SIDE_PX
    pixels = np.zeros((height, width, 4), "<u2")
    pixels[..., 0], pixels[..., 3] = 40000, 65535
    strip = zlib.compress(pixels.tobytes(), 1)
    tags = [  # (tag, type, count, value): 3 is a 16-bit value, 4 a 32-bit one
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 4, 4, 8),  # bits per sample: four 16s, at offset 8
        (259, 3, 1, 8),  # deflate
        (262, 3, 1, 2),  # RGB
        (273, 4, 1, 16),  # the strip, after the header and the bits per sample
        (277, 3, 1, 4),
        (278, 4, 1, height),  # one strip holds every row
        (279, 4, 1, len(strip)),
        (338, 3, 1, 2),  # unassociated alpha
    ]
    ifd = struct.pack("<H", len(tags)) + b"".join(
        struct.pack("<HHIHH", tag, 3, 1, value, 0)
        if typ == 3
        else struct.pack("<HHII", tag, 3 if tag == 258 else typ, count, value)
        for tag, typ, count, value in tags
    )
    padded = strip + b"\x00" * (len(strip) % 2)  # the directory starts on a word boundary
    head = b"II*\x00" + struct.pack("<I", 16 + len(padded)) + struct.pack("<4H", *[16] * 4)
    path.write_bytes(head + padded + ifd + struct.pack("<I", 0))


def _write_big(path: Path) -> None:
    if path.suffix == ".tif":
        _write_16_bit_tiff(path)
        return
    pixels = np.zeros((SIDE_PX[1], SIDE_PX[0], 4), np.uint8)
    pixels[..., :3], pixels[..., 3] = (40, 120, 200), np.linspace(0, 255, SIDE_PX[0])[None]
    options = {".webp": {"lossless": True, "method": 0}, ".avif": {"speed": 10}}
    Image.fromarray(pixels, "RGBA").save(path, **options.get(path.suffix, {}))


#: What the scan holds beside the decoder: a band being flattened, the reduced copy, hashes.
SCAN_SLACK_BYTES = 32 * 2**20
HUNGRY = ["big.webp", "big.jp2", "big.avif", "big.tif", "big.png"]


@needs_rusage
@pytest.mark.parametrize(
    "name",
    HUNGRY,
    ids=[
        "libwebp keeps a canvas and a copy",
        "OpenJPEG keeps 32-bit samples",
        "libavif keeps an RGB buffer",
        "libtiff reads a 16-bit strip whole",
        "a PNG decodes straight into the picture",
    ],
)
def test_the_header_reckons_at_least_what_decoding_holds(tmp_path: Path, name: str) -> None:
    (tmp_path / "happy").mkdir()
    _write_big(tmp_path / "happy" / name)
    Image.new("RGB", (40, 30), "grey").save(tmp_path / "happy" / "small.png")
    with Image.open(tmp_path / "happy" / name) as img:
        reckoned = images.decode_bytes(img)
    growth = _peak_growth(
        f"""
        from toolkit.scan import FileScanner, ScanOptions
        scanner = FileScanner(root, ScanOptions(detect_faces=False))
        assert scanner.scan("happy/small.png")["is_decodable"]
        before = peak()
        assert scanner.scan("happy/{name}")["is_decodable"]
        """,
        tmp_path,
    )
    assert growth <= reckoned + SCAN_SLACK_BYTES, (
        f"{growth / 2**20:.0f} MiB, reckoned {reckoned / 2**20:.0f}"
    )


@pytest.mark.parametrize("name", HUNGRY[:4], ids=HUNGRY[:4])
def test_a_file_whose_decoder_would_hold_more_than_the_budget_is_not_decoded(
    tmp_path: Path, name: str
) -> None:
    _write_big(tmp_path / name)
    pixels_only = SIDE_PX[0] * SIDE_PX[1] * images.MAX_BYTES_PER_PIXEL
    tight = FileScanner(tmp_path, ScanOptions(detect_faces=False, max_decode_bytes=pixels_only))
    row = tight.scan(name)
    assert not row["is_decodable"] and (row["width_px"], row["height_px"]) == SIDE_PX
    assert "MB to decode, over the scan's 24 MB" in row["decode_error"]
    roomy = FileScanner(tmp_path, ScanOptions(detect_faces=False))
    assert roomy.scan(name)["is_decodable"]


@pytest.mark.parametrize(
    ("compression", "beside"),
    [("raw", 0), ("packbits", 0), ("tiff_lzw", 3), ("tiff_adobe_deflate", 3)],
    ids=[
        "an uncompressed TIFF is read row by row",
        "so is PackBits",
        "LZW goes through libtiff, a strip at a time",
        "so does deflate",
    ],
)
def test_a_tiff_is_reckoned_with_the_strip_libtiff_reads(
    tmp_path: Path, compression: str, beside: int
) -> None:
    width, height, rows_per_strip = 64, 48, 16
    img = Image.new("RGB", (width, height), "teal")
    img.save(tmp_path / "a.tif", compression=compression, tiffinfo={278: rows_per_strip})
    with Image.open(tmp_path / "a.tif") as opened:
        reckoned = images.decode_bytes(opened)
    strip = rows_per_strip * width * beside
    assert reckoned == width * height * images.MAX_BYTES_PER_PIXEL + strip


def test_a_png_within_the_pixel_limit_is_within_the_byte_budget(tmp_path: Path) -> None:
    _write_big(tmp_path / "big.png")
    pixels_only = SIDE_PX[0] * SIDE_PX[1] * images.MAX_BYTES_PER_PIXEL
    scanner = FileScanner(tmp_path, ScanOptions(detect_faces=False, max_decode_bytes=pixels_only))
    assert scanner.scan("big.png")["is_decodable"]
