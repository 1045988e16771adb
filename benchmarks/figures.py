"""What a benchmark session measured: figures, the ratios judged against their limits, the
machine. Computing only; `render_table` turns it into the text the session prints.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SUITES = ("scan", "pipeline", "train", "memory")


@dataclass(frozen=True)
class Figure:
    """One measured quantity: `value` in `unit`, on `dataset`."""

    suite: str
    name: str
    value: float
    unit: str
    dataset: str
    note: str = ""


@dataclass(frozen=True)
class Ratio:
    """A ratio between two figures of the same run, with the limit it is held to.

    `kind` "floor": the ratio must be >= `limit`; "ceiling": <= `limit`. `target` is the
    issue's number (the full run's limit); `limit` is what this session asserted.
    """

    key: str
    suite: str
    what: str
    value: float
    limit: float | None
    kind: str
    target: float | None
    dataset: str
    known_miss: bool = False  # listed in KNOWN_MISSES or AT_PARITY: an xfail, with its reason

    @property
    def passed(self) -> bool | None:
        """Whether the ratio is within its limit; None when it is only reported."""
        if self.limit is None:
            return None
        return self.value >= self.limit if self.kind == "floor" else self.value <= self.limit

    @property
    def meets_target(self) -> bool | None:
        """Whether the ratio reaches the issue's target (whatever this session asserted)."""
        if self.target is None:
            return None
        return self.value >= self.target if self.kind == "floor" else self.value <= self.target

    def verdict(self) -> str:
        """`ok`, `FAIL`, `FAIL (known miss)` or `info`, as the table shows it."""
        if self.passed is False and self.known_miss:
            return "FAIL (known miss)"
        return {True: "ok", False: "FAIL", None: "info"}[self.passed]

    def limit_text(self) -> str:
        """`>= 1.5` / `<= 1.25` / `-`."""
        if self.limit is None:
            return "-"
        return f"{'>=' if self.kind == 'floor' else '<='} {self.limit:g}"


@dataclass
class Session:
    """Every figure and ratio of one run, with the machine and the mode it ran in."""

    mode: str
    machine: dict[str, Any]
    limits: dict[str, float] = field(default_factory=dict)  # ratio key -> asserted bound
    figures: list[Figure] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(
        self, suite: str, name: str, value: float, unit: str, dataset: str, note: str = ""
    ) -> Figure:
        """Record a figure and return it."""
        figure = Figure(suite, name, float(value), unit, dataset, note)
        self.figures.append(figure)
        return figure

    def judge(self, ratio: Ratio) -> Ratio:
        """Record a ratio; the caller asserts `ratio.passed`."""
        self.ratios.append(ratio)
        return ratio

    def info(self, suite: str, what: str, value: float, dataset: str) -> Ratio:
        """Record a ratio that is reported but held to no limit."""
        return self.judge(Ratio("info", suite, what, float(value), None, "floor", None, dataset))

    def as_dict(self) -> dict[str, Any]:
        """The JSON document: mode, machine, figures, ratios (with verdicts), notes."""
        return {
            "mode": self.mode,
            "machine": self.machine,
            "limits": self.limits,
            "figures": [asdict(f) for f in self.figures],
            "ratios": [
                {**asdict(r), "passed": r.passed, "meets_target": r.meets_target}
                for r in self.ratios
            ],
            "notes": self.notes,
        }

    def write_json(self, target: Path) -> Path:
        """Write `as_dict()` to target (folders created)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")
        return target


def best(seconds: list[float]) -> float:
    """The figure a ratio uses: the fastest round, the one least disturbed by other load."""
    return min(seconds)


def spread(seconds: list[float]) -> str:
    """`min/median/max s over n rounds`, for the note of a figure."""
    if not seconds:
        return "no rounds"
    med = statistics.median(seconds)
    return (
        f"{min(seconds):.3g}/{med:.3g}/{max(seconds):.3g} s min/median/max over "
        f"{len(seconds)} rounds"
    )


def describe_machine(versions: dict[str, str | None]) -> dict[str, Any]:
    """Cores, CPU, memory and load, with the library versions: what the figures depend on."""
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gb": _memory_gb(),
        "load_avg_start": _load(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def finish_machine(machine: dict[str, Any], started: float) -> None:
    """Add the end-of-run load and the session's wall time."""
    machine["load_avg_end"] = _load()
    machine["session_seconds"] = round(time.perf_counter() - started, 1)


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)
    except (ValueError, OSError, AttributeError):
        return None


def render_table(session: Session) -> list[str]:
    """The session as Markdown: the machine, figures per suite, then the judged ratios."""
    m = session.machine
    versions = m.get("versions", {})
    lines = [
        f"mode {session.mode}: {m.get('cores_usable')} usable cores ({m.get('cpu')}), "
        f"{m.get('memory_gb')} GB, Python {m.get('python')}, TensorFlow "
        f"{versions.get('tensorflow')}, Keras {versions.get('keras')}, Pillow "
        f"{versions.get('pillow')}, OpenCV {versions.get('opencv-python-headless')}; load average "
        f"{m.get('load_avg_start')} -> {m.get('load_avg_end')}; "
        f"{m.get('session_seconds')} s",
        "",
        "| suite | figure | value | dataset |",
        "|---|---|---:|---|",
    ]
    order = {s: i for i, s in enumerate(SUITES)}
    for f in sorted(session.figures, key=lambda f: order.get(f.suite, len(order))):
        lines.append(f"| {f.suite} | {f.name} | {_number(f.value)} {f.unit} | {f.dataset} |")
    lines += [
        "",
        "| ratio | value | limit | target | verdict | dataset |",
        "|---|---:|---:|---:|---|---|",
    ]
    for r in sorted(session.ratios, key=lambda r: order.get(r.suite, len(order))):
        target = "-" if r.target is None else f"{'>=' if r.kind == 'floor' else '<='} {r.target:g}"
        met = " (target missed)" if r.meets_target is False and r.passed else ""
        lines.append(
            f"| {r.what} | {r.value:.2f}x | {r.limit_text()} | {target} | "
            f"{r.verdict()}{met} | {r.dataset} |"
        )
    if session.notes:
        lines += ["", *[f"- {n}" for n in session.notes]]
    return lines


def _number(value: float) -> str:
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"
