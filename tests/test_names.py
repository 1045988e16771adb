"""Names are data, never markup: any name a file system allows reaches every output inert.

A class folder or file name may hold `$...$` (matplotlib's mathtext), terminal escape
sequences, bells, carriage returns, bidi overrides, HTML and template syntax. Plots draw it
as text, terminals get it escaped (`\\x1b`, `\\u202e`), report.html autoescapes it, JSON keeps
it byte for byte; the manifest's `path` is the name itself.
"""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_PROFILE
from corpus import encode_image, write_clean_folder
from htmltree import parse_html
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from toolkit.cli import main
from toolkit.manifest import read_manifest
from toolkit.scan import ScanOptions
from toolkit.text import escape_controls

#: What a terminal obeys rather than shows: C0 and C1 controls, DEL, bidi embeddings,
#: overrides, isolates and marks, line and paragraph separators, lone surrogates.
OBEYED = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
#: The issue's class folder: matplotlib read it as math and crashed the confusion matrix.
MATH_CLASS = "$\\bogus$"
#: A second class whose name sets the terminal's title and rings its bell (OSC 0 ... BEL).
TITLE_CLASS = "sad\x1b]0;pwned\x07"
#: A file name that turns a terminal red and rings it.
RED_FILE = "a\x1b[31mred\x07.jpg"

#: Names built from what breaks each output: markup, math, template syntax, controls, bidi.
hostile_names = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8", exclude_characters="/\x00"),
        st.sampled_from(list("$\\{}<>&\"'%_^#~\x1b\x07\x08\r\n\t\x7f\x85\x9b\u202e\u2066\u2029")),
    ),
    min_size=1,
    max_size=24,
)


def raw_controls(text: str) -> list[str]:
    """The characters of `text` a terminal would obey, as code points."""
    return [f"U+{ord(c):04X}" for c in OBEYED.findall(text)]


def printed_controls(printed: str) -> list[str]:
    """What a terminal would obey in printed lines, besides the newlines that end them and
    the carriage returns that redraw a progress bar (names' own are escaped: see above)."""
    return raw_controls(printed.replace("\n", "").replace("\r", ""))


# ---------------------------------------------------------------------- terminal text


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("a\x1b[31mred\x07.jpg", "a\\x1b[31mred\\x07.jpg"),
        ("line\nbreak\rover\ttab.jpg", "line\\nbreak\\rover\\ttab.jpg"),
        ("del\x7f and csi\x9b2J.jpg", "del\\x7f and csi\\x9b2J.jpg"),
        ("invoice\u202egpj.exe", "invoice\\u202egpj.exe"),
        ("isolate\u2066x\u2069.png", "isolate\\u2066x\\u2069.png"),
        ("bytes\udcff\udcfe.jpg", "bytes\\xff\\xfe.jpg"),
        ("café 😀 👩\u200d👩\u200d👧 日本.jpg", "café 😀 👩\u200d👩\u200d👧 日本.jpg"),
        ("$\\bogus$ <b>{{ x }}</b>", "$\\bogus$ <b>{{ x }}</b>"),
    ],
    ids=[
        "an escape sequence and a bell are shown, not obeyed",
        "newline, carriage return and tab cannot break or overwrite the line",
        "DEL and a C1 control are shown",
        "a right-to-left override cannot reverse the extension",
        "bidi isolates are shown",
        "bytes no encoding could decode are shown as the manifest spells them",
        "accents, emoji (with joiners) and other scripts are left as they are",
        "markup and math are text to a terminal, left as they are",
    ],
)
def test_a_name_is_shown_on_a_terminal_with_its_controls_escaped(name: str, shown: str) -> None:
    assert escape_controls(name) == shown


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet=st.characters(codec=None), max_size=40) | hostile_names)
def test_escaped_text_holds_no_control_and_keeps_every_other_character(text: str) -> None:
    shown = escape_controls(text)
    assert not raw_controls(shown)
    kept = iter(shown)  # the other characters appear in order: nothing is dropped
    assert all(c in kept for c in text if not OBEYED.match(c))
    if not OBEYED.search(text):
        assert shown == text


# ---------------------------------------------------------------------- plots


def _png_renders(path_or_bytes: Path | bytes) -> tuple[int, int]:
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else path_or_bytes.read_bytes()
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return img.size


@settings(max_examples=15, deadline=None)  # each example draws four figures
@given(first=hostile_names, second=hostile_names)
@example(first=MATH_CLASS, second="$x^{2}$ \\frac{a}{b} $")  # the crash, and real math
@example(first=TITLE_CLASS, second="<b>{{ x }}</b>\u202egpj.jpg")
def test_every_plot_draws_any_name_as_text(
    first: str, second: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import base64
    from xml.etree import ElementTree

    from toolkit.report.charts import plot_classes, shown
    from toolkit.report.training import plot_confusion, plot_curves, plot_reliability

    tmp_path = tmp_path_factory.mktemp("plots")
    labels = [first, second + "\u200b"]  # two distinct labels whatever hypothesis draws
    assert _png_renders(plot_confusion([[3, 1], [0, 4]], labels, tmp_path / "c.png"))
    history = {"loss": [0.7, 0.5], "val_loss": [0.8, 0.6], "accuracy": [0.5, 0.7]}
    assert _png_renders(plot_curves(history, tmp_path / "h.png", title=f"{first}: good fit"))
    bins = [{"low": 0.5, "high": 1.0, "accuracy": 0.8, "confidence": 0.75}]
    assert _png_renders(plot_reliability(bins, 0.05, tmp_path / "r.png"))
    classes = pd.DataFrame({"label": labels, "n_files": [5, 3], "n_accepted": [4, 3]})
    chart = plot_classes(classes, min_ratio=0.5, min_files=2)
    svg = ElementTree.fromstring(base64.b64decode(chart.src.split(",", 1)[1]))  # valid XML
    drawn = [t.text or "" for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    for label in labels:  # drawn as text, escaped (a long name is cut, with "...")
        assert any(t[:20] == shown(label)[:20] for t in drawn), (label, drawn)
    assert not any(raw_controls(t) for t in drawn)
    assert not raw_controls(chart.alt)


# ---------------------------------------------------------------------- train, predict


def write_named_classes(root: Path, names: tuple[str, ...], n_per_class: int = 8) -> Path:
    """Classes a tiny CNN can learn (bright, dark), under the given folder names."""
    rng = np.random.default_rng(0)
    for name, level in zip(names, (200, 50), strict=True):
        (root / name).mkdir(parents=True)
        for i in range(n_per_class):
            pixels = np.clip(rng.normal(level, 25, size=(8, 8, 3)), 0, 255).astype(np.uint8)
            img = Image.fromarray(pixels).resize((32, 32), Image.Resampling.BICUBIC)
            img.save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def named_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One epoch of the seed model on classes named `$\\bogus$` and an OSC title sequence."""
    base = tmp_path_factory.mktemp("names")
    data = write_named_classes(base / "data", (MATH_CLASS, TITLE_CLASS))
    profile = base / "tiny.toml"
    profile.write_text(TINY_PROFILE, encoding="utf-8")
    run = base / "run"
    code = main(
        ["train", str(data), "--model", "seed", "--image-size", "32", "--epochs", "1",
         "--profile", str(profile), "--out", str(run), "--batch-size", "4"]
    )  # fmt: skip
    return {"code": code, "data": data, "run": run, "profile": profile, "base": base}


def test_a_class_named_like_math_trains_and_its_confusion_matrix_is_drawn(
    named_run: dict[str, object],
) -> None:
    run = named_run["run"]
    assert isinstance(run, Path)
    assert named_run["code"] == 0
    config = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert config["status"] == "finished"
    assert config["labels"] == sorted([MATH_CLASS, TITLE_CLASS])  # JSON keeps the names
    for name in ("confusion_matrix.png", "curves.png", "reliability.png"):
        assert _png_renders(run / name), name


def test_train_prints_class_names_escaped(
    named_run: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, data, profile = named_run["run"], named_run["data"], named_run["profile"]
    assert isinstance(run, Path) and isinstance(data, Path)
    capsys.readouterr()
    code = main(
        ["train", str(data), "--model", "seed", "--image-size", "32", "--epochs", "1",
         "--profile", str(profile), "--out", str(tmp_path / "again"), "--batch-size", "4"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert not printed_controls(out + err)
    assert escape_controls(TITLE_CLASS) in out and MATH_CLASS in out


def test_predict_prints_a_hostile_file_name_escaped_and_json_keeps_it(
    named_run: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = named_run["run"]
    good = tmp_path / RED_FILE
    good.write_bytes(encode_image(size=(32, 32)))
    bad = tmp_path / "not\u202egpj.jpg"
    bad.write_text("not a picture")
    capsys.readouterr()
    code = main(["predict", str(run), str(good), str(bad)])
    out, err = capsys.readouterr()
    assert code == 1
    assert not printed_controls(out + err), printed_controls(out + err)
    assert escape_controls(str(good)) + ": " in out
    assert f"{escape_controls(str(bad))}: error: unsupported content: text" in err
    assert main(["predict", str(run), str(good), str(bad), "--json"]) == 1
    printed = capsys.readouterr().out
    assert not printed_controls(printed)
    assert [item["path"] for item in json.loads(printed)] == [str(good), str(bad)]


def test_evaluate_prints_class_names_escaped(
    named_run: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    run, data, profile = named_run["run"], named_run["data"], named_run["profile"]
    capsys.readouterr()
    code = main(["evaluate", str(run), str(data), "--profile", str(profile)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert not printed_controls(out + err)
    assert escape_controls(TITLE_CLASS) in out
    assert main(["evaluate", str(run), str(data), "--profile", str(profile), "--json"]) == 0
    printed = capsys.readouterr().out
    assert not printed_controls(printed)
    assert json.loads(printed)["labels"] == sorted([MATH_CLASS, TITLE_CLASS])


# ---------------------------------------------------------------------- log lines


def test_log_lines_name_a_file_with_its_controls_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from toolkit.models import InputSpec
    from toolkit.pipeline import decode_rows
    from toolkit.scan import FileScanner, scan_folder

    root = tmp_path / "data"
    write_clean_folder(root, n_per_class=1)
    (root / "happy" / RED_FILE).write_bytes(encode_image(size=(32, 32), seed=7))
    rows = scan_folder(root, jobs=1, options=ScanOptions(detect_faces=False))
    (root / "happy" / RED_FILE).unlink()  # gone since the scan: training leaves it out
    decode_rows(rows[rows["label"] == "happy"], InputSpec(8, 3), ["happy"], root=root)

    def broken(self: FileScanner, row: dict, full: str) -> None:
        raise RuntimeError("a bug while reading")

    monkeypatch.setattr(FileScanner, "_fill_content", broken)
    (root / "happy" / RED_FILE).write_bytes(encode_image(size=(32, 32), seed=7))
    scan_folder(root, jobs=1, options=ScanOptions(detect_faces=False))
    # the lines logging's last-resort handler prints on a terminal
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum(escape_controls(RED_FILE) in line for line in warned) == 2, warned
    assert not any(raw_controls(line) for line in warned), warned


# ---------------------------------------------------------------------- validate


def test_a_refusal_prints_the_path_it_names_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "gone\x1b[2J\u202e"
    assert main(["scan", str(missing), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert not printed_controls(err), printed_controls(err)
    assert err.startswith("toolkit: error: ") and "gone\\x1b[2J\\u202e" in err


@pytest.fixture
def named_folder(tmp_path: Path) -> Path:
    """A clean folder plus a class and files whose names hold controls, bidi and markup."""
    root = tmp_path / "data"
    write_clean_folder(root, n_per_class=4)
    (root / "happy" / RED_FILE).write_bytes(encode_image(size=(32, 32), seed=7))
    (root / "happy" / "\x1b[2Jgone.jpg").write_bytes(b"")  # rejected: its line is printed
    (root / "sad" / "<script>alert('x') \"q\" {{ 7*7 }}\u202egpj.jpg").write_bytes(b"junk")
    (root / "odd\x1b[7mclass").mkdir()
    return root


def test_validate_prints_no_raw_control_and_keeps_the_names_as_data(
    named_folder: Path, tiny_profile: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "run"
    code = main(["validate", str(named_folder), "-p", str(tiny_profile), "-o", str(out_dir)])
    out, err = capsys.readouterr()
    assert code == 1  # the empty class breaks min_files_per_class
    assert not printed_controls(out + err), printed_controls(out + err)
    assert "happy/\\x1b[2Jgone.jpg: " in out  # the rejected file's line, escaped
    assert "odd\\x1b[7mclass" in out  # the class table and the class's finding
    manifest = read_manifest(out_dir)
    assert f"happy/{RED_FILE}" in set(manifest["path"])  # the data keeps the name itself
    report = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
    assert "happy/\x1b[2Jgone.jpg" in {f["path"] for f in report["findings"]}
    assert "odd\x1b[7mclass" in report["classes"]


def test_quarantine_and_restore_print_hostile_names_escaped(
    named_folder: Path, tiny_profile: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir, into = tmp_path / "run", tmp_path / "quarantined"
    main(["validate", str(named_folder), "-p", str(tiny_profile), "-o", str(out_dir)])
    (named_folder / "happy" / "\x1b[2Jgone.jpg").unlink()  # so its "not moved" line is printed
    capsys.readouterr()
    assert main(["quarantine", str(out_dir), "--into", str(into)]) == 0
    assert main(["restore", str(into)]) == 0
    out, err = capsys.readouterr()
    assert "not moved: happy/\\x1b[2Jgone.jpg" in out and "restored" in out
    assert not printed_controls(out + err), printed_controls(out + err)
    assert (named_folder / "sad" / "<script>alert('x') \"q\" {{ 7*7 }}\u202egpj.jpg").exists()


def test_report_html_shows_hostile_names_as_inert_text(
    named_folder: Path, tiny_profile: Path, tmp_path: Path
) -> None:
    out_dir = tmp_path / "run"
    main(["validate", str(named_folder), "-p", str(tiny_profile), "-o", str(out_dir)])
    text = (out_dir / "report.html").read_text(encoding="utf-8")
    page = parse_html(text)
    assert not page.find_all("script")
    assert "<script>alert" not in text and "&lt;script&gt;alert(" in text
    assert "{{ 7*7 }}" in page.text  # the template never reads data as template syntax
    assert not raw_controls(page.text)  # what a reader sees holds no control, no bidi override
    assert not any(raw_controls(img.attrs.get("alt") or "") for img in page.find_all("img"))
    hostile = "sad/<script>alert('x') \"q\" {{ 7*7 }}\u202egpj.jpg"
    cards = {c.attrs["data-path"]: c for c in page.find_all("figure", "file")}
    assert hostile in cards  # the attribute holds the name itself, for tools that look it up
    assert cards[hostile].find_all("code", "path")[0].text == escape_controls(hostile)
