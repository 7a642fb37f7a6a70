"""Closing a bus on Kafka with replies on their way to a requester that has gone: the reply
inbox's topic was deleted with the requester's bus, so nothing will ever confirm them."""

from __future__ import annotations

import anyio
import pytest

from amb_core import Message, MessageBus
from amb_core.testing import BusFactory
from conftest import URL, WAIT

pytestmark = pytest.mark.anyio

#: Long enough to tell "waits for the outage timeout" (30 s here) from "does not wait".
NOT_WAITING = 15.0


async def test_a_late_reply_to_a_closed_requester_does_not_hold_up_closing(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    responder = await amb_make_bus(outage_timeout=30)
    asked: list[Message] = []

    async def answer(request: Message) -> None:
        asked.append(request)
        await responder.reply(request, {"n": 1})

    await responder.subscribe(amb_topic, answer)
    requester = MessageBus.from_url(URL)
    await requester.connect()
    await requester.request(amb_topic, {}, timeout=WAIT)  # the responder's producer learns its inbox
    await requester.disconnect()  # which deletes the inbox's topic
    await responder.reply(asked[0], {"n": 2})  # too late: nobody will ever confirm it
    with anyio.fail_after(NOT_WAITING):
        await responder.disconnect()
