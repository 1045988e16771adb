"""toolkit.check: the one entry point gives what scanning then validating gives, on the engine
asked for, with the profile's scan options."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from toolkit.check import (
    CheckOptions,
    Engine,
    LocalEngine,
    check_folder,
    check_roots,
    profiles_for,
)
from toolkit.errors import DatasetFailedError, UsageError
from toolkit.manifest import manifest_run_id, read_manifest
from toolkit.profiles import Profile, load_profile
from toolkit.scan import scan_folder
from toolkit.validate import Validation, validate_manifest


@pytest.mark.parametrize(
    "by_name", [True, False], ids=["a profile named by its file", "a loaded profile"]
)
def test_check_folder_gives_what_scan_then_validate_gives(
    clean_root: Path, tiny_profile: Path, by_name: bool
) -> None:
    profile = load_profile(str(tiny_profile))
    expected = validate_manifest(
        scan_folder(clean_root, jobs=1, options=profile.scan_options(detect_faces=False)), profile
    )
    result = check_folder(
        clean_root, str(tiny_profile) if by_name else profile, jobs=1, detect_faces=False
    )
    assert result.findings == expected.findings and result.passed == expected.passed
    pd.testing.assert_frame_equal(result.manifest, expected.manifest)
    assert set(result.seconds) == {"scan", "validate"}  # report.json's keys for the local engine


def test_check_folder_writes_the_manifest_with_its_run_id(
    clean_root: Path, tiny_profile: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    result = check_folder(
        clean_root, str(tiny_profile), jobs=1, detect_faces=False, out=out, run_id="r1"
    )
    assert manifest_run_id(out / "manifest.parquet") == "r1"
    assert len(read_manifest(out)) == len(result.manifest) == 8


def test_an_unknown_engine_is_refused_with_the_choices(clean_root: Path) -> None:
    with pytest.raises(UsageError, match="unknown engine 'spark': choose local or dask"):
        check_folder(clean_root, "tutorial", engine="spark")


@dataclass
class RecordingEngine:
    """An engine of our own: the interface is all check_folder needs."""

    name = "recording"
    seen: list[CheckOptions] = field(default_factory=list)

    def check(
        self, source: str, profile: Profile, options: CheckOptions
    ) -> tuple[Validation, dict[str, float]]:
        self.seen.append(options)
        result, _ = LocalEngine().check(source, profile, options)
        return result, {"recorded": 1.0}


def test_any_engine_gets_the_profiles_scan_options(clean_root: Path, tmp_path: Path) -> None:
    profile_file = tmp_path / "big.toml"
    profile_file.write_text(
        'extends = "tutorial"\n[rules.max_pixels]\nmax_pixels = 200_000_000\n', encoding="utf-8"
    )
    profile = load_profile(str(profile_file))
    engine = RecordingEngine()
    assert isinstance(engine, Engine)
    result = check_folder(clean_root, profile, engine=engine, jobs=1, detect_faces=False)
    (options,) = engine.seen
    assert options.scan == profile.scan_options(detect_faces=False)
    assert options.scan != load_profile("tutorial").scan_options(detect_faces=False)
    assert result.seconds == {"recorded": 1.0} and len(result.manifest) == 8


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, ["tutorial", "tutorial"]),
        (["scraped"], ["scraped", "scraped"]),
        (["scraped", "small-faces"], ["scraped", "small-faces"]),
    ],
    ids=["none given: the default for each", "one for all", "one per folder"],
)
def test_each_training_folder_gets_its_profile(
    given: list[str] | None, expected: list[str]
) -> None:
    assert profiles_for([Path("a"), Path("b")], given) == expected


def test_three_profiles_for_two_folders_are_refused() -> None:
    with pytest.raises(UsageError, match=r"one per data folder \(2\)"):
        profiles_for([Path("a"), Path("b")], ["tutorial", "scraped", "small-faces"])


def test_check_roots_hands_on_each_judged_manifest_with_its_root(
    clean_root: Path, tiny_profile: Path
) -> None:
    heard: list[tuple[Path, bool, str]] = []
    frames = check_roots(
        [clean_root],
        [str(tiny_profile)],
        jobs=1,
        on_checked=lambda root, result, rules: heard.append((root, result.passed, rules.name)),
    )
    assert heard == [(clean_root, True, "tiny")]
    assert (frames[0]["root"] == str(clean_root.resolve())).all() and "status" in frames[0]


def test_check_roots_refuses_a_folder_that_failed(tmp_path: Path, tiny_profile: Path) -> None:
    from corpus import write_single_class_folder

    one = write_single_class_folder(tmp_path / "one")
    with pytest.raises(DatasetFailedError, match="the dataset failed min_classes") as err:
        check_roots([one], [str(tiny_profile)], jobs=1)
    assert err.value.path == one
