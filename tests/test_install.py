"""What `pip install .` gives: its own distribution name, a version, and a validate that
runs without the train extra (TensorFlow, Keras, scikit-learn are never imported)."""

from __future__ import annotations

import ast
import configparser
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest
from conftest import TINY_PROFILE
from corpus import write_clean_folder

import toolkit
import toolkit.train
from toolkit.cli import main

#: The distribution's name on PyPI (`toolkit` there is an unrelated package); the import
#: package and the console script stay `toolkit`.
DISTRIBUTION = "imagefolder-toolkit"
TRAINING_ONLY = ("tensorflow", "keras", "sklearn")


def test_the_distribution_has_its_own_name_and_gives_the_version() -> None:
    dist = distribution(DISTRIBUTION)
    assert toolkit.__version__ == dist.version != "0.0.0+source"
    scripts = {e.name: e.value for e in dist.entry_points if e.group == "console_scripts"}
    assert scripts == {"toolkit": "toolkit.cli:main"}


def _loaded_after(args: list[str], cwd: Path, first: str = "") -> tuple[int, list[str]]:
    """Run `toolkit ARGS` in a fresh interpreter (after the statement `first`): its exit
    code, and which training-only packages it had imported by the end."""
    code = (
        f"import sys\n{first}\n"
        "from toolkit.cli import main\n"
        f"code = main({args!r})\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(TRAINING_ONLY)!r}))\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.stdout.strip(), done.stderr
    return done.returncode, ast.literal_eval(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("args", "exit_code"),
    [
        (["validate", "data", "--profile", "tiny.toml", "--out", "out"], 0),
        (["validate", "data", "--no-html", "--out", "out"], 1),
        (["scan", "data", "--out", "scan"], 0),
        (["profiles"], 0),
        (["--help"], 0),
    ],
    ids=[
        "validate with report.html",
        "validate of a folder that fails",
        "scan",
        "the profile list",
        "the help",
    ],
)
def test_the_data_commands_never_import_the_training_stack(
    tmp_path: Path, args: list[str], exit_code: int
) -> None:
    write_clean_folder(tmp_path / "data", n_per_class=4)
    (tmp_path / "tiny.toml").write_text(TINY_PROFILE, encoding="utf-8")
    code, loaded = _loaded_after(args, tmp_path)
    assert code == exit_code
    assert loaded == []


def test_the_probe_sees_a_training_package_that_was_imported(tmp_path: Path) -> None:
    code, loaded = _loaded_after(["--help"], tmp_path, first="import sklearn")
    assert (code, loaded) == (0, ["sklearn"])


def test_the_readmes_validate_env_installs_the_package_alone() -> None:
    # `tox -e validate` is the README's first command: it must not build the training stack
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(Path(__file__).resolve().parents[1] / "tox.ini", encoding="utf-8")
    shared, validate = tox["testenv"], tox["testenv:validate"]
    # an env's own key wins; without one it takes [testenv]'s, as tox does
    assert validate.get("extras", shared.get("extras", "")).split() == []
    assert validate.get("deps", shared.get("deps", "")).split() == []
    assert "train" in shared["extras"].split()  # the other envs keep their extras


def test_train_without_the_train_extra_exits_2_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(toolkit.train, "TRAIN_EXTRA_MODULES", ("no_such_module",))
    write_clean_folder(tmp_path / "data", n_per_class=4)
    (tmp_path / "tiny.toml").write_text(TINY_PROFILE, encoding="utf-8")
    args = ["train", str(tmp_path / "data"), "--profile", str(tmp_path / "tiny.toml")]
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    assert f"pip install '{DISTRIBUTION}[train]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
