"""Model quality: our default model against the tutorial's, on pictures neither has seen.

The CI version trains both on one synthetic demo set and scores both on another drawn with
a different seed (different faces, positions, colours, formats), so it holds on a clean
clone. What each change does on the real sets is in docs/model-quality.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.demo import write_demo_data
from toolkit.evaluate import evaluate_run
from toolkit.profiles import load_profile
from toolkit.scan import scan_folder
from toolkit.train import TrainOptions, merge_manifests, train_model
from toolkit.validate import validate_manifest

pytestmark = pytest.mark.slow


def _train(data: Path, out: Path, model: str, epochs: int) -> None:
    checked = validate_manifest(scan_folder(data), load_profile("tutorial")).manifest
    checked["root"] = str(data.resolve())
    train_model(
        merge_manifests([checked]),
        out,
        TrainOptions(model=model, epochs=epochs),
        profile=load_profile("tutorial").as_dict(),
    )


def test_the_default_model_beats_the_tutorials_on_unseen_demo_faces(tmp_path: Path) -> None:
    # Measured on 120 unseen faces, same code and package versions, two 2-core machines:
    # seed 47.4% / default 64.9% on one; seed 47.4% (AUC 0.54) / default 52.6% (AUC 0.59) on
    # another (TensorFlow's CPU kernels differ by CPU, and one seeded run moves with them). So
    # the CI version asserts what issue 5 asks of it, that the default model beats the
    # tutorial's on the same data, not a fixed margin; the floors are on the real sets.
    train_set = write_demo_data(tmp_path / "train", n_per_class=200, seed=0).root
    unseen = write_demo_data(tmp_path / "unseen", n_per_class=60, seed=1).root
    _train(train_set, tmp_path / "seed", "seed", epochs=15)
    _train(train_set, tmp_path / "default", "default", epochs=40)
    seed = evaluate_run(tmp_path / "seed", [unseen])
    default = evaluate_run(tmp_path / "default", [unseen])
    assert seed["n_scored"] == default["n_scored"] > 100
    assert default["accuracy"] > seed["accuracy"]
    assert default["roc_auc"] > seed["roc_auc"] and default["roc_auc"] > 0.5
