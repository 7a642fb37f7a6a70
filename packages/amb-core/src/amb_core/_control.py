"""The bus's own marks on replies: chunk numbers, stream ends, error answers and cancellations.

They travel in a reply's ``metadata`` under keys that start with ``amb-`` (docs/semantics.md,
"Wire format"), so the envelope and every adapter stay as they are and the bus still never
looks inside a payload:

- ``amb-seq``: the number of a reply stream's chunk (0, 1, 2...), and on its end mark the
  number of chunks sent, so that the requester detects a missing or repeated chunk;
- ``amb-end``: true on the message that ends a stream (its payload is empty);
- ``amb-error``: ``{"type": ..., "message": ...}`` on an error answer: the handler raised (a
  plain reply, or the end of a stream);
- ``amb-cancel``: true on the message a requester sends to the responder's inbox when it stops
  listening to a stream.
"""

from __future__ import annotations

from typing import Any

from amb_core._errors import RemoteHandlerError
from amb_core._message import Message

SEQ = "amb-seq"
END = "amb-end"
ERROR = "amb-error"
CANCEL = "amb-cancel"
#: How much of an exception's message an error answer carries.
MAX_ERROR_MESSAGE = 1000
#: The metadata of a cancellation.
CANCELLED: dict[str, Any] = {CANCEL: True}


def error_mark(error: BaseException) -> dict[str, str]:
    """What an error answer says about ``error``: its type name and message."""
    return {"type": type(error).__name__, "message": str(error)[:MAX_ERROR_MESSAGE]}


def remote_error(answer: Message, topic: str) -> RemoteHandlerError | None:
    """The error an answer to a request on ``topic`` carries, or None if it is no error answer."""
    mark = answer.metadata.get(ERROR)
    if mark is None:
        return None
    if isinstance(mark, dict):
        error_type, error_message = str(mark.get("type", "Exception")), str(mark.get("message", ""))
    else:  # written by hand or by another implementation: still an error, never a reply
        error_type, error_message = "Exception", str(mark)
    who = f"{answer.sender!r}" if answer.sender else "the handler"
    return RemoteHandlerError(
        f"{who} of the request on {topic!r} raised {error_type}: {error_message}",
        error_type=error_type,
        error_message=error_message,
        reply=answer,
    )
