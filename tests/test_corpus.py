"""The test corpus makes what it claims: every case, byte-identical on every run."""

from __future__ import annotations

import hashlib
import itertools
import os
import stat
import struct
import sys
from pathlib import Path

import cv2
import imagehash
import numpy as np
import pytest
from corpus import (
    BOMB_SIDE_PX,
    EXIF_ORIENTATION_TAG,
    HOSTILE_CASES,
    HostileCorpus,
    encode_image,
    make_image,
    min_exact_bytes,
    write_clean_folder,
    write_hostile_folder,
    write_image,
    write_image_of_exact_bytes,
    write_single_class_folder,
)
from PIL import Image, ImageOps, UnidentifiedImageError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"

# Perceptual-hash distance (of 64 bits) under which two images would pass for near
# duplicates; distinct seeds land far above it (see corpus._GRID).
NEAR_DUPLICATE_BITS = 10


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> HostileCorpus:
    """One hostile folder shared by the read-only checks below."""
    return write_hostile_folder(tmp_path_factory.mktemp("hostile") / "faces")


def _case_path(corpus: HostileCorpus, case: str) -> Path:
    if case not in corpus.cases:
        pytest.skip(f"{case} not made here: {corpus.skipped.get(case)}")
    return corpus.path(case)


def _snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under root: regular files by bytes, links by target, dirs by name."""
    entries: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            rel = full.relative_to(root).as_posix()
            mode = full.lstat().st_mode
            if stat.S_ISLNK(mode):
                entries[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(mode):
                entries[rel] = ("dir",)
            elif os.access(full, os.R_OK):
                entries[rel] = ("file", full.read_bytes())
            else:
                entries[rel] = ("unreadable", full.lstat().st_size)
    return entries


def _phash(path: Path) -> imagehash.ImageHash:
    with Image.open(path) as image:
        return imagehash.phash(image.convert("RGB"))


def _assert_no_near_duplicates(paths: list[Path]) -> None:
    hashes = {path: _phash(path) for path in paths}
    for (a, hash_a), (b, hash_b) in itertools.combinations(hashes.items(), 2):
        assert hash_a - hash_b > NEAR_DUPLICATE_BITS, f"{a.name} ~ {b.name}"


# --------------------------------------------------------------------------- write_image


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("RGB", "JPEG"),
        ("L", "JPEG"),
        ("CMYK", "JPEG"),
        ("RGB", "PNG"),
        ("RGBA", "PNG"),
        ("P", "PNG"),
        ("I;16", "PNG"),
        ("RGB", "BMP"),
        ("P", "GIF"),
        ("RGB", "WEBP"),
    ],
    ids=[
        "colour JPEG",
        "grey JPEG",
        "CMYK JPEG",
        "colour PNG",
        "PNG with alpha",
        "palette PNG",
        "16-bit grey PNG",
        "BMP",
        "GIF",
        "WebP",
    ],
)
def test_write_image_writes_the_asked_mode_and_format(tmp_path: Path, mode: str, fmt: str) -> None:
    path = write_image(tmp_path / "new" / "folder" / "x.img", size=(40, 24), mode=mode, fmt=fmt)
    with Image.open(path) as image:
        assert (image.format, image.mode, image.size) == (fmt, mode, (40, 24))


def test_write_image_is_byte_identical_for_a_seed_and_different_across_seeds(
    tmp_path: Path,
) -> None:
    first = write_image(tmp_path / "a.jpg", seed=7).read_bytes()
    again = write_image(tmp_path / "b.jpg", seed=7).read_bytes()
    other = write_image(tmp_path / "c.jpg", seed=8)
    assert first == again
    assert _phash(tmp_path / "a.jpg") - _phash(other) > NEAR_DUPLICATE_BITS


def test_images_of_distinct_seeds_are_far_apart_in_perceptual_hash() -> None:
    hashes = [imagehash.phash(make_image(seed=seed)) for seed in range(40)]
    assert min(a - b for a, b in itertools.combinations(hashes, 2)) > NEAR_DUPLICATE_BITS


@pytest.mark.parametrize(
    ("fmt", "pad_to_bytes"),
    [("JPEG", 2_000), ("JPEG", 200_000), ("PNG", 3_000), ("PNG", 300_000)],
    ids=[
        "JPEG padded by one COM segment",
        "JPEG padded past one segment's 64 KiB",
        "PNG padded by a tEXt chunk",
        "PNG padded by a large tEXt chunk",
    ],
)
def test_pad_to_bytes_hits_the_size_and_keeps_the_pixels(
    tmp_path: Path, fmt: str, pad_to_bytes: int
) -> None:
    plain = write_image(tmp_path / "plain", fmt=fmt)
    padded = write_image(tmp_path / "padded", fmt=fmt, pad_to_bytes=pad_to_bytes)
    assert padded.stat().st_size == pad_to_bytes
    with Image.open(plain) as a, Image.open(padded) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_pad_to_bytes_just_over_a_png_grows_it_to_its_smallest_exact_form(tmp_path: Path) -> None:
    plain_bytes = len(encode_image(fmt="PNG"))
    padded = write_image(tmp_path / "x.png", fmt="PNG", pad_to_bytes=plain_bytes + 1)
    assert padded.stat().st_size == max(plain_bytes + 1, min_exact_bytes("PNG"))


def test_pad_to_bytes_below_the_natural_size_changes_nothing(tmp_path: Path) -> None:
    plain = write_image(tmp_path / "plain.jpg").read_bytes()
    padded = write_image(tmp_path / "padded.jpg", pad_to_bytes=len(plain) // 2).read_bytes()
    assert padded == plain


def test_pad_to_bytes_refuses_a_format_it_cannot_pad(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="JPEG and PNG, not 'GIF'"):
        write_image(tmp_path / "x.gif", mode="P", fmt="GIF", pad_to_bytes=100_000)


# --------------------------------------------------------------------------- exact bytes


def _assert_decodes_to_the_plain_image(path: Path, fmt: str) -> None:
    with Image.open(path) as image:
        image.verify()  # PNG: every chunk's CRC
    with Image.open(path) as image:
        assert image.format == fmt
        pixels = np.asarray(image)
    with Image.open(write_image(path.with_name("plain"), fmt=fmt)) as plain:
        assert np.array_equal(pixels, np.asarray(plain))
    decoded = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded is not None
    assert decoded.shape[:2] == (32, 32)


@pytest.mark.parametrize(
    ("fmt", "extra"),
    [
        ("JPEG", 0),
        ("JPEG", 1),
        ("JPEG", 3),
        ("JPEG", 4),
        ("JPEG", 5),
        ("PNG", 0),
        ("PNG", 1),
        ("PNG", 4),
        ("PNG", 11),
        ("PNG", 19),
        ("PNG", 20),
        ("PNG", 21),
    ],
    ids=[
        "JPEG at its plain size",
        "JPEG 1 byte over: a fill byte",
        "JPEG 3 bytes over: fill bytes",
        "JPEG 4 bytes over: an empty COM segment",
        "JPEG 5 bytes over: a 1-byte COM segment",
        "PNG at its smallest exact form",
        "PNG 1 byte over: an empty deflate block",
        "PNG 4 bytes over: empty deflate blocks, stored final",
        "PNG 11 bytes over: empty deflate blocks",
        "PNG 19 bytes over: the most deflate blocks alone add",
        "PNG 20 bytes over: an empty tEXt chunk",
        "PNG 21 bytes over: a 1-byte tEXt chunk",
    ],
)
def test_exact_bytes_just_above_the_minimum(tmp_path: Path, fmt: str, extra: int) -> None:
    n_bytes = min_exact_bytes(fmt) + extra
    path = write_image_of_exact_bytes(tmp_path / "x", n_bytes, fmt)
    assert path.stat().st_size == n_bytes
    _assert_decodes_to_the_plain_image(path, fmt)


@pytest.mark.parametrize(
    ("fmt", "n_bytes"),
    [("JPEG", 1_024), ("JPEG", 70_000), ("PNG", 4_096), ("PNG", 1_500_000)],
    ids=[
        "JPEG of exactly 1 KiB",
        "JPEG over one COM segment's 64 KiB",
        "PNG of exactly 4 KiB",
        "PNG over one tEXt chunk's 1 MB",
    ],
)
def test_exact_bytes_at_a_round_size(tmp_path: Path, fmt: str, n_bytes: int) -> None:
    path = write_image_of_exact_bytes(tmp_path / "x", n_bytes, fmt)
    assert path.stat().st_size == n_bytes
    _assert_decodes_to_the_plain_image(path, fmt)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"], ids=["JPEG", "PNG"])
def test_exact_bytes_below_the_minimum_says_the_minimum(tmp_path: Path, fmt: str) -> None:
    floor = min_exact_bytes(fmt)
    with pytest.raises(ValueError, match=f"smallest exact size is {floor} bytes"):
        write_image_of_exact_bytes(tmp_path / "x", floor - 1, fmt)
    assert not (tmp_path / "x").exists()


def test_exact_bytes_honours_size_and_seed(tmp_path: Path) -> None:
    path = write_image_of_exact_bytes(tmp_path / "x.jpg", 5_000, "JPEG", seed=3, size=(64, 48))
    with Image.open(path) as image:
        assert image.size == (64, 48)
    assert path.stat().st_size == 5_000


# --------------------------------------------------------------------------- clean folders


def test_clean_folder_holds_distinct_jpegs_per_class(tmp_path: Path) -> None:
    layout = write_clean_folder(tmp_path, n_per_class=6)
    assert sorted(layout) == ["happy", "sad"]
    paths = [tmp_path / rel for rels in layout.values() for rel in rels]
    assert all(rel.startswith(f"{name}/") for name, rels in layout.items() for rel in rels)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jpg")) == sorted(
        p.relative_to(tmp_path).as_posix() for p in paths
    )
    for path in paths:
        assert path.read_bytes().startswith(JPEG_MAGIC)
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (32, 32))
    assert len({hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}) == len(paths)
    _assert_no_near_duplicates(paths)


def test_single_class_folder_has_only_happy(tmp_path: Path) -> None:
    root = write_single_class_folder(tmp_path / "faces")
    assert [p.name for p in root.iterdir()] == ["happy"]
    assert len(list((root / "happy").glob("*.jpg"))) == 4


@pytest.mark.parametrize(
    "write",
    [
        lambda root: write_clean_folder(root),
        lambda root: write_hostile_folder(root),
        lambda root: write_single_class_folder(root),
    ],
    ids=["clean folder", "hostile folder", "single-class folder"],
)
def test_two_runs_write_identical_bytes(tmp_path: Path, write) -> None:
    write(tmp_path / "one")
    write(tmp_path / "two")
    one, two = _snapshot(tmp_path / "one"), _snapshot(tmp_path / "two")
    assert one == two
    assert any(kind == "file" for kind, *_ in one.values())


def test_another_seed_writes_other_images(tmp_path: Path) -> None:
    write_clean_folder(tmp_path / "zero", seed=0)
    write_clean_folder(tmp_path / "one", seed=1)
    zero, one = _snapshot(tmp_path / "zero"), _snapshot(tmp_path / "one")
    assert zero.keys() == one.keys()
    assert all(zero[rel] != one[rel] for rel in zero if zero[rel][0] == "file")


# --------------------------------------------------------------------------- hostile folder


def test_hostile_folder_makes_or_explains_every_case(hostile: HostileCorpus) -> None:
    for case in HOSTILE_CASES:
        assert case in hostile.cases or case in hostile.skipped, case
    for case, rel in hostile.cases.items():
        assert rel is not None, case
        assert os.path.lexists(hostile.path(case)), case


@pytest.mark.skipif(sys.platform != "linux", reason="what Linux can make is known")
def test_hostile_folder_skips_only_what_this_machine_cannot_enforce(
    hostile: HostileCorpus,
) -> None:
    allowed = {"webp"} | ({"unreadable"} if os.geteuid() == 0 else set())
    assert set(hostile.skipped) <= allowed, hostile.skipped


def test_hostile_folder_has_two_image_classes_an_empty_one_and_stray_files(
    hostile: HostileCorpus,
) -> None:
    top = {p.name: p for p in hostile.root.iterdir()}
    assert sorted(n for n, p in top.items() if p.is_dir()) == ["happy", "neutral", "sad"]
    assert sorted(n for n, p in top.items() if p.is_file()) == [
        ".DS_Store",
        "README.md",
        "notes.txt",
    ]
    assert list((hostile.root / "neutral").iterdir()) == []
    assert hostile.cases["empty_class"] == "neutral"
    assert {hostile.cases["stray_root_file"], hostile.cases["stray_root_file_other"]} == {
        "README.md",
        "notes.txt",
    }


def test_hostile_folder_clean_images_decode(hostile: HostileCorpus) -> None:
    assert {name: len(rels) for name, rels in hostile.clean.items()} == {"happy": 3, "sad": 3}
    for rels in hostile.clean.values():
        for rel in rels:
            with Image.open(hostile.root / rel) as image:
                image.load()


@pytest.mark.parametrize(
    ("case", "magic"),
    [
        pytest.param("truncated_jpeg", JPEG_MAGIC, id="truncated JPEG keeps its JPEG header"),
        pytest.param("truncated_png", PNG_MAGIC, id="truncated PNG keeps its PNG signature"),
        pytest.param("html_as_jpg", b"<!DOCTYPE html>", id="HTML named .jpg is HTML"),
        pytest.param("text_as_jpg", b"Sorry", id="text named .jpg is text"),
        pytest.param("svg", b"<?xml", id="SVG is XML"),
        pytest.param("animated_gif", b"GIF89a", id="animated GIF is GIF89a"),
        pytest.param("cmyk_jpeg", JPEG_MAGIC, id="CMYK JPEG is a JPEG"),
        pytest.param("png16", PNG_MAGIC, id="16-bit PNG is a PNG"),
        pytest.param("palette_png", PNG_MAGIC, id="palette PNG is a PNG"),
        pytest.param("bomb", PNG_MAGIC, id="bomb is a PNG"),
        pytest.param("png_named_jpg", PNG_MAGIC, id="PNG named .jpg is a PNG"),
        pytest.param("bmp", b"BM", id="BMP starts BM"),
        pytest.param("ds_store", b"\x00\x00\x00\x01Bud1", id=".DS_Store at the root"),
        pytest.param(
            "ds_store_in_class", b"\x00\x00\x00\x01Bud1", id=".DS_Store in a class folder"
        ),
        pytest.param("appledouble", b"\x00\x05\x16\x07", id="AppleDouble ._ file"),
    ],
)
def test_hostile_file_starts_with_its_magic_bytes(
    hostile: HostileCorpus, case: str, magic: bytes
) -> None:
    assert _case_path(hostile, case).read_bytes().startswith(magic)


def test_webp_is_riff_webp(hostile: HostileCorpus) -> None:
    data = _case_path(hostile, "webp").read_bytes()
    assert (data[:4], data[8:12]) == (b"RIFF", b"WEBP")


def test_svg_is_svg_xml(hostile: HostileCorpus) -> None:
    assert b"<svg xmlns=" in _case_path(hostile, "svg").read_bytes()


@pytest.mark.parametrize(
    ("case", "fmt", "mode", "size"),
    [
        pytest.param("animated_gif", "GIF", "P", (32, 32), id="animated GIF"),
        pytest.param("cmyk_jpeg", "JPEG", "CMYK", (32, 32), id="CMYK JPEG"),
        pytest.param("png16", "PNG", "I;16", (32, 32), id="16-bit grey PNG"),
        pytest.param("grayscale", "JPEG", "L", (32, 32), id="grey JPEG"),
        pytest.param("palette_png", "PNG", "P", (32, 32), id="palette PNG"),
        pytest.param("rgba_png", "PNG", "RGBA", (32, 32), id="PNG with alpha"),
        pytest.param(
            "exif_rotated_jpeg", "JPEG", "RGB", (48, 32), id="EXIF-rotated JPEG stored landscape"
        ),
        pytest.param("tiny_1x1", "PNG", "RGB", (1, 1), id="1x1 PNG"),
        pytest.param("non_utf8_name", "JPEG", "RGB", (32, 32), id="JPEG under a non-UTF-8 name"),
        pytest.param(
            "html_injection_name", "JPEG", "RGB", (32, 32), id="JPEG under an HTML-injection name"
        ),
        pytest.param("nested_deep", "JPEG", "RGB", (32, 32), id="JPEG three folders deep"),
        pytest.param("png_named_jpg", "PNG", "RGB", (32, 32), id="PNG named .jpg"),
        pytest.param("webp", "WEBP", "RGB", (32, 32), id="WebP"),
        pytest.param("bmp", "BMP", "RGB", (32, 32), id="BMP"),
        pytest.param("exact_duplicate", "JPEG", "RGB", (32, 32), id="exact duplicate"),
        pytest.param("label_conflict", "JPEG", "RGB", (32, 32), id="image in both classes"),
    ],
)
def test_hostile_image_decodes_as_declared(
    hostile: HostileCorpus, case: str, fmt: str, mode: str, size: tuple[int, int]
) -> None:
    with Image.open(_case_path(hostile, case)) as image:
        assert (image.format, image.mode, image.size) == (fmt, mode, size)
        image.load()


@pytest.mark.parametrize(
    "case",
    [
        "zero_byte",
        "random_bytes_jpg",
        "html_as_jpg",
        "text_as_jpg",
        "svg",
        "ds_store",
        "appledouble",
    ],
)
def test_hostile_non_image_is_not_identified_by_pillow(hostile: HostileCorpus, case: str) -> None:
    with pytest.raises(UnidentifiedImageError):
        Image.open(_case_path(hostile, case))


@pytest.mark.parametrize("case", ["truncated_jpeg", "truncated_png"])
def test_truncated_file_opens_but_fails_to_load(hostile: HostileCorpus, case: str) -> None:
    with Image.open(_case_path(hostile, case)) as image, pytest.raises(OSError):
        image.load()


def test_zero_byte_file_is_empty(hostile: HostileCorpus) -> None:
    path = _case_path(hostile, "zero_byte")
    assert path.suffix == ".jpg"
    assert path.stat().st_size == 0


def test_bomb_declares_40000_square_in_a_small_file(
    hostile: HostileCorpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _case_path(hostile, "bomb")
    data = path.read_bytes()
    assert len(data) < 100_000
    assert data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (BOMB_SIDE_PX, BOMB_SIDE_PX)
    # Pillow's default guard refuses it outright (over twice MAX_IMAGE_PIXELS) ...
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    # ... and with the guard off, opening reads only the header, never the pixels.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with Image.open(path) as image:
        assert image.size == (BOMB_SIDE_PX, BOMB_SIDE_PX)


def test_animated_gif_has_three_frames(hostile: HostileCorpus) -> None:
    with Image.open(_case_path(hostile, "animated_gif")) as image:
        assert image.is_animated
        assert image.n_frames >= 3


def test_png16_is_16_bit_in_its_header(hostile: HostileCorpus) -> None:
    data = _case_path(hostile, "png16").read_bytes()
    bit_depth, colour_type = data[24], data[25]
    assert (bit_depth, colour_type) == (16, 0)


def test_exif_rotated_jpeg_is_landscape_stored_portrait_shown(hostile: HostileCorpus) -> None:
    with Image.open(_case_path(hostile, "exif_rotated_jpeg")) as image:
        assert image.getexif()[EXIF_ORIENTATION_TAG] == 6
        assert image.size == (48, 32)
        assert ImageOps.exif_transpose(image).size == (32, 48)


def test_dir_named_jpg_is_a_directory(hostile: HostileCorpus) -> None:
    path = _case_path(hostile, "dir_named_jpg")
    assert path.suffix == ".jpg"
    assert path.is_dir()


def test_dangling_symlink_points_nowhere(hostile: HostileCorpus) -> None:
    path = _case_path(hostile, "dangling_symlink")
    assert path.is_symlink()
    assert not path.exists()


def test_symlink_loop_cannot_be_opened(hostile: HostileCorpus) -> None:
    first, second = _case_path(hostile, "symlink_loop"), hostile.path("symlink_loop_other")
    assert first.is_symlink()
    assert second.is_symlink()
    assert os.readlink(first) == second.name
    assert os.readlink(second) == first.name
    with pytest.raises(OSError):
        first.read_bytes()


def test_unreadable_has_mode_000_and_cannot_be_read_unless_skipped(
    hostile: HostileCorpus,
) -> None:
    path = _case_path(hostile, "unreadable")
    assert stat.S_IMODE(path.stat().st_mode) == 0
    if "unreadable" in hostile.skipped:
        assert "mode 000" in hostile.skipped["unreadable"]
        assert path.read_bytes().startswith(JPEG_MAGIC)
    else:
        with pytest.raises(PermissionError):
            path.read_bytes()


def test_non_utf8_name_is_invalid_utf8_on_disk(hostile: HostileCorpus) -> None:
    path = _case_path(hostile, "non_utf8_name")
    raw_name = os.fsencode(path.name)
    with pytest.raises(UnicodeDecodeError):
        raw_name.decode("utf-8")
    assert raw_name in os.listdir(os.fsencode(path.parent))


def test_html_injection_name_is_the_markup(hostile: HostileCorpus) -> None:
    assert _case_path(hostile, "html_injection_name").name == "<img src=x onerror=alert(1)>.jpg"


def test_nested_deep_is_three_folders_below_its_class(hostile: HostileCorpus) -> None:
    assert hostile.cases["nested_deep"] == "happy/a/b/c/deep.jpg"


def test_png_named_jpg_has_a_jpg_name(hostile: HostileCorpus) -> None:
    assert _case_path(hostile, "png_named_jpg").suffix == ".jpg"


def test_exact_duplicate_is_the_same_bytes_in_one_class(hostile: HostileCorpus) -> None:
    dup, original = hostile.cases["exact_duplicate"], hostile.cases["exact_duplicate_of"]
    assert dup != original
    assert dup.split("/")[0] == original.split("/")[0]
    assert (
        hostile.path("exact_duplicate").read_bytes()
        == hostile.path("exact_duplicate_of").read_bytes()
    )


def test_label_conflict_is_the_same_bytes_in_two_classes(hostile: HostileCorpus) -> None:
    happy, sad = hostile.cases["label_conflict"], hostile.cases["label_conflict_other"]
    assert (happy.split("/")[0], sad.split("/")[0]) == ("happy", "sad")
    assert (
        hostile.path("label_conflict").read_bytes()
        == hostile.path("label_conflict_other").read_bytes()
    )


def test_hostile_images_are_near_duplicates_only_where_meant(hostile: HostileCorpus) -> None:
    meant_copies = {"exact_duplicate", "label_conflict_other"}
    decodable = [
        "animated_gif",
        "cmyk_jpeg",
        "png16",
        "grayscale",
        "palette_png",
        "rgba_png",
        "exif_rotated_jpeg",
        "non_utf8_name",
        "html_injection_name",
        "nested_deep",
        "png_named_jpg",
        "webp",
        "bmp",
        "exact_duplicate_of",
        "label_conflict",
    ]
    paths = [hostile.path(case) for case in decodable if case in hostile.cases]
    paths += [hostile.root / rel for rels in hostile.clean.values() for rel in rels]
    assert not meant_copies & set(decodable)
    _assert_no_near_duplicates(paths)
