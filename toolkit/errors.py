"""The toolkit's own exceptions: each carries its data and builds its message from it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


class ToolkitError(Exception):
    """Base of every error the CLI turns into a message and an exit code."""

    exit_code = 1


class UsageError(ToolkitError):
    """The command was called wrongly: a missing folder, an unknown profile, a bad option."""

    exit_code = 2


class PathError(UsageError):
    """A path the command cannot use as given: carries the path and the problem."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DataRootError(PathError):
    """The data folder does not exist or is not a folder."""


class ProfileError(UsageError):
    """A profile names an unknown rule, or gives a parameter of the wrong type or value."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        super().__init__(f"{source}: {key}: {problem}")


class ManifestError(PathError):
    """A manifest file is missing, unreadable, or does not follow the manifest schema."""


class RecordError(UsageError):
    """A record read back (manifest, quarantine.json, run.json) breaks its own format, or
    names a path that could lead outside the folders involved: refused whole, before use."""

    def __init__(self, path: Path, key: str, problem: str) -> None:
        self.path = Path(path)
        self.key = key
        self.problem = problem
        super().__init__(f"{self.path}: {key}: {problem}; the record is refused, nothing used")


class OutputError(PathError):
    """An output folder or file the command must not write: it overlaps a data folder, is a
    file where a folder belongs, cannot be written, or holds something the toolkit did not
    write (which it never replaces)."""


class QuarantineError(PathError):
    """Moving files into quarantine, or back, would lose or overwrite something: refused."""


class TrainingError(ToolkitError):
    """Training cannot start or go on: too few files, a split left empty, a bad run folder."""


class DatasetFailedError(ToolkitError):
    """A dataset broke a blocking dataset-wide rule, so nothing is trained on it."""

    def __init__(self, path: Path, rules: list[str]) -> None:
        self.path = Path(path)
        self.rules = rules
        super().__init__(
            f"{self.path}: the dataset failed {', '.join(rules) or 'validation'}; "
            "run `toolkit validate` on it to see why, or train with a profile that fits it"
        )


#: The attribute `processing` sets on an exception: the file it escaped while processing.
_PATH_ATTRIBUTE = "toolkit_processing"


@contextmanager
def processing(path: str | os.PathLike[str] | os.PathLike[bytes] | bytes) -> Iterator[None]:
    """Say which file the work inside is on, so that a crash names it.

    An unexpected exception escaping the block carries the path (read it back with
    `processed_path`) and a note that tracebacks print. The innermost block wins. The
    toolkit's own errors pass untouched: they name their file themselves.
    """
    try:
        yield
    except ToolkitError:
        raise
    except Exception as exc:
        if processed_path(exc) is None:
            name = os.fsdecode(path)
            with suppress(AttributeError, TypeError):  # an exception type that refuses attributes
                setattr(exc, _PATH_ATTRIBUTE, name)
            exc.add_note(f"while processing {name}")
        raise


def processed_path(exc: BaseException) -> str | None:
    """The file `exc` escaped while processing (see `processing`), or None when unknown;
    found on the exception itself or on one it was raised from or while handling."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        path = getattr(current, _PATH_ATTRIBUTE, None)
        if isinstance(path, str):
            return path
        current = current.__cause__ or current.__context__
    return None
