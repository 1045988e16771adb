"""The layout is the data flow: no module imports from a stage after it.

`LAYERS` orders every module of toolkit/ (how it runs) and validations/ (what users
declare: the rule catalogue and the profiles), lowest first. A module may import (at the
top or inside a function) only from modules in earlier layers; a module missing from the
table fails the test, so a new module has to be given its place. The order is the README's.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("toolkit", "validations")

#: Lowest first. Modules in one layer do not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("toolkit", "toolkit.errors", "toolkit.text", "toolkit.progress", "validations"),
    ("toolkit.paths",),  # path safety: what we open, how we write
    ("toolkit.manifest",),  # columns, statuses, reading and writing the manifest
    ("toolkit.report",),  # report.json: its name, how it is written and recognised
    ("toolkit.outputs",),  # output folders: the guard, staged writing, run ids
    ("toolkit.faces", "toolkit.images", "toolkit.quality"),  # faces; decoding; quality scores
    ("toolkit.scan",),  # folder -> manifest rows
    ("toolkit.groups",),  # hash grouping: copies and near copies
    ("toolkit.expect",),  # what a dataset rule expects of a table; judged without GX
    ("toolkit.gx",),  # Great Expectations: running suites, the expectation classes
    ("validations.rules",),  # the rule catalogue
    ("toolkit.profiles",),  # profiles: which rules, which thresholds
    ("toolkit.validate",),  # rules over a manifest -> findings, verdicts
    ("toolkit.cluster",),  # the Dask engine
    ("toolkit.check",),  # the one entry point: scan + validate on an engine
    ("toolkit.quarantine",),  # moving rejected files aside, and back
    ("toolkit.report.svg",),  # charts drawn as SVG text
    ("toolkit.report.charts", "toolkit.report.thumbnails"),
    ("toolkit.report.html",),  # report.html
    ("toolkit.layers",),  # custom Keras layers
    ("toolkit.models",),  # pure model builders and the input spec
    ("toolkit.pretrained",),  # EfficientNet-Lite0's ImageNet weights, read without PyTorch
    ("toolkit.pipeline",),  # accepted rows -> tf.data
    ("toolkit.runs",),  # the run folder: its format, reading and writing
    ("toolkit.scores",),  # probabilities, calibration, metrics: shared by train and evaluate
    ("toolkit.familiarity",),  # the familiarity score: is a picture like the training ones
    ("toolkit.opinion",),  # the second opinion: pretrained features stacked with the network
    ("toolkit.report.training",),  # training plots
    ("toolkit.audit",),  # the label audit: out-of-sample probabilities, confident learning
    ("toolkit.train",),
    ("toolkit.crossfit",),  # the thorough audit: k networks, each scoring what it never saw
    ("toolkit.evaluate",),
    ("toolkit.predict",),
    ("toolkit.export",),  # a run's model for serving without the toolkit
    ("toolkit.demo",),  # the demo set
    ("toolkit.api",),  # the Python API: the CLI's verbs as functions, for notebooks
    ("toolkit.cli",),
    ("toolkit.__main__",),
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module of ours `path` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in PACKAGES:
                for alias in node.names:  # `from toolkit import x` may name a module
                    candidate = f"{node.module}.{alias.name}"
                    found.add(candidate if candidate in RANK else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] in PACKAGES)
    return found


MODULES = sorted(
    (_module_name(p), p)
    for package in PACKAGES
    for p in (ROOT / package).rglob("*.py")
    if "templates" not in p.parts
)


def test_every_module_has_its_place_in_the_layers() -> None:
    missing = [name for name, _ in MODULES if name not in RANK]
    assert not missing, f"give these modules a layer in LAYERS: {missing}"
    gone = sorted(set(RANK) - {name for name, _ in MODULES})
    assert not gone, f"LAYERS names modules that do not exist: {gone}"


@pytest.mark.parametrize(("name", "path"), MODULES, ids=[name for name, _ in MODULES])
def test_no_module_imports_from_a_later_stage(name: str, path: Path) -> None:
    later = sorted(
        imported
        for imported in _imports(path)
        if imported != name and RANK.get(imported, -1) >= RANK.get(name, 0)
    )
    assert not later, f"{name} imports from later (or same-layer) stages: {later}"


def test_the_layer_check_sees_a_late_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from toolkit.train import train_model\n")
    assert _imports(module) == {"toolkit.train"}
