"""Where to fit the temperature: on the whole validation split (what `toolkit train` does) or
on its web pictures alone, scored on each leave-one-source-out run's held-out source and on
FER2013 test. Inference only, on runs `benchmarks/loso.py` trained (docs/model-quality.md,
"A temperature fitted on the web pictures alone"):

    python -m benchmarks.loso_temperature --loso runs/loso --run renotte-default-e45-s0 \\
        --run mratashnejad-default-e45-s0 --json temperature.json
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.loso import FER_TEST, print_figures, run_rows, runs_parser

#: The validation split's rows from these data folders count as faces, not web pictures.
FACE_ROOTS = (Path(FER_TEST).parent.name,)


def raw_proba(run: Any, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The run's uncalibrated probabilities of `rows` and their labels."""
    from toolkit.pipeline import decode_rows
    from toolkit.scores import predict_proba

    known = rows[rows["label"].isin(run.labels)]
    decoded = decode_rows(known, run.spec, run.labels)
    return predict_proba(run, decoded, calibrated=False), decoded.labels


def is_web(rows: pd.DataFrame) -> np.ndarray:
    """Rows whose data folder is not one of FACE_ROOTS."""
    parts = rows["root"].astype(str).map(lambda root: Path(root).parts)
    return np.array([not any(face in p for face in FACE_ROOTS) for p in parts], dtype=bool)


def compare(loso: Path, name: str) -> dict[str, Any]:
    """The two temperatures of one run, and the ECE each gives its held-out source and
    FER2013 test (accuracy too: a temperature never changes a two-class answer)."""
    from toolkit.runs import load_run
    from toolkit.scores import apply_temperature, fit_temperature, score_predictions

    run = load_run(loso / name)
    accepted, unseen, fer = run_rows(loso, name)
    validation = accepted[accepted["split"] == "validation"]
    p_val, y_val = raw_proba(run, validation)
    web = is_web(validation)
    if len(y_val) != len(validation) or not web.any():
        raise RuntimeError(f"{name}: validation files left out, or no web picture among them")
    temperatures = {
        "all": fit_temperature(y_val, p_val),
        "web": fit_temperature(y_val[web], p_val[web]),
    }
    scored = {"source": raw_proba(run, unseen), "fer_test": raw_proba(run, fer)}
    out: dict[str, Any] = {"run": name, "n_validation": len(y_val), "n_web": int(web.sum())}
    for fitted_on, temperature in temperatures.items():
        out[f"temperature_{fitted_on}"] = round(temperature, 4)
        for where, (proba, labels) in scored.items():
            got = score_predictions(labels, apply_temperature(proba, temperature), run.labels)
            out[f"{where}_ece_{fitted_on}"] = round(got["expected_calibration_error"], 4)
            out[f"{where}_accuracy_{fitted_on}"] = round(got["accuracy"], 4)
    return out


def main(argv: list[str] | None = None) -> int:
    args = runs_parser(__doc__).parse_args(argv)
    print_figures([compare(args.loso, name) for name in args.run], args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
