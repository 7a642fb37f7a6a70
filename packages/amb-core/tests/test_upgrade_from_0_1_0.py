"""Every module path and public name of amb-core 0.1.0 still imports.

The list below is 0.1.0's wheel (``pip download amb-core==0.1.0``): each module, the names it
defined, and the amb-core names it imported (which could be imported from it too). Old paths
warn with a `DeprecationWarning` naming the new one, raised at the line that imports the name.
"""

from __future__ import annotations

import importlib
import re
import sys
import types
import warnings

import pytest

from amb_core import AdapterNotInstalledError

#: (0.1.0 module, name, where it lives now)
MOVED = [
    ("amb_core.models", "Message", "amb_core"),
    ("amb_core.models", "MessagePriority", "amb_core"),
    ("amb_core.memory_broker", "InMemoryBroker", "amb_core"),
    ("amb_core.memory_broker", "BrokerAdapter", "amb_core"),
    ("amb_core.memory_broker", "MessageHandler", "amb_core"),
    ("amb_core.memory_broker", "Message", "amb_core"),
    ("amb_core.broker", "BrokerAdapter", "amb_core"),
    ("amb_core.broker", "MessageHandler", "amb_core"),
    ("amb_core.broker", "Message", "amb_core"),
    ("amb_core.adapters", "RedisBroker", "amb_redis"),
    ("amb_core.adapters", "RabbitMQBroker", "amb_rabbitmq"),
    ("amb_core.adapters", "KafkaBroker", "amb_kafka"),
    ("amb_core.adapters.redis_broker", "RedisBroker", "amb_redis"),
    ("amb_core.adapters.rabbitmq_broker", "RabbitMQBroker", "amb_rabbitmq"),
    ("amb_core.adapters.kafka_broker", "KafkaBroker", "amb_kafka"),
    *(
        (f"amb_core.adapters.{module}", name, "amb_core")
        for module in ("redis_broker", "rabbitmq_broker", "kafka_broker")
        for name in ("BrokerAdapter", "MessageHandler", "Message")
    ),
]
#: (0.1.0 module, name): still where they were, no warning.
KEPT = [
    *(
        ("amb_core", name)
        for name in (
            "Message",
            "MessagePriority",
            "MessageBus",
            "BrokerAdapter",
            "MessageHandler",
            "InMemoryBroker",
            "__version__",
            "__author__",
            "__license__",
        )
    ),
    *(
        ("amb_core._bus", name)
        for name in (
            "MessageBus",
            "Message",
            "MessagePriority",
            "BrokerAdapter",
            "MessageHandler",
            "InMemoryBroker",
        )
    ),
]
#: 0.1.0's Hugging Face helpers: removed, but their names still import (and say so).
HF_UTILS = [
    "HF_AVAILABLE",
    "upload_experiment_logs",
    "download_dataset",
    "push_message_logs",
    "create_dataset_card",
    "HFDatasetManager",
]
ADAPTER_DISTRIBUTIONS = {"amb_redis": "amb-redis", "amb_rabbitmq": "amb-rabbitmq", "amb_kafka": "amb-kafka"}


def _import(module: str, name: str) -> object:
    """Run ``from module import name`` as a user's file would (this file, for the warning)."""
    namespace: dict[str, object] = {}
    exec(compile(f"from {module} import {name}", __file__, "exec"), namespace)
    return namespace[name]


@pytest.fixture
def fake_adapters(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """A stand-in for each adapter distribution, so the paths are checked whether or not the
    real ones are installed (their own tests check the real classes)."""
    classes: dict[str, object] = {}
    for module in ADAPTER_DISTRIBUTIONS:
        fake = types.ModuleType(module)
        name = {"amb_redis": "RedisBroker", "amb_rabbitmq": "RabbitMQBroker", "amb_kafka": "KafkaBroker"}[
            module
        ]
        classes[name] = type(name, (), {})
        setattr(fake, name, classes[name])
        monkeypatch.setitem(sys.modules, module, fake)
    return classes


@pytest.mark.parametrize(("old", "name", "home"), MOVED, ids=[f"{old}.{name}" for old, name, _ in MOVED])
def test_an_old_path_imports_the_new_object_and_names_its_new_path(
    old: str, name: str, home: str, fake_adapters: dict[str, object]
) -> None:
    with pytest.warns(DeprecationWarning, match=re.escape(f"{old}.{name} is deprecated")) as caught:
        imported = _import(old, name)
    assert imported is getattr(importlib.import_module(home), name)
    [warning] = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert f"use `from {home} import {name}`" in str(warning.message)
    assert warning.filename == __file__, "the warning points at the import, not at amb_core"


@pytest.mark.parametrize(("module", "name"), KEPT, ids=[f"{module}.{name}" for module, name in KEPT])
def test_names_still_at_home_import_without_a_warning(module: str, name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _import(module, name)


@pytest.mark.parametrize("name", HF_UTILS)
def test_the_removed_hugging_face_helpers_import_and_say_what_to_use(name: str) -> None:
    with pytest.warns(DeprecationWarning, match="removed in amb-core 0.4.0: use huggingface_hub directly"):
        helper = _import("amb_core.hf_utils", name)
    if name == "HF_AVAILABLE":
        assert helper is False  # as in 0.1.0 without huggingface_hub: callers skip the helpers
        return
    assert callable(helper)
    with pytest.raises(ImportError, match="huggingface_hub"):
        helper("org/dataset")


@pytest.mark.parametrize(
    ("old", "name", "module"),
    [
        ("amb_core.adapters", "RedisBroker", "amb_redis"),
        ("amb_core.adapters.redis_broker", "RedisBroker", "amb_redis"),
        ("amb_core.adapters.rabbitmq_broker", "RabbitMQBroker", "amb_rabbitmq"),
        ("amb_core.adapters.kafka_broker", "KafkaBroker", "amb_kafka"),
    ],
)
def test_an_adapter_path_without_its_distribution_says_what_to_install(
    old: str, name: str, module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the error says more than the warning
        with pytest.raises(AdapterNotInstalledError) as raised:
            _import(old, name)
    assert f"pip install {ADAPTER_DISTRIBUTIONS[module]}" in str(raised.value)
    assert isinstance(raised.value, ImportError)


def test_unknown_names_are_still_attribute_errors() -> None:
    for module in ("amb_core.models", "amb_core.broker", "amb_core.adapters", "amb_core.hf_utils"):
        with pytest.raises(ImportError, match="cannot import name 'Nope'"):
            _import(module, "Nope")
    # a submodule import goes past the package's __getattr__
    assert (
        importlib.import_module("amb_core.adapters.redis_broker").__name__ == "amb_core.adapters.redis_broker"
    )
