"""`toolkit audit RUN --networks K`: every file scored by a network that never trained on it,
networks kept and reused, an interrupted audit resumed, a network of other files refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import snapshot, train_on_flipped_folder
from corpus import N_FLIPPED, N_PER_CLASS

import toolkit.crossfit as crossfit
from toolkit import api
from toolkit.audit import NETWORKS_METHOD
from toolkit.cli import main
from toolkit.errors import TrainingError
from toolkit.manifest import read_manifest
from toolkit.runs import CROSS_FIT, FINISHED

#: Three, not two: with two, each network's training files are the other's held-out fold
#: either way round, and a mix-up of the two could not show.
NETWORKS = 3


@pytest.fixture(scope="module")
def cross_fitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A seed-model run on a folder with planted flips, audited by three networks."""
    trained = train_on_flipped_folder(tmp_path_factory.mktemp("crossfit"), "--no-audit")
    code = main(["audit", str(trained["run"]), "--networks", str(NETWORKS)])
    assert code == 0
    return trained


def _trained_on(network: Path) -> set[str]:
    manifest = read_manifest(network)
    return set(manifest.loc[manifest["status"] == "accepted", "path"].astype(str))


def test_each_network_leaves_out_one_fold_and_the_folds_cover_every_file(
    cross_fitted: dict,
) -> None:
    run = cross_fitted["run"]
    everything = _trained_on(run)
    assert len(everything) == 2 * (N_PER_CLASS + N_FLIPPED)
    left_out = []
    for i in range(1, NETWORKS + 1):
        network = run / CROSS_FIT / f"fold-{i}"
        assert json.loads((network / "run.json").read_text())["status"] == FINISHED
        trained = _trained_on(network)
        assert trained < everything
        left_out.append(everything - trained)
    assert sum(len(fold) for fold in left_out) == len(everything)  # disjoint ...
    assert set().union(*left_out) == everything  # ... and covering
    assert snapshot(cross_fitted["data"]) == cross_fitted["before"]


def test_the_flipped_files_are_found_and_the_method_recorded(cross_fitted: dict) -> None:
    run = cross_fitted["run"]
    issues = pd.read_csv(run / "label_issues.csv")
    assert set(cross_fitted["flipped"]) <= set(issues["path"])
    record = json.loads((run / "run.json").read_text())["audit"]
    assert record["method"] == NETWORKS_METHOD
    assert record["folds"] == NETWORKS
    assert record["networks"]["count"] == NETWORKS and record["networks"]["folder"] == CROSS_FIT
    assert record["n_scored"] == 2 * (N_PER_CLASS + N_FLIPPED)


def test_a_second_audit_reuses_the_finished_networks(
    cross_fitted: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = cross_fitted["run"]
    before = (run / "label_issues.csv").read_bytes()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished network was trained again")

    monkeypatch.setattr(crossfit, "train_model", refuse)
    result = api.audit_run(run, networks=NETWORKS)
    assert result.folds == NETWORKS and result.method == NETWORKS_METHOD
    assert (run / "label_issues.csv").read_bytes() == before


def test_an_interrupted_network_is_resumed(
    cross_fitted: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    shutil.copytree(cross_fitted["run"], run)
    record = run / CROSS_FIT / "fold-2" / "run.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "status": "training"}))
    calls = []

    def resume(manifest: object, out: Path, *args: object, **kwargs: object) -> None:
        calls.append((manifest, out, kwargs.get("resume")))
        record.write_text(json.dumps({**json.loads(record.read_text()), "status": FINISHED}))

    monkeypatch.setattr(crossfit, "train_model", resume)
    crossfit.audit_with_networks(run, NETWORKS)
    assert calls == [(None, run / CROSS_FIT / "fold-2", True)]


def test_a_network_trained_on_other_files_is_refused(
    cross_fitted: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(cross_fitted["run"], run)
    folder = run / CROSS_FIT
    (folder / "fold-1").rename(folder / "swap")
    (folder / "fold-2").rename(folder / "fold-1")
    (folder / "swap").rename(folder / "fold-2")
    before = (run / "label_issues.csv").read_bytes()
    assert main(["audit", str(run), "--networks", str(NETWORKS)]) == 2
    err = capsys.readouterr().err
    assert "fold-1 holds a network trained on other files" in err
    assert (run / "label_issues.csv").read_bytes() == before


@pytest.mark.parametrize("networks", ["1", "0", "-3"])
def test_fewer_than_two_networks_are_refused_before_any_work(
    tmp_path: Path, networks: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", str(tmp_path / "nowhere"), "--networks", networks]) == 2
    assert "--networks must be at least 2" in capsys.readouterr().err


def test_a_network_missing_a_class_says_so(
    cross_fitted: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    shutil.copytree(cross_fitted["run"], run)
    real = crossfit.load_run

    def one_class(folder: Path) -> object:
        network = real(folder)
        network.labels = network.labels[:1]
        return network

    monkeypatch.setattr(crossfit, "load_run", one_class)
    with pytest.raises(TrainingError, match=f"a class has too few files for {NETWORKS} networks"):
        crossfit.audit_with_networks(run, NETWORKS)


def test_the_networks_train_without_a_test_split_in_the_runs_proportion() -> None:
    from toolkit.train import TrainOptions

    options = crossfit.fold_options(TrainOptions(ratios=(0.6, 0.2, 0.2), strategy="multiworker"))
    assert options.ratios == pytest.approx((0.75, 0.25, 0.0))
    assert options.strategy == "default"
    assert crossfit.fold_options(TrainOptions(strategy="mirrored")).strategy == "mirrored"
    # the audit reads the networks' own probabilities: no second opinion to fit
    assert crossfit.fold_options(TrainOptions(second_opinion=True)).second_opinion is False


def test_no_network_scores_a_file_it_trained_on(
    cross_fitted: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    scored: dict[Path, list[str]] = {}
    real = crossfit.predict_proba

    def spy(network: object, decoded: object, *args: object, **kwargs: object) -> object:
        scored[network.folder] = list(decoded.paths)
        return real(network, decoded, *args, **kwargs)

    monkeypatch.setattr(crossfit, "predict_proba", spy)
    crossfit.audit_with_networks(cross_fitted["run"], NETWORKS)
    assert len(scored) == NETWORKS
    for network, paths in scored.items():
        assert paths and _trained_on(network).isdisjoint(paths)
    assert sorted(p for paths in scored.values() for p in paths) == sorted(
        _trained_on(cross_fitted["run"])
    )
