"""Every rule: a case at its threshold that passes and one just past it that fails.

The cases run through `validate_manifest` (its default runner; tests/test_engines.py holds
pandera and Great Expectations to the same findings), so they check the rule, its
threshold, its comparison and the plumbing.
A rule added to the registry without both kinds of case fails
`test_every_rule_has_a_passing_and_a_failing_case`; each case's id starts with its rule's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest

from toolkit.manifest import SCAN_COLUMNS, normalise_manifest
from toolkit.profiles import Profile
from toolkit.validate import validate_manifest
from validations.rules import REGISTRY, Rule

_rng = np.random.default_rng(7)
_PHASHES = [f"{int(v):016x}" for v in _rng.integers(0, 2**63, size=200, dtype=np.int64)]


def row(i: int, **changes: object) -> dict:
    """A manifest row of a clean, accepted 100x100 JPEG (distinct content per i)."""
    base = dict.fromkeys(SCAN_COLUMNS)
    label = "happy" if i % 2 == 0 else "sad"
    base.update(
        path=f"{label}/img{i}.jpg", label=label, extension="jpg", is_hidden=False,
        is_valid_name=True, is_symlink=False, is_readable=True, file_bytes=20_000,
        mtime_ns=1, sha256=f"{i:064x}", detected_format="jpeg", width_px=100, height_px=100,
        mode="RGB", channels=3, n_frames=1, is_decodable=True, phash=_PHASHES[i], n_faces=1,
    )  # fmt: skip
    base.update(changes)
    return base


def frame(rows: list[dict], class_folders: list[str] | None = None) -> pd.DataFrame:
    """A manifest DataFrame from rows."""
    out = normalise_manifest(pd.DataFrame(rows, columns=SCAN_COLUMNS))
    out.attrs["class_folders"] = class_folders or sorted({r["label"] for r in rows if r["label"]})
    return out


def clean(n: int = 8) -> list[dict]:
    """n clean rows alternating happy/sad."""
    return [row(i) for i in range(n)]


def flip_bit(hex_hash: str, n_bits: int) -> str:
    """The hash with its lowest n_bits flipped (Hamming distance n_bits)."""
    return f"{int(hex_hash, 16) ^ ((1 << n_bits) - 1):016x}"


@dataclass
class Case:
    """A rule, a manifest, and the findings (paths) it must produce."""

    id: str
    rule: Rule
    rows: Callable[[], list[dict]]
    flagged: list[str]
    class_folders: list[str] | None = None
    extra: dict = field(default_factory=dict)


R = REGISTRY
CASES = [
    # ---------------------------------------------------------------- file rules
    Case("a file in a class folder passes", R["in_class_folder"](), clean, []),
    Case("a file loose in the root is flagged", R["in_class_folder"](),
         lambda: [*clean(), row(50, path="notes.jpg", label=None)], ["notes.jpg"]),
    Case("visible files pass", R["not_hidden"](), clean, []),
    Case(".DS_Store is flagged", R["not_hidden"](),
         lambda: [*clean(), row(50, path="sad/.DS_Store", is_hidden=True)], ["sad/.DS_Store"]),
    Case("UTF-8 names pass", R["valid_file_name"](), clean, []),
    Case("a non-UTF-8 name is flagged", R["valid_file_name"](),
         lambda: [*clean(), row(50, path="sad/\\xff.jpg", is_valid_name=False)], ["sad/\\xff.jpg"]),
    Case("readable files pass", R["readable"](), clean, []),
    Case("a dangling symlink is flagged", R["readable"](),
         lambda: [*clean(), row(50, is_readable=False, read_error="dangling symlink",
                                sha256=None, file_bytes=None, is_decodable=False)],
         ["happy/img50.jpg"]),
    Case("decodable images pass", R["decodable"](), clean, []),
    Case("a truncated JPEG is flagged", R["decodable"](),
         lambda: [*clean(), row(50, is_decodable=False, decode_error="truncated")],
         ["happy/img50.jpg"]),
    Case("jpeg, png and bmp content pass", R["allowed_format"](formats=("jpeg", "png", "bmp")),
         lambda: [row(0), row(1, detected_format="png"), row(2, detected_format="bmp")], []),
    Case("webp content is flagged", R["allowed_format"](formats=("jpeg", "png", "bmp")),
         lambda: [*clean(), row(50, detected_format="webp")], ["happy/img50.jpg"]),
    Case("a .jpeg holding JPEG passes", R["format_matches_extension"](),
         lambda: [row(0, extension="jpeg"), row(1, extension="JPG".lower())], []),
    Case("a PNG named .jpg is flagged", R["format_matches_extension"](),
         lambda: [*clean(), row(50, detected_format="png")], ["happy/img50.jpg"]),
    Case("exactly min_bytes passes", R["min_file_bytes"](min_bytes=9216),
         lambda: [row(0, file_bytes=9216), *clean()[1:]], []),
    Case("one byte under min_bytes is flagged", R["min_file_bytes"](min_bytes=9216),
         lambda: [row(0, file_bytes=9215), *clean()[1:]], ["happy/img0.jpg"]),
    Case("exactly max_pixels passes", R["max_pixels"](max_pixels=10_000),
         lambda: [row(0, width_px=100, height_px=100), *clean()[1:]], []),
    Case("one pixel row over max_pixels is flagged", R["max_pixels"](max_pixels=10_000),
         lambda: [row(0, width_px=100, height_px=101), *clean()[1:]], ["happy/img0.jpg"]),
    Case("a shorter side of exactly min_px passes", R["min_side"](min_px=48),
         lambda: [row(0, width_px=48, height_px=300), *clean()[1:]], []),
    Case("a shorter side one under min_px is flagged", R["min_side"](min_px=48),
         lambda: [row(0, width_px=300, height_px=47), *clean()[1:]], ["happy/img0.jpg"]),
    Case("a single frame passes", R["not_animated"](), clean, []),
    Case("a 2-frame GIF is flagged", R["not_animated"](),
         lambda: [*clean(), row(50, n_frames=2)], ["happy/img50.jpg"]),
    Case("an image with a face passes", R["has_face"](), clean, []),
    Case("an image without a face is flagged", R["has_face"](),
         lambda: [*clean(), row(50, n_faces=0)], ["happy/img50.jpg"]),
    # -------------------------------------------------------- image-quality rules
    Case("brightest pixels at min_luma_p99 pass", R["not_dark"](min_luma_p99=0.3),
         lambda: [row(0, luma_p99=0.3), *clean()[1:]], []),
    Case("brightest pixels just under min_luma_p99 are flagged", R["not_dark"](min_luma_p99=0.3),
         lambda: [row(0, luma_p99=0.29), *clean()[1:]], ["happy/img0.jpg"]),
    Case("darkest pixels at max_luma_p05 pass", R["not_washed_out"](max_luma_p05=0.75),
         lambda: [row(0, luma_p05=0.75), *clean()[1:]], []),
    Case("darkest pixels just over max_luma_p05 are flagged",
         R["not_washed_out"](max_luma_p05=0.75),
         lambda: [row(0, luma_p05=0.76), *clean()[1:]], ["happy/img0.jpg"]),
    Case("sharpness at min_sharpness passes", R["not_blurry"](min_sharpness=0.2),
         lambda: [row(0, sharpness=0.2), *clean()[1:]], []),
    Case("a flat image, whose sharpness is undefined, is not called blurry",
         R["not_blurry"](min_sharpness=0.2), lambda: [row(0, sharpness=None), *clean()[1:]], []),
    Case("sharpness just under min_sharpness is flagged", R["not_blurry"](min_sharpness=0.2),
         lambda: [row(0, sharpness=0.19), *clean()[1:]], ["happy/img0.jpg"]),
    Case("entropy at min_bits passes", R["min_entropy"](min_bits=2.7),
         lambda: [row(0, entropy_bits=2.7), *clean()[1:]], []),
    Case("entropy just under min_bits is flagged", R["min_entropy"](min_bits=2.7),
         lambda: [row(0, entropy_bits=2.69), *clean()[1:]], ["happy/img0.jpg"]),
    Case("an undecodable file is judged by decodable, not by its scores",
         R["min_entropy"](min_bits=2.7),
         lambda: [row(0, entropy_bits=0.0, is_decodable=False), *clean()[1:]], []),
    Case("a 3:1 picture at max_ratio passes", R["max_aspect_ratio"](max_ratio=3.0),
         lambda: [row(0, width_px=300, height_px=100), *clean()[1:]], []),
    Case("a portrait just over max_ratio is flagged", R["max_aspect_ratio"](max_ratio=3.0),
         lambda: [row(0, width_px=100, height_px=301), *clean()[1:]], ["happy/img0.jpg"]),
    Case("colour at min_chroma_ratio passes", R["not_grayscale"](min_chroma_ratio=0.05),
         lambda: [row(0, chroma_ratio=0.05), *clean()[1:]], []),
    Case("colour just under min_chroma_ratio is flagged",
         R["not_grayscale"](min_chroma_ratio=0.05),
         lambda: [row(0, chroma_ratio=0.049), *clean()[1:]], ["happy/img0.jpg"]),
    # ------------------------------------------------------- per-file dataset rules
    Case("distinct pictures pass", R["label_conflict"](max_phash_distance=2), clean, []),
    Case("the same bytes in two classes flag both", R["label_conflict"](),
         lambda: [*clean(), row(50, sha256="f" * 64), row(51, sha256="f" * 64)],
         ["happy/img50.jpg", "sad/img51.jpg"]),
    Case("hashes max_phash_distance apart in two classes flag both",
         R["label_conflict"](max_phash_distance=2),
         lambda: [*clean(), row(50), row(51, phash=flip_bit(_PHASHES[50], 2))],
         ["happy/img50.jpg", "sad/img51.jpg"]),
    Case("hashes one bit further apart pass", R["label_conflict"](max_phash_distance=2),
         lambda: [*clean(), row(50), row(51, phash=flip_bit(_PHASHES[50], 3))], []),
    Case("the same bytes under one label are no conflict", R["label_conflict"](),
         lambda: [*clean(), row(50, sha256="f" * 64), row(52, sha256="f" * 64)], []),
    Case("distinct files pass", R["exact_duplicate"](), clean, []),
    Case("a second copy in one class is flagged, the first kept", R["exact_duplicate"](),
         lambda: [*clean(), row(50, sha256="e" * 64), row(52, sha256="e" * 64)],
         ["happy/img52.jpg"]),
    Case("pictures further apart than max_phash_distance pass",
         R["near_duplicate"](max_phash_distance=4),
         lambda: [*clean(), row(50), row(52, phash=flip_bit(_PHASHES[50], 5))], []),
    Case("a picture max_phash_distance away in one class is flagged",
         R["near_duplicate"](max_phash_distance=4),
         lambda: [*clean(), row(50), row(52, phash=flip_bit(_PHASHES[50], 4))],
         ["happy/img52.jpg"]),
    Case("an exact copy is not a near duplicate", R["near_duplicate"](),
         lambda: [*clean(), row(50), row(52, sha256=f"{50:064x}", phash=_PHASHES[50])], []),
    # ------------------------------------------------------------- dataset rules
    Case("unique paths pass", R["unique_paths"](), clean, []),
    Case("a path listed twice is flagged", R["unique_paths"](),
         lambda: [*clean(), row(0, sha256="d" * 64)], ["happy/img0.jpg", "happy/img0.jpg"]),
    Case("exactly min_classes classes pass", R["min_classes"](min_classes=2), clean, []),
    Case("one class short of min_classes is flagged", R["min_classes"](min_classes=3),
         clean, ["."]),
    Case("exactly min_files per class passes", R["min_files_per_class"](min_files=4),
         clean, []),
    Case("one file short of min_files is flagged", R["min_files_per_class"](min_files=5),
         clean, ["happy/", "sad/"]),
    Case("an empty class folder is flagged", R["min_files_per_class"](min_files=1),
         clean, ["neutral/"], class_folders=["happy", "neutral", "sad"]),
    Case("a class at exactly min_ratio of the largest passes", R["class_balance"](min_ratio=0.5),
         lambda: [row(i) for i in range(8)] + [row(i) for i in range(8, 16, 2)], []),
    Case("a class just under min_ratio is flagged", R["class_balance"](min_ratio=0.5),
         lambda: [row(i) for i in range(7)] + [row(i) for i in range(8, 18, 2)], ["sad/"]),
    Case("exactly max_share copies pass", R["max_duplicate_share"](max_share=0.05),
         lambda: [*clean(19), row(19, sha256=f"{0:064x}")], []),
    Case("more than max_share copies are flagged", R["max_duplicate_share"](max_share=0.05),
         lambda: [*clean(18), row(18, sha256=f"{0:064x}"), row(19, sha256=f"{1:064x}")],
         ["."]),
    Case("exactly max_share rejected passes",
         R["max_rejected_share"](max_share=0.25),
         lambda: [*clean(6), row(6, n_frames=2), row(7, n_frames=2)], [],
         extra={"with": R["not_animated"]()}),
    Case("more than max_share rejected is flagged",
         R["max_rejected_share"](max_share=0.25),
         lambda: [*clean(5), row(5, n_frames=2), row(6, n_frames=2), row(7, n_frames=2)],
         ["."], extra={"with": R["not_animated"]()}),
]  # fmt: skip


def _findings(case: Case) -> list[str]:
    rules = (case.rule, *([case.extra["with"]] if "with" in case.extra else []))
    profile = Profile("test", "", rules, "test")
    result = validate_manifest(frame(case.rows(), case.class_folders), profile)
    return sorted(f.path for f in result.findings if f.rule == case.rule.name)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.rule.name}: {c.id}" for c in CASES])
def test_rule_case(case: Case) -> None:
    assert _findings(case) == sorted(case.flagged)


def test_every_rule_has_a_passing_and_a_failing_case() -> None:
    passing = {c.rule.name for c in CASES if not c.flagged}
    failing = {c.rule.name for c in CASES if c.flagged}
    assert set(REGISTRY) - passing == set(), "rules without a passing case"
    assert set(REGISTRY) - failing == set(), "rules without a failing case"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_rule_states_itself_in_words(name: str) -> None:
    rule = REGISTRY[name]()
    assert rule.name == name
    assert rule.rule and rule.severity in ("error", "warning")


def test_blocking_file_rule_rejects_and_warning_only_reports() -> None:
    rows = [*clean(), row(50, detected_format="png", file_bytes=10)]
    profile = Profile(
        "test", "", (R["min_file_bytes"](min_bytes=100), R["format_matches_extension"]()), "t"
    )
    result = validate_manifest(frame(rows), profile)
    bad = result.manifest.set_index("path").loc["happy/img50.jpg"]
    assert bad["status"] == "rejected"
    assert bad["reasons"] == "min_file_bytes"
    assert bad["warnings"] == "format_matches_extension"
    assert len(result.accepted) == 8 and result.passed


def test_failing_dataset_rule_fails_the_verdict_but_rejects_no_file() -> None:
    profile = Profile("test", "", (R["min_classes"](min_classes=3),), "t")
    result = validate_manifest(frame(clean()), profile)
    assert not result.passed
    assert len(result.rejected) == 0


def test_warning_dataset_rule_does_not_fail_the_verdict() -> None:
    profile = Profile("test", "", (R["min_classes"](min_classes=3, severity="warning"),), "t")
    result = validate_manifest(frame(clean()), profile)
    assert result.passed and [f.rule for f in result.findings] == ["min_classes"]
