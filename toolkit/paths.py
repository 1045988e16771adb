"""Path safety: where a path read from a record may lead, and how a file is opened.

Two guarantees live here, for every stage. A path read back from a record the toolkit
wrote earlier (a manifest, quarantine.json, run.json) is untrusted input: someone may have
edited it, so it must be a plain relative path that, joined to its root with symlinks
followed, stays inside that root. And a path that should name a file is opened without
blocking and checked through the opened descriptor, so a FIFO, socket, device or folder
put where a file was becomes an error naming what it is, never a read that waits forever.

And every file the toolkit writes (manifest, report, run folder, quarantine record) is
written whole or not at all: `atomic_write` and the text and JSON writers built on it.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any, BinaryIO

from toolkit.errors import RecordError

#: os.open flags for reading a file that may have been swapped for something else: a FIFO
#: opens at once instead of waiting for a writer, and a terminal never becomes ours.
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_BINARY", 0)
)


class NotRegularFileError(OSError):
    """A path that should name a regular file names a FIFO, socket, device or folder.

    An OSError, so code that already turns a read failure into a per-file reason (a manifest
    row's read_error, training's left-out list, predict's error line) reports it too.
    """

    def __init__(self, path: str | os.PathLike[str], kind: str) -> None:
        self.path = os.fspath(path)
        self.kind = kind
        super().__init__(f"{kind}, not a regular file; not read")
        self.strerror = str(self.args[0])
        self.filename = self.path


def file_kind(mode: int) -> str:
    """What a stat mode says an entry is, in words ("a FIFO", "a folder", ...)."""
    kinds = (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISLNK, "a symbolic link"),
    )
    return next((words for test, words in kinds if test(mode)), "a special file")


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open `path` read-only as a binary file, or raise NotRegularFileError saying what it is.

    Opening never blocks (O_NONBLOCK: a FIFO without a writer opens at once), and the check
    is made on the opened descriptor, so a file swapped after an earlier stat is still
    caught. The returned file reads blocking, like any file.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a unix socket (or a device with no driver) in the path
            try:
                kind = file_kind(os.stat(path).st_mode)
            except OSError:
                raise exc from None
            raise NotRegularFileError(path, kind) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(path, file_kind(mode))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike[str]) -> bytes:
    """The bytes of the regular file `path` (see open_regular)."""
    with open_regular(path) as fh:
        return fh.read()


def relative_problem(rel: object) -> str | None:
    """Why `rel` cannot be a recorded path relative to a root, or None when it can.

    A recorded path is a non-empty string, POSIX, relative, without a NUL byte or a `..`
    part. Backslashes and drive letters are ordinary name characters on POSIX; where the
    system reads them as separators they are refused too.
    """
    if not isinstance(rel, str):
        return f"expected a relative path (text), got {_describe(rel)}"
    if not rel:
        return "an empty path"
    if "\x00" in rel:
        return f"{rel!r} holds a NUL byte"
    if os.sep != "/" and ("\\" in rel or ":" in rel):
        return f"{rel!r} holds a separator or drive of this system"
    parts = rel.split("/")  # not PurePosixPath: this runs once per manifest row
    if rel.startswith("/"):
        return f"{rel!r} is absolute; recorded paths are relative to their root"
    if ".." in parts:
        return f"{rel!r} climbs out with '..'"
    if all(p in ("", ".") for p in parts):
        return f"{rel!r} names the root itself, not a file in it"
    return None


def root_problem(root: object, *, must_exist: bool = True) -> str | None:
    """Why `root` cannot be a recorded data root, or None: an absolute path (text) without a
    NUL byte, and with `must_exist` an existing folder."""
    if not isinstance(root, str) or not root:
        return f"expected an absolute folder path (text), got {_describe(root)}"
    if "\x00" in root:
        return f"{root!r} holds a NUL byte"
    if not os.path.isabs(root):
        return f"{root!r} is not an absolute path"
    if must_exist and not os.path.isdir(root):
        return f"{root!r} is not an existing folder"
    return None


def leads_outside(real_root: str, path: str) -> str | None:
    """Where `path` really leads (symlinks followed) when that is outside `real_root`, else None.

    `real_root` must itself be resolved (os.path.realpath).
    """
    target = os.path.realpath(path)
    if os.path.commonpath([real_root, target]) == real_root:
        return None
    return target


def inside_problem(root: str | os.PathLike[str], rel: object) -> str | None:
    """Why `root / rel` is not a safe member of `root`, or None: `rel` must pass
    relative_problem, and the joined path, every symlink followed (parent folders
    included), must stay inside the root."""
    why = relative_problem(rel)
    if why is not None:
        return why
    assert isinstance(rel, str)
    real_root = os.path.realpath(root)
    target = leads_outside(real_root, os.path.join(real_root, rel))
    if target is not None:
        return f"{rel!r} leads outside its root, to {target}"
    return None


def check_record_paths(
    values: Iterable[object], *, source: str | os.PathLike[str], key: str
) -> None:
    """Refuse a whole record (RecordError naming `source` and `key`) when any of `values`
    is not a safe relative path; checked before anything in it is used."""
    for i, rel in enumerate(values):
        why = relative_problem(rel)
        if why is not None:
            raise RecordError(Path(source), f"{key}[{i}]", why)


def _describe(value: object) -> str:
    if value is None or type(value).__name__ == "NAType" or value != value:  # None, <NA>, NaN
        return "nothing (null)"
    return f"{type(value).__name__} {repr(value)[:60]}"


# ----------------------------------------------------------------------------- writing


def atomic_write(target: Path, write: Callable[[IO[Any]], object], *, binary: bool = False) -> None:
    """Write `target` through a temporary file beside it, renamed into place when complete.

    A crash mid-write leaves the previous file (or none), never half a file.
    """
    target = Path(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(
            fd, "wb" if binary else "w", **({} if binary else {"newline": "", "encoding": "utf-8"})
        ) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private; give the usual mode
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_text(target: Path, text: str) -> None:
    """Write a text file atomically (UTF-8)."""
    atomic_write(target, lambda fh: fh.write(text))


def atomic_write_json(target: Path, data: Any) -> None:
    """Write a JSON file atomically: indented, non-ASCII text as UTF-8 (not escaped), one
    trailing newline; what JSON cannot hold (a date, a path) is written as its text."""
    atomic_write_text(target, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
