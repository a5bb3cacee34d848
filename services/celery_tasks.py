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
import random
import time
from typing import Any

from celery import Celery, bootsteps
from celery.exceptions import Reject
from kombu import Consumer, Message, Queue

from shared.pipeline.messages import MessageError, parse_task

from .adapter import Outcome, fail, handle
from .broker import CELERY_TASKS
from .errors import TransientError
from .runtime import Runtime
from .splitter.ingest import accept_body
from .splitter.split import split_step

__all__ = ["IngestConsumer", "backoff", "register"]

log = logging.getLogger("excamera.services")

STEPS = {"splitter": {"split": split_step}}
MAX_BACKOFF = 60.0


def backoff(retries: int) -> float:
    """Seconds before retry number `retries + 1`: doubling from 1 s up to a minute, each
    scaled by a random factor in [0.5, 1] so that many workers hit by one outage do not all
    come back at once."""
    return min(MAX_BACKOFF, 2.0 ** retries) * random.uniform(0.5, 1.0)


def register(app: Celery, service: str) -> Any:
    """Register the service's task on `app`; returns it."""
    name = CELERY_TASKS[service]

    @app.task(name=name, bind=True, acks_late=True, ignore_result=True,
              reject_on_worker_lost=True)
    def run(self: Any, document: Any) -> str:
        runtime = Runtime.current()
        source = runtime.topology.queue_of_service(service)
        try:
            return handle(document, runtime, service=service, source=source,
                          steps=STEPS.get(service)).value
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
        try:
            accept_body(message.body, Runtime.current(),
                        redelivered=bool(message.delivery_info.get("redelivered")))
        except TransientError as exc:
            log.warning("ingest: %s; the message goes back to the queue", exc)
            time.sleep(1.0)  # not a tight loop while the records or the store are down
            message.requeue()
            return
        message.ack()
