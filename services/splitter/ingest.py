"""The ingest queue: plain JSON jobs (`messages.IngestMessage`), from upstream systems and from
the API alike, since neither is a Celery client.

Accepting a message makes (or finds: the client's id makes a post idempotent) the job's record,
stores what its workers need to know, and publishes its split. A message that is not valid,
or names an input or output the operator does not allow, goes to the ingest dead-letter queue
with its reason; nothing else is held up by it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from shared.pipeline.graph import TaskId
from shared.pipeline.messages import (
    INGEST_OWNER,
    IngestMessage,
    MessageError,
    TaskMessage,
    job_id_for,
    load_json,
    parse_ingest,
)

from ..adapter import dead_letter, fail_job
from ..errors import InputRejected, TransientError
from ..runtime import JobFacts, Runtime, job_key

__all__ = ["accept", "accept_body", "set_aside_ingest"]

log = logging.getLogger("excamera.ingest")


def accept_body(body: Any, runtime: Runtime, *, redelivered: bool = False) -> str | None:
    """Handle one ingest message as received (bytes, text or decoded JSON): the job's id, or
    None when the message was set aside. `redelivered`: the broker delivered it before."""
    document: Any = None
    try:
        document = load_json(body, "ingest message") if isinstance(body, (bytes, str)) else body
        message = parse_ingest(document, runtime.config.request_defaults())
        try:
            runtime.policy.check_input(message.request.input, runtime.store)
        except TransientError as exc:  # a name lookup failing for now: the split, which
            # checks the input again as it reads it, retries it a bounded number of times
            log.info("ingest: %s; the split checks it again", exc)
        if message.output is not None:
            runtime.policy.check_output(message.output)
    except (MessageError, InputRejected) as exc:
        set_aside_ingest(runtime, body, str(exc))
        _fail_its_job(runtime, document, str(exc))
        return None
    return accept(message, runtime, redelivered=redelivered)


def _fail_its_job(runtime: Runtime, document: Any, reason: str) -> None:
    """A message set aside whose job was recorded already, by the API before it posted this
    very request (the API's and the splitter's policies differ, say): fail that job with the
    reason, or it stays queued for ever. A job made by another message is left alone."""
    if not isinstance(document, dict) or not isinstance(document.get("id"), str):
        return
    owner = document.get("owner")
    try:
        job = job_id_for(owner if isinstance(owner, str) else None, document["id"])
    except UnicodeEncodeError:  # a lone surrogate (JSON allows "\ud800"): no job has it
        return
    record = runtime.records.get_job(job)
    request = {k: v for k, v in document.items() if k not in ("version", "id", "owner", "output")}
    if record is None or record.state != "queued" or record.request != request:
        return
    fail_job(runtime, job, f"ingest: {reason}")


def set_aside_ingest(runtime: Runtime, body: Any, reason: str) -> None:
    """Publish an ingest message to the ingest dead-letter queue with its reason (a broker
    that is down raises TransientError: the caller puts the message back)."""
    shown = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    log.warning("ingest message set aside: %s", reason)
    runtime.dispatcher.publish_dead(dead_letter(shown, reason, runtime.topology.ingest),
                                    runtime.topology.ingest_dead)


def warm_encoders(runtime: Runtime) -> None:
    """Start the encoder's Lambda environments now, before the split ends (in the background:
    accepting the job does not wait for it)."""
    invoker = runtime.dispatcher.invoker
    count = runtime.config.warm_environments
    if invoker is not None and count > 0:
        threading.Thread(target=invoker.warm, args=(count,), daemon=True,
                         name="warm-encoders").start()


def accept(message: IngestMessage, runtime: Runtime, *, redelivered: bool = False) -> str:
    """Make or find the job, store its facts, publish its split: once, by whoever claims it
    (a repeated post finds it claimed), or again when this message was delivered before and
    the split has not started (whoever claimed it may have died before publishing)."""
    owner = message.owner or INGEST_OWNER
    job = job_id_for(owner, message.id)
    record, _ = runtime.records.create_job(
        job, owner, message.id, message.request.to_json(), message.output, posted=True
    )
    if record.state != "queued":
        return job
    split = TaskId("split", 0)
    claimed = runtime.records.claim(job, [split])
    if not claimed and redelivered:
        claimed = runtime.records.unstarted(job, [split])
    if claimed:
        warm_encoders(runtime)
        facts = JobFacts(message.request, message.output)
        runtime.store.put(job_key(job), facts.to_json())
        runtime.dispatcher.publish_task(TaskMessage(job, "split", 0), ordering_key=job,
                                        position=0)
    return job
