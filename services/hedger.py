"""Hedging stragglers: a task far slower than its peers is published once more, and whichever
copy finishes first wins (the stages write the same bytes whoever runs them; the records count
the task once).

- On the rebase chain's critical path first: a task the chain is waiting for (one a link
  needs, directly or through other tasks, whose link before it is final, or that a group's
  first links need) is hedged as soon as it runs `SLOWDOWN` times longer than the median of
  its stage's finished tasks.
- Any other task once no more of its stage are left than `1 - QUANTILE` of it, or one, on
  the same rule (so a stage of a few tasks is hedged too).

A task is hedged at most once (claimed atomically in the records, so of several processes
running the hedger only one publishes). The rebaser processes run it every `INTERVAL`.
"""

from __future__ import annotations

import logging
import time

from shared.pipeline import graph
from shared.pipeline.graph import TaskId
from shared.pipeline.stages import ChunkPlan

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
        if not candidates:
            return
        progress = records.progress(job)
        chosen = []
        for task in candidates:
            stage = progress.get(task.stage, {})
            left = stage.get("total", 1) - stage.get("done", 0)
            if left <= max(1.0, (1 - QUANTILE) * stage.get("total", 1)) or self._chain_waits(
                    job, task):
                chosen.append(task)
        for task in records.claim_hedges(job, chosen):
            log.warning("%s: hedging %s (far slower than its peers)", job, task)
            self.hedged.append((job, task))
            publish(self.runtime, job, [task])

    def _chain_waits(self, job: str, task: TaskId) -> bool:
        """Whether a link the chain has reached (among its group's first two, or its link
        before is final) needs `task`, directly or through the tasks it feeds."""
        plan = self.runtime.plan(job)
        links = _links_needing(plan, task)
        if any(plan.position(link.index) <= 1 for link in links):
            return True
        before = [TaskId("rebase", link.index - 1) for link in links]
        return bool(before) and bool(self.runtime.records.finished(job, before))


def _links_needing(plan: ChunkPlan, task: TaskId) -> list[TaskId]:
    """The rebase links that need `task`'s output, directly or through other tasks (a
    state or stage-4 task: a few, in its chunk and the next)."""
    frontier, seen, links = [task], {task}, []
    while frontier:
        for needing in graph.dependents(plan, frontier.pop()):
            if needing in seen:
                continue
            seen.add(needing)
            if needing.stage == "rebase":
                links.append(needing)
            elif needing.stage in HEDGED_STAGES:
                frontier.append(needing)
    return links
