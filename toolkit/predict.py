"""Label single images with a trained run: one prediction, or one error, per file.

Each file is read the way the scan reads it (content sniffing, the decompression-bomb
bound, the face box), so a picture gets the same preprocessing it would get in training.
A file that cannot be used gets its own error; the others are still predicted.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit.errors import processing
from toolkit.pipeline import DecodedImages, ImageProblem, load_image
from toolkit.runs import Run, load_run
from toolkit.scan import FileScanner, ScanOptions
from toolkit.scores import predict_proba, predicted_classes
from toolkit.text import escape_controls

#: What predict decodes: the formats validation can accept (it never sees the profile).
DECODABLE_FORMATS = frozenset({"jpeg", "png", "bmp", "gif", "webp", "tiff"})


@dataclass(frozen=True)
class Prediction:
    """The label and its probability for one file, or why there is none."""

    path: str
    label: str | None = None
    probability: float | None = None
    error: str | None = None

    def line(self) -> str:
        """`path: label probability` or `path: error: why`, safe to print (controls escaped)."""
        if self.error is not None:
            return escape_controls(f"{self.path}: error: {self.error}")
        return escape_controls(f"{self.path}: {self.label} {self.probability:.3f}")

    def as_dict(self) -> dict[str, object]:
        """For --json."""
        return asdict(self)


def predict_files(folder: Path, paths: list[Path], *, run: Run | None = None) -> list[Prediction]:
    """Predict every file in `paths` with the run in `folder`; order is kept."""
    run = run or load_run(folder)
    scanner = FileScanner(Path("/"), ScanOptions(detect_faces=run.spec.crop_faces))
    arrays: list[np.ndarray] = []
    slots: list[int] = []
    results: list[Prediction | None] = []
    for path in paths:
        try:
            with processing(path):  # a crash names the file it was on
                arrays.append(_read(scanner, Path(path), run))
            slots.append(len(results))
            results.append(None)
        except ImageProblem as exc:
            results.append(Prediction(str(path), error=str(exc)))
    if arrays:
        batch = DecodedImages(
            images=np.stack(arrays),
            labels=np.zeros(len(arrays), dtype=np.int32),
            paths=[str(paths[i]) for i in slots],
        )
        ids, confidences = predicted_classes(predict_proba(run, batch))
        for slot, k, conf in zip(slots, ids, confidences, strict=True):
            results[slot] = Prediction(str(paths[slot]), run.labels[k], round(float(conf), 6))
    return [r for r in results if r is not None]


def _read(scanner: FileScanner, path: Path, run: Run) -> np.ndarray:
    full = Path(os.path.abspath(path))  # not resolve(): it raises on a symlink loop
    if not os.path.lexists(full):
        raise ImageProblem("no such file")
    row = scanner.scan(str(full).lstrip("/"))
    if not row["is_readable"]:
        raise ImageProblem(str(row["read_error"] or "cannot read"))
    fmt = row["detected_format"] or "unknown"
    if fmt not in DECODABLE_FORMATS:
        raise ImageProblem(f"unsupported content: {fmt} (expected an image: jpeg, png, bmp ...)")
    if not row["is_decodable"]:
        raise ImageProblem(f"cannot decode: {row['decode_error']}")
    return load_image(full, run.spec, row=pd.Series(row))
