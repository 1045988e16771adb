"""The split, the decoder and the tf.data pipeline: accepted manifest rows -> batches."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from corpus import EXIF_ORIENTATION_TAG, write_image
from PIL import Image

from toolkit.errors import RecordError, UsageError
from toolkit.manifest import normalise_manifest
from toolkit.models import InputSpec
from toolkit.pipeline import (
    ImageProblem,
    check_ratios,
    class_names,
    decode_rows,
    fold_manifest,
    load_image,
    make_dataset,
    member_path,
    resize_square,
    split_manifest,
)


def _rows(n_per_class: dict[str, int], **extra: object) -> pd.DataFrame:
    """Accepted manifest rows with distinct hashes (no duplicates) unless extra says so."""
    rows = []
    for label, n in n_per_class.items():
        for i in range(n):
            key = f"{label}-{i}"
            rows.append(
                {
                    "path": f"{label}/{i:04d}.jpg",
                    "label": label,
                    "sha256": hashlib.sha256(key.encode()).hexdigest(),
                    "phash": f"{(hash_int(key)):016x}",
                    "status": "accepted",
                    **extra,
                }
            )
    return normalise_manifest(pd.DataFrame(rows))


def hash_int(key: str) -> int:
    """A 64-bit perceptual-hash stand-in, far from other keys' (random bits)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:16], 16)


# ----------------------------------------------------------------------------- the split


def test_split_is_stratified_with_the_tutorials_shares() -> None:
    split = split_manifest(_rows({"happy": 100, "sad": 50}))
    counts = split.groupby(["label", "split"]).size().to_dict()
    assert counts == {
        ("happy", "train"): 70, ("happy", "validation"): 20, ("happy", "test"): 10,
        ("sad", "train"): 35, ("sad", "validation"): 10, ("sad", "test"): 5,
    }  # fmt: skip


def test_split_depends_on_seed_and_content_not_on_row_order() -> None:
    rows = _rows({"happy": 30, "sad": 30})
    first = split_manifest(rows, seed=1).set_index("path")["split"]
    shuffled = split_manifest(rows.sample(frac=1, random_state=7), seed=1)
    assert shuffled.set_index("path")["split"].sort_index().equals(first.sort_index())
    other = split_manifest(rows, seed=2).set_index("path")["split"]
    assert not other.equals(first)


def test_exact_and_near_duplicates_land_in_one_split() -> None:
    rows = _rows({"happy": 40, "sad": 40})
    # five copies of one picture, and a near copy (2 bits off) of another
    rows.loc[0:4, "sha256"] = rows.loc[0, "sha256"]
    base = int(rows.loc[10, "phash"], 16)
    rows.loc[11, "phash"] = f"{base ^ 0b101:016x}"
    split = split_manifest(rows, max_phash_distance=4)
    assert split.loc[0:4, "split"].nunique() == 1
    assert split.loc[10, "split"] == split.loc[11, "split"]


def test_near_duplicates_split_freely_when_the_distance_is_off() -> None:
    rows = _rows({"happy": 400})
    base = int(rows.loc[10, "phash"], 16)
    rows["phash"] = [f"{base ^ (1 << (i % 64)):016x}" for i in range(len(rows))]
    together = split_manifest(rows, max_phash_distance=4)
    apart = split_manifest(rows, max_phash_distance=None)
    assert together["split"].nunique() == 1  # all within 2 bits of each other: one group
    assert apart["split"].nunique() == 3


def test_rejected_rows_get_no_split() -> None:
    rows = _rows({"happy": 10, "sad": 10})
    rows.loc[[0, 15], "status"] = "rejected"
    split = split_manifest(rows)
    assert split.loc[[0, 15], "split"].isna().all()
    assert split["split"].notna().sum() == 18
    assert class_names(rows) == ["happy", "sad"]


def test_nothing_accepted_gives_an_empty_split() -> None:
    rows = _rows({"happy": 3})
    rows["status"] = "rejected"
    assert split_manifest(rows)["split"].isna().all()


@pytest.mark.parametrize(
    "ratios",
    [(0.7, 0.2), (0.8, 0.2, 0.1), (0.7, -0.1, 0.4), (0.0, 0.9, 0.1), (0.9, 0.0, 0.1)],
    ids=["two shares", "sum over one", "a negative share", "no training", "no validation"],
)
def test_bad_split_ratios_are_refused(ratios: tuple[float, ...]) -> None:
    with pytest.raises(UsageError, match="share"):
        check_ratios(ratios)


def test_a_zero_test_share_is_allowed() -> None:
    split = split_manifest(_rows({"happy": 10, "sad": 10}), (0.8, 0.2, 0.0))
    assert "test" not in set(split["split"])


# ----------------------------------------------------------------------------- the audit's folds


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_folds_share_each_class_equally(folds: int) -> None:
    rows = _rows({"happy": 61, "sad": 29})
    fold = fold_manifest(rows, folds)
    for label in ("happy", "sad"):
        sizes = np.bincount(fold[(rows["label"] == label).to_numpy()], minlength=folds)
        assert sizes.max() - sizes.min() <= 1, sizes


def test_copies_share_a_fold_and_rows_not_accepted_have_none() -> None:
    rows = _rows({"happy": 40, "sad": 40})
    rows.loc[0:4, "sha256"] = rows.loc[0, "sha256"]
    base = int(rows.loc[10, "phash"], 16)
    rows.loc[11, "phash"] = f"{base ^ 0b101:016x}"
    rows.loc[[20, 50], "status"] = "rejected"
    fold = fold_manifest(rows, 3, max_phash_distance=4)
    assert len(set(fold[0:5])) == 1 and fold[10] == fold[11]
    assert fold[20] == fold[50] == -1 and (np.delete(fold, [20, 50]) >= 0).all()


def test_folds_depend_on_seed_and_content_not_on_row_order() -> None:
    rows = _rows({"happy": 30, "sad": 30})
    first = pd.Series(fold_manifest(rows, 3, seed=1), index=rows["path"])
    shuffled_rows = rows.sample(frac=1, random_state=7)
    shuffled = pd.Series(fold_manifest(shuffled_rows, 3, seed=1), index=shuffled_rows["path"])
    assert shuffled.sort_index().equals(first.sort_index())
    assert not pd.Series(fold_manifest(rows, 3, seed=2), index=rows["path"]).equals(first)


def test_no_accepted_rows_no_folds() -> None:
    rows = _rows({"happy": 3})
    rows["status"] = "rejected"
    assert (fold_manifest(rows, 2) == -1).all()


# ----------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    "rel",
    ["../../etc/passwd", "/etc/passwd", "happy/../../x.jpg", ""],
    ids=["climbs out", "absolute", "climbs out midway", "empty"],
)
def test_manifest_paths_never_leave_the_root(tmp_path: Path, rel: str) -> None:
    with pytest.raises(RecordError, match=r"absolute|climbs out|empty"):
        member_path(tmp_path, rel)


def test_an_edited_manifest_pointing_outside_is_refused_whole(tmp_path: Path) -> None:
    rows = _rows({"happy": 2})
    rows.loc[1, "path"] = "../../etc/passwd"
    with pytest.raises(RecordError, match="etc/passwd"):
        decode_rows(rows, InputSpec(8, 1), ["happy"], root=tmp_path)


# ----------------------------------------------------------------------------- decoding


def _spec(size: int = 16, channels: int = 3, crop: bool = False) -> InputSpec:
    return InputSpec(size=size, channels=channels, crop_faces=crop)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("RGB", "JPEG"),
        ("L", "JPEG"),
        ("CMYK", "JPEG"),
        ("RGB", "PNG"),
        ("RGBA", "PNG"),
        ("P", "PNG"),
        ("I;16", "PNG"),
        ("LA", "PNG"),
        ("RGB", "BMP"),
        ("P", "GIF"),
        ("RGB", "WEBP"),
        ("RGB", "TIFF"),
    ],
    ids=lambda v: str(v),
)
@pytest.mark.parametrize("channels", [1, 3], ids=["grey", "rgb"])
def test_every_accepted_kind_of_image_decodes_to_the_models_shape(
    tmp_path: Path, mode: str, fmt: str, channels: int
) -> None:
    path = write_image(tmp_path / f"x.{fmt.lower()}", size=(40, 30), mode=mode, fmt=fmt)
    arr = load_image(path, _spec(16, channels))
    assert arr.shape == (16, 16, channels)
    assert arr.dtype == np.uint8
    assert arr.std() > 0  # real pixels, not a blank


def test_sixteen_bit_images_keep_their_contrast(tmp_path: Path) -> None:
    path = write_image(tmp_path / "deep.png", size=(32, 32), mode="I;16", fmt="PNG")
    arr = load_image(path, _spec(32, 1))
    assert arr.max() > 200 and arr.min() < 60  # scaled from 16 bits, not clipped to 255


def test_transparent_pixels_become_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    img.save(tmp_path / "clear.png")
    assert load_image(tmp_path / "clear.png", _spec(8)).min() == 255


def test_the_first_frame_of_an_animation_is_used(tmp_path: Path) -> None:
    frames = [Image.new("L", (8, 8), v) for v in (10, 250)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert load_image(tmp_path / "anim.gif", _spec(8, 1)).mean() < 30


def test_exif_orientation_turns_the_picture_upright(tmp_path: Path) -> None:
    pixels = np.zeros((20, 20, 3), np.uint8)
    pixels[:, 10:] = 255  # stored: left black, right white
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 6  # display rotated 90 degrees clockwise
    Image.fromarray(pixels).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    arr = load_image(tmp_path / "rot.jpg", _spec(20, 1))
    assert arr[:8].mean() < 40 and arr[-8:].mean() > 215  # upright: top black, bottom white


def test_the_face_box_is_cropped_with_a_margin(tmp_path: Path) -> None:
    pixels = np.zeros((200, 200), np.uint8)
    pixels[80:120, 80:120] = 255  # the "face"
    Image.fromarray(pixels).save(tmp_path / "face.png")
    row = pd.Series({"face_x": 80, "face_y": 80, "face_w": 40, "face_h": 40})
    cropped = load_image(tmp_path / "face.png", _spec(32, 1, crop=True), row=row)
    whole = load_image(tmp_path / "face.png", _spec(32, 1, crop=False), row=row)
    assert cropped.mean() > 80 > whole.mean()  # the face fills most of the crop
    no_face = pd.Series({"face_x": pd.NA, "face_y": pd.NA, "face_w": pd.NA, "face_h": pd.NA})
    fallback = load_image(tmp_path / "face.png", _spec(32, 1, crop=True), row=no_face)
    assert np.array_equal(fallback, whole)


def test_a_jpeg_face_crop_survives_reduced_scale_decoding(tmp_path: Path) -> None:
    pixels = np.zeros((800, 800), np.uint8)
    pixels[600:700, 100:200] = 255
    Image.fromarray(pixels).save(tmp_path / "big.jpg", quality=95)
    row = pd.Series({"face_x": 100, "face_y": 600, "face_w": 100, "face_h": 100})
    spec = InputSpec(size=16, channels=1, crop_faces=True, face_margin=0.0)
    assert load_image(tmp_path / "big.jpg", spec, row=row).mean() > 200


def _scanned(path: Path, **row: object) -> pd.Series:
    """The scan's manifest row for `path` (sha256, format, size, mode, EXIF orientation),
    with `row`'s values over it (a face box)."""
    from toolkit.scan import FileScanner, ScanOptions

    scanned = FileScanner(path.parent, ScanOptions(detect_faces=False)).scan(path.name)
    return pd.Series({**scanned, **row})


def test_a_jpeg_is_asked_for_the_smallest_decode_that_covers_the_output_or_the_face() -> None:
    from toolkit.pipeline import _draft_request

    assert _draft_request(4000, 3000, None, 256) == (256, 256)
    # a 500x250 face box must itself come out 256 px: the whole image 8x and 12x that
    assert _draft_request(4000, 3000, (1000, 1000, 1500, 1250), 256) == (2048, 3072)


def test_a_face_box_follows_each_side_of_a_reduced_decode_by_its_own_scale() -> None:
    from toolkit.pipeline import _rescaled_box

    # 205x1601 decoded at 1/8 is 26x201: x scales by 26/205, y by 201/1601
    assert _rescaled_box((10, 1200, 60, 1240), 205, 1601, (26, 201)) == (1, 151, 8, 156)


def _refuse(*args: object) -> None:
    raise AssertionError("Pillow was asked to open a file")


@pytest.mark.parametrize(
    ("size", "spec"),
    [
        ((40, 30), _spec(16)),  # smaller than twice the output: full scale
        ((64, 48), _spec(16)),  # 3x: DCT scale 2 (Pillow's draft rounds down to a power of 2)
        ((130, 64), _spec(16)),  # 4x one way, 4x the other: scale 4
        ((129, 127), _spec(16)),  # just under 8x: scale 4
        ((128, 128), _spec(16)),  # 8x exactly: scale 8
        ((517, 389), _spec(48, 1)),  # odd sides: the reduced size rounds up
        ((300, 200), _spec(16, 1, crop=True)),  # a face crop sets the scale
        ((205, 1601), _spec(8, 3, crop=True)),  # ... and the box scales by each side's rounding
    ],
    ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else f"{v.size}-{v.channels}",
)
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_scanned_jpegs_decode_through_opencv_to_pillows_pixels(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    size: tuple[int, int],
    spec: InputSpec,
    mode: str,
) -> None:
    path = write_image(tmp_path / "x.jpg", size=size, mode=mode, quality=90)
    row = _scanned(path, face_x=size[0] // 3, face_y=size[1] // 2, face_w=50, face_h=40)
    pillow = load_image(path, spec, row=row.drop("sha256"))  # no sha256: Pillow decodes
    monkeypatch.setattr(Image, "open", _refuse)  # the scanned JPEG must not reach Pillow
    assert np.array_equal(load_image(path, spec, row=row), pillow)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_scanned_jpegs_turn_upright_like_pillows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, orientation: int
) -> None:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    path = write_image(tmp_path / "o.jpg", size=(96, 64), exif=exif, quality=90)
    row = _scanned(path, face_x=10, face_y=5, face_w=30, face_h=20)
    for spec in (_spec(16), _spec(12, 1, crop=True)):
        pillow = load_image(path, spec, row=row.drop("sha256"))
        with monkeypatch.context() as patch:
            patch.setattr(Image, "open", _refuse)
            assert np.array_equal(load_image(path, spec, row=row), pillow)


def test_jpegs_opencv_cannot_take_go_to_pillow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import toolkit.pipeline as pipeline

    cmyk = write_image(tmp_path / "cmyk.jpg", size=(40, 30), mode="CMYK")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(write_image(tmp_path / "whole.jpg", size=(64, 64)).read_bytes()[:-400])
    monkeypatch.setattr(pipeline, "_to_array", lambda img, spec, box: img.format)
    assert load_image(cmyk, _spec(8), row=_scanned(cmyk)) == "JPEG"
    assert load_image(truncated, _spec(8), row=_scanned(truncated)) == "JPEG"


def test_rows_without_the_scans_size_go_to_pillow_which_judges_the_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import toolkit.pipeline as pipeline

    path = write_image(tmp_path / "x.jpg", size=(40, 30))
    monkeypatch.setattr(pipeline, "_to_array", lambda img, spec, box: img.size)
    assert load_image(path, _spec(8), row=_scanned(path, width_px=pd.NA)) == (40, 30)
    huge = _scanned(path, width_px=20_000, height_px=20_000)  # an edited row: Pillow re-reads
    assert load_image(path, _spec(8), row=huge) == (40, 30)


def test_a_scanned_truncated_jpeg_is_still_a_decode_problem(tmp_path: Path) -> None:
    path = tmp_path / "cut.jpg"
    path.write_bytes(write_image(tmp_path / "whole.jpg", size=(64, 64)).read_bytes()[:-400])
    with pytest.raises(ImageProblem, match="cannot decode"):
        load_image(path, _spec(8), row=_scanned(path))


def _stripes(side: int) -> np.ndarray:
    pixels = np.zeros((side, side), dtype=np.uint8)
    pixels[:, ::2] = 255  # one-pixel black and white columns: pure aliasing bait
    return pixels


@pytest.mark.parametrize("side", [600, 900])  # whole factors of 2 and 3 of the output
def test_shrinking_by_two_or_more_averages_instead_of_sampling(side: int) -> None:
    out = resize_square(_stripes(side), 256)
    assert out.shape == (256, 256)
    # sampling one pixel in two or three keeps black or white columns (std ~120);
    # averaging first greys them out
    assert out.std() < 62 and out.min() > 30 and out.max() < 225


def test_shrinking_by_less_than_two_sees_every_pixel() -> None:
    out = resize_square(_stripes(300), 256)
    # bilinear over a factor of 1.17: every output pixel mixes two neighbours, so no
    # column survives pure white or pure black across the whole image
    assert 100 < out.mean() < 155 and out.std() < 80


def test_enlarging_keeps_the_pictures_range_and_channels() -> None:
    rgb = np.stack([_stripes(40)] * 3, axis=-1)
    out = resize_square(rgb, 96)
    assert out.shape == (96, 96, 3) and out.dtype == np.uint8
    assert out.min() < 20 and out.max() > 235  # bilinear: no blur beyond the neighbours


@pytest.mark.parametrize(
    ("change", "message"),
    [("rewrite", "changed since the scan"), ("delete", "vanished since the scan")],
    ids=["rewritten after the scan", "deleted after the scan"],
)
def test_files_that_changed_since_the_scan_are_left_out_by_path(
    tmp_path: Path, change: str, message: str
) -> None:
    for i in range(3):
        write_image(tmp_path / "happy" / f"{i}.jpg", seed=i)
    rows = normalise_manifest(
        pd.DataFrame(
            {
                "path": [f"happy/{i}.jpg" for i in range(3)],
                "label": ["happy"] * 3,
                "sha256": [
                    hashlib.sha256((tmp_path / f"happy/{i}.jpg").read_bytes()).hexdigest()
                    for i in range(3)
                ],
                "status": ["accepted"] * 3,
            }
        )
    )
    victim = tmp_path / "happy" / "1.jpg"
    if change == "rewrite":
        write_image(victim, seed=99)
    else:
        victim.unlink()
    decoded = decode_rows(rows, _spec(8), ["happy"], root=tmp_path)
    assert decoded.paths == ["happy/0.jpg", "happy/2.jpg"]
    assert len(decoded.images) == 2
    assert decoded.problems == [("happy/1.jpg", pytest.approx(decoded.problems[0][1]))]
    assert message in decoded.problems[0][1]


def test_a_declared_bomb_is_never_decoded(tmp_path: Path) -> None:
    from corpus import _bomb_png

    (tmp_path / "bomb.png").write_bytes(_bomb_png())
    with pytest.raises(Exception, match="px limit"):
        load_image(tmp_path / "bomb.png", _spec(8))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"], ids=["a scanned jpeg", "a png"])
def test_the_decode_limit_is_the_one_given(tmp_path: Path, fmt: str) -> None:
    path = write_image(tmp_path / f"x.{fmt.lower()}", size=(40, 30), fmt=fmt)
    row = _scanned(path)
    assert load_image(path, _spec(8), row=row, max_pixels=40 * 30).shape == (8, 8, 3)
    with pytest.raises(ImageProblem, match=r"declares 40x30 px, over the 1,199 px limit"):
        load_image(path, _spec(8), row=row, max_pixels=40 * 30 - 1)


def test_text_saved_as_jpg_is_a_decode_problem_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "fake.jpg").write_text("<html>404 not found</html>")
    with pytest.raises(Exception, match="cannot decode"):
        load_image(tmp_path / "fake.jpg", _spec(8))


def test_an_unreadable_file_is_a_read_problem(tmp_path: Path) -> None:
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(Exception, match="cannot read"):
        load_image(tmp_path / "dir.jpg", _spec(8))


def test_past_the_memory_budget_the_cache_is_a_file(tmp_path: Path) -> None:
    for i in range(4):
        write_image(tmp_path / "data" / "happy" / f"{i}.jpg", seed=i)
    rows = _files_as_rows(tmp_path / "data")
    cache = tmp_path / "cache" / "train.npy"
    decoded = decode_rows(rows, _spec(8), ["happy"], cache_file=cache, memory_bytes=0)
    assert isinstance(decoded.images, np.memmap)
    assert cache.stat().st_size >= 4 * 8 * 8 * 3
    in_memory = decode_rows(rows, _spec(8), ["happy"], cache_file=cache.with_name("b.npy"))
    assert not isinstance(in_memory.images, np.memmap)
    assert not cache.with_name("b.npy").exists()
    assert np.array_equal(np.asarray(decoded.images), in_memory.images)


def _files_as_rows(root: Path) -> pd.DataFrame:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    rows = normalise_manifest(
        pd.DataFrame(
            {
                "path": [p.relative_to(root).as_posix() for p in files],
                "label": [p.parent.name for p in files],
                "sha256": [hashlib.sha256(p.read_bytes()).hexdigest() for p in files],
                "status": ["accepted"] * len(files),
            }
        )
    )
    rows.attrs["root"] = str(root)
    return rows


# ----------------------------------------------------------------------------- tf.data


def test_batches_are_scaled_to_one_and_reshuffled_every_epoch(tmp_path: Path) -> None:
    for label in ("happy", "sad"):
        for i in range(10):
            write_image(
                tmp_path / label / f"{i}.png", fmt="PNG", seed=i + (50 if label == "sad" else 0)
            )
    rows = _files_as_rows(tmp_path)
    decoded = decode_rows(rows, _spec(8), ["happy", "sad"], progress=True)
    ds = make_dataset(decoded, batch_size=8, shuffle=True, seed=3)
    epoch1 = [(x.numpy(), y.numpy()) for x, y in ds]
    epoch2 = [(x.numpy(), y.numpy()) for x, y in ds]
    assert [len(y) for _, y in epoch1] == [8, 8, 4]
    x = epoch1[0][0]
    assert x.dtype == np.float32 and x.shape == (8, 8, 8, 3)
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.5
    assert set(np.concatenate([y for _, y in epoch1]).tolist()) == {0.0, 1.0}
    sums1 = sorted(float(b.sum()) for b, _ in epoch1)
    sums2 = sorted(float(b.sum()) for b, _ in epoch2)
    assert sum(sums1) == pytest.approx(sum(sums2), rel=1e-5)  # same images every epoch
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(epoch1, epoch2, strict=True))


def test_unshuffled_batches_keep_manifest_order_with_integer_labels_for_softmax(
    tmp_path: Path,
) -> None:
    for label in ("a", "b", "c"):
        write_image(tmp_path / label / "0.png", fmt="PNG", seed=ord(label))
    decoded = decode_rows(_files_as_rows(tmp_path), _spec(8), ["a", "b", "c"])
    ((x, y),) = list(make_dataset(decoded, batch_size=8, binary=False))
    assert y.numpy().tolist() == [0, 1, 2]
    assert y.dtype.name == "int32"
    assert np.allclose(x.numpy() * 255, decoded.images, atol=1e-3)


def test_the_largest_files_are_decoded_first_and_kept_in_row_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Longest first: a big photo left for last would keep one core busy while the others
    wait. The cache still follows the rows."""
    for i in range(4):
        write_image(tmp_path / "happy" / f"{i}.png", fmt="PNG", seed=i)
    rows = _files_as_rows(tmp_path)
    rows["file_bytes"] = pd.array([10, 40, None, 30], dtype="Int64")
    import toolkit.pipeline as pipeline

    seen: list[str] = []
    real = pipeline.load_image

    def recording(path: Path, spec: InputSpec, **kwargs: object) -> np.ndarray:
        seen.append(path.name)
        return real(path, spec, **kwargs)

    monkeypatch.setattr(pipeline, "load_image", recording)
    decoded = decode_rows(rows, _spec(8), ["happy"], jobs=1)
    assert seen == ["1.png", "3.png", "0.png", "2.png"]
    assert decoded.paths == [f"happy/{i}.png" for i in range(4)]
    for i in range(4):
        assert np.array_equal(decoded.images[i], load_image(tmp_path / f"happy/{i}.png", _spec(8)))


def test_decoding_in_threads_leaves_pillows_bomb_limit_as_it_was(tmp_path: Path) -> None:
    rows = normalise_manifest(
        pd.DataFrame(
            {
                "path": [f"happy/{i}.png" for i in range(48)],
                "label": ["happy"] * 48,
                "status": ["accepted"] * 48,
            }
        )
    )
    for i in range(48):
        write_image(tmp_path / f"happy/{i}.png", size=(400, 300), fmt="PNG", seed=i)
    before = Image.MAX_IMAGE_PIXELS
    for _ in range(3):
        decoded = decode_rows(rows, _spec(8), ["happy"], root=tmp_path, jobs=8)
        assert len(decoded.images) == 48
        assert before == Image.MAX_IMAGE_PIXELS  # a bomb opened later is still refused
