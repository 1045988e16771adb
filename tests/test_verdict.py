"""A verdict a user can act on: `toolkit validate` opens with the dataset-wide findings and
the advice (a rule rejecting much of the folder, and what the other built-in profiles would
accept), then counts per rule, then a few example files per rule, one line per file."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from conftest import shared_dataset
from corpus import HostileCorpus, write_image
from htmltree import parse_html
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.cli import EXAMPLES_PER_RULE, _examples, main
from toolkit.profiles import builtin_profiles, load_profile
from toolkit.scan import scan_folder
from toolkit.validate import ADVICE_SHARE, Finding, advise, validate_manifest

#: a text file loose in the root: it breaks several rules (in_class_folder, decodable, ...)
LOOSE = "README.md"


def write_thumbnails(root: Path, n_small: int, n_large: int) -> Path:
    """Two classes of 80 px JPEGs: `n_small` per class of 3 KB (under the tutorial's 9 KB,
    over the scraped profile's 2 KB) and `n_large` per class of 10 KB; and a loose text file."""
    for c, label in enumerate(("happy", "sad")):
        for i in range(n_small + n_large):
            size = 3_000 if i < n_small else 10_000
            write_image(root / label / f"{i:02d}.jpg", size=(80, 80), seed=c * 100 + i,
                        pad_to_bytes=size)  # fmt: skip
    (root / LOOSE).write_text("where these came from\n" * 10, encoding="utf-8")
    return root


def run_validate(root: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    main(["validate", str(root), "--out", str(out), "--no-faces", "--no-html"])
    return capsys.readouterr().out.splitlines()


def test_summary_opens_with_dataset_wide_then_counts_then_examples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = run_validate(write_thumbnails(tmp_path / "d", 6, 1), tmp_path / "o", capsys)
    text = "\n".join(lines)
    at = {key: next(i for i, s in enumerate(lines) if s.startswith(key))
          for key in ("dataset-wide:", "rejected by rule:", "examples", "verdict:")}  # fmt: skip
    assert at["dataset-wide:"] < at["rejected by rule:"] < at["examples"] < at["verdict:"], text
    # the rejected share (a warning about the whole set) sits under dataset-wide, on top
    share = next(i for i, s in enumerate(lines) if ".: max_rejected_share:" in s)
    assert at["dataset-wide:"] < share < at["rejected by rule:"], text
    # examples are capped per rule: 14 small files, EXAMPLES_PER_RULE of them shown under
    # the rule's heading (other rules' examples may show more of them, each once)
    head = next(i for i, s in enumerate(lines) if s.strip().startswith("min_file_bytes ("))
    block = list(itertools.takewhile(lambda s: not s.strip().endswith("):"), lines[head + 1 :]))
    small = [s for s in block if "min_file_bytes: 3,0" in s]
    assert 0 < len(small) <= EXAMPLES_PER_RULE, text


def test_a_file_breaking_several_rules_is_one_line_with_all_its_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = run_validate(write_thumbnails(tmp_path / "d", 6, 1), tmp_path / "o", capsys)
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    its_rules = {f["rule"] for f in report["findings"] if f["path"] == LOOSE}
    assert len(its_rules) >= 3, its_rules  # the case this test is about
    mine = [s for s in lines if s.strip().startswith(f"{LOOSE}:")]
    assert len(mine) == 1, lines
    assert all(f"{rule}:" in mine[0] for rule in its_rules), mine[0]


RULES = {"a": "error", "b": "error", "c": "warning", "d": "warning"}


@settings(max_examples=40, deadline=None)
@given(st.sets(st.tuples(st.sampled_from(["x.jpg", "y.jpg", "z.png", "w.bmp", "v.gif"]),
                         st.sampled_from(sorted(RULES))), max_size=20))  # fmt: skip
def test_examples_print_each_file_once_with_all_its_rules(pairs: set[tuple[str, str]]) -> None:
    findings = [Finding(path, rule, RULES[rule], f"{rule} of {path}") for path, rule in pairs]
    examples = _examples(findings, {r: {"severity": sev} for r, sev in RULES.items()})
    lines = [line for _, shown in examples for line in shown]
    printed = [line.split(": ", 1)[0] for line in lines]
    assert len(printed) == len(set(printed))  # one line per file
    for path, line in zip(printed, lines, strict=True):
        assert all(f"{f.rule}: {f.detail}" in line for f in findings if f.path == path)
    assert all(len(shown) <= EXAMPLES_PER_RULE for _, shown in examples)
    # every rule is illustrated, unless its files were all printed under an earlier rule
    headed = [rule for rule, _ in examples]
    for rule in {r for _, r in pairs} - set(headed):
        assert {p for p, r in pairs if r == rule} <= set(printed)
    # blocking rules come first
    severities = [RULES[r] for r in headed]
    assert severities == sorted(severities)


@pytest.mark.parametrize(
    ("n_small", "n_large", "advised"),
    [(6, 1, True), (0, 3, False)],
    ids=[
        "most files under 9 KB: the summary names the rule and what scraped would accept",
        "files of 10 KB: no rule rejects a quarter, no advice",
    ],
)
def test_advice_when_one_rule_rejects_more_than_the_share(
    n_small: int, n_large: int, advised: bool, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    lines = run_validate(write_thumbnails(tmp_path / "d", n_small, n_large), tmp_path / "o", capsys)
    text = "\n".join(lines)
    n_files = 2 * (n_small + n_large) + 1
    advice = json.loads((tmp_path / "o" / "report.json").read_text())["advice"]
    assert advice["share"] == ADVICE_SHARE and advice["n_files"] == n_files
    if advised:
        assert advice["rules"] == {"min_file_bytes": 2 * n_small + 1}
        assert advice["other_profiles"]["scraped"] == {
            "n_accepted": n_files - 1, "passed": False, "n_undecided": 0}  # fmt: skip
        assert f"min_file_bytes rejects {2 * n_small + 1} of {n_files} files" in text
        assert f"the scraped profile would accept {n_files - 1} of {n_files} (fails)" in text
        assert "small-faces profile would accept" in text
    else:
        assert advice["rules"] == {} and advice["other_profiles"] == {}
        assert "would accept" not in text


def test_report_html_gives_the_advice_above_the_rule_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_thumbnails(tmp_path / "d", 6, 1)
    main(["validate", str(root), "--out", str(tmp_path / "o"), "--no-faces"])
    capsys.readouterr()
    text = (tmp_path / "o" / "report.html").read_text(encoding="utf-8")
    page = parse_html(text)
    advice = page.by_id("advice")
    (heavy,) = advice.find_all("p", "heavy-rule")
    assert heavy.attrs["data-rule"] == "min_file_bytes" and "13 of 15 files" in heavy.text
    others = {li.attrs["data-profile"]: li.text for li in advice.find_all("li", "other-profile")}
    assert set(others) == {"scraped", "small-faces"}
    assert "would accept 14 of 15" in others["scraped"]
    assert text.index('id="advice"') < text.index('<section id="rules"')


def test_advice_counts_files_the_scan_left_undecoded_for_a_profile_that_would_decode_them(
    tmp_path: Path,
) -> None:
    root = write_thumbnails(tmp_path / "d", 2, 0)
    low = tmp_path / "low.toml"  # the tutorial's rules, decoding at most 80x80 - 1 pixels
    low.write_text('extends = "tutorial"\n[rules.max_pixels]\nmax_pixels = 6399\n')
    profile = load_profile(low)
    result = validate_manifest(
        scan_folder(root, jobs=1, options=profile.scan_options(detect_faces=False)), profile
    )
    advice = advise(result)
    assert advice.rules == {"decodable": 5, "max_pixels": 4, "min_file_bytes": 5}
    # scraped decodes up to 100 million pixels: the 4 images are undecided, not guessed
    assert advice.other_profiles["scraped"].n_undecided == 4
    assert advice.other_profiles["scraped"].n_accepted == 0


@pytest.mark.shared
def test_renotte_hears_about_the_scraped_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = shared_dataset("renotte")
    text = "\n".join(run_validate(root, tmp_path / "o", capsys))
    assert "min_file_bytes rejects" in text
    assert "the scraped profile would accept 291 of 302" in text


@pytest.mark.parametrize(
    "name",
    ["tutorial", "scraped", "small-faces"],
    ids=[
        "tutorial: the advice's verdicts on a hostile folder are a full validation's",
        "scraped: the advice's verdicts on a hostile folder are a full validation's",
        "small-faces: the advice's verdicts on a hostile folder are a full validation's",
    ],
)
def test_the_advice_judges_as_a_full_validation_without_wording_findings(
    name: str, hostile: HostileCorpus
) -> None:
    assert set(builtin_profiles()) == {"tutorial", "scraped", "small-faces"}
    manifest = scan_folder(hostile.root, jobs=1)
    full = validate_manifest(manifest, load_profile(name))
    bare = validate_manifest(manifest, load_profile(name), worded=False)
    verdicts = ["status", "reasons", "warnings"]
    assert bare.manifest[verdicts].equals(full.manifest[verdicts])
    assert (bare.passed, bare.by_rule()) == (full.passed, full.by_rule())
    assert len(full.rejected) > 0  # the folder breaks rules to judge
