"""Hedging stragglers: a task far slower than its peers is published once more, and whichever
copy finishes first wins (the stages write the same bytes whoever runs them; the records count
the task once).

- On the rebase chain's critical path first: a stage-4 task whose chain is waiting for it (the
  link before it is final) is hedged as soon as it runs `SLOWDOWN` times longer than the
  median of its stage's finished tasks.
- Any other task once `QUANTILE` of its stage is done, on the same rule.

A task is hedged at most once (claimed atomically in the records, so of several processes
running the hedger only one publishes). The rebaser processes run it every `INTERVAL`.
"""

from __future__ import annotations

import logging
import time

from shared.pipeline.graph import TaskId

from .adapter import publish
from .runtime import Runtime

__all__ = ["Hedger"]

log = logging.getLogger("excamera.hedger")

INTERVAL = 2.0
QUANTILE = 0.9
SLOWDOWN = 3.0
MIN_SECONDS = 2.0  # never hedge a task younger than this
MIN_PEERS = 3  # finished tasks of its stage needed for a median
HEDGED_STAGES = ("first", "encode", "state", "measure")


class Hedger:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._next = 0.0
        self.hedged: list[tuple[str, TaskId]] = []

    def tick(self) -> None:
        """Hedge what needs it, at most every INTERVAL seconds."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + INTERVAL
        records = self.runtime.records
        for job in records.running_jobs():
            self._hedge_job(job)

    def _hedge_job(self, job: str) -> None:
        records = self.runtime.records
        candidates = records.stragglers(job, HEDGED_STAGES, slowdown=SLOWDOWN,
                                        min_seconds=MIN_SECONDS, min_peers=MIN_PEERS)
        progress = records.progress(job)
        chosen = []
        for task, waiting_chain in candidates:
            stage = progress.get(task.stage, {})
            most_done = stage.get("done", 0) >= QUANTILE * stage.get("total", 1)
            if waiting_chain or most_done:
                chosen.append(task)
        for task in records.claim_hedges(job, chosen):
            log.warning("%s: hedging %s (far slower than its peers)", job, task)
            self.hedged.append((job, task))
            publish(self.runtime, job, [task])
