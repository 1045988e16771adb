"""Output folders: where a command may write, and how one run's outputs land together.

The user's files are read-only to us, and an output folder is where that promise is easiest
to break. So every writing command passes its output folder through `check_output` before
any work: it must not be, lie inside, or contain a data folder (compared by identity, with
symlinks followed), must not be a file, and must be creatable and writable. And something
already at an output's name is replaced only when it is recognisably the toolkit's own
(`OUTPUTS` says how each is recognised); anything else is refused, never deleted.

One run's outputs belong together. A validate or scan run gets a run id, recorded in every
output with room for one (the manifest's Parquet metadata, report.json, report.html, a
marker in data_docs), and writes its whole set into a fresh staging folder inside OUT
(`.staging-<run id>`: the same file system, so moving is renaming). Only when the set is
complete are its entries renamed into place, and earlier outputs it has no counterpart for
removed, under an exclusive lock on OUT, so two runs into one folder never interleave. A
run that dies before that point leaves the previous set untouched. Renames cannot replace
several files in one step, so a run killed between two renames of its commit leaves
outputs of two runs; their run ids disagree, and `read_run_id` refuses the folder instead
of letting a reader mix them. The next run into OUT replaces them whole.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import OutputError
from toolkit.manifest import (
    MANIFEST_CSV,
    MANIFEST_PARQUET,
    NOT_OURS,
    is_manifest,
    is_manifest_csv,
    manifest_run_id,
)
from toolkit.paths import file_kind, open_regular
from toolkit.report import (
    REPORT_HTML,
    REPORT_JSON,
    is_report_html,
    is_report_json,
    report_html_run_id,
    report_json_run_id,
)

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so commits of concurrent runs may interleave
    fcntl = None  # type: ignore[assignment]

#: The Great Expectations Data Docs site `validate --data-docs` builds.
DATA_DOCS_DIR = "data_docs"
#: The file inside an output folder (data_docs) that records the run that wrote it.
RUN_ID_FILE = ".toolkit-run-id"
STAGING_PREFIX = ".staging-"


def new_run_id() -> str:
    """A fresh run id (32 hex digits, random: unique without a clock or a counter)."""
    return uuid.uuid4().hex


def _is_data_docs(path: Path) -> bool:
    """A Data Docs folder we built: it holds our run-id marker, or (built before markers)
    an index.html by Great Expectations."""
    if path.is_symlink() or not path.is_dir():
        return False
    if (path / RUN_ID_FILE).is_file():
        return True
    try:
        with open_regular(path / "index.html") as fh:
            return b"great expectations" in fh.read(64 * 1024).lower()
    except OSError:
        return False


def _marked_run_id(path: Path) -> str | None:
    try:
        with open_regular(path / RUN_ID_FILE) as fh:
            return fh.read(64).decode("ascii", "replace").strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class OutputKind:
    """One output a validate or scan run writes into OUT: how to recognise an earlier one
    the toolkit wrote, and how to read the run id it records (None: it has no room)."""

    name: str
    is_ours: Callable[[Path], bool]
    run_id_of: Callable[[Path], str | None] | None


#: Every output of a run, in the order a commit renames them into place.
OUTPUTS: dict[str, OutputKind] = {
    kind.name: kind
    for kind in (
        OutputKind(MANIFEST_PARQUET, is_manifest, manifest_run_id),
        OutputKind(MANIFEST_CSV, is_manifest_csv, None),  # a CSV has no room for a run id
        OutputKind(DATA_DOCS_DIR, _is_data_docs, _marked_run_id),
        OutputKind(REPORT_HTML, is_report_html, report_html_run_id),
        OutputKind(REPORT_JSON, is_report_json, report_json_run_id),
    )
}


#: What a run leaves in OUT only while it is writing, or when it was killed: a staging
#: folder, and an earlier output moved aside for a moment during a commit.
_LEFTOVER = re.compile(
    rf"{re.escape(STAGING_PREFIX)}[0-9a-f]{{32}}"
    rf"|\.(?:{'|'.join(map(re.escape, OUTPUTS))})\.old-[0-9a-f]{{32}}"
)


# --------------------------------------------------------------------------------------
# The guard


def check_output(
    out: Path,
    data_roots: Iterable[str | Path] = (),
    *,
    option: str = "--out",
    what: str = "the data folder",
) -> Path:
    """Refuse an output folder that is, lies inside, or contains a data folder, that is a
    file, or that cannot be created or written; returns `out`. Creates nothing.

    A data root given as a URL (s3://, memory://...) cannot overlap a local folder, and one
    that does not exist holds nothing to protect."""
    out = Path(out)
    for root in data_roots:
        text = str(root)
        if "://" in text and not text.startswith("file://"):
            continue
        root_path = Path(text.removeprefix("file://"))
        if _identity(root_path) is None:
            continue  # no such data folder: the command says so in its own words
        if _contains(root_path, out):
            how = "is" if _contains(out, root_path) else "lies inside"
        elif _contains(out, root_path):
            how = "contains"
        else:
            continue
        raise OutputError(
            out,
            f"{option} {how} {what} {root}; the toolkit never writes among the files it "
            "reads: pick a folder outside it",
        )
    _check_writable(out, option)
    return out


def check_replaceable(out: Path) -> None:
    """Refuse when OUT holds, at the name of one of a run's `OUTPUTS`, something the toolkit
    did not write (a user's folder named manifest.parquet, a report.json of their own)."""
    for name in OUTPUTS:
        _check_ours(Path(out) / name)


def check_new_folder(out: Path, *, option: str = "--out") -> None:
    """Refuse a folder that already holds files: a command that writes files of its own
    names (a training run) starts only in a new or empty folder."""
    out = Path(out)
    if out.is_dir() and any(out.iterdir()):
        raise OutputError(
            out, f"{option} already holds files the toolkit did not write for this run; pick a "
            "new or empty folder"
        )  # fmt: skip


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _contains(outer: Path, inner: Path) -> bool:
    """`inner` is `outer` or lies below it, symlinks followed. Folders are compared by
    identity (device and inode), so another spelling of one folder (a symlink, a bind mount,
    a case-insensitive file system) counts; a part of `inner` that does not exist yet is
    judged by the nearest folder above it that does."""
    target = _identity(outer)
    if target is None:
        return False
    real = Path(os.path.realpath(os.path.abspath(inner)))
    return any(_identity(p) == target for p in (real, *real.parents))


def _check_writable(out: Path, option: str) -> None:
    try:
        mode = os.stat(out).st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    except OSError as exc:
        raise OutputError(out, f"{option} cannot be used: {exc.strerror}") from None
    if mode is not None and not stat.S_ISDIR(mode):
        raise OutputError(out, f"{option} is {file_kind(mode)}, not a folder; pick a folder")
    if mode is None and os.path.lexists(out):
        raise OutputError(out, f"{option} is a symlink to nothing; pick a folder")
    probe = Path(os.path.abspath(out))
    if mode is None:  # the nearest existing folder above decides whether it can be made
        probe = next(p for p in probe.parents if os.path.lexists(p))
        try:
            above = os.stat(probe).st_mode
        except OSError as exc:
            raise OutputError(out, f"{option} cannot be created: {probe}: {exc.strerror}") from None
        if not stat.S_ISDIR(above):
            raise OutputError(
                out, f"{option} cannot be created: {probe} is {file_kind(above)}, not a folder"
            )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(out, f"{option} cannot be written: no permission to write in {probe}")


def _check_ours(target: Path) -> None:
    if os.path.lexists(target) and (
        target.is_symlink() or not OUTPUTS[target.name].is_ours(target)
    ):
        raise OutputError(target, NOT_OURS)


# --------------------------------------------------------------------------------------
# Staged writing


@dataclass(frozen=True)
class Staging:
    """The staging folder of one run inside OUT: write the outputs into `folder`."""

    out: Path
    run_id: str

    @property
    def folder(self) -> Path:
        """Where this run writes its outputs until they are complete."""
        return self.out / f"{STAGING_PREFIX}{self.run_id}"

    def final(self, path: Path) -> Path:
        """Where a path inside the staging folder will be once the outputs are in place
        (given as written, or resolved to an absolute path)."""
        path = Path(path)
        if path.is_absolute() != self.folder.is_absolute():
            return self.out / path.resolve().relative_to(self.folder.resolve())
        return self.out / path.relative_to(self.folder)

    def mark(self, folder: Path) -> None:
        """Record the run id inside an output that is a folder (data_docs)."""
        (Path(folder) / RUN_ID_FILE).write_text(self.run_id + "\n", encoding="ascii")


@contextmanager
def staged_outputs(out: Path, run_id: str) -> Iterator[Staging]:
    """A fresh staging folder inside OUT for one run's outputs. When the block ends
    normally, they replace OUT's outputs together (`commit`); when it raises, the staging
    folder is removed and OUT keeps the previous run's set."""
    out = Path(out)
    created = not os.path.lexists(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = Staging(out, run_id)
    staging.folder.mkdir()
    alive = _hold(staging.folder)  # tells other runs this staging folder is in use
    try:
        yield staging
        commit(staging)
    except BaseException:
        shutil.rmtree(staging.folder, ignore_errors=True)
        if created:
            with suppress(OSError):  # only while empty: another run may be writing
                out.rmdir()
        raise
    finally:
        if alive is not None:
            os.close(alive)


def commit(staging: Staging) -> None:
    """Put the staged outputs in place, with renames, under a lock on OUT; remove the earlier
    outputs the new set has none of, and what killed runs left behind."""
    out, folder = staging.out, staging.folder
    with _locked(out):
        staged = set(os.listdir(folder))
        unknown = staged - set(OUTPUTS)
        if unknown:
            raise ValueError(f"staged outputs with no OutputKind: {sorted(unknown)}")
        for name in OUTPUTS:  # every check before the first rename
            _check_ours(out / name)
        for name in OUTPUTS:
            if name in staged:
                replace_output(folder / name, out / name)
            elif os.path.lexists(out / name):
                _remove_aside(out / name)
        os.rmdir(folder)
        _remove_leftovers(out)


def replace_output(new: Path, target: Path) -> None:
    """Put `new` (a file or folder) at `target` with renames; what was at `target` must be
    an output the toolkit wrote (OutputError otherwise, and nothing moves)."""
    new, target = Path(new), Path(target)
    _check_ours(target)
    if not os.path.lexists(target) or (new.is_file() and target.is_file()):
        os.replace(new, target)  # one atomic step
        return
    aside = _aside(target)
    os.replace(target, aside)
    os.replace(new, target)
    _remove(aside)


def _aside(target: Path) -> Path:
    return target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")


def _remove_aside(target: Path) -> None:
    aside = _aside(target)
    os.replace(target, aside)
    _remove(aside)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _remove_leftovers(out: Path) -> None:
    """Remove the staging folders of runs that died, and outputs a killed commit had moved
    aside (called under OUT's lock, so no commit is halfway). A staging folder still held
    by a live run is left alone."""
    for entry in os.scandir(out):
        if not _LEFTOVER.fullmatch(entry.name):
            continue
        path = Path(entry.path)
        if entry.name.startswith(STAGING_PREFIX):
            held = _hold(path, wait=False)
            if held is None:
                continue  # in use, or no locks here to tell: leave it
            try:
                shutil.rmtree(path, ignore_errors=True)
            finally:
                os.close(held)
        else:
            _remove(path)


def _hold(folder: Path, *, wait: bool = True) -> int | None:
    """An open descriptor of `folder` holding an exclusive lock on it (released when closed
    or when the process dies, kill -9 included); None when locks are unsupported or, with
    wait=False, another process holds it."""
    if fcntl is None:
        return None
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    fd = _hold(folder)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


# --------------------------------------------------------------------------------------
# Reading back


def read_run_ids(folder: Path) -> dict[str, str | None]:
    """The run id each output in `folder` records, by name (None: an output with no run id,
    written before run ids existed). manifest.csv has no room for one and is not listed."""
    folder = Path(folder)
    return {
        name: kind.run_id_of(folder / name)
        for name, kind in OUTPUTS.items()
        if kind.run_id_of is not None and os.path.lexists(folder / name)
    }


def read_run_id(folder: Path) -> str | None:
    """The run id every output in `folder` agrees on (None: no outputs, or outputs written
    before run ids); OutputError when they come from different runs."""
    ids = read_run_ids(folder)
    if len(set(ids.values())) > 1:
        which = ", ".join(f"{name} from run {run_id or 'unknown'}" for name, run_id in ids.items())
        raise OutputError(
            Path(folder),
            f"holds outputs of different runs ({which}); a run was stopped while it "
            "put them in place: run it again",
        )
    return next(iter(ids.values()), None)
