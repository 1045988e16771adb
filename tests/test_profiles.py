"""Profiles load by name or path, extend each other, and refuse what they cannot mean."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.errors import ProfileError
from toolkit.profiles import builtin_profiles, load_profile


def test_builtin_profiles_load() -> None:
    assert set(builtin_profiles()) == {"tutorial", "small-faces", "scraped"}
    tutorial = load_profile()
    assert tutorial.name == "tutorial"
    rules = {r.name: r for r in tutorial.rules}
    assert rules["min_file_bytes"].min_bytes == 9216
    assert rules["allowed_format"].formats == ("jpeg", "png", "bmp")


def test_small_faces_swaps_byte_rules_for_resolution_rules() -> None:
    rules = {r.name: r for r in load_profile("small-faces").rules}
    assert rules["min_file_bytes"].min_bytes < 360  # FER2013's smallest face is 359 bytes
    assert rules["min_side"].min_px == 48
    assert "has_face" not in rules  # severity = "off" drops the parent's rule
    assert rules["label_conflict"].severity == "error"  # inherited


def test_scraped_keeps_thumbnails_and_the_content_rules() -> None:
    rules = {r.name: r for r in load_profile("scraped").rules}
    assert rules["min_file_bytes"].min_bytes == 2048  # image-search thumbnails are 4-9 KB
    assert rules["min_side"].min_px == 64  # what a 64 px face model needs
    for inherited in ("decodable", "allowed_format", "label_conflict"):
        assert rules[inherited].severity == "error"


@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
def test_user_profile_file_extends_a_builtin(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"mine{suffix}"
    if suffix == ".toml":
        path.write_text('extends = "tutorial"\n[rules.min_file_bytes]\nmin_bytes = 4096\n')
    else:
        path.write_text("extends: tutorial\nrules:\n  min_file_bytes:\n    min_bytes: 4096\n")
    profile = load_profile(str(path))
    rules = {r.name: r for r in profile.rules}
    assert profile.name == "mine" and rules["min_file_bytes"].min_bytes == 4096
    assert "label_conflict" in rules


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[rules.min_bites]\n", "rules.min_bites: unknown rule (valid: allowed_format,"),
        ("[rules.min_file_bytes]\nmin_bytes = '9KB'\n",
         "rules.min_file_bytes.min_bytes: expected int, got '9KB' (str)"),
        ("[rules.min_file_bytes]\nmin_bytes = true\n", "expected int, got True"),
        ("[rules.min_file_bytes]\nmax_bytes = 3\n",
         "unknown parameter (valid: min_bytes, severity)"),
        ("[rules.allowed_format]\nformats = 'jpeg'\n", "expected a list"),
        ("[rules.has_face]\nseverity = 'fatal'\n", "'fatal' is not a severity"),
        ("colour = 'red'\n", "colour: unknown setting"),
        ("rules = 3\n", "rules: expected a table of rule names"),
        ("extends = 3\n", "extends: expected a profile name or path"),
        ("[rules\n", "cannot be parsed"),
    ],
    ids=["unknown rule", "wrong type", "bool for int", "unknown parameter", "string for list",
         "unknown severity", "unknown setting", "rules not a table", "bad extends", "bad toml"],
)  # fmt: skip
def test_bad_profiles_name_key_value_and_choices(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as err:
        load_profile(str(path))
    assert message in str(err.value) and str(path) in str(err.value)
    assert err.value.exit_code == 2


def test_float_thresholds_accept_integers(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("[rules.class_balance]\nmin_ratio = 1\n")
    (rule,) = load_profile(str(path)).rules
    assert rule.min_ratio == 1.0


def test_extends_loop_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(ProfileError, match="loop"):
        load_profile(str(tmp_path / "a.toml"))
