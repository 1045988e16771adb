"""Profiles: the rules a dataset is held to, loaded from validations/ or a user's file.

A profile is data (TOML or YAML): a name, a description, optionally `extends` (another
profile whose rules it starts from), and a `rules` table whose keys are rule names and
whose values set that rule's parameters and `severity` ("error", "warning", or "off" to
drop a rule the parent profile has).
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.errors import ProfileError
from toolkit.rules import REGISTRY, SEVERITIES, DatasetRule, FileRule, Rule

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
    """Load a built-in profile by name, or a profile file (.toml, .yaml, .yml) by path."""
    spec = DEFAULT_PROFILE if spec is None else spec
    data, source = _read(spec, seen=())
    name = str(data.get("name") or Path(source).stem)
    description = str(data.get("description") or "")
    return Profile(name, description, _build_rules(data.get("rules", {}), source), source)


def _read(spec: str | Path, seen: tuple[str, ...]) -> tuple[dict[str, Any], str]:
    path = _locate(spec)
    source = str(path)
    if source in seen:
        raise ProfileError(source, "extends", "profiles extend each other in a loop")
    data = _parse(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data, source
    if not isinstance(parent, str):
        raise ProfileError(source, "extends", f"expected a profile name or path, got {parent!r}")
    if parent not in builtin_profiles():
        parent_path = path.parent / parent
        parent = parent_path if parent_path.exists() else parent
    base, _ = _read(parent, seen=(*seen, source))
    rules = dict(base.get("rules", {}))
    for key, params in (data.get("rules") or {}).items():
        rules[key] = {**rules.get(key, {}), **(params or {})}
    # a profile's name is its own (or its file's), never its parent's
    return {**base, "name": path.stem, **data, "rules": rules}, source


def _locate(spec: str | Path) -> Path:
    builtins = builtin_profiles()
    if isinstance(spec, str) and spec in builtins:
        return builtins[spec]
    path = Path(spec)
    if path.is_file():
        return path
    choices = ", ".join(builtins)
    raise ProfileError(
        str(spec), "profile", f"no such built-in profile or file (built-in: {choices})"
    )


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
    unknown = set(data) - {"name", "description", "extends", "rules"}
    if unknown:
        raise ProfileError(
            str(path),
            ", ".join(sorted(unknown)),
            "unknown setting (valid: name, description, extends, rules)",
        )
    return data


def _build_rules(table: Any, source: str) -> tuple[Rule, ...]:
    if not isinstance(table, dict):
        raise ProfileError(source, "rules", "expected a table of rule names")
    rules = []
    for key, params in table.items():
        cls = REGISTRY.get(key)
        if cls is None:
            raise ProfileError(
                source, f"rules.{key}", f"unknown rule (valid: {', '.join(sorted(REGISTRY))})"
            )
        params = dict(params or {})
        if params.get("severity") == "off":
            continue
        rules.append(cls(**_typed_params(cls, params, f"rules.{key}", source)))
    return tuple(rules)


def _typed_params(cls: type[Rule], params: dict[str, Any], where: str, source: str) -> dict:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for key, value in params.items():
        if key not in fields:
            valid = ", ".join(sorted(fields)) or "none"
            raise ProfileError(source, f"{where}.{key}", f"unknown parameter (valid: {valid})")
        out[key] = _coerce(hints[key], value, f"{where}.{key}", source)
    if out.get("severity", "error") not in SEVERITIES:
        raise ProfileError(
            source,
            f"{where}.severity",
            f"{out['severity']!r} is not a severity (valid: error, warning, off)",
        )
    return out


def _coerce(hint: Any, value: Any, where: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        (inner, *_) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ProfileError(source, where, f"expected a list, got {value!r}")
        return tuple(_coerce(inner, v, where, source) for v in value)
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ProfileError(
            source, where, f"expected {hint.__name__}, got {value!r} ({type(value).__name__})"
        )
    return value
