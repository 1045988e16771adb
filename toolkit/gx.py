"""Great Expectations, kept behind one door: a quiet ephemeral context and suite runs.

Imported only when the user asks for GX's own output (`--data-docs`) and by the tests that
hold the fast interpreter (toolkit.expect) to GX's verdicts: its import costs seconds.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit.expect import Expect, ExpectationOutcome

#: The name of the filesystem Data Docs site `write_data_docs` builds.
DATA_DOCS_SITE = "toolkit"


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


def expectation(spec: Expect) -> Any:
    """Great Expectations' own expectation for a toolkit spec: `gxe.ExpectX(**kwargs)`."""
    return getattr(expectations(), spec.gx_class)(**spec.gx_kwargs())


def run_suite(
    table_name: str,
    table: pd.DataFrame,
    expected: dict[str, Expect],
    keep: list[Any] | None = None,
) -> dict[str, ExpectationOutcome]:
    """Validate `table` against the expectations as one GX suite; outcomes by key.

    `keep`, when given, receives Great Expectations' own result (for `write_data_docs`).
    """
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
    for key, spec in expected.items():
        built = expectation(spec)
        built.meta = {"rule": key}
        suite.add_expectation(built)
    suite = ctx.suites.add(suite)
    frame = table.reset_index(drop=True)
    batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    if keep is not None:
        keep.append(result)
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
        )
    return outcomes


def write_data_docs(results: list[Any], out_dir: Path, run_name: str = "toolkit-validate") -> Path:
    """Build Great Expectations Data Docs of suite results into `out_dir`; returns index.html.

    A fresh ephemeral context holds only these suites and results, so the site shows this
    validation and nothing else; its filesystem site is rooted in `out_dir`.
    """
    expectations()
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    out_dir = Path(out_dir).resolve()
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    site = {
        "class_name": "SiteBuilder",
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(out_dir),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    ctx.add_data_docs_site(DATA_DOCS_SITE, site)
    run_id = RunIdentifier(run_name=run_name)
    for result in results:
        suite = ctx.suites.add(gx.ExpectationSuite(name=result.suite_name))
        for res in result.results:
            config = res.expectation_config
            config.notes = config.notes or f"toolkit rule: {config.meta.get('rule')}"
            # a copy: an expectation belongs to one suite
            suite.add_expectation(config.to_domain_obj().copy(update={"id": None}))
        key = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=result.suite_name),
            run_id=run_id,
            batch_identifier=result.suite_name.removeprefix("toolkit."),
        )
        ctx.validation_results_store.set(key, result)
    ctx.build_data_docs(site_names=[DATA_DOCS_SITE])
    return out_dir / "index.html"
