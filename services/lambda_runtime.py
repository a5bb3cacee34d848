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
- Each record on its own: one that is no task (not text, not JSON, too big, a broken Celery
  envelope) is dead-lettered with the reason and done with; an unexpected failure of one
  is reported for it alone, as a transient one is. Nothing escapes the handler, which would
  make SQS deliver the whole batch again.
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
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from shared.pipeline.messages import MessageError, load_json, parse_task

from .adapter import describe_failure, fail, handle
from .broker import CELERY_TASKS
from .config import ServiceConfig
from .errors import Deferred, TransientError
from .retry import backoff
from .runtime import Runtime

__all__ = ["handle_sqs_event", "task_document"]

log = logging.getLogger("excamera.lambda")

TEMP_PREFIX = "excamera-"


def task_document(body: Any) -> Any:
    """The task document an SQS record carries, in whichever of the two forms it came;
    MessageError (one line) for anything else."""
    if not isinstance(body, str):
        raise MessageError(f"the record's body is {type(body).__name__}, not text")
    envelope = _json(_maybe_base64(body))
    if isinstance(envelope, dict) and {"body", "properties"} <= set(envelope):
        headers, properties = envelope.get("headers") or {}, envelope["properties"] or {}
        if not isinstance(headers, dict) or not isinstance(properties, dict):
            raise MessageError("a Celery message whose headers or properties are not objects")
        if headers.get("task") not in CELERY_TASKS.values():
            raise MessageError(f"not an excamera task: {_shown(headers.get('task'))}")
        payload = envelope["body"]
        if not isinstance(payload, str):
            raise MessageError("a Celery message whose body is not text")
        if properties.get("body_encoding") == "base64":
            try:
                payload = base64.b64decode(payload, validate=True).decode()
            except (binascii.Error, ValueError):
                raise MessageError("a Celery message whose body is not base64 of text") from None
        message = _json(payload)  # Celery's protocol 2: [args, kwargs, embed]
        try:
            return message[0][0]
        except (IndexError, KeyError, TypeError):
            raise MessageError("a Celery message without the task's document") from None
    return envelope


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _maybe_base64(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        return stripped
    try:
        return base64.b64decode(stripped, validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return stripped


def _json(text: str) -> Any:
    """JSON, with the messages' own limits (size, nesting, finite numbers)."""
    return load_json(text, "the message")


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


def handle_sqs_event(event: Any, context: Any, *, service: str) -> dict[str, Any]:
    """The handler's body for `service` ("encoder" or "decoder"). Each record is handled on
    its own: whatever one record does, the others' outcomes are reported as they are (an
    exception out of the handler would make SQS deliver the whole batch again)."""
    if isinstance(event, dict) and event.get("warm"):
        return {"warm": True}
    records = event.get("Records", None) if isinstance(event, dict) else None
    if not isinstance(records, list):
        log.error("%s: not an SQS event (%s); nothing to do", service,
                  f"its Records are {type(records).__name__}, not a list"
                  if isinstance(event, dict) else f"a {type(event).__name__}, not an object")
        return {"batchItemFailures": []}
    private_temporary_directory()
    os.environ.setdefault("EXCAMERA_SERVICE_NAME", service)
    runtime = Runtime.current(ServiceConfig.from_env())
    failures: list[str] = []
    for record in records:
        if not isinstance(record, dict):
            log.error("%s: an event record that is not an object was skipped", service)
            continue
        if failures and _is_fifo(record):
            _report(failures, record)  # after a failure, keep the group's order
            continue
        if not _handle_record(record, runtime, service):
            _report(failures, record)
    return {"batchItemFailures": [{"itemIdentifier": mid} for mid in failures]}


def _report(failures: list[str], record: dict[str, Any]) -> None:
    message_id = record.get("messageId")
    if isinstance(message_id, str) and message_id:
        failures.append(message_id)
    else:
        log.error("a failed record without a messageId cannot be reported for redelivery")


def _is_fifo(record: dict[str, Any]) -> bool:
    return str(record.get("eventSourceARN", "")).endswith(".fifo")


def _receive_count(record: dict[str, Any]) -> int:
    attributes = record.get("attributes")
    text = attributes.get("ApproximateReceiveCount", 1) if isinstance(attributes, dict) else 1
    try:
        return max(1, int(text))
    except (TypeError, ValueError):
        return 1


def _handle_record(record: dict[str, Any], runtime: Runtime, service: str) -> bool:
    """True when the record is finished with (done, skipped, failed for good)."""
    from .adapter import set_aside

    source = str(record.get("eventSourceARN", "")).rsplit(":", 1)[-1] or service
    receives = _receive_count(record)
    try:
        document = task_document(record.get("body", ""))
    except MessageError as exc:
        set_aside(runtime, record.get("body", ""), str(exc), source)
        return True
    try:
        handle(document, runtime, service=service, source=source)
        return True
    except Deferred as exc:  # not a failure: the record comes back once the other copy ends
        log.info("%s: %s", source, exc)
        _hide(runtime, record, exc.seconds)
        return False
    except Exception as exc:  # noqa: BLE001 - transient, or a failure of ours: try again later
        reason = str(exc) if isinstance(exc, TransientError) else describe_failure(exc)
        if not isinstance(exc, TransientError):
            log.error("%s: unexpected failure: %s", source, reason)
            log.debug("%s: the failure", source, exc_info=True)
        if receives >= runtime.config.max_attempts:
            _give_up(runtime, document, f"gave up after {receives} tries: {reason}", source)
            return True
        log.warning("%s: %s; back in a while", source, reason)
        _back_off(runtime, record, receives)
        return False


def _give_up(runtime: Runtime, document: Any, reason: str, source: str) -> None:
    try:
        fail(runtime, parse_task(document), reason, attempt=0, source=source)
    except Exception as exc:  # noqa: BLE001 - the record is done with either way
        log.error("could not record the failure (%s): %s", reason, describe_failure(exc))


def _back_off(runtime: Runtime, record: dict[str, Any], receives: int) -> None:
    """Hide the record for a jittered, doubling delay before SQS delivers it again."""
    _hide(runtime, record, backoff(receives))


MAX_VISIBILITY = 43_200  # SQS's longest visibility timeout (12 h)


def _hide(runtime: Runtime, record: dict[str, Any], seconds: float) -> None:
    """Hide the record for `seconds` before SQS delivers it again."""
    sqs = runtime.dispatcher.sqs
    queue_arn = str(record.get("eventSourceARN", ""))
    handle = record.get("receiptHandle")
    if sqs is None or not queue_arn or not handle:
        return
    with contextlib.suppress(TransientError):  # at worst it comes back sooner
        sqs.release(queue_arn.rsplit(":", 1)[-1], handle, min(MAX_VISIBILITY, int(seconds) + 1))
