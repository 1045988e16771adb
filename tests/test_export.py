"""`toolkit export`: a run's model served by plain TensorFlow or LiteRT, without the toolkit,
gives the probabilities `toolkit predict` gives; and a saved model.keras loads in Keras."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TINY_PROFILE, snapshot
from test_train import write_learnable_folder

import toolkit.predict
from toolkit.cli import main


def _python(code: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh Python process (no toolkit imported unless `code` imports it)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, cwd=cwd, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A one-epoch `default` model (custom layers, flip averaging, a temperature), both of
    its exports, and what `toolkit predict` answered for a few of its images, with the
    pixels predict fed the model."""
    base = tmp_path_factory.mktemp("export")
    data = write_learnable_folder(base / "data", n_per_class=8)
    profile = base / "tiny.toml"
    profile.write_text(TINY_PROFILE, encoding="utf-8")
    run = base / "run"
    # the network alone: what an export holds (a run with a second opinion says so, below)
    code = main(["train", str(data), "--model", "default", "--image-size", "32", "--epochs", "1",
                 "--profile", str(profile), "--out", str(run), "--batch-size", "4",
                 "--no-second-opinion"])  # fmt: skip
    assert code == 0
    before = snapshot(run)
    assert main(["export", str(run)]) == 0
    assert main(["export", str(run), "--format", "tflite", "--out", str(base / "lite")]) == 0
    images = sorted(data.rglob("*.png"))[::3]
    pixels: list[np.ndarray] = []
    read = toolkit.predict._read
    with pytest.MonkeyPatch.context() as patch:  # the very arrays predict gives the model

        def spy(*args: Any) -> tuple[np.ndarray, dict[str, object]]:
            found = read(*args)
            pixels.append(found[0])
            return found

        patch.setattr(toolkit.predict, "_read", spy)
        predictions = toolkit.predict.predict_files(run, images)
    np.save(base / "pixels.npy", np.stack(pixels))
    return {
        "run": run,
        "base": base,
        "predictions": predictions,
        "before": before,
        "savedmodel": run / "export" / "savedmodel",
        "tflite": base / "lite",
    }


SERVE_SAVEDMODEL = """
import json, sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1] + "/export/savedmodel")
out = model.signatures["serving_default"](images=tf.constant(np.load("pixels.npy")))
print(json.dumps([out["probabilities"].numpy().tolist(), "toolkit" in sys.modules]))
"""
SERVE_TFLITE = """
import json, sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter
runner = Interpreter(model_path="lite/model.tflite").get_signature_runner("serving_default")
out = runner(images=np.load("pixels.npy"))
print(json.dumps([out["probabilities"].tolist(), "toolkit" in sys.modules]))
"""


@pytest.mark.parametrize(
    "serve",
    [SERVE_SAVEDMODEL, SERVE_TFLITE],
    ids=["the SavedModel, served by TensorFlow alone", "the .tflite file, run by LiteRT alone"],
)
def test_an_export_serves_the_predictions_of_toolkit_predict_without_the_toolkit(
    exported: dict[str, Any], serve: str
) -> None:
    done = _python(serve, str(exported["run"]), cwd=exported["base"])
    assert done.returncode == 0, done.stderr[-3000:]
    probabilities, toolkit_imported = json.loads(done.stdout.splitlines()[-1])
    assert not toolkit_imported
    labels = (exported["tflite"] / "labels.txt").read_text(encoding="utf-8").split()
    assert labels == ["happy", "sad"]
    for row, predicted in zip(probabilities, exported["predictions"], strict=True):
        assert sum(row) == pytest.approx(1.0, abs=1e-5)
        assert labels[int(np.argmax(row))] == predicted.label
        assert max(row) == pytest.approx(predicted.probability, abs=1e-4)


def test_an_export_says_what_is_inside_and_what_the_caller_must_do(
    exported: dict[str, Any],
) -> None:
    for folder in (exported["savedmodel"], exported["tflite"]):
        described = json.loads((folder / "export.json").read_text(encoding="utf-8"))
        assert described["input"] == {"name": "images", "dtype": "uint8",
                                      "shape": [None, 32, 32, 3], "crop_faces": True,
                                      "face_margin": 0.3}  # fmt: skip
        assert described["output"]["shape"] == [None, 2]
        assert described["inside"]["scaling"] == "pixels / 255"
        assert described["inside"]["tta_flip"] is True
        assert (
            described["inside"]["temperature"]
            == json.loads((exported["run"] / "run.json").read_text(encoding="utf-8"))["temperature"]
        )
        steps = " ".join(described["caller_does"])
        assert "crop the largest face" in steps and "resize it to 32x32" in steps


def test_exporting_adds_only_the_export_folder_to_the_run(exported: dict[str, Any]) -> None:
    before = exported["before"]
    after = snapshot(exported["run"])
    assert {k: v for k, v in after.items() if not k.startswith("export/")} == before
    assert not [name for name in os.listdir(exported["run"]) if name.startswith(".")]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["{run}"], "already exists"),
        (["{run}", "--out", "{busy}"], "already exists"),
        (["{run}", "--out", "{busy}/notes.txt"], "is a regular file, not a folder"),
        (["{run}", "--out", "{data}/happy/export"], "lies inside the data folder"),
        (["{run}", "--format", "onnx", "--out", "{base}/new"], "unknown export format 'onnx'"),
        (["{base}/nowhere"], "not a run folder"),
    ],
    ids=[
        "the run's own export folder is there already",
        "a folder holding a user's file",
        "a user's file",
        "a folder inside the data the run was trained on",
        "a format the toolkit does not write",
        "a folder that holds no run",
    ],
)
def test_an_export_is_refused_before_tensorflow_and_replaces_nothing(
    exported: dict[str, Any], tmp_path: Path, args: list[str], expected: str
) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine", encoding="utf-8")
    folders = {"run": exported["run"], "busy": busy, "base": exported["base"],
               "data": exported["base"] / "data"}  # fmt: skip
    before = snapshot(exported["base"]), snapshot(busy)
    probe = (
        "import sys; from toolkit.cli import main; code = main(sys.argv[1:]);"
        "print(code, 'tensorflow' in sys.modules)"
    )
    done = _python(probe, "export", *(a.format(**folders) for a in args))
    assert done.stdout.split()[-2:] == ["2", "False"], done.stderr[-2000:]
    assert expected in done.stderr
    assert (snapshot(exported["base"]), snapshot(busy)) == before


def test_an_empty_folder_takes_an_export(exported: dict[str, Any], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", str(exported["run"]), "--out", str(empty)]) == 0
    assert {p.name for p in empty.iterdir()} >= {"saved_model.pb", "labels.txt", "export.json"}


LOAD_KERAS = """
import sys
{imports}
model = keras.models.load_model(sys.argv[1])
print(model.output_shape, "tensorflow" in sys.modules)
"""


@pytest.mark.parametrize(
    "imports",
    [
        "import keras\nimport toolkit.layers",
        "import keras\nimport toolkit",
        "import toolkit\nimport keras",
    ],
    ids=[
        "after importing toolkit.layers",
        "after importing toolkit, with keras already loaded",
        "after importing toolkit, then keras",
    ],
)
def test_model_keras_loads_in_plain_keras(exported: dict[str, Any], imports: str) -> None:
    done = _python(LOAD_KERAS.format(imports=imports), str(exported["run"] / "model.keras"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[-2] == "(None, 1) True"
