"""Faces in one decoded image: MediaPipe's BlazeFace (short range), run by LiteRT or OpenCV.

The scan calls this for every decodable file (`n_faces` and the largest face's box in the
manifest); training crops to that box. The model is the 230 KB TFLite file MediaPipe
shipped in its 0.10.14 wheel (Apache-2.0; see toolkit/models/README.md); it is part of
this package, so nothing is downloaded. Measured against OpenCV's frontal Haar cascade,
which the scan used before (docs/model-quality.md, "A learnt face detector"): 7x less CPU
per file, and faces found in 68% of renotte's photos instead of 38% (profiles, tilted
and half-covered faces, which the cascade cannot see).

How the network's output becomes boxes is MediaPipe's published recipe for this model:
896 fixed anchors on a 16x16 grid (2 per cell) and an 8x8 grid (6 per cell), each
regressing a box centre and size in input pixels; a logistic score per anchor; overlapping
boxes merged by non-maximum suppression.

Two runtimes run the same file and give the same boxes: LiteRT (Google's TFLite
interpreter, the `ai-edge-litert` wheel, with its XNNPACK CPU kernels) where it is
installed, 1.4-2.0 ms an image on one core of the Xeon VM, and OpenCV's dnn module
otherwise, 3.9-4.1 ms (docs/model-quality.md, "The face pass's runtime").
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MODEL_FILE = Path(__file__).parent / "models" / "face_detection_short_range.tflite"
#: The network's input: a square of this side, RGB scaled to [-1, 1]; the image is
#: letterboxed into it (aspect kept, the rest black), as MediaPipe does.
INPUT_PX = 128
#: A face is reported when the network's score is at least this (MediaPipe's default
#: `min_detection_confidence`).
MIN_SCORE = 0.5
#: Boxes overlapping a higher-scoring one by more than this (intersection over union)
#: are the same face.
NMS_IOU = 0.3
#: Anchor grids: (cells per side, anchors per cell).
_GRIDS = ((16, 2), (8, 6))
_OUTPUTS = ["classificators", "regressors"]
#: The runtimes, fastest first; `FaceDetector` takes the first one that imports.
RUNTIMES = ("litert", "opencv")
#: The environment variable that picks the runtime for every detector (the scan's worker
#: processes inherit it).
RUNTIME_ENV = "TOOLKIT_FACE_RUNTIME"


def available_runtimes() -> list[str]:
    """The runtimes that import here, in `RUNTIMES`' order (OpenCV always does)."""
    found = []
    for name in RUNTIMES:
        try:
            if name == "litert":
                import ai_edge_litert.interpreter  # noqa: F401
            found.append(name)
        except ImportError:
            continue
    return found


def default_runtime() -> str:
    """`$TOOLKIT_FACE_RUNTIME` where set (to compare the two, or to step around one), else
    the fastest runtime that imports."""
    asked = os.environ.get(RUNTIME_ENV, "").strip().lower()
    if asked:
        return asked
    return available_runtimes()[0]


@dataclass(frozen=True)
class Face:
    """One face: its box in the image's pixels (clipped to the image) and the score."""

    x: int
    y: int
    w: int
    h: int
    score: float


def anchor_centres() -> np.ndarray:
    """The 896 anchor centres, as fractions of the input's side: (x, y) per row."""
    rows = []
    for cells, per_cell in _GRIDS:
        centres = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        xs, ys = np.meshgrid(centres, centres)
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        rows.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(rows)


class FaceDetector:
    """Holds the network between images; one per process (neither runtime shares one)."""

    def __init__(self, min_score: float = MIN_SCORE, runtime: str | None = None) -> None:
        runtime = runtime or default_runtime()
        if runtime not in RUNTIMES:
            raise ValueError(
                f"unknown face detector runtime {runtime!r} (from {RUNTIME_ENV} or the "
                f"caller); one of: {', '.join(RUNTIMES)}"
            )
        self.min_score = min_score
        self.runtime = runtime
        self._anchors = anchor_centres()
        self._run = _litert_runner() if runtime == "litert" else _opencv_runner()

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in an RGB uint8 array (H, W, 3), largest first."""
        import cv2

        height, width = rgb.shape[:2]
        scale = INPUT_PX / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        canvas = np.zeros((INPUT_PX, INPUT_PX, 3), np.uint8)
        off_x, off_y = (INPUT_PX - new_w) // 2, (INPUT_PX - new_h) // 2
        canvas[off_y : off_y + new_h, off_x : off_x + new_w] = cv2.resize(
            rgb, (new_w, new_h), interpolation=cv2.INTER_AREA
        )
        logits, regressors = self._run(canvas)
        scores = _sigmoid(logits[0, :, 0])
        keep = np.flatnonzero(scores >= self.min_score)
        if keep.size == 0:
            return []
        reg = regressors[0, keep, :4].astype(np.float64)
        centre = self._anchors[keep] * INPUT_PX + reg[:, :2]
        size = reg[:, 2:4]
        corner = centre - size / 2
        boxes = np.concatenate([corner, size], axis=1)
        # the scores are filtered above; NMSBoxes' own threshold is exclusive
        picked = cv2.dnn.NMSBoxes(boxes.tolist(), scores[keep].tolist(), 0.0, NMS_IOU)
        faces = []
        for i in np.asarray(picked, dtype=int).reshape(-1):
            x0, y0, w, h = boxes[i]
            # back from the letterboxed input to the image's pixels, clipped to the image
            left = max(0.0, (x0 - off_x) / scale)
            top = max(0.0, (y0 - off_y) / scale)
            right = min(float(width), (x0 + w - off_x) / scale)
            bottom = min(float(height), (y0 + h - off_y) / scale)
            if right - left < 1 or bottom - top < 1:
                continue
            faces.append(
                Face(
                    round(left),
                    round(top),
                    round(right - left),
                    round(bottom - top),
                    float(scores[keep][i]),
                )
            )
        return sorted(faces, key=lambda f: f.w * f.h, reverse=True)


def _opencv_runner() -> Any:
    """canvas (128x128 RGB uint8) -> (logits (1, 896, 1), regressors (1, 896, 16)), by
    OpenCV's dnn module (NCHW input)."""
    import cv2

    net = cv2.dnn.readNetFromTFLite(str(MODEL_FILE))

    def run(canvas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # NCHW float32, (pixel - 127.5) / 127.5: [-1, 1]
        blob = cv2.dnn.blobFromImage(canvas, scalefactor=1 / 127.5, mean=(127.5, 127.5, 127.5))
        net.setInput(blob)
        logits, regressors = net.forward(_OUTPUTS)
        return logits, regressors

    return run


def _litert_runner() -> Any:
    """The same as `_opencv_runner`, by LiteRT's interpreter on one thread (NHWC input)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(MODEL_FILE), num_threads=1)
    with _quiet_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
        interpreter.allocate_tensors()
    (source,) = interpreter.get_input_details()
    outputs = {o["name"]: o["index"] for o in interpreter.get_output_details()}
    logits_at, regressors_at = (outputs[name] for name in _OUTPUTS)

    def run(canvas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        blob = (canvas[None].astype(np.float32) - 127.5) * np.float32(1 / 127.5)
        interpreter.set_tensor(source["index"], blob)
        interpreter.invoke()
        return interpreter.get_tensor(logits_at), interpreter.get_tensor(regressors_at)

    return run


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (C++ logging that Python cannot filter) for a moment."""
    if sys.stderr is not None:
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (a windowed process): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _sigmoid(logits: Any) -> np.ndarray:
    """The score per anchor; logits clipped as MediaPipe does (and so exp cannot overflow)."""
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(logits, dtype=np.float64), -100.0, 100.0)))
