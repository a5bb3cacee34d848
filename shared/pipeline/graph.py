"""The task graph of ExCamera[n,x]: which stage of which chunk depends on which, written once.

The embedded runner (`runner.py`) schedules it on a local process pool; the services publish
each task to a queue once its dependencies are done. Both take the rules from here and run a
task through `run_task`, so neither holds a copy of them.

For chunk i (position p = its place in its group, group g):

    encode[i]                                   phase 1: libvpx encodes the chunk on its own
    state[i]    <- encode[i]                    its exit state, if chunk i+1 is in its group
    first[i]    <- encode[i], state[i-1]        stage 4, for p >= 1
    rebase[i]   <- encode[i] (+ state[i])       p = 0: libvpx's chunk is final as it is
                <- first[i]                     p = 1: stage 4 ran against the exact state
                <- first[i], rebase[i-1]        p >= 2: stage 5, serial within the group
    measure[g]  <- rebase[every chunk of g]     decode the group, check it, SSIM/PSNR
    join        <- measure[every group]         the output (without verifying:
                                                <- rebase[every chunk])

A task's index is its chunk's, but measure's is its group's and join's is 0. Every task's
output is stored under keys derived from the job and the chunk (stages.py), and every stage
skips work whose output exists, so running a task twice is harmless.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from . import stages
from .stages import ChunkPlan
from .store import Store
from .vpx import EncodeSettings

__all__ = [
    "STAGES",
    "TaskId",
    "dependencies",
    "dependents",
    "is_task",
    "lane",
    "run_task",
    "stage_sizes",
    "tasks",
    "urgency",
]


class StageInfo(NamedTuple):
    label: str  # shown to users (progress bars, summaries, job status)
    urgency: int  # lower runs first when several tasks are ready
    service: str  # the service that runs it (services/<name>/)


# In pipeline order. The serial rebase chain is the critical path, so it goes first; stage 4
# feeds it; exit states feed stage 4; libvpx feeds everything; checking and joining come last.
STAGES: dict[str, StageInfo] = {
    "split": StageInfo("split", 0, "splitter"),
    "encode": StageInfo("libvpx encode", 3, "encoder"),
    "state": StageInfo("exit states", 2, "decoder"),
    "first": StageInfo("encode given state", 1, "encoder"),
    "rebase": StageInfo("rebase (serial)", 0, "rebaser"),
    "measure": StageInfo("verify + quality", 5, "decoder"),
    "join": StageInfo("join", 4, "rebaser"),
}


class TaskId(NamedTuple):
    stage: str
    index: int

    def __str__(self) -> str:
        return f"{self.stage}[{self.index}]"


def tasks(plan: ChunkPlan, *, verify: bool = True) -> Iterator[TaskId]:
    """Every task of stages 2-6 for the plan, chunk by chunk, then the checks and the join."""
    for i in range(plan.chunk_count):
        for stage in ("encode", "state", "first", "rebase"):
            if is_task(plan, TaskId(stage, i)):
                yield TaskId(stage, i)
    for g in range(plan.group_count if verify else 0):
        yield TaskId("measure", g)
    yield TaskId("join", 0)


def is_task(plan: ChunkPlan, task: TaskId, *, verify: bool = True) -> bool:
    """Whether the plan has this task (`tasks` lists exactly these)."""
    stage, i = task
    if stage in ("encode", "rebase"):
        return 0 <= i < plan.chunk_count
    if stage == "state":
        return 0 <= i < plan.chunk_count and plan.has_successor(i)
    if stage == "first":
        return 0 <= i < plan.chunk_count and plan.position(i) >= 1
    if stage == "measure":
        return verify and 0 <= i < plan.group_count
    return stage == "join" and i == 0


def stage_sizes(plan: ChunkPlan, *, verify: bool = True) -> dict[str, int]:
    """How many tasks each stage of the plan has (stages without tasks left out)."""
    sizes: dict[str, int] = {}
    for task in tasks(plan, verify=verify):
        sizes[task.stage] = sizes.get(task.stage, 0) + 1
    return sizes


def dependencies(plan: ChunkPlan, task: TaskId, *, verify: bool = True) -> tuple[TaskId, ...]:
    """The tasks whose outputs `task` reads: it may run once all of them are done."""
    stage, i = task
    if stage == "encode":
        return ()
    if stage == "state":
        return (TaskId("encode", i),)
    if stage == "first":
        return TaskId("encode", i), TaskId("state", i - 1)
    if stage == "rebase":
        position = plan.position(i)
        if position == 0:
            own_state = (TaskId("state", i),) if plan.has_successor(i) else ()
            return (TaskId("encode", i), *own_state)
        if position == 1:
            return (TaskId("first", i),)
        return TaskId("first", i), TaskId("rebase", i - 1)
    if stage == "measure":
        return tuple(TaskId("rebase", c) for c in plan.group_chunks(i))
    if stage == "join":
        if verify:
            return tuple(TaskId("measure", g) for g in range(plan.group_count))
        return tuple(TaskId("rebase", c) for c in range(plan.chunk_count))
    raise ValueError(f"unknown stage {stage!r}")


def dependents(plan: ChunkPlan, task: TaskId, *, verify: bool = True) -> tuple[TaskId, ...]:
    """The tasks that read `task`'s output: the ones to consider once it is done.

    Derived from `dependencies` (never written out a second time): a task's dependents can
    only be tasks of its own chunk or the next, its group's check, or the join.
    """
    return tuple(
        candidate
        for candidate in _neighbours(plan, task, verify=verify)
        if is_task(plan, candidate, verify=verify)
        and task in dependencies(plan, candidate, verify=verify)
    )


def _neighbours(plan: ChunkPlan, task: TaskId, *, verify: bool) -> Iterator[TaskId]:
    if task.stage == "join":
        return
    if task.stage != "measure":
        for chunk in (task.index, task.index + 1):
            if chunk < plan.chunk_count:
                for stage in ("state", "first", "rebase"):
                    yield TaskId(stage, chunk)
        if verify:
            yield TaskId("measure", plan.group_of(task.index))
    yield TaskId("join", 0)


def chunk_of(plan: ChunkPlan, task: TaskId) -> int:
    """The chunk a task is about: for a group's check its first chunk, for the join 0."""
    if task.stage == "measure":
        return plan.group_chunks(task.index)[0]
    return task.index if task.stage != "join" else 0


def urgency(plan: ChunkPlan, task: TaskId) -> tuple[int, int, int]:
    """Sort key among ready tasks, lowest first: deeper stages first, then group heads before
    tails (a chain head gates everything after it), and rebases group by group, so a process
    running chains finishes one before the next and holds one exit state at a time."""
    chunk = chunk_of(plan, task)
    if task.stage == "rebase":
        return (STAGES["rebase"].urgency, plan.group_of(chunk), plan.position(chunk))
    return (STAGES[task.stage].urgency, plan.position(chunk), plan.group_of(chunk))


def lane(plan: ChunkPlan, task: TaskId) -> int | None:
    """The ordering domain of a task: its group for a rebase (whose chain passes exit states
    in memory, so it runs in one process at a time), None for tasks that may run anywhere."""
    return plan.group_of(task.index) if task.stage == "rebase" else None


def run_task(
    store: Store,
    plan: ChunkPlan,
    settings: EncodeSettings,
    task: TaskId,
    output: str | Path | None = None,
) -> Any:
    """Run one task's stage function (the only place that maps tasks to stages); the join
    writes `output`, a local path."""
    stage, i = task
    job = plan.job
    if stage == "encode":
        return stages.encode_chunk_vpx(store, job, i, settings)
    if stage == "state":
        return stages.decode_exit_state(store, job, i)
    if stage == "first":
        return stages.rebase_first(store, job, i)
    if stage == "rebase":
        return stages.rebase_serial(store, job, i)
    if stage == "measure":
        return stages.measure_group(store, job, i)
    if stage == "join":
        if output is None:
            raise ValueError("the join needs an output path")
        return stages.join(store, job, plan, output)
    raise ValueError(f"unknown stage {stage!r}")
