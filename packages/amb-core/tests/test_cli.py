"""The ``amb`` command on the in-memory broker: arguments, one-line errors, exit codes, stdin,
Ctrl-C. tests-contract/amb_contract/test_cli.py runs it end to end on every real broker."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from amb_core import GroupInUseError, MessageBus
from amb_core import _registry as registry
from amb_core.__main__ import COMMANDS, main
from amb_core._cli.options import build_parser
from amb_core._cli.running import _EXIT_CODES, GRACE, ExitCode
from amb_core.testing import Recorder

AMB = [sys.executable, "-m", "amb_core"]
_EXIT_CODES_OF = dict(_EXIT_CODES)


def amb(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    assert isinstance(exited.value.code, int)
    return exited.value.code, out, err


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["pub", "bad topic"], "invalid topic 'bad topic'"),
        (["pub", "agent.stuck", "{oops"], "the payload is not JSON"),
        (["pub", "agent.stuck", "[1, 2]"], "the payload must be a JSON object ({...}), not list"),
        (["pub", "agent.stuck", '{"x": NaN}'], "payload['x'] is nan, which JSON cannot represent"),
        (["pub", "agent.stuck", "--priority", "asap"], "invalid priority 'asap'"),
        (["pub", "agent.stuck", "--count", "0"], "at least 1"),
        (["pub", "agent.stuck", "--ttl", "-1"], "positive number of seconds"),
        (["sub", "agent.#.x#"], "invalid pattern"),
        (["sub", "agent.#", "--group", "a b"], "invalid group"),
        (["pub", "agent.stuck", "--key", ""], "key must be 1 to 256 characters"),
        (["groups"], "required: ACTION"),
        (["groups", "purge", "a b", "jobs"], "invalid group 'a b'"),
        (["groups", "delete", "workers", "jobs..x"], "invalid pattern"),
        (["groups", "list", "--url", "nosuch://h"], "no adapter is registered for nosuch://"),
        (["request", "agent.ask", "--timeout", "nan"], "positive number of seconds"),
        (["pub", "agent.stuck", "--url", "nosuch://h"], "no adapter is registered for nosuch://"),
        (["pub", "agent.stuck", "--url", "localhost:6379"], "is not a broker URL"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "required: COMMAND"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_code_1(
    args: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = amb(*args, capsys=capsys)
    assert (code, out) == (1, "")
    assert problem in err
    assert err.count("\n") == 1, err


def test_a_url_password_never_shows(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = amb("sub", "agent.#", "--url", "redis//agent:s3cret@host/", capsys=capsys)
    assert code == 1 and "is not a broker URL" in err
    assert "s3cret" not in err and "***" in err


def test_a_missing_adapter_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(registry, "_registered", _nothing_registered)
    code, _, err = amb("pub", "agent.stuck", "--url", "redis://localhost:6379/0", capsys=capsys)
    assert code == 1
    assert err == (
        "amb pub: redis:// needs the amb-redis adapter: pip install amb-redis (or pip install 'amb-core[redis]')\n"
    )


def _nothing_registered() -> dict[str, object]:
    return {}


_nothing_registered.cache_clear = lambda: None  # type: ignore[attr-defined]


def test_pub_prints_one_id_per_message(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    code, out, _ = amb(
        "pub", "agent.thinking", '{"thought": "hi"}', "--count", "3", "--confirm", capsys=capsys
    )
    assert (code, len(set(out.split()))) == (0, 3)
    # memory:// in a process of its own: nobody listens, and a confirmed publish says so
    assert caplog.text.count("no subscription receives message") == 3


def test_no_reply_is_exit_code_3(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = amb(
        "request", "agent.verification", '{"action": "x"}', "--timeout", "0.1", capsys=capsys
    )
    assert (code, out) == (3, "")
    # memory:// in a process of its own: no route, and the bus says so at once
    assert (
        err == "amb request: no subscription receives requests on 'agent.verification': nobody can answer\n"
    )


def test_the_url_comes_from_amb_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AMB_URL", "nosuch://from-the-environment")
    code, _, err = amb("pub", "agent.stuck", capsys=capsys)
    assert code == 1 and "nosuch://" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from amb_core import __version__

    code, out, _ = amb("--version", capsys=capsys)
    assert (code, out) == (0, f"amb-core {__version__}\n")


def test_pub_reads_one_object_per_line_of_stdin_and_names_a_bad_line() -> None:
    result = subprocess.run(
        [*AMB, "pub", "agent.thinking", "-"],
        input='{"n": 1}\n\n{"n": 2}\n[3]\n{"n": 4}\n',
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert len(result.stdout.split()) == 2, "the lines before the bad one were published"
    assert result.stderr == "amb pub: line 4 of stdin must be a JSON object ({...}), not list\n"


def _run_until_interrupted(args: list[str], ready: str) -> tuple[subprocess.Popen[str], float]:
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    line = process.stderr.readline()
    assert ready in line, line
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    return process, time.monotonic() - started


def test_ctrl_c_ends_sub_at_once_with_exit_code_0_and_no_traceback() -> None:
    process, took = _run_until_interrupted([*AMB, "sub", "agent.#"], "amb sub: subscribed to agent.# on")
    assert process.returncode == 0
    assert process.stderr is not None and process.stderr.read() == ""
    # The second is held by GRACE (next test); this bound only tells a hang from a loaded machine.
    assert took < 5.0, f"took {took:.2f} s"


def test_a_command_that_will_not_stop_is_ended_after_the_grace_period() -> None:
    # An action that ignores the cancellation, as a bus stuck closing on a dead broker would.
    stubborn = textwrap.dedent(
        """
        import argparse, asyncio, sys
        from amb_core._cli.running import ExitCode, run

        async def stubborn(arguments):
            print("amb stubborn: started", file=sys.stderr, flush=True)
            while True:
                try:
                    await asyncio.sleep(60)
                except asyncio.CancelledError:
                    pass

        arguments = argparse.Namespace(action=stubborn, prog="amb stubborn", interrupted_exit_code=ExitCode.INTERRUPTED)
        raise SystemExit(run(arguments))
        """
    )
    process, took = _run_until_interrupted([sys.executable, "-c", stubborn], "amb stubborn: started")
    assert process.returncode == 130
    # Ended by the grace timer, not by anything slower; GRACE itself keeps the one-second promise.
    assert GRACE < 1.0
    assert GRACE <= took < 5.0, f"took {took:.2f} s"


def test_sub_json_lines_and_count_on_a_shared_in_process_broker() -> None:
    # The demo's buses share memory://demo-cli within its one process; sub and pub cannot share
    # memory across processes, so this drives the command's coroutine next to a publisher.
    script = textwrap.dedent(
        """
        import asyncio, sys
        from amb_core import MessageBus
        from amb_core.__main__ import COMMANDS
        from amb_core._cli.options import build_parser

        async def main():
            arguments = build_parser("test", COMMANDS).parse_args(
                ["sub", "agent.#", "--json", "--count", "2", "--url", "memory://cli"])
            watcher = asyncio.create_task(arguments.action(arguments))
            async with MessageBus.from_url("memory://cli") as bus:
                while not len(bus.adapter._hub.table):
                    await asyncio.sleep(0.01)
                for n in range(3):
                    await bus.publish("agent.thinking", {"n": n}, sender="t")
                print(int(await watcher), file=sys.stderr)

        asyncio.run(main())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.stderr.splitlines()[-1] == "0", result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["payload"] for line in lines] == [{"n": 0}, {"n": 1}]
    assert {line["sender"] for line in lines} == {"t"}


def test_the_review_demo_streams_and_gathers() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "amb_core", "demo", "--scenario", "review"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert (
        "  [drafter] Proposal: move the nightly report to a streaming job, so agents see results as they come."
        in lines
    )
    assert lines[-4].startswith("coordinator: after ")  # the gather's timeout, 2 s
    assert lines[-3:] == [
        "  verdict from alice: approve",
        "  a reviewer failed: RuntimeError: review model unavailable (HTTP 503)",
        "  1 reviewer(s) too slow; approved by everyone who answered",
    ]
    assert "  [carol] deadline passed: review dropped, model call stopped" in lines


def test_groups_list_purge_and_delete_on_a_shared_in_process_broker(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Buses on one memory:// URL share its broker within the process, across event loops too.
    url = "memory://cli-groups"

    async def leave_a_backlog() -> None:
        async with MessageBus.from_url(url) as bus:
            await bus.unsubscribe(await bus.subscribe("jobs.a", Recorder(), group="workers"))
            for n in range(3):
                await bus.publish("jobs.a", {"n": n})

    asyncio.run(leave_a_backlog())
    assert amb("groups", "list", "--url", url, capsys=capsys) == (
        0,
        "GROUP    PATTERN  MEMBERS  BACKLOG\nworkers  jobs.a   0        3\n",
        "",
    )
    code, out, _ = amb("groups", "list", "--json", "--url", url, capsys=capsys)
    assert (code, json.loads(out)) == (
        0,
        {"group": "workers", "pattern": "jobs.a", "members": 0, "backlog": 3},
    )
    code, out, err = amb("groups", "purge", "workers", "jobs.a", "--url", url, capsys=capsys)
    assert (code, out) == (0, "3\n") and "dropped 3 messages" in err
    assert amb("groups", "delete", "workers", "jobs.a", "--url", url, capsys=capsys)[:2] == (0, "")
    code, out, err = amb("groups", "delete", "workers", "jobs.a", "--url", url, capsys=capsys)
    assert (code, out, err) == (1, "", "amb groups delete: there is no group workers on jobs.a\n")
    assert amb("groups", "list", "--url", url, capsys=capsys) == (0, "", "amb groups list: no groups\n")


def test_groups_delete_is_refused_while_members_run() -> None:
    async def main() -> None:
        arguments = build_parser("test", COMMANDS).parse_args(
            ["groups", "delete", "workers", "jobs", "--url", "memory://cli-in-use"]
        )
        async with MessageBus.from_url("memory://cli-in-use") as bus:
            await bus.subscribe("jobs", Recorder(), group="workers")
            with pytest.raises(GroupInUseError, match="1 members running: stop them first"):
                await arguments.action(arguments)

    asyncio.run(main())
    assert _EXIT_CODES_OF[GroupInUseError] == ExitCode.USAGE
