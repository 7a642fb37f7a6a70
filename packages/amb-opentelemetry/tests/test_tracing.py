"""Traces and metrics of AMB conversations, on the broker named by ``AMB_OTEL_URL`` (nox runs them on
every adapter): a publish and its handler share a trace; planner -> worker -> request to reviewer
-> reply is one trace across three buses; streams and gathers stay in their trace; handler errors,
retries and dead letters are recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from importlib.metadata import entry_points

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from amb_core import Message, MessageBus
from amb_core.testing import BusFactory, Recorder
from amb_opentelemetry import AmbInstrumentor
from conftest import Telemetry

pytestmark = pytest.mark.anyio


def _one(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, f"{name!r}: {[span.name for span in spans]}"
    return found[0]


def _is_child(child: ReadableSpan, parent: ReadableSpan) -> bool:
    assert child.parent is not None and parent.context is not None and child.context is not None
    return bool(
        child.parent.span_id == parent.context.span_id and child.context.trace_id == parent.context.trace_id
    )


async def test_a_publish_and_its_handler_share_a_trace(
    telemetry: Telemetry, amb_make_bus: BusFactory, amb_topic: str
) -> None:
    producer, consumer = await amb_make_bus(), await amb_make_bus()
    got = Recorder(timeout=60)
    await consumer.subscribe(amb_topic, got)
    message_id = await producer.publish(amb_topic, {"task": "plan"})
    (message,) = await got.wait_for(1)
    assert "traceparent" in message.metadata  # the W3C trace context, in the envelope
    spans = await telemetry.spans.wait_for(lambda spans: any(s.name == f"process {amb_topic}" for s in spans))
    send, process = _one(spans, f"send {amb_topic}"), _one(spans, f"process {amb_topic}")
    assert send.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert _is_child(process, send)
    system = send.attributes["messaging.system"] if send.attributes else None
    assert system in ("memory", "redis", "rabbitmq", "kafka")
    assert dict(send.attributes or {}) | {} == {
        "messaging.system": system,
        "messaging.destination.name": amb_topic,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.message.id": message_id,
    }
    attributes = dict(process.attributes or {})
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.message.id"] == message_id
    assert attributes["messaging.destination.name"] == amb_topic
    assert attributes["amb.outcome"] == "handled"
    assert telemetry.total("messaging.client.sent.messages", **{"messaging.destination.name": amb_topic}) == 1
    assert (
        telemetry.total("messaging.client.consumed.messages", **{"messaging.destination.name": amb_topic})
        == 1
    )
    durations = [
        p
        for p in telemetry.points("messaging.process.duration")
        if p.attributes.get("messaging.destination.name") == amb_topic
    ]
    assert sum(p.count for p in durations) == 1


async def test_planner_worker_reviewer_is_one_trace_across_three_buses(
    telemetry: Telemetry, amb_make_bus: BusFactory, amb_topic: str
) -> None:
    planner, worker, reviewer = await amb_make_bus(), await amb_make_bus(), await amb_make_bus()
    tasks, reviews = f"{amb_topic}.task", f"{amb_topic}.review"
    verdicts: asyncio.Queue[Message] = asyncio.Queue()

    async def work(task: Message) -> None:
        verdicts.put_nowait(await worker.request(reviews, {"draft": task.payload["brief"]}, timeout=60))

    async def review(request: Message) -> None:
        await reviewer.reply(request, {"verdict": "ship it"})

    await worker.subscribe(tasks, work, group="workers")
    await reviewer.subscribe(reviews, review, group="reviewers")
    tracer = telemetry.tracer_provider.get_tracer("the planner")
    with tracer.start_as_current_span("plan") as plan_span:
        await planner.publish(tasks, {"brief": "write the release notes"})
    verdict = await asyncio.wait_for(verdicts.get(), 60)
    assert verdict.payload == {"verdict": "ship it"}
    spans = await telemetry.spans.wait_for(
        lambda spans: sum(s.name.startswith("process ") for s in spans) >= 2
    )
    plan = _one(spans, "plan")
    send_task, process_task = _one(spans, f"send {tasks}"), _one(spans, f"process {tasks}")
    request = _one(spans, f"request {reviews}")
    send_review, process_review = _one(spans, f"send {reviews}"), _one(spans, f"process {reviews}")
    replies = [s for s in spans if s.name.startswith("send ") and s.parent and _is_child(s, process_review)]
    assert plan_span.get_span_context().trace_id == plan.context.trace_id
    assert _is_child(send_task, plan)
    assert _is_child(process_task, send_task)
    assert _is_child(request, process_task) and request.kind is SpanKind.CLIENT
    assert _is_child(send_review, request)
    assert _is_child(process_review, send_review)
    assert len(replies) == 1  # the reply, sent from the reviewer's handler
    correlation = dict(process_review.attributes or {})["messaging.message.conversation_id"]
    assert dict(replies[0].attributes or {})["messaging.message.conversation_id"] == correlation
    assert dict(process_task.attributes or {})["messaging.consumer.group.name"] == "workers"


async def test_streams_and_gathers_stay_in_their_trace(
    telemetry: Telemetry, amb_make_bus: BusFactory, amb_topic: str
) -> None:
    requester, responder = await amb_make_bus(), await amb_make_bus()
    drafts, votes = f"{amb_topic}.draft", f"{amb_topic}.vote"

    async def draft(request: Message) -> None:
        async with responder.reply_stream(request) as stream:
            for n in range(3):
                await stream.send({"n": n})

    async def vote(request: Message) -> None:
        await responder.reply(request, {"yes": True})

    await responder.subscribe(drafts, draft)
    await responder.subscribe(votes, vote)
    chunks = [chunk.payload["n"] async for chunk in requester.request_stream(drafts, {}, timeout=60)]
    replies = await requester.gather(votes, {}, timeout=60, max_replies=1)
    assert chunks == [0, 1, 2] and len(replies) == 1
    spans = await telemetry.spans.wait_for(lambda spans: any(s.name == f"process {votes}" for s in spans))
    stream = _one(spans, f"request_stream {drafts}")
    process_draft = _one(spans, f"process {drafts}")
    assert _is_child(process_draft, _one(spans, f"send {drafts}"))
    sent_in_handler = [s for s in spans if s.parent is not None and _is_child(s, process_draft)]
    assert len(sent_in_handler) == 4  # three chunks and the end of the stream
    assert all(s.context and s.context.trace_id == stream.context.trace_id for s in sent_in_handler)
    gather = _one(spans, f"gather {votes}")
    process_vote = _one(spans, f"process {votes}")
    assert process_vote.context.trace_id == gather.context.trace_id
    assert dict(gather.attributes or {})["amb.replies"] == 1


async def test_handler_errors_retries_and_dead_letters_are_recorded(
    telemetry: Telemetry, amb_make_bus: BusFactory, amb_topic: str
) -> None:
    failing = await amb_make_bus(max_attempts=2)

    async def fails(message: Message) -> None:
        raise RuntimeError("the model refused")

    await failing.subscribe(amb_topic, fails, group="g")
    await failing.publish(amb_topic, {})
    spans = await telemetry.spans.wait_for(
        lambda spans: sum(s.name == f"process {amb_topic}" for s in spans) >= 2
    )
    processes = [s for s in spans if s.name == f"process {amb_topic}"]
    assert sorted(str(dict(s.attributes or {})["amb.outcome"]) for s in processes) == [
        "dead_lettered",
        "retried",
    ]
    for span in processes:
        assert span.status.status_code is StatusCode.ERROR
        assert dict(span.attributes or {})["error.type"] == "RuntimeError"
        assert [event.name for event in span.events] == ["exception"]
    where = {"messaging.destination.name": amb_topic}
    assert telemetry.total("amb.messages.retried", **where) == 1
    assert telemetry.total("amb.messages.dead_lettered", **where) == 1
    assert telemetry.total("messaging.client.consumed.messages", **where) == 2


async def test_queue_depth_is_observed_per_subscription(
    telemetry: Telemetry, amb_make_bus: BusFactory, amb_topic: str
) -> None:
    bus = await amb_make_bus()
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow(message: Message) -> None:
        started.set()
        await release.wait()

    await bus.subscribe(amb_topic, slow)
    for n in range(4):
        await bus.publish(amb_topic, {"n": n})
    await asyncio.wait_for(started.wait(), 60)
    got = Recorder(timeout=60)
    await bus.subscribe(f"{amb_topic}.probe", got)  # every message before it has reached the queue
    await bus.publish(f"{amb_topic}.probe", {})
    await got.wait_for(1)
    depths = [
        p.value
        for p in telemetry.points("amb.subscription.queue.depth")
        if p.attributes.get("messaging.destination.template") == amb_topic
    ]
    release.set()
    assert depths == [3]


async def test_uninstrument_stops_recording(
    telemetry: Telemetry, amb_make_bus: BusFactory, amb_topic: str
) -> None:
    before = await amb_make_bus()
    AmbInstrumentor().uninstrument()
    after = await amb_make_bus()
    got = Recorder(timeout=60)
    await before.subscribe(amb_topic, got)
    await before.publish(amb_topic, {})
    await after.publish(amb_topic, {})
    messages = await got.wait_for(2)
    assert all("traceparent" not in message.metadata for message in messages)
    assert telemetry.spans.get_finished_spans() == ()
    assert isinstance(before, MessageBus)


def test_opentelemetry_instrument_finds_the_instrumentor() -> None:
    (entry,) = [entry for entry in entry_points(group="opentelemetry_instrumentor") if entry.name == "amb"]
    assert entry.load() is AmbInstrumentor
    assert AmbInstrumentor() is AmbInstrumentor()  # a singleton, like BaseInstrumentor's
