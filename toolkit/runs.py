"""The run folder: what `toolkit train` writes, and how every command reads it back.

One home for the folder's format (its file names and run.json's statuses), for writing it
(each file atomically, so a run killed at any moment leaves whole files) and for reading
it (run.json and the model file checked before use: a record read back is untrusted input,
refused whole with a RecordError, exit 2). Training writes here; evaluate, predict and a
resumed training read here; none of them reaches into another for the format.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit.errors import ManifestError, RecordError, processed_path
from toolkit.models import InputSpec
from toolkit.paths import (
    atomic_write,
    atomic_write_json,
    file_kind,
    inside_problem,
    open_regular,
    read_regular,
)

log = logging.getLogger(__name__)

#: The run's record: options, classes, input, versions, status, timings, files left out.
RUN_JSON = "run.json"
#: The trained model, loaded back in Keras' safe mode.
MODEL_FILE = "model.keras"
#: The scores on the test split (the validation split when the test split is empty).
METRICS_JSON = "metrics.json"
#: One row per epoch, appended to by a resumed run.
HISTORY_CSV = "history.csv"
#: Keras' backup (to resume from) and the best epoch's weights.
CHECKPOINTS = "checkpoints"
BEST_WEIGHTS = "best.weights.h5"
#: Decoded images of each split while training; removed when the run finishes.
CACHE = "cache"
#: The learning curves, confusion matrix and reliability diagram.
CURVES_PNG = "curves.png"
CONFUSION_PNG = "confusion_matrix.png"
RELIABILITY_PNG = "reliability.png"
#: The label audit: files whose label the model doubts, ranked, and a gallery of the top ones.
LABEL_ISSUES_CSV = "label_issues.csv"
LABEL_ISSUES_PNG = "label_issues.png"
#: Files far from every class in the same embeddings (not faces, logos, collages), a gallery.
OUTLIERS_CSV = "outliers.csv"
OUTLIERS_PNG = "outliers.png"
#: The networks `toolkit audit --networks K` trains, one run folder each (fold-1 ... fold-K):
#: kept, so an interrupted audit resumes and each network can be looked at.
CROSS_FIT = "cross-fit"
#: The familiarity score: normalised training embeddings and the fence (toolkit.familiarity).
FAMILIARITY_NPZ = "familiarity.npz"
#: The second opinion: the pretrained features' regression and the stack (toolkit.opinion).
OPINION_NPZ = "second_opinion.npz"

#: run.json's `status`: written "training", then "finished", or "failed" with the error.
TRAINING = "training"
FINISHED = "finished"
FAILED = "failed"

#: The largest input side a run.json may ask for: a bigger one is an edit, not a model.
MAX_INPUT_PX = 4096


@dataclass
class Run:
    """A finished training run, loaded for scoring."""

    folder: Path
    model: Any
    labels: list[str]
    spec: InputSpec
    config: dict[str, Any]

    @property
    def binary(self) -> bool:
        """Two classes: one sigmoid output, the probability of labels[1]."""
        return len(self.labels) == 2


# ----------------------------------------------------------------------------- reading


def read_run_config(folder: Path) -> dict[str, Any]:
    """run.json of a run folder, checked before use: a ManifestError when there is none, a
    RecordError (exit 2) naming the first key that no training run writes."""
    path = Path(folder) / RUN_JSON
    if not os.path.lexists(path):
        raise ManifestError(path, "not a run folder (no run.json; train one with `toolkit train`)")
    try:
        config = json.loads(read_regular(path).decode("utf-8"))
    except (OSError, ValueError) as exc:  # a FIFO or a folder, not UTF-8, not JSON
        raise RecordError(path, "file", f"unreadable run record: {exc}") from None
    if not isinstance(config, dict):
        raise RecordError(path, "file", f"expected an object, got {type(config).__name__}")
    for key, problem in _run_config_problems(config):
        raise RecordError(path, key, problem)
    return config


def _run_config_problems(config: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(key, why) for each value of run.json the commands that read it back would trust."""
    labels = config.get("labels")
    if (
        not isinstance(labels, list)
        or len(labels) < 2
        or not all(isinstance(x, str) and x and "\x00" not in x for x in labels)
        or len(set(labels)) != len(labels)
    ):
        yield "labels", f"expected two or more distinct class names, got {labels!r:.80}"
    spec = config.get("input")
    fields = {f.name for f in dataclasses.fields(InputSpec)}
    if not isinstance(spec, dict) or not set(spec) <= fields:
        yield "input", f"expected an object with keys among {sorted(fields)}, got {spec!r:.80}"
        return
    if not _is_int(spec.get("size", 1)) or not 1 <= spec.get("size", 1) <= MAX_INPUT_PX:
        yield "input.size", f"expected a whole number 1-{MAX_INPUT_PX}, got {spec['size']!r:.40}"
    if spec.get("channels", 3) not in (1, 3) or isinstance(spec.get("channels"), bool):
        yield "input.channels", f"expected 1 or 3, got {spec['channels']!r:.40}"
    if not isinstance(spec.get("crop_faces", False), bool):
        yield "input.crop_faces", f"expected true or false, got {spec['crop_faces']!r:.40}"
    margin = spec.get("face_margin", 0.0)
    if not _is_number(margin) or not 0 <= margin <= 10:
        yield "input.face_margin", f"expected a number 0-10, got {margin!r:.40}"
    temperature = config.get("temperature")
    if temperature is not None and (not _is_number(temperature) or not temperature > 0):
        yield "temperature", f"expected a number above 0, got {temperature!r:.40}"
    model = config.get("model", {})
    if not isinstance(model, dict) or not isinstance(model.get("tta_flip", False), bool):
        yield "model", f"expected an object with tta_flip true or false, got {model!r:.80}"
    profile = config.get("profile", {})
    spec_text = profile.get("spec", "") if isinstance(profile, dict) else None
    if not isinstance(spec_text, str) or "\x00" in spec_text:
        yield "profile", f"expected an object with the profile's spec (text), got {profile!r:.80}"
    if not isinstance(config.get("status", ""), str):
        yield "status", f"expected text, got {config['status']!r:.40}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def model_file(folder: Path) -> Path:
    """The run's model file: a regular file inside the run folder (not a link out of it, nor
    a FIFO Keras would wait on), or a ManifestError / RecordError saying why not."""
    model_path = Path(folder) / MODEL_FILE
    if not os.path.lexists(model_path):
        raise ManifestError(model_path, "the run has no model (did training finish?)")
    why = inside_problem(folder, MODEL_FILE)
    if why is not None:
        raise RecordError(model_path, MODEL_FILE, why)
    try:
        with open_regular(model_path):
            pass
    except OSError as exc:
        raise RecordError(model_path, MODEL_FILE, exc.strerror or str(exc)) from None
    return model_path


def check_run_folder(folder: Path) -> dict[str, Any]:
    """run.json, checked, of a run folder that holds its model file: what `load_run` checks
    before TensorFlow starts, so a command given a wrong folder is refused at once."""
    config = read_run_config(folder)
    model_file(folder)
    return config


def load_model(path: Path) -> Any:
    """A saved model in Keras' safe mode: no code from the file runs."""
    import keras

    import toolkit.layers  # noqa: F401  (registers the default model's layers)

    return keras.models.load_model(path, compile=False, safe_mode=True)


def load_run(folder: Path) -> Run:
    """Load a run's model in Keras' safe mode (no code from the file runs) and its config."""
    folder = Path(folder)
    config = check_run_folder(folder)  # refused before TensorFlow loads
    model_path = folder / MODEL_FILE
    try:
        model = load_model(model_path)
    except Exception as exc:
        raise ManifestError(model_path, f"cannot load the model safely: {exc}") from exc
    spec = InputSpec(**config["input"])
    labels = list(config["labels"])
    # run.json must describe this model: an edited one would fail later, mid-prediction
    outputs, wanted = model.output_shape[-1], 1 if len(labels) == 2 else len(labels)
    if outputs != wanted:
        raise RecordError(folder / RUN_JSON, "labels", f"{len(labels)} classes for a model "
                          f"with {outputs} output(s)")  # fmt: skip
    shape = tuple(model.input_shape[1:])
    if any(d is not None and d != s for d, s in zip(shape, spec.shape, strict=False)):
        raise RecordError(folder / RUN_JSON, "input", f"{spec.shape} for a model taking {shape}")
    return Run(folder, model, labels, spec, config)


def write_run_arrays(folder: Path, name: str, **arrays: Any) -> Path:
    """The run folder's npz `name` (read back by `read_run_arrays`), written whole or not at
    all."""
    import numpy as np

    target = Path(folder) / name
    atomic_write(target, lambda fh: np.savez(fh, **arrays), binary=True)
    return target


def read_run_arrays(folder: Path, name: str, keys: set[str]) -> dict[str, Any] | None:
    """The numpy arrays of the run folder's npz `name` (familiarity.npz, second_opinion.npz),
    exactly `keys`; None when the run has no such file. A file inside the folder only, a
    zip of plain arrays (nothing unpickled), or a RecordError (exit 2)."""
    import io
    import zipfile

    import numpy as np

    path = Path(folder) / name
    if not os.path.lexists(path):
        return None
    why = inside_problem(folder, name)
    if why is not None:
        raise RecordError(path, name, why)
    try:
        with np.load(io.BytesIO(read_regular(path)), allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        # not a zip, a truncated one, a member not an array, pickled objects
        raise RecordError(path, "file", f"not a {name}: {exc}") from None
    if set(arrays) != keys:
        raise RecordError(path, "file", f"expected the arrays {sorted(keys)}, got "
                          f"{sorted(arrays)[:10]}")  # fmt: skip
    return arrays


def check_resumable_files(folder: Path) -> None:
    """A resumed run reads history.csv and every file below checkpoints/: each must be a
    regular file or folder of the run itself (a FIFO would block Keras for ever, a link
    could lead it anywhere); otherwise a RecordError, before anything is read."""
    entries = [folder / HISTORY_CSV, folder / CHECKPOINTS]
    for below, dirs, files in os.walk(folder / CHECKPOINTS):  # links are listed, not followed
        entries += [Path(below) / name for name in (*dirs, *files)]
    for path in entries:
        if not os.path.lexists(path):
            continue
        mode = path.lstat().st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise RecordError(
                path, path.name, f"{file_kind(mode)}, not what training writes; nothing resumed"
            )


def read_history(folder: Path) -> dict[str, list[float]]:
    """history.csv as lists per column, `epoch` (Keras' numbering, from 0) included; a
    resumed run's repeated epochs keep the last."""
    history_csv = folder / HISTORY_CSV
    if not history_csv.exists() or history_csv.stat().st_size == 0:
        return {}
    frame = pd.read_csv(history_csv)
    if "epoch" in frame.columns:
        deduplicated = frame.drop_duplicates("epoch", keep="last").sort_values("epoch")
        if len(deduplicated) != len(frame):  # a resumed run repeated epochs: keep one of each
            frame = deduplicated
            atomic_write(history_csv, lambda fh: frame.to_csv(fh, index=False))
    return {c: frame[c].astype(int if c == "epoch" else float).tolist() for c in frame.columns}


# ----------------------------------------------------------------------------- writing


def write_model(model: Any, folder: Path) -> Path:
    """model.keras via a temporary file renamed into place: never half a model."""
    target = folder / MODEL_FILE
    tmp = target.with_name(f".{target.stem}.tmp{os.getpid()}.keras")
    try:
        model.save(str(tmp))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def record_finished(folder: Path, record: dict[str, Any], **facts: Any) -> None:
    """Write run.json as finished, with the finishing time and then `facts` in their order."""
    record.update(
        status=FINISHED, finished_at=datetime.now(UTC).isoformat(timespec="seconds"), **facts
    )
    atomic_write_json(folder / RUN_JSON, record)


@contextmanager
def failure_recorded(folder: Path) -> Iterator[None]:
    """On an exception, mark the run.json in `folder` (if written yet) "failed" with the
    error's line, so a dead run does not read as one still training."""
    try:
        yield
    except Exception as exc:
        record_path = folder / RUN_JSON
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            error = f"{type(exc).__name__}: {exc}"
            if (where := processed_path(exc)) is not None:
                error += f" (while processing {where})"
            record.update(
                status=FAILED,
                error=error,
                failed_at=datetime.now(UTC).isoformat(timespec="seconds"),
            )
            atomic_write_json(record_path, record)
        except (OSError, ValueError, AttributeError) as unrecorded:  # absent, or unreadable
            log.debug("run.json not marked failed: %s", unrecorded)
        raise
