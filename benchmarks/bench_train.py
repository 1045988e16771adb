"""Suite 3: the `default` model against the tutorial's `seed` model, each at its own input
size and batch 32: milliseconds per training step, images per second training and
predicting, and (full run) accuracy and the time each needs to reach the default model's
accuracy target (its best validation accuracy)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import DataSets, Plan, paired
from figures import Session, best, spread

from toolkit.manifest import ACCEPTED
from toolkit.models import get_recipe
from toolkit.pipeline import DecodedImages, class_names, decode_rows, make_dataset
from toolkit.profiles import load_profile

BATCH = 32
MODELS = ("seed", "default")


class Trainee:
    """One recipe's model, built and traced, with the accepted images decoded for it."""

    def __init__(self, name: str, rows: Any, labels: list[str], root: Path) -> None:
        self.recipe = get_recipe(name)
        self.spec = self.recipe.input
        self.decoded: DecodedImages = decode_rows(rows, self.spec, labels, root=root)
        assert len(self.decoded) == len(rows), self.decoded.problems
        self.model = self.recipe.build(
            input_shape=self.spec.shape,
            n_classes=len(labels),
            learning_rate=self.recipe.learning_rate,
            seed=0,
        )
        self.batches = make_dataset(self.decoded, batch_size=BATCH, shuffle=True).repeat()

    def fit(self, steps: int) -> list[float]:
        """`steps` training steps of batch 32; the losses (one epoch of `steps`)."""
        history = self.model.fit(
            self.batches,
            steps_per_epoch=steps,
            epochs=1,
            shuffle=False,  # the dataset reshuffles itself (Keras 3.15.1 warns otherwise)
            verbose=0,
        )
        return history.history["loss"]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for the images in x (already scaled), batch 32."""
        return self.model.predict(x, batch_size=BATCH, verbose=0)

    def inputs(self, n: int) -> np.ndarray:
        """n accepted images (repeated as needed), scaled to [0, 1] as the pipeline does."""
        images = self.decoded.images[np.arange(n) % len(self.decoded)]
        return images.astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def trainees(datasets: DataSets, plan: Plan) -> dict[str, Trainee]:
    """Both models on renotte's accepted files (generated photos in the quick run)."""
    data = datasets.get("photos") if plan.quick else datasets.get("renotte")
    manifest = datasets.validated(data)
    rows = manifest[manifest["status"] == ACCEPTED]
    rows.attrs = dict(manifest.attrs)
    labels = class_names(manifest)
    out = {name: Trainee(name, rows, labels, data.root) for name in MODELS}
    for trainee in out.values():  # trace and warm up once, outside every timed round
        trainee.fit(2)
        trainee.predict(trainee.inputs(BATCH))
    return out


def test_training_images_per_second_default_against_seed(
    benchmark, trainees: dict[str, Trainee], plan: Plan, results: Session, judge
) -> None:
    seed, default = trainees["seed"], trainees["default"]
    steps = plan.train_steps
    benchmark.group = "train: steps of batch 32"
    run = paired(benchmark, lambda: default.fit(steps), lambda: seed.fit(steps), rounds=plan.rounds)
    for losses in (run.ours_result, run.baseline_result):
        assert len(losses) == 1 and math.isfinite(losses[0])
    rates = {}
    for name, seconds in (("seed", run.baseline), ("default", run.ours)):
        shape = "x".join(map(str, trainees[name].spec.shape))
        step_ms = 1000 * best(seconds) / steps
        rates[name] = BATCH * steps / best(seconds)
        results.add(
            "train",
            f"{name} model ({shape}), training step",
            step_ms,
            "ms/step",
            f"batch {BATCH}",
            spread(seconds),
        )
        results.add(
            "train", f"{name} model ({shape}), training", rates[name], "images/s", f"batch {BATCH}"
        )
    ratio = judge(
        "default_vs_seed_train",
        rates["default"] / rates["seed"],
        "default / seed model, training images/s",
        f"batch {BATCH}",
    )
    assert ratio.passed, (
        f"default trains {rates['default']:.0f} images/s, seed {rates['seed']:.0f}: "
        f"{ratio.value:.2f}x, below the floor {ratio.limit}"
    )


def test_inference_images_per_second_default_against_seed(
    benchmark, trainees: dict[str, Trainee], plan: Plan, results: Session
) -> None:
    seed, default = trainees["seed"], trainees["default"]
    n = plan.infer_images
    x = {name: trainees[name].inputs(n) for name in MODELS}
    benchmark.group = "train: inference"
    run = paired(
        benchmark,
        lambda: default.predict(x["default"]),
        lambda: seed.predict(x["seed"]),
        rounds=plan.rounds,
    )
    for probs in (run.ours_result, run.baseline_result):
        assert probs.shape == (n, 1) and np.all((probs >= 0) & (probs <= 1))
    rates = {"seed": n / best(run.baseline), "default": n / best(run.ours)}
    for name, rate in rates.items():
        shape = "x".join(map(str, trainees[name].spec.shape))
        results.add(
            "train", f"{name} model ({shape}), inference", rate, "images/s", f"batch {BATCH}"
        )
    results.info(
        "train",
        "default / seed model, inference images/s",
        rates["default"] / rates["seed"],
        f"batch {BATCH}",
    )


def epoch_clock() -> Any:
    """A Keras callback noting, at each epoch's end, the seconds since the fit began."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            self.started = time.perf_counter()
            self.seconds: list[float] = []

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.seconds.append(time.perf_counter() - self.started)

    return EpochClock()


#: Faces per class the accuracy comparison trains on (FER2013 train) and scores (FER2013
#: test, which neither model sees), as CI's model-quality test does. Renotte's 117
#: training photos, the tutorial's own, teach neither model expressions (both scored
#: 59-65% on mratashnejad, within noise of each other), so they cannot rank the two.
TRAIN_PER_CLASS, UNSEEN_PER_CLASS = 600, 300


def first_per_class(manifest: Any, n: int) -> Any:
    """The first `n` accepted rows of each class, by path: the same sample every run."""
    rows = manifest[manifest["status"] == ACCEPTED].sort_values("path")
    sample = rows.groupby("label", group_keys=False).head(n)
    sample.attrs = dict(manifest.attrs)
    return sample


def test_default_model_is_more_accurate_and_reaches_its_accuracy_sooner(
    datasets: DataSets, plan: Plan, results: Session, judge, tmp_path: Path
) -> None:
    """Both recipes trained to the end (early stopping), as `toolkit train` does, on the
    same 1,200 FER2013 train faces; each scored on its test split and on 600 FER2013 test
    faces, which neither saw; and the time each takes to reach the default model's best
    validation accuracy (its accuracy target)."""
    if not plan.accuracy:
        pytest.skip("accuracy needs full training runs: only in the full run (tox -e bench)")
    from toolkit.runs import load_run
    from toolkit.scores import predict_proba, score_predictions
    from toolkit.train import TrainOptions, train_model

    data, unseen = datasets.get("fer2013/train"), datasets.get("fer2013/test")
    manifest = first_per_class(datasets.validated(data), TRAIN_PER_CLASS)
    profile = load_profile(data.profile)
    runs = {}
    for name in MODELS:
        clock = epoch_clock()
        result = train_model(
            manifest,
            tmp_path / name,
            TrainOptions(model=name, seed=0),
            profile=profile,
            callbacks=[clock],
        )
        val = result.history["val_accuracy"]
        assert len(val) == len(clock.seconds) > 0
        runs[name] = (result, val, clock.seconds)
    counts = runs["seed"][0].split_counts
    n_val, n_test = (sum(counts[s].values()) for s in ("validation", "test"))
    label = f"{data.label}, {len(manifest):,} sampled: {n_val} validation, {n_test} test images"
    target = max(runs["default"][1])
    accuracy = {}
    for name, (result, val, seconds) in runs.items():
        results.add(
            "train",
            f"{name} model, test accuracy",
            100 * result.metrics["accuracy"],
            "%",
            label,
            f"{len(val)} epochs, {seconds[-1]:.0f} s",
        )
        results.add("train", f"{name} model, best validation accuracy", 100 * max(val), "%", label)
        reached = next((t for a, t in zip(val, seconds, strict=True) if a >= target), None)
        if reached is None:
            results.notes.append(f"{name} never reached {target:.1%} validation accuracy")
        else:
            results.add(
                "train",
                f"{name} model, time to {target:.1%} validation accuracy (default's best)",
                reached,
                "s",
                label,
            )
        accuracy[name] = result.metrics["accuracy"]
    scored_on = label
    if unseen.name != data.name:  # a second set neither model saw
        rows = first_per_class(datasets.validated(unseen), UNSEEN_PER_CLASS)
        rows = rows[rows["label"].isin(class_names(manifest))]
        scored_on = f"{unseen.label}: {len(rows):,} sampled, never seen"
        for name in MODELS:
            run = load_run(tmp_path / name)
            decoded = decode_rows(rows, run.spec, run.labels, root=unseen.root)
            proba = predict_proba(run, decoded)
            assert proba.shape == (len(rows),)
            accuracy[name] = score_predictions(decoded.labels, proba, run.labels)["accuracy"]
            results.add(
                "train",
                f"{name} model, accuracy on another set",
                100 * accuracy[name],
                "%",
                scored_on,
            )
    ratio = judge(
        "default_vs_seed_accuracy",
        accuracy["default"] / max(accuracy["seed"], 1e-9),
        "default / seed model, accuracy",
        scored_on,
    )
    assert ratio.passed, (
        f"default scored {accuracy['default']:.1%}, seed {accuracy['seed']:.1%} ({scored_on}): "
        f"{ratio.value:.2f}x, below the floor {ratio.limit}"
    )
