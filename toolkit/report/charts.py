"""The report's charts: SVG data: URIs drawn by toolkit.report.svg (no matplotlib, whose
import and layout cost more than validating a small folder).

Each chart draws the profile's thresholds on the data they judge, so a reader sees how far
the files are from the bound, not only that they broke it. Every chart shows a name from
the data through `shown`. The matplotlib plots (`toolkit.report.training`'s) draw under
`plain_text` and save through `png_bytes`: a class named `$\\bogus$` is text, not math.
"""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import numpy as np
import pandas as pd

from toolkit.manifest import REJECTED
from toolkit.report.svg import Axis, Plot, data_uri
from toolkit.text import escape_controls

ACCEPTED_COLOUR = "#2e7d32"
REJECTED_COLOUR = "#c62828"
FOUND_COLOUR = "#9e9e9e"
BOUND_COLOUR = "#e65100"
#: Classes drawn at most (the largest); the rest are named in the caption.
MAX_CLASSES_DRAWN = 40
_DPI = 100
#: Every text of a chart is drawn as written: no TeX, no mathtext. A name is data, and
#: `$...$` in it would otherwise be parsed as math (and crash the plot when it is not math).
PLAIN_TEXT = {"text.usetex": False, "text.parse_math": False}

_P = ParamSpec("_P")
_R = TypeVar("_R")


def plain_text(draw: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run a plotting function with `PLAIN_TEXT`: every Text it makes, and every tick label
    made while it saves, reads no markup (matplotlib reads these settings per Text made)."""

    @functools.wraps(draw)
    def inner(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        import matplotlib

        with matplotlib.rc_context(PLAIN_TEXT):
            return draw(*args, **kwargs)

    return inner


def shown(name: object) -> str:
    """A name from the data as a plot draws it: controls and bidi overrides escaped."""
    return escape_controls(str(name))


def png_bytes(fig: Any, **savefig: Any) -> bytes:
    """The figure as PNG bytes; a character the font lacks draws as a box, not a warning."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # A class folder named in a script the default font lacks draws boxes, not an error.
        warnings.filterwarnings("ignore", message="Glyph .* missing from", category=UserWarning)
        warnings.filterwarnings(
            "ignore", message="Matplotlib currently does not support", category=UserWarning
        )
        fig.savefig(buf, format="png", **savefig)
    return buf.getvalue()


@dataclass(frozen=True)
class Chart:
    """One chart: an id for the page, its title, its SVG as a data: URI, and words for it."""

    id: str
    title: str
    src: str
    alt: str
    caption: str


def plot_classes(classes: pd.DataFrame, *, min_ratio: float | None, min_files: int | None) -> Chart:
    """Files per class before (found) and after (accepted) validation, with the bounds."""
    drawn = classes.sort_values("n_files", ascending=False, kind="stable").head(MAX_CLASSES_DRAWN)
    drawn = drawn.sort_values("label", kind="stable")
    width = int(_DPI * max(5.0, min(12.0, 1.0 + 0.55 * len(drawn))))
    labels = [shown(label) for label in drawn["label"]]
    top = float(max(drawn["n_files"].max() if len(drawn) else 0, 1))
    words = []
    largest = int(classes["n_accepted"].max()) if len(classes) else 0
    bound = min_ratio * largest if min_ratio is not None and largest else None
    for value in (bound, min_files):
        top = max(top, float(value or 0))
    plot = Plot(
        width=width,
        x=Axis(-0.6, max(len(drawn), 1) - 0.4),
        y=Axis(0.0, top * 1.15, fmt=lambda v: f"{v:,.0f}"),
        ylabel="files",
        categories=labels,
    )
    x = np.arange(len(drawn))
    plot.bars(x - 0.2, drawn["n_files"].tolist(), 0.4, FOUND_COLOUR, "found")
    plot.bars(x + 0.2, drawn["n_accepted"].tolist(), 0.4, ACCEPTED_COLOUR, "accepted")
    if bound is not None:
        plot.hline(
            bound, BOUND_COLOUR, f"class_balance: {min_ratio:.0%} of the largest ({bound:,.0f})"
        )
        words.append(f"class_balance bound {min_ratio:.0%} of the largest class ({bound:,.0f})")
    if min_files is not None:
        plot.hline(min_files, "#6a1b9a", f"min_files_per_class: {min_files:,}", dash="2 2")
        words.append(f"min_files_per_class bound {min_files:,}")
    counts = "; ".join(
        f"{shown(r.label)}: {r.n_files:,} found, {r.n_accepted:,} accepted"
        for r in drawn.head(12).itertuples()
    )
    more = len(classes) - min(len(drawn), 12)
    alt = f"Files per class before and after validation. {counts}" + (
        f"; and {more:,} more classes" if more > 0 else ""
    )
    caption = "Grey: files found; green: files accepted."
    if len(classes) > len(drawn):
        caption += f" The {len(drawn)} largest of {len(classes):,} classes are drawn."
    return _chart(plot, "chart-classes", "Files per class", ". ".join([alt, *words]), caption)


def plot_file_sizes(manifest: pd.DataFrame, *, min_bytes: int | None) -> Chart:
    """Histogram of file sizes (log scale), accepted and rejected stacked, with the floor."""
    sizes = manifest["file_bytes"].astype("float64")
    positive = (sizes > 0).fillna(False)
    n_empty = int((sizes == 0).sum())
    plot = Plot(xlabel="file size (log scale)", ylabel="files")
    if positive.any():
        low, high = float(sizes[positive].min()), float(sizes[positive].max())
        if min_bytes:
            low, high = min(low, float(min_bytes)), max(high, float(min_bytes))
        bins = np.geomspace(low / 1.05, high * 1.05, 41)
        rejected = (manifest["status"] == REJECTED).to_numpy()
        ok = positive.to_numpy(dtype=bool)
        values = [sizes[ok & ~rejected].tolist(), sizes[ok & rejected].tolist()]
        plot.x = Axis(float(bins[0]), float(bins[-1]), log=True, fmt=_bytes)
        tallest = plot.stacked_hist(
            values, bins.tolist(), [ACCEPTED_COLOUR, REJECTED_COLOUR], ["accepted", "rejected"]
        )
        plot.y = Axis(0.0, max(tallest, 1) * 1.1, fmt=lambda v: f"{v:,.0f}")
    else:
        plot.x = Axis(1.0, 1e6, log=True, fmt=_bytes)
        plot.note("no file with a size above 0 bytes")
    words = f"{int(positive.sum()):,} files drawn"
    # a bound of 0 is no bound, and a log axis has no place for it
    if min_bytes:
        plot.vline(min_bytes, BOUND_COLOUR, f"min_file_bytes: {min_bytes:,} bytes")
        words += f"; min_file_bytes bound at {min_bytes:,} bytes"
    caption = "Green: accepted; red: rejected (for any rule)."
    if n_empty:
        caption += f" {n_empty:,} empty file{'s' if n_empty != 1 else ''} (0 bytes) not drawn."
    alt = f"Distribution of file size, log scale: {words}"
    return _chart(plot, "chart-file-sizes", "File size", alt, caption)


def plot_dimensions(
    manifest: pd.DataFrame, *, min_side: int | None, max_pixels: int | None
) -> Chart:
    """Width x height of every image (log scales), with the min-side and max-pixel bounds."""
    width = manifest["width_px"].astype("float64")
    height = manifest["height_px"].astype("float64")
    ok = ((width > 0) & (height > 0)).fillna(False).to_numpy(dtype=bool)
    rejected = (manifest["status"] == REJECTED).to_numpy()
    largest = float((width * height)[ok].max()) if ok.any() else 0.0
    plot = Plot(xlabel="width (px, log scale)", ylabel="height (px, log scale)")
    if ok.any():
        for mask, colour, label in (
            (~rejected, ACCEPTED_COLOUR, "accepted"),
            (rejected, REJECTED_COLOUR, "rejected"),
        ):
            pick = ok & mask
            if pick.any():
                plot.dots(width[pick].tolist(), height[pick].tolist(), colour, label)
        sides = np.concatenate([width[ok], height[ok]])
        low, high = float(sides.min()), float(sides.max())
    else:
        plot.note("no image declares a size")
        low, high = 16.0, 4096.0
    words = f"{int(ok.sum()):,} images drawn"
    if min_side is not None:
        low = min(low, float(min_side))
        words += f"; min_side bound at {min_side} px"
    # Drawn to scale only when some image comes near it: a 100 MP bound would otherwise
    # squeeze every real photo into a corner. Far away, it is named, not drawn.
    near = max_pixels is not None and largest * 16 >= max_pixels
    if max_pixels is not None:
        words += f"; max_pixels bound at {max_pixels:,} px"
        if near:
            high = max(high, float(np.sqrt(max_pixels)) * 1.5)
    low, high = max(low / 1.5, 0.5), high * 1.5
    plot.x = Axis(low, high, log=True, fmt=lambda v: f"{v:,.0f}")
    plot.y = Axis(low, high, log=True, fmt=lambda v: f"{v:,.0f}")
    if min_side:  # 0 is no bound, and has no place on a log axis
        plot.vline(min_side, "#6a1b9a", f"min_side: {min_side} px", dash="2 2")
        plot.hline(min_side, "#6a1b9a", dash="2 2")
    caption = "Each dot is an image as its header declares it; green accepted, red rejected."
    if max_pixels is not None and near:
        w = np.geomspace(low, high, 200)
        bound = f"max_pixels: {max_pixels:,} px"
        plot.line(w.tolist(), (max_pixels / w).tolist(), BOUND_COLOUR, bound)
    elif max_pixels is not None:
        side = np.sqrt(max_pixels)
        plot.note(f"max_pixels: {max_pixels:,} px ({side:,.0f} x {side:,.0f}),", BOUND_COLOUR)
        plot.note(f"far beyond the largest image ({largest:,.0f} px)", BOUND_COLOUR)
        caption += f" The max_pixels bound ({max_pixels:,} px) is far off the chart."
    alt = f"Image width x height, log scales: {words}"
    return _chart(plot, "chart-dimensions", "Image width x height", alt, caption)


def _chart(plot: Plot, ident: str, title: str, alt: str, caption: str) -> Chart:
    return Chart(ident, title, data_uri(plot.svg()), alt, caption)


def _bytes(value: float) -> str:
    for unit, size in (("MB", 1e6), ("KB", 1e3)):
        if value >= size:
            return f"{value / size:,.3g} {unit}"
    return f"{value:,.0f} B"


def plot_scores(
    scores: pd.Series,
    flagged: pd.Series,
    *,
    rule: str,
    words: str,
    threshold: float,
    breaks_above: bool,
) -> Chart:
    """Histogram of one image-quality score over every scored file, the files the rule
    flags in the warning colour, and its threshold."""
    values = scores.astype("float64")
    known = np.isfinite(values.to_numpy())
    hit = flagged.fillna(False).to_numpy(dtype=bool) & known
    n_known, n_hit = int(known.sum()), int(hit.sum())
    plot = Plot(height=260, xlabel=shown(words), ylabel="files")
    if n_known:
        low = min(float(values[known].min()), threshold)
        high = max(float(values[known].max()), threshold)
        bins = np.linspace(low, high if high > low else low + 1.0, 41)
        plot.x = Axis(float(bins[0]), float(bins[-1]))
        tallest = plot.stacked_hist(
            [values[known & ~hit].tolist(), values[hit].tolist()],
            bins.tolist(),
            [FOUND_COLOUR, BOUND_COLOUR],
            ["passes", "flagged"],
        )
        plot.y = Axis(0.0, max(tallest, 1) * 1.1, fmt=lambda v: f"{v:,.0f}")
    else:
        plot.x = Axis(min(threshold, 0.0), max(threshold, 0.0) + 1.0)
        plot.note("no file has this score")
    side = "above" if breaks_above else "below"
    plot.vline(threshold, REJECTED_COLOUR, f"{rule}: {threshold:g}")
    n_none = len(values) - n_known
    alt = (
        f"Distribution of {words} over {n_known:,} files; {n_hit:,} lie {side} the "
        f"{rule} threshold {threshold:g}"
    )
    caption = f"Grey: passes; orange: flagged ({side} {threshold:g})."
    if n_none:
        caption += (
            f" {n_none:,} file{'s' if n_none != 1 else ''} without a score (not decoded, or flat)."
        )
    return _chart(plot, f"chart-{rule}", f"{rule}: {words}", alt, caption)
