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
        final_links = {t["index"] for t in records.tasks(job, stage="rebase", limit=1 << 30)
                       if t["state"] == "done"}
        chosen = []
        for task in candidates:
            stage = progress.get(task.stage, {})
            left = stage.get("total", 1) - stage.get("done", 0)
            few_left = left <= max(1.0, (1 - QUANTILE) * stage.get("total", 1))
            if few_left or self._chain_waits(job, task, final_links):
                chosen.append(task)
        for task in records.claim_hedges(job, chosen):
            log.warning("%s: hedging %s (far slower than its peers)", job, task)
            self.hedged.append((job, task))
            publish(self.runtime, job, [task])

    def _chain_waits(self, job: str, task: TaskId, final_links: set[int]) -> bool:
        """Whether a link the chain has reached (its link before is final, or it is among
        its group's first two) needs `task`, directly or through the tasks it feeds."""
        plan = self.runtime.plan(job)
        frontier, seen = [task], {task}
        while frontier:
            for needing in graph.dependents(plan, frontier.pop()):
                if needing in seen:
                    continue
                seen.add(needing)
                if needing.stage == "rebase":
                    if plan.position(needing.index) <= 1 or needing.index - 1 in final_links:
                        return True
                elif needing.stage in HEDGED_STAGES:  # a state or stage-4 task on the way
                    frontier.append(needing)
        return False
