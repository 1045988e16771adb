"""Scan and validate on a Dask cluster: the local engine's manifest and findings, with no
step that holds the whole manifest in one process.

The flow, each step on the workers unless it says driver:

1. driver: list the files (os.scandir below a local root; `fs.find` behind an fsspec URL)
   and cut the sorted list into batches of `batch_files`;
2. one task per batch scans its files into manifest rows (scan.FileScanner): a Dask
   DataFrame with a partition per batch, persisted on the workers;
3. file rules run per partition, as the local engine runs them (toolkit.validate's
   `judge_files`, by the same `Runner`), through `map_partitions` (what pandera's own Dask
   support does; it keeps each row's failures instead of raising on the first failing
   partition);
4. content rules (label conflicts, duplicates, unique paths) need only the rows that share
   bytes, a path, or a perceptual hash within the rules' distance with another row. Exact
   matches come from `value_counts` (a tree reduction); near matches from a shuffle on
   each of distance+1 hash bands (pigeonhole: two hashes within d bits agree on one band),
   comparing rows only inside a band bucket. The candidate rows (few) go to the driver,
   which runs the rules exactly as the local engine does;
5. verdicts are merged per partition, and the dataset rules judge counts per class and
   status (a groupby);
6. the manifest is written as partitioned Parquet (`OUT/manifest.parquet/part.N.parquet`),
   renamed into place when complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.errors import DataRootError
from toolkit.groups import phash_bands, phash_values
from toolkit.manifest import (
    ACCEPTED,
    MANIFEST_PARQUET,
    METADATA_KEY,
    REJECTED,
    empty_manifest,
    manifest_from_rows,
    normalise_manifest,
)
from toolkit.outputs import replace_output
from toolkit.profiles import Profile
from toolkit.scan import (
    SCANNER_KEY,
    FileScanner,
    ScanOptions,
    list_class_folders,
    list_entries,
    scanner_identity,
)
from toolkit.validate import (
    DatasetCounts,
    Finding,
    Runner,
    Validation,
    class_table,
    judge_dataset,
    judge_files,
    judge_groups,
)

log = logging.getLogger(__name__)

#: Files per scan task: big enough that task overhead (~1 ms) is noise next to ~1000 scans.
DEFAULT_BATCH_FILES = 1000
#: report.html draws every file: above this many, the Dask engine hands back no manifest in
#: this process (report.json has every finding).
HTML_MAX_FILES = 500_000
#: Columns the engine carries between steps and drops before writing.
_ORDER, _FOUND = "_order", "_file_findings"
_VERDICT_COLUMNS = ["status", "reasons", "warnings"]


@dataclass(frozen=True)
class ClusterOptions:
    """Where to run: a running scheduler's address, or a LocalCluster of `n_workers`."""

    scheduler: str | None = None
    n_workers: int | None = None
    batch_files: int = DEFAULT_BATCH_FILES


@contextmanager
def connect(options: ClusterOptions) -> Iterator[Any]:
    """A distributed.Client: joined to `options.scheduler`, or on a LocalCluster we start
    (one single-threaded worker process per core; the scan is CPU-bound Python)."""
    from distributed import Client, LocalCluster

    if options.scheduler:
        with Client(options.scheduler) as client:
            yield client
        return
    n_workers = options.n_workers or os.cpu_count() or 1
    with (
        LocalCluster(
            n_workers=n_workers, threads_per_worker=1, dashboard_address=":0", processes=True
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


# --------------------------------------------------------------------------------------
# 1-2: list and scan


@dataclass(frozen=True)
class Source:
    """A data root: a local folder, or a folder behind an fsspec URL (memory://, s3://...)."""

    url: str
    protocol: str | None  # None: a local path, scanned with its symlinks and permissions

    @classmethod
    def of(cls, data: str | Path) -> Source:
        text = str(data)
        if "://" not in text:
            return cls(str(Path(text).resolve()), None)
        if text.startswith("file://"):
            return cls(str(Path(text[len("file://") :]).resolve()), None)
        return cls(text.rstrip("/"), text.split("://", 1)[0])

    def filesystem(self) -> Any:
        import fsspec

        return fsspec.filesystem(self.protocol or "file")

    def list(self) -> tuple[list[str], list[str]]:
        """(every file's path relative to the root, sorted; the class folders)."""
        if self.protocol is None:
            root = Path(self.url)
            if not root.is_dir():
                raise DataRootError(root, "no such folder" if not root.exists() else "not a folder")
            return sorted(list_entries(root)), list_class_folders(root)
        fs = self.filesystem()
        if not fs.isdir(self.url):
            raise DataRootError(Path(self.url), "no such folder behind this URL")
        base = fs._strip_protocol(self.url).rstrip("/")
        files = sorted(p[len(base) + 1 :] for p in fs.find(self.url))
        folders = sorted(
            name
            for entry in fs.ls(self.url, detail=True)
            if entry["type"] == "directory"
            and not (name := entry["name"].rstrip("/").rsplit("/", 1)[-1]).startswith(".")
        )
        return files, folders


#: One scanner per worker thread: it holds an OpenCV face detector, which is not safe to
#: share between threads (threads=2 workers, or processes=False clusters, crash with one).
_SCANNERS = threading.local()


def scan_batch(source: Source, rels: list[str], start: int, options: ScanOptions) -> pd.DataFrame:
    """Manifest rows of one batch of files (runs on a worker; never raises for a file)."""
    key = (source.url, options)
    cache = _SCANNERS.__dict__.setdefault("by_key", {})
    scanner = cache.get(key)
    if scanner is None:
        scanner = cache[key] = FileScanner(Path(source.url), options)
    if source.protocol is None:
        rows = [scanner.scan(rel) for rel in rels]
    else:
        fs = source.filesystem()
        rows = []
        for rel in rels:
            full = f"{source.url}/{rel}"
            try:
                rows.append(scanner.scan_bytes(rel, fs.cat_file(full)))
            except OSError as exc:
                row = scanner.scan_bytes(rel, b"")
                row.update(is_readable=False, file_bytes=None, sha256=None)
                row.update(detected_format=None, decode_error=None)
                row["read_error"] = f"cannot read: {exc}"
                rows.append(row)
    frame = manifest_from_rows(rows)
    frame[_ORDER] = np.arange(start, start + len(rels), dtype="int64")
    return frame


def scan_cluster(
    client: Any,
    source: Source,
    options: ScanOptions,
    batch_files: int,
    entries: list[str] | None = None,
) -> Any:
    """The manifest as a Dask DataFrame (one partition per batch), persisted on the workers.

    `entries`: the files to scan, relative to the root (default: all, listed here)."""
    import dask
    import dask.dataframe as dd

    entries = source.list()[0] if entries is None else entries
    if not entries:
        raise DataRootError(Path(source.url), "holds no files")
    batches = [entries[i : i + batch_files] for i in range(0, len(entries), batch_files)]
    meta = _meta(empty_manifest())
    parts = [
        dask.delayed(scan_batch)(source, batch, i * batch_files, options)
        for i, batch in enumerate(batches)
    ]
    log.info("scanning %d files in %d tasks", len(entries), len(parts))
    return client.persist(dd.from_delayed(parts, meta=meta, verify_meta=False))


def _meta(frame: pd.DataFrame) -> pd.DataFrame:
    meta = frame.iloc[:0].copy()
    meta[_ORDER] = pd.Series(dtype="int64")
    return meta


# --------------------------------------------------------------------------------------
# 3: file rules per partition


def _judge_partition(part: pd.DataFrame, profile: Profile, runner: Runner) -> pd.DataFrame:
    """The file rules on one partition; each row's findings as JSON [[rule, severity, detail]]."""
    frame = part.reset_index(drop=True)
    found: dict[int, list[list[str]]] = defaultdict(list)
    for index, f in judge_files(frame, profile, runner):
        found[index].append([f.rule, f.severity, f.detail])
    out = part.copy()
    out[_FOUND] = pd.array(
        [json.dumps(found[i]) if i in found else "" for i in range(len(frame))], dtype="string"
    )
    return out


# --------------------------------------------------------------------------------------
# 4: content rules on the candidate rows


def _max_distance(profile: Profile) -> int | None:
    """The largest perceptual-hash distance any content rule of the profile looks at."""
    distances = [r.max_phash_distance for r in profile.dataset_rules if r.uses_phash]
    return max(distances) if distances else None


def _band_rows(part: pd.DataFrame, max_distance: int) -> pd.DataFrame:
    """Each hashed row once per band, keyed by (band, the hash's bits in that band)."""
    bands = phash_bands(phash_values(part["phash"]), max_distance)
    frames = [
        part.assign(bucket=keys.astype("int64") + (band << 32)) for band, keys in enumerate(bands)
    ]
    return pd.concat(frames, ignore_index=True)


def _near_paths(part: pd.DataFrame, distance: int) -> pd.DataFrame:
    """Paths in this partition with another row within `distance` bits in the same bucket."""
    hits: set[str] = set()
    for _, bucket in part.groupby("bucket", sort=False):
        if len(bucket) < 2:
            continue
        values = phash_values(bucket["phash"])
        near = np.bitwise_count(values[:, None] ^ values[None, :]) <= distance
        np.fill_diagonal(near, False)
        hits.update(bucket["path"].to_numpy()[near.any(axis=1)])
    return pd.DataFrame({"path": pd.array(sorted(hits), dtype="string")})


def candidate_paths(ddf: Any, profile: Profile) -> tuple[set[str], int, int]:
    """(paths that may break a content rule, rows with a sha256, distinct sha256 values)."""
    import dask

    sha_counts = ddf["sha256"].dropna().value_counts()
    path_counts = ddf["path"].value_counts()
    dup_sha, dup_path, n_hashed, n_distinct = dask.compute(
        sha_counts[sha_counts > 1], path_counts[path_counts > 1], ddf["sha256"].count(),
        sha_counts.size,
    )  # fmt: skip
    paths = set(dup_path.index)
    if len(dup_sha):
        paths |= set(ddf.loc[ddf["sha256"].isin(list(dup_sha.index)), "path"].compute())
    distance = _max_distance(profile)
    if distance is not None:
        hashed = ddf.loc[~ddf["phash"].isna(), ["path", "phash"]]
        meta = pd.DataFrame(
            {"path": pd.Series(dtype="string"), "phash": pd.Series(dtype="string")}
        ).assign(bucket=pd.Series(dtype="int64"))
        banded = hashed.map_partitions(_band_rows, distance, meta=meta)
        # one shuffle: every (band, key) bucket lands whole in one partition
        near = banded.shuffle(on="bucket").map_partitions(
            _near_paths, distance, meta=pd.DataFrame({"path": pd.Series(dtype="string")})
        )
        paths |= set(near["path"].compute())
    return paths, int(n_hashed), int(n_distinct)


# --------------------------------------------------------------------------------------
# 5: verdicts and counts


def _apply_verdicts(part: pd.DataFrame, grouped: dict[str, list[list[str]]]) -> pd.DataFrame:
    out = part.copy()
    status, reasons, warnings = [], [], []
    for path, found in zip(out["path"], out[_FOUND], strict=True):
        rows = (json.loads(found) if found else []) + grouped.get(str(path), [])
        errors = sorted({r for r, sev, _ in rows if sev == "error"})
        status.append(REJECTED if errors else ACCEPTED)
        reasons.append(";".join(errors))
        warnings.append(";".join(sorted({r for r, sev, _ in rows if sev == "warning"})))
    out["status"] = pd.array(status, dtype="string")
    out["reasons"] = pd.array(reasons, dtype="string")
    out["warnings"] = pd.array(warnings, dtype="string")
    return out


@dataclass
class ClusterValidation:
    """What `validate_cluster` hands back: the verdict, and the manifest still on the cluster."""

    validation: Validation
    manifest: Any  # dask DataFrame with the verdict columns
    attrs: dict[str, Any]  # what manifest.attrs holds in the local engine
    #: wall seconds per step: list, scan, file_rules, content_rules, verdicts, dataset_rules
    seconds: dict[str, float] = field(default_factory=dict)

    def to_pandas(self) -> pd.DataFrame:
        """The whole manifest in this process (for the HTML report of a small dataset)."""
        frame = self.manifest.compute().sort_values(_ORDER).drop(columns=[_ORDER, _FOUND])
        frame = normalise_manifest(frame.reset_index(drop=True))
        frame.attrs = dict(self.attrs)
        return frame


def validate_cluster(
    client: Any,
    data: str | Path,
    profile: Profile,
    *,
    options: ScanOptions | None = None,
    batch_files: int = DEFAULT_BATCH_FILES,
    runner: Runner = Runner.FAST,
) -> ClusterValidation:
    """Scan and validate `data` on the cluster behind `client`; `runner` runs the rules."""
    # P2P shuffles log every start and end at WARNING; they are how this works, not news
    logging.getLogger("distributed.shuffle").setLevel(logging.ERROR)
    from distributed import wait

    clock = _Clock()
    source = Source.of(data)
    entries, class_folders = source.list()
    clock.lap("list")
    options = options or profile.scan_options()
    ddf = scan_cluster(client, source, options, batch_files, entries)
    wait(ddf)
    clock.lap("scan")
    meta = _meta(empty_manifest())
    meta[_FOUND] = pd.Series(dtype="string")
    judged = client.persist(ddf.map_partitions(_judge_partition, profile, runner, meta=meta))
    wait(judged)
    clock.lap("file_rules")

    paths, n_hashed, n_distinct = candidate_paths(judged, profile)
    candidates = judged.loc[judged["path"].isin(sorted(paths))].compute() if paths else meta
    candidates = candidates.sort_values(_ORDER).reset_index(drop=True)
    suite_results: list[Any] = []
    per_file, dataset_findings = judge_groups(
        candidates.drop(columns=[_ORDER, _FOUND]),
        n_hashed,
        n_distinct,
        profile,
        suite_results,
        runner,
    )
    grouped: dict[str, list[list[str]]] = defaultdict(list)
    group_findings = []
    for index, f in per_file:
        grouped[str(candidates.at[index, "path"])].append([f.rule, f.severity, f.detail])
        group_findings.append(f)
    clock.lap("content_rules")

    verdict_meta = meta.copy()
    for column in _VERDICT_COLUMNS:
        verdict_meta[column] = pd.Series(dtype="string")
    final = client.persist(judged.map_partitions(_apply_verdicts, dict(grouped), meta=verdict_meta))
    wait(final)
    clock.lap("verdicts")
    counts = _counts(final, class_folders)
    dataset_findings += judge_dataset(counts, profile, suite_results, runner)
    file_findings = _file_findings(final)
    findings = sorted(file_findings + group_findings) + sorted(dataset_findings)
    clock.lap("dataset_rules")
    attrs = {
        "root": source.url,
        "class_folders": class_folders,
        # which scanner wrote the rows, as the local engine records it
        SCANNER_KEY: scanner_identity(options),
        "profile": profile.spec,
    }
    validation = Validation(
        manifest=empty_manifest(),
        findings=findings,
        profile=profile,
        passed=not any(f.severity == "error" for f in dataset_findings),
        counts=counts,
        extra={"root": source.url},
        suite_results=suite_results,
        runner=runner,
    )
    log.info("dask engine, seconds per step: %s", clock.seconds)
    return ClusterValidation(validation, final, attrs, clock.seconds)


class _Clock:
    """Wall seconds per named step, each from the end of the one before."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 3)
        self._last = now


def _counts(final: Any, class_folders: list[str]) -> DatasetCounts:
    import dask

    labelled = final.loc[~final["label"].isna(), ["label", "status"]]
    by_status, status_counts, n_files = dask.compute(  # one pass over the partitions
        labelled.groupby(["label", "status"]).size(),
        final["status"].value_counts(),
        final["path"].count(),
    )
    table = by_status.unstack(fill_value=0) if len(by_status) else pd.DataFrame()
    per_label = table.sum(axis=1) if len(table) else pd.Series(dtype="int64")
    accepted = table[ACCEPTED] if ACCEPTED in table else pd.Series(0, index=per_label.index)
    return DatasetCounts(
        n_files=int(n_files),
        n_accepted=int(status_counts.get(ACCEPTED, 0)),
        n_rejected=int(status_counts.get(REJECTED, 0)),
        classes=class_table(per_label, accepted, class_folders),
    )


def _file_findings(final: Any) -> list[Finding]:
    found = final.loc[final[_FOUND] != "", ["path", _FOUND]].compute()
    return [
        Finding(str(path), rule, severity, detail)
        for path, text in zip(found["path"], found[_FOUND], strict=True)
        for rule, severity, detail in json.loads(text)
    ]


# --------------------------------------------------------------------------------------
# 6: partitioned Parquet, renamed into place


def write_partitioned_manifest(result: ClusterValidation, out_dir: Path) -> Path:
    """OUT/manifest.parquet as a folder of part files (toolkit.manifest.read_manifest reads
    it); written beside, then renamed, so a killed run leaves the previous one whole."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / MANIFEST_PARQUET
    tmp = Path(tempfile.mkdtemp(prefix=f".{MANIFEST_PARQUET}.", dir=out_dir))
    frame = result.manifest.drop(columns=[_FOUND]).map_partitions(
        lambda part: part.sort_values(_ORDER).drop(columns=[_ORDER])
    )
    metadata = {METADATA_KEY: json.dumps(result.attrs, default=str).encode()}
    try:
        frame.to_parquet(str(tmp), write_index=False, custom_metadata=metadata)
        replace_output(tmp, target)  # refuses to replace anything the toolkit did not write
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def validate_on_dask(
    source: str | Path,
    profile: Profile,
    options: ClusterOptions,
    scan_options: ScanOptions,
    *,
    out: Path | None = None,
    run_id: str | None = None,
    max_files: int = HTML_MAX_FILES,
    runner: Runner = Runner.FAST,
) -> tuple[Validation, dict[str, float]]:
    """Scan and validate on Dask; write the partitioned manifest into `out` (when given).

    The Validation carries the manifest in this process only when it holds at most
    `max_files` files (small enough for report.html); else its manifest is None."""
    from dataclasses import replace

    from toolkit.manifest import RUN_ID_KEY

    began = time.perf_counter()
    with connect(options) as client:
        connected = time.perf_counter()
        found = validate_cluster(
            client,
            source,
            profile,
            options=scan_options,
            batch_files=options.batch_files,
            runner=runner,
        )
        validated = time.perf_counter()
        if run_id is not None:
            found.attrs[RUN_ID_KEY] = run_id
        if out is not None:
            write_partitioned_manifest(found, out)
        n_files = found.validation.counts.n_files if found.validation.counts else 0
        small = n_files <= max_files
        result = replace(found.validation, manifest=found.to_pandas() if small else None)
    seconds = {
        "cluster": round(connected - began, 2),
        "scan_and_validate": round(validated - connected, 2),
        **{f"dask_{step}": s for step, s in found.seconds.items()},
        "write": round(time.perf_counter() - validated, 2),
    }
    return result, seconds
