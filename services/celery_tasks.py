"""The Celery side of the Celery-run services (splitter, encoder, decoder): one task each,
whose only argument is a `TaskMessage` document and whose body is `adapter.handle`.

Reliability, after Celery's task-design advice: every task is idempotent, acknowledged only
when it has finished (a killed worker's task is delivered again), one reserved at a time;
transient failures (storage, broker, database) are retried with exponential backoff and
jitter, and when the retries run out the job fails with the reason. The splitter also consumes
the ingest queue's plain JSON (`IngestConsumer`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery, bootsteps
from celery.exceptions import Reject
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu import Consumer, Message, Queue

from shared.pipeline.messages import MessageError, parse_task

from .adapter import Outcome, describe_failure, fail, handle, set_aside
from .broker import CELERY_TASKS
from .errors import Deferred, TransientError
from .retry import backoff
from .runtime import Runtime
from .splitter.ingest import accept_body, set_aside_ingest
from .splitter.split import split_step

__all__ = ["IngestConsumer", "TaskConsumer", "register"]

log = logging.getLogger("excamera.services")

STEPS = {"splitter": {"split": split_step}}


def register(app: Celery, service: str) -> Any:
    """Register the service's task on `app`; returns it."""
    name = CELERY_TASKS[service]

    @app.task(name=name, bind=True, acks_late=True, ignore_result=True,
              reject_on_worker_lost=True)
    def run(self: Any, *args: Any, **kwargs: Any) -> str:
        runtime = Runtime.current()
        source = runtime.topology.queue_of_service(service)
        if len(args) != 1 or kwargs:
            # Not what the dispatcher sends (its one argument: the task document).
            set_aside(runtime, {"args": list(args), "kwargs": kwargs},
                      f"{name} takes one argument, the task document "
                      f"(this one has {len(args)} and {len(kwargs)} keyword arguments)", source)
            return Outcome.REJECTED.value
        (document,) = args
        try:
            return handle(document, runtime, service=service, source=source,
                          steps=STEPS.get(service)).value
        except Deferred as exc:  # running elsewhere: a fresh copy later, no retry spent
            log.info("%s: %s", name, exc)
            try:
                self.apply_async(args=args, countdown=exc.seconds, queue=source,
                                 priority=(self.request.delivery_info or {}).get("priority"))
            except Exception as error:  # noqa: BLE001 - the broker's: keep this one instead
                time.sleep(1.0)  # not a tight loop while publishing fails
                raise Reject(f"{exc}; could not hand it back ({error})", requeue=True) from None
            return "deferred"
        except TransientError as exc:
            if self.request.retries < runtime.config.retries:
                log.warning("%s: %s; retrying", name, exc)
                raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from None
            return _give_up(runtime, document, exc, source)

    return run


def _give_up(runtime: Runtime, document: Any, exc: TransientError, source: str) -> str:
    """The retries ran out: fail the job with the reason (or, if even that cannot be
    recorded, put the message back for later rather than lose it)."""
    reason = f"gave up after {runtime.config.retries} retries: {exc}"
    try:
        message = parse_task(document)
        fail(runtime, message, reason, attempt=0, source=source)
    except MessageError:
        return Outcome.REJECTED.value
    except TransientError:
        raise Reject(reason, requeue=True) from None
    return Outcome.FAILED.value


class IngestConsumer(bootsteps.ConsumerStep):
    """Consumes the ingest queue inside the splitter's worker (a Celery consumer step: the
    worker's own connection and event loop, its lifecycle and reconnection)."""

    def get_consumers(self, channel: Any) -> list[Consumer]:
        runtime = Runtime.current()
        queue = Queue(runtime.topology.ingest, durable=True)
        # on_message: the raw message, undecoded, whatever its content type (upstream
        # systems send what they send); the ingest step parses and validates it.
        consumer = Consumer(channel, queues=[queue], on_message=self.on_message)
        consumer.qos(prefetch_count=1)
        return [consumer]

    def on_message(self, message: Message) -> None:
        runtime = Runtime.current()
        try:
            try:
                accept_body(message.body, runtime,
                            redelivered=bool(message.delivery_info.get("redelivered")))
            except TransientError:
                raise
            except Exception as exc:  # noqa: BLE001 - a message no retry will cure
                # Whatever it is, it must not stop the consumer (the message would come
                # back to stop it again, and hold up every job behind it).
                log.error("ingest: unexpected failure on a message: %s", describe_failure(exc))
                log.debug("ingest: the failure", exc_info=True)
                set_aside_ingest(runtime, message.body, describe_failure(exc))
        except TransientError as exc:
            log.warning("ingest: %s; the message goes back to the queue", exc)
            time.sleep(1.0)  # not a tight loop while the records or the store are down
            message.requeue()
            return
        message.ack()


class TaskConsumer(CeleryConsumer):
    """Celery's consumer (`worker_consumer`), except for what it cannot take as a task of
    ours (not JSON, not a Celery message, a content type it refuses, a task of another
    name): that goes to the dead-letter queue with a one-line reason, and is logged in one
    line, instead of Celery's tracebacks and a silent discard."""

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        self._set_aside(message, f"a message that cannot be decoded: {exc}")
        message.ack()

    def on_unknown_message(self, body: Any, message: Message) -> None:
        self._set_aside(message, "not a Celery task message (it names no task)")
        message.reject_log_error(log, self.connection_errors)

    def on_unknown_task(self, body: Any, message: Message, exc: Exception) -> None:
        self._set_aside(message, f"not a task of this service: {exc}")
        message.reject_log_error(log, self.connection_errors)

    def on_invalid_task(self, body: Any, message: Message, exc: Exception) -> None:
        self._set_aside(message, f"not a valid task message: {exc}")
        message.reject_log_error(log, self.connection_errors)

    @staticmethod
    def _set_aside(message: Message, reason: str) -> None:
        reason = reason.splitlines()[0][:500] if reason else "unreadable"
        source = str((message.delivery_info or {}).get("routing_key") or "celery")
        log.warning("%s: a message set aside: %s", source, reason)
        body = message.body
        shown = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        set_aside(Runtime.current(), shown, reason, source, said=True)
