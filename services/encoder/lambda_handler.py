"""The encoder on AWS Lambda: `handler(event, context)` over an SQS event from the encode
queue (phase-1 libvpx encodes and stage-4 encodes given state), or a direct invocation
carrying the same records. See services/lambda_runtime.py for what it guarantees."""

from __future__ import annotations

from typing import Any

from ..lambda_runtime import handle_sqs_event

__all__ = ["handler"]


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return handle_sqs_event(event, context, service="encoder")
