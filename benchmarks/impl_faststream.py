"""FastStream on the same broker, used the way its documentation shows.

Each scenario builds a broker object with its subscribers declared, starts it, and publishes with
``broker.publish`` (request/reply with ``broker.request``; handlers return the reply). FastStream
decodes each JSON body into the handler's annotated type, as its users get it.

Not measured: the in-memory case (FastStream has no in-memory broker outside its TestBroker test
double) and request/reply on Kafka (FastStream raises FeatureNotSupportedException for it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from harness import now_ns, package_versions
from impl_bare import EXCHANGE, KAFKA_FETCH_WAIT_MS, REDIS_MAX_CONNECTIONS, BareKafka
from scenarios import (
    PAYLOAD,
    REPLY,
    REQUEST_TIMEOUT_S,
    ConsumerScenarios,
    Countdown,
    NotApplicable,
    Runner,
    Sample,
    prime,
    publish_runner,
    request_runner,
    unique_name,
)

NO_MEMORY = "FastStream has no in-memory broker (its TestBroker is a test double, not a transport)"
NO_KAFKA_RPC = "FastStream's Kafka broker has no request/reply (FeatureNotSupportedException)"

QUIET: dict[str, Any] = {"logger": None}  # FastStream's per-message logging off, as in production


class FastStreamImpl(ConsumerScenarios):
    name = "faststream"

    def describe(self) -> str:
        return f"FastStream {package_versions(['faststream'])['faststream']}"

    async def check(self) -> None:
        if self.adapter == "memory":
            raise NotApplicable(NO_MEMORY)
        import faststream  # noqa: F401  # installed?

    # ------------------------------------------------------------------ broker specifics

    def _broker(self) -> Any:
        if self.adapter == "redis":
            from faststream.redis import RedisBroker

            return RedisBroker(self.url, **QUIET, max_connections=REDIS_MAX_CONNECTIONS)
        if self.adapter == "rabbitmq":
            from faststream.rabbit import RabbitBroker

            return RabbitBroker(self.url, **QUIET)
        if self.adapter == "kafka":
            from faststream.kafka import KafkaBroker

            return KafkaBroker(self.url.split("://", 1)[-1].rstrip("/"), **QUIET)
        raise NotApplicable(NO_MEMORY)

    def _exchange(self) -> Any:
        from faststream.rabbit import ExchangeType, RabbitExchange

        # FastStream declares its exchanges durable, the bare client's is not: separate names.
        return RabbitExchange(f"{EXCHANGE}-faststream", type=ExchangeType.TOPIC)

    async def _send(self, broker: Any, topic: str, grouped: bool = False) -> Any:
        """Publish one message where the subscribers of ``topic`` listen."""
        if self.adapter == "redis":
            if grouped:
                return await broker.publish(PAYLOAD, stream=topic)
            return await broker.publish(PAYLOAD, channel=topic)
        if self.adapter == "rabbitmq":
            return await broker.publish(PAYLOAD, routing_key=topic, exchange=self._exchange())
        return await broker.publish(PAYLOAD, topic, no_confirm=True)  # kafka: a future of the ack

    def _subscriber(self, broker: Any, topic: str, group: str | None, index: int) -> Callable[[Any], Any]:
        """A decorator registering one subscriber of ``topic`` (a member of ``group`` if given)."""
        if self.adapter == "redis":
            from faststream.redis import StreamSub

            if group:
                return broker.subscriber(stream=StreamSub(topic, group=group, consumer=f"c{index}"))  # type: ignore[no-any-return]
            return broker.subscriber(channel=topic)  # type: ignore[no-any-return]
        if self.adapter == "rabbitmq":
            from faststream.rabbit import RabbitQueue

            queue = RabbitQueue(group or f"{topic}.{index}", auto_delete=True, routing_key=topic)
            return broker.subscriber(queue, self._exchange())  # type: ignore[no-any-return]
        return broker.subscriber(  # type: ignore[no-any-return]
            topic,
            group_id=group,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=KAFKA_FETCH_WAIT_MS,
        )

    async def _topic(self, stack: AsyncExitStack, kind: str, partitions: int = 1) -> str:
        if self.adapter == "kafka":  # a fresh topic, as for bare aiokafka
            return await BareKafka(self.adapter, self.url)._topic(stack, kind, partitions)
        return unique_name(kind)

    # ------------------------------------------------------------------ scenarios

    @asynccontextmanager
    async def publish(self) -> AsyncIterator[Runner]:
        async with AsyncExitStack() as stack:
            topic = await self._topic(stack, "publish")
            broker = self._broker()
            await broker.start()
            stack.push_async_callback(broker.stop)
            if self.adapter == "rabbitmq":  # publishing needs the exchange; no subscriber declared it
                await broker.declare_exchange(self._exchange())

            async def run(n: int) -> Sample:
                start = now_ns()
                sent = [await self._send(broker, topic) for _ in range(n)]
                if self.adapter == "kafka":
                    await asyncio.gather(*sent)  # every record acknowledged
                return Sample(n, now_ns() - start)

            yield run

    @asynccontextmanager
    async def _consumers(self, count: int, grouped: bool) -> AsyncIterator[Runner]:
        async with AsyncExitStack() as stack:
            topic = await self._topic(stack, "consume", partitions=count if grouped else 1)
            group = unique_name("group").replace(".", "-") if grouped else None
            if grouped and self.adapter == "redis":
                await self._make_stream_group(topic, group)  # type: ignore[arg-type]
            broker = self._broker()
            countdown = Countdown()
            for index in range(count):

                async def handler(body: dict[str, Any]) -> None:
                    countdown.hit()

                self._subscriber(broker, topic, group, index)(handler)
            await broker.start()
            stack.push_async_callback(broker.stop)

            async def publish() -> None:
                await self._send(broker, topic, grouped)

            per_message = 1 if grouped else count
            await prime(publish, countdown, per_message)
            yield publish_runner(publish, countdown, per_message)

    async def _make_stream_group(self, stream: str, group: str) -> None:
        """FastStream creates the consumer group from the stream's end when it starts; made here
        first (from its start) so the priming message cannot slip between the two."""
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.url)
        try:
            await client.xgroup_create(stream, group, id="0", mkstream=True)
        finally:
            await client.aclose()

    @asynccontextmanager
    async def request_reply(self, in_flight: int) -> AsyncIterator[Runner]:
        if self.adapter == "kafka":
            raise NotApplicable(NO_KAFKA_RPC)
        async with AsyncExitStack() as stack:
            topic = await self._topic(stack, "rpc")
            broker = self._broker()

            async def respond(body: dict[str, Any]) -> dict[str, Any]:
                return REPLY

            self._subscriber(broker, topic, None, 0)(respond)
            await broker.start()
            stack.push_async_callback(broker.stop)

            async def request() -> None:
                if self.adapter == "redis":
                    await broker.request(PAYLOAD, channel=topic, timeout=REQUEST_TIMEOUT_S)
                else:
                    await broker.request(
                        PAYLOAD, routing_key=topic, exchange=self._exchange(), timeout=REQUEST_TIMEOUT_S
                    )

            await request()
            yield request_runner(request, in_flight)
