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

import numpy as np
import pytest
from PIL import Image

from toolkit import images

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
        def peak():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
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


def test_training_decodes_of_big_pngs_take_turns(big_folder: Path) -> None:
    growth = _peak_growth(
        """
        import pandas as pd
        from toolkit.pipeline import InputSpec, decode_rows
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
