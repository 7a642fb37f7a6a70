#!/usr/bin/env python3
"""Measure AMB against the bare client and FastStream on each broker, side by side.

    python scripts/services.py up                        # brokers (not needed for memory)
    python benchmarks/run.py --adapters memory,redis,rabbitmq,kafka
    python benchmarks/run.py --adapters memory --quick   # seconds; what `nox -s bench` runs
    python benchmarks/run.py --adapters memory,redis --middleware otel   # tracing on vs off

For each adapter and scenario (see `scenarios.SCENARIOS`) every implementation (amb: our bus via
``MessageBus.from_url``; bare: the client library doing the same work; faststream) runs in the
same process, one after the other, in an order rotated every round; each run does its setup,
an untimed warm-up, then the timed run. The report gives the median over rounds.

A failing implementation (an adapter not installed yet, a bug, a timeout) becomes an error row
and the run goes on. A requested broker that does not answer stops the run before anything is
measured. Output: ``benchmarks/results/run-<date>.json`` and ``benchmarks/results/latest.md``
(``--quick`` writes under ``.bench/results/`` instead, so it never replaces the published results).

``--middleware otel`` measures what amb-opentelemetry costs: AMB with tracing and metrics on (the
OpenTelemetry SDK, spans dropped by the exporter) against AMB without, end to end and request/reply
by default, written to ``otel-<date>.json`` and ``latest-otel.md``.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import logging
import math
import sys
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import brokers
import harness
from harness import LatencyStats
from impl_amb import BUS_OPTIONS, AmbImpl, AmbOtelImpl, AmbOtelSampledImpl
from impl_bare import bare_for, use_preserialised_payloads
from impl_faststream import FastStreamImpl
from scenarios import SCENARIOS, Implementation, NotApplicable, Sample

IMPLEMENTATIONS = ("amb", "bare", "faststream", "amb-otel", "amb-otel-sampled")
IMPL_LABEL = {
    "amb": "AMB",
    "bare": "bare client",
    "faststream": "FastStream",
    "amb-otel": "AMB + OTel",
    "amb-otel-sampled": "AMB + OTel 1%",
}
#: What ``--middleware otel`` measures unless told otherwise.
OTEL_IMPLS = ("amb", "amb-otel", "amb-otel-sampled")
OTEL_SCENARIOS = ("end_to_end", "request_reply_1", "request_reply_100")
# Messages (or requests) per timed run; --quick divides by QUICK_DIVISOR.
COUNTS: dict[str, dict[str, int]] = {
    "memory": {
        "publish": 50_000,
        "end_to_end": 20_000,
        "fan_out": 5_000,
        "competing": 20_000,
        "request_reply_1": 5_000,
        "request_reply_100": 20_000,
    },
    "broker": {
        "publish": 5_000,
        "end_to_end": 5_000,
        "fan_out": 1_000,
        "competing": 5_000,
        "request_reply_1": 500,
        "request_reply_100": 5_000,
    },
    # Kafka moves ~100k msg/s here: 5,000 messages would be a 50 ms run, at the mercy of one
    # fetch round trip or a scheduler hiccup. These keep each timed run at a few hundred ms.
    "kafka": {
        "publish": 20_000,
        "end_to_end": 20_000,
        "fan_out": 4_000,
        "competing": 20_000,
        "request_reply_1": 500,
        "request_reply_100": 5_000,
    },
}
QUICK_DIVISOR = 10
WARMUP_FRACTION = 0.1
PACKAGES = (
    *brokers.AMB_DISTRIBUTIONS,
    "redis",
    "aio-pika",
    "aiormq",
    "aiokafka",
    "faststream",
    "pydantic",
    "amb-opentelemetry",
    "opentelemetry-api",
    "opentelemetry-sdk",
)


@dataclass
class Cell:
    """One (adapter, scenario, implementation): its rounds, or why there are none."""

    rounds: list[dict[str, float]] = field(default_factory=list)
    status: str = "ok"  # ok | n/a | error (error: no round succeeded)
    reason: str = ""
    failures: list[str] = field(default_factory=list)  # rounds that failed (a broker restarted, ...)

    def median(self) -> dict[str, float]:
        keys = ("handled", "elapsed_ns", "msg_per_s", "mean_ns", "p50_ns", "p99_ns")
        return {k: v for k, v in harness.median_dict(self.rounds, keys).items() if not math.isnan(v)}


def count_for(adapter: str, scenario: str, quick: bool) -> int:
    base = COUNTS.get(adapter, COUNTS["broker"])[scenario]
    return max(20, base // QUICK_DIVISOR) if quick else base


def make_impl(name: str, adapter: str, url: str) -> Implementation:
    if name == "amb":
        return AmbImpl(adapter, url)
    if name == "amb-otel":
        return AmbOtelImpl(adapter, url)
    if name == "amb-otel-sampled":
        return AmbOtelSampledImpl(adapter, url)
    if name == "bare":
        return bare_for(adapter, url)
    return FastStreamImpl(adapter, url)


def sample_stats(sample: Sample) -> dict[str, float]:
    stats: dict[str, float] = {
        "handled": sample.handled,
        "elapsed_ns": sample.elapsed_ns,
        "msg_per_s": sample.per_second,
    }
    if sample.latencies_ns:
        latency = LatencyStats.of(sample.latencies_ns)
        stats.update(mean_ns=latency.mean_ns, p50_ns=latency.p50_ns, p99_ns=latency.p99_ns)
    return stats


async def run_once(impl: Implementation, scenario: str, n: int, budget_s: float) -> Sample:
    """Setup, warm-up and one timed run, all within ``budget_s`` seconds."""

    async def go() -> Sample:
        async with impl.scenario(scenario) as run:
            await run(max(10, int(n * WARMUP_FRACTION)))
            with harness.gc_policy(enabled=True):
                return await run(n)

    try:
        return await asyncio.wait_for(go(), budget_s)
    except asyncio.TimeoutError:
        raise TimeoutError(f"did not finish within {budget_s:.0f} s") from None


async def wait_for_broker(adapter: str, url: str, progress: harness.Progress) -> None:
    """After a failure, give a restarting broker up to 60 s to come back before going on."""
    try:
        await brokers.probe(adapter, url, grace_s=60.0)
    except brokers.BrokerUnreachable as error:
        progress(f"{adapter}: still unreachable, going on: {error}")


def describe_error(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip()
    return text if len(text) < 300 else text[:297] + "..."


async def measure(args: argparse.Namespace, progress: harness.Progress) -> dict[str, Any]:
    adapters: list[str] = args.adapters
    broker_info: dict[str, Any] = {}
    for adapter in adapters:  # all brokers must answer before anything is measured
        broker_info[adapter] = await brokers.probe(adapter, brokers.url_for(adapter))
        progress(f"{adapter}: {broker_info[adapter]['version']}")

    results: dict[str, dict[str, dict[str, Cell]]] = {}
    described: dict[str, dict[str, str]] = {}
    for adapter in adapters:
        url = brokers.url_for(adapter)
        impls: list[Implementation] = []
        for name in args.impls:
            impls.append(make_impl(name, adapter, url))
        described[adapter] = {impl.name: impl.describe() for impl in impls}
        cells = results[adapter] = {s: {impl.name: Cell() for impl in impls} for s in args.scenarios}
        usable: list[Implementation] = []
        for impl in impls:
            try:
                await asyncio.wait_for(impl.check(), 30)
                usable.append(impl)
            except NotApplicable as not_applicable:
                for scenario in args.scenarios:
                    cells[scenario][impl.name] = Cell(status="n/a", reason=str(not_applicable))
            except Exception as error:
                progress(f"{adapter}/{impl.name}: unusable: {describe_error(error)}")
                for scenario in args.scenarios:
                    cells[scenario][impl.name] = Cell(status="error", reason=describe_error(error))
        for round_index in range(args.rounds):
            for scenario_index, scenario in enumerate(args.scenarios):
                n = count_for(adapter, scenario, args.quick)
                for impl in harness.alternating_order(usable, round_index + scenario_index):
                    cell = cells[scenario][impl.name]
                    if cell.status != "ok":
                        continue  # n/a, or failed without ever succeeding: don't wait on it again
                    try:
                        sample = await run_once(impl, scenario, n, args.budget)
                    except NotApplicable as not_applicable:
                        cell.status, cell.reason = "n/a", str(not_applicable)
                        continue
                    except Exception as error:
                        reason = describe_error(error)
                        progress(f"{adapter}/{scenario}/{impl.name}: ERROR {reason}")
                        if args.verbose:
                            traceback.print_exc()
                        # Brokers restart under us (other suites' fault tests): try again next
                        # round, unless it never worked and failed twice.
                        cell.failures.append(reason)
                        if not cell.rounds and len(cell.failures) >= 2:
                            cell.status, cell.reason = "error", reason
                        await wait_for_broker(adapter, url, progress)
                        continue
                    stats = sample_stats(sample)
                    cell.rounds.append(stats)
                    extra = f", p50 {harness.fmt_us(stats['p50_ns'])} µs" if "p50_ns" in stats else ""
                    progress(
                        f"{adapter} round {round_index + 1}/{args.rounds} {scenario:<18} {impl.name:<10}"
                        f" {harness.fmt_rate(stats['msg_per_s']):>10} msg/s{extra}"
                    )
    return {"brokers": broker_info, "implementations": described, "cells": results}


# --------------------------------------------------------------------------- report


def _cell_text(cell: Cell, metric: str, notes: list[str]) -> str:
    if cell.status == "n/a":
        return "n/a"
    if cell.status == "error" or (cell.status == "ok" and not cell.rounds and cell.failures):
        reason = cell.reason or cell.failures[-1]
        if reason not in notes:
            notes.append(reason)
        return f"error [{notes.index(reason) + 1}]"
    value = cell.median().get(metric, math.nan)
    text = harness.fmt_us(value) if metric.endswith("_ns") else harness.fmt_rate(value)
    if cell.failures:  # the median is over the rounds that worked
        note = f"{len(cell.failures)} round(s) failed, median of {len(cell.rounds)}: {cell.failures[0]}"
        if note not in notes:
            notes.append(note)
        text += f" [{notes.index(note) + 1}]"
    return text


def _ratio_text(a: Cell, b: Cell, metric: str) -> str:
    if a.status != "ok" or b.status != "ok" or not a.rounds or not b.rounds:
        return "–"
    return harness.fmt_ratio(
        harness.ratio(a.median().get(metric, math.nan), b.median().get(metric, math.nan))
    )


def markdown(data: dict[str, Any]) -> str:
    config = data["config"]
    lines = [
        "# AMB with amb-opentelemetry's tracing and metrics, on vs off"
        if config.get("middleware") == "otel"
        else "# AMB vs the bare client vs FastStream",
        "",
        f"`{data['command']}` — {config['rounds']} round(s), medians; ~{len(data['payload_json'])}-byte JSON payload; "
        f"{'quick mode; ' if config['quick'] else ''}generated {data['machine']['date']}.",
        "",
        f"Machine: {harness.machine_line(data['machine'])}.",
        "",
        "Packages: " + ", ".join(f"{k} {v}" for k, v in data["machine"]["packages"].items() if v) + ".",
        "",
        "Throughput is messages handled per second (deliveries for fan-out, answered requests for request/reply); "
        "ratios above 1.00x mean AMB is faster (AMB + OTel / AMB: the share of throughput kept with tracing on). "
        "Latency ratios below 1.00x mean AMB is faster.",
    ]
    if "bare" in config["implementations"]:
        lines += [
            "",
            f"Bare clients' payloads: {config.get('bare_payloads', 'serialised per message')} "
            "(AMB and FastStream always serialise every message).",
        ]
    for adapter, scenarios in data["cells"].items():
        notes: list[str] = []
        impls = data["implementations"][adapter]
        broker = data["brokers"][adapter]
        lines += ["", f"## {adapter}", "", f"Broker: {broker['version']} at `{broker['url']}`."]
        lines += [f"- {IMPL_LABEL.get(name, name)}: {text}" for name, text in impls.items()]
        lines.append("")
        names = list(impls)
        header = ["Scenario", "N", *[f"{IMPL_LABEL[n]} msg/s" for n in names]]
        has_bare, has_fs = "bare" in names, "faststream" in names
        otel = [name for name in names if name.startswith("amb-otel")] if "amb" in names else []
        if "amb" in names and has_bare:
            header.append("AMB / bare")
        if "amb" in names and has_fs:
            header.append("AMB / FastStream")
        header += [f"{IMPL_LABEL[name]} / AMB" for name in otel]
        rows = []
        for scenario, cells in scenarios.items():
            row = [SCENARIOS[scenario].label, f"{data['counts'][adapter][scenario]:,}"]
            row += [_cell_text(cells[n], "msg_per_s", notes) for n in names]
            if "amb" in names and has_bare:
                row.append(_ratio_text(cells["amb"], cells["bare"], "msg_per_s"))
            if "amb" in names and has_fs:
                row.append(_ratio_text(cells["amb"], cells["faststream"], "msg_per_s"))
            row += [_ratio_text(cells[name], cells["amb"], "msg_per_s") for name in otel]
            rows.append(row)
        lines.append(harness.markdown_table(header, rows, "lr" + "r" * (len(header) - 2)))
        latency_rows = []
        for scenario, cells in scenarios.items():
            if not SCENARIOS[scenario].latency:
                continue
            row = [SCENARIOS[scenario].label]
            for name in names:
                p50, p99 = _cell_text(cells[name], "p50_ns", notes), _cell_text(cells[name], "p99_ns", notes)
                row.append(p50 if p50 == p99 else f"{p50} / {p99}")
            if "amb" in names and has_bare:
                row.append(_ratio_text(cells["amb"], cells["bare"], "p50_ns"))
            if "amb" in names and has_fs:
                row.append(_ratio_text(cells["amb"], cells["faststream"], "p50_ns"))
            latency_rows.append(row)
        if latency_rows:
            lheader = ["Latency (µs, p50 / p99)", *[IMPL_LABEL[n] for n in names]]
            if "amb" in names and has_bare:
                lheader.append("AMB / bare (p50)")
            if "amb" in names and has_fs:
                lheader.append("AMB / FastStream (p50)")
            lines += ["", harness.markdown_table(lheader, latency_rows, "l" + "r" * (len(lheader) - 1))]
        if notes:
            lines += ["", *[f"[{i}] {note}" for i, note in enumerate(notes, 1)]]
        reasons = sorted(
            {cells[n].reason for cells in scenarios.values() for n in names if cells[n].status == "n/a"}
        )
        if reasons:
            lines += ["", "n/a: " + "; ".join(reasons) + "."]
    return "\n".join(lines) + "\n"


def to_json(cells: dict[str, dict[str, dict[str, Cell]]]) -> dict[str, Any]:
    return {
        adapter: {
            scenario: {
                name: {
                    "status": c.status,
                    "reason": c.reason,
                    "failed_rounds": c.failures,
                    "median": c.median(),
                    "rounds": c.rounds,
                }
                for name, c in impls.items()
            }
            for scenario, impls in scenarios.items()
        }
        for adapter, scenarios in cells.items()
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--adapters", default="memory", help=f"comma-separated: {','.join(brokers.ADAPTERS)} (default memory)"
    )
    parser.add_argument(
        "--impls",
        default=None,
        help="comma-separated: amb,bare,faststream,amb-otel (default amb,bare,faststream)",
    )
    parser.add_argument(
        "--scenarios",
        default=None,
        help="comma-separated subset of " + ",".join(SCENARIOS) + " (default all)",
    )
    parser.add_argument(
        "--middleware",
        choices=("otel",),
        default=None,
        help="otel: AMB with amb-opentelemetry's tracing (all, and 1%% of traces) and metrics against AMB without "
        f"(implementations {','.join(OTEL_IMPLS)}, scenarios {','.join(OTEL_SCENARIOS)} unless given)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"1 round, counts / {QUICK_DIVISOR}, output under .bench/results/",
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5, or 1 with --quick)")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds one scenario run may take (default 60, 20 with --quick)",
    )
    parser.add_argument(
        "--output-dir", type=Path, default=None, help="where run-<date>.json and latest.md go"
    )
    parser.add_argument(
        "--bare-preserialised",
        action="store_true",
        help="bare publishers send the payload serialised once instead of serialising every message "
        "(a lower bound; written to bare-preserialised-<date>.json and latest-bare-preserialised.md)",
    )
    parser.add_argument(
        "--amb-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an option for every AMB bus (a Python literal: num_partitions=None, linger_ms=5); "
        "repeatable; the default is none, the adapter's defaults",
    )
    parser.add_argument("--verbose", action="store_true", help="print tracebacks of failing implementations")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    for option in args.amb_option:
        name, _, value = option.partition("=")
        if not name or not value:
            parser.error(f"--amb-option takes NAME=VALUE, not {option!r}")
        try:
            BUS_OPTIONS[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parser.error(f"--amb-option {name}: {value!r} is not a Python literal")
    if args.impls is None:
        args.impls = ",".join(OTEL_IMPLS if args.middleware else IMPLEMENTATIONS[:3])
    if args.scenarios is None:
        args.scenarios = ",".join(OTEL_SCENARIOS if args.middleware else SCENARIOS)
    args.adapters = [a.strip() for a in args.adapters.split(",") if a.strip()]
    args.impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for value, known, what in (
        (args.adapters, brokers.ADAPTERS, "adapter"),
        (args.impls, IMPLEMENTATIONS, "implementation"),
        (args.scenarios, tuple(SCENARIOS), "scenario"),
    ):
        unknown = [v for v in value if v not in known]
        if unknown or not value:
            parser.error(f"unknown {what} {unknown or value}; choose from {', '.join(known)}")
    args.rounds = max(1, args.rounds if args.rounds is not None else (1 if args.quick else 5))
    args.budget = args.budget if args.budget is not None else (20.0 if args.quick else 60.0)
    if args.output_dir is None:
        args.output_dir = (harness.SCRATCH_DIR / "results") if args.quick else (harness.BENCH_DIR / "results")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.bare_preserialised:
        use_preserialised_payloads()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("amb", "aiokafka", "aio_pika", "aiormq", "faststream"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL if not args.verbose else logging.WARNING)
    progress = harness.Progress(args.quiet)
    try:
        measured = asyncio.run(measure(args, progress))
    except brokers.BrokerUnreachable as error:
        print(f"run.py: {error}", file=sys.stderr)
        return 2
    started = datetime.now(timezone.utc)
    data: dict[str, Any] = {
        "benchmark": "run",
        "command": " ".join(["python", "benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)]),
        "config": {
            "adapters": args.adapters,
            "implementations": args.impls,
            "scenarios": args.scenarios,
            "rounds": args.rounds,
            "quick": args.quick,
            "budget_s": args.budget,
            "warmup_fraction": WARMUP_FRACTION,
            "gc": "collected before each timed run, enabled during it",
            "timer": "time.perf_counter_ns",
            "bare_payloads": "serialised once" if args.bare_preserialised else "serialised per message",
            "middleware": args.middleware,
        },
        "machine": harness.machine_info(PACKAGES),
        "payload_json": __import__("scenarios").PAYLOAD_BYTES.decode(),
        "counts": {a: {s: count_for(a, s, args.quick) for s in args.scenarios} for a in args.adapters},
        "scenario_descriptions": {s: SCENARIOS[s].description for s in args.scenarios},
        "brokers": measured["brokers"],
        "implementations": measured["implementations"],
        "cells": to_json(measured["cells"]),
    }
    data["markdown"] = markdown({**data, "cells": measured["cells"]})
    stamp = started.strftime("%Y%m%d-%H%M%S")
    # Only full runs are named run-*.json: plot.py draws the newest of those.
    kind = "otel" if args.middleware else "bare-preserialised" if args.bare_preserialised else "run"
    json_path = args.output_dir / f"{kind}-{stamp}.json"
    harness.write_json(json_path, data)
    report = args.output_dir / ("latest.md" if kind == "run" else f"latest-{kind}.md")
    report.write_text(data["markdown"])
    print(data["markdown"])
    progress(f"wrote {harness.display_path(json_path)} and {harness.display_path(report)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
