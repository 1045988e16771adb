"""What a dataset rule expects of its table, declared once in Great Expectations' vocabulary,
and the fast interpreter that judges it without importing Great Expectations.

A dataset rule says `Expect.column_values_to_be_between(column="share", max_value=0.05)`;
`judge_table` decides it with pandas in microseconds, and `toolkit.gx` builds GX's own
expectation (`gxe.ExpectColumnValuesToBeBetween(column="share", max_value=0.05)`) from the
same spec when the user asks for GX's output (`--data-docs`). Importing GX costs seconds,
more than validating a small folder, so it stays off the default path. The interpreter
follows GX's semantics for the three kinds the rules use, and tests/test_engines.py holds
it to GX's verdicts on random tables: missing values (None, NaN, NA) are never unexpected
and are not counted; bounds are inclusive; every non-missing value must pass (GX's
`mostly` left at 1.0); flagged rows are given by position in the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

#: Each kind the rules may expect -> the Great Expectations class that decides it there.
KINDS = {
    "column_values_to_be_between": "ExpectColumnValuesToBeBetween",
    "column_values_to_be_unique": "ExpectColumnValuesToBeUnique",
    "table_row_count_to_be_between": "ExpectTableRowCountToBeBetween",
}
_COLUMN_KINDS = ("column_values_to_be_between", "column_values_to_be_unique")
_BOUNDED_KINDS = ("column_values_to_be_between", "table_row_count_to_be_between")


@dataclass(frozen=True)
class Expect:
    """One expectation of a table: its kind (a key of `KINDS`) and GX's keyword arguments."""

    kind: str
    column: str | None = None
    min_value: float | None = None
    max_value: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown expectation kind {self.kind!r}: one of {sorted(KINDS)}")
        if (self.column is None) == (self.kind in _COLUMN_KINDS):
            raise ValueError(f"{self.kind} {'needs' if self.column is None else 'takes no'} column")
        bounds = (self.min_value, self.max_value)
        if self.kind in _BOUNDED_KINDS and bounds == (None, None):
            raise ValueError(f"{self.kind} needs min_value or max_value")
        if self.kind not in _BOUNDED_KINDS and bounds != (None, None):
            raise ValueError(f"{self.kind} takes no bounds")
        if None not in bounds and self.min_value > self.max_value:
            raise ValueError(f"{self.kind}: min_value {self.min_value} > {self.max_value}")

    @classmethod
    def column_values_to_be_between(
        cls, column: str, min_value: float | None = None, max_value: float | None = None
    ) -> Expect:
        """Every non-missing value of `column` within [min_value, max_value]."""
        return cls("column_values_to_be_between", column, min_value, max_value)

    @classmethod
    def column_values_to_be_unique(cls, column: str) -> Expect:
        """No non-missing value of `column` twice (every copy of a repeated value is flagged)."""
        return cls("column_values_to_be_unique", column)

    @classmethod
    def table_row_count_to_be_between(
        cls, min_value: int | None = None, max_value: int | None = None
    ) -> Expect:
        """The table's row count within [min_value, max_value]."""
        return cls("table_row_count_to_be_between", None, min_value, max_value)

    @property
    def gx_class(self) -> str:
        """The name of the Great Expectations class that decides this kind."""
        return KINDS[self.kind]

    def gx_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of that class (unset ones left out, as GX defaults them)."""
        given = {"column": self.column, "min_value": self.min_value, "max_value": self.max_value}
        return {k: v for k, v in given.items() if v is not None}


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's verdict, with the table rows it flagged (by position)."""

    key: str
    success: bool
    unexpected_rows: list[int]


def judge_table(table: pd.DataFrame, expected: dict[str, Expect]) -> dict[str, ExpectationOutcome]:
    """Decide each expectation on `table` (GX's semantics, without GX); outcomes by key."""
    return {key: _judge(key, table, spec) for key, spec in expected.items()}


def _judge(key: str, table: pd.DataFrame, spec: Expect) -> ExpectationOutcome:
    if spec.kind == "table_row_count_to_be_between":
        n = len(table)
        ok = _within(np.array([n]), spec.min_value, spec.max_value)[0]
        return ExpectationOutcome(key, bool(ok), [])
    column = table[spec.column]
    present = column.notna().to_numpy(dtype=bool)
    unexpected = np.zeros(len(column), dtype=bool)
    values = column[present]
    if spec.kind == "column_values_to_be_between":
        unexpected[present] = ~_within(values.to_numpy(), spec.min_value, spec.max_value)
    else:  # column_values_to_be_unique
        unexpected[present] = values.duplicated(keep=False).to_numpy(dtype=bool)
    rows = np.flatnonzero(unexpected)
    return ExpectationOutcome(key, not len(rows), [int(i) for i in rows])


def _within(values: np.ndarray, low: float | None, high: float | None) -> np.ndarray:
    ok = np.ones(len(values), dtype=bool)
    if low is not None:
        ok &= values >= low
    if high is not None:
        ok &= values <= high
    return ok
