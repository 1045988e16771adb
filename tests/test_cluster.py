"""The Dask engine gives the local engine's manifest and report, row for row."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY_PROFILE
from corpus import HostileCorpus, write_image

from toolkit.cli import main
from toolkit.cluster import (
    ClusterOptions,
    Source,
    candidate_paths,
    connect,
    validate_cluster,
    write_partitioned_manifest,
)
from toolkit.demo import write_demo_data
from toolkit.errors import OutputError
from toolkit.manifest import read_manifest, write_manifest
from toolkit.profiles import load_profile
from toolkit.scan import scan_folder
from toolkit.validate import validate_manifest

pytest.importorskip("distributed")

#: report.json keys that say when and how, not what
_RUN_KEYS = {"seconds", "command", "created_at", "run_id"}


@pytest.fixture
def tiny(tmp_path: Path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_PROFILE, encoding="utf-8")
    return load_profile(str(path))


def _both(client, root: Path, profile, batch_files: int):
    local = validate_manifest(scan_folder(root, jobs=1), profile)
    dask = validate_cluster(client, root, profile, batch_files=batch_files)
    return local, dask


def _assert_same(local, dask) -> None:
    a, b = local.to_report(), dask.validation.to_report()
    assert {k: v for k, v in a.items() if k not in _RUN_KEYS} == {
        k: v for k, v in b.items() if k not in _RUN_KEYS
    }
    pd.testing.assert_frame_equal(local.manifest, dask.to_pandas())
    assert local.manifest.attrs == dask.to_pandas().attrs


def test_the_hostile_corpus_gets_the_same_manifest_and_report(
    client, hostile: HostileCorpus, tiny
) -> None:
    # 7 files a task: label conflicts and duplicates span partitions
    local, dask = _both(client, hostile.root, tiny, batch_files=7)
    assert dask.manifest.npartitions == -(-len(local.manifest) // 7)
    _assert_same(local, dask)
    assert {"label_conflict", "exact_duplicate"} <= {f.rule for f in dask.validation.findings}


def test_the_demo_set_gets_the_same_manifest_and_report(client, tmp_path: Path) -> None:
    root = tmp_path / "demo"
    write_demo_data(root, n_per_class=20)
    local, dask = _both(client, root, load_profile("tutorial"), batch_files=16)
    _assert_same(local, dask)


def test_near_copies_in_different_partitions_are_found(client, tmp_path: Path, tiny) -> None:
    root = tmp_path / "near"
    for i in range(6):
        write_image(root / "happy" / f"a{i}.png", size=(64, 64), seed=i, fmt="PNG")
        write_image(root / "sad" / f"b{i}.png", size=(64, 64), seed=100 + i, fmt="PNG")
    # a re-encoded copy (other bytes, same picture) in the other partition and class
    write_image(root / "sad" / "z_copy.jpg", size=(64, 64), seed=0, fmt="JPEG", quality=60)
    local, dask = _both(client, root, tiny, batch_files=4)
    conflicts = sorted(f.path for f in dask.validation.findings if f.rule == "label_conflict")
    assert conflicts == ["happy/a0.png", "sad/z_copy.jpg"]
    _assert_same(local, dask)


def test_only_rows_sharing_content_or_a_path_are_candidates(client, tmp_path: Path, tiny) -> None:
    root = tmp_path / "few"
    for i in range(8):
        write_image(root / "happy" / f"{i}.png", size=(64, 64), seed=i, fmt="PNG")
    (root / "sad").mkdir()
    (root / "sad" / "same.png").write_bytes((root / "happy" / "3.png").read_bytes())
    from toolkit.cluster import scan_cluster
    from toolkit.scan import ScanOptions

    ddf = scan_cluster(client, Source.of(root), ScanOptions(), batch_files=3)
    paths, n_hashed, n_distinct = candidate_paths(ddf, tiny)
    assert paths == {"happy/3.png", "sad/same.png"}
    assert (n_hashed, n_distinct) == (9, 8)


def test_an_fsspec_url_is_scanned_through_its_filesystem(client, hostile, tiny) -> None:
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    images = [hostile.cases[c] for c in ("grayscale", "png16", "truncated_jpeg", "svg")]
    images += hostile.clean["happy"] + hostile.clean["sad"]
    for rel in images:
        fs.pipe_file(f"memory://corpus/{rel}", (hostile.root / rel).read_bytes())
    try:
        found = validate_cluster(client, "memory://corpus", tiny, batch_files=3)
    finally:
        fs.rm("memory://corpus", recursive=True)
    frame = found.to_pandas().set_index("path")
    assert sorted(frame.index) == sorted(images)
    on_disk = scan_folder(hostile.root, jobs=1).set_index("path").loc[frame.index]
    for column in ("sha256", "detected_format", "width_px", "mode", "phash", "is_decodable"):
        pd.testing.assert_series_equal(frame[column], on_disk[column], check_names=False)
    assert frame.loc[hostile.cases["truncated_jpeg"], "status"] == "rejected"
    assert found.attrs["class_folders"] == ["happy", "sad"]


def test_the_partitioned_manifest_reads_back_and_replaces_a_file_one(
    client, hostile, tiny, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    local = validate_manifest(scan_folder(hostile.root, jobs=1), tiny)
    write_manifest(local.manifest, out)  # a file manifest.parquet first
    found = validate_cluster(client, hostile.root, tiny, batch_files=10)
    target = write_partitioned_manifest(found, out)
    assert target.is_dir() and len(list(target.glob("part.*.parquet"))) == 5
    back = read_manifest(out)
    pd.testing.assert_frame_equal(back, local.manifest)
    assert back.attrs["root"] == str(hostile.root.resolve())
    write_manifest(local.manifest, out)  # and a file over the folder again
    assert (out / "manifest.parquet").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_the_part_files_never_replace_a_user_folder(client, clean_root: Path, tiny, tmp_path):
    out = tmp_path / "out"
    (out / "manifest.parquet").mkdir(parents=True)
    (out / "manifest.parquet" / "holiday.jpg").write_bytes(b"\xff\xd8 my photo")
    found = validate_cluster(client, clean_root, tiny, batch_files=3)
    with pytest.raises(OutputError, match="not an output the toolkit wrote"):
        write_partitioned_manifest(found, out)
    assert [p.name for p in out.rglob("*")] == ["manifest.parquet", "holiday.jpg"]


def test_validate_joins_a_running_scheduler(client, hostile, tmp_path: Path) -> None:
    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY_PROFILE, encoding="utf-8")
    args = ["validate", str(hostile.root), "-p", str(profile), "--no-html"]
    assert main([*args, "-o", str(tmp_path / "local")]) == 1
    dask_args = ["-o", str(tmp_path / "dask"), "--engine", "dask"]
    assert main([*args, *dask_args, "--scheduler", client.scheduler.address]) == 1
    local, dask = (read_manifest(tmp_path / d) for d in ("local", "dask"))
    pd.testing.assert_frame_equal(local, dask)
    reports = [json.loads((tmp_path / d / "report.json").read_text()) for d in ("local", "dask")]
    # "advice": the other built-in profiles judge the same manifest (a quarter is undecodable)
    assert reports[1]["seconds"].keys() == {"cluster", "scan_and_validate", "write", "advice"} | {
        f"dask_{step}"
        for step in ("list", "scan", "file_rules", "content_rules", "verdicts", "dataset_rules")
    }
    what = [{k: v for k, v in r.items() if k not in _RUN_KEYS} for r in reports]
    assert what[0] == what[1]


def test_validate_starts_a_local_cluster_of_worker_processes(hostile, tmp_path: Path) -> None:
    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY_PROFILE, encoding="utf-8")
    out = tmp_path / "out"
    code = main(["validate", str(hostile.root), "-p", str(profile), "-o", str(out),
                 "--engine", "dask", "--workers", "2"])  # fmt: skip
    assert code == 1
    assert (out / "report.html").is_file() and (out / "manifest.parquet").is_dir()


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--engine", "spark"], "unknown engine 'spark'"),
     (["--scheduler", "tcp://127.0.0.1:1"], "need --engine dask")],
)  # fmt: skip
def test_engine_usage_errors(
    clean_root: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(clean_root), *extra]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_url_folder_is_a_usage_error() -> None:
    pytest.importorskip("fsspec")
    with pytest.raises(Exception, match="no such folder"):
        Source.of("memory://nowhere-at-all").list()


def test_cluster_options_default_to_a_local_cluster() -> None:
    assert ClusterOptions().scheduler is None
    assert callable(connect)


def test_max_pixels_raised_in_the_profile_is_decoded_on_the_cluster(
    client, clean_root: Path, tmp_path: Path
) -> None:
    from PIL import Image

    Image.new("1", (12000, 9000)).save(clean_root / "happy" / "big.png")  # 108 MP, 13 KB
    path = tmp_path / "big.toml"
    path.write_text(TINY_PROFILE + "[rules.max_pixels]\nmax_pixels = 200_000_000\n")
    found = validate_cluster(client, clean_root, load_profile(str(path)), batch_files=4)
    row = found.to_pandas().set_index("path").loc["happy/big.png"]
    assert bool(row["is_decodable"]) and row["status"] == "accepted"
