#!/usr/bin/env python3
"""Plot the latest `run.py` results: throughput and request/reply latency per adapter.

    python benchmarks/plot.py [--input benchmarks/results/run-<date>.json] [--output-dir benchmarks/results]

Writes ``throughput.png`` and ``latency.png``. Both use a log scale: the in-memory broker and
the network brokers differ by orders of magnitude.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import harness
import matplotlib.pyplot as plt  # after choosing the headless backend
from scenarios import SCENARIOS

COLORS = {"amb": "#1f77b4", "bare": "#7f7f7f", "faststream": "#ff7f0e"}
LABELS = {"amb": "AMB", "bare": "bare client", "faststream": "FastStream"}
SHORT = {
    "publish": "publish",
    "end_to_end": "end-to-end",
    "fan_out": "fan-out x10",
    "competing": "group of 4",
    "request_reply_1": "req/rep x1",
    "request_reply_100": "req/rep x100",
}


def latest_run(directory: Path) -> Path:
    runs = sorted(directory.glob("run-*.json"))
    if not runs:
        raise SystemExit(f"plot.py: no run-*.json in {directory}; run benchmarks/run.py first")
    return runs[-1]


def _value(cell: dict[str, Any], metric: str) -> float:
    if cell.get("status") != "ok":
        return math.nan
    return float(cell.get("median", {}).get(metric, math.nan))


def _grid(count: int) -> tuple[int, int]:
    return (1, count) if count <= 2 else (2, math.ceil(count / 2))


def _mark_missing(ax: Any, x: float, cell: dict[str, Any], y: float) -> None:
    text = "n/a" if cell.get("status") == "n/a" else "error"
    ax.text(x, y, text, rotation=90, ha="center", va="bottom", fontsize=7, color="#a00000")


def plot_throughput(data: dict[str, Any], path: Path) -> None:
    adapters = list(data["cells"])
    rows, cols = _grid(len(adapters))
    fig, axes = plt.subplots(rows, cols, figsize=(7.5 * cols, 4.6 * rows), squeeze=False)
    for ax, adapter in zip(axes.flat, adapters, strict=False):
        cells = data["cells"][adapter]
        scenarios = list(cells)
        impls = list(next(iter(cells.values())))
        width = 0.8 / len(impls)
        values = [_value(cells[s][i], "msg_per_s") for s in scenarios for i in impls]
        floor = min((v for v in values if not math.isnan(v)), default=1.0) / 3
        for k, impl in enumerate(impls):
            xs = [j + (k - (len(impls) - 1) / 2) * width for j in range(len(scenarios))]
            ys = [_value(cells[s][impl], "msg_per_s") for s in scenarios]
            ax.bar(
                xs,
                [0 if math.isnan(y) else y for y in ys],
                width,
                label=LABELS.get(impl, impl),
                color=COLORS.get(impl),
            )
            for x, y, s in zip(xs, ys, scenarios, strict=True):
                if math.isnan(y):
                    _mark_missing(ax, x, cells[s][impl], floor)
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor)
        ax.set_xticks(range(len(scenarios)))
        ax.set_xticklabels([SHORT.get(s, s) for s in scenarios], rotation=20, ha="right", fontsize=9)
        ax.set_ylabel("messages handled / s (log)")
        ax.set_title(f"{adapter} — {data['brokers'][adapter]['version'].split(' (')[0]}", fontsize=11)
        ax.grid(axis="y", which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    for ax in list(axes.flat)[len(adapters) :]:
        ax.set_visible(False)
    fig.suptitle(f"Throughput, median of {data['config']['rounds']} round(s) — higher is better", fontsize=12)
    fig.text(0.5, 0.005, harness.machine_line(data["machine"]), ha="center", fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.02, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency(data: dict[str, Any], path: Path) -> None:
    adapters = list(data["cells"])
    rows, cols = _grid(len(adapters))
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.4 * rows), squeeze=False)
    for ax, adapter in zip(axes.flat, adapters, strict=False):
        cells = data["cells"][adapter]
        scenarios = [s for s in cells if SCENARIOS[s].latency]
        impls = list(next(iter(cells.values())))
        width = 0.8 / max(1, len(impls))
        values = [_value(cells[s][i], "p50_ns") / 1000 for s in scenarios for i in impls]
        floor = min((v for v in values if not math.isnan(v)), default=1.0) / 3
        for k, impl in enumerate(impls):
            xs = [j + (k - (len(impls) - 1) / 2) * width for j in range(len(scenarios))]
            p50 = [_value(cells[s][impl], "p50_ns") / 1000 for s in scenarios]
            p99 = [_value(cells[s][impl], "p99_ns") / 1000 for s in scenarios]
            heights = [0 if math.isnan(y) else y for y in p50]
            ax.bar(xs, heights, width, label=f"{LABELS.get(impl, impl)} p50", color=COLORS.get(impl))
            ax.scatter(
                [x for x, y in zip(xs, p99, strict=True) if not math.isnan(y)],
                [y for y in p99 if not math.isnan(y)],
                marker="_",
                s=250,
                color="black",
                zorder=3,
                label="p99" if k == 0 else None,
            )
            for x, y, s in zip(xs, p50, scenarios, strict=True):
                if math.isnan(y):
                    _mark_missing(ax, x, cells[s][impl], floor)
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor)
        ax.set_xticks(range(len(scenarios)))
        ax.set_xticklabels([SCENARIOS[s].label for s in scenarios], fontsize=9)
        ax.set_ylabel("request latency, µs (log)")
        ax.set_title(f"{adapter} — {data['brokers'][adapter]['version'].split(' (')[0]}", fontsize=11)
        ax.grid(axis="y", which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    for ax in list(axes.flat)[len(adapters) :]:
        ax.set_visible(False)
    fig.suptitle("Request/reply latency: bars p50, black ticks p99 — lower is better", fontsize=12)
    fig.text(0.5, 0.005, harness.machine_line(data["machine"]), ha="center", fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.02, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--input", type=Path, default=None, help="a run-*.json (default: the newest in --output-dir)"
    )
    parser.add_argument("--output-dir", type=Path, default=harness.BENCH_DIR / "results")
    args = parser.parse_args(argv)
    source = args.input or latest_run(args.output_dir)
    data = json.loads(source.read_text())
    args.output_dir.mkdir(parents=True, exist_ok=True)
    plot_throughput(data, args.output_dir / "throughput.png")
    plot_latency(data, args.output_dir / "latency.png")
    print(
        f"plotted {harness.display_path(source)} -> {harness.display_path(args.output_dir / 'throughput.png')}, "
        f"{harness.display_path(args.output_dir / 'latency.png')}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
