from __future__ import annotations

from typing import Any

import pytest

from amb_core import AdapterNotInstalledError, BrokerAdapter, InMemoryBroker, MessageBus
from amb_core import _registry as registry


def test_memory_urls_need_no_entry_point() -> None:
    assert isinstance(MessageBus.from_url("memory://").adapter, InMemoryBroker)


@pytest.mark.parametrize(
    ("url", "distribution"),
    [
        ("redis://h", "amb-redis"),
        ("rediss://h", "amb-redis"),
        ("amqp://h", "amb-rabbitmq"),
        ("kafka://h:9092", "amb-kafka"),
    ],
)
def test_a_missing_adapter_names_what_to_install(
    url: str, distribution: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "_registered", _cached({}))
    with pytest.raises(AdapterNotInstalledError, match=f"pip install {distribution}") as raised:
        MessageBus.from_url(url)
    assert isinstance(raised.value, ImportError)


def test_an_unknown_scheme_says_how_to_register_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_registered", _cached({}))
    with pytest.raises(ValueError, match=r"amb\.adapters"):
        MessageBus.from_url("nats://h")
    with pytest.raises(ValueError, match="not a broker URL"):
        MessageBus.from_url("localhost:6379")


def test_a_third_party_entry_point_plugs_in(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeEntryPoint:
        value = "thirdparty:Broker"

        def load(self) -> Any:
            return InMemoryBroker

    monkeypatch.setattr(registry, "_registered", _cached({"memory2": FakeEntryPoint()}))
    with pytest.raises(ValueError, match="memory:// URL"):
        MessageBus.from_url("memory2://x")  # the class's own from_url was called with the URL

    def factory(url: str, **options: Any) -> BrokerAdapter:
        return InMemoryBroker(**options)

    FakeEntryPoint.load = lambda self: factory  # type: ignore[method-assign]
    assert isinstance(MessageBus.from_url("memory2://x").adapter, InMemoryBroker)


def _cached(entries: dict[str, Any]) -> Any:
    def registered() -> dict[str, Any]:
        return entries

    registered.cache_clear = lambda: None  # type: ignore[attr-defined]
    return registered
