from __future__ import annotations

import itertools

import pytest

from amb_core.backoff import backoff_delays, keep_trying

pytestmark = pytest.mark.anyio


def test_delays_grow_to_the_cap_with_jitter() -> None:
    delays = list(itertools.islice(backoff_delays(initial=0.1, maximum=1.0), 8))
    assert 0.08 <= delays[0] <= 0.12
    assert all(0.8 <= delay <= 1.2 for delay in delays[5:])


async def test_keep_trying_retries_what_it_is_told_to_and_returns_the_result() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("not yet")
        return "connected"

    assert await keep_trying(flaky, retry_on=ConnectionError, what="the test broker") == "connected"
    assert calls == 3


async def test_keep_trying_lets_other_errors_through() -> None:
    async def broken() -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        await keep_trying(broken, retry_on=ConnectionError, what="the test broker")
