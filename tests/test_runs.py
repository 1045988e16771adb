"""The run folder's own module: run.json written whole and read back checked, a run that
dies marked failed, a finished run's facts kept in order, history.csv and the model file
refused when they are not what training writes. No TensorFlow: these take milliseconds."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit.errors import ManifestError, RecordError, processing
from toolkit.paths import atomic_write_json
from toolkit.runs import (
    CHECKPOINTS,
    FAILED,
    FINISHED,
    HISTORY_CSV,
    MODEL_FILE,
    RUN_JSON,
    TRAINING,
    check_resumable_files,
    failure_recorded,
    model_file,
    read_history,
    read_run_config,
    record_finished,
)


def _record(**changes: object) -> dict[str, object]:
    """run.json as a training run writes it when it starts (the keys readers check)."""
    return {
        "command": "toolkit train data",
        "status": TRAINING,
        "model": {"name": "seed", "tta_flip": False},
        "input": {"size": 32, "channels": 3, "crop_faces": False, "face_margin": 0.25},
        "labels": ["happy", "sad"],
        "profile": {"name": "tiny", "spec": "tiny"},
        **changes,
    }


def test_a_written_record_reads_back_unchanged_with_its_keys_in_order(tmp_path: Path) -> None:
    record = _record(labels=["happy", "sad", "ünïcode"], temperature=1.5)
    atomic_write_json(tmp_path / RUN_JSON, record)
    text = (tmp_path / RUN_JSON).read_text(encoding="utf-8")
    assert text == json.dumps(record, indent=2, ensure_ascii=False) + "\n"  # readable by eye
    assert list(read_run_config(tmp_path)) == list(record)
    assert read_run_config(tmp_path) == record
    assert os.listdir(tmp_path) == [RUN_JSON]  # no temporary file left beside it


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    labels=st.lists(
        # class names as the scan spells them: text without NUL, undecodable bytes as \xNN
        st.text(
            st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
            min_size=1,
            max_size=12,
        ),
        min_size=2,
        max_size=5,
        unique=True,
    ),
    size=st.integers(1, 4096),
)
def test_any_record_training_could_write_reads_back_as_written(
    tmp_path: Path, labels: list[str], size: int
) -> None:
    record = _record(labels=labels, input={"size": size, "channels": 1})
    atomic_write_json(tmp_path / RUN_JSON, record)
    assert read_run_config(tmp_path) == record


def test_a_folder_without_run_json_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"not a run folder \(no run.json"):
        read_run_config(tmp_path)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"labels": ["happy"]}, "labels"),
        ({"labels": ["happy", "happy"]}, "labels"),
        ({"input": {"size": 10**6}}, "input.size"),
        ({"input": {"channels": 2}}, "input.channels"),
        ({"input": {"size": 32, "shell": "rm -rf /"}}, "input"),
        ({"temperature": -1.0}, "temperature"),
        ({"model": {"tta_flip": "yes"}}, "model"),
        ({"profile": {"spec": 7}}, "profile"),
        ({"status": ["finished"]}, "status"),
    ],
    ids=[
        "one class is not a model's labels",
        "a class named twice is refused",
        "an input side no model takes is refused",
        "two channels are neither grey nor colour",
        "an input key training never writes is refused",
        "a negative temperature is refused",
        "tta_flip must be true or false",
        "the profile's spec must be text",
        "the status must be text",
    ],
)
def test_an_edited_record_is_refused_naming_its_key(
    tmp_path: Path, changes: dict[str, object], key: str
) -> None:
    atomic_write_json(tmp_path / RUN_JSON, _record(**changes))
    with pytest.raises(RecordError) as caught:
        read_run_config(tmp_path)
    assert caught.value.key == key
    assert "the record is refused, nothing used" in str(caught.value)


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"\xff\xfe", b"[1, 2]"],
    ids=["text that is not JSON", "bytes that are not UTF-8", "JSON that is not an object"],
)
def test_an_unreadable_record_is_refused_whole(tmp_path: Path, content: bytes) -> None:
    (tmp_path / RUN_JSON).write_bytes(content)
    with pytest.raises(RecordError) as caught:
        read_run_config(tmp_path)
    assert caught.value.key == "file"


def test_a_run_that_dies_is_marked_failed_with_its_error_and_file(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / RUN_JSON, _record())
    with pytest.raises(ValueError), failure_recorded(tmp_path), processing("sad/x.png"):
        raise ValueError("bad pixels")
    record = json.loads((tmp_path / RUN_JSON).read_text(encoding="utf-8"))
    assert record["status"] == FAILED
    assert record["error"] == "ValueError: bad pixels (while processing sad/x.png)"
    assert list(record)[-2:] == ["error", "failed_at"]
    assert read_run_config(tmp_path)["labels"] == ["happy", "sad"]  # still a readable record


def test_a_run_that_dies_before_its_record_is_written_leaves_none(tmp_path: Path) -> None:
    with pytest.raises(KeyError), failure_recorded(tmp_path):
        raise KeyError("early")
    assert os.listdir(tmp_path) == []


def test_a_finished_run_adds_its_facts_after_the_record_in_the_order_given(tmp_path: Path) -> None:
    record = _record()
    record_finished(tmp_path, record, epochs_run=3, seconds=1.5, diagnosis="good fit")
    written = json.loads((tmp_path / RUN_JSON).read_text(encoding="utf-8"))
    assert written == record and written["status"] == FINISHED
    assert list(written)[-4:] == ["finished_at", "epochs_run", "seconds", "diagnosis"]
    assert list(written)[:2] == ["command", "status"]  # the status keeps its place


def test_history_keeps_the_last_of_a_resumed_runs_repeated_epochs(tmp_path: Path) -> None:
    assert read_history(tmp_path) == {}  # none yet
    (tmp_path / HISTORY_CSV).write_text("epoch,loss,val_loss\n0,0.9,0.8\n1,0.7,0.7\n1,0.6,0.5\n")
    assert read_history(tmp_path) == {"epoch": [0, 1], "loss": [0.9, 0.6], "val_loss": [0.8, 0.5]}
    assert (tmp_path / HISTORY_CSV).read_text().splitlines()[1:] == ["0,0.9,0.8", "1,0.6,0.5"]


def test_a_resumable_folder_holds_only_what_training_writes(
    tmp_path: Path, fifo_swap: Callable[[Path], Path]
) -> None:
    (tmp_path / CHECKPOINTS / "backup").mkdir(parents=True)
    (tmp_path / CHECKPOINTS / "backup" / "state.json").write_text("{}")
    (tmp_path / HISTORY_CSV).write_text("epoch,loss\n")
    check_resumable_files(tmp_path)  # regular files and folders: nothing raised
    fifo_swap(tmp_path / HISTORY_CSV)
    with pytest.raises(RecordError, match="nothing resumed") as caught:
        check_resumable_files(tmp_path)
    assert caught.value.path == tmp_path / HISTORY_CSV


def test_a_model_file_must_be_a_regular_file_inside_the_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(ManifestError, match="did training finish"):
        model_file(run)
    (tmp_path / MODEL_FILE).write_bytes(b"elsewhere")
    (run / MODEL_FILE).symlink_to(tmp_path / MODEL_FILE)
    with pytest.raises(RecordError) as caught:
        model_file(run)
    assert caught.value.key == MODEL_FILE
    (run / MODEL_FILE).unlink()
    (run / MODEL_FILE).write_bytes(b"model")
    assert model_file(run) == run / MODEL_FILE


@pytest.mark.parametrize(
    ("rows", "epochs"),
    [
        ("0,0.9,0.8\n1,0.7,0.7\n2,0.6,0.5\n", [0, 1, 2]),
        ("0,0.9,0.8\n1,0.7,0.7\n1,0.6,0.5\n2,0.5,0.4\n", [0, 1, 2]),
        ("0,0.9,0.8\n", [0]),
    ],
    ids=[
        "three epochs",
        "a resumed run that repeated an epoch",
        "a single epoch, where a plot would draw half-epoch ticks",
    ],
)
def test_the_curves_number_epochs_as_history_csv_does_on_whole_ticks(
    tmp_path: Path, rows: str, epochs: list[int]
) -> None:
    from toolkit.report.training import draw_curves

    # epoch, then a loss and an accuracy for the training and the validation split
    lines = [f"{r},{r.split(',')[1]},{r.split(',')[2]}" for r in rows.splitlines()]
    header = "epoch,loss,val_loss,accuracy,val_accuracy"
    (tmp_path / HISTORY_CSV).write_text("\n".join([header, *lines]) + "\n")
    fig = draw_curves(read_history(tmp_path))
    fig.canvas.draw()
    for ax in fig.axes:
        assert [list(line.get_xdata()) for line in ax.get_lines()] == [epochs, epochs]
        low, high = ax.get_xlim()
        shown = [t for t in ax.get_xticks() if low <= t <= high]
        assert shown and all(float(t).is_integer() for t in shown), shown


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ({}, {"epochs": 20, "learning_rate": 1e-3, "patience": 5, "image_size": 256}),
        (
            {"epochs": 3, "learning_rate": 0.01, "patience": 2, "image_size": 32},
            {"epochs": 3, "learning_rate": 0.01, "patience": 2, "image_size": 32},
        ),
    ],
    ids=["nothing given: the model's own values", "every value given: those values"],
)
def test_run_json_records_the_values_training_uses_never_null(
    tmp_path: Path, tiny_profile: Path, given: dict[str, object], used: dict[str, object]
) -> None:
    from test_train import write_learnable_folder

    from toolkit.check import check_folder
    from toolkit.profiles import load_profile
    from toolkit.train import TrainOptions, _run_record, plan_run

    profile = load_profile(str(tiny_profile))
    manifest = check_folder(write_learnable_folder(tmp_path / "data"), profile).manifest
    plan = plan_run(manifest, tmp_path / "run", TrainOptions(model="seed", **given))

    class OneDevice:
        num_replicas_in_sync = 1

    record = _run_record(plan, OneDevice(), profile=profile, profile_specs=None, command="")
    options = record["options"]
    assert None not in options.values()
    assert {k: options[k] for k in used} == used
    assert options["image_size"] == record["input"]["size"]
