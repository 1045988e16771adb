"""The dataset-rule contract: every registered rule gives the same findings and verdict on
both engines, and a new dataset rule is one class plus one profile line.

The folder below is built so that every rule a folder can break is broken at least once;
the local engine and the Dask engine must then agree finding for finding. The toy rules are
defined here and registered only for the test: nothing else in the toolkit names them, so
both engines and report.html handle them through the contract (their table, `per_file`,
`uses_phash`, `report_layout`) alone.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from toolkit.check import DaskEngine, Engine, LocalEngine, check_folder
from toolkit.cli import main
from toolkit.expect import Expect
from toolkit.manifest import read_manifest
from toolkit.profiles import load_profile
from toolkit.validate import TABLE_BUILDERS
from validations.rules import REGISTRY, DatasetRule, Table

pytest.importorskip("distributed")

#: report.json keys that say when and how, not what
_RUN_KEYS = {"seconds", "command", "created_at", "run_id"}
#: Rules no scanned folder can break: a folder never holds one path twice (a merged or
#: edited manifest can).
_UNBREAKABLE_BY_A_FOLDER = {"unique_paths"}

#: Every registered rule with a threshold that the folder below breaks.
BREAK_EVERY_RULE = """
name = "breaks-everything"
description = "thresholds the contract folder breaks, one rule at a time"
[rules.in_class_folder]
[rules.not_hidden]
[rules.valid_file_name]
[rules.readable]
[rules.decodable]
[rules.allowed_format]
formats = ["jpeg", "png", "gif"]
[rules.format_matches_extension]
severity = "warning"
[rules.min_file_bytes]
min_bytes = 400
[rules.max_pixels]
max_pixels = 20000
[rules.min_side]
min_px = 16
[rules.not_animated]
[rules.has_face]
severity = "warning"
[rules.not_dark]
min_luma_p99 = 1.0
[rules.not_washed_out]
max_luma_p05 = 0.0
[rules.not_blurry]
min_sharpness = 10.0
[rules.min_entropy]
min_bits = 8.0
[rules.max_aspect_ratio]
max_ratio = 1.0
[rules.not_grayscale]
min_chroma_ratio = 10.0
[rules.label_conflict]
max_phash_distance = 0
[rules.exact_duplicate]
severity = "warning"
[rules.near_duplicate]
severity = "warning"
max_phash_distance = 8
[rules.unique_paths]
[rules.min_classes]
min_classes = 3
[rules.min_files_per_class]
min_files = 50
[rules.class_balance]
min_ratio = 1.0
[rules.max_duplicate_share]
max_share = 0.0
[rules.max_rejected_share]
severity = "warning"
max_share = 0.0
"""


def _picture(seed: int, size: int = 64) -> Image.Image:
    """A smooth picture (its perceptual hash survives re-encoding), distinct per seed."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)


def _encoded(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def write_rule_breaker(root: Path) -> Path:
    """A small folder in which every rule a folder can break is broken at least once."""
    for label in ("happy", "sad"):
        (root / label).mkdir(parents=True)
    original = _encoded(_picture(1), "JPEG", quality=95)
    files = {
        "happy/clean_a.jpg": _encoded(_picture(2), "JPEG", quality=95),
        "happy/clean_b.jpg": _encoded(_picture(3), "JPEG", quality=95),
        "happy/original.jpg": original,
        "happy/original_copy.jpg": original,  # exact_duplicate, max_duplicate_share
        "happy/original_resaved.jpg": _encoded(_picture(1), "JPEG", quality=60),  # near copy
        "sad/original.jpg": original,  # label_conflict
        "sad/clean_c.jpg": _encoded(_picture(4), "JPEG", quality=95),
        "README.txt": b"notes beside the class folders\n" * 20,  # in_class_folder
        "happy/.hidden.jpg": _encoded(_picture(5), "JPEG", quality=95),  # not_hidden
        "happy/truncated.jpg": _encoded(_picture(6), "JPEG", quality=95)[:300],  # decodable
        "happy/picture.bmp": _encoded(_picture(7), "BMP"),  # allowed_format
        "happy/png_named.jpg": _encoded(_picture(8), "PNG"),  # format_matches_extension
        "sad/tiny.jpg": _encoded(_picture(9, size=8), "JPEG"),  # min_file_bytes, min_side
        "sad/banner.jpg": _encoded(_picture(14).resize((128, 32)), "JPEG", quality=95),  # ratio
        "sad/huge.png": _encoded(_picture(10, size=160), "PNG"),  # max_pixels
        "sad/animated.gif": _encoded(
            _picture(11).convert("P"),
            "GIF",
            save_all=True,
            append_images=[_picture(12).convert("P")],
        ),  # not_animated
    }
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    os.symlink(root / "gone.jpg", root / "sad" / "dangling.jpg")  # readable
    # valid_file_name: bytes that are not UTF-8
    with open(os.fsencode(root / "sad") + b"/bad\xffname.jpg", "wb") as fh:
        fh.write(_encoded(_picture(13), "JPEG", quality=95))
    return root


@pytest.fixture(scope="module")
def breaker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rule_breaker(tmp_path_factory.mktemp("contract") / "data")


def _profile(tmp_path: Path, text: str):
    path = tmp_path / "profile.toml"
    path.write_text(text, encoding="utf-8")
    return load_profile(str(path))


def _checked_by_both(root: Path, profile, client):
    engines: list[Engine] = [LocalEngine(), DaskEngine(scheduler=client.scheduler.address)]
    return [check_folder(root, profile, engine=e, jobs=1) for e in engines]


def _what(result) -> dict:
    return {k: v for k, v in result.to_report().items() if k not in _RUN_KEYS}


def test_every_table_a_rule_can_name_has_one_builder_both_engines_use() -> None:
    assert set(TABLE_BUILDERS) == set(Table)
    assert {Table(cls.table) for cls in REGISTRY.values() if issubclass(cls, DatasetRule)} <= set(
        TABLE_BUILDERS
    )


def test_every_registered_rule_breaks_alike_on_both_engines(
    breaker: Path, client, tmp_path: Path
) -> None:
    profile = _profile(tmp_path, BREAK_EVERY_RULE)
    assert {r.name for r in profile.rules} == set(REGISTRY), "the profile names every rule"
    local, dask = _checked_by_both(breaker, profile, client)
    broken = {f.rule for f in local.findings}
    assert broken == set(REGISTRY) - _UNBREAKABLE_BY_A_FOLDER, "the folder breaks every rule"
    assert local.findings == dask.findings
    assert (
        (local.passed, local.failed_rules)
        == (dask.passed, dask.failed_rules)
        == (
            False,
            ["class_balance", "max_duplicate_share", "min_classes", "min_files_per_class"],
        )
    )
    assert _what(local) == _what(dask)
    pd.testing.assert_frame_equal(local.manifest, dask.manifest)


# --------------------------------------------------------------------------------------
# A new dataset rule: one class (here, in the test) plus one profile line


@dataclass(frozen=True)
class MaxFilesPerClass(DatasetRule):
    """A toy rule on an after-rejection table: no class holds more than `max_files` files."""

    name: ClassVar[str] = "max_files_per_class"
    table: ClassVar[Table] = Table.CLASSES
    max_files: int = 1000

    @property
    def rule(self) -> str:
        return f"each class has <= {self.max_files} files"

    def expectation(self) -> Expect:
        return Expect.column_values_to_be_between(column="n_files", max_value=self.max_files)

    def detail(self, row: pd.Series) -> str:
        return f"{row['n_files']} files, toy limit {self.max_files}"


@dataclass(frozen=True)
class SharedBytes(DatasetRule):
    """A toy rule on the files table that rejects files: no bytes twice, in any class."""

    name: ClassVar[str] = "shared_bytes"
    per_file: ClassVar[bool] = True

    @property
    def rule(self) -> str:
        return "no two files hold the same bytes (toy)"

    def prepare(self, manifest: pd.DataFrame) -> pd.DataFrame:
        counts = manifest["sha256"].map(manifest["sha256"].value_counts())
        return pd.DataFrame({"n_same_bytes": counts.fillna(0).astype("int64")})

    def expectation(self) -> Expect:
        return Expect.column_values_to_be_between(column="n_same_bytes", max_value=1)

    def detail(self, row: pd.Series) -> str:
        return f"toy: {row['n_same_bytes']} files hold these bytes"


TOY_PROFILE = """
name = "toy"
description = "the tutorial plus two rules the toolkit does not ship"
extends = "tutorial"
[rules.has_face]
severity = "off"
[rules.max_files_per_class]
max_files = 3
[rules.shared_bytes]
"""


@pytest.fixture
def toy_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """The toy rules in the registry for this test only."""
    for cls in (MaxFilesPerClass, SharedBytes):
        monkeypatch.setitem(REGISTRY, cls.name, cls)


def test_a_new_dataset_rule_is_one_class_and_one_profile_line(
    toy_rules: None, breaker: Path, client, tmp_path: Path
) -> None:
    profile = tmp_path / "toy.toml"
    profile.write_text(TOY_PROFILE, encoding="utf-8")
    args = ["validate", str(breaker), "-p", str(profile)]
    assert main([*args, "-o", str(tmp_path / "local")]) == 1
    dask = ["-o", str(tmp_path / "dask"), "--engine", "dask"]
    assert main([*args, *dask, "--scheduler", client.scheduler.address]) == 1

    reports = [json.loads((tmp_path / d / "report.json").read_text()) for d in ("local", "dask")]
    local, on_dask = ({k: v for k, v in r.items() if k not in _RUN_KEYS} for r in reports)
    assert local == on_dask
    copies = ["happy/original.jpg", "happy/original_copy.jpg", "sad/original.jpg"]
    toy = [(f["path"], f["rule"]) for f in local["findings"] if f["rule"] in REGISTRY]
    assert [p for p, rule in toy if rule == "shared_bytes"] == copies
    assert ("happy/", "max_files_per_class") in toy
    assert "max_files_per_class" in local["rules"] and local["by_rule"]["shared_bytes"] == 3
    manifest = read_manifest(tmp_path / "dask").set_index("path")
    assert all("shared_bytes" in manifest.at[p, "reasons"] for p in copies)
    for folder in ("local", "dask"):
        page = (tmp_path / folder / "report.html").read_text(encoding="utf-8")
        assert "no two files hold the same bytes (toy)" in page  # its file cards
        assert "toy limit 3" in page  # its dataset-wide line
        assert "happy/original_copy.jpg" in page
