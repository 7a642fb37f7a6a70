"""`AmbInstrumentor`: one call instruments every `MessageBus` created afterwards.

It follows `opentelemetry-instrumentation`'s ``BaseInstrumentor`` conventions without depending
on that package (amb-opentelemetry needs ``opentelemetry-api`` only): a singleton,
``instrument(tracer_provider=..., meter_provider=...)`` and ``uninstrument()``, and the
``opentelemetry_instrumentor`` entry point ``amb``, so that ``opentelemetry-instrument python
app.py`` instruments AMB with the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from importlib.metadata import version
from typing import Any

from opentelemetry import metrics, trace

from amb_core import middleware
from amb_opentelemetry.middleware import Instruments, Telemetry

logger = logging.getLogger("amb.opentelemetry")

#: The instrumentation scope of every span and metric.
SCOPE = "amb_opentelemetry"
#: The version of that scope: this distribution's.
SCOPE_VERSION = version("amb-opentelemetry")
#: The schema of the semantic conventions used.
SCHEMA_URL = "https://opentelemetry.io/schemas/1.27.0"


def telemetry(
    *, tracer_provider: Any = None, meter_provider: Any = None, body_size: bool = False
) -> Telemetry:
    """A middleware for one bus, ``MessageBus(middlewares=[telemetry()])``, when instrumenting
    every bus with `AmbInstrumentor` is not what you want. Options: as for
    `AmbInstrumentor.instrument`."""
    tracer = trace.get_tracer(SCOPE, SCOPE_VERSION, tracer_provider, schema_url=SCHEMA_URL)
    instruments = AmbInstrumentor()._instruments_for(meter_provider)
    return Telemetry(tracer, instruments, _always, body_size=body_size)


def _always() -> bool:
    return True


class AmbInstrumentor:
    """Traces and metrics for every `MessageBus` created after `instrument` (README)."""

    _instance: AmbInstrumentor | None = None
    _is_instrumented_by_opentelemetry = False

    def __new__(cls, *args: Any, **kwargs: Any) -> AmbInstrumentor:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __init__(self) -> None:
        if not hasattr(self, "_factory"):
            self._factory: Any = None
            #: Instruments by meter provider: one set per provider, however often instrumented.
            self._instruments: dict[int, tuple[object, Instruments]] = {}

    @property
    def is_instrumented_by_opentelemetry(self) -> bool:
        return self._is_instrumented_by_opentelemetry

    def instrumentation_dependencies(self) -> Collection[str]:
        """The packages this instruments, as ``opentelemetry-instrument`` checks them."""
        return ("amb-core >= 0.5.0, < 0.6",)

    def instrument(self, **kwargs: Any) -> None:
        """Instrument every bus created from now on. Options: ``tracer_provider`` and
        ``meter_provider`` (default: the global ones), ``body_size`` (record
        ``messaging.message.body.size`` on send spans, which costs one JSON encoding per
        message; default False). Instrumenting twice does nothing (and says so at DEBUG)."""
        if self._is_instrumented_by_opentelemetry:
            logger.debug("AMB is already instrumented")
            return
        tracer = trace.get_tracer(SCOPE, SCOPE_VERSION, kwargs.get("tracer_provider"), schema_url=SCHEMA_URL)
        instruments = self._instruments_for(kwargs.get("meter_provider"))
        body_size = bool(kwargs.get("body_size", False))

        def factory() -> Telemetry:
            # Buses made by this factory record until uninstrument(), even if instrumented again.
            return Telemetry(tracer, instruments, lambda: self._factory is factory, body_size=body_size)

        self._factory = factory
        middleware.install(factory)
        self._is_instrumented_by_opentelemetry = True

    def uninstrument(self, **kwargs: Any) -> None:
        """Stop: buses created from now on are not instrumented, and those that were stop
        recording (their middleware passes everything straight on)."""
        if not self._is_instrumented_by_opentelemetry:
            logger.debug("AMB is not instrumented")
            return
        middleware.uninstall(self._factory)
        self._factory = None
        self._is_instrumented_by_opentelemetry = False

    def _instruments_for(self, meter_provider: Any) -> Instruments:
        provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        known = self._instruments.get(id(provider))
        if known is not None and known[0] is provider:
            return known[1]
        meter = metrics.get_meter(SCOPE, SCOPE_VERSION, provider, schema_url=SCHEMA_URL)
        instruments = Instruments(meter)
        self._instruments[id(provider)] = (provider, instruments)
        return instruments
