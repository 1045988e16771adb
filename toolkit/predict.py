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
from toolkit.familiarity import UNFAMILIAR_NOTE, is_familiar, read_familiarity, why_unavailable
from toolkit.models import InputSpec
from toolkit.opinion import answer_proba
from toolkit.pipeline import DecodedImages, ImageProblem, load_image
from toolkit.runs import Run, load_run, read_run_config
from toolkit.scan import FileScanner, ScanOptions
from toolkit.scores import embedding_width, predict_and_embed, predict_proba, predicted_classes
from toolkit.text import escape_controls

#: The column of predict's scanned rows that holds the file's path as given.
FILE = "file"
#: What predict decodes: the formats validation can accept (it never sees the profile).
DECODABLE_FORMATS = frozenset({"jpeg", "png", "bmp", "gif", "webp", "tiff"})


@dataclass(frozen=True)
class Prediction:
    """The label and its probability for one file, or why there is none."""

    path: str
    label: str | None = None
    probability: float | None = None
    error: str | None = None
    #: the picture's distance from the training pictures in multiples of the fence (above 1:
    #: unlike them); None where the run has no familiarity score, or for an error
    novelty: float | None = None
    is_familiar: bool | None = None

    def line(self) -> str:
        """`path: label probability (familiar, novelty n)`, the unfamiliar note where it is
        not, or `path: error: why`; safe to print (controls escaped)."""
        if self.error is not None:
            return escape_controls(f"{self.path}: error: {self.error}")
        answer = f"{self.path}: {self.label} {self.probability:.3f}"
        if self.is_familiar:
            answer += f" (familiar, novelty {self.novelty:.2f})"
        elif self.novelty is not None:
            answer += f" (unfamiliar, novelty {self.novelty:.2f}: {UNFAMILIAR_NOTE})"
        return escape_controls(answer)

    def as_dict(self) -> dict[str, object]:
        """For --json."""
        return asdict(self)


def unavailable_note(folder: Path) -> str:
    """What predict says once when the run has no familiarity score."""
    why = why_unavailable(read_run_config(folder))
    return (
        f"familiarity: unavailable: {why}; the answers do not say whether a picture is like "
        "the training pictures"
    )


def predict_files(folder: Path, paths: list[Path], *, run: Run | None = None) -> list[Prediction]:
    """Predict every file in `paths` with the run in `folder`; order is kept. Each answer
    says whether the picture is like the training pictures, where the run has the score."""
    run = run or load_run(folder)
    familiarity = read_familiarity(run.folder, embedding_width(run))  # refused before any work
    scanner = FileScanner(Path("/"), ScanOptions(detect_faces=run.spec.crop_faces))
    arrays: list[np.ndarray] = []
    rows: list[dict[str, object]] = []
    slots: list[int] = []
    results: list[Prediction | None] = []
    for path in paths:
        try:
            with processing(path):  # a crash names the file it was on
                pixels, row = _read(scanner, Path(path), run)
            arrays.append(pixels)
            rows.append({**row, FILE: str(path)})
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
        novelty: list[float | None] = [None] * len(slots)
        familiar: list[bool | None] = [None] * len(slots)
        if familiarity is None:
            proba = predict_proba(run, batch)
        else:
            proba, embeddings = predict_and_embed(run, batch)
            found = familiarity.novelty(embeddings)
            # judged before rounding: a novelty of 1.0004 is unfamiliar, though it rounds to 1.0
            novelty, familiar = [round(float(n), 3) for n in found], is_familiar(found).tolist()
        # the stacked answer where the run has a second opinion (toolkit.opinion)
        proba, left, kept = answer_proba(run, pd.DataFrame(rows), batch, _read_rows, network=proba)
        if kept is not None:  # an extra view failed: the file's answer is its error
            failed = sorted(set(range(len(slots))) - set(kept.tolist()))
            for i, (path, why) in zip(failed, left.problems, strict=True):
                results[slots[i]] = Prediction(path, error=why)
            slots = [slots[i] for i in kept]
            novelty, familiar = [novelty[i] for i in kept], [familiar[i] for i in kept]
        ids, confidences = predicted_classes(proba)
        for slot, k, conf, far, known in zip(
            slots, ids, confidences, novelty, familiar, strict=True
        ):
            results[slot] = Prediction(
                str(paths[slot]),
                run.labels[k],
                round(float(conf), 6),
                novelty=far,
                is_familiar=known,
            )
    return [r for r in results if r is not None]


def _read_rows(rows: pd.DataFrame, spec: InputSpec) -> DecodedImages:
    """The files of predict's scanned rows (their FILE column) for another input `spec`,
    read as `_read` read them (the scan's sha256 and face box)."""
    arrays, kept, problems = [], [], []
    for i, (_, row) in enumerate(rows.iterrows()):
        try:
            with processing(row[FILE]):
                arrays.append(load_image(Path(str(row[FILE])), spec, row=row))
            kept.append(i)
        except ImageProblem as exc:
            problems.append((str(row[FILE]), str(exc)))
    return DecodedImages(
        images=np.stack(arrays) if arrays else np.zeros((0, *spec.shape), np.uint8),
        labels=np.zeros(len(arrays), dtype=np.int32),
        paths=[str(rows[FILE].iloc[i]) for i in kept],
        problems=problems,
        kept=kept,
    )


def _read(scanner: FileScanner, path: Path, run: Run) -> tuple[np.ndarray, dict[str, object]]:
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
    return load_image(full, run.spec, row=pd.Series(row)), row
