"""Group streams whose backlog reached ``stream_maxlen``, and the publishers waiting for them.

A group stream is never trimmed of an entry some group still needs (see the publish script):
when a stream's unacknowledged backlog reaches ``stream_maxlen``, the publish script still adds
the entry (a message that reached Redis is never dropped) and answers ``AMBFULL``. From then
on, publishes to topics routed to that stream wait here until its consumers have caught up
(below 90 % of the cap), and raise `BrokerUnavailableError` once they have waited
``outage_timeout``. The state is checked with one script call per interval, only while some
stream is full; publishes to other topics never wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.exceptions import ResponseError

from amb_core.adapter import BrokerUnavailableError, backoff_delays, compile_pattern, throttled
from amb_redis._names import Names
from amb_redis._pipe import CommandPipe
from amb_redis._scripts import Scripts

logger = logging.getLogger("amb.redis")

#: The publish script's answer when a stream's backlog is at the cap (the entry was added).
FULL = "AMBFULL "


class Backlog:
    """The full streams of one adapter (by pattern) and the publishers waiting for room."""

    def __init__(
        self,
        pipe: CommandPipe,
        scripts: Scripts,
        names: Names,
        *,
        name: str,
        maxlen: int,
        on_change: Callable[[], None],
    ) -> None:
        self._pipe = pipe
        self._on_change = on_change
        self._scripts = scripts
        self._names = names
        self._name = name
        self._maxlen = maxlen
        # Publishing resumes below this, so that a stream at the cap does not flap.
        self._resume_below = maxlen - maxlen // 10
        #: pattern -> its matcher, for every stream found full. Empty nearly always: the
        #: publish hot path checks only that.
        self.full: dict[str, Callable[[str], object]] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._checker: asyncio.Task[None] | None = None

    def blocks(self, topic: str) -> bool:
        """Whether a publish to ``topic`` must wait (it reaches a full stream)."""
        return any(match(topic) is not None for match in self.full.values())

    def note(self, error: ResponseError) -> int | None:
        """Take note of a publish script's ``AMBFULL <receivers> <patterns>`` answer and return
        the receivers; None if ``error`` is another error."""
        text = str(error)
        if not text.startswith(FULL):
            return None
        receivers, *patterns = text[len(FULL) :].split()
        for pattern in patterns:
            if pattern not in self.full:
                self.full[pattern] = compile_pattern(pattern).fullmatch
                throttled(
                    logger,
                    "backlog:" + pattern,
                    "%s: the groups on stream %r have %d or more entries not yet acknowledged (stream_maxlen): "
                    "publishes to %r wait for their consumers to catch up (and raise BrokerUnavailableError "
                    "after outage_timeout); nothing is dropped",
                    self._name,
                    self._stream(pattern),
                    self._maxlen,
                    pattern,
                )
        if self.full and self._checker is None:
            self._checker = asyncio.get_running_loop().create_task(self._check())
        self._on_change()
        return int(receivers)

    async def wait(self, topic: str, timeout: float) -> None:
        """Return once ``topic`` reaches no full stream; raise `BrokerUnavailableError` after
        ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.blocks(topic):
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                full = [pattern for pattern, match in self.full.items() if match(topic) is not None]
                raise BrokerUnavailableError(
                    f"{self._name}: the groups on {', '.join(map(self._stream, full))} have "
                    f"{self._maxlen} or more entries not yet acknowledged (stream_maxlen) and did not catch "
                    f"up within outage_timeout ({timeout} s); the message to {topic} was not sent"
                ) from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    async def _check(self) -> None:
        """While some stream is full: look at the full streams' backlogs now and then (the
        script also trims what every group acknowledged) and let publishers go on when one is
        back under the cap."""
        delays = backoff_delays(0.01, 0.5)
        try:
            while self.full:
                await asyncio.sleep(next(delays))
                patterns = list(self.full)
                try:
                    lengths = await self._pipe.call(
                        self._scripts.trim.call(b"0", *(pattern.encode() for pattern in patterns))
                    )
                except BrokerUnavailableError:
                    continue  # the connection is back soon, or the publishers' timeouts end it
                except Exception as error:
                    throttled(
                        logger, "backlog-check", "%s: could not check stream backlogs: %s", self._name, error
                    )
                    continue
                for pattern, length in zip(patterns, lengths, strict=True):
                    if length < self._resume_below:
                        del self.full[pattern]
                        logger.info(
                            "%s: stream %r is back to %d entries: publishing to %r goes on",
                            self._name,
                            self._stream(pattern),
                            length,
                            pattern,
                        )
                        delays = backoff_delays(0.01, 0.5)
                        self._on_change()
                waiters, self._waiters = self._waiters, []
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
        finally:
            self._checker = None

    def _stream(self, pattern: str) -> str:
        return self._names.stream(pattern)

    async def close(self) -> None:
        checker, self._checker = self._checker, None
        if checker is not None:
            checker.cancel()
            await asyncio.gather(checker, return_exceptions=True)
        self.full.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(BrokerUnavailableError(f"{self._name}: the adapter was closed"))
        self._waiters.clear()
