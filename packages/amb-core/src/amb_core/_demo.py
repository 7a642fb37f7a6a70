"""`amb demo`: a few agents talking over the in-memory bus.

A planner thinks out loud, a coder gets stuck and asks for clarification, then asks an approver
agent to verify a risky action; a monitor watches every agent signal. Nobody knows who listens.
"""

from __future__ import annotations

import anyio

from amb_core._bus import MessageBus
from amb_core._message import Message, MessagePriority


async def run_demo(url: str = "memory://demo") -> None:
    """Run the demo on the broker at ``url`` (any adapter works; the default needs nothing)."""
    async with MessageBus.from_url(url) as monitor_bus, MessageBus.from_url(url) as approver_bus:
        seen = anyio.Event()
        signals: list[Message] = []

        async def monitor(message: Message) -> None:
            signals.append(message)
            print(f"  [monitor] {message.topic:<18} {message.sender}: {message.payload}")
            if message.topic == "agent.done":
                seen.set()

        async def approver(request: Message) -> None:
            action = request.payload["action"]
            approved = not action.startswith("delete")
            print(
                f"  [approver] {request.sender} asks to {action!r}: {'approved' if approved else 'refused'}"
            )
            await approver_bus.reply(request, {"approved": approved, "by": "approver-1"})

        await monitor_bus.subscribe("agent.#", monitor)
        await approver_bus.subscribe("agent.verification", approver)

        async with MessageBus.from_url(url) as agents:
            print("planner and coder start working")
            await agents.publish(
                "agent.thinking", {"thought": "Analyzing user request..."}, sender="planner-1"
            )
            await agents.publish(
                "agent.stuck",
                {"reason": "Insufficient context", "needs": "user_clarification"},
                sender="coder-1",
                priority=MessagePriority.HIGH,
            )
            for action in ("write_file report.md", "delete_file /etc/hosts"):
                reply = await agents.request(
                    "agent.verification",
                    {"action": action, "requires_approval": True},
                    sender="coder-1",
                    timeout=5,
                )
                verdict = "go ahead" if reply.payload["approved"] else "stop"
                print(f"  [coder] verification of {action!r}: {verdict}")
            await agents.publish(
                "agent.done", {"summary": "report written, deletion refused"}, sender="coder-1"
            )
            with anyio.fail_after(5):
                await seen.wait()
        print(f"done: the monitor saw {len(signals)} signals; the bus never looked inside one")
