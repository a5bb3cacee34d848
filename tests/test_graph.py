"""The task graph (shared/pipeline/graph.py): the one statement of which task needs which,
used by the embedded runner and the services alike."""

from __future__ import annotations

from collections import defaultdict

import pytest

from shared.pipeline import graph
from shared.pipeline.graph import TaskId
from shared.pipeline.stages import ChunkPlan


def make_plan(chunks: int, x: int, n: int = 6) -> ChunkPlan:
    return ChunkPlan(
        job="job", source="in.y4m", width=64, height=48, fps=(25, 1), frames_per_chunk=n,
        chunks_per_group=x, chunk_frames=(n,) * chunks,
    )


PLANS = [(1, 1), (5, 1), (5, 2), (7, 3), (16, 16), (17, 16), (40, 6)]


@pytest.mark.parametrize(("chunks", "x"), PLANS)
@pytest.mark.parametrize("verify", [True, False])
def test_dependents_invert_dependencies(chunks: int, x: int, verify: bool) -> None:
    """`dependents` (derived from a neighbourhood) is exactly the inverse of `dependencies`."""
    plan = make_plan(chunks, x)
    everything = list(graph.tasks(plan, verify=verify))
    inverse: dict[TaskId, set[TaskId]] = defaultdict(set)
    for task in everything:
        for dep in graph.dependencies(plan, task, verify=verify):
            assert dep in everything, f"{task} depends on {dep}, which is not a task"
            inverse[dep].add(task)
    for task in everything:
        assert set(graph.dependents(plan, task, verify=verify)) == inverse[task], task


@pytest.mark.parametrize(("chunks", "x"), PLANS)
def test_every_task_is_reachable_and_stage_sizes_match(chunks: int, x: int) -> None:
    """A topological order exists (no cycle, nothing unreachable), ending in the join, and
    `stage_size` counts what `tasks` lists."""
    plan = make_plan(chunks, x)
    everything = list(graph.tasks(plan))
    assert len(set(everything)) == len(everything)
    done: set[TaskId] = set()
    while len(done) < len(everything):
        ready = [t for t in everything if t not in done
                 and all(d in done for d in graph.dependencies(plan, t))]
        assert ready, "a cycle"
        done.update(ready)
    assert everything[-1] == TaskId("join", 0)
    sizes = graph.stage_sizes(plan)
    assert sizes["encode"] == sizes["rebase"] == chunks and sizes["join"] == 1
    assert sizes.get("first", 0) == chunks - plan.group_count
    assert sizes.get("state", 0) == chunks - plan.group_count
    assert sizes["measure"] == plan.group_count


def test_the_rules_of_excamera() -> None:
    """The dependencies DESIGN.md gives, spelled out for one plan: groups [0..3] [4..6]."""
    plan = make_plan(7, 4)
    deps = lambda stage, i: set(graph.dependencies(plan, TaskId(stage, i)))  # noqa: E731
    assert deps("encode", 5) == set()
    assert deps("state", 2) == {TaskId("encode", 2)}
    assert TaskId("state", 3) not in set(graph.tasks(plan))  # chunk 4 starts a new group
    assert TaskId("first", 4) not in set(graph.tasks(plan))  # it keeps its key frame
    assert deps("first", 5) == {TaskId("encode", 5), TaskId("state", 4)}
    assert deps("rebase", 0) == {TaskId("encode", 0), TaskId("state", 0)}
    assert deps("rebase", 6) == {TaskId("first", 6), TaskId("rebase", 5)}
    assert deps("rebase", 5) == {TaskId("first", 5)}
    assert deps("rebase", 4) == {TaskId("encode", 4), TaskId("state", 4)}
    assert deps("measure", 1) == {TaskId("rebase", i) for i in (4, 5, 6)}
    assert deps("join", 0) == {TaskId("measure", 0), TaskId("measure", 1)}
    assert graph.lane(plan, TaskId("rebase", 5)) == 1
    assert graph.lane(plan, TaskId("first", 5)) is None


def test_urgency_puts_the_chain_first_and_heads_before_tails() -> None:
    plan = make_plan(32, 16)
    encodes = sorted(graph.tasks(plan), key=lambda t: graph.urgency(plan, t))
    encodes = [t.index for t in encodes if t.stage == "encode"]
    # Chunk 0 of every group, then chunk 1 of every group, ...
    assert encodes[:4] == [0, 16, 1, 17]
    assert graph.urgency(plan, TaskId("rebase", 31)) < graph.urgency(plan, TaskId("first", 1))
    assert graph.urgency(plan, TaskId("rebase", 15)) < graph.urgency(plan, TaskId("rebase", 16))
