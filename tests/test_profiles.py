"""Profiles load by name or path, extend each other, and refuse what they cannot mean."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.errors import ProfileError
from toolkit.profiles import builtin_profiles, load_profile
from validations.rules import REGISTRY, Between


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
         "rules.min_file_bytes.min_bytes: expected an integer >= 0, got '9KB' (str)"),
        ("[rules.min_file_bytes]\nmin_bytes = true\n",
         "expected an integer >= 0, got True (bool)"),
        ("[rules.min_file_bytes]\nmax_bytes = 3\n",
         "unknown parameter (valid: min_bytes, severity)"),
        ("[rules.allowed_format]\nformats = 'jpeg'\n",
         "expected a non-empty list of distinct values, each one of avif, bmp,"),
        ("[rules.has_face]\nseverity = 'fatal'\n",
         "rules.has_face.severity: expected one of error, warning, off, got 'fatal' (str)"),
        ("colour = 'red'\n", "colour: unknown setting"),
        ("rules = 3\n", "rules: expected a table of rule names, got 3"),
        ("extends = 3\n", "extends: expected a string, got 3"),
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


@pytest.mark.parametrize("name", sorted(builtin_profiles()))
def test_every_builtin_profile_loads(name: str) -> None:
    assert load_profile(name).rules


# --------------------------------------------------------------------------------------
# Values: type, shape and range, checked when the profile loads (issue 26, item 4)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[rules.class_balance]\nmin_ratio = nan\n",
         "rules.class_balance.min_ratio: expected a number from 0 to 1, got nan"),
        ("[rules]\nmin_file_bytes = 5\n",
         "rules.min_file_bytes: expected a table of the rule's parameters (valid: min_bytes, "
         "severity), got 5; write them under a [rules.min_file_bytes] header"),
        ("rules = 5\n", "rules: expected a table of rule names, got 5"),
        ('extends = "tutorial"\nrules = 5\n', "rules: expected a table of rule names, got 5"),
        ('extends = "tutorial"\n[rules]\nnot_hidden = "yes"\n',
         "rules.not_hidden: expected a table of the rule's parameters (valid: severity), "
         "got 'yes' (str)"),
        ("[rules.max_pixels]\nmax_pixels = -1\n",
         "rules.max_pixels.max_pixels: expected an integer >= 1, got -1"),
        ("[rules.max_pixels]\nmax_pixels = 0\n", "expected an integer >= 1, got 0"),
        ("[rules.class_balance]\nmin_ratio = inf\n", "expected a number from 0 to 1, got inf"),
        ("[rules.class_balance]\nmin_ratio = 1.5\n", "expected a number from 0 to 1, got 1.5"),
        ("[rules.max_duplicate_share]\nmax_share = -0.01\n",
         "rules.max_duplicate_share.max_share: expected a number from 0 to 1, got -0.01"),
        ("[rules.min_file_bytes]\nmin_bytes = -1\n", "expected an integer >= 0, got -1"),
        ("[rules.min_file_bytes]\nmin_bytes = 9.5\n", "expected an integer >= 0, got 9.5"),
        ("[rules.near_duplicate]\nmax_phash_distance = 64\n",
         "rules.near_duplicate.max_phash_distance: expected an integer from 0 to 16, got 64"),
        ("[rules.allowed_format]\nformats = []\n",
         "rules.allowed_format.formats: expected a non-empty list of distinct values, each one "
         "of avif, bmp, gif, heic, ico, jpeg, png, svg, tiff, webp, got [] (list)"),
        ("[rules.allowed_format]\nformats = ['jpeg', 'jpg']\n", "got ['jpeg', 'jpg'] (list)"),
        ("[rules.allowed_format]\nformats = ['png', 'png']\n", "got ['png', 'png'] (list)"),
        ("[rules.min_side]\nmin_px = 20000\n[rules.max_pixels]\n",
         "rules.min_side.min_px: expected an integer <= 10,000, as an image at least that wide "
         "and tall must fit rules.max_pixels.max_pixels (100,000,000), got 20000"),
        ("name = 5\n", "name: expected a string, got 5"),
        ("description = ['a']\n", "description: expected a string, got ['a'] (list)"),
        ('extends = "no\\u0000such"\n', "no such built-in profile or file"),
        (f'extends = "{"x" * 5000}"\n', "no such built-in profile or file"),
    ],
    ids=["min_ratio = nan (the issue's example)",
         "a rule set to a number directly under [rules] (the issue's example)",
         "rules = 5 (the issue's example)", "rules = 5 in a profile that extends another",
         "a rule set to a string in a profile that extends another",
         "max_pixels = -1 (the issue's example)", "max_pixels = 0 rejects every file",
         "an infinite ratio", "a ratio over 1 fails every dataset", "a negative share",
         "a negative size", "a fraction of a byte", "a hash distance past the 64-bit hash",
         "no allowed format at all", "a format named by its extension",
         "a format listed twice", "a minimum side no image under max_pixels can have",
         "a name that is not a string", "a description that is not a string",
         "a parent profile name holding a NUL byte", "a parent profile name too long for a path"],
)  # fmt: skip
def test_bad_values_are_refused_with_key_value_and_what_is_allowed(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as err:
        load_profile(str(path))
    assert message in str(err.value)
    assert err.value.exit_code == 2 and "\n" not in str(err.value)


def test_yaml_integer_beyond_64_bits_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("rules:\n  min_file_bytes:\n    min_bytes: 100000000000000000000\n")
    with pytest.raises(ProfileError, match="expected an integer >= 0 that fits in 64 bits"):
        load_profile(str(path))


def test_bad_value_in_the_parent_names_the_parent_file(tmp_path: Path) -> None:
    (tmp_path / "parent.toml").write_text("[rules.class_balance]\nmin_ratio = -1\n")
    (tmp_path / "child.toml").write_text('extends = "parent.toml"\n')
    with pytest.raises(ProfileError) as err:
        load_profile(str(tmp_path / "child.toml"))
    assert err.value.source == str(tmp_path / "parent.toml")
    assert err.value.key == "rules.class_balance.min_ratio"


def test_switched_off_rule_still_has_its_values_checked(tmp_path: Path) -> None:
    path = tmp_path / "off.toml"
    path.write_text('[rules.max_pixels]\nseverity = "off"\nmax_pixels = -1\n')
    with pytest.raises(ProfileError, match="max_pixels: expected an integer >= 1, got -1"):
        load_profile(str(path))


def test_contradiction_is_only_refused_between_blocking_rules(tmp_path: Path) -> None:
    path = tmp_path / "warn.toml"
    path.write_text('[rules.min_side]\nmin_px = 20000\nseverity = "warning"\n[rules.max_pixels]\n')
    rules = {r.name: r for r in load_profile(str(path)).rules}
    assert rules["min_side"].min_px == 20000


def test_validate_with_a_bad_profile_fails_before_the_scan(
    clean_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import toolkit.scan
    from toolkit.cli import main

    scanned = []
    monkeypatch.setattr(toolkit.scan, "scan_folder", lambda *a, **k: scanned.append(a))
    bad = tmp_path / "bad.toml"
    bad.write_text('extends = "tutorial"\n[rules.class_balance]\nmin_ratio = nan\n')
    out = tmp_path / "run"
    code = main(["validate", str(clean_root), "--profile", str(bad), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and not scanned and not out.exists()
    assert err.splitlines() == [
        f"toolkit: error: {bad}: rules.class_balance.min_ratio: "
        "expected a number from 0 to 1, got nan"
    ]


# --------------------------------------------------------------------------------------
# The contract: every parameter of every rule has a declared range, and loading enforces it


def _declared_parameters() -> list[tuple[str, str, Any]]:
    found = []
    for name, cls in sorted(REGISTRY.items()):
        hints = typing.get_type_hints(cls, include_extras=True)
        found += [(name, f.name, hints[f.name]) for f in dataclasses.fields(cls)]
    return found


PARAMETERS = _declared_parameters()


def _constraints(hint: Any) -> tuple[Any, list[Any]]:
    if typing.get_origin(hint) is typing.Annotated:
        kind, *declared = typing.get_args(hint)
        return kind, declared
    return hint, []


def _edge_cases() -> list[tuple[str, str, Any, bool]]:
    """(rule, parameter, value, accepted): each bound, and a value just past it."""
    cases = []
    for rule, param, hint in PARAMETERS:
        if param == "severity":
            continue
        kind, declared = _constraints(hint)
        default = next(f.default for f in dataclasses.fields(REGISTRY[rule]) if f.name == param)
        if typing.get_origin(kind) is tuple:
            (inner, _) = typing.get_args(kind)
            (choices,) = _constraints(inner)[1]
            first = choices.choices[0]
            cases += [(rule, param, [c], True) for c in choices.choices]
            cases += [(rule, param, list(default), True), (rule, param, [], False),
                      (rule, param, [first, first], False), (rule, param, ["jpg"], False),
                      (rule, param, first, False), (rule, param, [1], False)]  # fmt: skip
            continue
        (bound,) = declared  # every number parameter declares exactly one range
        cases += [(rule, param, default, True), (rule, param, True, False),
                  (rule, param, str(default), False)]  # fmt: skip
        if kind is int:  # unbounded ends stop at the 64 bits of the manifest's int columns
            low = -(2**63) if bound.low is None else bound.low
            high = 2**63 - 1 if bound.high is None else bound.high
            edges = [(low, low - 1), (high, high + 1)]
            cases.append((rule, param, 1.5, False))
        else:
            ends = ((bound.low, -math.inf), (bound.high, math.inf))
            edges = [(e, math.nextafter(e, away)) for e, away in ends if e is not None]
            cases += [(rule, param, v, False) for v in (math.nan, math.inf, -math.inf)]
        for edge, past in edges:
            cases += [(rule, param, kind(edge), True), (rule, param, past, False)]
    # one case per value: a default that is also a bound is tried once
    return list({(r, p, toml_value(v), ok): (r, p, v, ok) for r, p, v, ok in cases}.values())


def toml_value(value: Any) -> str:
    """`value` written as a TOML value (inline arrays and tables included)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else {math.inf: "inf", -math.inf: "-inf"}.get(value, repr(value))
        )
    if isinstance(value, (int, datetime.date, datetime.time)):
        return value.isoformat() if not isinstance(value, int) else str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    items = (f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}" for k, v in value.items())
    return "{" + ", ".join(items) + "}"


EDGE_CASES = _edge_cases()


@pytest.mark.parametrize(
    ("bound", "value", "allowed"),
    [(Between(0), math.inf, False), (Between(0), math.nan, False), (Between(None, 1), -math.inf,
      False), (Between(0), 2**70, True), (Between(0, 1), 1, True), (Between(0, 1), 0.0, True)],
    ids=["infinity past an open upper end", "NaN past an open upper end",
         "minus infinity past an open lower end", "an integer too large for a float",
         "the upper end itself", "the lower end itself"],
)  # fmt: skip
def test_ranges_hold_finite_values_only(bound: Between, value: float, allowed: bool) -> None:
    assert bound.allows(value) is allowed


def test_every_number_parameter_declares_a_range() -> None:
    for rule, param, hint in PARAMETERS:
        kind, declared = _constraints(hint)
        if param == "severity":
            assert kind is str, rule
        elif typing.get_origin(kind) is tuple:
            (inner, _) = typing.get_args(kind)
            assert _constraints(inner)[1], f"{rule}.{param}: items have no declared choices"
        else:
            assert kind in (int, float) and len(declared) == 1, f"{rule}.{param}: no range"


@pytest.mark.parametrize(
    ("rule", "param", "value", "accepted"),
    EDGE_CASES,
    ids=[f"{r}.{p} = {toml_value(v)} is {'accepted' if ok else 'refused'}"
         for r, p, v, ok in EDGE_CASES],
)  # fmt: skip
def test_each_parameter_accepts_its_bounds_and_refuses_past_them(
    tmp_path: Path, rule: str, param: str, value: Any, accepted: bool
) -> None:
    path = tmp_path / "p.toml"
    path.write_text(f"[rules.{rule}]\n{param} = {toml_value(value)}\n")
    if accepted:
        (loaded,) = load_profile(str(path)).rules
        assert getattr(loaded, param) == (tuple(value) if isinstance(value, list) else value)
        return
    with pytest.raises(ProfileError) as err:
        load_profile(str(path))
    assert err.value.key == f"rules.{rule}.{param}"
    assert "expected " in err.value.problem and "got " in err.value.problem


_SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=12),
    st.datetimes(),
    st.dates(),
    st.times(),
)
_TOML_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=3),
    ),
    max_leaves=8,
)
_WHERE = [f"[rules.{r}]\n{p} = " for r, p, _ in PARAMETERS] + [
    "[rules]\nmin_side = ", "rules = ", "name = ", "description = ", "extends = ",
]  # fmt: skip


@settings(max_examples=50, deadline=None)
@given(where=st.sampled_from(_WHERE), value=_TOML_VALUES | st.sampled_from(EDGE_CASES).map(
    lambda case: case[2]))  # fmt: skip
def test_any_value_anywhere_loads_or_is_refused_in_one_line(
    tmp_path_factory: pytest.TempPathFactory, where: str, value: Any
) -> None:
    path = tmp_path_factory.mktemp("prop") / "p.toml"
    path.write_text(where + toml_value(value) + "\n", encoding="utf-8")
    try:
        profile = load_profile(str(path))
    except ProfileError as exc:
        assert "\n" not in str(exc) and exc.exit_code == 2
    else:
        for rule in profile.rules:
            for f in dataclasses.fields(rule):
                hint = typing.get_type_hints(type(rule), include_extras=True)[f.name]
                for bound in _constraints(hint)[1]:
                    assert bound.allows(getattr(rule, f.name)), (rule.name, f.name)


@pytest.mark.parametrize(
    ("text", "pixels", "decode_bytes"),
    [
        ("", 100_000_000, 400_000_000),
        ("[rules.max_pixels]\nmax_pixels = 200_000_000\n", 200_000_000, 800_000_000),
        ("[rules.max_pixels]\nmax_pixels = 1_000_000\n", 1_000_000, 4_000_000),
        ('[rules.max_pixels]\nseverity = "off"\n', 100_000_000, 400_000_000),
    ],
    ids=[
        "the tutorial profile's limit is the scan's default",
        "a raised max_pixels raises the scan's decode limits",
        "a lowered max_pixels lowers the scan's decode limits",
        "with max_pixels switched off the scan keeps its default limit",
    ],
)
def test_scan_options_take_their_limits_from_max_pixels(
    tmp_path: Path, text: str, pixels: int, decode_bytes: int
) -> None:
    from toolkit.scan import ScanOptions

    path = tmp_path / "p.toml"
    path.write_text('extends = "tutorial"\n' + text, encoding="utf-8")
    options = load_profile(path).scan_options(detect_faces=False)
    assert options == ScanOptions(
        max_decode_pixels=pixels, max_decode_bytes=decode_bytes, detect_faces=False
    )
