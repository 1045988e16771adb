"""Training, evaluation and prediction end to end, on tiny generated images (seconds)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_PROFILE, snapshot
from corpus import write_image
from PIL import Image

from toolkit.cli import main
from toolkit.errors import TrainingError, UsageError
from toolkit.evaluate import accuracy_by_face
from toolkit.manifest import read_manifest
from toolkit.models import build_cnn, build_seed_cnn, get_recipe
from toolkit.scores import predicted_ids
from toolkit.train import TrainOptions, class_weights, diagnose_fit, train_model

EPOCHS = 12


def write_learnable_folder(root: Path, n_per_class: int = 16, classes: int = 2) -> Path:
    """Classes a tiny CNN tells apart in a few epochs: bright, dark (and mid) images."""
    rng = np.random.default_rng(0)
    names = ["happy", "sad", "neutral"][:classes]
    levels = [200, 50, 125][:classes]
    for name, level in zip(names, levels, strict=True):
        for i in range(n_per_class):
            pixels = np.clip(rng.normal(level, 25, size=(8, 8, 3)), 0, 255).astype(np.uint8)
            img = Image.fromarray(pixels).resize((32, 32), Image.Resampling.BICUBIC)
            (root / name).mkdir(parents=True, exist_ok=True)
            img.save(root / name / f"{name}_{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One seed-model run on a learnable folder, trained through the CLI."""
    base = tmp_path_factory.mktemp("train")
    data = write_learnable_folder(base / "data")
    profile = base / "tiny.toml"
    profile.write_text(TINY_PROFILE, encoding="utf-8")
    before = snapshot(data)
    run = base / "run"
    code = main(
        ["train", str(data), "--model", "seed", "--image-size", "32", "--epochs", str(EPOCHS),
         "--profile", str(profile), "--out", str(run), "--batch-size", "4"]
    )  # fmt: skip
    assert code == 0
    return {"data": data, "run": run, "profile": profile, "base": base, "before": before}


def test_the_run_folder_holds_everything_to_trust_and_repeat_the_run(
    trained: dict[str, Path],
) -> None:
    run = trained["run"]
    for name in ("model.keras", "history.csv", "metrics.json", "run.json", "manifest.parquet",
                 "curves.png", "confusion_matrix.png", "reliability.png"):  # fmt: skip
        assert (run / name).is_file(), name
    assert (run / "checkpoints" / "best.weights.h5").is_file()
    config = json.loads((run / "run.json").read_text())
    assert config["status"] == "finished"
    assert config["labels"] == ["happy", "sad"]
    assert config["options"]["seed"] == 0 and config["model"]["name"] == "seed"
    assert config["input"] == {"size": 32, "channels": 3, "crop_faces": False, "face_margin": 0.3}
    assert config["profile"]["name"] == "tiny"
    assert {"tensorflow", "keras", "numpy", "toolkit", "python"} <= set(config["versions"])
    assert config["command"].startswith("toolkit train")
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == list(range(EPOCHS))
    assert {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(history.columns)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test"
    assert metrics["n_scored"] == sum(config["split_counts"]["test"].values()) > 0
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "confusion_matrix",
                "per_class", "expected_calibration_error", "diagnosis"):  # fmt: skip
        assert key in metrics
    assert metrics["diagnosis"].split(":")[0] in {"underfitting", "overfitting", "good fit"}
    for png in ("curves.png", "confusion_matrix.png", "reliability.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_run_manifest_has_a_leak_free_split(trained: dict[str, Path]) -> None:
    manifest = read_manifest(trained["run"])
    accepted = manifest[manifest["status"] == "accepted"]
    assert set(accepted["split"]) == {"train", "validation", "test"}
    assert manifest.loc[manifest["status"] != "accepted", "split"].isna().all()
    train = accepted[accepted["split"] == "train"]
    test = accepted[accepted["split"] == "test"]
    assert not set(train["sha256"]) & set(test["sha256"])
    train_hashes = np.array([int(h, 16) for h in train["phash"]], dtype=np.uint64)
    for h in test["phash"]:
        nearest = np.bitwise_count(train_hashes ^ np.uint64(int(h, 16))).min()
        assert nearest > 4  # no near duplicate of a test image was trained on


def test_training_leaves_the_users_files_alone(trained: dict[str, Path]) -> None:
    assert snapshot(trained["data"]) == trained["before"]


def test_evaluate_prints_the_scores_as_json(
    trained: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["evaluate", str(trained["run"]), str(trained["data"]), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    for key in ("n_scored", "n_rejected", "accuracy", "precision", "recall", "f1", "roc_auc",
                "confusion_matrix", "labels"):  # fmt: skip
        assert key in scores
    assert scores["n_scored"] == 32 and scores["n_rejected"] == 0
    assert scores["labels"] == ["happy", "sad"]
    assert np.sum(scores["confusion_matrix"]) == 32
    assert scores["accuracy"] > 0.8  # bright vs dark is learnable in a few epochs
    assert snapshot(trained["data"]) == trained["before"]


def test_evaluate_prints_a_table_without_json(
    trained: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(trained["run"]), str(trained["data"])]) == 0
    out = capsys.readouterr().out
    assert "scored 32 files" in out and "accuracy" in out and "roc_auc" in out


def test_evaluate_needs_labels_the_model_knows(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    for label in ("cats", "dogs"):
        for i in range(3):
            write_image(other / label / f"{i}.png", fmt="PNG", seed=i + len(label))
    code = main(["evaluate", str(trained["run"]), str(other), "--profile", str(trained["profile"])])
    assert code == 2
    assert "no accepted file has a label the model knows" in capsys.readouterr().err


def test_predict_labels_good_files_and_names_each_bad_one(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = trained["data"]
    bright, dark = data / "happy" / "happy_000.png", data / "sad" / "sad_000.png"
    (tmp_path / "notes.jpg").write_text("not a picture")
    capsys.readouterr()
    code = main(["predict", str(trained["run"]), str(bright), str(tmp_path / "notes.jpg"),
                 str(dark), str(tmp_path / "missing.png")])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 1
    lines = out.splitlines()
    familiar = r" \((un)?familiar, novelty \d+\.\d\d(: .+)?\)"  # toolkit.familiarity
    assert re.fullmatch(rf"{re.escape(str(bright))}: happy (0\.\d+|1\.000){familiar}", lines[0])
    assert re.fullmatch(rf"{re.escape(str(dark))}: sad (0\.\d+|1\.000){familiar}", lines[1])
    assert f"{tmp_path / 'notes.jpg'}: error: unsupported content: text" in err
    assert f"{tmp_path / 'missing.png'}: error: no such file" in err


def test_predict_json_keeps_order_and_exits_zero_when_all_succeed(
    trained: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    files = sorted((trained["data"] / "sad").iterdir())[:3]
    capsys.readouterr()
    assert main(["predict", str(trained["run"]), *map(str, files), "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert [i["path"] for i in items] == [str(f) for f in files]
    assert all(i["label"] == "sad" and 0.5 <= i["probability"] <= 1 for i in items)
    assert all(i["error"] is None for i in items)


def test_predict_and_evaluate_choose_the_same_class_at_a_tie(
    trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import toolkit.predict
    from toolkit.scores import embed

    assert predicted_ids(np.array([0.5, 0.50001, 0.2])).tolist() == [0, 1, 0]
    tie = np.array([0.5])
    monkeypatch.setattr(toolkit.predict, "predict_proba", lambda run, batch: tie)
    monkeypatch.setattr(
        toolkit.predict, "predict_and_embed", lambda run, batch: (tie, embed(run, batch))
    )
    [answer] = toolkit.predict.predict_files(
        trained["run"], [trained["data"] / "sad" / "sad_000.png"]
    )
    assert (answer.label, answer.probability) == ("happy", 0.5)  # labels[0], as evaluate


def test_a_second_train_into_a_finished_run_is_refused(
    trained: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", str(trained["data"]), "--out", str(trained["run"]), "--model", "seed"])
    assert code == 2
    assert "already holds a run" in capsys.readouterr().err
    code = main(["train", "--resume", "--out", str(trained["run"])])
    assert code == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_an_interrupted_run_resumes_from_its_last_checkpoint(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    import keras

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
            if epoch == 2:
                raise KeyboardInterrupt

    manifest = read_manifest(trained["run"]).drop(columns=["split"])
    run = tmp_path / "run"
    options = TrainOptions(model="seed", epochs=4, image_size=32, batch_size=8)
    with pytest.raises(KeyboardInterrupt):
        train_model(manifest, run, options, callbacks=[Interrupt()])
    open_files = {os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")}
    assert str((run / "history.csv").resolve()) not in open_files  # closed, though interrupted
    assert json.loads((run / "run.json").read_text())["status"] == "training"
    assert not (run / "model.keras").exists()
    assert len(pd.read_csv(run / "history.csv")) == 2
    result = train_model(None, run, resume=True)
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [0, 1, 2, 3]  # continued at epoch 3, nothing repeated
    assert len(result.history["loss"]) == 4
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


def test_more_than_two_classes_train_a_softmax_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_learnable_folder(tmp_path / "data", n_per_class=10, classes=3)
    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY_PROFILE, encoding="utf-8")
    assert main(["train", str(data), "--model", "default", "--image-size", "16", "--epochs", "1",
                 "--profile", str(profile), "--out", str(tmp_path / "run")]) == 0  # fmt: skip
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["labels"] == ["happy", "neutral", "sad"]
    assert np.asarray(metrics["confusion_matrix"]).shape == (3, 3)
    assert metrics["positive_label"] is None
    # a face-crop model's evaluation splits its accuracy by whether a face was found
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run"), str(data), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    groups = scores["by_face"]
    assert groups["face_found"]["n"] + groups["no_face"]["n"] == scores["n_scored"] == 30
    assert main(["evaluate", str(tmp_path / "run"), str(data)]) == 0
    assert "accuracy, no face" in capsys.readouterr().out


def test_accuracy_is_split_by_whether_a_face_was_found() -> None:
    y = np.array([0, 1, 0, 1, 1])
    proba = np.array([0.2, 0.9, 0.8, 0.1, 0.6])
    groups = accuracy_by_face(y, proba, np.array([True, True, False, False, False]))
    assert groups["face_found"] == {"n": 2, "accuracy": 1.0}
    assert groups["no_face"]["n"] == 3 and groups["no_face"]["accuracy"] == pytest.approx(1 / 3)
    softmax = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    groups = accuracy_by_face(np.array([0, 1]), softmax, np.array([True, True]))
    assert groups["face_found"] == {"n": 2, "accuracy": 0.5}
    assert groups["no_face"] == {"n": 0, "accuracy": None}


def test_several_roots_merge_their_classes_by_name(tmp_path: Path) -> None:
    a = write_learnable_folder(tmp_path / "a", n_per_class=8)
    b = write_learnable_folder(tmp_path / "b", n_per_class=8)
    for path in b.rglob("*.png"):  # different pictures, same class names
        Image.fromarray(255 - np.asarray(Image.open(path))).save(path)
    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY_PROFILE, encoding="utf-8")
    run = tmp_path / "run"
    assert main(["train", str(a), str(b), "--model", "seed", "--image-size", "32",
                 "--epochs", "1", "--profile", str(profile), "--out", str(run)]) == 0  # fmt: skip
    manifest = read_manifest(tmp_path / "run")
    assert set(manifest["root"]) == {str(a.resolve()), str(b.resolve())}
    config = json.loads((tmp_path / "run" / "run.json").read_text())
    assert sum(sum(c.values()) for c in config["split_counts"].values()) == 32


def test_a_dataset_that_fails_validation_is_not_trained_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_learnable_folder(tmp_path / "data", n_per_class=4)
    code = main(["train", str(data), "--out", str(tmp_path / "run")])  # tutorial: 20 per class
    assert code == 1
    err = capsys.readouterr().err
    assert "the dataset failed" in err and "min_files_per_class" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "resnet"], "unknown model 'resnet'"),
        (["--split", "0.5,0.5,0.5"], "summing to 1"),
        (["--split", "a,b,c"], "three numbers"),
        (["--profile", "tutorial", "--profile", "tutorial"], "one per data folder"),
    ],
    ids=["unknown model", "shares over one", "not numbers", "two profiles for one folder"],
)
def test_bad_train_options_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    data = write_learnable_folder(tmp_path / "data", n_per_class=2)
    assert main(["train", str(data), *args]) == 2
    assert message in capsys.readouterr().err


def test_resume_needs_the_run_folder(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--resume"]) == 2
    assert "--resume needs the --out folder" in capsys.readouterr().err


def test_too_few_files_for_a_validation_split_stop_training(tmp_path: Path) -> None:
    data = write_learnable_folder(tmp_path / "data", n_per_class=2)
    from toolkit.profiles import load_profile
    from toolkit.scan import scan_folder
    from toolkit.validate import validate_manifest

    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY_PROFILE, encoding="utf-8")
    checked = validate_manifest(scan_folder(data), load_profile(profile)).manifest
    with pytest.raises(TrainingError, match="validation split is empty"):
        train_model(checked, tmp_path / "run", TrainOptions(ratios=(0.9, 0.1, 0.0)))


def test_run_json_records_the_profile_as_plain_data_and_each_folders_spec(
    trained: dict[str, Path],
) -> None:
    from toolkit.profiles import load_profile

    config = json.loads((trained["run"] / "run.json").read_text())
    spec = str(trained["profile"])
    expected = {**load_profile(spec).as_dict(), "specs": [spec]}
    assert config["profile"] == json.loads(json.dumps(expected))  # tuples read back as lists


# ----------------------------------------------------------------------------- units


def _near_copies(n_per_class: int) -> pd.DataFrame:
    """Accepted rows whose perceptual hashes all lie within 2 bits of one another."""
    from toolkit.manifest import normalise_manifest

    base = 0x0123456789ABCDEF
    rows = [
        {"path": f"{label}/{i:04d}.jpg", "label": label, "sha256": f"{label}{i}".ljust(64, "0"),
         "phash": f"{base ^ (1 << (i % 64)):016x}", "status": "accepted"}
        for label in ("happy", "sad") for i in range(n_per_class)
    ]  # fmt: skip
    return normalise_manifest(pd.DataFrame(rows))


def test_training_decodes_up_to_the_profiles_max_pixels(tmp_path: Path) -> None:
    from toolkit.manifest import normalise_manifest
    from toolkit.profiles import load_profile
    from toolkit.scan import DEFAULT_MAX_DECODE_PIXELS
    from toolkit.train import plan_run

    raised = tmp_path / "raised.toml"
    raised.write_text('extends = "tutorial"\n[rules.max_pixels]\nmax_pixels = 200_000_000\n')
    rng = np.random.default_rng(0)
    rows = normalise_manifest(
        pd.DataFrame(
            {"path": f"{label}/{i:03d}.jpg", "label": label, "sha256": f"{label}{i}".ljust(64, "0"),
             "phash": f"{int(rng.integers(0, 2**63)):016x}", "status": "accepted"}
            for label in ("happy", "sad") for i in range(50)
        )
    )  # fmt: skip
    plan = plan_run(rows, tmp_path / "a", TrainOptions(), profile=load_profile(raised))
    assert plan.max_pixels == 200_000_000
    assert plan_run(rows, tmp_path / "b", TrainOptions()).max_pixels == DEFAULT_MAX_DECODE_PIXELS


@pytest.mark.parametrize(
    ("near", "n_splits"),
    [("max_phash_distance = 0", 3), ("max_phash_distance = 4", 1), ('severity = "off"', 1)],
    ids=[
        "at the profile's distance 0 only equal hashes group, so the rows spread over 3 splits",
        "at the profile's distance 4 the near copies are one group, in one split",
        "with near_duplicate off the rule's default distance still groups them",
    ],
)
def test_the_split_groups_near_copies_at_the_profiles_distance(
    tmp_path: Path, near: str, n_splits: int
) -> None:
    from toolkit.profiles import load_profile
    from toolkit.train import plan_run

    path = tmp_path / "p.toml"
    path.write_text(f'extends = "tutorial"\n[rules.near_duplicate]\n{near}\n', encoding="utf-8")
    profile = load_profile(path)
    if n_splits == 1:
        with pytest.raises(TrainingError, match="split is empty"):
            plan_run(_near_copies(100), tmp_path / "run", TrainOptions(), profile=profile)
        return
    plan = plan_run(_near_copies(100), tmp_path / "run", TrainOptions(), profile=profile)
    assert plan.manifest["split"].nunique() == n_splits


def test_the_seed_model_is_the_tutorials_network() -> None:
    model = build_seed_cnn()
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Conv2D",
                     "MaxPooling2D", "Flatten", "Dense", "Dense"]  # fmt: skip
    assert [layer.filters for layer in model.layers if hasattr(layer, "filters")] == [16, 32, 16]
    assert model.count_params() == 3_696_625  # the tutorial's summary
    assert model.output_shape == (None, 1)
    assert model.loss.__class__.__name__ == "BinaryCrossentropy"


def test_the_default_model_is_small_and_pools_globally() -> None:
    model = build_cnn((64, 64, 1))
    assert model.count_params() < 200_000
    assert any(type(layer).__name__ == "GlobalAveragePooling2D" for layer in model.layers)
    kinds = {type(layer).__name__ for layer in model.layers}
    # batch normalisation and augmentation by one fused kernel each (toolkit.layers)
    assert {"FusedBatchNormalization", "RandomAugment"} <= kinds
    assert "BatchNormalization" not in kinds
    assert build_cnn((32, 32, 1), n_classes=4, augment=False).output_shape == (None, 4)
    assert get_recipe("default").input.crop_faces


COLOUR = {"saturation": 0.5, "hue": 0.08, "grayscale": 0.2, "posterize": 0.3}


def test_the_default_model_takes_colour_options_and_its_recipe_leaves_them_off() -> None:
    coloured = build_cnn((32, 32, 3), **COLOUR).get_layer("augment").get_config()
    assert {k: coloured[k] for k in COLOUR} == COLOUR
    shipped = get_recipe("default").build((32, 32, 3)).get_layer("augment").get_config()
    assert {k: shipped[k] for k in COLOUR} == dict.fromkeys(COLOUR, 0.0)


def test_the_default_model_decays_its_weights() -> None:
    # AdamW (decoupled weight decay 0.05) instead of Adam: +0.6 points on FER2013 test on
    # average over three seeds (docs/model-quality.md, "Weight decay")
    model = build_cnn((48, 48, 3), learning_rate=1e-2)
    assert type(model.optimizer).__name__ == "AdamW"
    assert model.optimizer.weight_decay == pytest.approx(0.05)
    kernel = model.layers[-1].kernel
    before = kernel.numpy().copy()
    model.optimizer.apply_gradients([(np.zeros_like(before), kernel)])
    # no gradient, still shrunk by learning rate x decay: w <- w (1 - 1e-2 * 0.05)
    np.testing.assert_allclose(kernel.numpy(), before * (1 - 1e-2 * 0.05), rtol=1e-5)
    plain = build_cnn((48, 48, 3), weight_decay=0.0)
    assert type(plain.optimizer).__name__ == "Adam"


def _first_block_side(model) -> int:
    first = next(layer for layer in model.layers if type(layer).__name__ == "SeparableConv2D")
    return int(first.input.shape[1])


def test_the_default_model_does_not_pool_after_its_stride_2_stem() -> None:
    # pooling there (blocks from a quarter of the side) made a step 2-3x cheaper but cost
    # 1.8 points on FER2013 test and 1 on the web set over three seeds
    # (docs/model-quality.md, runs 14-21): the blocks start at half the input side
    assert _first_block_side(build_cnn((48, 48, 3))) == 24
    assert _first_block_side(build_cnn((48, 48, 3), stem_pool=True)) == 12


def test_unknown_recipe_names_the_choices() -> None:
    with pytest.raises(UsageError, match="default, seed"):
        get_recipe("vgg")


@pytest.mark.parametrize(
    ("y", "expected"),
    [
        ([0] * 10 + [1] * 10, None),
        ([0] * 12 + [1] * 10, None),  # 1.2x: still balanced enough
        ([0] * 13 + [1] * 10, {0: 23 / 26, 1: 23 / 20}),  # just past 1.2x
        ([0] * 30 + [1] * 10, {0: 40 / 60, 1: 40 / 20}),
    ],
    ids=["balanced", "at the bound", "just past the bound", "three to one"],
)
def test_class_weights_only_when_imbalanced(y: list[int], expected: dict | None) -> None:
    weights = class_weights(np.array(y), 2)
    if expected is None:
        assert weights is None
    else:
        assert weights == pytest.approx(expected)


@pytest.mark.parametrize(
    ("loss", "val_loss", "verdict"),
    [
        ([0.7, 0.6], [0.65, 0.55], "underfitting"),
        ([0.7, 0.2], [0.6, 0.31], "overfitting"),  # val_loss 1.55x the loss
        ([0.7, 0.2], [0.6, 0.29], "good fit"),  # 1.45x
        ([0.5], [0.5], "good fit"),
    ],
    ids=["loss above val_loss", "val_loss past 1.5x", "val_loss under 1.5x", "equal"],
)
def test_the_fit_diagnosis_reads_loss_against_val_loss(
    loss: list[float], val_loss: list[float], verdict: str
) -> None:
    text = diagnose_fit({"loss": loss, "val_loss": val_loss})
    assert text.startswith(verdict + ":")
    assert f"{loss[-1]:.3f}" in text and f"{val_loss[-1]:.3f}" in text


def test_no_history_no_diagnosis() -> None:
    assert diagnose_fit({}).startswith("no diagnosis")


def test_train_from_a_validated_manifest(trained: dict[str, Path], tmp_path: Path) -> None:
    check = tmp_path / "check"
    assert main(["validate", str(trained["data"]), "--profile", str(trained["profile"]),
                 "--out", str(check), "--no-faces"]) == 0  # fmt: skip
    run = tmp_path / "run"
    assert main(["train", "--manifest", str(check / "manifest.parquet"), "--model", "seed",
                 "--image-size", "32", "--epochs", "1", "--out", str(run)]) == 0  # fmt: skip
    config = json.loads((run / "run.json").read_text())
    assert config["profile"]["name"] == "tiny"  # the manifest remembers its profile
    assert config["roots"] == [str(trained["data"].resolve())]


def test_a_scanned_but_unvalidated_manifest_is_refused(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["scan", str(trained["data"]), "--out", str(tmp_path / "scan"), "--no-faces"]) == 0
    code = main(["train", "--manifest", str(tmp_path / "scan"), "--out", str(tmp_path / "run")])
    assert code == 1
    assert "never validated" in capsys.readouterr().err


# ----------------------------------------------------------------------------- calibration


def test_the_run_records_its_temperature(trained: dict[str, Path]) -> None:
    metrics = json.loads((trained["run"] / "metrics.json").read_text())
    config = json.loads((trained["run"] / "run.json").read_text())
    assert 0.05 <= metrics["temperature"] == config["temperature"] <= 20
    assert "expected_calibration_error_before_temperature" in metrics


def test_best_weights_are_saved_whole_and_only_when_val_loss_improves(tmp_path: Path) -> None:
    import keras

    from toolkit.train import _best_weights_callback

    saved: list[float] = []

    class Model:
        fail = False

        def save_weights(self, path: str) -> None:
            Path(path).write_bytes(b"half" if self.fail else b"weights")
            if self.fail:
                raise KeyboardInterrupt  # killed while writing
            saved.append(len(saved))

    target = tmp_path / "best.weights.h5"
    callback = _best_weights_callback(keras, target, best_so_far=0.6)
    model = Model()
    callback.set_model(model)
    callback.on_epoch_end(0, {"val_loss": 0.7})  # worse than the resumed run's best
    assert not target.exists()
    callback.on_epoch_end(1, {"val_loss": 0.5})
    callback.on_epoch_end(2, {"val_loss": 0.5})  # equal is not better
    assert saved == [0] and target.read_bytes() == b"weights"
    model.fail = True
    with pytest.raises(KeyboardInterrupt):
        callback.on_epoch_end(3, {"val_loss": 0.4})
    assert target.read_bytes() == b"weights"  # the previous best, whole
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary left
