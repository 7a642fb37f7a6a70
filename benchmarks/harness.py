"""Timing, statistics, rounds and machine facts shared by every benchmark script.

Standard library only: `reproduce_results.py` imports this module inside the
``amb-core==0.1.0`` virtualenv too, where nothing else of ours is installed.
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

now_ns = time.perf_counter_ns

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
SCRATCH_DIR = REPO_ROOT / ".bench"  # git-ignored: virtualenvs, quick-run output


# --------------------------------------------------------------------------- statistics


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values, linearly interpolated."""
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    rank = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = rank - low
    return float(sorted_values[low]) + (float(sorted_values[high]) - float(sorted_values[low])) * fraction


@dataclass(frozen=True)
class LatencyStats:
    """Summary of one batch of latencies, all in nanoseconds."""

    count: int
    mean_ns: float
    p50_ns: float
    p99_ns: float
    min_ns: float
    max_ns: float

    @classmethod
    def of(cls, latencies_ns: Iterable[int]) -> LatencyStats:
        ordered = sorted(latencies_ns)
        if not ordered:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(
            count=len(ordered),
            mean_ns=statistics.fmean(ordered),
            p50_ns=percentile(ordered, 50),
            p99_ns=percentile(ordered, 99),
            min_ns=float(ordered[0]),
            max_ns=float(ordered[-1]),
        )

    def as_dict(self) -> dict[str, float]:
        return {
            "count": self.count,
            "mean_ns": self.mean_ns,
            "p50_ns": self.p50_ns,
            "p99_ns": self.p99_ns,
            "min_ns": self.min_ns,
            "max_ns": self.max_ns,
        }


def median_of(rounds: Sequence[Mapping[str, Any]], key: str) -> float:
    """The median over rounds of one numeric field (missing or NaN values are ignored)."""
    values = [
        float(r[key]) for r in rounds if key in r and r[key] is not None and not math.isnan(float(r[key]))
    ]
    return statistics.median(values) if values else math.nan


def median_dict(rounds: Sequence[Mapping[str, Any]], keys: Iterable[str]) -> dict[str, float]:
    return {key: median_of(rounds, key) for key in keys}


def ratio(numerator: float, denominator: float) -> float:
    if not denominator or math.isnan(numerator) or math.isnan(denominator):
        return math.nan
    return numerator / denominator


# --------------------------------------------------------------------------- rounds


T = TypeVar("T")


def alternating_order(names: Sequence[T], round_index: int) -> list[T]:
    """The order in which implementations run in round ``round_index``: rotated every round,
    so that slow drifts of the machine (thermal, a noisy neighbour) hit each one equally."""
    if not names:
        return []
    shift = round_index % len(names)
    return list(names[shift:]) + list(names[:shift])


@contextmanager
def gc_policy(enabled: bool) -> Iterator[None]:
    """Collect garbage before a timed section, then run it with the collector on or off.

    Both implementations of a comparison always get the same policy."""
    was_enabled = gc.isenabled()
    gc.collect()
    if not enabled:
        gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# --------------------------------------------------------------------------- formatting


def fmt_us(ns: float) -> str:
    if math.isnan(ns):
        return "n/a"
    us = ns / 1000.0
    if us >= 1000:
        return f"{us:,.0f}"
    if us >= 100:
        return f"{us:.0f}"
    if us >= 10:
        return f"{us:.1f}"
    return f"{us:.2f}"


def fmt_ms(ns: float) -> str:
    if math.isnan(ns):
        return "n/a"
    return f"{ns / 1e6:.4f}" if ns < 1e7 else f"{ns / 1e6:.1f}"


def fmt_rate(per_s: float) -> str:
    if math.isnan(per_s):
        return "n/a"
    return f"{per_s:,.0f}"


def fmt_ratio(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.2f}x"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]], align: str | None = None) -> str:
    """A GitHub markdown table; ``align`` is one letter per column (l/r), default: first left."""
    header = list(header)
    align = align or ("l" + "r" * (len(header) - 1))
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines.extend("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)
    return "\n".join(lines)


# --------------------------------------------------------------------------- machine facts


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def source_revision() -> str | None:
    """The repository's commit, with "+dirty" when packages/ has uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "packages"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+dirty" if dirty else "")) or None


def machine_info(packages: Iterable[str] = ()) -> dict[str, Any]:
    """What a reader needs to judge the numbers: CPU, cores, OS, Python, package versions, date."""
    try:
        usable_cores: int | None = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable_cores = os.cpu_count()
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores,
        "memory_gib": memory_total_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        # Other work on the machine skews absolute numbers (alternation keeps ratios fair).
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "packages": package_versions(packages),
        "source_revision": source_revision(),
    }


def machine_line(info: Mapping[str, Any]) -> str:
    memory = f", {info['memory_gib']} GiB RAM" if info.get("memory_gib") else ""
    load = info.get("load_average_1_5_15")
    load_text = f", load average {load[0]:.2f} when written" if load else ""
    return (
        f"{info['cpu_model']} ({info['usable_cores']} usable cores{memory}), {info['platform']}, "
        f"{info['python_implementation']} {info['python']}, {info['date']}{load_text}"
    )


# --------------------------------------------------------------------------- output


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=_json_default, allow_nan=True) + "\n")


def _json_default(value: object) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


@dataclass
class Progress:
    """Progress lines on stderr, so stdout stays clean for JSON and markdown."""

    quiet: bool = False
    started_ns: int = field(default_factory=now_ns)

    def __call__(self, text: str) -> None:
        if not self.quiet:
            elapsed = (now_ns() - self.started_ns) / 1e9
            print(f"[{elapsed:7.1f}s] {text}", file=sys.stderr, flush=True)
