#!/usr/bin/env python3
"""Reproduce the amb-core 0.1.0 README's performance table, side by side with amb-core 0.1.0.

    python benchmarks/reproduce_results.py --seed 42 --iterations 500            # both, 7 rounds
    python benchmarks/reproduce_results.py --iterations 50 --impl current          # quick

What is measured, on the in-memory broker, with 100 B, 1 KB and 10 KB payloads (the 0.1.0
experiments' method; see benchmarks/README.md):

* fire-and-forget: the latency of one ``await bus.publish()`` on a topic nobody subscribes to;
* end-to-end pub/sub: from just before ``publish()`` to the first line of the subscriber's
  handler, one message in flight;
* request-response: one ``await bus.request()`` answered by a subscriber calling ``bus.reply()``,
  one request in flight;
* burst (100 B only, issue 2's fourth target): N publishes back to back, timed until the
  subscriber's handler has seen all N.

``--impl both`` (the default) measures our amb-core and ``amb-core==0.1.0`` from PyPI. The 0.1.0
copy lives in its own virtualenv, ``.bench/venv-amb-core-0.1.0`` (created with ``python -m venv``
and pip when missing, with the same pydantic and anyio versions as ours). Every round runs this
same file once per implementation, each in a fresh interpreter (``--impl current --emit-json``),
alternating which goes first; the table reports medians over rounds. Only ``amb_core``'s public
API is used, identically for both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import string
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
from harness import LatencyStats, now_ns

SIZES = (100, 1000, 10_000)
SIZE_LABEL = {100: "100 B", 1000: "1 KB", 10_000: "10 KB"}
PATTERNS = ("fire_and_forget", "end_to_end", "request_reply")
PATTERN_LABEL = {
    "fire_and_forget": "Fire-and-forget",
    "end_to_end": "End-to-end pub/sub",
    "request_reply": "Request-response",
    "burst": "Burst (N publishes until all handled)",
}
SEED_VERSION = "0.1.0"
SEED_VENV = harness.SCRATCH_DIR / f"venv-amb-core-{SEED_VERSION}"
# Pinned in the 0.1.0 virtualenv to the versions next to our code, so only amb-core differs.
SHARED_DEPENDENCIES = ("pydantic", "pydantic-core", "anyio")
# The 0.1.0 README's table (InMemoryBroker, Python 3.13, seed=42, 100 B): mean ms and msg/s.
SEED_README = {
    "fire_and_forget": (0.032, 30_989),
    "end_to_end": (0.091, 10_946),
    "request_reply": (0.096, 10_372),
}
# Issue 2's targets: ours / 0.1.0 on the 100 B rows (latency: mean; burst: msg/s).
TARGETS = (
    ("fire_and_forget", "mean_ns", "<=", 0.5, "Fire-and-forget latency"),
    ("end_to_end", "mean_ns", "<=", 0.6, "End-to-end latency"),
    ("request_reply", "mean_ns", "<=", 0.4, "Request/reply latency"),
    ("burst", "msg_per_s", ">=", 3.0, "Burst throughput"),
)
TIMEOUT_S = 5.0  # per message or request; a stuck implementation fails instead of hanging


@dataclass(frozen=True)
class Config:
    seed: int
    iterations: int
    warmup: int
    burst: int
    gc_enabled: bool


# =========================================================================== measurement
# Everything in this section runs inside the interpreter being measured, against whatever
# ``amb_core`` it imports: our package, or 0.1.0 in the seed's virtualenv.


def make_payloads(size: int, count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` distinct, deterministic payloads whose JSON form is ``size`` bytes long."""
    rng = random.Random(seed * 1_000_003 + size)
    alphabet = string.ascii_letters + string.digits
    payloads = []
    for index in range(count):
        payload: dict[str, Any] = {"agent_id": f"agent-{index % 10}", "seq": index, "data": ""}
        room = max(1, size - len(json.dumps(payload, separators=(",", ":"))))
        payload["data"] = "".join(rng.choices(alphabet, k=room))
        payloads.append(payload)
    return payloads


def _cycle(payloads: Sequence[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    return [payloads[i % len(payloads)] for i in range(count)]


async def _with_deadline(future: asyncio.Future[int], what: str) -> int:
    """Await ``future`` at most TIMEOUT_S seconds, at the cost of one timer (same for both)."""
    timer = asyncio.get_running_loop().call_later(TIMEOUT_S, future.cancel)
    try:
        return await future
    except asyncio.CancelledError:
        raise TimeoutError(f"{what}: nothing arrived within {TIMEOUT_S} s") from None
    finally:
        timer.cancel()


async def measure_fire_and_forget(bus_type: Any, payloads: list[dict[str, Any]], warmup: int) -> list[int]:
    topic = "benchmark.publish"
    latencies: list[int] = []
    async with bus_type() as bus:
        for payload in _cycle(payloads, warmup):
            await bus.publish(topic, payload)
        for payload in payloads:
            start = now_ns()
            await bus.publish(topic, payload)
            latencies.append(now_ns() - start)
    return latencies


async def measure_end_to_end(bus_type: Any, payloads: list[dict[str, Any]], warmup: int) -> list[int]:
    topic = "benchmark.e2e"
    loop = asyncio.get_running_loop()
    waiting: list[asyncio.Future[int]] = []

    async def handler(message: Any) -> None:
        received = now_ns()  # the first thing the handler does
        if waiting and not waiting[0].done():
            waiting[0].set_result(received)

    async def one(payload: dict[str, Any]) -> int:
        waiting[:] = [loop.create_future()]
        start = now_ns()
        await bus.publish(topic, payload)
        return await _with_deadline(waiting[0], "end-to-end") - start

    async with bus_type() as bus:
        await bus.subscribe(topic, handler)
        for payload in _cycle(payloads, warmup):
            await one(payload)
        return [await one(payload) for payload in payloads]


async def measure_request_reply(bus_type: Any, payloads: list[dict[str, Any]], warmup: int) -> list[int]:
    topic = "benchmark.request"

    async def responder(message: Any) -> None:
        await bus.reply(message, {"response": "ack", "original_id": message.id})

    async def one(payload: dict[str, Any]) -> int:
        start = now_ns()
        await bus.request(topic, payload, timeout=TIMEOUT_S)
        return now_ns() - start

    async with bus_type() as bus:
        await bus.subscribe(topic, responder)
        for payload in _cycle(payloads, warmup):
            await one(payload)
        return [await one(payload) for payload in payloads]


async def measure_burst(
    bus_type: Any, payloads: list[dict[str, Any]], warmup: int, count: int
) -> dict[str, float]:
    """``count`` publishes back to back; the clock stops when the handler has seen them all."""
    topic = "benchmark.burst"
    loop = asyncio.get_running_loop()
    state = {"seen": 0, "target": 0}
    done: list[asyncio.Future[int]] = []

    async def handler(message: Any) -> None:
        state["seen"] += 1
        if state["seen"] == state["target"]:
            done[0].set_result(now_ns())

    async def burst(batch: list[dict[str, Any]]) -> tuple[int, int, int]:
        state["seen"], state["target"] = 0, len(batch)
        done[:] = [loop.create_future()]
        start = now_ns()
        for payload in batch:
            await bus.publish(topic, payload)
        published = now_ns()
        finished = await _with_deadline(done[0], "burst")
        return start, published, finished

    async with bus_type() as bus:
        await bus.subscribe(topic, handler)
        await burst(_cycle(payloads, max(warmup, 1)))
        start, published, finished = await burst(_cycle(payloads, count))
    elapsed = finished - start
    return {
        "count": count,
        "elapsed_ns": elapsed,
        "publish_phase_ns": published - start,
        "msg_per_s": count * 1e9 / elapsed,
        "mean_ns": elapsed / count,
    }


def latency_result(latencies: list[int], loop_ns: int) -> dict[str, float]:
    stats = LatencyStats.of(latencies).as_dict()
    # msg/s as the 0.1.0 experiments computed it: iterations / sum of latencies (= 1 / mean).
    stats["msg_per_s"] = 1e9 / stats["mean_ns"]
    stats["loop_msg_per_s"] = len(latencies) * 1e9 / loop_ns
    return stats


async def measure_all(config: Config) -> dict[str, dict[str, float]]:
    from amb_core import MessageBus

    results: dict[str, dict[str, float]] = {}
    measures: dict[str, Callable[[Any, list[dict[str, Any]], int], Awaitable[list[int]]]] = {
        "fire_and_forget": measure_fire_and_forget,
        "end_to_end": measure_end_to_end,
        "request_reply": measure_request_reply,
    }
    for pattern, measure in measures.items():
        for size in SIZES:
            payloads = make_payloads(size, config.iterations, config.seed)
            with harness.gc_policy(config.gc_enabled):
                started = now_ns()
                latencies = await measure(MessageBus, payloads, config.warmup)
                loop_ns = now_ns() - started
            results[f"{pattern}/{size}"] = latency_result(latencies, loop_ns)
    payloads = make_payloads(100, min(config.burst, 1000), config.seed)
    with harness.gc_policy(config.gc_enabled):
        results["burst/100"] = await measure_burst(MessageBus, payloads, config.warmup, config.burst)
    return results


def worker(config: Config) -> dict[str, Any]:
    """One round in this interpreter: the JSON that `--emit-json` prints."""
    import amb_core

    packages = ("amb-core", *SHARED_DEPENDENCIES)
    return {
        "amb_core_version": harness.package_versions(["amb-core"])["amb-core"],
        "amb_core_path": str(Path(amb_core.__file__).parent),
        "machine": harness.machine_info(packages),
        "results": asyncio.run(measure_all(config)),
    }


# =========================================================================== orchestration


def ensure_seed_venv(progress: harness.Progress) -> Path:
    """The interpreter of ``.bench/venv-amb-core-0.1.0``, created and filled when missing."""
    python = SEED_VENV / "bin" / "python"
    if not python.exists():
        progress(f"creating {harness.display_path(SEED_VENV)} (python -m venv)")
        subprocess.run([sys.executable, "-m", "venv", str(SEED_VENV)], check=True)
    probe = subprocess.run(
        [str(python), "-c", "from importlib.metadata import version; print(version('amb-core'))"],
        capture_output=True,
        text=True,
    )
    if probe.returncode == 0 and probe.stdout.strip() == SEED_VERSION:
        return python
    pins = [f"{name}=={ver}" for name, ver in harness.package_versions(SHARED_DEPENDENCIES).items() if ver]
    progress(f"installing amb-core=={SEED_VERSION} {' '.join(pins)} into the seed's virtualenv (pip)")
    install = [str(python), "-m", "pip", "install", "--quiet", f"amb-core=={SEED_VERSION}"]
    if subprocess.run([*install, *pins]).returncode != 0:
        progress("the pinned install failed; installing 0.1.0 with its own dependency choice")
        subprocess.run(install, check=True)
    return python


def run_worker(python: Path, config: Config) -> dict[str, Any]:
    command = [
        str(python),
        str(Path(__file__).resolve()),
        "--impl",
        "current",
        "--emit-json",
        "--seed",
        str(config.seed),
        "--iterations",
        str(config.iterations),
        "--warmup",
        str(config.warmup),
        "--burst",
        str(config.burst),
        "--gc",
        "on" if config.gc_enabled else "off",
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if finished.returncode != 0:
        raise RuntimeError(f"{python} failed ({finished.returncode}):\n{finished.stderr[-4000:]}")
    data: dict[str, Any] = json.loads(finished.stdout)
    return data


METRICS = (
    "mean_ns",
    "p50_ns",
    "p99_ns",
    "min_ns",
    "max_ns",
    "msg_per_s",
    "loop_msg_per_s",
    "publish_phase_ns",
)


def aggregate(rounds: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per scenario, the median over rounds of each metric."""
    scenarios = rounds[0]["results"].keys()
    out: dict[str, dict[str, float]] = {}
    for scenario in scenarios:
        per_round = [r["results"][scenario] for r in rounds]
        medians = {k: v for k, v in harness.median_dict(per_round, METRICS).items() if not math.isnan(v)}
        medians["count"] = per_round[0]["count"]
        out[scenario] = medians
    return out


def impl_label(impl: str, info: dict[str, Any]) -> str:
    return f"amb-core {info['amb_core_version']}" + (" (ours)" if impl == "current" else " (PyPI)")


def latency_table(impls: dict[str, dict[str, Any]]) -> str:
    rows = []
    for pattern in PATTERNS:
        for size in SIZES:
            for impl, info in impls.items():
                s = info["medians"][f"{pattern}/{size}"]
                rows.append(
                    [
                        PATTERN_LABEL[pattern],
                        SIZE_LABEL[size],
                        impl_label(impl, info),
                        harness.fmt_ms(s["mean_ns"]),
                        harness.fmt_us(s["mean_ns"]),
                        harness.fmt_us(s["p50_ns"]),
                        harness.fmt_us(s["p99_ns"]),
                        harness.fmt_rate(s["msg_per_s"]),
                    ]
                )
    for impl, info in impls.items():
        s = info["medians"]["burst/100"]
        rows.append(
            [
                PATTERN_LABEL["burst"],
                "100 B",
                impl_label(impl, info),
                harness.fmt_ms(s["mean_ns"]),
                harness.fmt_us(s["mean_ns"]),
                "",
                "",
                harness.fmt_rate(s["msg_per_s"]),
            ]
        )
    header = ["Pattern", "Payload", "Implementation", "Mean ms", "Mean µs", "p50 µs", "p99 µs", "msg/s"]
    return harness.markdown_table(header, rows, "lllrrrrr")


def comparison(impls: dict[str, dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    ours, seed = impls["current"]["medians"], impls["seed"]["medians"]
    rows, targets = [], []
    for pattern in PATTERNS:
        for size in SIZES:
            key = f"{pattern}/{size}"
            rows.append(
                [
                    PATTERN_LABEL[pattern],
                    SIZE_LABEL[size],
                    harness.fmt_ratio(harness.ratio(ours[key]["mean_ns"], seed[key]["mean_ns"])),
                    harness.fmt_ratio(harness.ratio(ours[key]["p50_ns"], seed[key]["p50_ns"])),
                    harness.fmt_ratio(harness.ratio(ours[key]["p99_ns"], seed[key]["p99_ns"])),
                    harness.fmt_ratio(harness.ratio(ours[key]["msg_per_s"], seed[key]["msg_per_s"])),
                ]
            )
    rows.append(
        [
            PATTERN_LABEL["burst"],
            "100 B",
            harness.fmt_ratio(harness.ratio(ours["burst/100"]["mean_ns"], seed["burst/100"]["mean_ns"])),
            "",
            "",
            harness.fmt_ratio(harness.ratio(ours["burst/100"]["msg_per_s"], seed["burst/100"]["msg_per_s"])),
        ]
    )
    ratio_table = harness.markdown_table(
        ["Pattern", "Payload", "mean new/seed", "p50 new/seed", "p99 new/seed", "msg/s new/seed"],
        rows,
        "llrrrr",
    )
    target_rows = []
    for pattern, metric, op, bound, label in TARGETS:
        key = f"{pattern}/100"
        value = harness.ratio(ours[key][metric], seed[key][metric])
        met = value <= bound if op == "<=" else value >= bound
        entry: dict[str, Any] = {
            "target": label,
            "metric": metric,
            "ratio": value,
            "bound": f"{op} {bound}",
            "met": met,
        }
        if metric == "msg_per_s":
            ours_s, seed_s = harness.fmt_rate(ours[key][metric]), harness.fmt_rate(seed[key][metric])
            p50_text, p50_verdict = "", ""
        else:
            ours_s = f"{harness.fmt_us(ours[key]['mean_ns'])} / {harness.fmt_us(ours[key]['p50_ns'])} µs"
            seed_s = f"{harness.fmt_us(seed[key]['mean_ns'])} / {harness.fmt_us(seed[key]['p50_ns'])} µs"
            p50_ratio = harness.ratio(ours[key]["p50_ns"], seed[key]["p50_ns"])
            entry["ratio_p50"], entry["met_p50"] = p50_ratio, p50_ratio <= bound
            p50_text, p50_verdict = harness.fmt_ratio(p50_ratio), _verdict(p50_ratio <= bound)
        targets.append(entry)
        target_rows.append(
            [
                label,
                ours_s,
                seed_s,
                harness.fmt_ratio(value),
                p50_text,
                f"{op} {bound}x",
                _verdict(met),
                p50_verdict,
            ]
        )
    target_table = harness.markdown_table(
        [
            "Issue-2 target (100 B)",
            "Ours (mean / p50, or msg/s)",
            "0.1.0",
            "new/seed (mean)",
            "new/seed (p50)",
            "Target",
            "Verdict (mean, the seed's statistic)",
            "Verdict (p50)",
        ],
        target_rows,
        "lrrrrrll",
    )
    return ratio_table + "\n\n" + target_table, targets


def _verdict(met: bool) -> str:
    return "met" if met else "**not met**"


def seed_readme_table() -> str:
    rows = [[PATTERN_LABEL[p], f"{ms:.3f}", harness.fmt_rate(rate)] for p, (ms, rate) in SEED_README.items()]
    return harness.markdown_table(["Pattern (0.1.0 README, 100 B)", "Latency ms", "msg/s"], rows)


def summary_markdown(
    config: Config, rounds: int, impls: dict[str, dict[str, Any]], machine: dict[str, Any]
) -> tuple[str, list[dict[str, Any]]]:
    lines = [
        "## Seed table reproduced (in-memory broker)",
        "",
        f"`python benchmarks/reproduce_results.py --seed {config.seed} --iterations {config.iterations}"
        f" --impl {'both' if 'seed' in impls and 'current' in impls else next(iter(impls))}`: "
        f"{config.iterations} timed iterations per row after {config.warmup} warm-up ones, burst of "
        f"{config.burst}, medians of {rounds} rounds (each implementation in a fresh interpreter per round, "
        f"order alternating), garbage collector {'on' if config.gc_enabled else 'off'} for both.",
        "",
        f"Machine: {harness.machine_line(machine)}.",
        "",
        latency_table(impls),
        "",
        "msg/s on the latency rows is the 0.1.0 experiments' definition (iterations / sum of latencies = 1 / mean);"
        " the burst row's is real throughput (messages handled / wall time).",
        "",
    ]
    targets: list[dict[str, Any]] = []
    if "current" in impls and "seed" in impls:
        table, targets = comparison(impls)
        lines += ["### Ours / 0.1.0 (lower is better for latency, higher for msg/s)", "", table, ""]
    lines += [
        "For reference, the 0.1.0 README's own table (another machine, Python 3.13):",
        "",
        seed_readme_table(),
        "",
    ]
    return "\n".join(lines), targets


def orchestrate(config: Config, impl: str, rounds: int, output: Path, progress: harness.Progress) -> None:
    interpreters: dict[str, Path] = {}
    if impl in ("current", "both"):
        interpreters["current"] = Path(sys.executable)
    if impl in ("seed", "both"):
        interpreters["seed"] = ensure_seed_venv(progress)
    collected: dict[str, list[dict[str, Any]]] = {name: [] for name in interpreters}
    for index in range(rounds):
        for name in harness.alternating_order(list(interpreters), index):
            progress(f"round {index + 1}/{rounds}: {name}")
            collected[name].append(run_worker(interpreters[name], config))
    impls: dict[str, dict[str, Any]] = {}
    for name, runs in collected.items():
        impls[name] = {
            "amb_core_version": runs[0]["amb_core_version"],
            "amb_core_path": runs[0]["amb_core_path"],
            "python_executable": runs[0]["machine"]["python_executable"],
            "packages": runs[0]["machine"]["packages"],
            "medians": aggregate(runs),
            "rounds": [r["results"] for r in runs],
        }
    machine = harness.machine_info(("amb-core", *SHARED_DEPENDENCIES))
    markdown, targets = summary_markdown(config, rounds, impls, machine)
    data = {
        "benchmark": "reproduce_results",
        "command": " ".join(["python", "benchmarks/reproduce_results.py", *sys.argv[1:]]),
        "config": {
            "seed": config.seed,
            "iterations": config.iterations,
            "warmup": config.warmup,
            "burst": config.burst,
            "rounds": rounds,
            "gc": "on" if config.gc_enabled else "off",
            "payload_sizes": list(SIZES),
            "broker": "in-memory",
            "timer": "time.perf_counter_ns",
        },
        "machine": machine,
        "implementations": impls,
        "targets": targets,
        "seed_readme": {p: {"mean_ms": ms, "msg_per_s": rate} for p, (ms, rate) in SEED_README.items()},
        "summary_markdown": markdown,
    }
    harness.write_json(output, data)
    output.with_suffix(".md").write_text(markdown)
    print(markdown)
    progress(f"wrote {harness.display_path(output)} and {harness.display_path(output.with_suffix('.md'))}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=42, help="payload random seed (default 42)")
    parser.add_argument("--iterations", type=int, default=500, help="timed iterations per row (default 500)")
    parser.add_argument(
        "--warmup", type=int, default=100, help="untimed iterations before each row (default 100)"
    )
    parser.add_argument(
        "--burst",
        type=int,
        default=None,
        help="messages in the burst (default 20 x iterations, at least 1000)",
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds per implementation (default 7 for both, 3 otherwise)"
    )
    parser.add_argument("--impl", choices=("current", "seed", "both"), default="both")
    parser.add_argument(
        "--gc",
        choices=("on", "off"),
        default="on",
        help="garbage collector during timed sections (same for both)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="JSON output (default benchmarks/results.json for --impl both, .bench/results-<impl>.json otherwise,"
        " so a quick run never overwrites the committed results); a .md summary is written beside it",
    )
    parser.add_argument(
        "--emit-json", action="store_true", help="(internal) measure one round here, print JSON to stdout"
    )
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.iterations < 2:
        parser.error("--iterations must be at least 2")
    config = Config(
        seed=args.seed,
        iterations=args.iterations,
        warmup=max(0, args.warmup),
        burst=args.burst if args.burst is not None else max(1000, 20 * args.iterations),
        gc_enabled=args.gc == "on",
    )
    if args.emit_json:
        if args.impl != "current":
            parser.error(
                "--emit-json measures the amb_core this interpreter imports: use it with --impl current"
            )
        json.dump(worker(config), sys.stdout)
        return 0
    rounds = args.rounds if args.rounds is not None else (7 if args.impl == "both" else 3)
    default_output = (
        harness.BENCH_DIR / "results.json"
        if args.impl == "both"
        else harness.SCRATCH_DIR / f"results-{args.impl}.json"
    )
    orchestrate(
        config, args.impl, max(1, rounds), args.output or default_output, harness.Progress(args.quiet)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
