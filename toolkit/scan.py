"""Folder -> manifest rows: one row per file found, never an exception for a bad file.

Every regular file, symlink or other entry below the root becomes a row: images or not,
hidden or nested. What could not be read or decoded is a row with the error text, so one
broken file never stops a scan of a million. The user's files are only ever opened for
reading.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import logging
import os
import stat
import sys
import threading
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.errors import DataRootError
from toolkit.faces import INPUT_PX, FaceDetector
from toolkit.images import (
    MAX_BYTES_PER_PIXEL,
    decode_bytes,
    decode_turn,
    flatten_reduced,
    open_declared,
)
from toolkit.manifest import SCAN_COLUMNS, manifest_from_rows, normalise_manifest
from toolkit.paths import leads_outside, open_regular
from toolkit.quality import measure_quality
from toolkit.text import escape_controls

log = logging.getLogger(__name__)

#: Images declaring more pixels than this are not decoded by the scan (decompression bombs);
#: the `max_pixels` rule then rejects them by their header alone. The one home of the limit:
#: it is that rule's default, and a profile's `max_pixels` moves the scan's limit with it
#: (`Profile.scan_options`).
DEFAULT_MAX_DECODE_PIXELS = 100_000_000
#: Files larger than this are hashed in chunks and never held in memory whole.
READ_WHOLE_BYTES = 64 * 1024 * 1024
#: The perceptual hash runs on a grey copy whose longer side is at most this many pixels
#: (it shrinks to 32x32 anyway) ...
PHASH_MAX_SIDE_PX = 288
#: ... and whose shorter side stays at least this many (a thin image is not squeezed to a
#: few pixels first); an image already smaller is hashed as it is.
PHASH_MIN_SIDE_PX = 96
#: `perceptual_hash` resizes that copy to this side, square, and keeps the 8x8 lowest
#: frequencies of its DCT: 64 bits.
PHASH_INPUT_PX, _PHASH_BITS_SIDE = 32, 8
#: Decimals the DCT coefficients are rounded to before the median comparison: far below any
#: real difference between two coefficients of 8-bit pixels, far above float rounding.
_PHASH_DECIMALS = 6
#: JPEGs are decoded at the smallest DCT scale (libjpeg's 1/2 to 1/8) that still covers
#: this side: every byte is still decoded (the decode check), but without the full-size
#: inverse DCT (docs/performance.md measures the gain). The face
#: detector then letterboxes this decoded copy into its own 128 px input (`toolkit.faces`).
DRAFT_SIDE_PX = PHASH_MAX_SIDE_PX
#: Folders with fewer files than this are scanned in-process: starting workers costs more.
PARALLEL_MIN_FILES = 64

# Content sniffing: what Pillow names a format -> the name the manifest uses.
_PIL_FORMATS = {"MPO": "jpeg", "JPEG": "jpeg", "TIFF": "tiff"}
# filetype's names -> ours, for what Pillow cannot open.
_FILETYPE_NAMES = {"jpg": "jpeg", "tif": "tiff", "jpx": "jpeg2000"}


@dataclass(frozen=True)
class ScanOptions:
    """Settings of one scan that change what the manifest holds."""

    max_decode_pixels: int = DEFAULT_MAX_DECODE_PIXELS
    #: Files whose decoders would hold more than this (`toolkit.images.decode_bytes`) are
    #: not decoded either: what the largest 8-bit RGBA picture within the pixel limit holds.
    max_decode_bytes: int = DEFAULT_MAX_DECODE_PIXELS * MAX_BYTES_PER_PIXEL
    detect_faces: bool = True


#: The manifest attrs key recording what wrote the scan's rows (`scanner_identity`).
SCANNER_KEY = "scanner"
#: The distributions whose versions decide what a scan writes for the same bytes (with the
#: toolkit's own): the decoder, the hashes, the sniffer and the face detector's runtimes.
_SCANNER_DISTRIBUTIONS = (
    "pillow",
    "numpy",
    "filetype",
    "opencv-python-headless",
    "opencv-python",
    "ai-edge-litert",
)
#: The modules whose code writes a row: a source checkout edited without a new version
#: still rescans (their bytes are part of the scanner's identity).
_SCANNER_MODULES = ("toolkit.scan", "toolkit.faces", "toolkit.images", "toolkit.quality")
#: The stat facts and the content hash a reused row must still match (manifest columns).
_REUSE_KEY = ["file_bytes", "mtime_ns", "inode", "ctime_ns", "sha256"]


@dataclass(frozen=True)
class ScanCounts:
    """How a scan got its rows: reused from the previous manifest, or scanned now."""

    n_reused: int = 0
    n_scanned: int = 0


def scanner_identity(options: ScanOptions) -> dict[str, Any]:
    """What a scan's rows depend on besides the files: the versions of the toolkit and its
    decoding libraries, the scanning code itself, and the scan's options. Rows are reused
    only under an equal one."""
    from importlib.metadata import PackageNotFoundError, version

    from toolkit import __version__

    versions: dict[str, str | None] = {"toolkit": __version__}
    for name in _SCANNER_DISTRIBUTIONS:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {"versions": versions, "code": _code_digest(), "options": asdict(options)}


@functools.cache  # the code this process loaded, read once: not what is on disk later
def _code_digest() -> str:
    code = hashlib.sha256()
    for name in _SCANNER_MODULES:
        with open(sys.modules[name].__file__ or "", "rb") as fh:  # imported above: present
            code.update(fh.read())
    return code.hexdigest()


def scan_folder(
    root: Path | str,
    *,
    jobs: int | None = None,
    options: ScanOptions | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Scan every file below `root` into a manifest DataFrame (one row per file, sorted)."""
    return rescan_folder(root, None, jobs=jobs, options=options, progress=progress)[0]


def rescan_folder(
    root: Path | str,
    previous: pd.DataFrame | None,
    *,
    jobs: int | None = None,
    options: ScanOptions | None = None,
    progress: bool = False,
) -> tuple[pd.DataFrame, ScanCounts]:
    """`scan_folder`, reusing the rows of `previous` (a manifest of the same root written
    by the same scanner, `scanner_identity`) for the files that have not changed.

    A row is reused only for a regular file (not a link) whose size, mtime, inode and ctime
    are the row's and whose bytes still hash to its SHA-256, and only when it was read
    (and its decode did not run out of memory): links, special files, unreadable entries
    and the rest are scanned again. The manifest is the one a full scan gives."""
    root = Path(root)
    if not root.exists():
        raise DataRootError(root, "no such folder")
    if not root.is_dir():
        raise DataRootError(root, "not a folder (give the folder that holds one folder per class)")
    options = options or ScanOptions()
    identity = scanner_identity(options)
    entries = sorted(list_entries(root))
    known = _reusable_rows(previous, root, identity)
    reused: dict[int, int] = {}  # entry position -> previous row position
    if known:
        for i, rel in enumerate(entries):
            found = None if isinstance(rel, UnlistedFolder) else known.get(rel)
            if found is not None and _unchanged(os.path.join(root, rel), found[1]):
                reused[i] = found[0]
    todo = [rel for i, rel in enumerate(entries) if i not in reused]
    jobs = _resolve_jobs(jobs, len(todo))
    log.info(
        "scanning %d of %d files below %s with %d process(es) (%d unchanged)",
        len(todo), len(entries), root, jobs, len(reused),
    )  # fmt: skip
    rows = list(_progress(_scan_all(root, todo, jobs, options), len(todo), progress))
    manifest = _merge_rows(rows, previous, reused, len(entries))
    manifest.attrs = {}  # none of the previous manifest's: its run, its profile
    manifest.attrs["root"] = str(root.resolve())
    manifest.attrs["class_folders"] = list_class_folders(root)
    manifest.attrs[SCANNER_KEY] = identity
    return manifest, ScanCounts(n_reused=len(reused), n_scanned=len(todo))


def _reusable_rows(
    previous: pd.DataFrame | None, root: Path, identity: dict[str, Any]
) -> dict[str, tuple[int, tuple[Any, ...]]]:
    """path -> (row position, `_REUSE_KEY` values) of the previous rows a scan may reuse;
    empty when the manifest is of another root or scanner, or not one a scan writes."""
    if previous is None or not len(previous):
        return {}
    if previous.attrs.get("root") != str(root.resolve()):
        return {}
    # compared as JSON gives it back: that is how the previous manifest recorded it
    if previous.attrs.get(SCANNER_KEY) != json.loads(json.dumps(identity)):
        return {}
    if any(c not in previous.columns for c in SCAN_COLUMNS) or previous["path"].duplicated().any():
        return {}
    usable = (
        previous["is_readable"].fillna(False)
        & previous["is_valid_name"].fillna(False)
        & previous["is_inside_root"].fillna(False)
        & ~previous["is_symlink"].fillna(True)
        & previous["read_error"].isna()
        # running out of memory says nothing about the file: that one is tried again
        & ~previous["decode_error"].fillna("").str.startswith("MemoryError")
        & previous[_REUSE_KEY].notna().all(axis=1)
    ).to_numpy(dtype=bool)
    positions = np.flatnonzero(usable)
    chosen = previous.iloc[positions]
    keys = zip(*(chosen[c].tolist() for c in _REUSE_KEY), strict=True)
    return {
        path: (int(at), key)
        for path, at, key in zip(chosen["path"].tolist(), positions, keys, strict=True)
    }


def _unchanged(full: str, key: tuple[Any, ...]) -> bool:
    """`full` is still the regular file a row describes: same stat facts, same bytes.

    The hash catches a file rewritten in place with its size and times put back."""
    try:
        if not _same_stat(os.lstat(full), key):  # not even opened when the stat differs
            return False
        with open_regular(full) as fh:  # the checks again on the file actually read
            if not _same_stat(os.fstat(fh.fileno()), key):
                return False
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:  # NotRegularFileError too: a FIFO swapped in
        return False
    return digest == key[4]


def _same_stat(st: os.stat_result, key: tuple[Any, ...]) -> bool:
    return stat.S_ISREG(st.st_mode) and (
        st.st_size,
        st.st_mtime_ns,
        st.st_ino,
        st.st_ctime_ns,
    ) == tuple(key[:4])


def _merge_rows(
    rows: list[dict], previous: pd.DataFrame | None, reused: dict[int, int], n_entries: int
) -> pd.DataFrame:
    """The manifest in entry order: the rows scanned now and those reused from `previous`."""
    fresh = manifest_from_rows(rows)
    if not reused or previous is None:
        return fresh
    kept = previous.iloc[list(reused.values())][SCAN_COLUMNS]
    if not rows:
        return normalise_manifest(kept.reset_index(drop=True))
    scanned_at = [i for i in range(n_entries) if i not in reused]
    order = np.argsort(np.array(list(reused) + scanned_at), kind="stable")
    merged = pd.concat([kept, fresh], ignore_index=True).iloc[order]
    return normalise_manifest(merged.reset_index(drop=True))


class UnlistedFolder(str):
    """A folder the walk found but could not open or list: its path relative to the root,
    and the system's words (`.error`). It is an entry like a file (a str, so it sorts and
    travels to scan workers with the rest), and its row says why nothing below it is known."""

    error: str

    def __new__(cls, rel: str, error: str) -> UnlistedFolder:
        entry = super().__new__(cls, rel)
        entry.error = error
        return entry

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return UnlistedFolder, (str(self), self.error)


def list_entries(root: Path) -> Iterator[str]:
    """Yield the path of every non-folder entry below `root`, relative, as the OS spells it.

    Folders are walked without following symlinks (no loops); a symlink is an entry. Each
    folder is opened through its parent's descriptor, never by its full path, so a path
    longer than the system allows (PATH_MAX) is still found. A folder that cannot be opened
    or listed is yielded itself, as an `UnlistedFolder`: a row, not a log line. Raises
    DataRootError when `root` itself cannot be listed.
    """
    try:
        top = _open_folder(root, None)
        children = _list_folder(top)
    except OSError as exc:
        raise DataRootError(root, f"cannot list: {_words(exc)}") from None
    # one open folder per level of the current path, closed when its children are done
    stack: list[tuple[str, int | str, Iterator[tuple[str, bool]]]] = [("", top, children)]
    try:
        while stack:
            rel_dir, handle, pending = stack[-1]
            child = next(pending, None)
            if child is None:
                _close_folder(stack.pop()[1])
                continue
            name, is_dir = child
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if not is_dir:
                yield rel
                continue
            try:
                sub = _open_folder(name, handle)
            except OSError as exc:
                yield UnlistedFolder(rel, f"cannot list: {_words(exc)}")
                continue
            try:
                stack.append((rel, sub, _list_folder(sub)))
            except OSError as exc:
                _close_folder(sub)
                yield UnlistedFolder(rel, f"cannot list: {_words(exc)}")
    finally:  # also when the caller stops early
        for _, handle, _ in stack:
            _close_folder(handle)


#: Where the system can open a folder relative to an open one (every POSIX system Python
#: supports), the walk never builds a full path; elsewhere it joins paths.
_WALK_BY_FD = os.open in os.supports_dir_fd and os.scandir in os.supports_fd
_FOLDER_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_DIRECTORY", 0)
    | getattr(os, "O_NOFOLLOW", 0)  # a folder swapped for a symlink since the listing: ELOOP
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NONBLOCK", 0)
)


def _open_folder(name: str | Path, parent: int | str | None) -> int | str:
    if not _WALK_BY_FD:
        return os.path.join(parent, name) if parent is not None else str(name)
    return os.open(name, _FOLDER_FLAGS, dir_fd=parent if isinstance(parent, int) else None)


def _list_folder(handle: int | str) -> Iterator[tuple[str, bool]]:
    """(name, is a folder) of every entry, read whole now: listing errors surface here."""
    with os.scandir(handle) as it:
        children = [(child.name, _is_folder(child)) for child in it]
    return iter(children)


def _is_folder(child: os.DirEntry[str]) -> bool:
    try:
        return child.is_dir(follow_symlinks=False)
    except OSError:  # then the scan stats it as an entry and says why it cannot
        return False


def _close_folder(handle: int | str) -> None:
    if isinstance(handle, int):
        os.close(handle)


def _words(exc: OSError) -> str:
    """The system's words for an error, without the path (a row already names it)."""
    return exc.strerror or str(exc)


def list_class_folders(root: Path) -> list[str]:
    """The top-level folders of `root` (the classes), empty ones included, sorted."""
    names = []
    with os.scandir(root) as it:
        for child in it:
            if child.is_dir(follow_symlinks=False) and not child.name.startswith("."):
                names.append(display_path(child.name))
    return sorted(names)


def display_path(rel: str) -> str:
    """The manifest's spelling of a path: valid UTF-8, undecodable bytes shown as \\xNN."""
    try:
        rel.encode("utf-8")
        return rel
    except UnicodeEncodeError:
        raw = os.fsencode(rel)
        return raw.decode("utf-8", errors="backslashreplace")


def _resolve_jobs(jobs: int | None, n_files: int) -> int:
    if jobs is None:
        jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    jobs = max(1, int(jobs or 1))
    return 1 if n_files < PARALLEL_MIN_FILES else jobs


def _progress(rows: Iterable[dict], total: int, enabled: bool) -> Iterable[dict]:
    if not enabled:
        return rows
    from toolkit.progress import progress_bar

    return progress_bar(rows, total=total, unit="file", desc="scan")


def _scan_all(root: Path, entries: list[str], jobs: int, options: ScanOptions) -> Iterator[dict]:
    if jobs == 1:
        scanner = FileScanner(root, options)
        yield from map(scanner.scan, entries)
        return
    method = _start_method()
    context = get_context(method)
    if method == "forkserver":
        # Workers then fork from a server that has imported the scan's libraries once, rather
        # than each importing them (about half a second a worker, on every scan of a process).
        context.set_forkserver_preload(_WORKER_MODULES)
    with ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=context,
        initializer=_init_worker,
        initargs=(str(root), options),
    ) as pool:
        yield from pool.map(_scan_in_worker, entries, chunksize=32)


def _start_method() -> str:
    """fork where it is safe, else forkserver.

    fork is cheapest and works from scripts and notebooks without a __main__ guard, but a
    child inherits no threads, only their state: unsafe once the parent runs other threads
    (TensorFlow, a progress bar), or has loaded OpenCV, whose thread pool a child then joins
    forever in cv2.setNumThreads (seen: a scan after decoding images in the same process).
    """
    if sys.platform == "linux" and threading.active_count() == 1 and "cv2" not in sys.modules:
        return "fork"
    return "forkserver"


_WORKER: FileScanner | None = None
#: What a scan worker imports, preloaded by the forkserver (has effect before it starts).
_WORKER_MODULES = [
    "toolkit.scan",
    "toolkit.faces",
    "PIL.Image",
    "PIL.JpegImagePlugin",
    "cv2",
    "ai_edge_litert.interpreter",  # where installed; the forkserver skips what fails to import
]


def _init_worker(root: str, options: ScanOptions) -> None:
    global _WORKER
    _WORKER = FileScanner(Path(root), options)


def _scan_in_worker(rel: str) -> dict:
    assert _WORKER is not None, "worker used before _init_worker"
    return _WORKER.scan(rel)


class FileScanner:
    """Reads one file at a time into a manifest row; holds the face detector between files."""

    def __init__(self, root: Path, options: ScanOptions) -> None:
        self.root = root
        self.options = options
        self._real_root = os.path.realpath(root)
        self._faces: FaceDetector | None = None

    def scan(self, rel: str) -> dict:
        """Return the manifest row of `rel` (a path relative to the root); never raises."""
        row = _blank_row(str(rel))
        if isinstance(rel, UnlistedFolder):  # the walk could not go in: say why, read nothing
            row["read_error"] = rel.error
            return row
        full = os.path.join(self.root, rel)
        try:
            self._fill_stat(row, full)
            if row["is_readable"]:
                self._fill_content(row, full)
        except Exception as exc:  # a bug in one file's handling must not stop the scan
            log.exception("unexpected error while scanning %s", escape_controls(rel))
            row["is_readable"] = bool(row["is_readable"])
            row["read_error"] = row["read_error"] or f"scan failed: {type(exc).__name__}: {exc}"
        return row

    def scan_bytes(self, rel: str, data: bytes, mtime_ns: int | None = None) -> dict:
        """The manifest row of `rel` from bytes already read (files behind an fsspec URL,
        which have no symlinks or permissions to look at); never raises."""
        row = _blank_row(rel)
        row.update(is_readable=True, file_bytes=len(data), mtime_ns=mtime_ns)
        row["sha256"] = hashlib.sha256(data).hexdigest()
        try:
            self._fill_image(row, data)
        except Exception as exc:  # as in scan(): one file's bug must not stop the scan
            log.exception("unexpected error while scanning %s", escape_controls(rel))
            row["read_error"] = f"scan failed: {type(exc).__name__}: {exc}"
        return row

    def _fill_stat(self, row: dict, full: str) -> None:
        try:
            lst = os.lstat(full)
        except OSError as exc:  # e.g. a path longer than PATH_MAX: the system's words
            row["read_error"] = _stat_error(exc, False)
            return
        row["is_symlink"] = stat.S_ISLNK(lst.st_mode)
        if row["is_symlink"]:
            target = leads_outside(self._real_root, full)
            if target is not None:  # never read what a link smuggles in from elsewhere
                row["is_inside_root"] = False
                row["read_error"] = f"symlink to {target}, outside the data root; not read"
                return
        try:
            st = os.stat(full)
        except OSError as exc:
            row["read_error"] = _stat_error(exc, row["is_symlink"])
            return
        row["mtime_ns"] = st.st_mtime_ns
        row["inode"], row["ctime_ns"] = st.st_ino, st.st_ctime_ns
        if not stat.S_ISREG(st.st_mode):
            row["read_error"] = "not a regular file"
            return
        row["file_bytes"] = st.st_size
        row["is_readable"] = True

    def _fill_content(self, row: dict, full: str) -> None:
        try:
            with open_regular(full) as fh:  # a FIFO swapped in since the stat: an error
                if row["file_bytes"] <= READ_WHOLE_BYTES:
                    data: bytes | None = fh.read()
                    row["sha256"] = hashlib.sha256(data).hexdigest()
                else:
                    data = None
                    row["sha256"] = hashlib.file_digest(fh, "sha256").hexdigest()
        except OSError as exc:
            row["is_readable"] = False
            row["read_error"] = f"cannot read: {exc.strerror or exc}"
            return
        if data is None:
            try:
                with open_regular(full) as fh:
                    head = fh.read(4096)
            except OSError as exc:
                row["is_readable"] = False
                row["read_error"] = f"cannot read: {exc.strerror or exc}"
                return
            row["detected_format"] = sniff_format(head)
            row["decode_error"] = "not decoded: file larger than the scan reads whole"
            return
        self._fill_image(row, data)

    def _fill_image(self, row: dict, data: bytes) -> None:

        row["detected_format"] = sniff_format(data[:4096])
        # We check the declared size ourselves below, before any pixel is decoded, so that
        # a bomb still gets its width and height in the manifest.
        try:
            img = open_declared(data)
        except Exception as exc:
            row["decode_error"] = _decode_error_text(exc, row["detected_format"])
            return
        with img:
            row["detected_format"] = _PIL_FORMATS.get(img.format or "", (img.format or "").lower())
            width, height = img.size
            row["width_px"], row["height_px"] = width, height
            row["mode"] = img.mode
            row["channels"] = len(img.getbands())
            row["n_frames"] = int(getattr(img, "n_frames", 1) or 1)
            limit = self.options.max_decode_pixels
            if width * height > limit:
                row["decode_error"] = (
                    f"not decoded: declares {width}x{height} = {width * height:,} px, "
                    f"over the scan's {limit:,} px limit"
                )
                return
            cost, budget = decode_bytes(img), self.options.max_decode_bytes
            if cost > budget:
                row["decode_error"] = (
                    f"not decoded: a {width}x{height} {row['detected_format']} would take "
                    f"{cost / 1e6:,.0f} MB to decode, over the scan's {budget / 1e6:,.0f} MB"
                )
                return
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    with decode_turn(img):  # a PNG's EXIF may follow its pixels: inside
                        row["exif_orientation"] = _exif_orientation(img)
                        if img.format in ("JPEG", "MPO"):
                            img.draft("RGB", (DRAFT_SIDE_PX, DRAFT_SIDE_PX))
                        img.load()
                        plain = flatten_reduced(img, _reduce_factor(img))
                        if plain is not img:
                            img.close()  # the full-size pixels go before the hashes and faces
            except Exception as exc:
                row["decode_error"] = _decode_error_text(exc, row["detected_format"])
                return
        row["is_decodable"] = True
        self._fill_hashes_and_faces(row, plain, width, height)

    def _fill_hashes_and_faces(self, row: dict, plain: Any, width: int, height: int) -> None:
        # one small grey copy of the decoded picture for the perceptual hash and the scores
        hashed = _phash_copy(plain if plain.mode == "L" else plain.convert("L"))
        row["phash"] = perceptual_hash(hashed)
        row.update(measure_quality(plain, hashed))  # the same decoded copy: no second decode
        if not self.options.detect_faces:
            return
        if self._faces is None:
            import cv2

            cv2.setNumThreads(1)  # the scan parallelises across files, not inside one
            self._faces = FaceDetector()
        # the detector sees the decoded copy (DCT-scaled for JPEGs, box-averaged while
        # flattening for others), box-filtered to at most 4x its input: map back to the file
        factor = max(plain.size) // (4 * INPUT_PX)
        seen = plain.reduce(factor) if factor > 1 else plain
        faces = self._faces.detect(np.asarray(seen if seen.mode == "RGB" else seen.convert("RGB")))
        row["n_faces"] = len(faces)
        if faces:
            face = faces[0]
            sx, sy = width / seen.size[0], height / seen.size[1]
            row["face_x"], row["face_y"] = round(face.x * sx), round(face.y * sy)
            row["face_w"], row["face_h"] = round(face.w * sx), round(face.h * sy)


def _reduce_factor(img: Any) -> int:
    """How many times the scan box-averages a decoded picture (while flattening it, so a
    big PNG is never converted at full size): to no less than 4x the face detector's input
    on the longer side and PHASH_MIN_SIDE_PX on the shorter. 1 for JPEGs: draft() already
    decoded them at a reduced scale."""
    if img.format in ("JPEG", "MPO"):
        return 1
    longer, shorter = max(img.size), min(img.size)
    return max(1, min(longer // (4 * INPUT_PX), shorter // PHASH_MIN_SIDE_PX))


def _phash_copy(gray: Any) -> Any:
    """The grey image the perceptual hash reads: shrunk so that its longer side is at most
    PHASH_MAX_SIDE_PX, its shorter side kept at least PHASH_MIN_SIDE_PX; never enlarged."""
    w, h = gray.size
    scale = min(PHASH_MAX_SIDE_PX / max(w, h), 1.0)
    if min(w, h) * scale < PHASH_MIN_SIDE_PX:
        scale = PHASH_MIN_SIDE_PX / min(w, h)
    if scale >= 1.0:
        return gray
    return gray.resize((max(1, round(w * scale)), max(1, round(h * scale))))


def perceptual_hash(grey: Any) -> str:
    """The 64-bit perceptual hash (DCT hash) of a grey picture (a PIL image in mode "L"), as
    16 hex digits: imagehash.phash's.

    The picture is resized to PHASH_INPUT_PX square (Lanczos); each bit says whether one of
    the 8x8 lowest-frequency coefficients of its DCT lies above their median. Bit for bit
    imagehash.phash's hash of the same picture, except where a coefficient ties the median:
    there imagehash's bit is float rounding noise, ours 0 (the coefficients are compared
    rounded, so a flat or symmetric picture hashes the same on every machine). numpy alone:
    no scipy.fftpack to import in every scan process."""
    from PIL import Image

    square = grey.resize((PHASH_INPUT_PX, PHASH_INPUT_PX), Image.Resampling.LANCZOS)
    basis = _dct_basis()
    low = np.round(basis @ np.asarray(square, dtype=np.float64) @ basis.T, _PHASH_DECIMALS)
    ranked, half = np.sort(low, axis=None), low.size // 2
    median = (ranked[half - 1] + ranked[half]) / 2  # np.median's, without its overhead
    return np.packbits(low > median).tobytes().hex()  # row by row, first bit highest


@functools.cache
def _dct_basis() -> np.ndarray:
    """The first 8 rows of the unnormalised DCT-II matrix (scipy's default, which imagehash
    uses): row k is 2 cos(pi k (2n + 1) / 2N). The hash compares coefficients with their
    median, so the scaling must be scipy's: the orthonormal one weighs row 0 differently."""
    n = np.arange(PHASH_INPUT_PX)
    k = np.arange(_PHASH_BITS_SIDE)[:, None]
    return 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * PHASH_INPUT_PX))


def sniff_format(head: bytes) -> str:
    """Name a file's format from its first bytes, whatever its name says."""
    if not head:
        return "empty"
    import filetype

    kind = filetype.guess(head)
    if kind is not None:
        return _FILETYPE_NAMES.get(kind.extension, kind.extension)
    if head[:2] == b"BM":
        return "bmp"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "svg"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "html"
    if text.startswith(b"<?xml"):
        return "xml"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
            return "text"
        except UnicodeDecodeError as exc:
            if exc.start >= len(head) - 3:  # cut inside a multi-byte character
                return "text"
    return "unknown"


def _exif_orientation(img: Any) -> int | None:
    value = img.getexif().get(0x0112)
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else None


def _decode_error_text(exc: Exception, detected: str) -> str:
    name = type(exc).__name__
    text = str(exc) or name
    if name == "UnidentifiedImageError":
        return f"not an image Pillow can decode (content looks like {detected})"
    return f"{name}: {text}"


def _stat_error(exc: OSError, is_symlink: bool) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno == errno.ENOENT and is_symlink:
        return "dangling symlink (its target does not exist)"
    return f"cannot stat: {exc.strerror or exc}"


def _blank_row(rel: str) -> dict:
    path = display_path(rel)
    parts = path.split("/")
    name = parts[-1]
    suffix = name.rsplit(".", 1)[1].lower() if "." in name.lstrip(".") else ""
    row: dict[str, Any] = dict.fromkeys(SCAN_COLUMNS)
    row.update(
        path=path,
        label=parts[0] if len(parts) > 1 else None,
        extension=suffix,
        is_hidden=any(p.startswith(".") for p in parts),
        is_valid_name=path == rel,
        is_symlink=False,
        is_inside_root=True,
        is_readable=False,
        is_decodable=False,
    )
    return row
