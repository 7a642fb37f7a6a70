from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: most of these tests build buses directly, without the ``amb_`` fixtures
    (amb_core.testing.plugin), which choose asyncio for the tests that use them."""
    return "asyncio"


@pytest.fixture(autouse=True)
def _fresh_log_throttle() -> None:
    """Each test sees the first warnings of its own (amb_core._logs throttles repeats)."""
    from amb_core import _logs as logs

    logs.reset()
