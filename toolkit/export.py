"""Export: a run's model as a TensorFlow SavedModel or a LiteRT (.tflite) file that serves
without the toolkit.

What `toolkit predict` does around the Keras model travels inside the exported graph, so a
plain TensorFlow or LiteRT user gets the same probabilities from the same pixels: the
scaling of uint8 pixels to [0, 1], the mirrored second look of a model trained with
`tta_flip`, and the temperature fitted after training. The output is one probability per
class, in the order of `labels.txt`. What stays outside, because it is image decoding rather
than arithmetic, is written into `export.json` for the caller: decode the file, turn it
upright, crop the face (models that crop faces), convert to RGB (or grey) and resize to the
square input.

An export is written into a new folder (by default `export/<format>` inside the run folder,
which is the toolkit's own), staged under a temporary name and renamed into place whole.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.errors import OutputError, UsageError
from toolkit.outputs import check_output
from toolkit.paths import atomic_write_json, atomic_write_text
from toolkit.runs import OPINION_NPZ, Run, check_run_folder, load_run

#: The formats `toolkit export` writes, and the folder each goes to inside the run folder.
FORMATS = ("savedmodel", "tflite")
EXPORT_DIR = "export"
#: The files of an export folder besides the model itself.
LABELS_TXT = "labels.txt"
EXPORT_JSON = "export.json"
TFLITE_FILE = "model.tflite"
#: The SavedModel's signature and its output's name.
SIGNATURE = "serving_default"
OUTPUT_NAME = "probabilities"
#: Probabilities are kept this far from 0 and 1 before the temperature divides their logits
#: (toolkit.scores does the same in float64).
_EPS = 1e-7


@dataclass(frozen=True)
class Export:
    """A written export: where, in which format, and what its model takes and returns."""

    path: Path
    format: str
    labels: list[str]
    input_shape: tuple[int, int, int]
    crop_faces: bool
    #: what the export leaves out that `toolkit predict` does (None: nothing)
    left_out: str | None = None


def export_target(folder: Path, fmt: str, out: Path | None = None) -> Path:
    """The folder an export of the run in `folder` goes to, checked before TensorFlow starts:
    the run must be whole, the format known, and the folder new (or empty), outside every
    data folder the run was trained on."""
    config = check_run_folder(folder)
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    target = Path(out) if out is not None else Path(folder) / EXPORT_DIR / fmt
    roots = [r for r in config.get("roots") or [] if isinstance(r, str)]
    check_output(target, roots)
    if os.path.lexists(target) and not (target.is_dir() and not any(target.iterdir())):
        raise OutputError(
            target, "already exists; an export is written only into a new or empty folder"
        )
    return target


def export_run(folder: Path, fmt: str, out: Path | None = None) -> Export:
    """Write the run's model in `fmt` (savedmodel or tflite), preprocessing and calibration
    inside, with labels.txt and export.json beside it."""
    target = export_target(folder, fmt, out)
    run = load_run(folder)
    staging = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        saved = staging if fmt == "savedmodel" else staging / "savedmodel"
        _write_savedmodel(run, saved)
        if fmt == "tflite":
            (staging / TFLITE_FILE).write_bytes(_tflite_bytes(saved))
            shutil.rmtree(saved)
        atomic_write_text(staging / LABELS_TXT, "".join(f"{label}\n" for label in run.labels))
        atomic_write_json(staging / EXPORT_JSON, _description(run, fmt))
        if target.is_dir():
            target.rmdir()  # empty, checked above
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Export(
        target, fmt, list(run.labels), run.spec.shape, run.spec.crop_faces, _left_out(run)
    )


def _left_out(run: Run) -> str | None:
    """What a run's export lacks: the second opinion (toolkit.opinion) needs two more views of
    each picture and a second network, so the export is the run's network alone."""
    if not os.path.lexists(Path(run.folder) / OPINION_NPZ):
        return None
    return (
        f"the second opinion ({OPINION_NPZ}): the export is the network alone, calibrated by "
        "its temperature; toolkit predict and evaluate stack it with a pretrained network's "
        "opinion, which scored better on unseen web sources (docs/model-quality.md)"
    )


def serving_function(run: Run) -> Any:
    """uint8 images (n, size, size, channels) -> probabilities (n, classes), as toolkit's
    own predict computes them: pixels / 255, the mirrored look averaged in (`tta_flip`),
    the temperature applied to the logits."""
    import tensorflow as tf

    model = run.model
    tta = bool(run.config.get("model", {}).get("tta_flip"))
    temperature = run.config.get("temperature")

    def probabilities(images: Any) -> Any:
        x = tf.cast(images, tf.float32) / 255.0
        p = model(x, training=False)
        if tta:
            p = (p + model(tf.image.flip_left_right(x), training=False)) / 2.0
        if run.binary:
            p = p[:, 0]
            if temperature is not None:
                p = tf.clip_by_value(p, _EPS, 1.0 - _EPS)
                p = tf.sigmoid(tf.math.log(p / (1.0 - p)) / float(temperature))
            return tf.stack([1.0 - p, p], axis=1)
        if temperature is not None:
            p = tf.nn.softmax(tf.math.log(tf.clip_by_value(p, _EPS, 1.0)) / float(temperature))
        return p

    return probabilities


def _write_savedmodel(run: Run, path: Path) -> None:
    import keras
    import tensorflow as tf

    probabilities = serving_function(run)
    spec = tf.TensorSpec((None, *run.spec.shape), tf.uint8, name="images")

    def serve(images: Any) -> dict[str, Any]:
        return {OUTPUT_NAME: probabilities(images)}

    archive = keras.export.ExportArchive()
    archive.track(run.model)
    archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=[spec])
    archive.write_out(str(path), verbose=False)


def _tflite_bytes(savedmodel: Path) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(savedmodel), [SIGNATURE])
    return bytes(converter.convert())


def _description(run: Run, fmt: str) -> dict[str, Any]:
    """export.json: what the exported model takes and returns, what it does inside, and
    what the caller must still do to an image file first."""
    spec = run.spec
    colour = "grey (PIL mode L)" if spec.channels == 1 else "RGB"
    before = [
        "decode the image file (the first frame of an animation)",
        "turn it upright as its EXIF orientation says",
    ]
    if spec.crop_faces:
        before.append(
            f"crop the largest face found (BlazeFace), grown by {spec.face_margin} of the box "
            "per side and made square; the whole image where no face is found"
        )
    before += [
        f"convert it to {colour}",
        f"resize it to {spec.size}x{spec.size} px (toolkit averages boxes of pixels down)",
    ]
    return {
        "format": fmt,
        "run": str(run.folder),
        "labels": list(run.labels),
        "input": {
            "name": "images",
            "dtype": "uint8",
            "shape": [None, *spec.shape],
            "crop_faces": spec.crop_faces,
            "face_margin": spec.face_margin,
        },
        "output": {
            "name": OUTPUT_NAME,
            "dtype": "float32",
            "shape": [None, len(run.labels)],
            "means": "the probability of each class, in the order of labels",
        },
        "inside": {
            "scaling": "pixels / 255",
            "tta_flip": bool(run.config.get("model", {}).get("tta_flip")),
            "temperature": run.config.get("temperature"),
        },
        "caller_does": before,
        "not_inside": _left_out(run),
    }
