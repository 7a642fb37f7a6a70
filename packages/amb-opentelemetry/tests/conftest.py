"""Fixtures: the SDK with an in-memory span exporter and metric reader, instrumented for one test;
amb_core's pytest plugin (``amb_make_bus``, ``amb_topic``) gives buses on the broker named by
``AMB_OTEL_URL`` (default: the in-memory broker)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from amb_opentelemetry import AmbInstrumentor

URL = os.environ.get("AMB_OTEL_URL", "memory://otel")
#: A bound on every wait: a safety net for slow brokers, not a timing assertion.
WAIT = 60.0


def pytest_report_header() -> str:
    scheme, _, rest = URL.partition("://")
    return f"amb-opentelemetry tests against {scheme}://{rest.rpartition('@')[2]}"  # no credentials


@pytest.fixture
def amb_url() -> str:
    return URL


class Spans(InMemorySpanExporter):
    """Finished spans, and a way to await the ones a test expects."""

    def __init__(self) -> None:
        super().__init__()
        self._waiters: list[asyncio.Future[None]] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = super().export(spans)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.get_loop().call_soon_threadsafe(_wake, waiter)
        return result

    async def wait_for(self, enough: Callable[[Sequence[ReadableSpan]], bool]) -> tuple[ReadableSpan, ...]:
        """The finished spans, once ``enough`` of them says so."""
        with anyio.fail_after(WAIT):
            while not enough(spans := self.get_finished_spans()):
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                try:
                    await waiter
                finally:
                    self._waiters.remove(waiter)
        return spans

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.get_finished_spans() if span.name == name]


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


@dataclass
class Telemetry:
    spans: Spans
    metrics: InMemoryMetricReader
    tracer_provider: TracerProvider

    def points(self, name: str) -> list[Any]:
        """The data points of metric ``name`` collected now."""
        data = self.metrics.get_metrics_data()
        found: list[Any] = []
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def total(self, name: str, **attributes: Any) -> float:
        """The sum of metric ``name``'s points whose attributes include ``attributes``."""
        return float(
            sum(
                point.value
                for point in self.points(name)
                if all(point.attributes.get(key) == value for key, value in attributes.items())
            )
        )


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    spans = Spans()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    instrumentor = AmbInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        yield Telemetry(spans, reader, tracer_provider)
    finally:
        instrumentor.uninstrument()
        meter_provider.shutdown()
