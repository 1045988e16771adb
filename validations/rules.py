"""Every rule the toolkit knows, in one registry: a rule is a frozen dataclass.

Two kinds, by what runs them (validate.py):

- `FileRule`: a test of one manifest row at a time. validate.py calls each on the whole
  manifest and collects every failure of every file (or, for `Runner.LIBRARIES`, runs them
  as the Checks of one lazy pandera schema, with the same findings).
- `DatasetRule`: a test that needs many rows at once (duplicates, label conflicts, class
  counts). It builds a small table from the manifest and declares what it expects of it
  in Great Expectations' vocabulary (`toolkit.expect.Expect`), judged by the fast
  interpreter or by GX itself; each row of that table it flags becomes a Finding. When the table
  has one row per file (`per_file = True`), flagged files are rejected like a FileRule's.

Spelling is one everywhere: class `MinFileBytes` <-> rule `"min_file_bytes"` <-> profile key
`[rules.min_file_bytes]` <-> report key <-> its cases in tests/test_rules.py, whose ids start
with the rule's name (`pytest tests/test_rules.py -k min_file_bytes`); a rule without a passing
and a failing case there fails `test_every_rule_has_a_passing_and_a_failing_case`, and
tests/test_rule_contract.py runs every rule through both engines. Thresholds live in
profiles (validations/profiles), never here: the values below are only defaults. What a
profile may set them to is declared here, beside each parameter (`Between`, `OneOf` in its
`Annotated` type); profiles.py refuses anything else when the profile loads.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import numpy as np
import pandas as pd

from toolkit.expect import Expect
from toolkit.groups import NEAR_PHASH_DISTANCE, content_groups
from toolkit.manifest import DATASET_PATH
from toolkit.scan import DEFAULT_MAX_DECODE_PIXELS

SEVERITIES = ("error", "warning")

#: Extension -> the format name `scan.sniff_format` gives that content.
EXTENSION_FORMATS = {
    "jpg": "jpeg", "jpeg": "jpeg", "jpe": "jpeg", "jfif": "jpeg", "png": "png",
    "bmp": "bmp", "dib": "bmp", "gif": "gif", "webp": "webp", "tif": "tiff", "tiff": "tiff",
    "svg": "svg", "ico": "ico", "heic": "heic", "avif": "avif",
}  # fmt: skip

#: The content formats a profile may allow: those the toolkit can name by extension.
IMAGE_FORMATS = tuple(sorted(set(EXTENSION_FORMATS.values())))


@dataclass(frozen=True)
class Between:
    """The values a number parameter may take: `low` to `high`, both included (None: no bound
    on that side). NaN and infinity never: no threshold means them, and every comparison with
    NaN is false, so a NaN threshold would silently pass or fail every file."""

    low: float | None = None
    high: float | None = None

    def allows(self, value: float) -> bool:
        """Whether `value` lies in the range."""
        return (
            (isinstance(value, int) or math.isfinite(value))
            and (self.low is None or value >= self.low)
            and (self.high is None or value <= self.high)
        )

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return f"from {self.low} to {self.high}"
        if self.low is not None:
            return f">= {self.low}"
        return "finite" if self.high is None else f"<= {self.high}"


@dataclass(frozen=True)
class OneOf:
    """The values a string parameter (or each item of a list parameter) may take."""

    choices: tuple[str, ...]

    def allows(self, value: str) -> bool:
        """Whether `value` is one of the choices."""
        return value in self.choices

    def __str__(self) -> str:
        return f"one of {', '.join(self.choices)}"


#: A format name in `allowed_format.formats`: a typo such as "jpg" would reject every JPEG.
ImageFormat = Annotated[str, OneOf(IMAGE_FORMATS)]
#: Bits two perceptual hashes (64 bits) may differ in and still count as one picture. Above a
#: quarter of the bits it stops meaning "the same picture" (unrelated pictures differ in about
#: half), and the band search in `toolkit.groups` compares nearly every pair.
PhashDistance = Annotated[int, Between(0, 16)]


class Table(enum.StrEnum):
    """The tables dataset rules judge: each engine builds them with toolkit.validate's one
    builder per table, so a rule names its table and never how it is built."""

    #: one row per candidate file (shares bytes, a path, or a perceptual hash within a
    #: `uses_phash` rule's distance with another row), indexed like the manifest
    FILES = "files"
    #: one row: hashed rows, copies among them, their share
    DUPLICATES = "duplicates"
    #: one row per class folder: files, accepted files, the largest class
    CLASSES = "classes"
    #: one row per class with an accepted file
    CLASSES_PRESENT = "classes_present"
    #: one row: files, rejected files, their share
    DATASET = "dataset"

    @property
    def after_rejection(self) -> bool:
        """Whether the table is built from the verdicts (status), after file rejection."""
        return self in (Table.CLASSES, Table.CLASSES_PRESENT, Table.DATASET)

    @property
    def judged_when_empty(self) -> bool:
        """Whether an empty table is still judged: no class present breaks min_classes;
        no candidate file breaks nothing."""
        return self is Table.CLASSES_PRESENT

    def finding_path(self, row: pd.Series) -> str:
        """Where a flagged row of this table points: a file, a class folder, the dataset."""
        if self in (Table.CLASSES, Table.CLASSES_PRESENT):
            return f"{row['label']}/"
        return str(row["path"]) if "path" in row else DATASET_PATH


class Layout(enum.StrEnum):
    """How report.html shows the files a rule flagged."""

    #: a grid of thumbnails, one card per file with its detail
    GRID = "grid"
    #: sets of files holding the same picture, side by side (`DatasetRule.report_sets`)
    SETS = "sets"
    #: one strip of thumbnails (a warning most photos of a scraped set may carry)
    STRIP = "strip"


REGISTRY: dict[str, type[Rule]] = {}


def register(cls: type[Rule]) -> type[Rule]:
    """Add a rule class to the registry under its snake_case name."""
    expected = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
    if cls.name != expected:  # pragma: no cover - guards the one-spelling convention
        raise TypeError(f"{cls.__name__}.name must be {expected!r}, not {cls.name!r}")
    REGISTRY[cls.name] = cls
    return cls


@dataclass(frozen=True)
class Rule:
    """A named test of the manifest with its thresholds and its severity."""

    name: ClassVar[str] = ""
    #: how report.html shows the files it flags (dataset-wide findings are listed as lines)
    report_layout: ClassVar[Layout] = Layout.GRID
    severity: str = "error"

    @property
    def rule(self) -> str:
        """The rule in words, thresholds included."""
        raise NotImplementedError

    @property
    def kind(self) -> str:
        """ "file", "file group" (a dataset rule that rejects files) or "dataset"."""
        raise NotImplementedError

    @property
    def is_blocking(self) -> bool:
        """Whether breaking it rejects a file or fails the dataset (else it only warns)."""
        return self.severity == "error"


@dataclass(frozen=True)
class FileRule(Rule):
    """A test of each manifest row on its own."""

    @property
    def kind(self) -> str:
        """A file rule judges files."""
        return "file"

    def violations(self, manifest: pd.DataFrame) -> pd.Series:
        """True for each row that breaks the rule."""
        raise NotImplementedError

    def detail(self, row: pd.Series) -> str:
        """What is wrong with this row, in a few words with its numbers."""
        return f"breaks '{self.rule}'"

    def details(self, rows: pd.DataFrame) -> list[str]:
        """`detail` of each of `rows` (rows that break the rule), in their order. A rule whose
        words need a computation over columns overrides it to compute once, not per row."""
        return [self.detail(row) for row in rows.to_dict("records")]


@dataclass(frozen=True)
class DatasetRule(Rule):
    """A test over many rows: what it expects of a table derived from the manifest."""

    #: the table it judges (see `Table`); the engines build it, the rule only names it
    table: ClassVar[Table] = Table.FILES
    #: rows of the "files" table it flags are files it rejects (when blocking)
    per_file: ClassVar[bool] = False
    #: it compares perceptual hashes within `max_phash_distance` bits: the Dask engine
    #: then sends it the rows with a hash that near (not only shared bytes or paths)
    uses_phash: ClassVar[bool] = False

    @property
    def after_rejection(self) -> bool:
        """Whether it needs `status` (it runs after file-level rejection, on the verdicts)."""
        return self.table.after_rejection

    @property
    def kind(self) -> str:
        """ "file group" when it rejects files, else "dataset"."""
        return "file group" if self.per_file else "dataset"

    def report_sets(self, manifest: pd.DataFrame, flagged: pd.DataFrame) -> pd.Series:
        """For a `Layout.SETS` rule: a set id per manifest row that report.html groups the
        flagged files by (rows with no id, or alone in their set, are not shown)."""
        raise NotImplementedError(f"{self.name} has no sets to show")

    def prepare(self, manifest: pd.DataFrame) -> pd.DataFrame:
        """Columns this rule adds to its table (index aligned with the table's rows)."""
        return pd.DataFrame(index=manifest.index)

    def expectation(self) -> Expect:
        """What the rule expects of its table, in Great Expectations' vocabulary."""
        raise NotImplementedError

    def summarise(self, table: pd.DataFrame) -> pd.Series:
        """The figures `detail` quotes when the whole table, not a row, breaks the rule."""
        return pd.Series({"n_rows": len(table)})

    def detail(self, row: pd.Series) -> str:
        """What is wrong with one flagged row of the table."""
        return f"breaks '{self.rule}'"


# --------------------------------------------------------------------------------------
# File rules


def _readable(manifest: pd.DataFrame) -> pd.Series:
    return manifest["is_readable"].fillna(False).astype(bool)


def _decodable(manifest: pd.DataFrame) -> pd.Series:
    return manifest["is_decodable"].fillna(False).astype(bool)


@register
@dataclass(frozen=True)
class InClassFolder(FileRule):
    """Files must sit inside a class folder, not loose in the root."""

    name: ClassVar[str] = "in_class_folder"

    @property
    def rule(self) -> str:
        return "file sits in a class folder"

    def violations(self, manifest: pd.DataFrame) -> pd.Series:
        return manifest["label"].isna()

    def detail(self, row: pd.Series) -> str:
        return "loose in the root, not in a class folder"


@register
@dataclass(frozen=True)
class NotHidden(FileRule):
    """Hidden files (.DS_Store, ._photo.jpg AppleDouble files) are not images."""

    name: ClassVar[str] = "not_hidden"

    @property
    def rule(self) -> str:
        return "no part of the path starts with '.'"

    def violations(self, manifest: pd.DataFrame) -> pd.Series:
        return manifest["is_hidden"].fillna(False).astype(bool)

    def detail(self, row: pd.Series) -> str:
        return "hidden file (a part of its path starts with '.')"


@register
@dataclass(frozen=True)
class ValidFileName(FileRule):
    """File names must be valid UTF-8 so every tool downstream can name them."""

    name: ClassVar[str] = "valid_file_name"

    @property
    def rule(self) -> str:
        return "file name is valid UTF-8"

    def violations(self, manifest: pd.DataFrame) -> pd.Series:
        return ~manifest["is_valid_name"].fillna(True).astype(bool)

    def detail(self, row: pd.Series) -> str:
        return "file name is not valid UTF-8 (shown with \\xNN escapes)"


@register
@dataclass(frozen=True)
class Readable(FileRule):
    """The entry must be a regular file the scan could read."""

    name: ClassVar[str] = "readable"

    @property
    def rule(self) -> str:
        return "a regular file that can be read"

    def violations(self, manifest: pd.DataFrame) -> pd.Series:
        return ~_readable(manifest)

    def detail(self, row: pd.Series) -> str:
        return str(row["read_error"]) if pd.notna(row["read_error"]) else "cannot be read"


@register
@dataclass(frozen=True)
class Decodable(FileRule):
    """The whole image must decode (truncated files, junk named .jpg, SVG, bombs fail)."""

    name: ClassVar[str] = "decodable"

    @property
    def rule(self) -> str:
        return "the image decodes without error"

    def violations(self, manifest: pd.DataFrame) -> pd.Series:
        return _readable(manifest) & ~_decodable(manifest)

    def detail(self, row: pd.Series) -> str:
        return str(row["decode_error"]) if pd.notna(row["decode_error"]) else "does not decode"


@register
@dataclass(frozen=True)
class AllowedFormat(FileRule):
    """The content (not the name) must be one of the allowed formats."""

    name: ClassVar[str] = "allowed_format"
    formats: tuple[ImageFormat, ...] = ("jpeg", "png", "bmp")

    @property
    def rule(self) -> str:
        return f"content is {', '.join(self.formats)}"

    def violations(self, manifest: pd.DataFrame) -> pd.Series:
        allowed = manifest["detected_format"].isin(list(self.formats)).fillna(False)
        return _readable(manifest) & ~allowed.astype(bool)

    def detail(self, row: pd.Series) -> str:
        return f"content is {row['detected_format']}; allowed: {', '.join(self.formats)}"


@register
@dataclass(frozen=True)
class FormatMatchesExtension(FileRule):
    """The name's extension should say what the content is (a PNG named .jpg)."""

    name: ClassVar[str] = "format_matches_extension"
    severity: str = "warning"

    @property
    def rule(self) -> str:
        return "extension matches the content's format"

    def violations(self, manifest: pd.DataFrame) -> pd.Series:
        named = manifest["extension"].map(EXTENSION_FORMATS, na_action="ignore")
        content = manifest["detected_format"]
        return (_readable(manifest) & content.notna() & (named != content).fillna(True)).astype(
            bool
        )

    def detail(self, row: pd.Series) -> str:
        ext = row["extension"] or "(no extension)"
        return f"content is {row['detected_format']}, name says {ext}"


@register
@dataclass(frozen=True)
class MinFileBytes(FileRule):
    """Tiny files are thumbnails, icons or failed downloads (the tutorial's 9 KB rule)."""

    name: ClassVar[str] = "min_file_bytes"
    min_bytes: Annotated[int, Between(0)] = 9216

    @property
    def rule(self) -> str:
        return f"file size >= {self.min_bytes:,} bytes"

    def violations(self, manifest: pd.DataFrame) -> pd.Series:
        return (_readable(manifest) & (manifest["file_bytes"] < self.min_bytes)).fillna(False)

    def detail(self, row: pd.Series) -> str:
        return f"{row['file_bytes']:,} bytes, at least {self.min_bytes:,} required"


def _pixels(manifest: pd.DataFrame) -> pd.Series:
    return manifest["width_px"].astype("float64") * manifest["height_px"].astype("float64")


@register
@dataclass(frozen=True)
class MaxPixels(FileRule):
    """Images declaring huge sizes are rejected from their header (decompression bombs)."""

    name: ClassVar[str] = "max_pixels"
    #: at least one pixel: 0 would reject every file
    max_pixels: Annotated[int, Between(1)] = DEFAULT_MAX_DECODE_PIXELS

    @property
    def rule(self) -> str:
        return f"width x height <= {self.max_pixels:,} px"

    def violations(self, manifest: pd.DataFrame) -> pd.Series:
        return (_pixels(manifest) > self.max_pixels).fillna(False).astype(bool)

    def detail(self, row: pd.Series) -> str:
        px = int(row["width_px"]) * int(row["height_px"])
        return (
            f"declares {row['width_px']}x{row['height_px']} = {px:,} px, "
            f"at most {self.max_pixels:,}"
        )


@register
@dataclass(frozen=True)
class MinSide(FileRule):
    """Images too small to hold a readable face."""

    name: ClassVar[str] = "min_side"
    min_px: Annotated[int, Between(0)] = 32

    @property
    def rule(self) -> str:
        return f"shorter side >= {self.min_px} px"

    def violations(self, manifest: pd.DataFrame) -> pd.Series:
        shorter = manifest[["width_px", "height_px"]].min(axis=1, skipna=False)
        return (_decodable(manifest) & (shorter < self.min_px)).fillna(False).astype(bool)

    def detail(self, row: pd.Series) -> str:
        return f"{row['width_px']}x{row['height_px']} px, shorter side under {self.min_px}"


@register
@dataclass(frozen=True)
class NotAnimated(FileRule):
    """Animated images (GIF, APNG, WebP) hold many pictures under one label."""

    name: ClassVar[str] = "not_animated"

    @property
    def rule(self) -> str:
        return "a single frame"

    def violations(self, manifest: pd.DataFrame) -> pd.Series:
        return (manifest["n_frames"] > 1).fillna(False).astype(bool)

    def detail(self, row: pd.Series) -> str:
        return f"animated: {row['n_frames']} frames"


@register
@dataclass(frozen=True)
class HasFace(FileRule):
    """A happy/sad photo should show a face; the scan's detector (BlazeFace) looks for one."""

    name: ClassVar[str] = "has_face"
    report_layout: ClassVar[Layout] = Layout.STRIP
    severity: str = "warning"

    @property
    def rule(self) -> str:
        return "at least one face found (BlazeFace face detector)"

    def violations(self, manifest: pd.DataFrame) -> pd.Series:
        return (_decodable(manifest) & (manifest["n_faces"] < 1)).fillna(False).astype(bool)

    def detail(self, row: pd.Series) -> str:
        return "no face found"


# --------------------------------------------------------------------------------------
# Image-quality rules: one score per decoded image (toolkit.quality, measured by the scan)


@dataclass(frozen=True)
class QualityRule(FileRule):
    """A file rule comparing one score of each decoded image with one threshold; report.html
    draws the scores' distribution with the threshold beside the files it flags."""

    report_layout: ClassVar[Layout] = Layout.GRID
    #: the score and its scale, as the chart's axis names it
    score_words: ClassVar[str] = ""
    #: a score above the threshold breaks the rule (else one below does)
    breaks_above: ClassVar[bool] = False
    severity: str = "warning"

    @property
    def threshold(self) -> float:
        """The bound a score is compared with."""
        raise NotImplementedError

    def scores(self, manifest: pd.DataFrame) -> pd.Series:
        """Each row's score as float64; NaN where the image has none (not decoded, or the
        score is not defined for it), which never breaks the rule."""
        raise NotImplementedError

    def violations(self, manifest: pd.DataFrame) -> pd.Series:
        score = self.scores(manifest)
        broken = score > self.threshold if self.breaks_above else score < self.threshold
        return (_decodable(manifest) & broken).fillna(False).astype(bool)

    def detail(self, row: pd.Series) -> str:
        return self.details(pd.DataFrame([dict(row)]))[0]

    def details(self, rows: pd.DataFrame) -> list[str]:
        # the scores of all the rows at once: a one-row frame per finding costs milliseconds,
        # and a folder of photos can have a warning for every other file
        side = "over" if self.breaks_above else "under"
        return [
            f"{self.score_words} {_past(float(score), self.threshold)}, {side} {self.threshold:g}"
            for score in self.scores(rows)
        ]


def _past(score: float, threshold: float) -> str:
    """A score as few decimals write it (two at least) without reading as the threshold it
    broke: 0.2996 under 0.3 is "0.2996", not "0.30"."""
    for digits in range(2, 7):
        shown = f"{score:.{digits}f}"
        if float(shown) != threshold:
            return shown
    return repr(score)


def _score(manifest: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(manifest[column], errors="coerce").astype("float64")


@register
@dataclass(frozen=True)
class NotDark(QualityRule):
    """Nearly black pictures: even the brightest pixels are dim, so a face's expression is
    lost in the dark. Look at them; brighten the ones worth keeping, or leave them out. (A
    picture of one flat colour, dark or not, is min_entropy's finding alone.)"""

    name: ClassVar[str] = "not_dark"
    score_words: ClassVar[str] = "luma of the brightest 1% (0 black, 1 white)"
    min_luma_p99: Annotated[float, Between(0, 1)] = 0.3

    @property
    def threshold(self) -> float:
        return self.min_luma_p99

    @property
    def rule(self) -> str:
        return f"the brightest 1% of pixels have luma >= {self.min_luma_p99:g} (0 black, 1 white)"

    def scores(self, manifest: pd.DataFrame) -> pd.Series:
        return _score(manifest, "luma_p99")


@register
@dataclass(frozen=True)
class NotWashedOut(QualityRule):
    """Washed-out pictures: even the darkest pixels are pale (overexposed, faded, or mostly
    white). Check that a face is still visible; leave out those where it is not."""

    name: ClassVar[str] = "not_washed_out"
    score_words: ClassVar[str] = "luma of the darkest 5% (0 black, 1 white)"
    breaks_above: ClassVar[bool] = True
    max_luma_p05: Annotated[float, Between(0, 1)] = 0.75

    @property
    def threshold(self) -> float:
        return self.max_luma_p05

    @property
    def rule(self) -> str:
        return f"the darkest 5% of pixels have luma <= {self.max_luma_p05:g} (0 black, 1 white)"

    def scores(self, manifest: pd.DataFrame) -> pd.Series:
        return _score(manifest, "luma_p05")


@register
@dataclass(frozen=True)
class NotBlurry(QualityRule):
    """Blurred pictures: little edge detail for their contrast (out of focus, motion blur, or
    enlarged from a tiny thumbnail). A model learns little from them; leave them out or find
    a sharper copy. Measured at a fixed size, so a big photo is judged as a small one."""

    name: ClassVar[str] = "not_blurry"
    score_words: ClassVar[str] = "sharpness (Laplacian std / luma std)"
    min_sharpness: Annotated[float, Between(0, 10)] = 0.2

    @property
    def threshold(self) -> float:
        return self.min_sharpness

    @property
    def rule(self) -> str:
        return f"sharpness (edges' share of the contrast) >= {self.min_sharpness:g}"

    def scores(self, manifest: pd.DataFrame) -> pd.Series:
        return _score(manifest, "sharpness")


@register
@dataclass(frozen=True)
class MinEntropy(QualityRule):
    """Pictures with almost nothing in them: one flat colour, a blank or nearly blank page
    (few grey levels used). Usually placeholders or failed downloads: leave them out."""

    name: ClassVar[str] = "min_entropy"
    score_words: ClassVar[str] = "luma entropy (bits, of 8)"
    min_bits: Annotated[float, Between(0, 8)] = 2.7

    @property
    def threshold(self) -> float:
        return self.min_bits

    @property
    def rule(self) -> str:
        return f"luma histogram entropy >= {self.min_bits:g} bits (of 8)"

    def scores(self, manifest: pd.DataFrame) -> pd.Series:
        return _score(manifest, "entropy_bits")


@register
@dataclass(frozen=True)
class MaxAspectRatio(QualityRule):
    """Banners, strips and panoramas: training squeezes every picture into a square, so a
    face in a 4:1 strip comes out squashed. Crop the face out, or leave the file out."""

    name: ClassVar[str] = "max_aspect_ratio"
    score_words: ClassVar[str] = "longer side / shorter side"
    breaks_above: ClassVar[bool] = True
    max_ratio: Annotated[float, Between(1, 100)] = 3.0

    @property
    def threshold(self) -> float:
        return self.max_ratio

    @property
    def rule(self) -> str:
        return f"longer side <= {self.max_ratio:g} x the shorter"

    def scores(self, manifest: pd.DataFrame) -> pd.Series:
        # from the header's width and height: the one home of the picture's shape
        sides = manifest[["width_px", "height_px"]].astype("float64")
        shorter = sides.min(axis=1, skipna=False)
        return (sides.max(axis=1, skipna=False) / shorter.where(shorter > 0)).astype("float64")


@register
@dataclass(frozen=True)
class NotGrayscale(QualityRule):
    """Grey pictures among colour ones (black-and-white photos, scans), even when saved as
    RGB. A model may learn "grey means sad"; keep them only if both classes have their
    share, or switch the rule off for a grey dataset (small-faces does)."""

    name: ClassVar[str] = "not_grayscale"
    score_words: ClassVar[str] = "colour (chroma p99 / luma range)"
    min_chroma_ratio: Annotated[float, Between(0, 10)] = 0.05

    @property
    def threshold(self) -> float:
        return self.min_chroma_ratio

    @property
    def rule(self) -> str:
        return f"colour (strongest chroma / luma range) >= {self.min_chroma_ratio:g}"

    def scores(self, manifest: pd.DataFrame) -> pd.Series:
        return _score(manifest, "chroma_ratio")


# --------------------------------------------------------------------------------------
# Dataset rules (expectations in Great Expectations' vocabulary, toolkit.expect)


@register
@dataclass(frozen=True)
class LabelConflict(DatasetRule):
    """The same picture under two labels: it cannot be right in both, so both go."""

    name: ClassVar[str] = "label_conflict"
    per_file: ClassVar[bool] = True
    uses_phash: ClassVar[bool] = True
    report_layout: ClassVar[Layout] = Layout.SETS
    max_phash_distance: PhashDistance = 0

    @property
    def rule(self) -> str:
        near = (
            "identical perceptual hash"
            if self.max_phash_distance == 0
            else f"perceptual hashes within {self.max_phash_distance} bits"
        )
        return f"no picture under two labels (same bytes or {near})"

    def prepare(self, manifest: pd.DataFrame) -> pd.DataFrame:
        group = content_groups(manifest, self.max_phash_distance)
        labelled = manifest["label"].notna() & group.notna()
        n_labels = manifest["label"][labelled].groupby(group[labelled]).nunique()
        counts = group.map(n_labels).fillna(0).astype("int64")
        conflicts = pd.Series("", index=manifest.index, dtype=object)
        for idx in group[counts > 1].groupby(group[counts > 1]).groups.values():
            members = manifest.loc[idx, ["path", "label"]]
            for i in idx:
                other = members[members["label"] != manifest.at[i, "label"]]["path"]
                conflicts[i] = ", ".join(list(other)[:5]) + (" ..." if len(other) > 5 else "")
        return pd.DataFrame({"n_labels": counts, "conflicts_with": conflicts})

    def expectation(self) -> Expect:
        return Expect.column_values_to_be_between(column="n_labels", max_value=1)

    def report_sets(self, manifest: pd.DataFrame, flagged: pd.DataFrame) -> pd.Series:
        # every copy of a conflicting picture is flagged, so the flagged rows hold each set
        return content_groups(flagged, self.max_phash_distance)

    def detail(self, row: pd.Series) -> str:
        return f"the same picture is labelled differently at {row['conflicts_with']}"


@dataclass(frozen=True)
class _CopyRule(DatasetRule):
    """Shared by the duplicate rules: later copies (in path order) within one label."""

    per_file: ClassVar[bool] = True
    report_layout: ClassVar[Layout] = Layout.SETS
    #: prefix of the columns it adds, so both copy rules fit in one table
    prefix: ClassVar[str] = ""

    def report_sets(self, manifest: pd.DataFrame, flagged: pd.DataFrame) -> pd.Series:
        ids = self._set_ids(manifest, flagged)
        pool = manifest.loc[ids.index]
        # copies count within a class only
        return pool["label"].astype(object).fillna("").astype(str) + "\x00" + ids.astype(str)

    def _set_ids(self, manifest: pd.DataFrame, flagged: pd.DataFrame) -> pd.Series:
        # near copies in one class, chained by perceptual hash
        ids = content_groups(manifest, self._phash_distance() or 0)
        wanted = ids[flagged.index].dropna().unique()
        return ids[ids.isin(wanted)]

    def _phash_distance(self) -> int | None:
        raise NotImplementedError

    def prepare(self, manifest: pd.DataFrame) -> pd.DataFrame:
        group = content_groups(manifest, self._phash_distance())
        key = manifest["label"].astype(object).fillna("") + "\x00" + group.astype(str)
        ok = group.notna().to_numpy()
        paths = manifest["path"].to_numpy(dtype=object)
        rank_in_group, first_at = _path_order(paths[ok], key[ok].to_numpy(dtype=object))
        copy_index = np.zeros(len(manifest), dtype="int64")
        copy_index[ok] = rank_in_group
        first = np.full(len(manifest), pd.NA, dtype=object)
        first[ok] = paths[ok][first_at]
        if self._phash_distance() is not None:
            # near copies only: exact ones are the exact_duplicate rule's
            same_bytes = (key[ok] + "\x00" + manifest["sha256"][ok].astype(str)).to_numpy(object)
            _, sha_first_at = _path_order(paths[ok], same_bytes)
            exact = np.flatnonzero(ok)[sha_first_at != np.arange(ok.sum())]
            copy_index[exact] = 0
        return pd.DataFrame(
            {f"{self.prefix}_copy_index": copy_index, f"{self.prefix}_first_copy": first},
            index=manifest.index,
        )

    def expectation(self) -> Expect:
        return Expect.column_values_to_be_between(column=f"{self.prefix}_copy_index", max_value=0)


def _path_order(paths: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row: its rank among the rows sharing its key, in path order, and the
    position of that key's first row in path order. (pandas' groupby min and rank on
    strings fall back to Python per group: seconds at 100,000 rows.)"""
    if not len(paths):
        return np.zeros(0, dtype="int64"), np.zeros(0, dtype="int64")
    path_rank = np.empty(len(paths), dtype="int64")
    path_rank[np.argsort(paths, kind="stable")] = np.arange(len(paths))
    codes, _ = pd.factorize(keys)
    order = np.lexsort((path_rank, codes))  # by key, then by path
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    rank = np.empty(len(paths), dtype="int64")
    rank[order] = np.arange(len(order)) - group_start
    first_at = np.empty(len(paths), dtype="int64")
    first_at[order] = order[group_start]
    return rank, first_at


@register
@dataclass(frozen=True)
class ExactDuplicate(_CopyRule):
    """The same bytes twice in one class: the model sees that picture twice as often."""

    name: ClassVar[str] = "exact_duplicate"
    prefix: ClassVar[str] = "exact"
    severity: str = "warning"

    def _phash_distance(self) -> int | None:
        return None

    def _set_ids(self, manifest: pd.DataFrame, flagged: pd.DataFrame) -> pd.Series:
        # the same bytes
        pool = manifest[manifest["sha256"].isin(flagged["sha256"].dropna().unique())]
        return pool["sha256"]

    @property
    def rule(self) -> str:
        return "no second copy of the same bytes in a class"

    def detail(self, row: pd.Series) -> str:
        return f"same bytes as {row['exact_first_copy']}"


@register
@dataclass(frozen=True)
class NearDuplicate(_CopyRule):
    """A resized or re-encoded copy of another picture of the same class."""

    name: ClassVar[str] = "near_duplicate"
    prefix: ClassVar[str] = "near"
    uses_phash: ClassVar[bool] = True
    severity: str = "warning"
    max_phash_distance: PhashDistance = NEAR_PHASH_DISTANCE

    def _phash_distance(self) -> int | None:
        return self.max_phash_distance

    @property
    def rule(self) -> str:
        return f"no two pictures of a class within {self.max_phash_distance} perceptual-hash bits"

    def detail(self, row: pd.Series) -> str:
        return f"near copy of {row['near_first_copy']}"


@register
@dataclass(frozen=True)
class UniquePaths(DatasetRule):
    """Every path appears once in the manifest (merged or edited manifests can break it)."""

    name: ClassVar[str] = "unique_paths"

    @property
    def rule(self) -> str:
        return "each path appears once"

    def expectation(self) -> Expect:
        return Expect.column_values_to_be_unique(column="path")

    def detail(self, row: pd.Series) -> str:
        return "listed more than once in the manifest"


@register
@dataclass(frozen=True)
class MinClasses(DatasetRule):
    """Training a classifier needs at least two classes with accepted files."""

    name: ClassVar[str] = "min_classes"
    table: ClassVar[Table] = Table.CLASSES_PRESENT
    min_classes: Annotated[int, Between(0)] = 2

    @property
    def rule(self) -> str:
        return f"at least {self.min_classes} classes with accepted files"

    def expectation(self) -> Expect:
        return Expect.table_row_count_to_be_between(min_value=self.min_classes)

    def detail(self, row: pd.Series) -> str:
        n = int(row["n_rows"])
        return f"{n} class{'es' if n != 1 else ''} with accepted files, {self.min_classes} needed"


@register
@dataclass(frozen=True)
class MinFilesPerClass(DatasetRule):
    """Each class needs enough accepted files to learn from and to test on."""

    name: ClassVar[str] = "min_files_per_class"
    table: ClassVar[Table] = Table.CLASSES
    min_files: Annotated[int, Between(0)] = 20

    @property
    def rule(self) -> str:
        return f"each class has >= {self.min_files} accepted files"

    def expectation(self) -> Expect:
        return Expect.column_values_to_be_between(column="n_accepted", min_value=self.min_files)

    def detail(self, row: pd.Series) -> str:
        return f"{row['n_accepted']} accepted files, at least {self.min_files} required"


@register
@dataclass(frozen=True)
class ClassBalance(DatasetRule):
    """The smallest class must hold at least a share of the largest class's accepted files."""

    name: ClassVar[str] = "class_balance"
    table: ClassVar[Table] = Table.CLASSES
    #: a class holds at most 100% of the largest class, so above 1 every dataset fails
    min_ratio: Annotated[float, Between(0, 1)] = 0.5

    @property
    def rule(self) -> str:
        return f"each class has >= {self.min_ratio:.0%} of the largest class's accepted files"

    def expectation(self) -> Expect:
        return Expect.column_values_to_be_between(
            column="ratio_to_largest", min_value=self.min_ratio
        )

    def detail(self, row: pd.Series) -> str:
        return (
            f"{row['n_accepted']} accepted files, {row['ratio_to_largest']:.0%} of the largest "
            f"class ({row['largest']}: {row['n_largest']}); at least {self.min_ratio:.0%} required"
        )


@register
@dataclass(frozen=True)
class MaxDuplicateShare(DatasetRule):
    """A bounded share of extra copies (same bytes) in the whole dataset."""

    name: ClassVar[str] = "max_duplicate_share"
    table: ClassVar[Table] = Table.DUPLICATES
    max_share: Annotated[float, Between(0, 1)] = 0.05

    @property
    def rule(self) -> str:
        return f"at most {self.max_share:.0%} of files are extra copies of another file"

    def expectation(self) -> Expect:
        return Expect.column_values_to_be_between(column="share", max_value=self.max_share)

    def detail(self, row: pd.Series) -> str:
        return (
            f"{int(row['n_copies']):,} of {int(row['n_rows']):,} files ({row['share']:.1%}) "
            f"are extra copies; at most {self.max_share:.0%} allowed"
        )


@register
@dataclass(frozen=True)
class MaxRejectedShare(DatasetRule):
    """When most files are rejected, the profile or the data is wrong, not just some files."""

    name: ClassVar[str] = "max_rejected_share"
    table: ClassVar[Table] = Table.DATASET
    max_share: Annotated[float, Between(0, 1)] = 0.5

    @property
    def rule(self) -> str:
        return f"at most {self.max_share:.0%} of files rejected"

    def expectation(self) -> Expect:
        return Expect.column_values_to_be_between(column="rejected_share", max_value=self.max_share)

    def detail(self, row: pd.Series) -> str:
        return (
            f"{int(row['n_rejected']):,} of {int(row['n_files']):,} files "
            f"({row['rejected_share']:.0%}) rejected; at most {self.max_share:.0%} allowed "
            "(is this the right profile?)"
        )


def contradictions(rules: Iterable[Rule]) -> Iterator[tuple[str, Any, str]]:
    """(key, value, what is allowed) for each threshold that, beside another blocking rule's,
    leaves no file that can pass both: a profile holding one rejects every file."""
    blocking = {r.name: r for r in rules if r.is_blocking}
    side, pixels = blocking.get("min_side"), blocking.get("max_pixels")
    too_square = (
        isinstance(side, MinSide)
        and isinstance(pixels, MaxPixels)
        and side.min_px**2 > pixels.max_pixels
    )
    if too_square:
        yield (
            "rules.min_side.min_px",
            side.min_px,
            f"an integer <= {math.isqrt(pixels.max_pixels):,}, as an image at least that "
            f"wide and tall must fit rules.max_pixels.max_pixels ({pixels.max_pixels:,})",
        )
