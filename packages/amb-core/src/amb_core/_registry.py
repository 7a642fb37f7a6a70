"""Choosing an adapter by URL scheme through the ``amb.adapters`` entry-point group.

A third-party adapter plugs in by declaring, in its own pyproject.toml::

    [project.entry-points."amb.adapters"]
    myscheme = "my_package:MyBroker"

where ``MyBroker`` is a `BrokerAdapter` subclass (its ``from_url`` is called) or any callable
taking ``(url, **options)`` and returning an adapter.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from amb_core._broker_adapter import BrokerAdapter
from amb_core._errors import AdapterNotInstalledError
from amb_core._memory import InMemoryBroker

GROUP = "amb.adapters"
_DISTRIBUTIONS = {
    "redis": "amb-redis",
    "rediss": "amb-redis",
    "amqp": "amb-rabbitmq",
    "amqps": "amb-rabbitmq",
    "kafka": "amb-kafka",
}


@cache
def _registered() -> dict[str, EntryPoint]:
    return {entry_point.name: entry_point for entry_point in entry_points(group=GROUP)}


def adapter_from_url(url: str, **options: Any) -> BrokerAdapter:
    """Build the adapter registered for ``url``'s scheme, passing ``options`` through."""
    scheme, separator, _ = url.partition("://")
    scheme = scheme.lower()
    if not separator or not scheme:
        raise ValueError(f"{url!r} is not a broker URL such as memory://, redis://host:6379/0")
    if scheme == "memory":
        return InMemoryBroker.from_url(url, **options)
    entry_point = _registered().get(scheme)
    if entry_point is None:
        _registered.cache_clear()  # a distribution installed since the last look
        entry_point = _registered().get(scheme)
    if entry_point is None:
        distribution = _DISTRIBUTIONS.get(scheme)
        if distribution is not None:
            raise AdapterNotInstalledError(
                f"{scheme}:// needs the {distribution} adapter: pip install {distribution}"
                f" (or pip install 'amb-core[{distribution.removeprefix('amb-')}]')"
            )
        known = ", ".join(sorted({"memory", *_DISTRIBUTIONS, *_registered()}))
        raise ValueError(
            f"no adapter is registered for {scheme}:// (known schemes: {known}); a third-party "
            f"adapter registers its scheme in the {GROUP!r} entry-point group"
        )
    factory = entry_point.load()
    if isinstance(factory, type) and issubclass(factory, BrokerAdapter):
        return factory.from_url(url, **options)
    adapter = factory(url, **options)
    if not isinstance(adapter, BrokerAdapter):
        raise TypeError(f"entry point {entry_point.value!r} returned {adapter!r}, not a BrokerAdapter")
    return adapter
