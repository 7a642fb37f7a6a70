"""Our bus: every scenario through `MessageBus.from_url`, the public API only.

Publisher and subscribers are separate buses (separate connections on a real broker), as two
agents would be; for ``memory://`` both buses share one named in-memory broker.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import brokers
from harness import now_ns, package_versions
from scenarios import (
    PAYLOAD,
    REPLY,
    REQUEST_TIMEOUT_S,
    Countdown,
    Implementation,
    Runner,
    Sample,
    ScenarioContext,
    prime,
    publish_runner,
    request_runner,
    unique_name,
)

if TYPE_CHECKING:
    from amb_core import Message, MessageBus
    from amb_core.middleware import Middleware


#: Options every AMB bus of the run is built with (``run.py --amb-option``), beside the URL:
#: empty, the adapter's defaults, what a user gets.
BUS_OPTIONS: dict[str, Any] = {}


class AmbImpl(Implementation):
    name = "amb"

    def __init__(self, adapter: str, url: str) -> None:
        # A private named in-memory broker, shared by this implementation's buses only.
        super().__init__(adapter, f"memory://bench-{os.urandom(4).hex()}" if adapter == "memory" else url)

    def describe(self) -> str:
        versions = package_versions(sorted({"amb-core", brokers.DISTRIBUTIONS[self.adapter]}))
        return ", ".join(f"{name} {ver or 'not installed'}" for name, ver in versions.items())

    def _bus(self) -> MessageBus:
        from amb_core import MessageBus  # imported late: a broken adapter must not stop run.py

        return MessageBus.from_url(self.url, middlewares=self._middlewares(), **BUS_OPTIONS)

    def _middlewares(self) -> list[Middleware]:
        return []

    async def check(self) -> None:
        async with self._bus():
            pass

    @asynccontextmanager
    async def publish(self) -> AsyncIterator[Runner]:
        async with self._bus() as bus:
            topic = unique_name("publish")

            async def run(n: int) -> Sample:
                start = now_ns()
                for _ in range(n - 1):
                    await bus.publish(topic, PAYLOAD)
                # The last one waits for the broker: on one connection, it was accepted after the others.
                await bus.publish(topic, PAYLOAD, wait_for_confirmation=True)
                return Sample(n, now_ns() - start)

            yield run

    @asynccontextmanager
    async def _consumers(self, kind: str, count: int, group: str | None) -> AsyncIterator[Runner]:
        async with AsyncExitStack() as stack:
            publisher = await stack.enter_async_context(self._bus())
            consumer = await stack.enter_async_context(self._bus())
            topic = unique_name(kind)
            countdown = Countdown()

            async def handler(message: Message) -> None:
                countdown.hit()

            for _ in range(count):
                await consumer.subscribe(topic, handler, group=group)

            async def publish() -> None:
                await publisher.publish(topic, PAYLOAD)

            per_message = 1 if group else count
            await prime(publish, countdown, per_message)
            yield publish_runner(publish, countdown, per_message)

    def end_to_end(self) -> ScenarioContext:
        return self._consumers("e2e", 1, None)

    def fan_out(self, subscribers: int) -> ScenarioContext:
        return self._consumers("fanout", subscribers, None)

    def competing(self, members: int) -> ScenarioContext:
        return self._consumers("competing", members, unique_name("group").replace(".", "-"))

    @asynccontextmanager
    async def request_reply(self, in_flight: int) -> AsyncIterator[Runner]:
        async with self._bus() as requester, self._bus() as responder:
            topic = unique_name("rpc")

            async def respond(message: Message) -> None:
                await responder.reply(message, REPLY)

            await responder.subscribe(topic, respond)

            async def request() -> None:
                await requester.request(topic, PAYLOAD, timeout=REQUEST_TIMEOUT_S)

            await request()  # the first request opens the requester's reply inbox
            yield request_runner(request, in_flight)


class AmbOtelImpl(AmbImpl):
    """Our bus with amb-opentelemetry's tracing and metrics on every bus: the OpenTelemetry SDK,
    spans batched to an exporter that drops them, metrics aggregated for a reader that is never
    asked (what an application exporting them pays, less the export itself)."""

    name = "amb-otel"

    def __init__(self, adapter: str, url: str) -> None:
        super().__init__(adapter, url)
        self._telemetry: Middleware | None = None

    def describe(self) -> str:
        versions = package_versions(["amb-opentelemetry", "opentelemetry-sdk"])
        extra = ", ".join(f"{name} {ver or 'not installed'}" for name, ver in versions.items())
        return f"{super().describe()}, {extra}: tracing (BatchSpanProcessor, exporter dropping spans) and metrics"

    #: The share of traces recorded (1.0: every message's spans).
    sampled = 1.0

    def _middlewares(self) -> list[Middleware]:
        if self._telemetry is None:
            self._telemetry = _sdk_telemetry(self.sampled)
        return [self._telemetry]


class AmbOtelSampledImpl(AmbOtelImpl):
    """`AmbOtelImpl` recording 1% of traces (``ParentBased(TraceIdRatioBased(0.01))``), metrics
    still on every message: what a busy deployment would run."""

    name = "amb-otel-sampled"
    sampled = 0.01

    def describe(self) -> str:
        return super().describe().replace("tracing (", "tracing 1% of traces (")


def _sdk_telemetry(sampled: float) -> Middleware:
    from amb_opentelemetry import telemetry

    tracer_provider, meter_provider = sdk_providers(sampled)
    return telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)


def sdk_providers(sampled: float = 1.0) -> tuple[Any, Any]:
    """The SDK as an application would set it up, less the export itself: a `TracerProvider`
    with the SDK's default sampler, ``ParentBased(ALWAYS_ON)`` (``ParentBased(TraceIdRatioBased(
    sampled))`` below 1) and a `BatchSpanProcessor` with its default queue and batch sizes
    feeding an exporter that drops spans; a `MeterProvider` aggregating for a reader."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

    class Dropping(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    root = ALWAYS_ON if sampled >= 1 else TraceIdRatioBased(sampled)
    tracer_provider = TracerProvider(sampler=ParentBased(root))  # the SDK's default: parent-based
    tracer_provider.add_span_processor(BatchSpanProcessor(Dropping()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return tracer_provider, meter_provider
