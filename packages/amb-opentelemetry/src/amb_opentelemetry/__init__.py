"""OpenTelemetry traces and metrics for AMB, the Agent Message Bus::

    from amb_opentelemetry import AmbInstrumentor

    AmbInstrumentor().instrument()  # every MessageBus created from now on

See the README for what is recorded and how the trace context travels.
"""

from __future__ import annotations

from importlib.metadata import version

from amb_opentelemetry.instrumentor import AmbInstrumentor, telemetry
from amb_opentelemetry.middleware import Telemetry

__version__ = version("amb-opentelemetry")

__all__ = ["AmbInstrumentor", "Telemetry", "__version__", "telemetry"]
