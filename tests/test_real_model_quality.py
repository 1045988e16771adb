"""Issue 5 on the real sets: the `default` model trained from ../shared/datasets, scored on
photos it never saw. Its own tox env (`tox -e model-quality`, 14-20 minutes on 2 cores),
not the default run nor CI's: CI runs the smaller version in test_model_quality.py (both
models on the same 1,200 FER2013 train faces, scored on 600 test faces).

The run trains on mratashnejad + pranjalameta (scraped profile) + FER2013 train
(small-faces) and is scored on two roots it never saw: renotte, a whole web set held out
(never a random split of one), and FER2013 test. The command is the README's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import shared_dataset

from toolkit.cli import main
from toolkit.evaluate import evaluate_run

pytestmark = pytest.mark.quality

#: Epochs of the documented run: 45 trains in 14-16 minutes on the 2-core Xeon VM, inside
#: the issue's 20; the best epoch came at 36-40 with seeds 0-2 (docs/model-quality.md, runs
#: 44-46; at 25 epochs FER2013 test sat about 0.8 points lower, runs 26-28 against 39-41).
EPOCHS = 45
#: What the tutorial's pipeline scored (the issue's measurements): ours must beat it clearly.
TUTORIAL = {"web": 0.62, "fer": 0.43}
#: The issue's targets, asserted as they stand. Measured with seeds 0-2 (runs 44-46, AdamW):
#: renotte 87.6-89.3%, FER2013 test 92.29-92.52% (2,788-2,795 of 3,021 faces; 92% is 2,780),
#: so FER2013 has 8-15 faces of margin: another CPU's arithmetic may cost that (the same
#: seed scored renotte 2 points apart on two CPUs, runs 22 and 25).
FLOORS = {"web": 0.85, "fer": 0.92}


def command(out: Path) -> list[str]:
    """`toolkit train` as the README documents it, for the shared sets."""
    data = [shared_dataset(n) for n in ("mratashnejad", "pranjalameta", "fer2013/train")]
    return [
        "train", *map(str, data),
        "--profile", "scraped", "--profile", "scraped", "--profile", "small-faces",
        "--model", "default", "--epochs", str(EPOCHS), "--out", str(out),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("quality") / "default"
    args = command(out)
    start = time.perf_counter()
    assert main(args) == 0
    minutes = (time.perf_counter() - start) / 60
    web = evaluate_run(out, [shared_dataset("renotte")], profile="scraped")
    fer = evaluate_run(out, [shared_dataset("fer2013/test")], profile="small-faces")
    summary = {
        "train_minutes": round(minutes, 1),
        "web": web["accuracy"],
        "web_by_face": web.get("by_face"),
        "web_ece": web["expected_calibration_error"],
        "fer": fer["accuracy"],
        "fer_ece": fer["expected_calibration_error"],
    }
    print(f"\nmodel quality (issue 5): {json.dumps(summary)}")
    return {"run": out, "web": web, "fer": fer}


def test_the_default_model_beats_the_tutorial_on_sets_it_never_saw(scored: dict) -> None:
    web, fer = scored["web"], scored["fer"]
    assert web["n_scored"] >= 280 and fer["n_scored"] >= 3000
    assert web["accuracy"] >= FLOORS["web"] > TUTORIAL["web"]  # the 85%
    assert fer["accuracy"] >= FLOORS["fer"] > TUTORIAL["fer"]  # the 92%
    assert web["roc_auc"] > 0.85 and fer["roc_auc"] > 0.93


def test_its_probabilities_are_calibrated(scored: dict) -> None:
    run = scored["run"]
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["expected_calibration_error"] < 0.05
    assert (run / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert scored["web"]["expected_calibration_error"] < 0.1
    assert scored["fer"]["expected_calibration_error"] < 0.05
