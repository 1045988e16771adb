"""Both runners of the rules agree: the toolkit's own (the default) and the libraries'.

`Runner.FAST` calls each file rule's `violations` and judges each dataset rule's expectation
with toolkit.expect; `Runner.LIBRARIES` runs the same rules as a lazy pandera schema and as
Great Expectations suites. Every difference is a bug in the fast one: GX and pandera are
the reference here, on random tables and on a folder that breaks every rule.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_rule_contract import BREAK_EVERY_RULE, write_rule_breaker

from toolkit.check import DaskEngine, check_folder
from toolkit.expect import KINDS, Expect, judge_table
from toolkit.gx import run_suite
from toolkit.profiles import load_profile
from toolkit.validate import Runner, judge_files, validate_manifest
from validations.rules import REGISTRY, DatasetRule, FileRule, NotDark

_SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

#: small numbers so that ties, bounds hit exactly and repeats are common
_numbers = st.one_of(
    st.integers(-3, 3).map(float),
    st.sampled_from([0.5, -0.5, float("nan"), float("inf"), float("-inf")]),
)
_bounds = st.one_of(st.none(), st.integers(-3, 3), st.sampled_from([0.5, -2.5]))


@st.composite
def _tables(draw: st.DrawFn) -> pd.DataFrame:
    """A table of 0 to 12 rows: a float column with NaN and infinities, an integer column
    with ties, a nullable text column; its index neither starts at 0 nor is in order."""
    n = draw(st.integers(0, 12))
    floats = draw(st.lists(_numbers, min_size=n, max_size=n))
    ints = draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n))
    texts = draw(st.lists(st.sampled_from(["a", "b", "c", None]), min_size=n, max_size=n))
    index = draw(st.permutations(range(100, 100 + n)))
    return pd.DataFrame(
        {"x": floats, "k": np.array(ints, dtype="int64"), "s": pd.array(texts, dtype="string")},
        index=index,
    )


@st.composite
def _expectations(draw: st.DrawFn) -> Expect:
    kind = draw(st.sampled_from(sorted(KINDS)))
    if kind == "column_values_to_be_unique":
        return Expect.column_values_to_be_unique(draw(st.sampled_from(["x", "k", "s"])))
    low, high = draw(_bounds), draw(_bounds)
    if low is None and high is None:
        low = draw(st.integers(-3, 3))
    if low is not None and high is not None and low > high:
        low, high = high, low
    if kind == "table_row_count_to_be_between":
        low = None if low is None else int(low) + 3
        high = None if high is None else int(high) + 3
        return Expect.table_row_count_to_be_between(min_value=low, max_value=high)
    return Expect.column_values_to_be_between(draw(st.sampled_from(["x", "k"])), low, high)


def _verdicts(outcomes: dict) -> dict:
    return {k: (o.success, o.unexpected_rows) for k, o in outcomes.items()}


@_SETTINGS
# distinct: a GX suite holds an expectation once
@given(table=_tables(), expected=st.lists(_expectations(), min_size=1, max_size=3, unique=True))
def test_fast_expectations_judge_as_great_expectations_does(
    table: pd.DataFrame, expected: list[Expect]
) -> None:
    by_key = {f"e{i}": spec for i, spec in enumerate(expected)}
    fast = judge_table(table.reset_index(drop=True), by_key)
    assert _verdicts(fast) == _verdicts(run_suite("random", table, by_key))


@pytest.mark.parametrize(
    ("expected", "rows"),
    [
        (Expect.column_values_to_be_between("x", min_value=1.0), [0]),
        (Expect.column_values_to_be_between("x", max_value=1.0), [2]),
        (Expect.column_values_to_be_between("x", 1.0, 2.0), [0]),
        (Expect.column_values_to_be_unique("k"), [0, 1]),
    ],
    ids=[
        "a value under min_value is flagged, one equal to it and a NaN are not",
        "a value over max_value is flagged, one equal to it is not",
        "both bounds are inclusive",
        "every copy of a repeated value is flagged, by position",
    ],
)
def test_fast_expectations_flag_rows_by_position(expected: Expect, rows: list[int]) -> None:
    table = pd.DataFrame({"x": [0.5, 1.0, 2.0, np.nan], "k": [7, 7, 1, 2]}, index=[9, 3, 5, 1])
    outcome = judge_table(table.reset_index(drop=True), {"e": expected})["e"]
    assert (outcome.success, outcome.unexpected_rows) == (False, rows)


@pytest.mark.parametrize(
    ("n_rows", "success"),
    [(1, False), (2, True), (3, True), (4, False)],
    ids=["one row short", "exactly min_value", "exactly max_value", "one row over"],
)
def test_fast_row_count_is_inclusive(n_rows: int, success: bool) -> None:
    spec = Expect.table_row_count_to_be_between(min_value=2, max_value=3)
    outcome = judge_table(pd.DataFrame({"a": range(n_rows)}), {"e": spec})["e"]
    assert (outcome.success, outcome.unexpected_rows) == (success, [])


@pytest.mark.parametrize(
    "make",
    [
        lambda: Expect("column_values_to_be_positive", "x"),
        lambda: Expect.column_values_to_be_between("x"),
        lambda: Expect("table_row_count_to_be_between", "x", 1),
        lambda: Expect("column_values_to_be_unique", None),
        lambda: Expect.column_values_to_be_between("x", 2, 1),
    ],
    ids=[
        "an unknown kind",
        "a range with no bound",
        "a row count of a column",
        "uniqueness of no column",
        "min_value above max_value (Great Expectations refuses it too)",
    ],
)
def test_a_malformed_expectation_is_refused_where_it_is_declared(make) -> None:
    with pytest.raises(ValueError):
        make()


# --------------------------------------------------------------------------------------
# every registered rule, on a folder that breaks them all


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory):
    root = write_rule_breaker(tmp_path_factory.mktemp("engines") / "data")
    path = tmp_path_factory.mktemp("profile") / "profile.toml"
    path.write_text(BREAK_EVERY_RULE, encoding="utf-8")
    profile = load_profile(str(path))
    return check_folder(root, profile, jobs=1), profile


def test_every_registered_rule_gives_the_same_findings_through_both_runners(broken) -> None:
    result, profile = broken
    assert {r.name for r in profile.rules} == set(REGISTRY)
    fast = validate_manifest(result.manifest, profile, Runner.FAST)
    libraries = validate_manifest(result.manifest, profile, Runner.LIBRARIES)
    assert fast.findings == libraries.findings and fast.findings
    assert (fast.passed, fast.failed_rules) == (libraries.passed, libraries.failed_rules)
    pd.testing.assert_frame_equal(fast.manifest, libraries.manifest)
    dataset_rules = {n for n, c in REGISTRY.items() if issubclass(c, DatasetRule)}
    assert len(libraries.suite_results) >= 3 and not fast.suite_results
    assert {f.rule for f in fast.findings} & dataset_rules  # dataset rules were judged


@_SETTINGS
@given(data=st.data())
def test_file_rules_give_the_same_findings_in_the_same_order_through_both_runners(
    broken, data: st.DataObject
) -> None:
    result, profile = broken
    manifest = result.manifest
    rows = data.draw(st.lists(st.integers(0, len(manifest) - 1), max_size=2 * len(manifest)))
    frame = manifest.iloc[rows].reset_index(drop=True)
    sizes = data.draw(st.lists(st.integers(0, 2000), min_size=len(frame), max_size=len(frame)))
    frame["file_bytes"] = pd.array(sizes, dtype=manifest["file_bytes"].dtype)
    fast = judge_files(frame, profile, Runner.FAST)
    assert fast == judge_files(frame, profile, Runner.LIBRARIES)


def test_every_file_rule_words_its_findings_alike_one_by_one_and_all_at_once(broken) -> None:
    result, profile = broken
    manifest = result.manifest
    for rule in (r for r in profile.rules if isinstance(r, FileRule)):
        rows = manifest[rule.violations(manifest).astype(bool).to_numpy()]
        one_by_one = [rule.detail(row) for row in rows.to_dict("records")]
        assert rule.details(rows) == one_by_one, rule.name


@pytest.mark.parametrize(
    "runner", [Runner.FAST, Runner.LIBRARIES], ids=["the toolkit's runner", "pandera"]
)
def test_a_quality_rule_scores_its_flagged_files_once_not_once_per_finding(
    broken, runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder of photos can have a warning for every other file: wording each by scoring a
    one-row table of its own took seconds per thousand findings."""
    result, profile = broken
    dark = pd.concat([result.manifest.head(1)] * 40, ignore_index=True)
    dark["path"] = [f"happy/dark_{i}.jpg" for i in range(len(dark))]
    dark["is_decodable"] = True
    dark["luma_p99"] = 0.01
    calls = []
    scores = NotDark.scores
    monkeypatch.setattr(NotDark, "scores", lambda self, m: calls.append(len(m)) or scores(self, m))
    findings = judge_files(dark, profile, runner)
    assert sum(f.rule == "not_dark" for _, f in findings) == len(dark)
    assert len(calls) <= 3, f"not_dark scored {len(calls)} tables for {len(dark)} findings"


def test_the_dask_engine_with_the_libraries_agrees_with_the_local_default(
    broken, client, tmp_path: Path
) -> None:
    result, profile = broken
    root = Path(result.root)
    engine = DaskEngine(scheduler=client.scheduler.address)
    on_dask = check_folder(root, profile, engine=engine, jobs=1, runner=Runner.LIBRARIES)
    assert on_dask.findings == result.findings and on_dask.passed == result.passed
    assert on_dask.to_report()["judged_by"]["dataset_rules"] == "great_expectations"
    assert on_dask.suite_results  # what --data-docs builds its site from
