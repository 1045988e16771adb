"""Hash grouping: same bytes, or perceptual hashes within a distance, are one picture."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import toolkit.groups as groups_module
from toolkit.groups import NEAR_PHASH_DISTANCE, content_groups, phash_bands, phash_values
from toolkit.profiles import load_profile
from toolkit.scan import ScanOptions, scan_folder
from toolkit.validate import validate_manifest
from validations.rules import REGISTRY

_rng = np.random.default_rng(7)
_PHASHES = [f"{int(v):016x}" for v in _rng.integers(0, 2**63, size=200, dtype=np.int64)]


def frame(sha256: list[str | None], phash: list[str | None]) -> pd.DataFrame:
    """The two columns grouping reads, as the manifest types them."""
    return pd.DataFrame(
        {"sha256": pd.array(sha256, dtype="string"), "phash": pd.array(phash, dtype="string")}
    )


def flip_bit(hex_hash: str, n_bits: int) -> str:
    """The hash with its lowest n_bits flipped (Hamming distance n_bits)."""
    return f"{int(hex_hash, 16) ^ ((1 << n_bits) - 1):016x}"


def test_content_groups_chain_near_hashes_and_scale_past_quadratic() -> None:
    base = _PHASHES[0]
    rows = frame(
        [f"{i:064x}" for i in range(4)],
        [base, flip_bit(base, 1), flip_bit(base, 2), _PHASHES[3]],
    )
    groups = content_groups(rows, max_phash_distance=1)
    assert groups[0] == groups[1] == groups[2] != groups[3]
    many = frame([f"{i:064x}" for i in range(5000)], [_PHASHES[i % 200] for i in range(5000)])
    groups = content_groups(many, max_phash_distance=4)
    assert groups.nunique() == 200  # the 200 distinct hashes, each repeated 25 times


@pytest.mark.parametrize(
    ("sha256", "phash", "distance", "same"),
    [
        (["a", "a"], [_PHASHES[0], _PHASHES[1]], None, True),
        (["a", "b"], [_PHASHES[0], flip_bit(_PHASHES[0], 4)], None, False),
        (["a", "b"], [_PHASHES[0], flip_bit(_PHASHES[0], 4)], 4, True),
        (["a", "b"], [_PHASHES[0], flip_bit(_PHASHES[0], 5)], 4, False),
    ],
    ids=[
        "the same bytes are one picture whatever their hashes",
        "without a distance, near hashes stay apart",
        "hashes at the distance are one picture",
        "hashes one bit past the distance are two",
    ],
)
def test_content_groups_join_rows_at_the_distance_and_no_further(
    sha256: list[str], phash: list[str], distance: int | None, same: bool
) -> None:
    groups = content_groups(frame(sha256, phash), distance)
    assert bool(groups[0] == groups[1]) is same


def test_rows_without_any_hash_have_no_group() -> None:
    groups = content_groups(frame(["a", None], [_PHASHES[0], None]), NEAR_PHASH_DISTANCE)
    assert groups[0] == 0 and pd.isna(groups[1])


def test_the_near_distance_has_one_home() -> None:
    """The rule's default, the built-in profile and the split's default are the one constant."""
    import inspect

    from toolkit.pipeline import split_manifest

    assert REGISTRY["near_duplicate"]().max_phash_distance == NEAR_PHASH_DISTANCE
    near = [r for r in load_profile("tutorial").rules if r.name == "near_duplicate"]
    assert near[0].max_phash_distance == NEAR_PHASH_DISTANCE
    default = inspect.signature(split_manifest).parameters["max_phash_distance"].default
    assert default == NEAR_PHASH_DISTANCE


@settings(max_examples=40, deadline=None)
@given(
    picks=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 63)), min_size=1, max_size=25),
    distance=st.integers(0, 16),
)
def test_content_groups_match_every_pair_compared(
    picks: list[tuple[int, int]], distance: int
) -> None:
    """The band search finds what comparing every pair finds: hashes within the distance,
    chained, are one group."""
    values = [int(_PHASHES[base], 16) ^ ((1 << flips) - 1) for base, flips in picks]
    phash = [f"{v:016x}" for v in values]
    groups = content_groups(frame([f"{i:064x}" for i in range(len(phash))], phash), distance)
    parent = list(range(len(values)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(len(values)):
        for j in range(i):
            if (values[i] ^ values[j]).bit_count() <= distance:
                parent[find(i)] = find(j)
    expected = [find(i) for i in range(len(values))]
    for i in range(len(values)):
        for j in range(i):
            assert bool(groups[i] == groups[j]) is (expected[i] == expected[j])


def test_phash_bands_share_a_band_between_hashes_within_the_distance() -> None:
    a, b = phash_values([_PHASHES[0], flip_bit(_PHASHES[0], 4)])
    bands = phash_bands(np.array([a, b], dtype=np.uint64), 4)
    assert len(bands) == 5 and any(k[0] == k[1] for k in bands)


@pytest.mark.parametrize(
    "distance",
    range(17),
    ids=[f"at distance {d}, hashes {d} bits apart are one picture" for d in range(17)],
)
def test_every_distance_a_profile_allows_groups_a_pair_at_it(distance: int) -> None:
    far = f"{int(_PHASHES[0], 16) ^ 0xFFFFFFFF00000000:016x}"  # the top 32 bits flipped
    phash = [_PHASHES[0], flip_bit(_PHASHES[0], distance), far]
    groups = content_groups(frame(["a", "b", "c"], phash), distance)
    assert groups[0] == groups[1] != groups[2]


def _edit(rows: pd.DataFrame, at: int, kind: str) -> pd.DataFrame:
    edited, other = rows.copy(), (at + 1) % len(rows)
    if kind == "phash removed":
        edited.loc[at, "phash"] = None
    else:  # the hash or the bytes of another row: a row joins or leaves a group
        column = "phash" if kind == "phash of another row" else "sha256"
        edited.loc[at, column] = edited.loc[other, column]
    return edited


@settings(max_examples=50, deadline=None)
@given(
    picks=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 8)), min_size=2, max_size=20),
    at=st.integers(0, 19),
    kind=st.sampled_from(["phash of another row", "phash removed", "sha256 of another row"]),
    distance=st.sampled_from([None, 0, 4, 10]),
)
def test_a_kept_grouping_never_answers_for_changed_hashes(
    picks: list[tuple[int, int]], at: int, kind: str, distance: int | None
) -> None:
    phash = [flip_bit(_PHASHES[base], flips) for base, flips in picks]
    rows = frame([f"{i:064x}" for i in range(len(phash))], phash)
    content_groups(rows, distance)  # kept
    edited = _edit(rows, at % len(rows), kind)
    got = content_groups(edited, distance)
    groups_module._kept.clear()
    assert got.equals(content_groups(edited, distance))


def test_validating_the_same_rows_again_groups_nothing_again(
    clean_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the advice judges the same rows under each other profile, the report draws the sets:
    # each distance is grouped once, and the verdicts are the same
    monkeypatch.setattr(groups_module, "_kept", OrderedDict())
    grouped: list[int | None] = []
    group_roots = groups_module._group_roots
    monkeypatch.setattr(
        groups_module, "_group_roots", lambda m, d: grouped.append(d) or group_roots(m, d)
    )
    manifest = scan_folder(clean_root, jobs=1, options=ScanOptions(detect_faces=False))
    profile = load_profile("tutorial")
    first = validate_manifest(manifest, profile)
    second = validate_manifest(manifest, profile)
    assert sorted(grouped, key=str) == sorted([0, None, NEAR_PHASH_DISTANCE], key=str)
    assert second.findings == first.findings
    assert first.manifest.attrs == {**manifest.attrs, "profile": "tutorial"}
