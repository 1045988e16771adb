"""Accepted manifest rows -> a leak-free split -> decoded uint8 images -> tf.data.Dataset.

Only rows validation accepted enter, and the folder is never walked again: every path comes
from the manifest, relative to its root, and may not point outside it. Each image is
checked against the manifest's sha256 (a file changed or removed since the scan is reported
by path and left out), decoded once (by Pillow, the decoder the scan used, or for plain
JPEGs by OpenCV's libjpeg-turbo at the same DCT scale, pixel for pixel the same), turned
upright by its EXIF orientation, converted to the model's channels, optionally cropped to
the scan's face box, resized and kept as uint8 in memory or, past a memory budget, in a
.npy file. Batches are gathered from that cache, shuffled, scaled by 1/255 as the tutorial
does, and prefetched.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from toolkit.errors import RecordError, UsageError, processing
from toolkit.groups import NEAR_PHASH_DISTANCE, content_groups
from toolkit.images import UPRIGHT, decode_turn, flatten_reduced, open_declared, upright
from toolkit.manifest import ACCEPTED
from toolkit.manifest import MANIFEST_PARQUET as MANIFEST
from toolkit.models import InputSpec
from toolkit.paths import (
    check_record_paths,
    leads_outside,
    read_regular,
    relative_problem,
    root_problem,
)
from toolkit.scan import DEFAULT_MAX_DECODE_PIXELS
from toolkit.text import escape_controls

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
DEFAULT_RATIOS = (0.7, 0.2, 0.1)  # the tutorial's train/val/test shares
#: Past this many bytes of decoded pixels the cache lives in a .npy file, not in memory.
DEFAULT_MEMORY_BYTES = 2 * 1024**3


@dataclass
class DecodedImages:
    """Decoded pixels of some manifest rows, with the rows that could not be used."""

    images: np.ndarray  # (n, size, size, channels) uint8; an np.memmap past the budget
    labels: np.ndarray  # (n,) int32 index into the class list
    paths: list[str]
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    kept: list[int] | None = None  # positions of the decoded images among the rows given

    def __len__(self) -> int:
        return len(self.paths)


def check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    """Validate train/validation/test shares: three non-negative numbers summing to 1."""
    if len(ratios) != 3 or any(r < 0 for r in ratios) or not math.isclose(sum(ratios), 1.0):
        raise UsageError(f"split ratios must be three shares summing to 1, got {list(ratios)}")
    if ratios[0] <= 0 or ratios[1] <= 0:
        raise UsageError("the train and validation shares must be above 0")
    return (float(ratios[0]), float(ratios[1]), float(ratios[2]))


def split_manifest(
    manifest: pd.DataFrame,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    *,
    seed: int = 0,
    max_phash_distance: int | None = NEAR_PHASH_DISTANCE,
) -> pd.DataFrame:
    """Add a `split` column: train/validation/test for accepted rows, <NA> for the rest.

    Stratified by class and grouped by content: files with the same sha256, or perceptual
    hashes within `max_phash_distance` bits, always land in the same split, so no image
    (or a copy of it) is both trained on and scored. The order groups are dealt in depends
    only on the seed and the files' hashes, not on the order of the rows.
    """
    ratios = check_ratios(ratios)
    frame = manifest.copy()
    frame["split"] = pd.Series(pd.NA, index=frame.index, dtype="string")
    accepted = frame[frame["status"] == ACCEPTED]
    if accepted.empty:
        return frame
    share = deal_groups(accepted, ratios, seed=seed, max_phash_distance=max_phash_distance)
    frame.loc[accepted.index, "split"] = pd.Series(
        np.asarray(SPLITS, dtype=object)[share], index=accepted.index, dtype="string"
    )
    return frame


def fold_manifest(
    manifest: pd.DataFrame,
    folds: int,
    *,
    seed: int = 0,
    max_phash_distance: int | None = NEAR_PHASH_DISTANCE,
) -> np.ndarray:
    """Each accepted row's fold, 0 to `folds` - 1 (-1 for the other rows): equal shares,
    stratified by class and grouped by content as `split_manifest` deals its splits, so a
    file and its copies are always in the same fold."""
    out = np.full(len(manifest), -1, dtype=np.int64)
    is_accepted = (manifest["status"] == ACCEPTED).to_numpy()
    if is_accepted.any():
        out[is_accepted] = deal_groups(
            manifest[is_accepted],
            [1.0 / folds] * folds,
            seed=seed,
            max_phash_distance=max_phash_distance,
        )
    return out


def deal_groups(
    rows: pd.DataFrame,
    shares: Sequence[float],
    *,
    seed: int = 0,
    max_phash_distance: int | None = NEAR_PHASH_DISTANCE,
) -> np.ndarray:
    """Each row's share (an index into `shares`): groups of the same content (sha256, or
    perceptual hashes within `max_phash_distance` bits) are dealt whole, class by class, in
    an order set by the seed and their hashes alone, each to the share furthest below its
    target (ties: the first)."""
    groups = content_groups(rows.reset_index(drop=True), max_phash_distance)
    group = pd.Series(groups.to_numpy(), index=rows.index)
    alone = group.isna()
    group[alone] = -1 - np.arange(int(alone.sum()))  # rows without a hash stand alone
    keys = rows["sha256"].fillna(rows["path"])
    members = pd.DataFrame({"group": group.astype("int64"), "label": rows["label"], "key": keys})
    per_group = members.groupby("group").agg(
        label=("label", lambda s: s.value_counts().index[0]),
        key=("key", "min"),
        n=("key", "size"),
    )
    per_group["order"] = [
        hashlib.sha256(f"{seed}:{k}".encode()).hexdigest() for k in per_group["key"]
    ]
    assignment: dict[int, int] = {}
    for _, block in per_group.sort_values("order").groupby("label", sort=True):
        targets = _targets(int(block["n"].sum()), shares)
        filled = [0] * len(shares)
        for gid, n in zip(block.index, block["n"], strict=True):
            # the share furthest below its target takes the group (ties: the first)
            i = max(range(len(shares)), key=lambda s: (targets[s] - filled[s], -s))
            filled[i] += int(n)
            assignment[int(gid)] = i
    return members["group"].map(assignment).to_numpy(dtype=np.int64)


def _targets(n: int, ratios: Sequence[float]) -> list[int]:
    """Files per share for n files: largest remainders, so they sum to n."""
    raw = [n * r for r in ratios]
    out = [math.floor(x) for x in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - out[i], reverse=True)[: n - sum(out)]:
        out[i] += 1
    return out


def class_names(manifest: pd.DataFrame) -> list[str]:
    """The classes a model predicts: labels of accepted rows, sorted (index = class id)."""
    accepted = manifest[manifest["status"] == ACCEPTED]
    return sorted(accepted["label"].dropna().unique().tolist())


def member_path(root: Path, rel: str) -> Path:
    """`root / rel`, refusing (RecordError) a manifest path that is not a plain relative one."""
    why = relative_problem(rel)
    if why is not None:
        raise RecordError(Path(MANIFEST), "path", why)
    return Path(root) / PurePosixPath(rel)


def check_paths(manifest: pd.DataFrame, *, roots_exist: bool = False) -> None:
    """Refuse the whole manifest if any path, or any root it names, could reach outside
    (or, with `roots_exist`, names a data folder that is not there)."""
    check_record_paths(manifest["path"].tolist(), source=MANIFEST, key="path")
    roots = manifest["root"].dropna().unique() if "root" in manifest.columns else []
    for root in [*roots, *([manifest.attrs["root"]] if manifest.attrs.get("root") else [])]:
        why = root_problem(root, must_exist=roots_exist)
        if why is not None:
            raise RecordError(Path(MANIFEST), "root", why)


def decode_rows(
    rows: pd.DataFrame,
    spec: InputSpec,
    labels: Sequence[str],
    *,
    root: Path | None = None,
    cache_file: Path | None = None,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    max_pixels: int = DEFAULT_MAX_DECODE_PIXELS,
    jobs: int | None = None,
    progress: bool = False,
) -> DecodedImages:
    """Decode `rows` (manifest rows) into one uint8 array; unusable rows go to `.problems`.

    The root is the row's `root` column when it has one (several data folders trained
    together), else `root`, else the manifest's `attrs["root"]`. A file declaring more than
    `max_pixels` is never decoded (the profile's, as the scan's: `Profile.scan_options`).
    """
    default_root = Path(root or rows.attrs.get("root") or ".")
    check_paths(rows)
    index_of = {name: i for i, name in enumerate(labels)}
    n = len(rows)
    nbytes = n * spec.size * spec.size * spec.channels
    if cache_file is not None and nbytes > memory_bytes:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        buffer: np.ndarray = np.lib.format.open_memmap(
            cache_file, mode="w+", dtype=np.uint8, shape=(n, *spec.shape)
        )
        log.info("caching %d decoded images (%.1f GB) in %s", n, nbytes / 1e9, cache_file)
    else:
        buffer = np.zeros((n, *spec.shape), dtype=np.uint8)

    roots = rows["root"] if "root" in rows.columns else pd.Series(str(default_root), rows.index)
    tasks = [
        (i, Path(str(r)), row)
        for i, (r, (_, row)) in enumerate(zip(roots, rows.iterrows(), strict=True))
    ]

    for base in {t[1] for t in tasks}:  # "." or a folder gone: no silent reads from elsewhere
        why = root_problem(str(base))
        if why is not None:
            raise RecordError(Path(MANIFEST), "root", why)
    real_roots = {base: os.path.realpath(base) for base in {t[1] for t in tasks}}
    # Longest first (by the manifest's byte count, which entropy decoding scales with): one
    # 3 MB photo dealt last keeps one core busy 0.1-0.2 s while the others idle.
    if "file_bytes" in rows.columns:
        sizes = pd.to_numeric(rows["file_bytes"], errors="coerce").fillna(0).to_numpy()
        tasks = [tasks[i] for i in np.argsort(-sizes, kind="stable")]

    def work(task: tuple[int, Path, pd.Series]) -> tuple[int, str | None]:
        i, base, row = task
        with processing(base / str(row["path"])):  # a crash names the file it was on
            try:
                path = member_path(base, str(row["path"]))
                target = leads_outside(real_roots[base], str(path))
                if target is not None:  # e.g. swapped for a symlink since the scan
                    raise ImageProblem(f"leads outside the data root, to {target}; not read")
                buffer[i] = load_image(path, spec, row=row, max_pixels=max_pixels)
            except ImageProblem as exc:
                return i, str(exc)
        return i, None

    problems: dict[int, str] = {}
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        results: Iterable[tuple[int, str | None]] = pool.map(work, tasks)
        if progress:
            from toolkit.progress import progress_bar

            results = progress_bar(results, total=n, desc="decoding", unit="img", leave=False)
        for i, why in results:
            if why is not None:
                problems[i] = why
    keep = [i for i in range(n) if i not in problems]
    path_list = rows["path"].astype(str).tolist()
    label_ids = np.array([index_of[str(x)] for x in rows["label"]], dtype=np.int32)
    images = buffer if not problems else buffer[keep]
    for i, why in sorted(problems.items()):
        log.warning("%s", escape_controls(f"{path_list[i]}: left out: {why}"))
    return DecodedImages(
        images=images,
        labels=label_ids[keep],
        paths=[path_list[i] for i in keep],
        problems=[(path_list[i], why) for i, why in sorted(problems.items())],
        kept=keep,
    )


class ImageProblem(Exception):
    """A file cannot be turned into model input; the message says why."""


def load_image(
    path: Path,
    spec: InputSpec,
    *,
    row: pd.Series | None = None,
    max_pixels: int = DEFAULT_MAX_DECODE_PIXELS,
) -> np.ndarray:
    """One file -> a (size, size, channels) uint8 array, or ImageProblem saying why not.

    With a manifest `row`, the bytes must still hash to its sha256, and its face box (in
    the file's stored pixels) is used when `spec.crop_faces`. A file declaring more than
    `max_pixels` is not decoded (decompression bombs).
    """

    try:
        data = read_regular(path)  # a FIFO swapped in since the scan must not block training
    except FileNotFoundError:
        raise ImageProblem("vanished since the scan (validate again)") from None
    except OSError as exc:
        raise ImageProblem(f"cannot read: {exc.strerror or exc}") from None
    expected = row.get("sha256") if row is not None else None
    if pd.notna(expected):
        if hashlib.sha256(data).hexdigest() != expected:
            raise ImageProblem("changed since the scan: sha256 differs (validate again)")
        assert row is not None
        pixels = _scanned_jpeg(data, row, spec, max_pixels)
        if pixels is not None:
            return pixels

    try:
        img = open_declared(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            width, height = img.size
            if width * height > max_pixels:
                raise ImageProblem(
                    f"declares {width}x{height} px, over the {max_pixels:,} px limit"
                )
            box = _face_box(row, width, height, spec) if spec.crop_faces else None
            return _to_array(img, spec, box)
    except ImageProblem:
        raise
    except Exception as exc:
        raise ImageProblem(f"cannot decode: {type(exc).__name__}: {exc}") from None


def _face_box(
    row: pd.Series | None, width: int, height: int, spec: InputSpec
) -> tuple[int, int, int, int] | None:
    """The face box grown by the margin and made square, clipped to the image."""
    if row is None or any(pd.isna(row.get(k)) for k in ("face_x", "face_y", "face_w", "face_h")):
        return None
    x, y, w, h = (int(row[k]) for k in ("face_x", "face_y", "face_w", "face_h"))
    side = max(w, h) * (1 + 2 * spec.face_margin)
    cx, cy = x + w / 2, y + h / 2
    left, top = max(0, round(cx - side / 2)), max(0, round(cy - side / 2))
    right, bottom = min(width, round(cx + side / 2)), min(height, round(cy + side / 2))
    if right - left < 2 or bottom - top < 2:
        return None
    return left, top, right, bottom


def _draft_request(
    width: int, height: int, box: tuple[int, int, int, int] | None, size: int
) -> tuple[int, int]:
    """The size to ask a JPEG's DCT-scaled decode for: the smallest that still gives the
    output `size` px from the whole image, or from the face box."""
    cw, ch = (box[2] - box[0], box[3] - box[1]) if box else (width, height)
    return math.ceil(width * size / max(cw, 1)), math.ceil(height * size / max(ch, 1))


def _rescaled_box(
    box: tuple[int, int, int, int], width: int, height: int, decoded: tuple[int, int]
) -> tuple[int, int, int, int]:
    """`box`, in the file's width x height pixels, in those of its `decoded` (w, h) copy."""
    sx, sy = decoded[0] / width, decoded[1] / height
    return round(box[0] * sx), round(box[1] * sy), round(box[2] * sx), round(box[3] * sy)


def _draft_scale(width: int, height: int, want: tuple[int, int]) -> int:
    """The DCT scale (1, 2, 4 or 8) Pillow's JPEG draft() picks for a requested size: the
    largest that keeps the decoded image at least `want` on both sides."""
    fits = min(width // max(want[0], 1), height // max(want[1], 1))
    return next((a for a in (8, 4, 2) if fits >= a), 1)


def _scanned_jpeg(
    data: bytes, row: pd.Series, spec: InputSpec, max_pixels: int = DEFAULT_MAX_DECODE_PIXELS
) -> np.ndarray | None:
    """A JPEG the scan described (these very bytes: the caller checked the sha256), decoded by
    OpenCV at the DCT scale Pillow's draft() would use; None where this path does not apply
    (not a plain RGB or greyscale JPEG, a row without the scan's columns, or OpenCV refusing
    the bytes), and Pillow decodes instead.

    The same libjpeg-turbo decode as Pillow's, pixel for pixel (tests/test_pipeline.py
    compares them), but from the manifest's size, mode and EXIF orientation instead of a
    second header parse, and in one call outside the GIL instead of Python-driven chunks.
    """
    try:
        if row.get("detected_format") != "jpeg" or row.get("mode") not in ("RGB", "L"):
            return None
        width, height = int(row["width_px"]), int(row["height_px"])
    except (KeyError, TypeError, ValueError):  # a manifest without the scan's columns
        return None
    if width * height > max_pixels:
        return None  # Pillow's path says why
    import cv2

    box = _face_box(row, width, height, spec) if spec.crop_faces else None
    scale = _draft_scale(width, height, _draft_request(width, height, box, spec.size))
    grey = spec.channels == 1
    flags = {
        (1, False): cv2.IMREAD_COLOR,
        (1, True): cv2.IMREAD_GRAYSCALE,
        (2, False): cv2.IMREAD_REDUCED_COLOR_2,
        (2, True): cv2.IMREAD_REDUCED_GRAYSCALE_2,
        (4, False): cv2.IMREAD_REDUCED_COLOR_4,
        (4, True): cv2.IMREAD_REDUCED_GRAYSCALE_4,
        (8, False): cv2.IMREAD_REDUCED_COLOR_8,
        (8, True): cv2.IMREAD_REDUCED_GRAYSCALE_8,
    }[scale, grey]
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), flags | cv2.IMREAD_IGNORE_ORIENTATION)
    if pixels is None or pixels.shape[:2] != (-(-height // scale), -(-width // scale)):
        return None
    if not grey:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    if box:
        left, top, right, bottom = _rescaled_box(
            box, width, height, (pixels.shape[1], pixels.shape[0])
        )
        pixels = pixels[top:bottom, left:right]
    orientation = row.get("exif_orientation")
    if pd.notna(orientation) and int(orientation) in UPRIGHT:
        from PIL import Image

        turn = Image.Transpose(UPRIGHT[int(orientation)])
        pixels = np.asarray(Image.fromarray(pixels).transpose(turn))
    return resize_square(np.ascontiguousarray(pixels), spec.size).reshape(spec.shape)


def _to_array(img: Any, spec: InputSpec, box: tuple[int, int, int, int] | None) -> np.ndarray:
    width, height = img.size
    if img.format in ("JPEG", "MPO"):
        # decode at the smallest DCT scale that still covers the output (or the face box)
        want = _draft_request(width, height, box, spec.size)
        img.draft("L" if spec.channels == 1 else "RGB", want)
        if box and img.size != (width, height):
            box = _rescaled_box(box, width, height, img.size)
    img.seek(0)  # the first frame of an animation
    factor = 1
    if img.format not in ("JPEG", "MPO"):
        # box-averaged while flattened, to no less than twice the output (resize_square
        # averages the rest), so that a big PNG is never converted at full size
        cw, ch = (box[2] - box[0], box[3] - box[1]) if box else img.size
        factor = max(1, min(cw, ch) // (2 * spec.size))
    with decode_turn(img):
        img.load()
        orientation = img.getexif().get(0x0112)  # a PNG's may follow the pixels
        flat = flatten_reduced(img, factor, box=box)
        if flat is not img:
            img.close()  # the full-size pixels go before the next big decode's turn
    img = upright(flat, orientation)
    mode = "L" if spec.channels == 1 else "RGB"
    if img.mode != mode:  # convert() to the same mode would still copy every pixel
        img = img.convert(mode)
    return resize_square(np.asarray(img, dtype=np.uint8), spec.size).reshape(spec.shape)


def resize_square(pixels: np.ndarray, size: int) -> np.ndarray:
    """(h, w[, c]) uint8 -> (size, size[, c]): averaged down by a whole-number factor while
    the image is at least twice the output (an antialiasing box filter, OpenCV's fast
    path), then bilinear, which over less than a factor of two samples every input pixel.

    OpenCV's resize runs outside the GIL; Pillow's BILINEAR, which filters each output pixel
    over its whole footprint, cost 2-3x as much per image and held the decode threads back.
    """
    import cv2

    height, width = pixels.shape[:2]
    factor = min(width, height) // size
    if factor >= 2:
        pixels = cv2.resize(
            pixels, (width // factor, height // factor), interpolation=cv2.INTER_AREA
        )
    return cv2.resize(pixels, (size, size), interpolation=cv2.INTER_LINEAR)


def make_dataset(
    decoded: DecodedImages,
    *,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    binary: bool = True,
) -> Any:
    """A tf.data.Dataset of (images scaled to [0, 1], labels) batches from the cache.

    Batches are gathered by index from the uint8 cache (memory or memmap), so a later
    epoch costs a copy, not a decode; shuffling reshuffles every epoch, within the split.
    """
    import tensorflow as tf

    images, labels = decoded.images, decoded.labels
    n = len(decoded)
    shape = images.shape[1:]

    def gather(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.sort(idx)  # sequential reads from a memmap; the batch is still random
        return images[idx], labels[idx]

    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    label_type = tf.float32 if binary else tf.int32

    def load(idx: Any) -> tuple[Any, Any]:
        x, y = tf.numpy_function(gather, [idx], [tf.uint8, tf.int32], stateful=False)
        x = tf.ensure_shape(x, (None, *shape))
        y = tf.ensure_shape(y, (None,))
        return tf.cast(x, tf.float32) / 255.0, tf.cast(y, label_type)

    # Across workers each keeps its part of every batch: the source is an index range, not
    # files, so there is nothing to shard by FILE. Every worker shuffles with the same seed.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(options)
