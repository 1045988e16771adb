"""Profiles: the rules a dataset is held to, loaded from validations/ or a user's file.

A profile is data (TOML or YAML): a name, a description, optionally `extends` (another
profile whose rules it starts from), and a `rules` table whose keys are rule names and
whose values set that rule's parameters and `severity` ("error", "warning", or "off" to
drop a rule the parent profile has).
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import ProfileError
from validations.rules import (
    REGISTRY,
    SEVERITIES,
    Between,
    DatasetRule,
    FileRule,
    MaxPixels,
    OneOf,
    Rule,
    contradictions,
)

if TYPE_CHECKING:
    from toolkit.scan import ScanOptions

DEFAULT_PROFILE = "tutorial"


@dataclass(frozen=True)
class Profile:
    """A named set of configured rules."""

    name: str
    description: str
    rules: tuple[Rule, ...]
    source: str

    @property
    def file_rules(self) -> list[FileRule]:
        """Rules judged one row at a time (pandera)."""
        return [r for r in self.rules if isinstance(r, FileRule)]

    @property
    def dataset_rules(self) -> list[DatasetRule]:
        """Rules judged over many rows (Great Expectations)."""
        return [r for r in self.rules if isinstance(r, DatasetRule)]

    @property
    def spec(self) -> str:
        """What `load_profile` takes to load this profile again: a built-in's name, or the
        file's path."""
        builtin = builtin_profiles().get(self.name)
        return self.name if builtin is not None and str(builtin) == self.source else self.source

    def scan_options(self, detect_faces: bool = True) -> ScanOptions:
        """The scan's limits for this profile: it decodes what the `max_pixels` rule can accept,
        so a raised limit is decoded and a lowered one is not (bombs stop at the header).

        Without a `max_pixels` rule (switched off) the scan keeps its own default limit.
        """
        from toolkit.images import MAX_BYTES_PER_PIXEL
        from toolkit.scan import ScanOptions

        bound = next((r.max_pixels for r in self.rules if isinstance(r, MaxPixels)), None)
        if bound is None:
            return ScanOptions(detect_faces=detect_faces)
        return ScanOptions(
            max_decode_pixels=bound,
            max_decode_bytes=bound * MAX_BYTES_PER_PIXEL,
            detect_faces=detect_faces,
        )

    def as_dict(self) -> dict[str, Any]:
        """The profile as plain data (for report.json and run folders)."""
        return {
            "name": self.name,
            "spec": self.spec,
            "description": self.description,
            "source": self.source,
            "rules": {r.name: {**dataclasses.asdict(r), "rule": r.rule} for r in self.rules},
        }


def builtin_profiles() -> dict[str, Path]:
    """Names and files of the profiles shipped in validations/profiles."""
    from validations import PROFILES_DIR

    return {p.stem: p for p in sorted(PROFILES_DIR.glob("*.toml"))}


def load_profile(spec: str | Path | None = None) -> Profile:
    """Load a built-in profile by name, or a profile file (.toml, .yaml, .yml) by path.

    Every value is checked here, against what its rule parameter declares (validations.rules), so
    a bad profile is refused before any work: ProfileError names the file, the key, the value
    and what is allowed.
    """
    spec = DEFAULT_PROFILE if spec is None else spec
    data, source = _read(spec, seen=())
    name = data.get("name") or Path(source).stem
    rules = _build_rules(data["rules"])
    for key, value, allowed in contradictions(rules):
        raise ProfileError(source, key, f"expected {allowed}, got {value!r}")
    return Profile(name, data.get("description") or "", rules, source)


def _read(
    spec: str | Path, seen: tuple[str, ...], child: str | None = None
) -> tuple[dict[str, Any], str]:
    """The profile's settings, checked and merged over its parent's; and its file."""
    path = _locate(spec, child)
    source = str(path)
    if source in seen:
        raise ProfileError(source, "extends", "profiles extend each other in a loop")
    data = _checked(_parse(path), source)
    parent = data.pop("extends", None)
    if parent is None:
        return data, source
    if parent not in builtin_profiles():
        parent_path = path.parent / parent
        parent = parent_path if _is_file(parent_path) else parent
    base, _ = _read(parent, seen=(*seen, source), child=source)
    rules = dict(base["rules"])
    for key, params in data["rules"].items():
        rules[key] = {**rules.get(key, {}), **params}
    # a profile's name is its own (or its file's), never its parent's
    return {**base, "name": path.stem, **data, "rules": rules}, source


def _locate(spec: str | Path, child: str | None = None) -> Path:
    """The file of a built-in profile's name or of a path; `child` is the file that names it
    in `extends`, if any."""
    builtins = builtin_profiles()
    if isinstance(spec, str) and spec in builtins:
        return builtins[spec]
    path = Path(spec)
    if _is_file(path):
        return path
    problem = f"no such built-in profile or file (built-in: {', '.join(builtins)})"
    if child is not None:
        raise ProfileError(child, "extends", f"{_shown(str(spec))}: {problem}")
    raise ProfileError(str(spec), "profile", problem)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long, or holding a NUL byte
        return False


def _parse(path: Path) -> dict[str, Any]:
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        else:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, ValueError, OSError) as exc:
        raise ProfileError(str(path), "file", f"cannot be parsed: {exc}") from exc
    except Exception as exc:  # yaml.YAMLError without importing yaml up front
        raise ProfileError(str(path), "file", f"cannot be parsed: {exc}") from exc
    if not isinstance(data, dict):
        raise ProfileError(str(path), "file", "expected a table of settings at the top level")
    unknown = set(data) - set(_SETTINGS)
    if unknown:
        raise ProfileError(
            str(path),
            ", ".join(sorted(map(_key, unknown))),
            f"unknown setting (valid: {', '.join(_SETTINGS)})",
        )
    return data


#: The top-level settings of a profile file.
_SETTINGS = ("name", "description", "extends", "rules")


def _checked(data: dict[str, Any], source: str) -> dict[str, Any]:
    """One file's settings with every value checked, and `rules` as {rule: {param: value}}."""
    for key in ("name", "description", "extends"):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise ProfileError(source, key, f"expected a string, got {_shown(value)}")
    table = data.get("rules")
    if table is None:  # absent, or an empty `rules:` in YAML
        table = {}
    if not isinstance(table, dict):
        raise ProfileError(source, "rules", f"expected a table of rule names, got {_shown(table)}")
    rules = {}
    for key, params in table.items():
        cls = REGISTRY.get(key)
        if cls is None:
            raise ProfileError(
                source,
                f"rules.{_key(key)}",
                f"unknown rule (valid: {', '.join(sorted(REGISTRY))})",
            )
        if params is None:  # `[rules.x]` with nothing under it, in YAML
            params = {}
        if not isinstance(params, dict):
            raise ProfileError(
                source,
                f"rules.{key}",
                f"expected a table of the rule's parameters "
                f"(valid: {', '.join(_parameters(cls))}), got {_shown(params)}; "
                f"write them under a [rules.{key}] header",
            )
        rules[key] = _typed_params(cls, params, f"rules.{key}", source)
    return {**data, "rules": rules}


def _build_rules(table: dict[str, dict[str, Any]]) -> tuple[Rule, ...]:
    return tuple(
        REGISTRY[key](**params) for key, params in table.items() if params.get("severity") != "off"
    )


def _parameters(cls: type[Rule]) -> list[str]:
    return sorted(f.name for f in dataclasses.fields(cls))


def _typed_params(cls: type[Rule], params: dict[str, Any], where: str, source: str) -> dict:
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = _parameters(cls)
    out = {}
    for key, value in params.items():
        if key not in fields:
            valid = ", ".join(fields) or "none"
            raise ProfileError(
                source, f"{where}.{_key(key)}", f"unknown parameter (valid: {valid})"
            )
        # "off" is no severity a rule holds: it drops the rule (and a parent's) from the profile
        hint = _SEVERITY if key == "severity" else hints[key]
        out[key] = _coerce(hint, value, f"{where}.{key}", source)
    return out


_SEVERITY = typing.Annotated[str, OneOf((*SEVERITIES, "off"))]
#: Integers beyond 64 bits cannot be compared with the manifest's int64 columns.
_INT_RANGE = Between(-(2**63), 2**63 - 1)


def describe(hint: Any) -> str:
    """What a parameter of type `hint` may hold, in words: 'an integer >= 1'."""
    kind, rules = _unwrap(hint)
    if typing.get_origin(kind) is tuple:
        (inner, *_) = typing.get_args(kind)
        return f"a non-empty list of distinct values, each {describe(inner)}"
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if kind not in words:  # pragma: no cover - a rule declared a type profiles cannot hold
        raise TypeError(f"a rule parameter of type {kind!r} cannot be set from a profile")
    if kind is str and rules:
        return " and ".join(str(r) for r in rules)
    return " ".join([words[kind], *(str(r) for r in rules)])


def _unwrap(hint: Any) -> tuple[Any, list[Any]]:
    if typing.get_origin(hint) is typing.Annotated:
        kind, *rules = typing.get_args(hint)
        return kind, rules
    return hint, []


def _coerce(hint: Any, value: Any, where: str, source: str) -> Any:
    """`value` as the parameter's type, or ProfileError naming what is allowed."""
    kind, rules = _unwrap(hint)

    def refuse(limit: str = "") -> typing.NoReturn:
        allowed = describe(hint) + limit
        raise ProfileError(source, where, f"expected {allowed}, got {_shown(value)}")

    if typing.get_origin(kind) is tuple:
        (inner, *_) = typing.get_args(kind)
        if not isinstance(value, list) or not value or len(set(map(repr, value))) < len(value):
            refuse()
        try:
            return tuple(_coerce(inner, v, where, source) for v in value)
        except ProfileError:
            refuse()
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        refuse()
    if kind is int and not _INT_RANGE.allows(value):
        refuse(" that fits in 64 bits")
    if not all(r.allows(value) for r in rules):
        refuse()
    return value


def _key(key: Any) -> str:
    """A key as a message names it: bare when TOML would write it bare, else quoted (a key
    holding a newline or an escape sequence must not break the message's one line)."""
    text = str(key)
    return text if _BARE_KEY.fullmatch(text) else json.dumps(text)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _shown(value: Any) -> str:
    """A value as a message quotes it: its repr, and its type where the repr hides it."""
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return text
    return f"{text} ({type(value).__name__})"
