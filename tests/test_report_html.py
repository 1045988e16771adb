"""report.html: what a user sees before training, on hostile, large and clean folders."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
from pathlib import Path
from xml.etree import ElementTree

import pandas as pd
import pytest
from conftest import TINY_PROFILE, snapshot
from corpus import HostileCorpus, write_clean_folder
from htmltree import Element, parse_html
from PIL import Image

from toolkit.cli import main
from toolkit.manifest import DATASET_PATH
from toolkit.profiles import load_profile
from toolkit.report.charts import MAX_CLASSES_DRAWN, plot_classes, plot_dimensions, plot_file_sizes
from toolkit.report.html import (
    MAX_FILES_PER_GROUP,
    MAX_SETS_PER_RULE,
    REPORT_HTML,
    write_report_html,
)
from toolkit.report.thumbnails import THUMB_SIDE_PX, make_thumbnails
from toolkit.scan import ScanOptions, display_path, scan_folder
from toolkit.validate import Validation, validate_manifest
from validations.rules import REGISTRY, QualityRule

HOSTILE_NAME = "sad/<img src=x onerror=alert(1)>.jpg"
#: The tiny test profile, looking for faces: noise has none, so every image is in the strip.
FACES_PROFILE = TINY_PROFILE.replace('severity = "off"', 'severity = "warning"')


def validated(root: Path, profile: Path | str, *, faces: bool = False) -> Validation:
    """Scan and validate `root` the way `toolkit validate` does."""
    manifest = scan_folder(root, jobs=1, options=ScanOptions(detect_faces=faces))
    return validate_manifest(manifest, load_profile(profile))


def render(result: Validation, out: Path) -> tuple[str, Element]:
    """Write report.html for `result` into `out`; its text and its parsed tree."""
    path = write_report_html(result, result.to_report(), out)
    assert path == out / REPORT_HTML
    text = path.read_text(encoding="utf-8")
    return text, parse_html(text)


@pytest.fixture
def faces_profile(tmp_path: Path) -> Path:
    """The tiny profile with has_face as a warning."""
    path = tmp_path / "faces.toml"
    path.write_text(FACES_PROFILE, encoding="utf-8")
    return path


@pytest.fixture
def hostile_page(
    hostile: HostileCorpus, faces_profile: Path, tmp_path: Path
) -> tuple[Validation, str, Element]:
    """The hostile folder validated (faces counted), and its rendered report."""
    result = validated(hostile.root, faces_profile, faces=True)
    before = snapshot(hostile.root)
    text, page = render(result, tmp_path / "run")
    assert snapshot(hostile.root) == before  # thumbnails read the user's files, never write
    return result, text, page


def file_cards(section: Element) -> dict[str, Element]:
    """The shown files of a section, by the path they name."""
    return {str(card.attrs["data-path"]): card for card in section.find_all("figure", "file")}


def decode_data_uri(src: str, kind: str) -> Image.Image:
    """The image inside a data: URI of the given MIME type."""
    prefix = f"data:{kind};base64,"
    assert src.startswith(prefix), src[:40]
    return Image.open(io.BytesIO(base64.b64decode(src[len(prefix) :])))


def svg_size(src: str) -> tuple[float, float]:
    """The width and height of the SVG inside a data: URI (it must parse as XML)."""
    prefix = "data:image/svg+xml;base64,"
    assert src.startswith(prefix), src[:40]
    root = ElementTree.fromstring(base64.b64decode(src[len(prefix) :]))
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return float(root.attrib["width"]), float(root.attrib["height"])


def test_report_states_verdict_profile_and_every_rule_in_words(
    hostile_page: tuple[Validation, str, Element],
) -> None:
    result, _, page = hostile_page
    report = result.to_report()
    verdict = page.by_id("verdict")
    assert "failed" in verdict.classes
    assert verdict.text.startswith("FAILED") and "min_files_per_class" in verdict.text
    assert "faces" in page.by_id("profile").text
    for name, rule in report["rules"].items():
        row = page.by_id(f"rule-{name}")
        assert row.find_all("td", "threshold")[0].text == rule["rule"]
        assert row.find_all("td", "count")[0].text == f"{report['by_rule'][name]:,}", name
        assert row.find_all("td", "severity")[0].text == rule["severity"]


def test_every_rejected_file_is_shown_once_with_every_rule_it_breaks(
    hostile_page: tuple[Validation, str, Element],
) -> None:
    result, _, page = hostile_page
    blocking = [f for f in result.findings if f.severity == "error" and not _dataset_wide(f.path)]
    assert {f.path for f in blocking} == set(result.rejected["path"])
    for rule, n in result.by_rule().items():
        if n and not _dataset_wide(next(f.path for f in result.findings if f.rule == rule)):
            assert page.by_id(f"group-{rule}").attrs["data-count"] == str(n)
    sets = page.find_all("div", "set")
    in_sets = {p for s in sets for p in file_cards(s)}
    rules_of: dict[str, set[str]] = {}
    for f in result.findings:
        rules_of.setdefault(f.path, set()).add(f.rule)
    shown: dict[str, int] = {}
    for section in page.find_all("section", "group"):
        # in a set, the set's rule is the heading and the twin beside: the card lists the rest
        heading = section.attrs["data-rule"] if "sets-group" in section.classes else None
        for path, card in file_cards(section).items():
            shown[path] = shown.get(path, 0) + (heading is None)
            assert card.find_all("code", "path")[0].text == " ".join(path.split())
            items = {str(li.attrs["data-rule"]): li.text for li in card.find_all("li")}
            assert set(items) == rules_of.get(path, set()) - {heading}, path
            for f in result.findings:
                if f.path == path and f.rule in items:
                    assert " ".join(f.detail.split()) in items[f.rule]
    several = 0
    for path in {f.path for f in blocking}:
        assert shown.get(path, 0) == (0 if path in in_sets else 1), path  # once, or by a copy
        several += len(rules_of[path]) > 1
    assert several, "the hostile folder has files that break several rules"


def test_copies_are_marked_kept_or_rejected(
    hostile: HostileCorpus, hostile_page: tuple[Validation, str, Element]
) -> None:
    result, _, page = hostile_page
    status = result.manifest.set_index("path")["status"]
    marked = {}
    for s in page.find_all("div", "set"):
        for path, card in file_cards(s).items():
            word = "kept" if status[path] == "accepted" else "rejected"
            assert card.attrs["data-status"] == word and word in card.text, path
            marked[path] = word
    assert marked[hostile.cases["label_conflict"]] == "rejected"  # both labels lose the copy
    assert marked[hostile.cases["exact_duplicate"]] == "kept"  # a warning: both copies train


def test_page_opens_with_dataset_wide_findings_then_counts_then_examples(
    hostile_page: tuple[Validation, str, Element],
) -> None:
    _, text, _ = hostile_page
    at = [text.index(f'<section id="{s}"') for s in ("dataset", "rules", "charts", "rejected")]
    assert at == sorted(at)


def test_dataset_wide_findings_are_listed(hostile_page: tuple[Validation, str, Element]) -> None:
    result, _, page = hostile_page
    rows = page.by_id("dataset-findings").find_all("tr", "finding")
    wide = [f for f in result.findings if _dataset_wide(f.path)]
    assert wide and len(rows) == len(wide)
    assert any("neutral/" in r.text and "min_files_per_class" in r.text for r in rows)
    assert not any(".0 of" in r.text for r in rows), "counts are whole numbers"


def test_a_file_name_that_is_html_shows_as_text(
    hostile: HostileCorpus, hostile_page: tuple[Validation, str, Element]
) -> None:
    _, text, page = hostile_page
    assert hostile.cases["html_injection_name"] == HOSTILE_NAME
    assert "<img src=x" not in text and "&lt;img src=x onerror=alert(1)&gt;.jpg" in text
    assert all("onerror" not in img.attrs for img in page.find_all("img"))
    assert not page.find_all("script")
    assert HOSTILE_NAME in {c.attrs["data-path"] for c in page.find_all("figure", "file")}


def test_each_shown_file_has_one_thumbnail_or_a_placeholder_saying_why(
    hostile: HostileCorpus, hostile_page: tuple[Validation, str, Element]
) -> None:
    _, _, page = hostile_page
    cards = page.find_all("figure", "file")
    assert cards
    for card in cards:
        shown = card.find_all("img", "thumb") + card.find_all(None, "placeholder")
        assert len(shown) == 1, card.attrs["data-path"]
        for img in card.find_all("img", "thumb"):
            thumb = decode_data_uri(str(img.attrs["src"]), "image/jpeg")
            assert max(thumb.size) <= THUMB_SIDE_PX
            assert (img.attrs["width"], img.attrs["height"]) == tuple(map(str, thumb.size))
    by_path = {c.attrs["data-path"]: c for c in cards}
    expected = {
        "truncated_jpeg": "not decoded", "bomb": "1,600,000,000 px", "svg": "not decoded",
        "dangling_symlink": "not read", "zero_byte": "not decoded", "symlink_loop": "not read",
    }  # fmt: skip
    for case, words in expected.items():
        (placeholder,) = by_path[hostile.cases[case]].find_all(None, "placeholder")
        assert words in placeholder.text, (case, placeholder.text)
    for case in ("png_named_jpg", "exact_duplicate", "label_conflict", "html_injection_name"):
        assert by_path[hostile.cases[case]].find_all("img", "thumb"), case


def test_label_conflicts_and_duplicates_show_side_by_side(
    hostile: HostileCorpus, hostile_page: tuple[Validation, str, Element]
) -> None:
    _, _, page = hostile_page
    pairs = {
        "label_conflict": ("label_conflict", "label_conflict_other"),
        "exact_duplicate": ("exact_duplicate_of", "exact_duplicate"),
    }
    for rule, cases in pairs.items():
        sets = page.by_id(f"group-{rule}").find_all("div", "set")
        wanted = {hostile.cases[c] for c in cases}
        assert any(set(file_cards(s)) == wanted for s in sets), rule


def test_charts_are_embedded_pictures_naming_their_thresholds(
    hostile_page: tuple[Validation, str, Element],
) -> None:
    _, text, page = hostile_page
    charts = {img.attrs["id"]: img for img in page.find_all("img", "chart")}
    scored = {f"chart-{name}" for name, cls in REGISTRY.items() if issubclass(cls, QualityRule)}
    # the data at a glance, then a chart in each image-quality rule's gallery
    assert set(charts) - scored == {"chart-classes", "chart-file-sizes", "chart-dimensions"}
    for img in charts.values():
        width, height = svg_size(str(img.attrs["src"]))
        assert width > 200 and height > 100
    assert "100 bytes" in charts["chart-file-sizes"].attrs["alt"]  # tiny's min_file_bytes
    assert "100,000,000 px" in charts["chart-dimensions"].attrs["alt"]
    assert "50%" in charts["chart-classes"].attrs["alt"]
    assert "http://" not in text and "https://" not in text  # nothing to fetch
    assert "default-src 'none'" in text  # and the page may not fetch anything


def test_footer_names_the_command_version_and_time(
    clean_root: Path, tiny_profile: Path, tmp_path: Path
) -> None:
    result = validated(clean_root, tiny_profile)
    result.extra.update(command="toolkit validate x --profile 'a b'", seconds={"scan": 1.5})
    _, page = render(result, tmp_path / "run")
    assert page.by_id("command").text == "toolkit validate x --profile 'a b'"
    assert page.by_id("version").text == result.to_report()["toolkit_version"]
    assert "scan 1.5 s" in page.by_id("seconds").text and "report" in page.by_id("seconds").text
    assert "passed" in page.by_id("verdict").classes


def test_large_groups_are_capped_with_and_n_more(tmp_path: Path) -> None:
    root = tmp_path / "small"
    write_clean_folder(root, n_per_class=MAX_FILES_PER_GROUP + 6)  # 32 px JPEGs, under 9 KB
    result = validated(root, "tutorial")
    text, page = render(result, tmp_path / "run")
    n = 2 * (MAX_FILES_PER_GROUP + 6)
    section = page.by_id("group-min_file_bytes")
    assert section.attrs["data-count"] == str(n)
    assert len(file_cards(section)) == MAX_FILES_PER_GROUP
    assert f"and {n - MAX_FILES_PER_GROUP} more" in section.find_all("p", "more")[0].text
    assert len(text.encode()) < 1_000_000


def test_many_duplicate_sets_are_capped(tmp_path: Path) -> None:
    root = tmp_path / "copies"
    layout = write_clean_folder(root, n_per_class=MAX_SETS_PER_RULE + 2, classes=("happy",))
    for rel in layout["happy"]:
        shutil.copyfile(root / rel, root / rel.replace(".jpg", "_copy.jpg"))
    result = validated(root, "tutorial")
    _, page = render(result, tmp_path / "run")
    section = page.by_id("group-exact_duplicate")
    assert len(section.find_all("div", "set")) == MAX_SETS_PER_RULE
    assert "and 2 more groups" in section.text


def test_files_without_a_face_form_a_strip(
    clean_root: Path, faces_profile: Path, tmp_path: Path
) -> None:
    result = validated(clean_root, faces_profile, faces=True)
    assert result.by_rule()["has_face"] == 8  # noise has no face
    _, page = render(result, tmp_path / "run")
    strip = page.by_id("group-has_face")
    assert "strip" in strip.classes
    assert len(strip.find_all("img", "thumb")) == 8
    assert set(file_cards(strip)) == set(result.manifest["path"])
    assert (result.manifest["status"] == "accepted").all()  # a warning, not a rejection


def test_without_the_data_folder_every_file_gets_a_placeholder(
    clean_root: Path, tmp_path: Path
) -> None:
    result = validated(clean_root, "tutorial")  # every 32 px JPEG is under 9 KB
    moved = tmp_path / "moved"
    clean_root.rename(moved)
    _, page = render(result, tmp_path / "run")
    cards = page.find_all("figure", "file")
    assert len(cards) == 8 and not page.find_all("img", "thumb")
    assert all("data folder" in c.find_all(None, "placeholder")[0].text for c in cards)


def test_thumbnails_of_unusual_modes_are_small_upright_rgb(hostile: HostileCorpus) -> None:
    manifest = scan_folder(hostile.root, jobs=1, options=ScanOptions(detect_faces=False))
    cases = ["cmyk_jpeg", "png16", "grayscale", "palette_png", "rgba_png", "animated_gif",
             "exif_rotated_jpeg", "bmp", "non_utf8_name"]  # fmt: skip
    wanted = [display_path(str(hostile.cases[c])) for c in cases if c in hostile.cases]
    rows = manifest[manifest["path"].isin(wanted)]
    thumbs = make_thumbnails(rows, hostile.root, max_pixels=10**8, jobs=2)
    assert set(thumbs) == set(wanted)
    for path, thumb in thumbs.items():
        assert thumb.reason is None and thumb.src, (path, thumb.reason)
        picture = decode_data_uri(thumb.src, "image/jpeg")
        assert picture.mode == "RGB" and max(picture.size) <= THUMB_SIDE_PX
    rotated = thumbs[hostile.cases["exif_rotated_jpeg"]]
    assert rotated.height > rotated.width  # stored 48x32 landscape, shown portrait


def test_near_copies_in_a_class_form_one_set(tmp_path: Path) -> None:
    root = tmp_path / "near"
    layout = write_clean_folder(root, n_per_class=4, size=(64, 64))
    original = root / layout["happy"][0]
    with Image.open(original) as img:  # the same picture, re-encoded: other bytes, same look
        img.save(root / "happy" / "resaved.jpg", quality=60)
    result = validated(root, "tutorial")
    assert result.by_rule()["near_duplicate"] == 1
    _, page = render(result, tmp_path / "run")
    (near_set,) = page.by_id("group-near_duplicate").find_all("div", "set")
    assert set(file_cards(near_set)) == {layout["happy"][0], "happy/resaved.jpg"}


def test_thumbnails_judge_the_file_again_and_never_hang(clean_root: Path) -> None:
    manifest = scan_folder(clean_root, jobs=1, options=ScanOptions(detect_faces=False))
    rows = manifest.set_index("path", drop=False)
    small = make_thumbnails(rows.iloc[:1], clean_root, max_pixels=100)  # 32x32 > 100 px
    assert "over the 100 px bound" in str(next(iter(small.values())).reason)
    happy, sad = "happy/happy_000.jpg", "sad/sad_000.jpg"
    grown = clean_root / happy  # replaced since the scan by a larger picture
    Image.new("RGB", (64, 64)).save(grown)
    (clean_root / sad).unlink()
    os.mkfifo(clean_root / "happy/happy_001.jpg.fifo")
    fifo_row = rows.loc[["happy/happy_001.jpg"]].assign(path="happy/happy_001.jpg.fifo")
    picked = pd.concat([rows.loc[[happy, sad]], fifo_row])
    thumbs = make_thumbnails(picked, clean_root, max_pixels=2000)
    assert "declares 64x64 = 4,096 px" in str(thumbs[happy].reason)
    assert "FileNotFoundError" in str(thumbs[sad].reason)
    assert "a FIFO (named pipe), not a regular file" in str(
        thumbs["happy/happy_001.jpg.fifo"].reason
    )


def test_charts_draw_without_sizes_and_name_what_they_leave_out() -> None:
    n = MAX_CLASSES_DRAWN + 5
    frame = pd.DataFrame(
        {
            "label": [f"class_{i:02d}$x" for i in range(n)],  # "$" is no mathtext here
            "file_bytes": [0] * n,
            "width_px": [pd.NA] * n,
            "height_px": [pd.NA] * n,
            "status": ["rejected"] * n,
        }
    ).astype({"file_bytes": "Int64", "width_px": "Int64", "height_px": "Int64"})
    counts = pd.DataFrame({"label": frame["label"], "n_files": range(n), "n_accepted": 0})
    classes = plot_classes(counts, min_ratio=0.5, min_files=None)
    assert f"The {MAX_CLASSES_DRAWN} largest of {n} classes" in classes.caption
    assert "and 33 more classes" in classes.alt
    sizes = plot_file_sizes(frame, min_bytes=None)
    assert f"{n} empty files (0 bytes) not drawn" in sizes.caption
    dims = plot_dimensions(frame, min_side=48, max_pixels=None)
    assert "0 images drawn; min_side bound at 48 px" in dims.alt
    for chart in (classes, sizes, dims):
        assert svg_size(chart.src)[0] > 200


# --------------------------------------------------------------------------------------
# The command line


def test_validate_writes_report_html_and_says_where(
    hostile: HostileCorpus, tiny_profile: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["validate", str(hostile.root), "-p", str(tiny_profile), "-o", str(out), "--no-faces"]
    assert main(argv) == 1
    printed = capsys.readouterr().out
    assert f"report: {out / REPORT_HTML}" in printed
    assert f"findings: {out / REPORT_HTML})" in printed  # the examples point to every finding
    report = json.loads((out / "report.json").read_text())
    assert report["seconds"]["report"] >= 0
    page = parse_html((out / REPORT_HTML).read_text(encoding="utf-8"))
    assert page.by_id("verdict").text.startswith("FAILED")
    assert not (out / "data_docs").exists()


def test_validate_no_html_writes_json_only(
    clean_root: Path, tiny_profile: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    argv = ["validate", str(clean_root), "-p", str(tiny_profile), "-o", str(out), "--no-html"]
    assert main(argv) == 0
    assert (out / "report.json").is_file() and not (out / REPORT_HTML).exists()


def test_validate_data_docs_builds_great_expectations_site(
    hostile: HostileCorpus,
    tiny_profile: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "run"
    argv = ["validate", str(hostile.root), "-p", str(tiny_profile), "-o", str(out),
            "--no-faces", "--data-docs"]  # fmt: skip
    assert main(argv) == 1
    index = out / "data_docs" / "index.html"
    assert f"data docs: {index}" in capsys.readouterr().out
    text = index.read_text(encoding="utf-8")
    for suite in ("toolkit.classes", "toolkit.files"):
        assert suite in text
    suite_page = out / "data_docs" / "expectations" / "toolkit" / "classes.html"
    assert "toolkit rule: min_files_per_class" in suite_page.read_text(encoding="utf-8")
    results = {p.name for p in (out / "data_docs" / "validations").rglob("*.html")}
    assert {"classes.html", "files.html"} <= results
    assert json.loads((out / "report.json").read_text())["seconds"]["data_docs"] >= 0


def _dataset_wide(path: str) -> bool:
    return path == DATASET_PATH or path.endswith("/")


def test_a_profile_that_switches_a_floor_off_with_zero_still_gets_its_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 0 bytes and 0 px are legal floors (no floor); the log-scaled charts have no 0 to draw
    root = tmp_path / "d"
    write_clean_folder(root)
    profile = tmp_path / "zero.toml"
    profile.write_text(TINY_PROFILE + "[rules.min_side]\nmin_px = 0\n", encoding="utf-8")
    profile.write_text(
        profile.read_text(encoding="utf-8").replace("min_bytes = 100", "min_bytes = 0"),
        encoding="utf-8",
    )
    out = tmp_path / "out"
    code = main(["validate", str(root), "-p", str(profile), "-o", str(out), "--no-faces"])
    said = capsys.readouterr()
    assert code in (0, 1), said.err
    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="chart-file-sizes"' in html and 'id="chart-dimensions"' in html
