"""`Telemetry`: the amb-core middleware that makes spans and metrics, one per bus.

Spans and metrics follow the OpenTelemetry messaging semantic conventions (README, "What is
recorded"): a PRODUCER span ``send <topic>`` per message sent, a CONSUMER span ``process
<pattern>`` per message handed to a handler, a CLIENT span per request, stream and gather. The
W3C trace context travels in the envelope's ``metadata`` (``traceparent``, ``tracestate``,
whatever the global propagator writes), so a handler's span is the child of its message's send
span on whatever bus, process or broker it runs, and a reply sent from the handler is its child
in turn: one trace per conversation.
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry import context, propagate, trace
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from amb_core import Message, MessageBus
from amb_core.middleware import Call, Handling, Middleware, Next, Outcome, with_metadata

if TYPE_CHECKING:
    from opentelemetry.util.types import AttributeValue

# Attribute names of the messaging semantic conventions.
SYSTEM = "messaging.system"
DESTINATION = "messaging.destination.name"
TEMPLATE = "messaging.destination.template"
SUBSCRIPTION = "messaging.destination.subscription.name"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
MESSAGE_ID = "messaging.message.id"
CONVERSATION_ID = "messaging.message.conversation_id"
GROUP = "messaging.consumer.group.name"
BODY_SIZE = "messaging.message.body.size"
ERROR_TYPE = "error.type"
# AMB's own, where the conventions have nothing.
OUTCOME = "amb.outcome"
ATTEMPT = "amb.attempt"

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)


def system_of(bus: MessageBus) -> str:
    """``messaging.system`` for a bus: the broker behind it (``redis``, ``rabbitmq``,
    ``kafka``, ``memory``, or a third-party adapter's package name)."""
    adapter = type(bus.adapter)
    root = adapter.__module__.partition(".")[0]
    if root == "amb_core":
        return "memory"
    return root.removeprefix("amb_") or adapter.__name__.lower()


#: Which attribute set a metric record has: system, destination, operation name, group, error
#: type (None where there is none).
MetricKey = tuple[str, str, str, str | None, str | None]


class Tally:
    """A monotonic count per attribute set, reported by an asynchronous (observable) counter.

    Why not ``Counter.add``: the SDK's synchronous add costs several microseconds per message
    (a measurement object, the attribute set hashed and sorted, a lock per aggregation), more
    than the in-memory bus spends on the whole message. A tally adds 1 to a dict entry and the
    SDK reads the totals at each collection: the same monotonic cumulative sum, under the same
    name, unit and attributes (OpenTelemetry's asynchronous counter exists for counts kept
    elsewhere)."""

    __slots__ = ("_counts", "_lock")

    def __init__(self, meter: Meter, name: str, description: str) -> None:
        #: Count and attributes by attribute set (its values, in `MetricKey` order).
        self._counts: dict[MetricKey, list[Any]] = {}
        self._lock = threading.Lock()  # buses of several threads may share one meter
        meter.create_observable_counter(name, [self._observe], "{message}", description)

    def add(self, key: MetricKey, attributes: dict[str, AttributeValue]) -> None:
        """Count one message with ``attributes`` (``key`` says which set they are; kept, not
        copied: the caller never changes them)."""
        with self._lock:
            entry = self._counts.get(key)
            if entry is None:
                self._counts[key] = [1, attributes]
            else:
                entry[0] += 1

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            entries = [(count, attributes) for count, attributes in self._counts.values()]
        return [Observation(count, attributes) for count, attributes in entries]


class Instruments:
    """The metric instruments, made once per meter and shared by every bus's `Telemetry`."""

    def __init__(self, meter: Meter) -> None:
        self.sent = Tally(
            meter, "messaging.client.sent.messages", "Messages a producer attempted to send to the broker."
        )
        self.consumed = Tally(
            meter, "messaging.client.consumed.messages", "Messages handed to a subscription's handler."
        )
        self.operation_duration = meter.create_histogram(
            "messaging.client.operation.duration",
            "s",
            "Duration of a send, request, reply stream's first chunk or gather.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.process_duration = meter.create_histogram(
            "messaging.process.duration",
            "s",
            "Duration of a handler call and the settlement of its message.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.retried = Tally(
            meter, "amb.messages.retried", "Messages whose handler raised and that a group gets again."
        )
        self.dead_lettered = Tally(
            meter, "amb.messages.dead_lettered", "Messages dead-lettered after max_attempts handler failures."
        )
        self.expired = Tally(
            meter, "amb.messages.expired", "Messages dropped because their ttl ran out before a handler."
        )
        self.buses: weakref.WeakSet[MessageBus] = weakref.WeakSet()
        meter.create_observable_gauge(
            "amb.subscription.queue.depth",
            [self._queue_depths],
            "{message}",
            "Messages waiting in a subscription's local queue for a free handler.",
        )

    def _queue_depths(self, options: CallbackOptions) -> Iterable[Observation]:
        for bus in list(self.buses):
            system = system_of(bus)
            for subscription in bus.subscriptions:
                attributes: dict[str, AttributeValue] = {
                    SYSTEM: system,
                    TEMPLATE: subscription.pattern,
                    SUBSCRIPTION: subscription.id,
                }
                if subscription.group is not None:
                    attributes[GROUP] = subscription.group
                yield Observation(subscription.queued, attributes)


class Telemetry(Middleware):
    """Spans and metrics for one bus (made by `AmbInstrumentor` for every new bus)."""

    def __init__(
        self,
        tracer: Tracer,
        instruments: Instruments,
        enabled: Callable[[], bool],
        *,
        body_size: bool = False,
    ) -> None:
        self._tracer = tracer
        self._instruments = instruments
        self._enabled = enabled
        self._body_size = body_size
        #: ``messaging.system`` of each bus this serves (one, unless shared with `telemetry`).
        self._systems: weakref.WeakKeyDictionary[MessageBus, str] = weakref.WeakKeyDictionary()
        #: Attributes of metric records, by `MetricKey` (see `_metric_set`).
        self._metric_sets: dict[MetricKey, dict[str, AttributeValue]] = {}

    def _system_of(self, bus: MessageBus) -> str:
        system = self._systems.get(bus)
        if system is None:
            system = self._systems[bus] = system_of(bus)
            self._instruments.buses.add(bus)  # its queues are observed from now on
        return system

    def _metric_set(self, key: MetricKey) -> dict[str, AttributeValue]:
        """The attributes of metric records with ``key``, made once: a record costs no dict."""
        attributes = self._metric_sets.get(key)
        if attributes is None:
            system, destination, operation, group, error_type = key
            attributes = {SYSTEM: system, DESTINATION: destination, OPERATION_NAME: operation}
            if group is not None:
                attributes[GROUP] = group
            if error_type is not None:
                attributes[ERROR_TYPE] = error_type
            self._metric_sets[key] = attributes
        return attributes

    async def publish(self, bus: MessageBus, message: Message, call_next: Next) -> None:
        if not self._enabled():
            await call_next(message)
            return
        system = self._system_of(bus)
        attributes: dict[str, AttributeValue] = {
            SYSTEM: system,
            DESTINATION: message.topic,
            OPERATION_TYPE: "send",
            OPERATION_NAME: "send",
            MESSAGE_ID: message.id,
        }
        if message.correlation_id is not None:
            attributes[CONVERSATION_ID] = message.correlation_id
        if self._body_size:
            attributes[BODY_SIZE] = len(json.dumps(message.payload, separators=(",", ":")).encode())
        error_type: str | None = None
        started = time.perf_counter()
        span = self._tracer.start_span(
            f"send {message.topic}",
            kind=SpanKind.PRODUCER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        token = context.attach(trace.set_span_in_context(span))
        try:
            carrier: dict[str, Any] = {}
            propagate.inject(carrier)
            await call_next(with_metadata(message, carrier) if carrier else message)
        except Exception as error:
            error_type = span_error(span, error)
            raise
        finally:
            context.detach(token)
            span.end()
            key = (system, message.topic, "send", None, error_type)
            metric_attributes = self._metric_set(key)
            self._instruments.sent.add(key, metric_attributes)
            self._instruments.operation_duration.record(time.perf_counter() - started, metric_attributes)

    async def handle(self, bus: MessageBus, message: Message, handling: Handling, call_next: Next) -> None:
        if not self._enabled():
            await call_next(message)
            return
        system = self._system_of(bus)
        subscription = handling.subscription
        group = subscription.group
        attributes: dict[str, AttributeValue] = {
            SYSTEM: system,
            DESTINATION: message.topic,
            TEMPLATE: subscription.pattern,
            SUBSCRIPTION: subscription.id,
            OPERATION_TYPE: "process",
            OPERATION_NAME: "process",
            MESSAGE_ID: message.id,
            ATTEMPT: handling.attempt,
        }
        if group is not None:
            attributes[GROUP] = group
        if message.correlation_id is not None:
            attributes[CONVERSATION_ID] = message.correlation_id
        parent = propagate.extract(message.metadata) if message.metadata else None
        instruments = self._instruments
        key: MetricKey = (system, message.topic, "process", group, None)
        instruments.consumed.add(key, self._metric_set(key))
        started = time.perf_counter()
        span = self._tracer.start_span(
            f"process {subscription.pattern}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        token = context.attach(trace.set_span_in_context(span))
        try:
            await call_next(message)
        finally:
            context.detach(token)
            outcome = handling.outcome
            if outcome is not None:
                span.set_attribute(OUTCOME, outcome.value)
            if handling.error is not None:
                key = (system, message.topic, "process", group, span_error(span, handling.error))
            span.end()
            metric_attributes = self._metric_set(key)
            if outcome is Outcome.EXPIRED:
                instruments.expired.add(key, metric_attributes)
            else:
                instruments.process_duration.record(time.perf_counter() - started, metric_attributes)
                if outcome is Outcome.RETRIED:
                    instruments.retried.add(key, metric_attributes)
                elif outcome is Outcome.DEAD_LETTERED:
                    instruments.dead_lettered.add(key, metric_attributes)

    async def call(self, bus: MessageBus, call: Call[Any], call_next: Callable[[], Awaitable[None]]) -> None:
        if call.kind == "reply" or not self._enabled():
            # A reply is one message sent: its send span, inside the handler's span, says it all.
            await call_next()
            return
        system = self._system_of(bus)
        attributes: dict[str, AttributeValue] = {
            SYSTEM: system,
            DESTINATION: call.topic,
            OPERATION_NAME: call.kind,
        }
        started = time.perf_counter()
        with self._tracer.start_as_current_span(
            f"{call.kind} {call.topic}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                await call_next()
            except Exception as error:
                attributes[ERROR_TYPE] = span_error(span, error)
                raise
            finally:
                self._instruments.operation_duration.record(time.perf_counter() - started, attributes)
            result = call.result
            if isinstance(result, Message) and result.correlation_id is not None:
                span.set_attribute(CONVERSATION_ID, result.correlation_id)
            elif isinstance(result, list):
                span.set_attribute("amb.replies", len(result))


def span_error(span: Any, error: BaseException) -> str:
    """Record ``error`` on ``span`` and set its status; return the ``error.type`` value."""
    name = type(error).__qualname__
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{name}: {error}"))
    span.set_attribute(ERROR_TYPE, name)
    return name
