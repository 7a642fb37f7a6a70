"""``amb demo --scenario review``: a coordinator streams a drafting agent's tokens, then gathers
verdicts from three reviewers, one of which fails and one of which is too slow.

The agent patterns of docs/semantics.md on whatever ``--url`` names: a reply stream, a gather
with an error answer and a reply that misses the deadline, and a handler that bounds its work
by the request's ``expires_at``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

from amb_core._bus import MessageBus
from amb_core._message import Message

DRAFT = "demo.review.draft"
VERDICT = "demo.review.verdict"
#: What the drafting agent "generates", a token at a time.
TOKENS = (
    "Proposal:",
    " move",
    " the",
    " nightly",
    " report",
    " to",
    " a",
    " streaming",
    " job,",
    " so",
    " agents",
    " see",
    " results",
    " as",
    " they",
    " come.",
)
#: Seconds between two tokens: a model's pace, so that the stream is seen arriving.
TOKEN_INTERVAL = 0.04
#: How long the coordinator waits for verdicts.
REVIEW_TIMEOUT = 2.0
#: How long the slow reviewer would think, were it not for the deadline.
SLOW_REVIEW = 30.0
REVIEWERS = 3

Handler = Callable[[Message], Awaitable[None]]


def _say(line: str) -> None:
    print(line, flush=True)


def _drafter(bus: MessageBus) -> Handler:
    async def draft(request: Message) -> None:
        async with bus.reply_stream(request, sender="drafter") as stream:
            for token in TOKENS:
                await asyncio.sleep(TOKEN_INTERVAL)  # the model producing the next token
                await stream.send({"token": token})

    return draft


def _approving(bus: MessageBus) -> Handler:
    async def review(request: Message) -> None:
        _say("  [alice] approve: clear and small")
        await bus.reply(request, {"verdict": "approve", "note": "clear and small"}, sender="alice")

    return review


async def _failing(request: Message) -> None:
    # A reviewer whose model is down: the bus answers the request with this error.
    _say("  [bob] the review model is down: raising")
    raise RuntimeError("review model unavailable (HTTP 503)")


def _slow(bus: MessageBus) -> Handler:
    async def review(request: Message) -> None:
        deadline = request.expires_at
        remaining = (
            SLOW_REVIEW if deadline is None else (deadline - datetime.now(timezone.utc)).total_seconds()
        )
        _say(f"  [carol] needs {SLOW_REVIEW:.0f} s, but the request expires in {max(remaining, 0):.1f} s")
        if remaining < SLOW_REVIEW:
            # Bounded by the requester's deadline: no point thinking once nobody waits.
            await asyncio.sleep(max(remaining, 0))
            _say("  [carol] deadline passed: review dropped, model call stopped")
            return
        await asyncio.sleep(SLOW_REVIEW)
        await bus.reply(request, {"verdict": "approve"}, sender="carol")

    return review


async def run_review(url: str = "memory://demo-review") -> None:
    """Run the scenario on the broker at ``url``."""
    # Bob's failure is told by the coordinator; its ERROR log line and traceback would bury it.
    amb_logger = logging.getLogger("amb")
    level = amb_logger.level
    amb_logger.setLevel(logging.CRITICAL)
    try:
        await _review(url)
    finally:
        amb_logger.setLevel(level)


async def _review(url: str) -> None:
    async with (
        MessageBus.from_url(url) as drafter,
        MessageBus.from_url(url) as reviewers,
        MessageBus.from_url(url) as coordinator,
    ):
        await drafter.subscribe(DRAFT, _drafter(drafter))
        await reviewers.subscribe(VERDICT, _approving(reviewers))
        await reviewers.subscribe(VERDICT, _failing)
        await reviewers.subscribe(VERDICT, _slow(reviewers))

        _say("coordinator: asking the drafter for a proposal, streaming its tokens as they come")
        started = time.monotonic()
        first = None
        tokens = []
        sys.stdout.write("  [drafter] ")
        async for chunk in coordinator.request_stream(DRAFT, {"brief": "speed up reporting"}, timeout=30):
            if first is None:
                first = time.monotonic() - started
            tokens.append(chunk.payload["token"])
            sys.stdout.write(chunk.payload["token"])
            sys.stdout.flush()
        _say("")
        _say(
            f"coordinator: {len(tokens)} tokens, the first after {1000 * (first or 0):.0f} ms, "
            f"all after {1000 * (time.monotonic() - started):.0f} ms"
        )

        _say(f"coordinator: asking every reviewer for a verdict, waiting {REVIEW_TIMEOUT:.0f} s at most")
        started = time.monotonic()
        replies = await coordinator.gather(VERDICT, {"draft": "".join(tokens)}, timeout=REVIEW_TIMEOUT)
        took = time.monotonic() - started
        _say(f"coordinator: after {took:.1f} s:")
        for reply in replies:
            _say(f"  verdict from {reply.sender}: {reply.payload['verdict']}")
        for failure in replies.failures:
            _say(f"  a reviewer failed: {failure.error_type}: {failure.error_message}")
        missing = REVIEWERS - len(replies) - len(replies.failures)
        approved = bool(replies) and all(reply.payload["verdict"] == "approve" for reply in replies)
        verdict = "approved by everyone who answered" if approved else "not approved"
        _say(f"  {missing} reviewer(s) too slow; {verdict}")
