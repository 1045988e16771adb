"""Great Expectations, kept behind one door: a quiet ephemeral context and suite runs.

Imported only when dataset rules run, so `toolkit --help` never pays for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from typing import Any

import pandas as pd


@cache
def expectations() -> Any:
    """The `great_expectations.expectations` module, imported with analytics off."""
    # No usage statistics leave the machine (and none can: there may be no network).
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations.expectations as gxe

    return gxe


@cache
def context() -> Any:
    """One in-memory Great Expectations context per process, progress bars off."""
    expectations()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    ctx.data_sources.add_pandas("toolkit")
    return ctx


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's verdict, with the table rows it flagged (by position)."""

    key: str
    success: bool
    unexpected_rows: list[int]
    observed: Any


def run_suite(
    table_name: str, table: pd.DataFrame, expectations_by_key: dict[str, Any]
) -> dict[str, ExpectationOutcome]:
    """Validate `table` against the given expectations as one suite; results by key."""
    import great_expectations as gx

    ctx = context()
    source = ctx.data_sources.get("toolkit")
    asset_name = f"{table_name}"
    try:
        asset = source.get_asset(asset_name)
    except LookupError:
        asset = source.add_dataframe_asset(asset_name)
    try:
        batch_def = asset.get_batch_definition("whole")
    except KeyError:
        batch_def = asset.add_batch_definition_whole_dataframe("whole")
    suite_name = f"toolkit.{table_name}"
    if suite_name in [s.name for s in ctx.suites.all()]:
        ctx.suites.delete(suite_name)
    suite = gx.ExpectationSuite(name=suite_name)
    for key, expectation in expectations_by_key.items():
        expectation.meta = {**(expectation.meta or {}), "rule": key}
        suite.add_expectation(expectation)
    suite = ctx.suites.add(suite)
    frame = table.reset_index(drop=True)
    batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    outcomes = {}
    for res in result.results:
        key = res.expectation_config.meta["rule"]
        if res.exception_info and res.exception_info.get("raised_exception"):
            raise RuntimeError(
                f"Great Expectations could not evaluate rule {key}: "
                f"{res.exception_info.get('exception_message')}"
            )
        details = res.result or {}
        outcomes[key] = ExpectationOutcome(
            key=key,
            success=bool(res.success),
            unexpected_rows=[int(i) for i in details.get("unexpected_index_list") or []],
            observed=details.get("observed_value"),
        )
    return outcomes
