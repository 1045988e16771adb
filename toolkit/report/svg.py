"""Small charts drawn as SVG text: an axes box, bars, stacked histograms, dots, bound lines.

report.html's charts are a few bars and dots; drawing them with matplotlib meant importing
it (half a second) and laying out each figure (more) on every `toolkit validate`, longer
than validating a small folder. This draws what those charts need and nothing else. Every
text from the data is escaped for XML here; a browser renders the picture inside an
<img>, where an SVG runs no script and fetches nothing.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape

import numpy as np

FONT_PX = 11
_CHAR_PX = 0.6 * FONT_PX  # a typical sans-serif character's width at FONT_PX
_LEGEND_ROW_PX = 18


def data_uri(svg: str) -> str:
    """The SVG as a data: URI for an <img>."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


@dataclass
class Axis:
    """One axis: its range, linear or log, and how its tick values are written."""

    low: float = 0.0
    high: float = 1.0
    log: bool = False
    fmt: Callable[[float], str] = lambda v: f"{v:,.6g}"

    def fraction(self, value: float) -> float:
        """Where `value` lies between low (0) and high (1)."""
        if self.log:
            low, high, value = math.log10(self.low), math.log10(self.high), math.log10(value)
        else:
            low, high = self.low, self.high
        return (value - low) / (high - low) if high > low else 0.5

    def ticks(self) -> list[float]:
        """Tick values: 1-2-5 steps (per decade on a log axis over few decades; a log axis
        too short for two of those gets even steps)."""
        if self.log:
            first, last = math.floor(math.log10(self.low)), math.ceil(math.log10(self.high))
            subs = (1, 2, 5) if last - first <= 3 else (1,)
            values = [s * 10.0**e for e in range(first, last + 1) for s in subs]
            inside = [v for v in values if self.low <= v <= self.high * (1 + 1e-9)]
            if len(inside) >= 2:
                return inside
        step = _nice_step((self.high - self.low) / 5)
        start = math.ceil(self.low / step) * step
        values = [start + i * step for i in range(int((self.high - start) / step) + 1)]
        return [v for v in values if self.low <= v <= self.high * (1 + 1e-9)]


def _nice_step(raw: float) -> float:
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


@dataclass
class _Key:
    label: str
    colour: str
    mark: str  # "box", "line" or "dot"
    dash: str = ""


@dataclass
class Plot:
    """One chart: marks in data coordinates, rendered by `svg()` to a fixed pixel size."""

    width: int = 600
    height: int = 400
    x: Axis = field(default_factory=Axis)
    y: Axis = field(default_factory=Axis)
    xlabel: str = ""
    ylabel: str = ""
    #: category names under the x axis at 0, 1, 2... (a bar chart), instead of x ticks
    categories: Sequence[str] = ()
    _marks: list[Callable[[Callable, Callable], str]] = field(default_factory=list)
    _keys: list[_Key] = field(default_factory=list)
    _notes: list[str] = field(default_factory=list)

    def bars(
        self, xs: Sequence[float], heights: Sequence[float], width: float, colour: str, label: str
    ) -> None:
        """Bars centred on xs (data units), each with its count written above it."""

        def draw(px: Callable, py: Callable) -> str:
            out = []
            for x, h in zip(xs, heights, strict=True):
                left, right, top, base = px(x - width / 2), px(x + width / 2), py(h), py(0)
                out.append(_rect(left, top, right - left, base - top, colour))
                out.append(_text((left + right) / 2, top - 3, f"{h:,.0f}", size=8, anchor="middle"))
            return "".join(out)

        self._marks.append(draw)
        self._keys.append(_Key(label, colour, "box"))

    def stacked_hist(
        self, values: Sequence[Sequence[float]], edges: Sequence[float], colours: Sequence[str],
        labels: Sequence[str],
    ) -> int:  # fmt: skip
        """Histograms of each series in `values` over `edges`, stacked; the tallest bin."""
        bins = np.asarray(edges, dtype=np.float64)
        counts = []
        for series in values:
            finite = np.asarray(series, dtype=np.float64)
            finite = finite[np.isfinite(finite)]
            # left-closed bins, the last closed on both sides; NaN and values outside
            # the edges are not counted
            counts.append(np.histogram(finite, bins=bins)[0].tolist())
        tops = [sum(col) for col in zip(*counts, strict=True)] if counts else []

        def draw(px: Callable, py: Callable) -> str:
            out = []
            below = [0] * (len(edges) - 1)
            for row, colour in zip(counts, colours, strict=True):
                for i, n in enumerate(row):
                    if n:
                        left, right = px(edges[i]), px(edges[i + 1])
                        top, base = py(below[i] + n), py(below[i])
                        out.append(_rect(left, top, max(right - left, 0.5), base - top, colour))
                        below[i] += n
            return "".join(out)

        self._marks.append(draw)
        self._keys.extend(_Key(lab, col, "box") for lab, col in zip(labels, colours, strict=True))
        return max(tops, default=0)

    def dots(self, xs: Sequence[float], ys: Sequence[float], colour: str, label: str) -> None:
        """One translucent dot per (x, y)."""

        def draw(px: Callable, py: Callable) -> str:
            # one circle per pixel it lands on, darker the more images share it: a folder of
            # 100,000 images of a few sizes is a few circles, not 100,000
            shared: dict[tuple[int, int], int] = {}
            for x, y in zip(xs, ys, strict=True):
                at = (round(px(x)), round(py(y)))
                shared[at] = shared.get(at, 0) + 1
            return "".join(
                f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{colour}" '
                f'fill-opacity="{min(0.5 + 0.1 * (n - 1), 0.9):.1f}"/>'
                for (cx, cy), n in shared.items()
            )

        self._marks.append(draw)
        self._keys.append(_Key(label, colour, "dot"))

    def line(
        self, xs: Sequence[float], ys: Sequence[float], colour: str, label: str = "",
        dash: str = "6 3",
    ) -> None:  # fmt: skip
        """A line through the points (a bound), clipped to the plot area."""

        def draw(px: Callable, py: Callable) -> str:
            points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys, strict=True))
            return (
                f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5" '
                f'stroke-dasharray="{dash}" clip-path="url(#area)"/>'
            )

        self._marks.append(draw)
        if label:
            self._keys.append(_Key(label, colour, "line", dash))

    def vline(self, x: float, colour: str, label: str = "", dash: str = "6 3") -> None:
        """A vertical bound across the plot."""
        self.line([x, x], [self.y.low, self.y.high], colour, label, dash)

    def hline(self, y: float, colour: str, label: str = "", dash: str = "6 3") -> None:
        """A horizontal bound across the plot."""
        self.line([self.x.low, self.x.high], [y, y], colour, label, dash)

    def note(self, text: str, colour: str = "#555") -> None:
        """Words in the plot's top right corner (one line each)."""
        self._notes.append(f'<tspan fill="{colour}">{_xml(text)}</tspan>')

    def svg(self) -> str:
        """The chart as an SVG document."""
        y_ticks = self.y.ticks()
        y_labels = [self.y.fmt(v) for v in y_ticks]
        left = (
            14 + (FONT_PX + 6 if self.ylabel else 0) + _CHAR_PX * max(map(len, y_labels), default=1)
        )
        rotate = len(self.categories) > 6
        names = [_clip(n, 16 if rotate else 24) for n in self.categories]
        longest = _CHAR_PX * max(map(len, names), default=1)
        # a name slanted at 30 degrees reaches left of its bar by cos(30) of its length
        left = max(left, 0.87 * longest - 8) if rotate else left
        tick_px = longest * 0.5 + FONT_PX if rotate else FONT_PX + 4
        legend = self._legend_places()
        rows = 1 + max((row for row, _, _ in legend), default=-1)
        bottom = 6 + tick_px + (FONT_PX + 8 if self.xlabel else 0) + rows * _LEGEND_ROW_PX
        top, right = 12, 16
        area_w, area_h = self.width - left - right, self.height - top - bottom

        def px(x: float) -> float:
            return left + area_w * self.x.fraction(x)

        def py(y: float) -> float:
            return top + area_h * (1 - self.y.fraction(y))

        out = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" '
            f'height="{self.height}" viewBox="0 0 {self.width} {self.height}" '
            f'font-family="DejaVu Sans, Arial, sans-serif" font-size="{FONT_PX}">',
            f'<rect width="{self.width}" height="{self.height}" fill="#fff"/>',
            f'<clipPath id="area"><rect x="{left:.1f}" y="{top}" width="{area_w:.1f}" '
            f'height="{area_h:.1f}"/></clipPath>',
        ]
        for value, text in zip(y_ticks, y_labels, strict=True):
            y = py(value)
            out.append(_hline(left, left + area_w, y, "#e6e6e6"))
            out.append(_text(left - 4, y + 4, text, anchor="end"))
        if self.categories:
            for i, name in enumerate(names):
                x = px(i)
                if rotate:
                    out.append(
                        f'<text x="{x:.1f}" y="{top + area_h + 12:.1f}" text-anchor="end" '
                        f'transform="rotate(-30 {x:.1f} {top + area_h + 12:.1f})">'
                        f"{_xml(name)}</text>"
                    )
                else:
                    out.append(_text(x, top + area_h + 14, name, anchor="middle"))
        else:
            for value in self.x.ticks():
                x = px(value)
                out.append(
                    f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + area_h:.1f}" '
                    'stroke="#e6e6e6"/>'
                )
                out.append(_text(x, top + area_h + 14, self.x.fmt(value), anchor="middle"))
        out.extend(mark(px, py) for mark in self._marks)
        out.append(
            f'<rect x="{left:.1f}" y="{top}" width="{area_w:.1f}" height="{area_h:.1f}" '
            'fill="none" stroke="#333"/>'
        )
        if self.ylabel:
            cy = top + area_h / 2
            out.append(
                f'<text x="14" y="{cy:.1f}" text-anchor="middle" '
                f'transform="rotate(-90 14 {cy:.1f})">{_xml(self.ylabel)}</text>'
            )
        label_y = top + area_h + tick_px + 8
        if self.xlabel:
            out.append(
                _text(left + area_w / 2, label_y + FONT_PX / 2, self.xlabel, anchor="middle")
            )
            label_y += FONT_PX + 8
        for i, note in enumerate(self._notes):
            out.append(
                f'<text x="{left + area_w - 6:.1f}" y="{top + 16 + 14 * i}" text-anchor="end" '
                f'font-size="10">{note}</text>'
            )
        out.append(self._legend(legend, label_y + 4))
        out.append("</svg>")
        return "".join(out)

    def _legend_places(self) -> list[tuple[int, float, str]]:
        """(row, x, label) of each legend entry: left to right, a new row when full."""
        room = int((self.width - 40) / _CHAR_PX)
        places, row, x = [], 0, 10.0
        for key in self._keys:
            label = _clip(key.label, room)
            span = 20 + _CHAR_PX * len(label) + 18
            if x > 10 and x + span > self.width:
                row, x = row + 1, 10.0
            places.append((row, x, label))
            x += span
        return places

    def _legend(self, places: list[tuple[int, float, str]], y0: float) -> str:
        out = []
        for key, (row, x, label) in zip(self._keys, places, strict=True):
            y = y0 + _LEGEND_ROW_PX * row + 6
            if key.mark == "box":
                out.append(_rect(x, y - 5, 12, 10, key.colour))
            elif key.mark == "dot":
                out.append(f'<circle cx="{x + 6}" cy="{y:.1f}" r="4" fill="{key.colour}"/>')
            else:
                out.append(
                    f'<line x1="{x}" x2="{x + 16}" y1="{y:.1f}" y2="{y:.1f}" '
                    f'stroke="{key.colour}" stroke-width="1.5" stroke-dasharray="{key.dash}"/>'
                )
            out.append(_text(x + 20, y + 4, label))
        return "".join(out)


#: What XML 1.0 cannot hold even escaped (a name's controls are already escaped by `shown`).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml(text: str) -> str:
    """`text` as SVG character data: markup escaped, what XML cannot hold replaced."""
    return escape(_NOT_XML.sub("\ufffd", text), quote=False)


def _clip(text: str, limit: int = 24) -> str:
    return text if len(text) <= limit else text[: max(limit - 3, 1)] + "..."


def _rect(x: float, y: float, w: float, h: float, colour: str) -> str:
    return f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{colour}"/>'


def _hline(x1: float, x2: float, y: float, colour: str) -> str:
    return f'<line x1="{x1:.1f}" x2="{x2:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{colour}"/>'


def _text(x: float, y: float, text: str, *, size: int = FONT_PX, anchor: str = "start") -> str:
    sized = f' font-size="{size}"' if size != FONT_PX else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{sized}>{_xml(text)}</text>'
