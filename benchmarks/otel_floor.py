"""What tracing one message costs, piece by piece, and the floor no instrumentation goes under.

    python benchmarks/otel_floor.py        # ~30 s; writes results/latest-otel-floor.md and a JSON

`run.py --middleware otel` gives throughput with amb-opentelemetry on against off; this says
where the difference goes. Per message of the end-to-end scenario on ``memory://`` (one publish,
one handler call, publisher and subscriber buses in this process), in microseconds, the best of
``--rounds`` runs:

- AMB alone; with one middleware that only passes on (what the chain costs); with
  amb-opentelemetry on the OpenTelemetry API's no-op providers (what our code costs around the
  SDK's calls); with it on the SDK (as `run.py` sets it up: `impl_amb.sdk_providers`).
- The SDK alone, no bus: the calls that the messaging conventions ask for one message (a
  PRODUCER span with its attributes and the trace context injected, a CONSUMER span under the
  extracted context, each current while it runs, a duration histogram record for each). With
  every message traced, no instrumentation of a bus can cost less per message than this.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
from impl_amb import AmbImpl, sdk_providers

import amb_core
import amb_opentelemetry

RESULTS = Path(__file__).resolve().parent / "results"
MESSAGES = 5_000
CALLS = 20_000


class _Instrumented(AmbImpl):
    """AMB on ``memory://`` with one given middleware on every bus."""

    def __init__(self, middleware: Any) -> None:
        super().__init__("memory", "memory://")
        self._middleware = middleware

    def _middlewares(self) -> list[Any]:
        return [self._middleware]


async def _bus_cost(impl: AmbImpl, rounds: int) -> float:
    """µs per message of the end-to-end scenario, the best of ``rounds`` runs."""
    async with impl.end_to_end() as run:
        await run(MESSAGES // 10)  # warm-up
        best = float("inf")
        for _ in range(rounds):
            gc.collect()
            sample = await run(MESSAGES)
            best = min(best, sample.elapsed_ns / sample.handled / 1000)
        return best


def _sdk_calls(sampled: float) -> dict[str, Callable[[], None]]:
    """One message's worth of SDK calls, as amb-opentelemetry makes them: spans and trace
    context, the two histogram records, and both."""
    from opentelemetry import context, propagate, trace
    from opentelemetry.trace import SpanKind

    tracer_provider, meter_provider = sdk_providers(sampled)
    tracer = tracer_provider.get_tracer("floor")
    meter = meter_provider.get_meter("floor")
    operation = meter.create_histogram("messaging.client.operation.duration", "s")
    process = meter.create_histogram("messaging.process.duration", "s")
    system, topic, message_id = "memory", "bench.e2e", "0123456789abcdef0123456789abcdef"
    send_metric = {
        "messaging.system": system,
        "messaging.destination.name": topic,
        "messaging.operation.name": "send",
    }
    process_metric = {**send_metric, "messaging.operation.name": "process"}

    def spans() -> None:
        span = tracer.start_span(
            f"send {topic}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": system,
                "messaging.destination.name": topic,
                "messaging.operation.type": "send",
                "messaging.operation.name": "send",
                "messaging.message.id": message_id,
            },
        )
        token = context.attach(trace.set_span_in_context(span))
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        context.detach(token)
        span.end()
        span = tracer.start_span(
            f"process {topic}",
            context=propagate.extract(carrier),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": system,
                "messaging.destination.name": topic,
                "messaging.destination.template": topic,
                "messaging.destination.subscription.name": "sub-1",
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.message.id": message_id,
                "amb.attempt": 1,
            },
        )
        token = context.attach(trace.set_span_in_context(span))
        context.detach(token)
        span.set_attribute("amb.outcome", "handled")
        span.end()

    def histograms() -> None:
        started = time.perf_counter()
        operation.record(time.perf_counter() - started, send_metric)
        process.record(time.perf_counter() - started, process_metric)

    def both() -> None:
        spans()
        histograms()

    return {"spans and trace context": spans, "histogram records": histograms, "both": both}


def _call_cost(call: Callable[[], None], rounds: int) -> float:
    """µs per call, the best of ``rounds`` runs of `CALLS` calls."""
    for _ in range(CALLS // 10):
        call()
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        started = time.perf_counter_ns()
        for _ in range(CALLS):
            call()
        best = min(best, (time.perf_counter_ns() - started) / CALLS / 1000)
    return best


async def measure(rounds: int) -> dict[str, float]:
    from opentelemetry import metrics, trace

    from amb_core.middleware import Middleware
    from amb_opentelemetry import telemetry

    def sdk_telemetry(sampled: float) -> Any:
        tracer_provider, meter_provider = sdk_providers(sampled)
        return telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)

    buses: dict[str, Callable[[], AmbImpl]] = {
        "AMB": lambda: AmbImpl("memory", "memory://"),
        "AMB + a middleware that passes on": lambda: _Instrumented(Middleware()),
        "AMB + amb-opentelemetry, API no-op providers": lambda: _Instrumented(
            telemetry(tracer_provider=trace.NoOpTracerProvider(), meter_provider=metrics.NoOpMeterProvider())
        ),
        "AMB + amb-opentelemetry, SDK": lambda: _Instrumented(sdk_telemetry(1.0)),
        "AMB + amb-opentelemetry, SDK, 1% of traces": lambda: _Instrumented(sdk_telemetry(0.01)),
    }
    costs: dict[str, float] = {}
    for name, make in buses.items():
        costs[name] = await _bus_cost(make(), rounds)
        print(f"{name}: {costs[name]:.1f} µs", file=sys.stderr)
    for sampled, label in ((1.0, ""), (0.01, ", 1% of traces")):
        for name, call in _sdk_calls(sampled).items():
            costs[f"SDK alone{label}: {name}"] = _call_cost(call, rounds)
            print(f"SDK alone{label}: {name}: {costs[f'SDK alone{label}: {name}']:.1f} µs", file=sys.stderr)
    return costs


def markdown(costs: dict[str, float], info: dict[str, Any], command: str) -> str:
    amb = costs["AMB"]
    rows = [
        [name, f"{cost:.1f}", f"{cost - amb:+.1f}" if name.startswith("AMB +") else ""]
        for name, cost in costs.items()
    ]
    floor = costs["SDK alone: both"]
    packages = ", ".join(f"{name} {version}" for name, version in info["packages"].items())
    return "\n".join(
        [
            "# What tracing one message costs",
            "",
            f"`{command}`: µs per message of the end-to-end scenario on `memory://` (one publish, "
            "one handler call), best of the runs; the SDK alone: the same spans, trace context and "
            "histogram records without a bus.",
            "",
            f"Machine: {harness.machine_line(info)}.",
            "",
            f"Packages: {packages}.",
            "",
            harness.markdown_table(["Per message", "µs", "over AMB"], rows, "lrr"),
            "",
            f"With every message traced, the SDK alone costs {floor:.1f} µs a message, the in-memory bus "
            f"{amb:.1f} µs: the most of its throughput any instrumentation can keep is "
            f"{amb / (amb + floor):.2f}x. A broker whose bus spends c µs a message keeps at most "
            f"c / (c + {floor:.0f}).",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=5, help="runs of each measurement; the best counts (default 5)"
    )
    args = parser.parse_args()
    costs = asyncio.run(measure(args.rounds))
    info = harness.machine_info(["amb-core", "amb-opentelemetry", "opentelemetry-api", "opentelemetry-sdk"])
    command = "python benchmarks/otel_floor.py" + (f" --rounds {args.rounds}" if args.rounds != 5 else "")
    text = markdown(costs, info, command)
    # Where the measured packages came from (a run against another revision sets PYTHONPATH).
    sources = {
        module.__name__: str(Path(module.__file__ or "").parent) for module in (amb_core, amb_opentelemetry)
    }
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    harness.write_json(
        RESULTS / f"otel-floor-{stamp}.json",
        {"command": command, "machine": info, "sources": sources, "us_per_message": costs},
    )
    (RESULTS / "latest-otel-floor.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
