"""What an AWS Lambda handler of ours does with an SQS event: each record is one task message,
handled by the same adapter (and so the same stage functions) as a Celery worker.

- The body is the services' versioned JSON document: published as a Celery task (kombu's SQS
  envelope around Celery's message, which is unwrapped here) or as plain JSON (a direct
  invocation, or a message posted to the queue by hand). Both are accepted.
- Partial batch failures: a record that failed transiently is reported in
  `batchItemFailures` (the event source mapping must enable ReportBatchItemFailures) and
  comes back after a backoff with jitter (its visibility is set so); on a FIFO queue the
  first failure and every record after it are reported, so the group keeps its order.
- Give up after `max_attempts` receives: the job fails with the reason, the record is done.
- Idempotent under at-least-once delivery: the stages skip work whose output exists, and the
  records count a task once.
- Temporary files go to a directory of the environment's own under /tmp, and whatever an
  earlier, killed invocation left there is deleted first (an execution environment runs one
  invocation at a time).
- A warm-up event (`{"warm": true}`, sent when a job is accepted) only loads the code.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from shared.pipeline.messages import MessageError

from .adapter import fail, handle
from .broker import CELERY_TASKS
from .celery_tasks import backoff
from .config import ServiceConfig
from .errors import TransientError
from .runtime import Runtime

__all__ = ["handle_sqs_event", "task_document"]

log = logging.getLogger("excamera.lambda")

TEMP_PREFIX = "excamera-"


def task_document(body: str) -> Any:
    """The task document an SQS record carries, in whichever of the two forms it came."""
    envelope = _json(_maybe_base64(body))
    if isinstance(envelope, dict) and {"body", "properties"} <= set(envelope):
        headers = envelope.get("headers") or {}
        if headers.get("task") not in CELERY_TASKS.values():
            raise MessageError(f"not an excamera task: {headers.get('task')!r}")
        payload = envelope["body"]
        if envelope["properties"].get("body_encoding") == "base64":
            payload = base64.b64decode(payload).decode()
        message = _json(payload)  # Celery's protocol 2: [args, kwargs, embed]
        try:
            return message[0][0]
        except (IndexError, KeyError, TypeError):
            raise MessageError("a Celery message without the task's document") from None
    return envelope


def _maybe_base64(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        return stripped
    try:
        return base64.b64decode(stripped, validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return stripped


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise MessageError("the message is not JSON") from None


def private_temporary_directory() -> Path:
    """This execution environment's own temporary directory (under /tmp, where Lambda lets a
    function write), emptied of whatever an earlier, killed invocation left, and made the
    default for every temporary file the stages make."""
    root = Path(tempfile.gettempdir() if tempfile.tempdir is None else _base_tmp())
    mine = root / f"{TEMP_PREFIX}lambda-{os.getpid()}"
    if mine.exists():
        for path in mine.iterdir():
            with contextlib.suppress(OSError):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    mine.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(mine)
    return mine


def _base_tmp() -> str:
    """The system's temporary directory, even after `tempfile.tempdir` was pointed at ours."""
    return os.environ.get("TMPDIR") or "/tmp"


def handle_sqs_event(event: dict[str, Any], context: Any, *, service: str) -> dict[str, Any]:
    """The handler's body for `service` ("encoder" or "decoder")."""
    if event.get("warm"):
        return {"warm": True}
    private_temporary_directory()
    os.environ.setdefault("EXCAMERA_SERVICE_NAME", service)
    runtime = Runtime.current(ServiceConfig.from_env())
    records = event.get("Records") or []
    failures: list[str] = []
    for record in records:
        if failures and _is_fifo(record):
            failures.append(record["messageId"])  # after a failure, keep the group's order
            continue
        if not _handle_record(record, runtime, service):
            failures.append(record["messageId"])
    return {"batchItemFailures": [{"itemIdentifier": mid} for mid in failures]}


def _is_fifo(record: dict[str, Any]) -> bool:
    return str(record.get("eventSourceARN", "")).endswith(".fifo")


def _handle_record(record: dict[str, Any], runtime: Runtime, service: str) -> bool:
    """True when the record is finished with (done, skipped, failed for good)."""
    source = str(record.get("eventSourceARN", "")).rsplit(":", 1)[-1] or service
    receives = int((record.get("attributes") or {}).get("ApproximateReceiveCount", 1))
    try:
        document = task_document(record.get("body", ""))
    except MessageError as exc:
        from .adapter import set_aside

        set_aside(runtime, record.get("body", ""), str(exc), source)
        return True
    try:
        handle(document, runtime, service=service, source=source)
        return True
    except TransientError as exc:
        if receives >= runtime.config.max_attempts:
            _give_up(runtime, document, f"gave up after {receives} tries: {exc}", source)
            return True
        log.warning("%s: %s; back in a while", source, exc)
        _back_off(runtime, record, receives)
        return False


def _give_up(runtime: Runtime, document: Any, reason: str, source: str) -> None:
    from shared.pipeline.messages import parse_task

    try:
        fail(runtime, parse_task(document), reason, attempt=0, source=source)
    except (MessageError, TransientError) as exc:
        log.error("could not record the failure (%s): %s", reason, exc)


def _back_off(runtime: Runtime, record: dict[str, Any], receives: int) -> None:
    """Hide the record for a jittered, doubling delay before SQS delivers it again."""
    sqs = runtime.dispatcher.sqs
    queue_arn = str(record.get("eventSourceARN", ""))
    handle = record.get("receiptHandle")
    if sqs is None or not queue_arn or not handle:
        return
    with contextlib.suppress(TransientError):  # at worst it comes back sooner
        sqs.release(queue_arn.rsplit(":", 1)[-1], handle, int(backoff(receives)) + 1)
