"""The manifest: one row per file found, its documented columns, and reading/writing it.

The manifest is the only thing handed from stage to stage. Paths are POSIX and relative to
the scanned root, which travels in `manifest.attrs["root"]` and in the Parquet metadata.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit.errors import ManifestError, OutputError, RecordError
from toolkit.paths import (
    NotRegularFileError,
    atomic_write,
    check_record_paths,
    file_kind,
    open_regular,
    root_problem,
)

#: column -> (pandas dtype, what it means). The single source of the manifest's schema.
COLUMNS: dict[str, tuple[str, str]] = {
    "path": ("string", "POSIX path relative to the scanned root (undecodable bytes as \\xNN)"),
    "label": ("string", "the class: the top folder below the root; empty for root files"),
    "extension": ("string", "the name's extension, lower case, without the dot"),
    "is_hidden": ("boolean", "some part of the path starts with '.'"),
    "is_valid_name": ("boolean", "the file name is valid UTF-8"),
    "is_symlink": ("boolean", "the entry is a symbolic link"),
    "is_inside_root": ("boolean", "the entry, symlinks followed, stays inside the scanned root"),
    "is_readable": ("boolean", "the entry is a regular file the scan could read"),
    "read_error": ("string", "why it could not be read (dangling symlink, permission, ...)"),
    "file_bytes": ("Int64", "size on disk in bytes"),
    "mtime_ns": ("Int64", "modification time (ns since the epoch) when scanned"),
    "inode": ("Int64", "the file's inode number when scanned (a re-scan's cache key)"),
    "ctime_ns": ("Int64", "status change time (ns since the epoch) when scanned (cache key)"),
    "sha256": ("string", "SHA-256 of the bytes, hex"),
    "detected_format": ("string", "format from the content, not the name (jpeg, png, svg...)"),
    "width_px": ("Int64", "width the image declares, in pixels"),
    "height_px": ("Int64", "height the image declares, in pixels"),
    "mode": ("string", "Pillow mode (RGB, L, P, RGBA, CMYK, I;16, ...)"),
    "channels": ("Int64", "number of bands in that mode"),
    "n_frames": ("Int64", "frames (more than 1: animated)"),
    "exif_orientation": ("Int64", "EXIF orientation tag 1-8, when present"),
    "is_decodable": ("boolean", "the whole image decoded without error"),
    "decode_error": ("string", "the decoder's error text when it did not"),
    "phash": ("string", "64-bit DCT perceptual hash, hex (near duplicates)"),
    "n_faces": ("Int64", "faces found by the scan's detector (BlazeFace, toolkit.faces)"),
    "face_x": ("Int64", "largest face's box in the file's pixels: left"),
    "face_y": ("Int64", "... top"),
    "face_w": ("Int64", "... width"),
    "face_h": ("Int64", "... height"),
    # image quality, measured on a copy of fixed size (toolkit.quality); <NA> if not decoded
    "luma_p99": ("Float64", "99th pct of luma, 0 black to 1 white (dark: low); <NA> flat"),
    "luma_p05": ("Float64", "5th pct of luma, 0 black to 1 white (washed out: high); <NA> flat"),
    "sharpness": ("Float64", "std of the Laplacian over std of luma (blurred: low); <NA> flat"),
    "entropy_bits": ("Float64", "entropy of the 256-level luma histogram, 0-8 bits (flat: low)"),
    "chroma_ratio": ("Float64", "99th pct of chroma over the luma range (grey: 0); <NA> flat"),
}
SCAN_COLUMNS = list(COLUMNS)

#: The two values of the `status` column validation adds.
ACCEPTED, REJECTED = "accepted", "rejected"
#: The path of a finding about the dataset as a whole (no file, no class folder).
DATASET_PATH = "."

#: Columns validation adds.
VALIDATION_COLUMNS: dict[str, tuple[str, str]] = {
    "status": ("string", f"{ACCEPTED} or {REJECTED}"),
    "reasons": ("string", "the blocking rules the file broke, ';'-separated"),
    "warnings": ("string", "the warning rules it broke, ';'-separated"),
}

#: Columns training adds (toolkit.pipeline.split_manifest, several roots trained together).
TRAINING_COLUMNS: dict[str, tuple[str, str]] = {
    "split": ("string", "train, validation or test for accepted files; <NA> otherwise"),
    "root": ("string", "the data folder `path` is relative to, when several are merged"),
}

MANIFEST_PARQUET = "manifest.parquet"
MANIFEST_CSV = "manifest.csv"
#: The Parquet schema metadata key that carries manifest.attrs (root, class folders, profile).
METADATA_KEY = b"toolkit"
#: The key under which every output of a validate or scan run records that run's id
#: (manifest.attrs and so the Parquet metadata, report.json, report.html); toolkit.outputs.
RUN_ID_KEY = "run_id"
#: The Dask engine's part files inside a manifest.parquet folder, and the summary files a
#: Parquet writer may add beside them.
_PART_NAME = re.compile(r"part\.\d+\.parquet|_metadata|_common_metadata")


def empty_manifest() -> pd.DataFrame:
    """A manifest with every scan column and no rows."""
    return normalise_manifest(pd.DataFrame(columns=SCAN_COLUMNS))


def manifest_from_rows(rows: list[dict]) -> pd.DataFrame:
    """A manifest from scan rows, each column built straight into its dtype (through a
    float64 column, nanosecond mtimes of ~1.8e18 would lose their last digits)."""
    if not rows:
        return empty_manifest()
    return pd.DataFrame(
        {
            name: pd.array([r.get(name) for r in rows], dtype=dtype)
            for name, (dtype, _) in COLUMNS.items()
        }
    )


def normalise_manifest(frame: pd.DataFrame) -> pd.DataFrame:
    """Give every known column its documented dtype (missing values as <NA>)."""
    types = {**COLUMNS, **VALIDATION_COLUMNS, **TRAINING_COLUMNS}
    out = frame.copy()
    for name, (dtype, _) in types.items():
        if name in out.columns:
            out[name] = out[name].astype(dtype)
    out.attrs = dict(frame.attrs)
    return out


def write_manifest(manifest: pd.DataFrame, out_dir: Path) -> Path:
    """Write manifest.parquet (with its attrs as metadata) and manifest.csv, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(manifest, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[METADATA_KEY] = json.dumps(manifest.attrs, default=str).encode()
    table = table.replace_schema_metadata(meta)
    target, csv = out_dir / MANIFEST_PARQUET, out_dir / MANIFEST_CSV
    for path, ours in ((target, is_manifest), (csv, is_manifest_csv)):
        if os.path.lexists(path) and not ours(path):  # never replace what we did not write
            raise OutputError(path, NOT_OURS)
    if target.is_dir():  # the Dask engine's folder of parts from an earlier run
        old = target.with_name(f".{target.name}.old{os.getpid()}")
        os.replace(target, old)
        shutil.rmtree(old, ignore_errors=True)
    atomic_write(target, lambda fh: pq.write_table(table, fh), binary=True)
    atomic_write(csv, lambda fh: manifest.to_csv(fh, index=False))
    return target


#: What an output refused for not being ours says.
NOT_OURS = (
    "is not an output the toolkit wrote, and the toolkit never replaces what it did not "
    "write; move it away or pick another output folder"
)


def manifest_attrs(path: Path) -> list[dict[str, Any]] | None:
    """The attrs each part of the manifest at `path` records, or None when `path` is not a
    manifest the toolkit wrote (a Parquet file, or a folder of Parquet parts, with our
    metadata key). Reads only the Parquet footers; links are never followed."""
    import pyarrow.parquet as pq

    path = Path(path)
    if path.is_symlink():
        return None
    if path.is_dir():
        parts = sorted(path.iterdir())
        if not parts or not all(_PART_NAME.fullmatch(p.name) for p in parts):
            return None
        parts = [p for p in parts if p.name.startswith("part.")]
    else:
        parts = [path]
    found = []
    for part in parts:
        if part.is_symlink() or not part.is_file():
            return None
        try:
            raw = (pq.read_schema(part).metadata or {}).get(METADATA_KEY)
            attrs = json.loads(raw) if raw is not None else None
        except Exception:  # anything unreadable as our Parquet is simply not ours
            return None
        if not isinstance(attrs, dict):
            return None
        found.append(attrs)
    return found or None


def is_manifest(path: Path) -> bool:
    """`path` is a manifest.parquet the toolkit wrote (a file, or the Dask engine's folder)."""
    return manifest_attrs(path) is not None


def manifest_run_id(path: Path) -> str | None:
    """The run id the manifest at `path` records (None: none, or its parts disagree)."""
    ids = {str(a.get(RUN_ID_KEY)) for a in manifest_attrs(path) or [] if a.get(RUN_ID_KEY)}
    return ids.pop() if len(ids) == 1 else None


def is_manifest_csv(path: Path) -> bool:
    """`path` is a manifest.csv the toolkit wrote: a regular file whose header row starts
    with path and label and names sha256 (the columns every version of the manifest has
    had, so a column added later does not disown the CSVs written before it)."""
    path = Path(path)
    if path.is_symlink():
        return False
    try:
        with open_regular(path) as fh:
            header = fh.readline(64 * 1024).decode("utf-8", "replace").rstrip("\r\n")
    except OSError:
        return False
    return header.startswith("path,label,") and "sha256" in header.split(",")


def read_manifest(path: Path) -> pd.DataFrame:
    """Read a manifest written by `write_manifest` (a folder holding one, or the file)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if path.is_dir() and (path / MANIFEST_PARQUET).exists():
        path = path / MANIFEST_PARQUET  # a file, or a folder of parts (the Dask engine's)
    if path.exists() and not path.is_file() and not path.is_dir():
        raise ManifestError(path, f"{file_kind(path.stat().st_mode)}, not a manifest file")
    if not path.is_file() and not (path.is_dir() and path.suffix == ".parquet"):
        raise ManifestError(path, "no manifest here (write one with `toolkit validate` or `scan`)")
    try:
        if path.is_dir():
            for part in path.iterdir():  # a FIFO among the parts would block the reader
                if not part.is_file():
                    raise NotRegularFileError(part, file_kind(part.lstat().st_mode))
            table = pq.read_table(path)
        else:
            with open_regular(path) as fh:
                table = pq.read_table(fh)
    except Exception as exc:
        raise ManifestError(path, f"not a readable Parquet manifest: {exc}") from exc
    missing = [c for c in ("path", "label", "sha256") if c not in table.column_names]
    if missing:
        raise ManifestError(path, f"missing manifest column(s) {', '.join(missing)}")
    attrs = _read_attrs(table, path)
    _check_columns(table, path)
    frame = normalise_manifest(table.to_pandas())
    frame.attrs = attrs
    return frame


def _read_attrs(table: Any, path: Path) -> dict[str, Any]:
    """The manifest's metadata (root, class folders, profile), refused whole when edited
    into something the toolkit never writes."""
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    try:
        attrs = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise RecordError(path, "metadata", f"not JSON: {exc}") from None
    if not isinstance(attrs, dict):
        raise RecordError(path, "metadata", f"expected an object, got {type(attrs).__name__}")
    roots = [("root", attrs.get("root"))] if attrs.get("root") is not None else []
    if attrs.get("roots") is not None:
        if not isinstance(attrs["roots"], list):
            raise RecordError(path, "metadata roots", "expected a list of folders")
        roots += [(f"roots[{i}]", r) for i, r in enumerate(attrs["roots"]) if r is not None]
    for key, root in roots:
        why = root_problem(root, must_exist=False)  # whether it still exists: where it is used
        if why is not None:
            raise RecordError(path, f"metadata {key}", why)
    for key in ("profile", "profiles", "class_folders"):
        value = attrs.get(key)
        values = value if isinstance(value, list) and key != "profile" else [value]
        if value is not None and not all(isinstance(v, str) and "\x00" not in v for v in values):
            raise RecordError(path, f"metadata {key}", f"expected text, got {value!r:.80}")
    return attrs


#: RE2: absolute, a NUL byte, a `..` part, or only dots and slashes (empty, ".", "./").
_SUSPECT_PATH = r"^/|\x00|(^|/)\.\.(/|$)|^[./]*$"


def _check_columns(table: Any, path: Path) -> None:
    """Refuse a manifest whose path column (or label, sha256, root) holds what no scan
    writes: a null, a non-text value, a NUL byte, an absolute path or a `..` part."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for name in ("path", "label", "sha256", "root"):
        if name not in table.column_names:
            continue
        column = table.column(name)
        kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
        text = pa.types.is_string(kind) or pa.types.is_large_string(kind)
        if table.num_rows and not text and not (pa.types.is_null(kind) and name != "path"):
            raise RecordError(path, name, f"holds {column.type} values, not text")
    column = table.column("path")
    if column.null_count:
        raise RecordError(path, "path", f"{column.null_count} row(s) have no path")
    # One vectorised pass flags what might be unsafe (a superset of what relative_problem
    # refuses); only then is every path judged one by one, for the first one's message.
    flagged = pc.match_substring_regex(column, _SUSPECT_PATH)
    if os.sep != "/" or pc.any(flagged).as_py():
        check_record_paths(column.to_pylist(), source=path, key="path")
    if "root" in table.column_names:
        for root in set(table.column("root").to_pylist()) - {None}:
            why = root_problem(root, must_exist=False)
            if why is not None:
                raise RecordError(path, "root", why)
