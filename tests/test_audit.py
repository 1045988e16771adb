"""The label audit: confident learning with known answers (planted flips), out-of-sample
probabilities, `toolkit audit`, the audit at the end of `toolkit train`, and `--exclude`."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import snapshot, train_on_flipped_folder
from corpus import N_FLIPPED, N_PER_CLASS, write_flipped_folder
from hypothesis import given, settings
from hypothesis import strategies as st

import toolkit.audit as audit_module
from toolkit.audit import (
    ISSUE_COLUMNS,
    OUTLIER_COLUMNS,
    cross_fit_proba,
    find_label_issues,
    outlier_fence,
    outlier_scores,
    usable_folds,
)
from toolkit.cli import main


def planted(
    n: int, k: int, flip_share: float, seed: int, *, sharpness: float = 3.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities of a decent model for n files of k classes, the given labels with a
    seeded share flipped to another class, and which were flipped."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), true] += sharpness
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    flipped = rng.random(n) < flip_share
    labels = true.copy()
    labels[flipped] = (true[flipped] + rng.integers(1, k, int(flipped.sum()))) % k
    return labels, proba, flipped


@pytest.mark.parametrize(
    ("k", "seed"),
    [(2, 0), (2, 1), (3, 2), (4, 3)],
    ids=[
        "two classes: the flipped files are found and ranked first",
        "two classes, another seed: the same",
        "three classes: flips to either other class are found",
        "four classes: the same",
    ],
)
def test_planted_flips_are_found_and_ranked_first(k: int, seed: int) -> None:
    labels, proba, flipped = planted(2000, k, 0.1, seed)
    issues = find_label_issues(labels, proba)
    found = issues.is_issue
    precision = (found & flipped).sum() / found.sum()
    recall = (found & flipped).sum() / flipped.sum()
    assert precision >= 0.85 and recall >= 0.85, (precision, recall)
    # the ranking puts flips first: the top tenth of the flagged files are all flips
    top = issues.ranked[: len(issues.ranked) // 10]
    assert flipped[top].all()
    assert (np.diff(issues.self_confidence[issues.ranked]) >= 0).all()
    assert (issues.suggested[top] != labels[top]).all()


def test_clean_labels_flag_almost_nothing() -> None:
    labels, proba, _ = planted(2000, 2, 0.0, 4, sharpness=4.0)
    assert find_label_issues(labels, proba).is_issue.mean() < 0.02


def test_the_per_class_threshold_is_the_mean_self_confidence() -> None:
    # class 1's files are all given low probabilities: a global 0.5 cut would call every one
    # of them class 0, the class's own mean keeps them
    labels = np.array([0] * 6 + [1] * 6)
    p1 = np.array([0.1, 0.2, 0.1, 0.2, 0.1, 0.9, 0.4, 0.45, 0.4, 0.45, 0.42, 0.05])
    issues = find_label_issues(labels, np.stack([1 - p1, p1], axis=1))
    assert issues.thresholds == pytest.approx([np.mean(1 - p1[:6]), np.mean(p1[6:])])
    # file 5 (given 0, p1 0.9) and file 11 (given 1, p1 0.05) are the flips
    assert np.flatnonzero(issues.is_issue).tolist() == [5, 11]
    assert issues.ranked.tolist() == [11, 5]  # p(given) 0.05 is more suspect than 0.1


def test_a_class_of_one_file_keeps_it() -> None:
    labels = np.array([0, 0, 0, 0, 1])
    p1 = np.array([0.1, 0.2, 0.1, 0.2, 0.01])
    assert not find_label_issues(labels, np.stack([1 - p1, p1], axis=1)).is_issue.any()


_probabilities = st.integers(2, 4).flatmap(
    lambda k: st.lists(
        st.tuples(st.integers(0, k - 1), st.lists(st.floats(0.01, 1.0), min_size=k, max_size=k)),
        min_size=4,
        max_size=60,
    )
)


@settings(max_examples=40, deadline=None)
@given(_probabilities, st.randoms(use_true_random=False))
def test_a_file_whose_label_is_the_most_probable_is_never_flagged_and_order_does_not_matter(
    rows: list[tuple[int, list[float]]], rnd: object
) -> None:
    labels = np.array([label for label, _ in rows])
    proba = np.array([weights for _, weights in rows])
    proba = proba / proba.sum(axis=1, keepdims=True)
    issues = find_label_issues(labels, proba)
    assert not (issues.is_issue & (proba.argmax(axis=1) == labels)).any()
    assert set(issues.ranked) == set(np.flatnonzero(issues.is_issue))
    order = np.arange(len(labels))
    rnd.shuffle(order)  # type: ignore[attr-defined]
    shuffled = find_label_issues(labels[order], proba[order])
    # the same files, up to ties between equal margins (drawn floats rarely tie)
    margins = np.sort(proba, axis=1)
    if len(np.unique(margins.round(12), axis=0)) == len(margins):
        assert (shuffled.is_issue == issues.is_issue[order]).all()


@pytest.mark.parametrize(
    ("k", "flip_share", "seed"),
    [(2, 0.1, 10), (2, 0.3, 11), (3, 0.1, 12), (5, 0.2, 13), (2, 0.0, 14)],
    ids=[
        "two classes, a tenth flipped: the same files as cleanlab",
        "two classes, three tenths flipped: the same",
        "three classes: the same",
        "five classes: the same",
        "no flips: the same",
    ],
)
def test_the_same_files_as_cleanlabs_find_label_issues(
    k: int, flip_share: float, seed: int
) -> None:
    filters = pytest.importorskip("cleanlab.filter")
    for trial in range(20):
        sharpness = 0.5 + 0.2 * trial
        labels, proba, _ = planted(300, k, flip_share, seed * 100 + trial, sharpness=sharpness)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # cleanlab's own deprecations
            theirs = filters.find_label_issues(labels, proba, n_jobs=1)
        assert (find_label_issues(labels, proba).is_issue == theirs).all(), trial


def test_each_file_is_scored_by_a_fit_that_never_saw_it() -> None:
    # embeddings of pure noise, more dimensions than files: a fit that saw a file's label
    # would get it right every time; one that did not is right half the time
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(200, 400))
    labels = rng.integers(0, 2, 200)
    proba = cross_fit_proba(embeddings, labels, folds=5, seed=0)
    assert proba.shape == (200, 2)
    assert np.allclose(proba.sum(axis=1), 1)
    accuracy = (proba.argmax(axis=1) == labels).mean()
    assert 0.3 < accuracy < 0.7


def test_separable_embeddings_are_scored_right() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 150)
    embeddings = rng.normal(size=(150, 8)) + 4 * np.eye(8)[labels]
    proba = cross_fit_proba(embeddings, labels, folds=5, seed=0)
    assert (proba.argmax(axis=1) == labels).mean() > 0.95


@pytest.mark.parametrize(
    ("counts", "folds"),
    [([10, 10], 5), ([10, 3], 3), ([10, 1], 0), ([10, 0], 0)],
    ids=[
        "enough files: the folds asked for",
        "a small class: as many folds as its files",
        "a class of one file: no audit",
        "an empty class: no audit",
    ],
)
def test_the_folds_follow_the_smallest_class(counts: list[int], folds: int) -> None:
    labels = np.repeat(np.arange(len(counts)), counts)
    assert usable_folds(labels, len(counts)) == folds


@pytest.mark.parametrize(
    ("k", "seed"),
    [(2, 0), (3, 1)],
    ids=["two classes: the planted strangers are the outliers", "three classes: the same"],
)
def test_files_far_from_every_class_are_the_outliers(k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, 300)
    embeddings = rng.normal(size=(300, 16)) + 6 * np.eye(16)[labels]
    strangers = np.arange(0, 300, 60)  # five files unlike any class, under the labels given
    unused = np.eye(16)[k + 2 : k + 6].sum(axis=0)  # directions no class takes
    embeddings[strangers] = rng.normal(size=(len(strangers), 16)) + 8 * unused
    scores = outlier_scores(embeddings, labels, folds=5, seed=0)
    flagged = np.flatnonzero(scores > outlier_fence(scores))
    assert set(strangers) <= set(flagged)
    assert len(flagged) <= len(strangers) + 3  # a typical file is about 1, far below the fence
    assert np.median(scores) == pytest.approx(1.0, abs=0.2)


def test_no_files_no_fence() -> None:
    assert outlier_fence(np.zeros(0)) == np.inf


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A seed-model run on a folder with planted flips; the audit runs as training ends."""
    return train_on_flipped_folder(tmp_path_factory.mktemp("audit"))


def test_training_ends_with_the_audit_and_the_flipped_files_rank_first(
    audited: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    run = audited["run"]
    issues = pd.read_csv(run / "label_issues.csv")
    assert tuple(issues.columns) == ISSUE_COLUMNS
    flipped = set(audited["flipped"])
    assert set(issues["path"].head(len(flipped))) == flipped
    assert (issues["given_label"] != issues["suggested_label"]).all()
    assert issues["score"].is_monotonic_increasing
    assert set(issues["root"]) == {str(audited["data"].resolve())}
    assert (run / "label_issues.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    outliers = pd.read_csv(run / "outliers.csv")
    assert tuple(outliers.columns) == OUTLIER_COLUMNS
    assert outliers["score"].is_monotonic_decreasing
    assert (run / "outliers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((run / "run.json").read_text())["audit"]
    assert record["outliers"]["n_flagged"] == len(outliers)
    assert record["file"] == "label_issues.csv"
    assert record["n_scored"] == 2 * (N_PER_CLASS + N_FLIPPED)
    assert record["n_flagged"] == len(issues)
    assert snapshot(audited["data"]) == audited["before"]


def test_toolkit_audit_ranks_a_finished_run_again(
    audited: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    run = audited["run"]
    before = (run / "label_issues.csv").read_bytes()
    assert main(["audit", str(run)]) == 0
    captured = capsys.readouterr()
    first = sorted(audited["flipped"])[0]
    assert f"{first}: label_issue: filed as" in captured.err
    assert "look mislabelled" in captured.out
    assert (run / "label_issues.csv").read_bytes() == before  # the same seed, the same folds


def test_training_again_without_the_flagged_files_records_what_it_left_out(
    audited: dict, tmp_path: Path
) -> None:
    listing = audited["run"] / "label_issues.csv"
    run = tmp_path / "clean-run"
    code = main(
        ["train", str(audited["data"]), "--model", "seed", "--image-size", "32", "--epochs",
         "1", "--profile", str(audited["profile"]), "--out", str(run), "--batch-size", "4",
         "--exclude", str(listing), "--no-audit"]
    )  # fmt: skip
    assert code == 0
    config = json.loads((run / "run.json").read_text())
    n_listed = len(pd.read_csv(listing))
    assert config["excluded"] == {
        "file": str(listing),
        "sha256": hashlib.sha256(listing.read_bytes()).hexdigest(),
        "n_listed": n_listed,
        "n_excluded": n_listed,
    }
    trained_on = sum(sum(c.values()) for c in config["split_counts"].values())
    assert trained_on == 2 * (N_PER_CLASS + N_FLIPPED) - n_listed
    assert "audit" not in config and not (run / "label_issues.csv").exists()


@pytest.mark.parametrize(
    ("listing", "message"),
    [
        ("path,label\nhappy/a.png,happy\n", "not a label_issues.csv"),
        (",".join(ISSUE_COLUMNS) + "\nhappy/a.png,/elsewhere,train,happy,sad,0.1\n",
         "outside the data folders"),
        (",".join(ISSUE_COLUMNS) + "\n../happy/a.png,{root},train,happy,sad,0.1\n",
         "outside the data folders"),
        (",".join(ISSUE_COLUMNS) + "\nhappy/a.png,{root}\x00x,train,happy,sad,0.1\n",
         "NUL byte"),
        (",".join(ISSUE_COLUMNS) + "\nhappy/a.png,,train,happy,sad,0.1\n",
         "outside the data folders"),
    ],
    ids=[
        "another CSV is not a label_issues.csv",
        "a file under another root is outside the data folders",
        "a path climbing out of the root is outside the data folders",
        "a root holding a NUL byte is refused, not a crash",
        "an empty root is not the working folder",
    ],
)  # fmt: skip
def test_an_exclude_list_that_is_not_a_label_issues_csv_of_these_folders_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], listing: str, message: str
) -> None:
    data = tmp_path / "data"
    write_flipped_folder(data)
    bad = tmp_path / "label_issues.csv"
    bad.write_text(listing.format(root=data.resolve()), encoding="utf-8")
    code = main(["train", str(data), "--out", str(tmp_path / "run"), "--exclude", str(bad)])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and str(bad) in err
    assert not (tmp_path / "run").exists()


def test_audit_refuses_a_folder_that_holds_no_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_a_resumed_run_refuses_an_exclude_list(
    audited: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = audited["run"] / "label_issues.csv"
    code = main(["train", "--resume", "--out", str(audited["run"]), "--exclude", str(listing)])
    assert code == 2
    assert "--exclude applies to a new run" in capsys.readouterr().err


def test_the_python_api_audits_a_run_as_the_command_does(audited: dict) -> None:
    from toolkit.api import audit_run

    result = audit_run(audited["run"])
    written = pd.read_csv(audited["run"] / "label_issues.csv")
    assert result.issues["path"].tolist() == written["path"].tolist()
    assert len(result.scored) == 2 * (N_PER_CLASS + N_FLIPPED)
    assert result.scored.loc[result.scored["is_issue"], "path"].isin(written["path"]).all()


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read it"), (b"\xff\xfe\x00garbage", "not a label_issues.csv")],
    ids=["a missing exclude list cannot be read", "binary bytes are not a label_issues.csv"],
)
def test_an_unreadable_exclude_list_is_refused_before_any_scan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, message: str
) -> None:
    data = tmp_path / "data"
    write_flipped_folder(data)
    listing = tmp_path / "label_issues.csv"
    if content is not None:
        listing.write_bytes(content)
    code = main(["train", str(data), "--out", str(tmp_path / "run"), "--exclude", str(listing)])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "files," not in err  # refused before the folder was scanned


def test_embeddings_that_are_not_finite_skip_the_audit_and_say_why(
    audited: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    # a diverged network embeds NaN: the run stands, the audit says why it ranked nothing
    run = tmp_path / "run"
    shutil.copytree(audited["run"], run)
    real_embed = audit_module.embed
    monkeypatch.setattr(
        audit_module, "embed", lambda r, part: np.full_like(real_embed(r, part), np.nan)
    )
    assert main(["audit", str(run)]) == 0
    capsys.readouterr()
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished"
    assert "NaN" in record["audit"]["skipped"]
    assert pd.read_csv(run / "label_issues.csv").empty


def test_the_outliers_printed_end_with_how_many_more_there_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from types import SimpleNamespace

    from toolkit.cli import MAX_FINDING_LINES, _echo_audit

    n = MAX_FINDING_LINES + 5
    outliers = pd.DataFrame({"path": [f"happy/{i}.jpg" for i in range(n)], "score": 9.0})
    audit = SimpleNamespace(
        why_not=None, issues=pd.DataFrame(columns=list(ISSUE_COLUMNS)), scored=outliers,
        folds=5, folder=tmp_path, outliers=outliers,
    )  # fmt: skip
    _echo_audit(audit)
    err = capsys.readouterr().err
    assert err.count(": outlier:") == MAX_FINDING_LINES
    assert "...and 5 more" in err
