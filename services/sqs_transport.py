"""kombu's SQS transport, for messages that upstream systems post: the splitter reads the
ingest queue through it, and anyone the queue's policy admits can post there.

kombu decodes each SQS body as JSON to see whether it is a kombu envelope, and catches only
JSON syntax errors: a body nested deeper than Python's recursion limit raises RecursionError
out of the consumer's poll (the worker's event loop), and the message comes back to do it
again. Here such a body is taken as what it is, a body that is not an envelope: it is handed
on as text, and the consumer refuses it like any other malformed message (messages.load_json)
and sets it aside.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import SQS

__all__ = ["Channel", "Transport"]


class Channel(SQS.Channel):
    def _prepare_json_payload(self, text: str) -> Any:
        try:
            return super()._prepare_json_payload(text)
        except (RecursionError, ValueError):
            return {}


class Transport(SQS.Transport):
    Channel = Channel
