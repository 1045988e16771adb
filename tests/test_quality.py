"""Image-quality rules with known answers: a good photo passes, its corrupted copy is flagged.

The scores come from the copy the scan already decodes (toolkit.quality), so these tests
scan real files: a JPEG or PNG written to disk, scanned, then judged by the built-in
profile's thresholds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from corruptions import CORRUPTIONS, textured_photo
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from toolkit.check import check_folder
from toolkit.manifest import COLUMNS
from toolkit.profiles import load_profile
from toolkit.quality import QUALITY_SIDE_PX, measure_quality
from toolkit.scan import FileScanner, ScanOptions, rescan_folder, scan_folder
from validations.rules import REGISTRY, QualityRule

QUALITY_RULES = sorted(n for n, cls in REGISTRY.items() if issubclass(cls, QualityRule))
N_PHOTOS = 3


def _save(img: Image.Image, path: Path, fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))


@pytest.fixture(scope="module")
def corrupted(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Good photos and one copy per corruption, scanned and judged by the tutorial profile:
    one row per file with its corruption ("" for the original) and the rules it broke."""
    root = tmp_path_factory.mktemp("quality") / "data"
    truth = {}
    for i in range(N_PHOTOS):
        photo = textured_photo(i, size=(320, 240) if i % 2 else (240, 300))
        label = "happy" if i % 2 else "sad"
        _save(photo, root / label / f"photo{i}.jpg")
        truth[f"{label}/photo{i}.jpg"] = ""
        for name, (corrupt, _) in CORRUPTIONS.items():
            _save(corrupt(photo), root / label / f"photo{i}_{name}.jpg")
            truth[f"{label}/photo{i}_{name}.jpg"] = name
    result = check_folder(root, "tutorial", jobs=1, detect_faces=False)
    broken: dict[str, set[str]] = {path: set() for path in truth}
    for f in result.findings:
        if f.rule in QUALITY_RULES:
            broken[f.path].add(f.rule)
    return pd.DataFrame({"corruption": truth, "broken": broken})


@pytest.mark.parametrize(
    "name",
    list(CORRUPTIONS),
    ids=[
        f"{rule} flags a {name} copy of each good photo" for name, (_, rule) in CORRUPTIONS.items()
    ],
)
def test_the_rule_flags_the_corrupted_copy(corrupted: pd.DataFrame, name: str) -> None:
    rule = CORRUPTIONS[name][1]
    copies = corrupted[corrupted["corruption"] == name]
    assert len(copies) == N_PHOTOS
    assert all(rule in broken for broken in copies["broken"]), copies["broken"].to_dict()


def test_good_photos_break_no_quality_rule(corrupted: pd.DataFrame) -> None:
    originals = corrupted[corrupted["corruption"] == ""]
    assert originals["broken"].map(len).sum() == 0, originals["broken"].to_dict()


@pytest.mark.parametrize(
    "name",
    list(CORRUPTIONS),
    ids=[f"a {name} copy breaks only {rule}" for name, (_, rule) in CORRUPTIONS.items()],
)
def test_each_corruption_breaks_its_own_rule_alone(corrupted: pd.DataFrame, name: str) -> None:
    copies = corrupted[corrupted["corruption"] == name]
    assert set().union(*copies["broken"]) == {CORRUPTIONS[name][1]}


def test_quality_findings_are_warnings_in_every_built_in_profile() -> None:
    for profile in ("tutorial", "scraped", "small-faces"):
        rules = {r.name: r for r in load_profile(profile).rules}
        present = [n for n in QUALITY_RULES if n in rules]
        assert present, profile
        assert {rules[n].severity for n in present} == {"warning"}, profile
    assert set(QUALITY_RULES) <= {r.name for r in load_profile("tutorial").rules}


def test_every_score_the_scan_measures_is_a_documented_manifest_column() -> None:
    scores = measure_quality(textured_photo(0))
    assert set(scores) <= set(COLUMNS)
    assert all(COLUMNS[c][0] == "Float64" for c in scores)


@pytest.mark.parametrize(
    ("fmt", "big"),
    [("JPEG", 1600), ("PNG", 1200)],
    ids=[
        "a JPEG the scan decodes at a reduced DCT scale scores as its small copy",
        "a PNG the scan box-averages while decoding scores as its small copy",
    ],
)
def test_scores_do_not_depend_on_how_far_the_scan_reduced_the_picture(
    tmp_path: Path, fmt: str, big: int
) -> None:
    photo = textured_photo(5, size=(big, big * 3 // 4))
    _save(photo, tmp_path / "happy" / f"big.{fmt.lower()}", fmt)
    small_copy = photo.resize((400, 300), Image.Resampling.LANCZOS)
    _save(small_copy, tmp_path / "happy" / "small.png", "PNG")
    rows = scan_folder(tmp_path, jobs=1, options=ScanOptions(detect_faces=False))
    rows = rows.set_index("path")
    large, small = rows.loc[f"happy/big.{fmt.lower()}"], rows.loc["happy/small.png"]
    assert large["luma_p99"] == pytest.approx(small["luma_p99"], abs=0.03)
    assert large["luma_p05"] == pytest.approx(small["luma_p05"], abs=0.03)
    assert large["entropy_bits"] == pytest.approx(small["entropy_bits"], abs=0.3)
    assert large["sharpness"] == pytest.approx(small["sharpness"], rel=0.25)
    assert large["chroma_ratio"] == pytest.approx(small["chroma_ratio"], rel=0.15)


def test_the_scan_decodes_each_picture_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _save(textured_photo(3), tmp_path / "sad" / "photo.jpg")
    loads: list[object] = []
    original = ImageFile.ImageFile.load

    def counted(self: ImageFile.ImageFile) -> object:
        if getattr(self, "tile", None):  # pixels still to decode: a real decode
            loads.append(self)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counted)
    row = FileScanner(tmp_path, ScanOptions(detect_faces=False)).scan("sad/photo.jpg")
    assert row["sharpness"] is not None and row["is_decodable"]
    assert len(loads) == 1


def test_a_reused_row_keeps_its_scores(tmp_path: Path) -> None:
    for i in range(3):
        _save(textured_photo(i), tmp_path / "happy" / f"p{i}.jpg")
    options = ScanOptions(detect_faces=False)
    first = scan_folder(tmp_path, jobs=1, options=options)
    again, counts = rescan_folder(tmp_path, first, jobs=1, options=options)
    assert counts.n_reused == 3
    cols = ["luma_p99", "luma_p05", "sharpness", "entropy_bits", "chroma_ratio"]
    pd.testing.assert_frame_equal(first[cols], again[cols])


def test_a_grey_file_saved_in_mode_l_is_flagged_grey_too(tmp_path: Path) -> None:
    _save(textured_photo(4).convert("L"), tmp_path / "sad" / "grey.png", "PNG")
    _save(textured_photo(4), tmp_path / "sad" / "colour.png", "PNG")
    result = check_folder(tmp_path, "tutorial", jobs=1, detect_faces=False)
    flagged = {f.path for f in result.findings if f.rule == "not_grayscale"}
    assert flagged == {"sad/grey.png"}


@settings(max_examples=40, deadline=None)
@given(
    width=st.integers(1, 300),
    height=st.integers(1, 300),
    seed=st.integers(0, 2**16),
    contrast=st.floats(0.0, 1.0),
    grey=st.booleans(),
)
def test_scores_stay_in_their_ranges_for_any_picture(
    width: int, height: int, seed: int, contrast: float, grey: bool
) -> None:
    rng = np.random.default_rng(seed)
    pixels = 128 + (rng.integers(0, 256, size=(height, width, 3)) - 128) * contrast
    img = Image.fromarray(pixels.astype(np.uint8))
    img = img.convert("L") if grey else img
    scores = measure_quality(img)
    flat = scores["luma_p99"] is None
    if not flat:
        assert 0.0 <= scores["luma_p05"] <= scores["luma_p99"] <= 1.0
    assert 0.0 <= scores["entropy_bits"] <= 8.0
    for key in ("luma_p05", "sharpness", "chroma_ratio"):
        assert (scores[key] is None) == flat
        assert flat or scores[key] >= 0.0
    if grey and scores["chroma_ratio"] is not None:
        assert scores["chroma_ratio"] == 0.0
    if max(width, height) <= QUALITY_SIDE_PX and min(width, height) >= 3 and contrast > 0.5:
        assert scores["sharpness"] is not None  # a noisy picture has edges to measure


@pytest.mark.parametrize(
    "first",
    ["darkened", "brightened"],
    ids=[
        "a flat dark picture is one finding, min_entropy, not also not_dark",
        "a flat pale picture is one finding, min_entropy, not also not_washed_out",
    ],
)
def test_a_flat_picture_is_flagged_flat_whatever_its_colour(tmp_path: Path, first: str) -> None:
    flat = CORRUPTIONS["flattened"][0](CORRUPTIONS[first][0](textured_photo(12)))
    _save(flat, tmp_path / "sad" / "flat.jpg")
    result = check_folder(tmp_path, "tutorial", jobs=1, detect_faces=False)
    assert {f.rule for f in result.findings if f.rule in QUALITY_RULES} == {"min_entropy"}


def test_darkening_or_fading_a_photo_leaves_its_sharpness_and_colour(tmp_path: Path) -> None:
    photo = textured_photo(8)
    base = measure_quality(photo)
    for name in ("darkened", "brightened"):
        scores = measure_quality(CORRUPTIONS[name][0](photo))
        assert scores["sharpness"] == pytest.approx(base["sharpness"], rel=0.25), name
        assert scores["chroma_ratio"] == pytest.approx(base["chroma_ratio"], rel=0.25), name


def test_report_html_shows_each_flagged_rule_with_its_scores_and_threshold(
    tmp_path: Path,
) -> None:
    from toolkit.cli import main

    photo = textured_photo(9)
    _save(photo, tmp_path / "data" / "happy" / "photo.jpg")
    dark = CORRUPTIONS["darkened"][0](textured_photo(11))  # no copy of another file
    _save(dark, tmp_path / "data" / "happy" / "dark.jpg")
    _save(textured_photo(10), tmp_path / "data" / "sad" / "photo.jpg")
    out = tmp_path / "out"
    argv = ["validate", str(tmp_path / "data"), "-p", "scraped", "-o", str(out), "--no-faces"]
    assert main(argv) in (0, 1)
    page = (out / "report.html").read_text(encoding="utf-8")
    group = page[page.index('id="group-not_dark"') :]
    group = group[: group.index("</section>")]
    assert 'id="chart-not_dark"' in group
    assert "1 lie below the not_dark threshold 0.3" in group
    assert 'data-path="happy/dark.jpg"' in group
    assert 'id="group-not_blurry"' not in page  # no file flagged: no gallery


@pytest.mark.parametrize("name", QUALITY_RULES)
def test_a_score_just_past_its_threshold_never_reads_as_the_threshold(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # rounded to two decimals, 0.2996 read "0.30, under 0.3"
    rule = REGISTRY[name]()
    score = rule.threshold + (0.0004 if rule.breaks_above else -0.0004)
    monkeypatch.setattr(type(rule), "scores", lambda self, rows: pd.Series([score]))
    (words,) = rule.details(pd.DataFrame([{}]))
    shown = words.rsplit(", ", 1)[0].split()[-1]
    assert float(shown) != float(rule.threshold), words
