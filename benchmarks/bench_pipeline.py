"""Suite 2: our tf.data pipeline against the tutorial's `image_dataset_from_directory` +
`map(x/255)`, images per second on the same accepted files at the same size (256x256x3):
the first epoch (decoding) and a later epoch (ours from the uint8 cache, theirs decoding
again, as the tutorial's never caches)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conftest import DataSet, DataSets, Plan, paired
from figures import Session, best, spread
from tutorial import tutorial_dataset

from toolkit.manifest import ACCEPTED
from toolkit.models import InputSpec
from toolkit.pipeline import DecodedImages, class_names, decode_rows, make_dataset

SPEC = InputSpec(size=256, channels=3)  # the tutorial's input, the `seed` recipe's
#: The extensions image_dataset_from_directory lists; other files are invisible to it.
_TF_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")


class Inputs:
    """The accepted rows of one set, and a folder of links to exactly those files."""

    def __init__(self, data: DataSet, manifest: Any, folder: Path) -> None:
        self.data = data
        self.rows = manifest[manifest["status"] == ACCEPTED]
        self.rows.attrs = dict(manifest.attrs)
        self.labels = class_names(manifest)
        self.folder = folder
        for rel in self.rows["path"]:
            link = folder / rel
            if link.suffix.lower() not in _TF_EXTENSIONS:  # same bytes, a name TF will list
                link = link.with_name(link.name + ".jpg")
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(data.root / rel, link)

    def decode(self) -> DecodedImages:
        """Our first step: every accepted file decoded once into the uint8 cache."""
        return decode_rows(self.rows, SPEC, self.labels, root=self.data.root)


@pytest.fixture(scope="module")
def inputs(datasets: DataSets, plan: Plan, tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    """mratashnejad's accepted files (generated photos in the quick run), linked for TF."""
    data = datasets.get("photos") if plan.quick else datasets.get("mratashnejad", "photos")
    return Inputs(data, datasets.validated(data), tmp_path_factory.mktemp("accepted"))


def count_epoch(dataset: Any) -> int:
    """Iterate one epoch; check every batch's shape and the first batch's scale; count."""
    n = 0
    for i, (x, y) in enumerate(dataset):
        assert tuple(x.shape[1:]) == SPEC.shape and x.dtype.name == "float32"
        assert x.shape[0] == y.shape[0] <= 32
        if i == 0:
            assert float(x.numpy().min()) >= 0.0 and float(x.numpy().max()) <= 1.0
        n += int(x.shape[0])
    return n


def test_first_epoch_against_image_dataset_from_directory(
    benchmark, inputs: Inputs, plan: Plan, results: Session, judge
) -> None:
    n = len(inputs.rows)
    benchmark.group = "pipeline: first epoch"
    run = paired(
        benchmark,
        lambda: count_epoch(make_dataset(inputs.decode(), shuffle=True)),
        lambda: count_epoch(tutorial_dataset(inputs.folder, SPEC.size)),
        rounds=plan.rounds,
    )
    assert run.ours_result == n, "our pipeline left files out"
    assert run.baseline_result == n, "image_dataset_from_directory saw other files"
    ours, theirs = n / best(run.ours), n / best(run.baseline)
    label = f"{inputs.data.label}: {n:,} accepted, 256x256x3"
    results.add(
        "pipeline",
        "ours, first epoch (decode + cache + batches)",
        ours,
        "images/s",
        label,
        spread(run.ours),
    )
    results.add(
        "pipeline",
        "image_dataset_from_directory + x/255, an epoch",
        theirs,
        "images/s",
        label,
        spread(run.baseline),
    )
    ratio = judge(
        "pipeline_first_epoch", ours / theirs, "pipeline / tutorial's, first epoch", label
    )
    assert ratio.passed, (
        f"first epoch: ours {ours:.0f} images/s, image_dataset_from_directory {theirs:.0f} "
        f"images/s: {ratio.value:.2f}x, below the floor {ratio.limit}"
    )


def test_cached_epoch_against_image_dataset_from_directory(
    benchmark, inputs: Inputs, plan: Plan, results: Session, judge
) -> None:
    n = len(inputs.rows)
    ours_ds = make_dataset(inputs.decode(), shuffle=True)
    theirs_ds = tutorial_dataset(inputs.folder, SPEC.size)
    benchmark.group = "pipeline: later epoch"
    run = paired(
        benchmark,
        lambda: count_epoch(ours_ds),
        lambda: count_epoch(theirs_ds),
        rounds=plan.cached_rounds,
    )
    assert run.ours_result == run.baseline_result == n
    ours, theirs = n / best(run.ours), n / best(run.baseline)
    label = f"{inputs.data.label}: {n:,} accepted, 256x256x3"
    results.add(
        "pipeline",
        "ours, later epoch (from the uint8 cache)",
        ours,
        "images/s",
        label,
        spread(run.ours),
    )
    results.add(
        "pipeline",
        "image_dataset_from_directory + x/255, later epoch",
        theirs,
        "images/s",
        label,
        spread(run.baseline),
    )
    ratio = judge(
        "pipeline_cached_epoch", ours / theirs, "pipeline / tutorial's, later epoch", label
    )
    assert ratio.passed, (
        f"later epoch: ours {ours:.0f} images/s, image_dataset_from_directory {theirs:.0f} "
        f"images/s: {ratio.value:.2f}x, below the floor {ratio.limit}"
    )
