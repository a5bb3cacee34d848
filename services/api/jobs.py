"""Jobs as the API sees them: submitting one (record, then ingest message), and the documents
its status endpoints answer with. Everything here is blocking (database, broker, store) and runs
on the API's executors; the handlers in `routes` only parse HTTP and await these.

Submitting: the job's id is derived from its owner and client id (the Idempotency-Key, else a
random one), so the record's unique (owner, client id) makes a repeated submission find the
job made the first time. The request is compared with that job's: the same key with a
different request is a conflict. The record exists before the ingest message is published, so
a status request right after the 202 always finds the job. The record is the job: if the
broker cannot take the message (it is down), the answer is still 202, the job stays queued,
and the API's janitor posts the message once the broker is back (`post_unposted`: the record
is an outbox). Posts are idempotent, so one that did arrive unconfirmed splits the job once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.pipeline.messages import (
    IngestMessage,
    JobRequest,
    MessageError,
    job_id_for,
    parse_job_request,
)

from ..adapter import fail_job
from ..errors import TransientError
from ..estimate import job_estimate
from ..records import JobRecord
from ..runtime import Runtime
from .middleware import ApiError

__all__ = ["Submitted", "job_document", "job_summary", "post_unposted", "submit",
           "upload_key"]

log = logging.getLogger("excamera.api")

OUTPUT_TYPES = {"webm": "video/webm", "ivf": "video/x-ivf"}


def upload_key(job: str, sha256: str) -> str:
    """Where an upload is stored: under the job (deleted with its intermediates), named by its
    content, so two racing uploads under one Idempotency-Key never overwrite each other."""
    return f"uploads/{job}/input-{sha256[:32]}"


@dataclass(frozen=True)
class Submitted:
    id: str
    state: str
    created: bool


def submit(runtime: Runtime, owner: str, client_id: str, request: JobRequest, *,
           post: bool = True) -> Submitted:
    """Make the job (or find the one this owner made with this client id) and, when new,
    publish it to the ingest queue (unless not `post`: the broker is known to be down)."""
    job = job_id_for(owner, client_id)
    document = request.to_json()
    record, created = runtime.records.create_job(job, owner, client_id, document, None)
    if not created:
        check_same_request(record, document)
        return Submitted(job, record.state, False)
    if post:
        _post(runtime, job, IngestMessage(client_id, request, owner=owner))
    return Submitted(job, record.state, True)


def _post(runtime: Runtime, job: str, message: IngestMessage) -> bool:
    """Post the job's ingest message and note that it went; False if the broker could not
    take it (the janitor posts it later)."""
    try:
        runtime.dispatcher.publish_ingest(message, brief=True)
    except TransientError as exc:
        log.warning("job %s is recorded but not yet posted (%s): the janitor will post it",
                    job, exc)
        return False
    runtime.records.mark_posted(job)
    return True


def post_unposted(runtime: Runtime, older_than_seconds: float, limit: int = 50) -> int:
    """Post the ingest messages of queued jobs the broker did not take when they were
    submitted; how many went. Stops at the first the broker refuses (it is still down)."""
    posted = 0
    for record in runtime.records.unposted_jobs(older_than_seconds, limit):
        try:
            request = parse_job_request(record.request, runtime.config.request_defaults())
        except MessageError as exc:  # a record this version cannot read: not the others'
            fail_job(runtime, record.id, f"its request cannot be posted: {exc}")
            continue
        if not _post(runtime, record.id, IngestMessage(record.client_id, request,
                                                       output=record.output,
                                                       owner=record.owner)):
            break
        posted += 1
    return posted


def repeat(runtime: Runtime, record: JobRecord, request: JobRequest, *,
           post: bool = True) -> Submitted:
    """The answer to a repeat of the request that made `record`. While the job is queued its
    ingest message is posted again, in case the first post went astray: posts are
    idempotent, since the ingest makes or finds the job and claims its split once."""
    check_same_request(record, request.to_json())
    if record.state == "queued" and post:
        _post(runtime, record.id, IngestMessage(record.client_id, request, output=record.output,
                                                owner=record.owner))
    return Submitted(record.id, record.state, False)


def check_same_request(record: JobRecord, document: dict[str, Any]) -> None:
    if record.request != document:
        raise ApiError(409, f"Idempotency-Key {record.client_id!r} was used for job "
                            f"{record.id} with a different request",
                       code="idempotency_conflict")


# --------------------------------------------------------------------------- documents


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def shown_request(runtime: Runtime, record: JobRecord) -> dict[str, Any]:
    """The job's request as its owner sees it: an upload's input is `upload:` and the first
    32 hex digits of its SHA-256, not where the service keeps it."""
    key = runtime.policy.upload_key(record.request.get("input", ""), runtime.store)
    if key is None:
        return record.request
    return {**record.request, "input": "upload:" + key.rsplit("/input-", 1)[-1]}


def job_summary(runtime: Runtime, record: JobRecord) -> dict[str, Any]:
    """A job in a listing: what it is and how it stands, without the per-stage detail."""
    return {
        "id": record.id,
        "state": record.state,
        "request": shown_request(runtime, record),
        "error": record.error,
        "output": record.output_link,
        "created_at": _time(record.created_at),
        "started_at": _time(record.started_at),
        "finished_at": _time(record.finished_at),
    }


def percent_done(state: str, progress: dict[str, dict[str, Any]]) -> float:
    """How far a job is, 0 to 100: its tasks done of all it has (the split records the rest
    with its plan, at once), and 100 only once the job is done."""
    if state == "done":
        return 100.0
    total = sum(stage["total"] for stage in progress.values())
    done = sum(stage["done"] for stage in progress.values())
    return min(99.9, round(100.0 * done / total, 1)) if total else 0.0


def job_document(runtime: Runtime, record: JobRecord) -> dict[str, Any]:
    """A job's full status: per-stage progress and timings, errors, overdue tasks, and its AWS
    cost so far and projected (from the same records)."""
    records = runtime.records
    progress = records.progress(record.id)
    return {
        **job_summary(runtime, record),
        "client_id": record.client_id,
        "percent": percent_done(record.state, progress),
        "progress": progress,
        "errors": records.errors(record.id),
        "overdue": records.overdue(record.id),
        "plan": record.plan,
        "result": record.result,
        "cost": job_estimate(records, record.id, runtime.config),
        "expires_at": _time(record.expires_at),
        "cleaned_at": _time(record.cleaned_at),
    }
