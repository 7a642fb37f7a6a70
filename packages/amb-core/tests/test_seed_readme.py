"""The seed README's examples (amb-core 0.1.0), run as written against this code.

Code that the README shows inside ``async def main()`` is kept verbatim; fragments that use an
existing ``bus`` run inside one; ``process`` is the README's placeholder for the user's work.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from amb_core import Message, MessageBus, MessagePriority


def test_quick_start(capsys: pytest.CaptureFixture[str]) -> None:
    async def main():  # type: ignore[no-untyped-def]
        # Create message bus (uses in-memory broker by default)
        # No external dependencies required!
        async with MessageBus() as bus:
            # Subscribe to a topic
            async def handle_message(msg: Message):  # type: ignore[no-untyped-def]
                print(f"Received: {msg.payload}")

            await bus.subscribe("agent.thoughts", handle_message)

            # Publish a message (fire and forget)
            await bus.publish("agent.thoughts", {"thought": "Hello World!"})

            # Wait a bit for async processing
            await asyncio.sleep(0.1)

    asyncio.run(main())
    assert capsys.readouterr().out == "Received: {'thought': 'Hello World!'}\n"


def process(payload: dict[str, object]) -> str:
    return f"processed {payload['query']}"


def test_agent_signals_acknowledgement_and_request_response(capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        async with MessageBus() as bus:

            async def approve(msg: Message) -> None:
                await bus.reply(msg, {"approved": False})

            await bus.subscribe("agent.verification", approve)

            # Agent emits a thinking signal
            await bus.publish(
                "agent.thinking", {"agent_id": "agent-1", "thought": "Analyzing user request..."}
            )

            # Agent emits a stuck signal
            await bus.publish(
                "agent.stuck",
                {"agent_id": "agent-1", "reason": "Insufficient context", "needs": "user_clarification"},
            )

            # Agent requests verification
            response = await bus.request(
                "agent.verification",
                {"agent_id": "agent-1", "action": "delete_file", "requires_approval": True},
            )
            assert response.payload == {"approved": False}

            # Fast publishing without waiting for confirmation
            await bus.publish(
                "agent.actions",
                {"action": "process", "data": "..."},
                wait_for_confirmation=False,  # Default
            )

            # Slower but ensures message was acknowledged by the broker
            msg_id = await bus.publish(
                "critical.task",
                {"task": "important"},
                wait_for_confirmation=True,  # Wait for broker acknowledgment
            )
            print(f"Message {msg_id} acknowledged by broker!")

            # Set up a responder
            async def handle_request(msg: Message):  # type: ignore[no-untyped-def]
                # Process request
                result = process(msg.payload)
                # Send response
                await bus.reply(msg, {"result": result})

            await bus.subscribe("agent.query", handle_request)

            # Send request and wait for response
            response = await bus.request("agent.query", {"query": "What is the status?"}, timeout=10.0)
            print(f"Response: {response.payload}")

    asyncio.run(main())
    out = capsys.readouterr().out
    assert "acknowledged by broker!" in out
    assert "Response: {'result': 'processed What is the status?'}" in out


def test_message_priorities_listed_in_the_readme() -> None:
    assert [p.name for p in MessagePriority] == ["LOW", "NORMAL", "HIGH", "URGENT"]
    assert MessagePriority.NORMAL is Message(id="x", topic="t").priority


def test_the_demo_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "amb_core", "demo"], capture_output=True, text=True, timeout=60, check=True
    )
    assert "[approver] coder-1 asks to 'delete_file /etc/hosts': refused" in result.stdout
    assert "done: the monitor saw 5 signals" in result.stdout
