"""Shared fixtures: tiny generated image folders (every random generator seeded)."""

from __future__ import annotations

import hashlib
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from corpus import HostileCorpus, write_clean_folder, write_hostile_folder

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"

#: A profile for 32 px test images: the tutorial's rules with byte and count limits that fit.
TINY_PROFILE = """
name = "tiny"
description = "tutorial rules for 32 px test images"
extends = "tutorial"
[rules.min_file_bytes]
min_bytes = 100
[rules.min_files_per_class]
min_files = 2
[rules.has_face]
severity = "off"
"""


@pytest.fixture
def crash_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system temp folder, for this test alone: where a crash's traceback file (exit 3)
    is written, so a test that crashes a command on purpose leaves nothing in /tmp."""
    folder = tmp_path / "systemp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    """A Dask client of two single-threaded workers in this process (their code counts for
    coverage): the Dask engine's tests share one per module."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


def shared_dataset(name: str) -> Path:
    """A folder of ../shared/datasets, or skip the test saying why."""
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the shared datasets exist in CI, not in a fresh clone")
    return path


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


@pytest.fixture
def tiny_profile(tmp_path: Path) -> Path:
    """A profile file (TOML) suited to the 32 px generated images."""
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_PROFILE, encoding="utf-8")
    return path


@pytest.fixture
def clean_root(tmp_path: Path) -> Path:
    """A clean two-class folder of distinct 32 px JPEGs (4 per class)."""
    root = tmp_path / "clean"
    write_clean_folder(root, n_per_class=4)
    return root


@pytest.fixture
def hostile(tmp_path: Path) -> HostileCorpus:
    """One folder holding every hostile case the toolkit must survive."""
    return write_hostile_folder(tmp_path / "hostile")


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every regular file below root (links not followed)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            try:
                with open(path, "rb") as fh:
                    digest = hashlib.sha256(fh.read()).hexdigest()
            except PermissionError:
                digest = "unreadable"
            out[os.path.relpath(path, root)] = (digest, os.stat(path).st_mtime_ns)
    return out


#: How long a test may wait on a FIFO before the guard below unblocks it and fails the test.
FIFO_PATIENCE_S = 45


@pytest.fixture
def fifo_swap() -> Iterator[Callable[[Path], Path]]:
    """Replace a file by a FIFO (as an attacker could, after validation): `fifo_swap(path)`.

    A test still blocked on one after FIFO_PATIENCE_S fails instead of hanging the run: a
    writer opens every FIFO and closes it at once, which ends the blocked open or read
    (with no bytes), and the test fails at teardown.
    """
    made: list[Path] = []
    blocked: list[str] = []

    def write_once(fifo: Path) -> None:
        os.close(os.open(fifo, os.O_WRONLY))  # waits for a reader, like the code under test
        blocked.append(str(fifo))

    def release(signum: int, frame: object) -> None:
        for fifo in made:
            threading.Thread(target=write_once, args=(fifo,), daemon=True).start()

    def swap(path: Path) -> Path:
        Path(path).unlink(missing_ok=True)
        os.mkfifo(path)
        made.append(Path(path))
        return Path(path)

    previous = signal.signal(signal.SIGALRM, release)
    signal.alarm(FIFO_PATIENCE_S)
    try:
        yield swap
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert not blocked, f"blocked reading FIFO(s) {sorted(set(blocked))}"


def train_on_flipped_folder(base: Path, *extra: str) -> dict[str, object]:
    """A seed-model run (32 px, 8 epochs) on `write_flipped_folder`'s planted flips in
    base/data: the run, the data, the profile, the flipped paths and a snapshot of the data
    taken before training. `extra`: more `toolkit train` arguments."""
    from corpus import write_flipped_folder

    from toolkit.cli import main

    data = base / "data"
    flipped = write_flipped_folder(data)
    profile = base / "tiny.toml"
    profile.write_text(TINY_PROFILE, encoding="utf-8")
    before = snapshot(data)
    run = base / "run"
    code = main(
        ["train", str(data), "--model", "seed", "--image-size", "32", "--epochs", "8",
         "--profile", str(profile), "--out", str(run), "--batch-size", "4", *extra]
    )  # fmt: skip
    assert code == 0
    return {"data": data, "run": run, "profile": profile, "flipped": flipped, "before": before}
