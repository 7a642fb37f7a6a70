"""amb_core.testing as a kit: the pytest plugin's fixtures in a project of their own (pytest run
in a fresh directory, as a user's would be), the broker-control commands, and amb_core without
pytest."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from amb_core.testing import BrokerControl, eventually, load_broker_table

pytestmark = pytest.mark.anyio


def _pytest(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_project_gets_the_fixtures_by_installing_amb_core(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.fixture
            def amb_url() -> str:
                return "memory://kit-test"
            """
        )
    )
    (tmp_path / "test_kit.py").write_text(
        textwrap.dedent(
            """
            import pytest

            pytestmark = pytest.mark.anyio
            topics = []

            async def test_a_message_arrives(amb_make_bus, amb_topic, amb_received, anyio_backend):
                bus, got = await amb_make_bus(), amb_received()
                assert bus.adapter.url == "memory://kit-test" and anyio_backend == "asyncio"
                await bus.subscribe(amb_topic, got)
                await bus.publish(amb_topic, {"n": 1})
                assert [m.payload for m in await got.wait_for(1)] == [{"n": 1}]
                topics.append(amb_topic)

            async def test_each_test_gets_a_fresh_topic_and_a_connected_bus(amb_bus, amb_topic):
                assert amb_topic not in topics and amb_bus.is_connected

            def test_the_plugin_can_be_turned_off(request):
                assert request.config.pluginmanager.has_plugin("amb")
            """
        )
    )
    done = _pytest(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout
    done = _pytest(tmp_path, "-p", "no:amb")
    assert "fixture 'amb_make_bus' not found" in done.stdout


def test_importing_amb_core_imports_no_pytest() -> None:
    code = "import sys, amb_core, amb_core.testing; assert 'pytest' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_broker_commands_come_from_the_environment_then_the_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    launcher = BrokerControl(("launch",), "redis")
    assert launcher.command("restart") == ["launch", "restart", "redis"]
    assert launcher.command("stop") == ["launch", "down", "redis"]
    assert launcher.command("start") == ["launch", "up", "redis"]
    monkeypatch.setenv("AMB_KILL_CMD", "systemctl kill -s KILL 'my broker'")
    assert launcher.command("kill") == ["systemctl", "kill", "-s", "KILL", "my broker"]
    with pytest.raises(RuntimeError, match="set AMB_RESTART_CMD"):
        BrokerControl().command("restart")


def test_the_broker_table_reads_the_url_variable_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = tmp_path / "brokers.json"
    table.write_text(
        '{"brokers": [{"name": "redis", "url_variable": "AMB_KIT_URL", "default_url": "redis://h:1/0",'
        ' "distribution": "amb-redis", "module": "amb_redis"}]}'
    )
    monkeypatch.delenv("AMB_KIT_URL", raising=False)
    assert load_broker_table(table)["redis"].url == "redis://h:1/0"
    monkeypatch.setenv("AMB_KIT_URL", "redis://elsewhere:2/0")
    assert load_broker_table(table)["redis"].url == "redis://elsewhere:2/0"


async def test_eventually_says_what_never_came_true() -> None:
    async def never() -> bool:
        return False

    with pytest.raises(AssertionError, match=r"still not listed after 0\.2 s"):
        await eventually(never, "listed", within=0.2, every=0.05)
