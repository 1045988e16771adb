"""Suite: the image-quality rules, against known corruptions, against cleanvision, and their cost.

1. Known corruptions. Good photos (accepted by the `scraped` profile and breaking no quality
   rule) from the shared renotte and mratashnejad sets (generated photos where absent, and
   in the quick run) get one copy per corruption (tests/corruptions.py: darkened,
   brightened, blurred, flattened, stretched, greyed), each the truth for one rule. Per
   rule: precision and recall of its flags over the originals and every copy.
2. Agreement with cleanvision 0.3.7's flags on the shared web sets (where cleanvision is
   installed: this interpreter, or `CLEANVISION_PYTHON`): per rule and set, the files both
   flag, either alone, and Cohen's kappa. cleanvision's precision and recall on the known
   corruptions are reported beside ours.
3. Cost. The scan with the quality scores against the same scan without them
   (`measure_quality` replaced by a no-op), in alternation.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import SHARED, Plan
from corruptions import CORRUPTIONS, textured_photo
from figures import Session
from PIL import Image

from toolkit.check import check_folder
from toolkit.scan import ScanOptions

#: The sets good photos are drawn from, and the web sets compared with cleanvision.
PHOTO_SETS = ("renotte", "mratashnejad")
WEB_SETS = ("renotte", "mratashnejad", "pranjalameta", "6lvcknight")
#: Good photos corrupted (full run; the quick run generates a few).
N_GOOD = 100
N_GOOD_QUICK = 12
#: Good photos are written at most this large: cleanvision decodes every copy at full size.
MAX_SIDE_PX = 640
PROFILE = "scraped"
#: cleanvision issue type -> the toolkit rule that answers it
CLEANVISION_RULES = {
    "dark": "not_dark",
    "light": "not_washed_out",
    "blurry": "not_blurry",
    "low_information": "min_entropy",
    "odd_aspect_ratio": "max_aspect_ratio",
    "grayscale": "not_grayscale",
}
RULES = tuple(CLEANVISION_RULES.values())
DRIVER = Path(__file__).with_name("cleanvision_flags.py")


def _candidates(seed_key: str) -> list[Path]:
    files = [
        p
        for name in PHOTO_SETS
        for p in sorted((SHARED / name).rglob("*"))
        if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.is_file()
    ]
    # a fixed, content-free shuffle: the same photos on every machine
    return sorted(files, key=lambda p: hashlib.sha256(f"{seed_key}{p.name}".encode()).digest())


def good_photos(work: Path, n: int, quick: bool) -> list[tuple[str, Image.Image]]:
    """(label, picture) of `n` photos the scraped profile accepts with no quality warning."""
    pool = work / "pool"
    if quick or not all((SHARED / s).is_dir() for s in PHOTO_SETS):
        return [("happy" if i % 2 else "sad", textured_photo(i)) for i in range(n)]
    for i, path in enumerate(_candidates("quality")[: 3 * n]):
        label = path.parent.name
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                img.thumbnail((MAX_SIDE_PX, MAX_SIDE_PX))
        except Exception:  # a broken file is no good photo
            continue
        (pool / label).mkdir(parents=True, exist_ok=True)
        img.save(pool / label / f"p{i:04d}.jpg", quality=92)
    result = check_folder(pool, PROFILE, jobs=None, detect_faces=False)
    manifest = result.manifest
    warned = manifest["warnings"].fillna("").str.split(";")
    clean = (manifest["status"] == "accepted") & ~warned.map(lambda w: bool(set(w) & set(RULES)))
    chosen = manifest[clean].head(n)
    return [(str(r.label), Image.open(pool / r.path).copy()) for r in chosen.itertuples()]


def write_corrupted(photos: list[tuple[str, Image.Image]], root: Path) -> pd.Series:
    """Each photo and one copy per corruption under root; path -> corruption ("" original)."""
    truth = {}
    for i, (label, photo) in enumerate(photos):
        (root / label).mkdir(parents=True, exist_ok=True)
        photo.save(root / label / f"g{i:03d}.jpg", quality=92)
        truth[f"{label}/g{i:03d}.jpg"] = ""
        for name, (corrupt, _) in CORRUPTIONS.items():
            corrupt(photo).save(root / label / f"g{i:03d}_{name}.jpg", quality=92)
            truth[f"{label}/g{i:03d}_{name}.jpg"] = name
    return pd.Series(truth, name="corruption")


def our_flags(root: Path) -> pd.DataFrame:
    """path -> one bool column per quality rule, from `toolkit`'s check with PROFILE."""
    result = check_folder(root, PROFILE, jobs=None, detect_faces=False)
    paths = result.manifest["path"].astype(str)
    flags = pd.DataFrame(False, index=pd.Index(paths, name="path"), columns=list(RULES))
    for f in result.findings:
        if f.rule in RULES:
            flags.at[f.path, f.rule] = True
    return flags


def cleanvision_python() -> str | None:
    """An interpreter that can import cleanvision, or None."""
    for python in (os.environ.get("CLEANVISION_PYTHON"), sys.executable):
        if (
            python
            and subprocess.run([python, "-c", "import cleanvision"], capture_output=True).returncode
            == 0
        ):
            return python
    return None


def cleanvision_flags(python: str, root: Path, out: Path) -> pd.DataFrame:
    """path -> one bool column per toolkit rule, from cleanvision's matching issue type."""
    subprocess.run([python, str(DRIVER), str(root), str(out)], check=True, capture_output=True)
    flags = pd.read_csv(out).set_index("path")
    return flags.rename(columns=CLEANVISION_RULES)[list(RULES)].astype(bool)


def precision_recall(flags: pd.DataFrame, truth: pd.Series) -> dict[str, tuple[float, float]]:
    """rule -> (precision, recall) of its flags against the copies made to break it."""
    out = {}
    for name, (_, rule) in CORRUPTIONS.items():
        flagged = flags[rule].reindex(truth.index, fill_value=False)
        wanted = truth == name
        hits = int((flagged & wanted).sum())
        n_flagged = int(flagged.sum())
        out[rule] = (hits / n_flagged if n_flagged else 0.0, hits / int(wanted.sum()))
    return out


def agreement(ours: pd.Series, theirs: pd.Series) -> dict[str, float]:
    """Both, ours only, theirs only, neither, and Cohen's kappa of two flag columns."""
    a, b = ours.astype(bool), theirs.reindex(ours.index, fill_value=False).astype(bool)
    n = len(a)
    both, only_a, only_b = int((a & b).sum()), int((a & ~b).sum()), int((~a & b).sum())
    neither = n - both - only_a - only_b
    observed = (both + neither) / n if n else 1.0
    expected = (a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean())) if n else 1.0
    kappa = (observed - expected) / (1 - expected) if expected < 1 else 1.0
    return {"both": both, "ours": only_a, "theirs": only_b, "neither": neither, "kappa": kappa}


@pytest.fixture(scope="module")
def corrupted(plan: Plan, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.Series]:
    work = tmp_path_factory.mktemp("bench_quality")
    photos = good_photos(work, N_GOOD_QUICK if plan.quick else N_GOOD, plan.quick)
    root = work / "corrupted"
    return root, write_corrupted(photos, root)


def test_each_rule_finds_its_known_corruptions(
    corrupted: tuple[Path, pd.Series], results: Session, judge: Any
) -> None:
    root, truth = corrupted
    scores = precision_recall(our_flags(root), truth)
    label = f"{(truth == '').sum()} good photos x {len(CORRUPTIONS)} corruptions"
    judged = []
    for rule, (precision, recall) in scores.items():
        judged.append(judge("quality_precision", precision, f"{rule} precision", label))
        judged.append(judge("quality_recall", recall, f"{rule} recall", label))
    assert all(r.passed for r in judged), [(r.what, round(r.value, 3)) for r in judged]


def test_cleanvision_on_the_known_corruptions_for_reference(
    corrupted: tuple[Path, pd.Series], results: Session, tmp_path: Path
) -> None:
    python = cleanvision_python()
    if python is None:
        pytest.skip("cleanvision is not installed (set CLEANVISION_PYTHON)")
    root, truth = corrupted
    scores = precision_recall(cleanvision_flags(python, root, tmp_path / "cv.csv"), truth)
    label = f"{(truth == '').sum()} good photos x {len(CORRUPTIONS)} corruptions"
    for rule, (precision, recall) in scores.items():
        results.info("quality", f"cleanvision's {rule} precision", precision, label)
        results.info("quality", f"cleanvision's {rule} recall", recall, label)


@pytest.mark.parametrize(
    "name", WEB_SETS, ids=[f"agreement with cleanvision on {n}" for n in WEB_SETS]
)
def test_agreement_with_cleanvision_on_the_web_sets(
    name: str, plan: Plan, results: Session, tmp_path: Path
) -> None:
    python = cleanvision_python()
    if python is None or plan.quick or not (SHARED / name).is_dir():
        pytest.skip("needs cleanvision and the shared web sets (full run)")
    ours = our_flags(SHARED / name)
    theirs = cleanvision_flags(python, SHARED / name, tmp_path / "cv.csv")
    for rule in RULES:
        figures = agreement(ours[rule], theirs[rule])
        note = ", ".join(f"{k} {v}" for k, v in figures.items() if k != "kappa")
        results.add(
            "quality", f"{rule}: Cohen's kappa with cleanvision", figures["kappa"], "", name, note
        )


def test_quality_scores_cost_little_of_the_scan(
    plan: Plan, results: Session, judge: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each file scanned with and without the scores in turn, `plan.rounds` times: the
    fastest of each, summed over the folder. Alternating file by file, both sides see the
    same load, which on a shared machine swings a whole scan's time by more than the
    scores cost."""
    import toolkit.scan as scan

    root = SHARED / "renotte"
    if plan.quick or not root.is_dir():
        root = tmp_path / "photos"
        for i in range(40):
            (root / ("happy" if i % 2 else "sad")).mkdir(parents=True, exist_ok=True)
            textured_photo(i, (800, 600)).save(root / ("happy" if i % 2 else "sad") / f"{i}.jpg")
    scanner = scan.FileScanner(root, ScanOptions())  # faces found, as `toolkit validate` does
    sides = {"with": scan.measure_quality, "without": lambda *args, **kwargs: {}}
    seconds = dict.fromkeys(sides, 0.0)
    rows: dict[str, list[dict]] = {side: [] for side in sides}
    for rel in sorted(scan.list_entries(root)):
        fastest = dict.fromkeys(sides, float("inf"))
        last: dict[str, dict] = {}
        for _ in range(plan.rounds):
            for side, measure in sides.items():
                monkeypatch.setattr(scan, "measure_quality", measure)
                started = time.perf_counter()
                last[side] = scanner.scan(rel)
                fastest[side] = min(fastest[side], time.perf_counter() - started)
        for side in sides:
            seconds[side] += fastest[side]
            rows[side].append(last[side])
    # the same work but the scores: every file decoded and searched for faces alike
    same = ("is_decodable", "read_error", "phash", "n_faces")
    assert [[r[k] for k in same] for r in rows["with"]] == [
        [r[k] for k in same] for r in rows["without"]
    ]
    assert all(r["entropy_bits"] is None for r in rows["without"])
    label = f"{root.name} ({len(rows['without'])} files, one process, faces found)"
    note = f"fastest of {plan.rounds} per file, summed"
    results.add("quality", "scan with quality scores", seconds["with"], "s", label, note)
    results.add("quality", "scan without them", seconds["without"], "s", label, note)
    ratio = judge(
        "quality_scan_cost",
        seconds["with"] / seconds["without"],
        "scan time, with / without quality scores",
        label,
    )
    assert ratio.passed, ratio
