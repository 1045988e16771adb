"""The face detector: BlazeFace through LiteRT or OpenCV's dnn, boxes in the image's own
pixels, the same boxes from either runtime."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from conftest import iou
from PIL import Image

from toolkit.demo import write_demo_data
from toolkit.faces import (
    MIN_SCORE,
    MODEL_FILE,
    RUNTIME_ENV,
    RUNTIMES,
    FaceDetector,
    anchor_centres,
    available_runtimes,
    default_runtime,
)

ROOT = Path(__file__).resolve().parents[1]


def _runtime(name: str) -> str:
    if name not in available_runtimes():
        pytest.skip(f"{name} is not installed here (ai-edge-litert has no wheel for this Python)")
    return name


@pytest.fixture(scope="module", params=RUNTIMES)
def detector(request: pytest.FixtureRequest) -> FaceDetector:
    """Every behaviour below holds for each runtime."""
    return FaceDetector(runtime=_runtime(request.param))


@pytest.fixture(scope="module")
def face_picture(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """A demo photo (RGB) in which the detector finds exactly one face."""
    demo = write_demo_data(tmp_path_factory.mktemp("demo") / "demo", n_per_class=4)
    found = FaceDetector()
    planted = {rel for rels in demo.defects.values() for rel in rels}
    for path in sorted(demo.root.rglob("*.jpg")):
        rel = path.relative_to(demo.root).as_posix()
        if rel in planted:
            continue
        try:
            with Image.open(path) as image:
                rgb = np.asarray(image.convert("RGB"))
        except OSError:
            continue
        if len(found.detect(rgb)) == 1 and min(rgb.shape[:2]) >= 200:
            return rgb
    raise AssertionError("no demo photo with one face found")


def _box(face) -> tuple[float, ...]:
    return (face.x, face.y, face.w, face.h)


def test_anchors_are_mediapipes_two_grids() -> None:
    anchors = anchor_centres()
    assert anchors.shape == (16 * 16 * 2 + 8 * 8 * 6, 2)
    # 16x16 cells, two anchors each, row by row; then 8x8 cells, six anchors each
    np.testing.assert_allclose(anchors[0], anchors[1])
    np.testing.assert_allclose(anchors[0], (1 / 32, 1 / 32))
    np.testing.assert_allclose(anchors[2], (3 / 32, 1 / 32))
    np.testing.assert_allclose(anchors[32], (1 / 32, 3 / 32))
    np.testing.assert_allclose(anchors[512], (1 / 16, 1 / 16))
    np.testing.assert_allclose(anchors[512 + 6], (3 / 16, 1 / 16))
    np.testing.assert_allclose(anchors[-1], (15 / 16, 15 / 16))


def test_the_model_ships_inside_the_package_and_loads_offline() -> None:
    assert MODEL_FILE.is_file() and MODEL_FILE.stat().st_size > 100_000
    assert MODEL_FILE.is_relative_to(ROOT / "toolkit")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["toolkit"]
    assert any(MODEL_FILE.match(f"toolkit/{p}") for p in patterns), patterns
    FaceDetector()  # reads the file; nothing is fetched


def test_a_drawn_face_is_found_inside_the_image(
    detector: FaceDetector, face_picture: np.ndarray
) -> None:
    (face,) = detector.detect(face_picture)
    height, width = face_picture.shape[:2]
    assert face.score >= MIN_SCORE
    assert face.x >= 0 and face.x + face.w <= width
    assert face.y >= 0 and face.y + face.h <= height
    assert face.w >= width / 8, "a box around the face, not a speck"


@pytest.mark.parametrize("fill", ["white", "black", "noise"])
def test_no_face_in_a_picture_without_one(detector: FaceDetector, fill: str) -> None:
    rng = np.random.default_rng(0)
    picture = {
        "white": np.full((240, 320, 3), 255, np.uint8),
        "black": np.zeros((240, 320, 3), np.uint8),
        "noise": rng.integers(0, 256, (240, 320, 3), dtype=np.uint8),
    }[fill]
    assert detector.detect(picture) == []


def test_min_score_is_inclusive(detector: FaceDetector, face_picture: np.ndarray) -> None:
    (face,) = detector.detect(face_picture)
    at = FaceDetector(min_score=face.score, runtime=detector.runtime)
    above = FaceDetector(min_score=np.nextafter(face.score, 1.0), runtime=detector.runtime)
    assert len(at.detect(face_picture)) == 1
    assert above.detect(face_picture) == []


def test_both_runtimes_give_the_same_faces(face_picture: np.ndarray) -> None:
    """LiteRT is the faster runtime; OpenCV the fallback. A scan must not depend on which
    one ran (measured: the same count and largest box on 6,182 images of the shared sets)."""
    litert = FaceDetector(runtime=_runtime("litert"))
    opencv = FaceDetector(runtime="opencv")
    h, w = face_picture.shape[:2]
    pictures = [face_picture, face_picture[:, w // 3 :], face_picture[h // 4 :, :]]
    pictures.append(np.ascontiguousarray(face_picture[::-1, ::-1]))  # upside down: no face
    for picture in pictures:
        ours, theirs = litert.detect(picture), opencv.detect(picture)
        assert [_box(f) for f in ours] == [_box(f) for f in theirs]
        np.testing.assert_allclose([f.score for f in ours], [f.score for f in theirs], atol=1e-4)


def test_the_fastest_installed_runtime_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RUNTIME_ENV, raising=False)
    assert default_runtime() == available_runtimes()[0]
    assert FaceDetector().runtime == available_runtimes()[0]
    assert available_runtimes()[-1] == "opencv"  # always there: a core dependency


def test_without_litert_the_detector_falls_back_to_opencv(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(RUNTIME_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import fails
    assert available_runtimes() == ["opencv"]
    assert FaceDetector().runtime == "opencv"


def test_the_environment_picks_the_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RUNTIME_ENV, " OpenCV ")
    assert FaceDetector().runtime == "opencv"
    monkeypatch.setenv(RUNTIME_ENV, "onnx")
    with pytest.raises(ValueError, match=f"unknown face detector runtime 'onnx'.*{RUNTIME_ENV}"):
        FaceDetector()
    with pytest.raises(ValueError, match="one of: litert, opencv"):
        FaceDetector(runtime="tensorflow")


def test_litert_loads_in_a_process_without_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """pythonw and some services have no descriptor 2 and sys.stderr is None: nothing to
    silence, and the detector must still load."""
    _runtime("litert")

    def no_descriptor(fd: int) -> int:
        raise OSError(9, "Bad file descriptor")

    monkeypatch.setattr(sys, "stderr", None)
    monkeypatch.setattr("toolkit.faces.os.dup", no_descriptor)
    assert FaceDetector(runtime="litert").detect(np.zeros((64, 64, 3), np.uint8)) == []


def test_litert_says_nothing_on_stderr() -> None:
    """LiteRT's C++ log line ("Created TensorFlow Lite XNNPACK delegate") would land in
    every scan's output, once per worker; it prints once per process, so a fresh one."""
    _runtime("litert")
    code = (
        "import numpy as np; from toolkit.faces import FaceDetector; "
        "FaceDetector(runtime='litert').detect(np.zeros((64, 64, 3), np.uint8)); "
        "print('detected')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == "detected\n"
    assert done.stderr == ""


@pytest.mark.parametrize("pad", ["left", "top", "both"])
def test_boxes_come_back_in_the_images_pixels_whatever_its_shape(
    detector: FaceDetector, face_picture: np.ndarray, pad: str
) -> None:
    """The image is letterboxed into the 128 px input; a box must map back through the
    scale and the offset of either side."""
    (face,) = detector.detect(face_picture)
    h, w = face_picture.shape[:2]
    # small pads: BlazeFace short range is made for faces that fill a good part of the frame
    dx = w // 4 if pad in ("left", "both") else 0
    dy = h // 4 if pad in ("top", "both") else 0
    canvas = np.full((h + dy, w + dx, 3), 255, np.uint8)
    canvas[dy:, dx:] = face_picture
    found = detector.detect(canvas)
    assert found, "the face is still found on a larger canvas"
    expected = (face.x + dx, face.y + dy, face.w, face.h)
    assert iou(_box(found[0]), expected) > 0.6, (found[0], expected)


def test_a_face_cut_by_the_border_gets_a_box_clipped_to_the_image(
    detector: FaceDetector, face_picture: np.ndarray
) -> None:
    (face,) = detector.detect(face_picture)
    cut = face_picture[:, face.x + face.w // 3 :]  # a third of the face is off the left edge
    found = detector.detect(cut)
    if not found:
        pytest.skip("the half face is not found at this crop")
    box = found[0]
    assert box.x >= 0 and box.y >= 0
    assert box.x + box.w <= cut.shape[1] and box.y + box.h <= cut.shape[0]


def test_two_faces_are_two_boxes_largest_first(
    detector: FaceDetector, face_picture: np.ndarray
) -> None:
    (face,) = detector.detect(face_picture)
    # a portrait: the face with half its size around it, then a copy at 0.8x beside it
    x0, y0 = max(0, face.x - face.w // 2), max(0, face.y - face.h // 2)
    portrait = face_picture[y0 : face.y + face.h * 3 // 2, x0 : face.x + face.w * 3 // 2]
    h, w = portrait.shape[:2]
    small = np.asarray(Image.fromarray(portrait).resize((w * 4 // 5, h * 4 // 5)))
    canvas = np.full((h, w + small.shape[1], 3), 255, np.uint8)
    canvas[:, :w] = portrait
    canvas[: small.shape[0], w:] = small
    found = detector.detect(canvas)
    assert len(found) == 2
    assert found[0].w * found[0].h > found[1].w * found[1].h
    assert found[0].x < w <= found[1].x
