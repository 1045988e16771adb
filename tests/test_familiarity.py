"""The familiarity score: known answers, its file, and what predict, evaluate and training say."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_PROFILE
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from toolkit.cli import main
from toolkit.errors import RecordError
from toolkit.familiarity import (
    FAMILIAR_QUANTILE,
    UNFAMILIAR_NOTE,
    Familiarity,
    accuracy_by_familiarity,
    fit_familiarity,
    read_familiarity,
    write_familiarity,
)
from toolkit.runs import FAMILIARITY_NPZ

WIDTH = 16


def _blob(n: int, seed: int) -> np.ndarray:
    """Embeddings of one kind of picture: a Gaussian blob around one direction."""
    rng = np.random.default_rng(seed)
    centre = np.zeros(WIDTH)
    centre[: WIDTH // 2] = 5.0
    return centre + rng.normal(0, 0.5, size=(n, WIDTH))


def _fitted() -> Familiarity:
    return fit_familiarity(_blob(400, 0), _blob(100, 1), k=5)


# ----------------------------------------------------------------------------- known answers


def test_a_point_far_from_the_blob_is_unfamiliar_and_the_blob_familiar() -> None:
    score = _fitted()
    far = np.zeros((1, WIDTH))
    far[0, -1] = 5.0  # another direction: what the network never produced for a picture
    assert score.novelty(far)[0] > 2.0
    fresh = score.novelty(_blob(200, 2))
    assert 0.9 <= np.mean(fresh <= 1.0) < 1.0  # about the validation share, not all


def test_the_fence_keeps_the_quantile_of_validation_pictures_familiar() -> None:
    validation = _blob(100, 1)
    score = fit_familiarity(_blob(400, 0), validation, k=5)
    familiar = np.mean(score.novelty(validation) <= 1.0)
    assert FAMILIAR_QUANTILE <= familiar <= FAMILIAR_QUANTILE + 0.02


def test_the_score_is_the_kth_neighbour_not_the_nearest() -> None:
    # one training picture sits on the probe: with k=1 it is familiar, with k=3 it is not
    train = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    validation = np.array([[0.0, 1.0]])
    probe = np.array([[1.0, 0.0]])
    assert fit_familiarity(train, validation, k=1).novelty(probe)[0] <= 1.0
    assert fit_familiarity(train, validation, k=3).novelty(probe)[0] > 1.0


@pytest.mark.parametrize(
    ("novelty", "expected"),
    [
        ([0.5, 1.0, 1.5, 3.0], {"n_unfamiliar": 2, "familiar": (2, 1.0), "unfamiliar": (2, 0.5)}),
        ([0.1, 0.2, 0.3, 0.4], {"n_unfamiliar": 0, "familiar": (4, 0.75), "unfamiliar": (0, None)}),
    ],
    ids=[
        "a picture on the fence counts as familiar, the accuracy of each group its own",
        "with no unfamiliar picture that group's accuracy is n/a, not 0",
    ],
)
def test_accuracy_by_familiarity(novelty: list[float], expected: dict) -> None:
    y_true = np.array([0, 1, 1, 0])
    proba = np.array([0.1, 0.9, 0.2, 0.3])  # right, right, wrong, right
    found = accuracy_by_familiarity(y_true, proba, np.array(novelty))
    assert found["n_unfamiliar"] == expected["n_unfamiliar"]
    for key in ("familiar", "unfamiliar"):
        assert (found[key]["n"], found[key]["accuracy"]) == expected[key]


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n_train=st.integers(1, 60),
    n_val=st.integers(1, 40),
    k=st.integers(1, 12),
    scale=st.floats(0.01, 100.0),
)
def test_the_fence_holds_for_any_embeddings(
    seed: int, n_train: int, n_val: int, k: int, scale: float
) -> None:
    rng = np.random.default_rng(seed)
    train = np.abs(rng.normal(size=(n_train, 6)))  # ReLU embeddings are not negative
    validation = np.abs(rng.normal(size=(n_val, 6)))
    score = fit_familiarity(train, validation, k=k)
    novelty = score.novelty(validation)
    assert np.all(novelty >= 0)
    assert np.mean(novelty <= 1.0) >= FAMILIAR_QUANTILE or n_val * (1 - FAMILIAR_QUANTILE) < 1
    # a picture's embedding scaled (a brighter copy of the same pattern) is as familiar
    assert np.allclose(score.novelty(validation * scale), novelty, rtol=1e-3, atol=1e-3)


# ----------------------------------------------------------------------------- the file


def test_the_file_reads_back_what_was_written(tmp_path: Path) -> None:
    score = _fitted()
    write_familiarity(tmp_path, score)
    back = read_familiarity(tmp_path, width=WIDTH)
    assert back is not None
    probes = _blob(20, 3)
    assert np.allclose(back.novelty(probes), score.novelty(probes))
    assert (back.k, back.threshold, back.quantile) == (score.k, score.threshold, score.quantile)


@pytest.mark.parametrize(
    "lengths",
    [[0.0], [1e-13], [0.0, 1e-13, 1e-30]],
    ids=[
        "a training picture whose embedding is all zeros (dead units) is left out of the file",
        "an embedding too short to normalise is left out of the file",
        "several such rows are all left out",
    ],
)
def test_a_score_fitted_on_degenerate_embeddings_reads_back(tmp_path: Path, lengths) -> None:
    train = _blob(400, 0)
    train[: len(lengths)] = np.asarray(lengths)[:, None] * np.eye(1, WIDTH)
    score = fit_familiarity(train, _blob(100, 1), k=5)
    assert len(score.reference) == 400 - len(lengths)
    write_familiarity(tmp_path, score)
    assert read_familiarity(tmp_path, width=WIDTH) is not None


def test_a_fit_with_no_usable_training_embedding_is_refused() -> None:
    with pytest.raises(ValueError, match="training embeddings that are not all zeros"):
        fit_familiarity(np.zeros((5, WIDTH)), _blob(10, 1), k=5)


def test_a_run_without_the_file_has_no_score(tmp_path: Path) -> None:
    assert read_familiarity(tmp_path) is None


def _rewrite(path: Path, **changes: object) -> None:
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _nan_row(path: Path) -> None:
    with np.load(path) as data:
        reference = data["reference"].copy()
    reference[3] = np.nan
    _rewrite(path, reference=reference)


def _pickled(path: Path) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, format=np.array([{"a": 1}], dtype=object))


@pytest.mark.parametrize(
    ("corrupt", "key"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:200]), "file"),
        (lambda p: p.write_text("not a zip"), "file"),
        (_pickled, "file"),
        (lambda p: _rewrite(p, threshold=None), "file"),
        (lambda p: _rewrite(p, format=np.array("toolkit-familiarity-knn/9")), "format"),
        (_nan_row, "reference"),
        (lambda p: _rewrite(p, reference=np.ones((5, WIDTH), np.float32)), "reference"),
        (lambda p: _rewrite(p, k=np.array(10_000)), "k"),
        (lambda p: _rewrite(p, threshold=np.array(-0.5)), "threshold"),
        (lambda p: _rewrite(p, quantile=np.array(1.5)), "quantile"),
    ],
    ids=[
        "a truncated file is refused",
        "a file that is not an npz is refused",
        "a file holding pickled objects is refused without unpickling them",
        "a file missing an array is refused",
        "a file of another format version is refused",
        "a reference holding NaN is refused",
        "a reference that is not normalised is refused",
        "a neighbour beyond the reference is refused",
        "a negative fence is refused",
        "a quantile above 1 is refused",
    ],
)
def test_a_corrupted_file_is_refused_naming_what_is_wrong(
    tmp_path: Path, corrupt: object, key: str
) -> None:
    write_familiarity(tmp_path, _fitted())
    corrupt(tmp_path / FAMILIARITY_NPZ)  # type: ignore[operator]
    with pytest.raises(RecordError) as caught:
        read_familiarity(tmp_path, width=WIDTH)
    assert caught.value.key == key


def test_a_file_fitted_on_another_model_is_refused(tmp_path: Path) -> None:
    write_familiarity(tmp_path, _fitted())
    with pytest.raises(RecordError, match="16-wide embeddings, the model's are 32 wide"):
        read_familiarity(tmp_path, width=32)


def test_a_link_in_place_of_the_file_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_familiarity(elsewhere, _fitted())
    run = tmp_path / "run"
    run.mkdir()
    (run / FAMILIARITY_NPZ).symlink_to(elsewhere / FAMILIARITY_NPZ)
    with pytest.raises(RecordError):
        read_familiarity(run, width=WIDTH)


def test_the_file_is_a_plain_npz_of_named_arrays(tmp_path: Path) -> None:
    # readable with numpy alone, no pickles: a user can inspect or reuse it
    write_familiarity(tmp_path, _fitted())
    names = zipfile.ZipFile(tmp_path / FAMILIARITY_NPZ).namelist()
    assert sorted(names) == sorted(f"{k}.npy" for k in ("format", "reference", "k", "threshold",
                                                          "quantile"))  # fmt: skip


# ----------------------------------------------------------------------------- end to end


def _textures(root: Path, n_per_class: int = 16, seed: int = 0) -> Path:
    """Bright and dark noisy textures: what the tiny model is trained on."""
    rng = np.random.default_rng(seed)
    for name, level in (("happy", 200), ("sad", 50)):
        for i in range(n_per_class):
            pixels = np.clip(rng.normal(level, 25, size=(8, 8, 3)), 0, 255).astype(np.uint8)
            (root / name).mkdir(parents=True, exist_ok=True)
            img = Image.fromarray(pixels).resize((32, 32), Image.Resampling.BICUBIC)
            img.save(root / name / f"{name}_{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny seed-model run on textures, a texture it never saw and a flat-colour picture."""
    base = tmp_path_factory.mktemp("familiar")
    data = _textures(base / "data")
    profile = base / "tiny.toml"
    profile.write_text(TINY_PROFILE, encoding="utf-8")
    run = base / "run"
    code = main(
        ["train", str(data), "--model", "seed", "--image-size", "32", "--epochs", "12",
         "--profile", str(profile), "--out", str(run), "--batch-size", "4"]
    )  # fmt: skip
    assert code == 0
    probes = _textures(base / "probes", n_per_class=1, seed=7)
    flat = base / "flat.png"
    Image.new("RGB", (32, 32), (255, 0, 255)).save(flat)
    return {
        "run": run,
        "data": data,
        "texture": probes / "happy" / "happy_000.png",
        "flat": flat,
        "base": base,
    }


def test_training_writes_the_score_and_says_how_the_test_split_fares(
    trained: dict[str, Path],
) -> None:
    run = trained["run"]
    assert (run / FAMILIARITY_NPZ).is_file()
    record = json.loads((run / "run.json").read_text())
    assert record["familiarity"]["file"] == FAMILIARITY_NPZ
    metrics = json.loads((run / "metrics.json").read_text())
    found = metrics["familiarity"]
    n = found["familiar"]["n"] + found["unfamiliar"]["n"]
    assert n == metrics["n_scored"] and found["n_unfamiliar"] == found["unfamiliar"]["n"]


def test_predict_says_a_flat_colour_picture_is_unlike_the_training_pictures(
    trained: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    code = main(["predict", str(trained["run"]), str(trained["texture"]), str(trained["flat"])])
    assert code == 0
    texture, flat = capsys.readouterr().out.splitlines()
    assert "(familiar, novelty" in texture and UNFAMILIAR_NOTE not in texture
    assert "(unfamiliar, novelty" in flat and UNFAMILIAR_NOTE in flat


def test_predict_json_gives_each_picture_its_novelty(
    trained: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    files = [str(trained["texture"]), str(trained["flat"])]
    assert main(["predict", str(trained["run"]), "--json", *files]) == 0
    texture, flat = json.loads(capsys.readouterr().out)
    assert texture["is_familiar"] is True and 0 <= texture["novelty"] <= 1
    assert flat["is_familiar"] is False and flat["novelty"] > 1
    assert flat["label"] in ("happy", "sad")  # the answer is still given


def _older(run: Path) -> None:
    """The run as one trained before the score existed: no file, no run.json record."""
    (run / FAMILIARITY_NPZ).unlink()
    record = json.loads((run / "run.json").read_text())
    del record["familiarity"]
    (run / "run.json").write_text(json.dumps(record))


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (_older, f"no {FAMILIARITY_NPZ} (trained before the familiarity score existed)"),
        (lambda run: (run / FAMILIARITY_NPZ).unlink(), f"the run's {FAMILIARITY_NPZ} is missing"),
    ],
    ids=[
        "a run trained before the score existed predicts and says so",
        "a run whose score file was deleted predicts and names the missing file",
    ],
)
def test_a_run_without_the_score_still_predicts_and_says_it_is_unavailable(
    trained: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make: object,
    why: str,
) -> None:
    older = tmp_path / "older"
    shutil.copytree(trained["run"], older)
    make(older)  # type: ignore[operator]
    capsys.readouterr()
    assert main(["predict", str(older), str(trained["flat"])]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{trained['flat']}: ") and "novelty" not in captured.out
    assert captured.err.startswith("familiarity: unavailable: ") and why in captured.err
    assert main(["predict", str(older), "--json", str(trained["flat"])]) == 0
    [answer] = json.loads(capsys.readouterr().out)
    assert answer["novelty"] is None and answer["is_familiar"] is None


def test_predict_refuses_a_run_whose_score_file_is_corrupted(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(trained["run"], broken)
    (broken / FAMILIARITY_NPZ).write_bytes(b"PK\x03\x04 half a zip")
    capsys.readouterr()
    assert main(["predict", str(broken), str(trained["flat"])]) == 2
    assert f"{FAMILIARITY_NPZ}" in capsys.readouterr().err


def test_evaluate_gives_accuracy_on_familiar_and_unfamiliar_pictures(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _textures(tmp_path / "new", n_per_class=4, seed=3)
    rng = np.random.default_rng(0)
    for i in range(3):  # magenta, the slight noise only to pass the profile's min_file_bytes
        flat = np.array([255, 0, 255 - 40 * i]) + rng.integers(-4, 5, size=(32, 32, 3))
        Image.fromarray(np.clip(flat, 0, 255).astype(np.uint8)).save(data / "sad" / f"{i}.png")
    capsys.readouterr()
    assert main(["evaluate", str(trained["run"]), str(data), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    found = scores["familiarity"]
    assert scores["n_scored"] == 11
    assert found["n_unfamiliar"] >= 3  # the flat pictures at least
    assert found["familiar"]["n"] + found["unfamiliar"]["n"] == 11
    # the flat sad pictures are answered wrong: the errors sit among the unfamiliar ones
    assert found["unfamiliar"]["accuracy"] < found["familiar"]["accuracy"]
    assert main(["evaluate", str(trained["run"]), str(data)]) == 0
    assert "unfamiliar" in capsys.readouterr().out


def _train_quickly(tmp_path: Path, *extra: str) -> Path:
    data = _textures(tmp_path / "data", n_per_class=8)
    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY_PROFILE, encoding="utf-8")
    run = tmp_path / "run"
    code = main(
        ["train", str(data), "--model", "seed", "--image-size", "32", "--epochs", "1",
         "--profile", str(profile), "--out", str(run), *extra]
    )  # fmt: skip
    assert code == 0
    return run


def test_training_without_the_audit_still_fits_the_score(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _train_quickly(tmp_path, "--no-audit")
    assert (run / FAMILIARITY_NPZ).is_file() and not (run / "label_issues.csv").exists()
    out = capsys.readouterr().out
    assert "accuracy, familiar" in out and "accuracy, unfamiliar" in out


def test_embeddings_that_are_not_finite_skip_the_score_and_predict_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # a diverged network embeds NaN: the run stands, without a score that would rank nothing
    import toolkit.train

    real_embed = toolkit.train.embed
    monkeypatch.setattr(
        toolkit.train, "embed", lambda r, part: np.full_like(real_embed(r, part), np.nan)
    )
    run = _train_quickly(tmp_path, "--no-audit")
    assert not (run / FAMILIARITY_NPZ).exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert "NaN" in metrics["familiarity"]["unavailable"]
    image = tmp_path / "data" / "happy" / "happy_000.png"
    capsys.readouterr()
    assert main(["predict", str(run), str(image)]) == 0
    assert "familiarity: unavailable: the network's embeddings hold NaN" in capsys.readouterr().err


def test_a_network_that_embeds_every_picture_as_zeros_still_finishes_its_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every unit dead: no embedding has a direction, so there is nothing to be familiar with
    import toolkit.train

    real_embed = toolkit.train.embed
    monkeypatch.setattr(toolkit.train, "embed", lambda r, part: 0 * real_embed(r, part))
    run = _train_quickly(tmp_path, "--no-audit")
    assert not (run / FAMILIARITY_NPZ).exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert "training embeddings" in metrics["familiarity"]["unavailable"]
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


def test_predict_and_evaluate_run_the_network_once_for_answers_and_familiarity(
    trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import toolkit.scores as scores

    passes = []
    real = scores.model_outputs

    def counted(*args: object, **kwargs: object) -> object:
        passes.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(scores, "model_outputs", counted)
    files = [str(trained["texture"]), str(trained["flat"])]
    assert main(["predict", str(trained["run"]), *files]) == 0
    assert len(passes) == 1
    assert main(["evaluate", str(trained["run"]), str(trained["data"]), "--json"]) == 0
    assert len(passes) == 2


@pytest.mark.parametrize("tta_flip", [False, True])
def test_one_pass_gives_the_probabilities_and_embeddings_of_two(
    trained: dict[str, Path], tta_flip: bool
) -> None:
    from toolkit.pipeline import DecodedImages
    from toolkit.runs import load_run
    from toolkit.scores import embed, predict_and_embed, predict_proba

    run = load_run(trained["run"])
    run.config["model"] = {**run.config.get("model", {}), "tta_flip": tta_flip}
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, *run.model.input_shape[1:]), dtype=np.uint8)
    batch = DecodedImages(images=images, labels=np.zeros(5, np.int32), paths=list("abcde"))
    proba, embeddings = predict_and_embed(run, batch)
    np.testing.assert_allclose(proba, predict_proba(run, batch), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(embeddings, embed(run, batch), rtol=1e-5, atol=1e-5)
    empty = DecodedImages(images=images[:0], labels=np.zeros(0, np.int32), paths=[])
    none, no_rows = predict_and_embed(run, empty)
    assert none.shape == (0,) and no_rows.shape == (0, embeddings.shape[1])
