"""Suite: the label audit on known noise. A seeded share of the accepted files' labels is
flipped in memory (happy <-> sad; the files stay where they are), the default model trains
on the noisy labels, and the audit at the end of training flags files: its precision and
recall against the flips, and cleanlab's `find_label_issues` on the same probabilities where
cleanlab is installed.

Full run: FER2013 train (a per-class sample, see AUDIT_FULL); quick run: the generated demo
set. For a one-off measurement outside pytest:

    python benchmarks/bench_audit.py --data ../shared/datasets/fer2013/train \\
        --profile small-faces --per-class 3000 --epochs 16 [--manifest M --keep RUN]

to audit that kept run again with K networks, each scoring the files it never trained on
(`toolkit audit --networks K`; about K - 1 more trainings):

    python -m benchmarks.bench_audit --data ../shared/datasets/fer2013/train \
        --profile small-faces --manifest M --keep RUN --networks 4

and, to train again without the files that run's audit flagged and score both runs on
the true labels of other validated sets (manifest folders, as `toolkit validate --out`
writes them):

    python -m benchmarks.bench_audit --data ../shared/datasets/fer2013/train \
        --profile small-faces --manifest M --retrain-from RUN --keep RUN2 \
        --score-on FER2013_TEST_MANIFEST --score-on RENOTTE_MANIFEST
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

#: The share of accepted files whose label is flipped, and the seed that picks them.
FLIP_SHARE = 0.1
FLIP_SEED = 0


@dataclass(frozen=True)
class AuditPlan:
    """How much to train before auditing: files per class (None: all), epochs, the model
    and its input side (None: the model's)."""

    per_class: int | None
    epochs: int
    model: str = "default"
    image_size: int | None = None


#: The full run samples FER2013 train so training stays within the suite's minutes.
AUDIT_FULL = AuditPlan(per_class=3000, epochs=16)
#: The quick run: the tutorial's model on generated bright (happy) and dark (sad) squares.
AUDIT_QUICK = AuditPlan(per_class=None, epochs=8, model="seed", image_size=32)
QUICK_PER_CLASS = 60
QUICK_PROFILE = """
name = "bench-audit"
extends = "tutorial"
[rules.min_file_bytes]
min_bytes = 100
[rules.has_face]
severity = "off"
"""


@dataclass(frozen=True)
class Outcome:
    """The audit against the flips, and cleanlab's on the same probabilities."""

    n_files: int
    n_flipped: int
    n_flagged: int
    precision: float
    recall: float
    ranked_precision: float  # of the n_flipped least self-confident files, the share flipped
    test_accuracy: float  # the model trained on the noisy labels, on its (noisy) test split
    train_seconds: float
    cleanlab_precision: float | None = None
    cleanlab_recall: float | None = None
    cleanlab_same_files: bool | None = None


def sample(manifest: pd.DataFrame, per_class: int | None, seed: int = FLIP_SEED) -> pd.DataFrame:
    """At most `per_class` accepted rows of each class (seeded); the other rows as they are."""
    from toolkit.manifest import ACCEPTED

    if per_class is None:
        return manifest
    accepted = manifest[manifest["status"] == ACCEPTED]
    kept = accepted.groupby("label", group_keys=False).apply(
        lambda g: g.sample(min(len(g), per_class), random_state=seed)
    )
    out = manifest.loc[sorted(kept.index)]
    out.attrs = dict(manifest.attrs)
    return out


def flip_labels(
    manifest: pd.DataFrame, share: float = FLIP_SHARE, seed: int = FLIP_SEED
) -> tuple[pd.DataFrame, set[str]]:
    """The manifest with a seeded `share` of its accepted rows given another class (the other
    one of two; a random other one of more), and the flipped paths."""
    from toolkit.manifest import ACCEPTED

    rng = np.random.default_rng(seed)
    out = manifest.copy()
    out.attrs = dict(manifest.attrs)
    accepted = np.flatnonzero((out["status"] == ACCEPTED).to_numpy())
    chosen = rng.choice(accepted, size=round(share * len(accepted)), replace=False)
    classes = sorted(out.iloc[accepted]["label"].unique())
    column = out.columns.get_loc("label")
    for i in chosen:
        others = [c for c in classes if c != out.iat[i, column]]
        out.iat[i, column] = others[int(rng.integers(len(others)))]
    return out, set(out.iloc[chosen]["path"].astype(str))


def write_learnable_folder(root: Path, n_per_class: int = QUICK_PER_CLASS) -> Path:
    """Two classes a small CNN tells apart in a few epochs: bright and dark 32 px squares."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, level in (("happy", 200), ("sad", 50)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            pixels = np.clip(rng.normal(level, 25, size=(8, 8, 3)), 0, 255).astype(np.uint8)
            img = Image.fromarray(pixels).resize((32, 32), Image.Resampling.BICUBIC)
            img.save(root / name / f"{name}_{i:03d}.png")
    return root


def quick_manifest(tmp_path: Path) -> tuple[pd.DataFrame, str]:
    """The quick run's squares in tmp_path/data, validated by QUICK_PROFILE: the manifest
    and the profile's path."""
    from toolkit.check import check_folder

    root = write_learnable_folder(tmp_path / "data")
    profile = tmp_path / "bench-audit.toml"
    profile.write_text(QUICK_PROFILE, encoding="utf-8")
    return check_folder(root, str(profile)).manifest, str(profile)


def measure(manifest: pd.DataFrame, profile: str, plan: AuditPlan, out: Path) -> Outcome:
    """Flip, train on the noisy labels (the audit runs as training ends), score the flags."""
    from toolkit.profiles import load_profile
    from toolkit.train import TrainOptions, merge_manifests, train_model

    noisy, flipped = flip_labels(merge_manifests([sample(manifest, plan.per_class)]))
    started = time.perf_counter()
    options = TrainOptions(model=plan.model, epochs=plan.epochs, image_size=plan.image_size)
    result = train_model(noisy, out, options, profile=load_profile(profile))
    seconds = time.perf_counter() - started
    assert result.audit is not None, "the audit did not run"
    return Outcome(
        **judged(result.audit, flipped),
        test_accuracy=float(result.metrics["accuracy"]),
        train_seconds=round(seconds, 1),
    )


def judged(audit: Any, flipped: set[str]) -> dict[str, Any]:
    """An audit's flags against the flipped paths, and cleanlab's on the same probabilities."""
    assert audit.proba is not None, "the audit ranked nothing"
    scored = audit.scored
    is_flip = scored["path"].isin(flipped).to_numpy()
    flagged = scored["is_issue"].to_numpy(dtype=bool)
    order = np.argsort(scored["score"].to_numpy(), kind="stable")[: int(is_flip.sum())]
    outcome = dict(
        n_files=len(scored),
        n_flipped=int(is_flip.sum()),
        n_flagged=int(flagged.sum()),
        precision=_share(flagged & is_flip, flagged),
        recall=_share(flagged & is_flip, is_flip),
        ranked_precision=float(is_flip[order].mean()) if len(order) else 0.0,
    )
    theirs = cleanlab_flags(scored, audit.labels, audit.proba)
    if theirs is not None:
        outcome.update(
            cleanlab_precision=_share(theirs & is_flip, theirs),
            cleanlab_recall=_share(theirs & is_flip, is_flip),
            cleanlab_same_files=bool((theirs == flagged).all()),
        )
    return outcome


def measure_networks(
    manifest: pd.DataFrame, plan: AuditPlan, noisy_run: Path, networks: int
) -> dict[str, Any]:
    """Audit a kept noisy run again with `networks` cross-fitted networks (`toolkit audit
    --networks`), judged against the same flips."""
    from toolkit.crossfit import audit_with_networks
    from toolkit.train import merge_manifests

    _, flipped = flip_labels(merge_manifests([sample(manifest, plan.per_class)]))
    started = time.perf_counter()
    audit = audit_with_networks(noisy_run, networks)
    return {**judged(audit, flipped), "audit_seconds": round(time.perf_counter() - started, 1)}


def retrain_without_flags(
    manifest: pd.DataFrame, profile: str, plan: AuditPlan, noisy_run: Path, out: Path
) -> float:
    """Train again on the same noisy labels (the same flips) less the files the audit of
    `noisy_run` flagged (`--exclude RUN/label_issues.csv`); the training's seconds."""
    from toolkit.profiles import load_profile
    from toolkit.runs import LABEL_ISSUES_CSV
    from toolkit.train import TrainOptions, merge_manifests, train_model

    noisy, _ = flip_labels(merge_manifests([sample(manifest, plan.per_class)]))
    started = time.perf_counter()
    options = TrainOptions(model=plan.model, epochs=plan.epochs, image_size=plan.image_size)
    train_model(
        noisy,
        out,
        options,
        profile=load_profile(profile),
        exclude=noisy_run / LABEL_ISSUES_CSV,
        audit=False,
    )
    return round(time.perf_counter() - started, 1)


def scored_on(runs: dict[str, Path], manifests: list[Path]) -> dict[str, dict[str, Any]]:
    """Each run's accuracy and ECE on each validated manifest folder's accepted files (the
    labels on disk: the truth, not the flips), as the leave-one-source-out folds score."""
    from benchmarks.loso import accepted_rows, score

    out: dict[str, dict[str, Any]] = {}
    for folder in manifests:
        rows = accepted_rows(folder)
        for name, run in runs.items():
            got = score(run, rows)
            out.setdefault(folder.name, {})[name] = {
                "n": got["n"],
                "accuracy": round(got["accuracy"], 4),
                "ece": round(got["ece"], 4),
            }
    return out


def cleanlab_flags(scored: pd.DataFrame, labels: list[str], proba: np.ndarray) -> Any:
    """cleanlab's `find_label_issues` on the audit's probabilities; None where not installed."""
    try:
        from cleanlab.filter import find_label_issues
    except ImportError:
        return None
    given = scored["given_label"].map({name: i for i, name in enumerate(labels)}).to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cleanlab's own deprecations
        return np.asarray(find_label_issues(given, proba, n_jobs=1), dtype=bool)


def _share(part: np.ndarray, whole: np.ndarray) -> float:
    return float(part.sum() / whole.sum()) if whole.sum() else 0.0


# ----------------------------------------------------------------------------- the suite


def test_the_audit_finds_flipped_labels(
    datasets: Any, plan: Any, results: Any, judge: Any, tmp_path: Path
) -> None:
    """Precision and recall against a seeded 10% of flipped labels (the issue: >= 0.8 each,
    as good as cleanlab's on the same probabilities)."""

    if plan.quick:
        manifest, spec = quick_manifest(tmp_path)
        label, audit_plan = "generated bright/dark squares", AUDIT_QUICK
    else:
        data = datasets.get("fer2013/train")
        manifest, label, spec = datasets.validated(data), data.label, data.profile
        audit_plan = AUDIT_FULL
    outcome = measure(manifest, spec, audit_plan, tmp_path / "run")
    assert outcome.n_flipped > 0 and outcome.n_files > outcome.n_flipped
    where = (
        f"{label}, {FLIP_SHARE:.0%} flipped, {audit_plan.model} model, {audit_plan.epochs} epochs"
    )
    results.add("audit", "audit flagged", outcome.n_flagged, "files", where)
    results.add("audit", "training + audit", outcome.train_seconds, "s", where)
    results.info("audit", "precision at the number of flips (ranking)",
                 outcome.ranked_precision, where)  # fmt: skip
    if outcome.cleanlab_recall is not None:
        results.info("audit", "cleanlab precision, same probabilities",
                     outcome.cleanlab_precision, where)  # fmt: skip
        results.info("audit", "cleanlab recall, same probabilities",
                     outcome.cleanlab_recall, where)  # fmt: skip
        assert outcome.cleanlab_same_files, "cleanlab flags other files on the same probabilities"
    precision = judge("audit_precision", outcome.precision, "flagged files flipped", where)
    recall = judge("audit_recall", outcome.recall, "flipped files flagged", where)
    assert precision.passed, f"precision {outcome.precision:.3f}"
    assert recall.passed, f"recall {outcome.recall:.3f}"


def test_networks_that_never_saw_a_file_find_flipped_labels(
    plan: Any, results: Any, judge: Any, tmp_path: Path
) -> None:
    """The same flips audited again by three cross-fitted networks (`toolkit audit
    --networks 3`), on the quick run's generated squares; on FER2013 a one-off (docstring)."""

    if not plan.quick:
        pytest.skip("the full measurement is a one-off (module docstring): three more trainings")
    manifest, profile = quick_manifest(tmp_path)
    measure(manifest, profile, AUDIT_QUICK, tmp_path / "noisy")
    got = measure_networks(manifest, AUDIT_QUICK, tmp_path / "noisy", 3)
    where = "generated bright/dark squares, 10% flipped, 3 networks"
    results.add("audit", "networks' audit", got["audit_seconds"], "s", where)
    precision = judge("audit_networks_precision", got["precision"], "flagged files flipped", where)
    recall = judge("audit_networks_recall", got["recall"], "flipped files flagged", where)
    assert precision.passed, f"precision {got['precision']:.3f}"
    assert recall.passed, f"recall {got['recall']:.3f}"


def test_training_again_without_the_flagged_files(plan: Any, results: Any, tmp_path: Path) -> None:
    """The issue's last step, on the quick run's generated squares: train on the noisy
    labels, then again without the flagged files; both are scored on the true labels."""
    import json as json_

    from toolkit.manifest import write_manifest

    if not plan.quick:
        pytest.skip("the full comparison is a one-off (module docstring): two full trainings")
    manifest, profile = quick_manifest(tmp_path)
    truth = tmp_path / "truth"
    truth.mkdir()
    write_manifest(manifest, truth)
    outcome = measure(manifest, profile, AUDIT_QUICK, tmp_path / "noisy")
    retrain_without_flags(manifest, profile, AUDIT_QUICK, tmp_path / "noisy", tmp_path / "clean")
    run = json_.loads((tmp_path / "clean" / "run.json").read_text(encoding="utf-8"))
    assert run["excluded"]["n_excluded"] == outcome.n_flagged
    got = scored_on({"noisy": tmp_path / "noisy", "clean": tmp_path / "clean"}, [truth])["truth"]
    where = "generated bright/dark squares, 10% flipped"
    for name, figures in got.items():
        assert figures["n"] > 0
        results.info("audit", f"accuracy on true labels, {name} run", figures["accuracy"], where)


# ----------------------------------------------------------------------------- one-off


def main(argv: list[str] | None = None) -> int:
    """Measure once, outside pytest, and print the outcome as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--profile", default="tutorial")
    parser.add_argument("--per-class", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--model", default="default")
    parser.add_argument("--manifest", type=Path, help="Validated manifest folder (reused).")
    parser.add_argument("--keep", type=Path, help="A new folder for the run (else temporary).")
    parser.add_argument(
        "--retrain-from",
        type=Path,
        help="A kept noisy run: train again without its flagged files, score both.",
    )
    parser.add_argument(
        "--networks",
        type=int,
        help="With --keep naming a kept noisy run: audit it again with this many "
        "cross-fitted networks (toolkit audit --networks), judged against the same flips.",
    )
    parser.add_argument(
        "--score-on",
        type=Path,
        action="append",
        default=[],
        help="Validated manifest folder to score the runs on (repeatable).",
    )
    args = parser.parse_args(argv)
    from toolkit.check import check_folder
    from toolkit.manifest import read_manifest, write_manifest

    started = time.perf_counter()
    if args.manifest is not None and args.manifest.is_dir():
        manifest = read_manifest(args.manifest)
    else:
        manifest = check_folder(args.data, args.profile).manifest
        if args.manifest is not None:
            args.manifest.mkdir(parents=True)
            write_manifest(manifest, args.manifest)
    scan_seconds = time.perf_counter() - started
    plan = AuditPlan(args.per_class, args.epochs, args.model)
    if args.retrain_from is not None:
        if args.keep is None:
            parser.error("--retrain-from needs --keep: the folder of the run without flags")
        seconds = retrain_without_flags(manifest, args.profile, plan, args.retrain_from, args.keep)
        runs = {"noisy labels": args.retrain_from, "flagged files left out": args.keep}
        report = {"retrain_seconds": seconds, "scores": scored_on(runs, args.score_on)}
        print(json.dumps(report, indent=2))
        return 0
    if args.networks is not None:
        if args.keep is None or not args.keep.is_dir():
            parser.error("--networks needs --keep: the kept noisy run to audit again")
        report = measure_networks(manifest, plan, args.keep, args.networks)
        print(json.dumps(report, indent=2))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        out = args.keep or Path(tmp) / "run"
        outcome = measure(manifest, args.profile, plan, out)
    print(json.dumps({**asdict(outcome), "scan_seconds": round(scan_seconds, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
