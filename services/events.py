"""Announcing a job's end on the events queue (`excamera.events`), for the upstream systems
that post jobs to the ingest queue and would otherwise have to poll.

Whoever ends a job (the join, a failure, a cancel) announces it at once, then marks it
announced in its record. If the broker cannot be reached then, or the process dies in
between, the record stays unannounced, and a sweep announces it after a grace period
(`announce_missed`: every rebaser process, and the API's janitor). Every end is announced at
least once, and, but for a process dying between posting and marking, once; a consumer keeps
the first event of each job.
"""

from __future__ import annotations

import logging
import time

from shared.pipeline.messages import JobEvent

from . import metrics
from .errors import TransientError
from .records import JobRecord
from .runtime import Runtime

__all__ = ["Sweeper", "announce_end", "announce_missed", "event_of"]

log = logging.getLogger("excamera.events")

ANNOUNCE_GRACE_SECONDS = 30.0  # how long an end may wait for its own announcement
ANNOUNCE_BATCH = 50
SWEEP_SECONDS = 10.0  # how often a rebaser process sweeps
CLAIM_SECONDS = 60.0  # a sweeper's claim on the ends it posts (one that dies lets them go)
MAX_BATCHES = 20


def event_of(record: JobRecord) -> JobEvent:
    assert record.terminal and record.finished_at is not None, record.state
    return JobEvent(
        job=record.id, client_id=record.client_id, owner=record.owner, state=record.state,
        output=record.output_link, result=record.result, error=record.error,
        finished_at=record.finished_at.isoformat(),
    )


def announce_end(runtime: Runtime, job: str, when: str = "at_end") -> bool:
    """Post the job's end, unless it is announced already; False if the broker could not
    take it (a sweep tries again later). `when`: the metric's label."""
    record = runtime.records.get_job(job)
    if record is None or not record.terminal or record.announced_at is not None:
        return True
    try:
        runtime.dispatcher.publish_event(event_of(record))
    except TransientError as exc:
        log.warning("%s ended (%s), but announcing it failed: %s; a sweep will", job,
                    record.state, exc)
        return False
    runtime.records.mark_announced(job)
    metrics.JOB_EVENTS.labels(record.state, when).inc()
    return True


def announce_missed(runtime: Runtime, grace_seconds: float = ANNOUNCE_GRACE_SECONDS) -> int:
    """Announce the ends that were not announced within `grace_seconds`; how many."""
    announced = 0
    for _ in range(MAX_BATCHES):  # the rest at the next round
        jobs = runtime.records.claim_ends_to_announce(grace_seconds, CLAIM_SECONDS,
                                                      ANNOUNCE_BATCH)
        for job in jobs:
            if not announce_end(runtime, job, "late"):
                return announced  # the broker is down: later
            announced += 1
        if len(jobs) < ANNOUNCE_BATCH:
            break
    return announced


class Sweeper:
    """`announce_missed` every SWEEP_SECONDS, from a loop that ticks often (a rebaser's: every
    deployment runs one, with or without the API, whose janitor sweeps too). Sweepers claim
    what they post, so several at once post each end once."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._next = 0.0

    def tick(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + SWEEP_SECONDS
        try:
            announce_missed(self.runtime)
        except TransientError as exc:  # the database is out of reach: the next sweep
            log.warning("announcing missed job ends: %s", exc)
