"""The split step: fetch the job's input (under the operator's policy), cut it into chunks
(`stages.split`, the embedded runner's own), and record the plan and every task it implies.
The adapter then publishes the tasks that need nothing but the split: every chunk's libvpx
encode, chain heads first."""

from __future__ import annotations

from dataclasses import asdict

from shared.pipeline import graph, stages
from shared.pipeline.messages import TaskMessage

from ..errors import InputRejected
from ..inputs import fetch_input, input_name
from ..runtime import Runtime

__all__ = ["split_step"]


def split_step(runtime: Runtime, message: TaskMessage) -> stages.ChunkPlan:
    job = message.job
    if not runtime.records.start_job(job):
        raise InputRejected("the job ended before its split")
    request = runtime.facts(job).request
    with fetch_input(request.input, runtime.policy, runtime.store,
                     runtime.config.max_input_bytes) as path:
        plan = stages.split(runtime.store, job, path, request.frames_per_chunk,
                            request.chunks_per_group, scene_cuts=request.scene_cuts,
                            start_frames=request.start_frames,
                            input_name=input_name(request.input, runtime.policy, runtime.store))
    runtime.records.set_plan(job, plan_summary(plan), graph.stage_sizes(plan), graph.tasks(plan))
    return plan


def plan_summary(plan: stages.ChunkPlan) -> dict[str, object]:
    """What a job's status shows of its plan (not the per-chunk frame counts)."""
    summary = asdict(plan)
    del summary["chunk_frames"], summary["job"]
    summary.update(frames=plan.frame_count, chunks=plan.chunk_count, groups=plan.group_count)
    return summary
