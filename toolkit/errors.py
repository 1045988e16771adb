"""The toolkit's own exceptions: each carries its data and builds its message from it."""

from __future__ import annotations

from pathlib import Path


class ToolkitError(Exception):
    """Base of every error the CLI turns into a message and an exit code."""

    exit_code = 1


class UsageError(ToolkitError):
    """The command was called wrongly: a missing folder, an unknown profile, a bad option."""

    exit_code = 2


class DataRootError(UsageError):
    """The data folder does not exist or is not a folder."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ProfileError(UsageError):
    """A profile names an unknown rule, or gives a parameter of the wrong type or value."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        super().__init__(f"{source}: {key}: {problem}")


class ManifestError(ToolkitError):
    """A manifest file is missing, unreadable, or does not follow the manifest schema."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class RecordError(UsageError):
    """A record read back (manifest, quarantine.json, run.json) breaks its own format, or
    names a path that could lead outside the folders involved: refused whole, before use."""

    def __init__(self, path: Path, key: str, problem: str) -> None:
        self.path = Path(path)
        self.key = key
        self.problem = problem
        super().__init__(f"{self.path}: {key}: {problem}; the record is refused, nothing used")


class OutputError(UsageError):
    """An output folder or file the command must not write: it overlaps a data folder, is a
    file where a folder belongs, cannot be written, or holds something the toolkit did not
    write (which it never replaces)."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class QuarantineError(ToolkitError):
    """Moving files into quarantine, or back, would lose or overwrite something."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DatasetFailedError(ToolkitError):
    """A dataset broke a blocking dataset-wide rule, so nothing is trained on it."""

    def __init__(self, path: Path, rules: list[str]) -> None:
        self.path = Path(path)
        self.rules = rules
        super().__init__(
            f"{self.path}: the dataset failed {', '.join(rules) or 'validation'}; "
            "run `toolkit validate` on it to see why, or train with a profile that fits it"
        )
