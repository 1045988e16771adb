"""The leave-one-source-out protocol's arithmetic (benchmarks/loso.py), without training:
which roots each fold trains on, which scored files count as seen, mean and worst, targets;
and its variants (build options to measure), one trained for an epoch on generated images."""

from __future__ import annotations

import json
import sys
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY_PROFILE, shared_dataset
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import loso  # benchmarks/ is not a package the tests install


def rows(sha256: list[str | None], phash: list[str | None]) -> pd.DataFrame:
    return pd.DataFrame(
        {"sha256": pd.array(sha256, dtype="string"), "phash": pd.array(phash, dtype="string")}
    )


def test_each_source_is_left_out_once_and_never_trained_on_in_its_fold() -> None:
    folds = loso.make_folds()
    assert [f.held_out for f in folds] == list(loso.SOURCES)
    for fold in folds:
        names = [name for name, _ in fold.train]
        assert fold.held_out not in names
        assert set(names) == set(loso.SOURCES) - {fold.held_out} | {loso.FER_TRAIN}


def test_each_root_trains_with_its_own_profile() -> None:
    profiles = dict(loso.make_folds(["renotte"])[0].train)
    assert profiles[loso.FER_TRAIN] == "small-faces"
    assert profiles["muxspace"] == loso.FACE_PHOTOS
    assert profiles["mratashnejad"] == profiles["6lvcknight"] == "scraped"


def test_an_unknown_source_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown source.*ckplus.*known: renotte"):
        loso.make_folds(["ckplus"])


def test_the_fold_of_the_day_visits_every_source_in_as_many_days() -> None:
    start = date(2026, 12, 7)
    days = [loso.fold_of_the_day(start + timedelta(days=i)) for i in range(len(loso.SOURCES))]
    assert sorted(days) == sorted(loso.SOURCES)


@pytest.mark.parametrize(
    ("scored", "seen", "kept"),
    [
        (rows(["a"], ["0000000000000000"]), rows(["a"], ["ffffffffffffffff"]), 0),
        (rows(["a"], ["0000000000000000"]), rows(["b"], ["000000000000000f"]), 0),
        (rows(["a"], ["0000000000000000"]), rows(["b"], ["00000000000000ff"]), 1),
        (rows([None], [None]), rows(["b"], ["0000000000000000"]), 1),
    ],
    ids=[
        "a file with the same bytes as a training file is not scored",
        "a near copy (4 bits apart) of a training file is not scored",
        "a picture 8 bits from every training file is scored",
        "a row without hashes is scored",
    ],
)
def test_drop_seen_scores_only_pictures_training_never_saw(
    scored: pd.DataFrame, seen: pd.DataFrame, kept: int
) -> None:
    unseen, n_dropped = loso.drop_seen(scored, seen)
    assert len(unseen) == kept and n_dropped == len(scored) - kept


def test_drop_seen_keeps_copies_within_the_scored_source() -> None:
    scored = rows(["a", "a", "c"], ["0000000000000000"] * 2 + ["ffffffffffffffff"])
    unseen, n_dropped = loso.drop_seen(scored, rows(["z"], ["0f0f0f0f0f0f0f0f"]))
    assert (len(unseen), n_dropped) == (3, 0)


hex64 = st.integers(0, 2**64 - 1).map(lambda v: f"{v:016x}")


@settings(max_examples=40, deadline=None)
@given(
    scored=st.lists(st.tuples(st.sampled_from("abcdef"), hex64), min_size=1, max_size=12),
    seen=st.lists(st.tuples(st.sampled_from("defgh"), hex64), min_size=1, max_size=12),
)
def test_drop_seen_property_no_scored_file_shares_bytes_with_training(scored, seen) -> None:
    scored_rows = rows([s for s, _ in scored], [p for _, p in scored])
    seen_rows = rows([s for s, _ in seen], [p for _, p in seen])
    unseen, n_dropped = loso.drop_seen(scored_rows, seen_rows)
    assert len(unseen) + n_dropped == len(scored_rows)
    assert not set(unseen["sha256"]) & set(seen_rows["sha256"])
    assert not set(unseen["phash"]) & set(seen_rows["phash"])


def fold(name: str, accuracy: float, ece: float = 0.03, fer: float = 0.93) -> dict:
    return {
        "fold": name,
        "source": {"accuracy": accuracy, "ece": ece},
        "fer": {"accuracy": fer},
        "train_minutes": 15.0,
    }


FOLDS = [fold("renotte", 0.9), fold("muxspace", 0.8, ece=0.06, fer=0.915), fold("x", 0.85)]


def test_summary_gives_the_mean_the_worst_source_and_fer2013s_lowest() -> None:
    s = loso.summarise(FOLDS)
    assert s["mean"] == pytest.approx(0.85)
    assert (s["worst_fold"], s["worst"]) == ("muxspace", 0.8)
    assert s["fer_lowest"] == 0.915 and s["fer_mean"] == pytest.approx(0.925)
    assert s["ece_highest"] == 0.06 and s["n_folds"] == 3


def test_a_summary_of_no_fold_is_refused() -> None:
    with pytest.raises(ValueError, match="no fold"):
        loso.summarise([])


MET = {
    "mean": 0.85,
    "worst": 0.80,
    "worst_fold": "muxspace",
    "fer_lowest": 0.92,
    "ece_highest": 0.05,
    "train_minutes_longest": 20.0,
}


@pytest.mark.parametrize(
    ("change", "miss"),
    [
        ({}, None),
        ({"mean": 0.849}, "mean accuracy 0.849 < 0.85"),
        ({"worst": 0.799}, "worst source muxspace 0.799 < 0.8"),
        ({"fer_lowest": 0.9199}, "FER2013 test 0.920 < 0.92"),
        ({"ece_highest": 0.051}, "ECE 0.051 > 0.05 on a source"),
        ({"train_minutes_longest": 20.1}, "training took 20.1 min > 20.0"),
    ],
    ids=[
        "figures exactly at the issue's targets meet them all",
        "a mean under 85% is a miss",
        "a worst source under 80% is a miss, named",
        "FER2013 test under 92% is a miss",
        "an ECE over 0.05 on any source is a miss",
        "training over 20 minutes is a miss",
    ],
)
def test_misses_name_each_target_missed(change: dict, miss: str | None) -> None:
    found = loso.misses({**MET, **change})
    assert found == ([] if miss is None else [miss])


def test_the_table_ends_with_mean_and_worst() -> None:
    folds = [{**f, "n_duplicates": 2, "source": {**f["source"], "n": 100}} for f in FOLDS]
    lines = loso.table(folds)
    assert lines[2] == "| renotte | 100 | 2 | 90.0% | 0.030 | 93.0% | 15.0 |"
    assert lines[-2].startswith("| mean | | | 85.0% |")
    assert lines[-1] == "| worst | | | 80.0% (muxspace) | | 91.5% | |"


def test_a_fold_already_scored_is_read_back_without_training_or_scanning(tmp_path) -> None:
    fold_ = loso.make_folds(["renotte"])[0]
    saved = tmp_path / "renotte-default-e3-s0" / "loso.json"
    saved.parent.mkdir()
    saved.write_text('{"fold": "renotte", "train_minutes": 9.5}', encoding="utf-8")
    missing = tmp_path / "no-datasets-here"  # a scan or a training would fail on it
    result = loso.run_fold(fold_, tmp_path, epochs=3, datasets=missing)
    assert result == {"fold": "renotte", "train_minutes": 9.5}


@pytest.mark.shared
def test_muxspace_passes_the_face_photos_profile_its_imbalance_a_warning() -> None:
    from toolkit.check import check_folder

    result = check_folder(shared_dataset("muxspace"), loso.FACE_PHOTOS, jobs=1)
    assert result.passed
    accepted = result.manifest[result.manifest["status"] == "accepted"]
    assert accepted["label"].value_counts().to_dict() == {"happy": 1180, "sad": 254}


# -------------------------------------------- variants: build options measured by the folds


@pytest.fixture
def recipes(monkeypatch: pytest.MonkeyPatch) -> dict:
    """The package's recipes, restored after the test: a variant registers one for the
    process it runs in."""
    from toolkit import models

    monkeypatch.setattr(models, "RECIPES", dict(models.RECIPES))
    return models.RECIPES


def test_every_variant_sets_options_the_default_builder_takes() -> None:
    import inspect

    from toolkit.models import build_cnn

    takes = inspect.signature(build_cnn).parameters
    assert loso.VARIANTS
    for name, options in loso.VARIANTS.items():
        assert options and set(options) <= set(takes), name
        assert all(takes[k].default != v for k, v in options.items()), name


def test_a_variant_trains_the_default_recipe_with_its_options_and_nothing_else(recipes) -> None:
    from toolkit.models import get_recipe

    assert set(recipes) == {"seed", "default"}  # the package offers no variant
    name = loso.variant_recipe("colour")
    assert name == "default+colour"
    derived, default = get_recipe(name), get_recipe("default")
    for field in ("input", "epochs", "learning_rate", "patience", "tta_flip", "reduce_lr"):
        assert getattr(derived, field) == getattr(default, field), field
    model = derived.build(input_shape=(24, 24, 3), n_classes=2, learning_rate=1e-3, seed=0)
    config = model.get_layer("augment").get_config()
    assert {k: config[k] for k in loso.VARIANTS["colour"]} == loso.VARIANTS["colour"]
    assert loso.variant_recipe("colour") == name  # registering twice is harmless


@pytest.fixture
def fake_training(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """`toolkit train` replaced by one that records its arguments and leaves a model file,
    and the folds' validation and scoring by stand-ins: a fold runs without TensorFlow."""
    import toolkit.cli

    calls: list[list[str]] = []

    def fake_train(args: list[str]) -> int:
        calls.append(args)
        out = Path(args[args.index("--out") + 1])
        out.mkdir(parents=True)
        (out / "model.keras").write_bytes(b"")
        return 0

    monkeypatch.setattr(toolkit.cli, "main", fake_train)
    monkeypatch.setattr(loso, "validated", lambda out, datasets, name, *a: out / name)
    monkeypatch.setattr(loso, "accepted_rows", lambda folder: rows(["a"], ["0000000000000000"]))
    monkeypatch.setattr(loso, "score", lambda run, rows, *_: {"n": len(rows)})
    return calls


def test_a_variant_fold_trains_through_toolkit_train_and_records_its_options(
    tmp_path, fake_training, recipes
) -> None:
    from toolkit.models import get_recipe

    result = loso.run_fold(loso.make_folds(["renotte"])[0], tmp_path, epochs=3, variant="colour")
    [args] = fake_training
    model = args[args.index("--model") + 1]
    assert (model, get_recipe(model).name) == ("default+colour", "default+colour")
    assert (result["model"], result["variant"]) == ("default", "colour")
    assert result["build_options"] == loso.VARIANTS["colour"]
    saved = tmp_path / "renotte-default+colour-e3-s0" / "loso.json"
    assert json.loads(saved.read_text(encoding="utf-8")) == result


def test_a_variant_fold_and_the_baseline_never_share_a_run_folder(tmp_path, recipes) -> None:
    fold_ = loso.make_folds(["renotte"])[0]
    for folder, minutes in (("renotte-default-e3-s0", 9.5), ("renotte-default+colour-e3-s0", 11)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "loso.json").write_text(f'{{"train_minutes": {minutes}}}')
    missing = tmp_path / "no-datasets-here"
    baseline = loso.run_fold(fold_, tmp_path, epochs=3, datasets=missing)
    variant = loso.run_fold(fold_, tmp_path, epochs=3, datasets=missing, variant="colour")
    assert (baseline["train_minutes"], variant["train_minutes"]) == (9.5, 11)


@pytest.mark.parametrize(
    "argv",
    [
        ["--variant", "sepia"],
        ["--variant", "colour", "--model", "seed"],
    ],
    ids=[
        "an unknown variant is refused",
        "a variant of the tutorial's model is refused: variants are build options of ours",
    ],
)
def test_bad_variants_are_refused_before_any_fold(argv, tmp_path, capsys, recipes) -> None:
    with pytest.raises(SystemExit) as exit_:
        loso.main(["--out", str(tmp_path / "out"), "--datasets", str(tmp_path / "none"), *argv])
    assert exit_.value.code == 2
    assert "--variant" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_variant_trains_for_an_epoch_loads_and_exports(tmp_path, recipes) -> None:
    from corpus import write_clean_folder

    from toolkit.cli import main
    from toolkit.runs import load_run

    data = tmp_path / "data"
    write_clean_folder(data, n_per_class=12)
    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY_PROFILE, encoding="utf-8")
    name = loso.variant_recipe("colour+posterize")
    run = tmp_path / "run"
    code = main(
        ["train", str(data), "--profile", str(profile), "--model", name, "--epochs", "1",
         "--image-size", "32", "--batch-size", "4", "--out", str(run)]
    )  # fmt: skip
    assert code == 0
    config = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert config["model"]["name"] == "default+colour+posterize"
    augment = load_run(run).model.get_layer("augment").get_config()  # Keras' safe mode
    options = loso.VARIANTS["colour+posterize"]
    assert {k: augment[k] for k in options} == options
    assert main(["export", str(run)]) == 0  # serving drops the augmentation, colour and all


# ------------------------------------ issue 28 item 4: the same fold without the audit's flags


def test_a_fold_without_flagged_files_trains_on_what_its_baseline_did_not_flag(
    tmp_path, fake_training
) -> None:
    from toolkit.runs import LABEL_ISSUES_CSV

    baseline = tmp_path / "renotte-default-e3-s0"
    baseline.mkdir()
    (baseline / LABEL_ISSUES_CSV).write_text("path\n", encoding="utf-8")
    fold_ = loso.make_folds(["renotte"])[0]
    result = loso.run_fold(fold_, tmp_path, epochs=3, without_flagged=True)
    [args] = fake_training
    assert args[args.index("--exclude") + 1] == str(baseline / LABEL_ISSUES_CSV)
    assert args[args.index("--out") + 1] == str(tmp_path / "renotte-default-e3-s0-unflagged")
    assert result["without_flagged"] == "renotte-default-e3-s0"


def test_a_fold_without_flagged_files_needs_its_baseline_audited_first(tmp_path) -> None:
    fold_ = loso.make_folds(["renotte"])[0]
    with pytest.raises(FileNotFoundError, match=r"renotte-default-e3-s0.*label_issues\.csv"):
        loso.run_fold(fold_, tmp_path, epochs=3, without_flagged=True)


def test_the_baseline_and_its_unflagged_run_never_share_a_folder(tmp_path) -> None:
    fold_ = loso.make_folds(["renotte"])[0]
    for folder, minutes in (("renotte-default-e3-s0", 9.5), ("renotte-default-e3-s0-unflagged", 8)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "loso.json").write_text(f'{{"train_minutes": {minutes}}}')
    missing = tmp_path / "no-datasets-here"
    baseline = loso.run_fold(fold_, tmp_path, epochs=3, datasets=missing)
    clean = loso.run_fold(fold_, tmp_path, epochs=3, datasets=missing, without_flagged=True)
    assert (baseline["train_minutes"], clean["train_minutes"]) == (9.5, 8)


def test_a_fold_is_scored_on_its_source_less_copies_of_training_pictures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [fold] = loso.make_folds(["renotte"])
    for name, profile in [*fold.train, (fold.held_out, loso.SCORED_PROFILE),
                          (loso.FER_TEST, loso.TEST_PROFILES[loso.FER_TEST])]:  # fmt: skip
        folder = tmp_path / "manifests" / loso.manifest_key(name, profile)
        folder.mkdir(parents=True)
        (folder / "manifest.parquet").write_bytes(b"")
    held = rows(["x", "y"], ["0000000000000000", "ffffffffffffffff"])
    seen = rows(["x"], ["0f0f0f0f0f0f0f0f"])  # the same bytes as the held-out "x"
    by_folder = {loso.manifest_key(fold.held_out, loso.SCORED_PROFILE): held}
    monkeypatch.setattr(loso, "accepted_rows", lambda folder: by_folder.get(folder.name, seen))
    unseen, fer = loso.scored_rows(tmp_path, fold)
    assert list(unseen["sha256"]) == ["y"]
    assert list(fer["sha256"]) == ["x"]


def test_scoring_a_fold_never_validates_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"run benchmarks\.loso on"):
        loso.validated_already(tmp_path, "renotte", loso.SCORED_PROFILE)


def test_the_temperature_comparison_tells_web_pictures_from_faces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))  # as -m runs it
    from benchmarks import loso_temperature

    frame = pd.DataFrame({"root": ["/d/fer2013/train", "/d/renotte", "/d/muxspace"]})
    assert list(loso_temperature.is_web(frame)) == [False, True, True]
