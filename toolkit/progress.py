"""Progress bars: drawn on a terminal, never into a redirected stderr.

A bar redrawn into a log file or a pipe fills it with carriage-return lines nobody reads;
every bar of the toolkit goes through `progress_bar`, so they all follow the one rule.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def progress_bar(items: Iterable[T], *, total: int | None = None, **options: Any) -> Iterable[T]:
    """`items` wrapped in a tqdm bar on stderr when stderr is a terminal; else `items`."""
    stream = sys.stderr
    if stream is None or not stream.isatty():
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, file=stream, **options)
