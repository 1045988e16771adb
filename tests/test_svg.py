"""report.html's chart axes (toolkit.report.svg): ticks a reader can use on any range."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.report.svg import Axis

_positive = st.floats(1e-3, 1e9, allow_nan=False, allow_infinity=False)


@settings(max_examples=50, deadline=None)
@given(low=_positive, factor=st.floats(1.01, 1e6), log=st.booleans())
def test_an_axis_has_at_least_two_ticks_inside_its_range_in_order(
    low: float, factor: float, log: bool
) -> None:
    axis = Axis(low, low * factor, log=log)
    ticks = axis.ticks()
    assert len(ticks) >= 2, (low, low * factor, log)
    assert ticks == sorted(ticks)
    assert all(-1e-9 <= axis.fraction(t) <= 1 + 1e-9 for t in ticks)
    assert all(math.isfinite(t) for t in ticks)


def test_a_log_axis_over_few_decades_ticks_at_one_two_five() -> None:
    assert Axis(8, 600, log=True).ticks() == [10, 20, 50, 100, 200, 500]


def test_a_hundred_thousand_images_of_a_few_sizes_draw_a_few_dots() -> None:
    # one circle per pixel an image lands on: a big folder keeps report.html small
    from toolkit.report.svg import Axis, Plot

    plot = Plot(xlabel="w", ylabel="h")
    plot.x = Axis(10.0, 1000.0, log=True)
    plot.y = Axis(10.0, 1000.0, log=True)
    sizes = [48.0, 640.0, 800.0]
    plot.dots([sizes[i % 3] for i in range(100_000)], [sizes[i % 3] for i in range(100_000)],
              "#000", "images")  # fmt: skip
    drawn = plot.svg()
    assert drawn.count('r="2.5"') == 3  # the key's own dot is bigger
