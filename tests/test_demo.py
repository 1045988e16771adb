"""The embedded demo set: two class folders of faces, deterministic, with the planted defects."""

from __future__ import annotations

import hashlib
import statistics
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

from toolkit.demo import CLASSES, DEFECT_KINDS, SMALL_FILE_BYTES, DemoData, write_demo_data
from toolkit.errors import DataRootError
from toolkit.faces import FaceDetector

# The kinds whose files are not clean images (small files are clean, just small).
UNCLEAN_KINDS = ("png_named_jpg", "svg", "text_named_jpg", "truncated_jpeg", "label_conflict")
# Measured on the default set (seed 0) as this file counts clean images (thumbnails in):
# a face is found in 61/62 happy and 60/62 sad ones; seeds 1-3 give 58-60 of 60 per class.
# The floor leaves room for other JPEG encoders and OpenCV builds.
MIN_FACE_RATE = 0.9
MAX_FACE_RATE_GAP = 0.1


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    """The default demo set (60 clean images per class plus defects), written once."""
    return write_demo_data(tmp_path_factory.mktemp("demo") / "demo")


def files_on_disk(root: Path) -> list[str]:
    """Every file under root, as sorted POSIX paths relative to it."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def sha256_map(root: Path) -> dict[str, str]:
    """{relative path: sha256 of its bytes} for every file under root."""
    return {
        rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in files_on_disk(root)
    }


def clean_images(demo: DemoData) -> dict[str, list[str]]:
    """{class: its files that are not planted defects}; small thumbnails count as clean."""
    unclean = {rel for kind in UNCLEAN_KINDS for rel in demo.defects[kind]}
    unclean.update(demo.defects["exact_duplicate"][1:])  # keep one copy of the pair
    by_class: dict[str, list[str]] = {label: [] for label in CLASSES}
    for rel in files_on_disk(demo.root):
        if rel not in unclean:
            by_class[rel.split("/")[0]].append(rel)
    return by_class


def test_demo_writes_one_folder_per_class_and_counts_every_file(demo: DemoData) -> None:
    assert demo.created
    assert sorted(p.name for p in demo.root.iterdir()) == sorted(CLASSES)
    assert demo.n_files == len(files_on_disk(demo.root))
    for label, rels in clean_images(demo).items():
        assert len(rels) >= 60, label
        for rel in rels:
            with Image.open(demo.root / rel) as image:
                image.load()


def test_n_per_class_adds_clean_images_to_the_same_defects(tmp_path: Path, demo: DemoData) -> None:
    small = write_demo_data(tmp_path / "demo", n_per_class=3)
    assert demo.n_files - small.n_files == 2 * (60 - 3)
    assert small.defects.keys() == demo.defects.keys()
    for kind in DEFECT_KINDS:
        if kind != "small_file":  # which clean images are small depends on how many there are
            assert small.defects[kind] == demo.defects[kind], kind


def test_same_arguments_give_the_same_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    first = write_demo_data(tmp_path / "a", n_per_class=4)
    second = write_demo_data(tmp_path / "b", n_per_class=4)
    other = write_demo_data(tmp_path / "c", n_per_class=4, seed=1)
    assert sha256_map(first.root) == sha256_map(second.root)
    assert first.defects == second.defects
    assert sha256_map(other.root) != sha256_map(first.root)


def check_png_named_jpg(root: Path, rels: list[str]) -> None:
    """Named .jpg, starts with the PNG signature, decodes as a PNG."""
    (rel,) = rels
    assert rel.endswith(".jpg")
    assert (root / rel).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(root / rel) as image:
        image.load()
        assert image.format == "PNG"


def check_small_file(root: Path, rels: list[str]) -> None:
    """Lists exactly the files under the size threshold, images among them."""
    sizes = {rel: (root / rel).stat().st_size for rel in files_on_disk(root)}
    assert rels == sorted(rel for rel, size in sizes.items() if size < SMALL_FILE_BYTES)
    decodable = [rel for rel in rels if rel.endswith((".jpg", ".jpeg")) and _decodes(root / rel)]
    assert len(decodable) >= 4  # the thumbnails


def check_svg(root: Path, rels: list[str]) -> None:
    """An SVG: XML text whose root element is <svg>."""
    (rel,) = rels
    data = (root / rel).read_bytes()
    assert data.startswith((b"<?xml", b"<svg"))
    assert ET.fromstring(data).tag == "{http://www.w3.org/2000/svg}svg"


def check_text_named_jpg(root: Path, rels: list[str]) -> None:
    """Named .jpg, but an HTML error page that Pillow cannot identify."""
    (rel,) = rels
    assert rel.endswith(".jpg")
    text = (root / rel).read_bytes().decode("ascii")
    assert "<html>" in text and "403 Forbidden" in text
    with pytest.raises(UnidentifiedImageError):
        Image.open(root / rel)


def check_truncated_jpeg(root: Path, rels: list[str]) -> None:
    """Starts like a JPEG, lacks the end marker, and fails to decode."""
    (rel,) = rels
    data = (root / rel).read_bytes()
    assert data.startswith(b"\xff\xd8\xff")
    assert not data.endswith(b"\xff\xd9")
    with Image.open(root / rel) as image, pytest.raises(OSError, match="truncated"):
        image.load()


def check_exact_duplicate(root: Path, rels: list[str]) -> None:
    """Two names in one class with the same bytes, a decodable image."""
    first, second = rels
    assert first != second and first.split("/")[0] == second.split("/")[0]
    assert (root / first).read_bytes() == (root / second).read_bytes()
    assert _decodes(root / first)


def check_label_conflict(root: Path, rels: list[str]) -> None:
    """The same bytes under happy/ and under sad/."""
    first, second = rels
    assert {first.split("/")[0], second.split("/")[0]} == set(CLASSES)
    assert (root / first).read_bytes() == (root / second).read_bytes()
    assert _decodes(root / first)


def _decodes(path: Path) -> bool:
    """True if Pillow decodes the whole file."""
    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, UnidentifiedImageError):
        return False
    return True


DEFECT_CHECKS: dict[str, Callable[[Path, list[str]], None]] = {
    "png_named_jpg": check_png_named_jpg,
    "small_file": check_small_file,
    "svg": check_svg,
    "text_named_jpg": check_text_named_jpg,
    "truncated_jpeg": check_truncated_jpeg,
    "exact_duplicate": check_exact_duplicate,
    "label_conflict": check_label_conflict,
}


def test_defect_kinds_are_the_documented_ones(demo: DemoData) -> None:
    assert list(demo.defects) == list(DEFECT_KINDS) == list(DEFECT_CHECKS)


@pytest.mark.parametrize(
    "kind",
    list(DEFECT_CHECKS),
    ids=[
        "a PNG named .jpg starts with the PNG signature",
        "small files are exactly those under 9 KiB, thumbnails among them",
        "the SVG is XML with an svg root",
        "the text named .jpg is an HTML 403 page Pillow cannot open",
        "the truncated JPEG lacks its end marker and fails to load",
        "the exact duplicates are one class's same bytes under two names",
        "the label conflict is the same bytes in both classes",
    ],
)
def test_each_defect_is_what_its_kind_says(demo: DemoData, kind: str) -> None:
    rels = demo.defects[kind]
    assert rels, kind
    assert all((demo.root / rel).is_file() for rel in rels)
    DEFECT_CHECKS[kind](demo.root, rels)


def test_file_names_do_not_give_the_defects_away(demo: DemoData) -> None:
    names = " ".join(files_on_disk(demo.root)).lower()
    for word in ("truncat", "duplicate", "corrupt", "broken", "defect", "fake", "conflict", "403"):
        assert word not in names, word


def test_most_clean_images_are_at_least_9_kib_and_a_few_are_not(demo: DemoData) -> None:
    sizes = [
        (demo.root / rel).stat().st_size for rels in clean_images(demo).values() for rel in rels
    ]
    n_large = sum(size >= SMALL_FILE_BYTES for size in sizes)
    assert n_large >= 0.85 * len(sizes)
    assert n_large < len(sizes)


def test_both_classes_hold_the_same_share_of_grayscale_images(demo: DemoData) -> None:
    shares = {}
    for label, rels in clean_images(demo).items():
        modes = []
        for rel in rels:
            with Image.open(demo.root / rel) as image:
                modes.append(image.mode)
        shares[label] = modes.count("L") / len(modes)
    assert min(shares.values()) >= 0.1
    assert max(shares.values()) - min(shares.values()) < 0.05, shares


def test_format_size_and_colour_do_not_give_the_class_away(demo: DemoData) -> None:
    formats, areas, greys = {}, {}, {}
    for label, rels in clean_images(demo).items():
        formats[label], areas[label], greys[label] = Counter(), [], []
        for rel in rels:
            with Image.open(demo.root / rel) as image:
                formats[label][image.format] += 1
                areas[label].append(image.width * image.height)
                greys[label].append(float(np.asarray(image.convert("L")).mean()))
    happy, sad = CLASSES
    assert formats[happy] == formats[sad]
    assert 0.8 < statistics.median(areas[happy]) / statistics.median(areas[sad]) < 1.25
    assert abs(statistics.mean(greys[happy]) - statistics.mean(greys[sad])) < 10


def test_the_scans_face_detector_finds_a_face_in_most_images_of_both_classes(
    demo: DemoData,
) -> None:
    detector = FaceDetector()
    rates = {}
    for label, rels in clean_images(demo).items():
        found = 0
        for rel in rels:
            with Image.open(demo.root / rel) as image:
                found += len(detector.detect(np.asarray(image.convert("RGB")))) > 0
        rates[label] = found / len(rels)
    assert min(rates.values()) >= MIN_FACE_RATE, rates
    assert max(rates.values()) - min(rates.values()) <= MAX_FACE_RATE_GAP, rates


def _fill_previous_demo(root: Path) -> None:
    write_demo_data(root, n_per_class=2)


def _fill_users_happy_folder(root: Path) -> None:
    (root / "happy").mkdir(parents=True)
    (root / "happy" / "my-photo.jpg").write_bytes(b"the user's own bytes")


@pytest.mark.parametrize(
    "fill",
    [_fill_previous_demo, _fill_users_happy_folder],
    ids=["a previous demo set is left as it is", "a user's own happy/ folder is left as it is"],
)
def test_a_filled_root_is_never_written_to(tmp_path: Path, fill: Callable[[Path], None]) -> None:
    root = tmp_path / "data"
    fill(root)
    before = {rel: ((root / rel).stat().st_mtime_ns, sha) for rel, sha in sha256_map(root).items()}
    dirs_before = sorted(p for p in root.rglob("*") if p.is_dir())

    again = write_demo_data(root, n_per_class=3, seed=7)

    assert not again.created
    after = {rel: ((root / rel).stat().st_mtime_ns, sha) for rel, sha in sha256_map(root).items()}
    assert after == before
    assert sorted(p for p in root.rglob("*") if p.is_dir()) == dirs_before
    # It still says what it would have written.
    fresh = write_demo_data(tmp_path / "fresh", n_per_class=3, seed=7)
    assert (again.n_files, again.defects) == (fresh.n_files, fresh.defects)


def test_empty_class_folders_are_filled(tmp_path: Path) -> None:
    for label in CLASSES:
        (tmp_path / label).mkdir()
    written = write_demo_data(tmp_path, n_per_class=2)
    assert written.created
    assert len(files_on_disk(tmp_path)) == written.n_files


def _missing_root(tmp_path: Path) -> Path:
    return tmp_path / "nothing-here-yet"


def _file_as_root(tmp_path: Path) -> Path:
    (tmp_path / "notes.txt").write_text("not a folder")
    return tmp_path / "notes.txt"


@pytest.mark.parametrize(
    ("make_root", "n_per_class", "error"),
    [(_missing_root, 0, ValueError), (_file_as_root, 2, DataRootError)],
    ids=["zero images per class is refused", "a root that is a file is refused"],
)
def test_bad_arguments_are_refused_before_writing(
    tmp_path: Path, make_root: Callable[[Path], Path], n_per_class: int, error: type[Exception]
) -> None:
    root = make_root(tmp_path)
    before = sha256_map(tmp_path)
    with pytest.raises(error):
        write_demo_data(root, n_per_class=n_per_class)
    assert sha256_map(tmp_path) == before
