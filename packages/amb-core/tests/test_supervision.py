"""The supervision toolkit adapters build on: `TaskSet`, `keep_reconnecting`, `error_boundary`."""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

import pytest

from amb_core.adapter import (
    BrokerRefusedError,
    BrokerUnavailableError,
    InvalidTopicError,
    Link,
    TaskSet,
    error_boundary,
    keep_reconnecting,
)

pytestmark = pytest.mark.anyio

#: No waiting between attempts: what is checked is how often and what, not how long.
NO_DELAYS = itertools.repeat(0.0)


# -- TaskSet ---------------------------------------------------------------------------------


async def test_a_task_set_keeps_its_tasks_until_they_end() -> None:
    tasks = TaskSet("test")
    release = asyncio.Event()
    task = tasks.start(release.wait())
    assert len(tasks) == 1 and bool(tasks) and list(tasks) == [task]
    release.set()
    assert await tasks.wait(timeout=5)
    assert not tasks and task.result() is True


async def test_a_crash_goes_to_the_hook() -> None:
    crashes: list[tuple[asyncio.Task[Any], BaseException]] = []
    tasks = TaskSet("test", on_crash=lambda task, error: crashes.append((task, error)))

    async def crash() -> None:
        raise ValueError("a bug")

    task = tasks.start(crash())
    await tasks.wait(timeout=5)
    [(crashed, error)] = crashes
    assert crashed is task and isinstance(error, ValueError)


async def test_a_crash_without_a_hook_is_logged_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSet("Redis at somewhere")

    async def crash() -> None:
        raise ValueError("a bug")

    with caplog.at_level(logging.ERROR, logger="amb"):
        tasks.start(crash(), name="the reader")
        await tasks.wait(timeout=5)
    [record] = [record for record in caplog.records if record.name == "amb"]
    assert "Redis at somewhere" in record.getMessage() and "the reader" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)


async def test_close_cancels_what_is_left_and_awaits_it() -> None:
    tasks = TaskSet("test", on_crash=lambda task, error: pytest.fail(f"{error!r} is no crash"))
    ended: list[str] = []

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            ended.append("forever")

    async def quick() -> None:
        await asyncio.sleep(0)
        ended.append("quick")

    forever_task, quick_task = tasks.start(forever()), tasks.start(quick())
    await tasks.close(timeout=0.5)
    assert sorted(ended) == ["forever", "quick"]
    assert forever_task.cancelled() and not quick_task.cancelled()
    assert not tasks
    # The set can be used again (a bus connects again after disconnecting).
    again = tasks.start(asyncio.sleep(0))
    await tasks.close(timeout=5)
    assert again.done()


async def test_wait_says_when_tasks_are_still_running() -> None:
    tasks = TaskSet("test")
    tasks.start(asyncio.Event().wait())
    assert not await tasks.wait(timeout=0.01)
    await tasks.close()


# -- keep_reconnecting -------------------------------------------------------------------------


async def test_keep_reconnecting_retries_until_it_succeeds_and_tells_each_failure() -> None:
    calls = 0
    failures: list[BaseException] = []

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError(f"not yet ({calls})")
        return "connected"

    result = await keep_reconnecting(
        flaky, retry_on=ConnectionError, on_failure=failures.append, delays=NO_DELAYS
    )
    assert result == "connected" and calls == 3
    assert [str(error) for error in failures] == ["not yet (1)", "not yet (2)"]


async def test_keep_reconnecting_lets_other_errors_through_at_once() -> None:
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        await keep_reconnecting(broken, retry_on=ConnectionError, delays=NO_DELAYS)
    assert calls == 1


async def test_keep_reconnecting_gives_up_after_its_attempts_with_the_last_failure() -> None:
    calls = 0
    failures: list[BaseException] = []

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError(f"down ({calls})")

    with pytest.raises(ConnectionError, match=r"down \(4\)"):
        await keep_reconnecting(
            down, retry_on=ConnectionError, attempts=4, on_failure=failures.append, delays=NO_DELAYS
        )
    assert calls == 4 and len(failures) == 4


async def test_keep_reconnecting_stops_without_another_attempt_once_told_to() -> None:
    calls = 0
    closing = False

    async def down() -> None:
        nonlocal calls, closing
        calls += 1
        closing = calls == 2
        raise ConnectionError("down")

    assert (
        await keep_reconnecting(
            down, retry_on=ConnectionError, keep_going=lambda: not closing, delays=NO_DELAYS
        )
        is None
    )
    assert calls == 2


async def test_keep_reconnecting_backs_off_by_default() -> None:
    """The default delays are `backoff_delays`: the first attempt waits about 50 ms."""
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def up() -> str:
        return "up"

    assert await keep_reconnecting(up) == "up"
    assert loop.time() - started >= 0.035


async def test_keep_reconnecting_waits_through_the_pause_it_is_given() -> None:
    """An adapter that can be told the broker is back (Kafka's health check, woken by another
    bus of the same broker) waits with its own pause, which may return early."""
    paused: list[float] = []
    calls = 0

    async def pause(delay: float) -> None:
        paused.append(delay)

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("not yet")
        return "connected"

    result = await keep_reconnecting(flaky, delays=[0.0, 30.0, 60.0, 90.0], pause=pause)
    assert result == "connected"
    assert paused == [0.0, 30.0, 60.0]  # three attempts, nothing slept for real


async def test_a_link_reconnects_through_it_and_logs_each_failure(caplog: pytest.LogCaptureFixture) -> None:
    link = Link("the test broker")
    link.lost("test")
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 2:
            raise ConnectionError("refused")
        return "connected"

    with caplog.at_level(logging.DEBUG, logger="amb.link"):
        assert await link.reconnect(flaky, retry_on=ConnectionError) == "connected"
    assert any("still unreachable: refused" in record.getMessage() for record in caplog.records)


# -- error_boundary --------------------------------------------------------------------------


class ClientError(Exception):
    """What a client library raises."""


def _translate(error: Exception) -> BaseException:
    if isinstance(error, ClientError):
        return BrokerUnavailableError(f"the broker: unreachable ({error})")
    if isinstance(error, PermissionError):
        return BrokerRefusedError("the broker: refused")
    return error


def test_the_boundary_raises_the_translated_error_without_the_client_s() -> None:
    with (
        pytest.raises(BrokerUnavailableError, match=r"unreachable \(gone\)") as caught,
        error_boundary(_translate),
    ):
        raise ClientError("gone")
    # Not chained: a client library's text may quote a URL with its password.
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_the_boundary_chains_when_asked() -> None:
    with pytest.raises(BrokerRefusedError) as caught, error_boundary(_translate, chain=True):
        raise PermissionError("no")
    assert isinstance(caught.value.__cause__, PermissionError)


def test_the_boundary_leaves_bugs_and_amb_errors_alone() -> None:
    with pytest.raises(KeyError), error_boundary(_translate):
        raise KeyError("a bug")
    with pytest.raises(InvalidTopicError), error_boundary(lambda error: BrokerUnavailableError("never")):
        raise InvalidTopicError("bad topic")


def test_the_boundary_only_looks_at_what_it_catches() -> None:
    with pytest.raises(ClientError), error_boundary(_translate, catch=OSError):
        raise ClientError("not an OSError")


async def test_cancellation_passes_the_boundary() -> None:
    async def cancelled_inside() -> None:
        with error_boundary(lambda error: BrokerUnavailableError("never")):
            await asyncio.Event().wait()

    task = asyncio.get_running_loop().create_task(cancelled_inside())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
