"""Hash grouping: which manifest rows hold the same picture.

Files with the same bytes (sha256), or with perceptual hashes a few bits apart, are one
picture. The content rules (label conflicts, duplicates; validations.rules), the Dask engine's
candidate search (toolkit.cluster) and the split that keeps copies out of two splits
(toolkit.pipeline) all group rows here, so the three agree on what "the same picture" is.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable

import numpy as np
import pandas as pd

#: Bits two perceptual hashes may differ in and still be near duplicates, when a profile
#: does not say (the `near_duplicate` rule's default, and the split's grouping distance).
NEAR_PHASH_DISTANCE = 4
#: Groupings `content_groups` keeps, most recent first: one validation's rules, its report
#: and the advice's other profiles ask for the same few, on the same rows, again and again.
GROUPINGS_KEPT = 8

_kept: OrderedDict[tuple[str, int | None], np.ndarray] = OrderedDict()
_kept_lock = threading.Lock()


def phash_values(hashes: Iterable[str]) -> np.ndarray:
    """Hex perceptual hashes as unsigned 64-bit integers."""
    return np.array([int(h, 16) for h in hashes], dtype=np.uint64)


def phash_bands(values: np.ndarray, max_distance: int) -> list[np.ndarray]:
    """The hashes cut into max_distance + 1 bands of bits, one key array per band: two hashes
    within max_distance bits agree on at least one band (pigeonhole)."""
    n_bands = max_distance + 1
    # every band holds bits: widths differ by at most one, so none runs past bit 64 (a
    # rounded-up width would, for 12, 14 or 15 bands) and the pigeonhole count stays true
    narrow, wider = divmod(64, n_bands)
    keys, start = [], 0
    for band in range(n_bands):
        width = narrow + (band < wider)
        mask = np.uint64((1 << width) - 1)
        keys.append((values >> np.uint64(start)) & mask)
        start += width
    return keys


def content_groups(manifest: pd.DataFrame, max_phash_distance: int | None) -> pd.Series:
    """Group id per row: same sha256, or (when a distance is given) perceptual hashes that
    differ in at most that many bits, chained. Rows without a hash get <NA>.

    Near pairs are found by the pigeonhole principle: split the 64-bit hash into
    distance+1 bands; two hashes within the distance agree on at least one band. Only
    rows sharing a band are compared, so this stays far from quadratic on real sets.
    The last `GROUPINGS_KEPT` groupings are kept, keyed by the two hash columns' values in
    order and the distance: asked again for the same hashes, it groups nothing again.
    """
    sha256 = manifest["sha256"].to_numpy(dtype=object, na_value=None)
    phash = manifest["phash"].to_numpy(dtype=object, na_value=None)
    key = (_hashes_key(sha256, phash), max_phash_distance)
    with _kept_lock:
        roots = _kept.get(key)
        if roots is not None:
            _kept.move_to_end(key)
    if roots is None:
        roots = _group_roots(manifest, max_phash_distance)
        with _kept_lock:
            _kept[key] = roots
            while len(_kept) > GROUPINGS_KEPT:
                _kept.popitem(last=False)
    hashed = manifest["sha256"].notna().to_numpy() | manifest["phash"].notna().to_numpy()
    return pd.Series(np.where(hashed, roots, -1), index=manifest.index).replace(-1, pd.NA)


def _hashes_key(sha256: np.ndarray, phash: np.ndarray) -> str:
    """A digest of the two hash columns, row by row (JSON: any value, None where missing)."""
    values = json.dumps([sha256.tolist(), phash.tolist()], default=str)
    return hashlib.sha256(values.encode()).hexdigest()


def _group_roots(manifest: pd.DataFrame, max_phash_distance: int | None) -> np.ndarray:
    """`content_groups`' work: per row, the position of the first row of its group."""
    n = len(manifest)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)

    positions = np.arange(n)
    has_sha = manifest["sha256"].notna().to_numpy()
    # same bytes: every row points at the first row with its hash (a valid union-find state:
    # the first is the smallest position, and points at itself)
    codes, _ = pd.factorize(manifest["sha256"].to_numpy(dtype=object)[has_sha])
    _, first = np.unique(codes, return_index=True)
    parent[has_sha] = positions[has_sha][first[codes]]

    if max_phash_distance is not None:
        ph = manifest["phash"]
        rows = positions[ph.notna().to_numpy()]
        values = phash_values(ph.dropna())
        for keys in phash_bands(values, max_phash_distance):
            order = np.argsort(keys, kind="stable")
            sorted_keys = keys[order]
            starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
            ends = np.r_[starts[1:], len(order)]
            for s, e in zip(starts, ends, strict=True):
                if e - s < 2:
                    continue
                idx = order[s:e]
                block = values[idx]
                dist = np.bitwise_count(block[:, None] ^ block[None, :])
                for a, b in zip(*np.nonzero(np.triu(dist <= max_phash_distance, 1)), strict=True):
                    union(rows[idx[a]], rows[idx[b]])

    roots = np.array([find(i) for i in range(n)], dtype=np.int64)
    roots.flags.writeable = False  # kept and shared: nobody edits it in place
    return roots
