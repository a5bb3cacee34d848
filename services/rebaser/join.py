"""The join step: every chunk's final frames into the output (`stages.join`, the embedded
runner's own), written where the job asked (an allowed `file://` or `s3://` URL) or into the
store. The adapter records the job done with its figures, in the transaction that records the
join (`JobOutput`); intermediates are deleted after the retention time (at once when it is
zero), and the output is kept."""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path

from shared.pipeline import stages
from shared.pipeline.messages import TaskMessage

from ..inputs import write_output
from ..records import JobOutput
from ..runtime import Runtime

__all__ = ["join_step", "output_key"]


def output_key(job: str, format: str) -> str:
    return f"outputs/{job}/output.{format}"


def join_step(runtime: Runtime, message: TaskMessage) -> JobOutput | None:
    """The job's output, written; None, and nothing written, if the job was cancelled while
    its chunks were being joined (the caller's URL is left as it was), or while the output
    was stored. (A caller's URL being written when the cancel comes keeps what it got.)"""
    job = message.job
    plan = runtime.plan(job)
    facts = runtime.facts(job)
    form = facts.request.format
    quality = stages.stored_output_quality(runtime.store, plan)
    with tempfile.TemporaryDirectory(prefix="excamera-join-") as directory:
        local = Path(directory) / f"output.{form}"
        joined = stages.join(runtime.store, job, plan, local)
        if _ended(runtime, job):
            return None
        if facts.output is None:
            location = output_key(job, form)
            runtime.store.put_file(location, local)
            if _ended(runtime, job):  # cancelled while it was stored: nothing else deletes it
                runtime.store.delete_prefix(location)
                return None
        else:
            write_output(facts.output, runtime.policy, local)
            location = facts.output
    result = {**asdict(quality), "bytes": joined.file_bytes, "packets": joined.packets,
              "format": form}
    return JobOutput(location, result)  # the adapter records it with the task, at once


def _ended(runtime: Runtime, job: str) -> bool:
    record = runtime.records.get_job(job)
    return record is None or record.terminal
