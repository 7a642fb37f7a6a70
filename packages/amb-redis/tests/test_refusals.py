"""One error boundary: what Redis, redis-py and the socket raise becomes `BrokerRefusedError`
(credentials, permissions: not a `ConnectionError`) or `BrokerUnavailableError`, naming
"Redis at host:port" and never the password."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as redis
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    NoPermissionError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from amb_core import BrokerRefusedError, BrokerUnavailableError, MessageBus
from amb_redis import RedisBroker
from amb_redis._errors import Boundary
from conftest import URL

pytestmark = pytest.mark.anyio
SECRET = "s3cret"


def _with_credentials(user: str, password: str) -> str:
    parts = urlsplit(URL)
    netloc = f"{user}:{password}@{parts.hostname}:{parts.port or 6379}"
    return urlunsplit(parts._replace(netloc=netloc))


def _assert_hidden(error: BaseException, caplog: pytest.LogCaptureFixture, secret: str = SECRET) -> None:
    assert secret not in str(error) and secret not in repr(error)
    assert all(secret not in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("user", ["user", ""])
async def test_a_wrong_password_is_refused_not_unavailable(
    user: str, caplog: pytest.LogCaptureFixture
) -> None:
    bus = MessageBus.from_url(_with_credentials(user, SECRET), connect_timeout=10)
    assert SECRET not in repr(bus.adapter) and SECRET not in bus.adapter.describe()
    with pytest.raises(BrokerRefusedError) as raised:
        await bus.connect()
    assert isinstance(raised.value, PermissionError) and not isinstance(raised.value, ConnectionError)
    assert str(raised.value).startswith(bus.adapter.describe())
    assert "Redis at " in str(raised.value)
    _assert_hidden(raised.value, caplog)


@pytest.fixture
async def limited_user(admin: redis.Redis) -> AsyncIterator[tuple[str, str]]:
    """A Redis user that may connect and PING but not run scripts (removed afterwards)."""
    name, password = f"amb-test-{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex[:8]}"
    await admin.execute_command(
        "ACL", "SETUSER", name, "on", f">{password}", "~*", "&*", "+@all", "-evalsha", "-eval"
    )
    yield name, password
    await admin.execute_command("ACL", "DELUSER", name)


async def test_missing_permissions_are_refused_not_unavailable(
    limited_user: tuple[str, str], amb_topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    name, password = limited_user
    bus = MessageBus.from_url(_with_credentials(name, password))
    await bus.connect()
    try:
        with pytest.raises(BrokerRefusedError) as raised:
            await bus.publish(amb_topic, {"n": 1}, wait_for_confirmation=True)
        assert "Redis at " in str(raised.value) and "NOPERM" in str(raised.value)
        with pytest.raises(BrokerRefusedError):
            await bus.subscribe(amb_topic, _ignore, group="workers")
        _assert_hidden(raised.value, caplog, password)
    finally:
        await bus.disconnect()


async def test_a_wrong_password_of_an_existing_user_is_refused(
    limited_user: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    name, _ = limited_user
    bus = MessageBus.from_url(_with_credentials(name, SECRET))
    with pytest.raises(BrokerRefusedError) as raised:
        await bus.connect()
    _assert_hidden(raised.value, caplog)


async def test_an_unreachable_server_is_unavailable_and_named() -> None:
    bus = MessageBus.from_url(f"redis://user:{SECRET}@127.0.0.1:1/0", connect_timeout=5)
    with pytest.raises(BrokerUnavailableError) as raised:
        await bus.connect()
    assert isinstance(raised.value, ConnectionError)
    assert "Redis at 127.0.0.1:1" in str(raised.value) and SECRET not in str(raised.value)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (AuthenticationError("Authentication required."), BrokerRefusedError),  # NOAUTH
        (AuthenticationError("invalid username-password pair or user is disabled."), BrokerRefusedError),
        (NoPermissionError("this user has no permissions to run the 'xadd' command"), BrokerRefusedError),
        (ResponseError("NOPERM this user has no permissions"), BrokerRefusedError),
        (ResponseError("NOAUTH Authentication required."), BrokerRefusedError),
        (ResponseError("WRONGPASS invalid username-password pair"), BrokerRefusedError),
        (ResponseError("ERR DB index is out of range"), BrokerRefusedError),
        (RedisConnectionError(f"Error 111 connecting to user:{SECRET}@h:1"), BrokerUnavailableError),
        (RedisTimeoutError("Timeout connecting to server"), BrokerUnavailableError),
        (asyncio.TimeoutError(), BrokerUnavailableError),
        (ConnectionResetError(104, "Connection reset by peer"), BrokerUnavailableError),
        (BusyLoadingError("Redis is loading the dataset in memory"), BrokerUnavailableError),
    ],
    ids=repr,
)
def test_the_boundary_maps_each_kind_of_error(error: Exception, expected: type[Exception]) -> None:
    translated = Boundary("Redis at h:1", SECRET).translate(error)
    assert type(translated) is expected
    assert str(translated).startswith("Redis at h:1") and SECRET not in str(translated)


def test_other_error_replies_stay_what_they_are() -> None:
    error = ResponseError("NOGROUP No such key or consumer group")
    assert Boundary("Redis at h:1").translate(error) is error


def test_the_removed_timeout_option_says_what_replaced_it() -> None:
    with pytest.raises(TypeError, match="outage_timeout"):
        RedisBroker("redis://localhost", timeout=5)


async def _ignore(message: object) -> None:
    pass


def test_no_repr_shows_the_password() -> None:
    broker = RedisBroker(f"redis://user:{SECRET}@example.invalid:6380/0")
    assert SECRET not in repr(broker) and SECRET not in broker.describe()
    assert broker.describe() == "Redis at example.invalid:6380"
    assert broker.link is not None and SECRET not in repr(broker.link)
