"""`toolkit train --strategy`: one device, every local GPU, or the processes of a TF_CONFIG
cluster (issue 8). Multi-worker runs are two real processes talking gRPC over 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TINY_PROFILE
from test_train import write_learnable_folder

from toolkit.cli import main
from toolkit.errors import UsageError
from toolkit.train import (
    TrainOptions,
    Worker,
    _fit_across_workers,
    _seed_worker_folder,
    make_strategy,
    read_worker,
    train_model,
    worker_folder,
)

_TOOLKIT = [sys.executable, "-m", "toolkit"]
#: Seconds two worker processes may take (about 30 on two idle cores, 60 on busy ones).
WORKERS_TIMEOUT = 240
TWO = {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]}
WITH_CHIEF = {"chief": ["h0:2222"], "worker": ["h1:2222", "h2:2222"]}


def _tf_config(cluster: dict[str, list[str]], kind: str, index: int) -> dict[str, str]:
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})}


def _free_ports(n: int) -> list[int]:
    """Ports nothing listens on now: bound to port 0, read back, released."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


Workers = tuple[list[subprocess.Popen], list[tuple[Path, Path]]]


def _start_workers(argv: list[str], tmp_path: Path, name: str) -> Workers:
    """Start `argv` as both workers of a two-worker cluster on this machine.

    Each gets its own TF_CONFIG and its own TMPDIR (tmp_path/name-tmp<i>); stdout and
    stderr go to tmp_path/name-<i>.out and .err.
    """
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    procs: list[subprocess.Popen] = []
    logs: list[tuple[Path, Path]] = []
    for index in range(2):
        tmp = tmp_path / f"{name}-tmp{index}"
        tmp.mkdir()
        logs.append((tmp_path / f"{name}-{index}.out", tmp_path / f"{name}-{index}.err"))
        env = {
            **os.environ,
            **_tf_config(cluster, "worker", index),
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONWARNINGS": "ignore",
            "TMPDIR": str(tmp),
        }
        with open(logs[-1][0], "wb") as out, open(logs[-1][1], "wb") as err:
            procs.append(subprocess.Popen(argv, env=env, stdout=out, stderr=err))
    return procs, logs


def _wait_workers(
    workers: Workers, codes: list[int] | None = None, timeout: float = WORKERS_TIMEOUT
) -> list[str]:
    """Wait for both workers (killed past `timeout`: a lone worker waits for its peers
    forever); they must exit with `codes` [0, 0]. Their stdout."""
    procs, logs = workers
    deadline = time.monotonic() + timeout
    try:
        exited = [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    except subprocess.TimeoutExpired:
        exited = None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    errors = [err.read_text(errors="replace")[-3000:] for _, err in logs]
    message = f"workers exited {exited or 'late'}:\n" + "\n---\n".join(errors)
    assert exited == (codes or [0, 0]), message
    return [out.read_text() for out, _ in logs]


def _run_workers(argv: list[str], tmp_path: Path, name: str, **wait: Any) -> list[str]:
    """Run `argv` as both workers of a two-worker cluster; their stdout."""
    return _wait_workers(_start_workers(argv, tmp_path, name), **wait)


def _validated(tmp_path: Path, n_per_class: int) -> Path:
    """A learnable two-class folder, validated once: its manifest, for every worker to read."""
    data = write_learnable_folder(tmp_path / "data", n_per_class=n_per_class)
    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY_PROFILE, encoding="utf-8")
    checked = tmp_path / "checked"
    assert main(["validate", str(data), "-p", str(profile), "-o", str(checked),
                 "--no-faces", "--no-html"]) == 0  # fmt: skip
    return checked / "manifest.parquet"


# ----------------------------------------------------------------------------- units


def test_an_unknown_strategy_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_learnable_folder(tmp_path / "data", n_per_class=2)
    run = tmp_path / "run"
    assert main(["train", str(data), "--strategy", "horovod", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "unknown strategy 'horovod'; choose one of default, mirrored, multiworker" in err
    assert not run.exists()  # refused before the scan
    with pytest.raises(UsageError, match="unknown strategy 'horovod'"):
        train_model(None, run, TrainOptions(strategy="horovod"))
    with pytest.raises(UsageError, match="unknown strategy 'horovod'"):
        make_strategy("horovod")


@pytest.mark.parametrize(
    ("cluster", "kind", "index", "expected"),
    [
        (TWO, "worker", 0, Worker(0, 2)),
        (TWO, "worker", 1, Worker(1, 2)),
        (WITH_CHIEF, "chief", 0, Worker(0, 3)),
        (WITH_CHIEF, "worker", 0, Worker(1, 3)),
        (WITH_CHIEF, "worker", 1, Worker(2, 3)),
    ],
    ids=[
        "worker 0 of two is the chief",
        "worker 1 of two is not",
        "a chief task is the chief",
        "worker 0 follows a chief",
        "worker 1 follows a chief",
    ],
)
def test_a_worker_reads_its_place_from_tf_config(
    cluster: dict[str, list[str]], kind: str, index: int, expected: Worker
) -> None:
    worker = read_worker("multiworker", _tf_config(cluster, kind, index))
    assert worker == expected
    assert worker.is_chief == (expected.index == 0)


def test_one_process_strategies_ignore_tf_config() -> None:
    for strategy in ("default", "mirrored"):
        assert read_worker(strategy, _tf_config(TWO, "worker", 1)) == Worker(0, 1)
        assert read_worker(strategy, {}).is_chief


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "--strategy multiworker needs TF_CONFIG"),
        ({"TF_CONFIG": "workers: 2"}, "TF_CONFIG is not a cluster and a task"),
        ({"TF_CONFIG": json.dumps({"cluster": TWO})}, "TF_CONFIG is not a cluster and a task"),
        (_tf_config(TWO, "worker", 2), "task worker 2 is not one of its cluster's 0 chief and 2"),
        (_tf_config(TWO, "evaluator", 0), "task evaluator 0 is not one of"),
        (_tf_config({**TWO, "chief": ["a:1", "b:1"]}, "chief", 0), "at most one chief"),
    ],
    ids=["unset", "not JSON", "no task", "index past the cluster", "evaluator", "two chiefs"],
)
def test_a_bad_tf_config_is_a_usage_error(environ: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        read_worker("multiworker", environ)


def test_only_the_chief_writes_into_the_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    with worker_folder(out, Worker(0, 2)) as folder:
        assert folder == out and out.is_dir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # what TMPDIR sets
    (tmp_path / "tmp").mkdir()
    with worker_folder(out, Worker(1, 2)) as folder:
        assert folder.parent == tmp_path / "tmp" and folder.name.startswith("toolkit-worker1-")
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints" / "best.weights.h5").write_bytes(b"weights")
    assert not folder.exists()  # removed when the worker is done
    with pytest.raises(KeyboardInterrupt), worker_folder(out, Worker(1, 2)) as folder:
        raise KeyboardInterrupt
    assert not folder.exists()  # and when it fails
    assert list(out.iterdir()) == []


def test_a_resumed_worker_starts_from_the_chiefs_checkpoints_and_history(tmp_path: Path) -> None:
    out, folder = tmp_path / "run", tmp_path / "worker1"
    folder.mkdir()
    _seed_worker_folder(out, folder)  # nothing to start from: a fresh run
    assert list(folder.iterdir()) == []
    files = {
        "checkpoints/backup/latest.weights.h5": b"weights",
        "checkpoints/backup/training_metadata.json": b'{"epoch": 3, "batch": 0}',
        "checkpoints/best.weights.h5": b"best",
        "history.csv": b"epoch,loss,val_loss\n0,0.7,0.6\n",
    }
    for name, content in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(content)
    _seed_worker_folder(out, folder)
    for name, content in files.items():
        assert (folder / name).read_bytes() == content, name


def test_the_datasets_shard_by_element_not_by_file() -> None:
    import tensorflow as tf

    from toolkit.pipeline import DecodedImages, make_dataset

    decoded = DecodedImages(np.zeros((2, 1, 1, 1), np.uint8), np.zeros(2, np.int32), ["a", "b"])
    policy = make_dataset(decoded).options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.DATA  # an index range has no files


def test_the_multi_worker_fit_workaround_keeps_keras_fit_whole() -> None:
    # Across workers Keras 3 fit() fails without it (the two-process test below); here, on
    # one replica, it must leave fit() and its epoch logs as they were.
    import tensorflow as tf

    from toolkit.models import build_seed_cnn
    from toolkit.pipeline import DecodedImages, make_dataset

    strategy = tf.distribute.MirroredStrategy()
    with strategy.scope():
        model = build_seed_cnn((32, 32, 3))
    _fit_across_workers(model, strategy)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    decoded = DecodedImages(images, np.arange(8, dtype=np.int32) % 2, list("abcdefgh"))
    ds = make_dataset(decoded, batch_size=4)
    history = model.fit(ds, validation_data=ds, epochs=2, verbose=0, shuffle=False).history
    assert model.built and model.optimizer.built
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 2 and isinstance(v[0], float) for v in history.values())


# ----------------------------------------------------------------------------- training


def test_mirrored_trains_through_the_cli_and_records_the_strategy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import tensorflow as tf

    data = write_learnable_folder(tmp_path / "data")
    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY_PROFILE, encoding="utf-8")
    run = tmp_path / "run"
    assert main(["train", str(data), "--model", "seed", "--image-size", "32", "--epochs", "2",
                 "--batch-size", "8", "--profile", str(profile), "--out", str(run),
                 "--strategy", "mirrored"]) == 0  # fmt: skip
    config = json.loads((run / "run.json").read_text())
    gpus = len(tf.config.list_physical_devices("GPU"))
    assert config["options"]["strategy"] == "mirrored"
    assert config["replicas"] == max(gpus, 1) and config["workers"] == 1
    assert config["status"] == "finished" and (run / "model.keras").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_scored"] == sum(config["split_counts"]["test"].values())
    if not gpus:
        assert "--strategy mirrored found no GPU: training on the CPU as one replica" in (
            caplog.text
        )


@pytest.mark.slow
def test_two_workers_each_get_their_half_of_every_global_batch(tmp_path: Path) -> None:
    probe = (
        "import json, sys; import numpy as np; import tensorflow as tf;"
        "from toolkit.pipeline import DecodedImages, make_dataset;"
        "strategy = tf.distribute.MultiWorkerMirroredStrategy();"
        "n = 20; ids = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1);"
        "decoded = DecodedImages(ids, np.zeros(n, np.int32), [str(i) for i in range(n)]);"
        "ds = make_dataset(decoded, batch_size=8, shuffle=True, seed=0);"
        "dist = strategy.experimental_distribute_dataset(ds);"
        "local = lambda x: np.rint(strategy.experimental_local_results(x)[0].numpy() * 255);"
        "print(json.dumps([[local(x).ravel().astype(int).tolist() for x, _ in dist]"
        " for epoch in range(2)]))"
    )
    outputs = _run_workers([sys.executable, "-c", probe], tmp_path, "probe")
    first, second = (json.loads(out) for out in outputs)
    for epoch in range(2):
        # global batches of 8, 8 and 4 images: each worker takes half of each, in step
        assert [len(b) for b in first[epoch]] == [len(b) for b in second[epoch]] == [4, 4, 2]
        seen = [i for batch in first[epoch] + second[epoch] for i in batch]
        assert sorted(seen) == list(range(20))  # every image once per epoch, on one worker
    assert first[0] != first[1]  # reshuffled every epoch, alike on both workers


def test_two_worker_processes_train_as_well_as_one(tmp_path: Path) -> None:
    args = ["train", "--manifest", str(_validated(tmp_path, n_per_class=32)), "--model", "seed",
            "--image-size", "32", "--epochs", "6", "--batch-size", "8"]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*args, "--out", str(one)]) == 0
    _run_workers([*_TOOLKIT, *args, "--out", str(two), "--strategy", "multiworker"], tmp_path, "w")

    config = json.loads((two / "run.json").read_text())
    assert config["status"] == "finished"
    assert config["options"]["strategy"] == "multiworker"
    assert config["workers"] == config["replicas"] == 2
    assert config["split_counts"] == json.loads((one / "run.json").read_text())["split_counts"]
    names = {p.relative_to(two).as_posix() for p in two.rglob("*")}
    assert {"model.keras", "metrics.json", "history.csv", "curves.png"} <= names
    assert names == {p.relative_to(one).as_posix() for p in one.rglob("*")}  # nothing more
    assert not list((tmp_path / "w-tmp1").glob("toolkit-worker*"))  # worker 1 cleaned up
    accuracy = [json.loads((r / "metrics.json").read_text())["accuracy"] for r in (one, two)]
    assert min(accuracy) >= 0.8, accuracy  # bright vs dark: learnt alike by one and two

    # a second run into the finished one: every worker refuses, none waits for the others
    argv = [*_TOOLKIT, *args, "--out", str(two), "--strategy", "multiworker"]
    _run_workers(argv, tmp_path, "again", codes=[2, 2], timeout=60)
    assert all("already holds a run" in (tmp_path / f"again-{i}.err").read_text() for i in (0, 1))


@pytest.mark.slow
def test_two_workers_killed_mid_run_resume_where_they_stopped(tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = [*_TOOLKIT, "train", "--manifest", str(_validated(tmp_path, n_per_class=32)),
            "--model", "seed", "--image-size", "32", "--epochs", "6", "--batch-size", "8",
            "--out", str(run), "--strategy", "multiworker"]  # fmt: skip
    procs, _ = _start_workers(argv, tmp_path, "first")
    deadline = time.monotonic() + WORKERS_TIMEOUT
    history = run / "history.csv"
    while time.monotonic() < deadline and all(p.poll() is None for p in procs):
        if history.exists() and len(history.read_text().splitlines()) > 2:
            break  # two epochs written and checkpointed
        time.sleep(0.05)
    for p in procs:
        p.kill()
        p.wait()
    assert json.loads((run / "run.json").read_text())["status"] == "training"
    stopped = len(history.read_text().splitlines()) - 1
    assert 2 <= stopped < 6

    outputs = _run_workers([*_TOOLKIT, "train", "--resume", "--out", str(run)], tmp_path, "again")
    for out in outputs:  # both workers restored the chief's epoch; neither started over
        assert "Epoch 1/6" not in out and f"Epoch {stopped + 1}/6" in out
    config = json.loads((run / "run.json").read_text())
    assert config["status"] == "finished" and config["workers"] == 2
    assert [int(line.split(",")[0]) for line in history.read_text().splitlines()[1:]] == list(
        range(6)
    )
    assert not list((tmp_path / "again-tmp1").glob("toolkit-worker*"))
