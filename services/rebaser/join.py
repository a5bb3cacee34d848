"""The join step: every chunk's final frames into the output (`stages.join`, the embedded
runner's own), written where the job asked (an allowed `file://` URL) or into the store, and
the job recorded done with its figures. Intermediates are deleted after the retention time
(at once when it is zero); the output is kept."""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from urllib.parse import unquote, urlsplit

from shared.pipeline import stages
from shared.pipeline.messages import TaskMessage

from ..adapter import purge_job
from ..errors import InputRejected
from ..runtime import Runtime

__all__ = ["join_step", "output_key"]


def output_key(job: str, format: str) -> str:
    return f"outputs/{job}/output.{format}"


def join_step(runtime: Runtime, message: TaskMessage) -> None:
    job = message.job
    plan = runtime.plan(job)
    facts = runtime.facts(job)
    form = facts.request.format
    quality = stages.stored_output_quality(runtime.store, plan)
    with tempfile.TemporaryDirectory(prefix="excamera-join-") as directory:
        local = Path(directory) / f"output.{form}"
        joined = stages.join(runtime.store, job, plan, local)
        if facts.output is None:
            location = output_key(job, form)
            runtime.store.put_file(location, local)
        else:
            location = _write_to_url(runtime, facts.output, local)
    result = {**asdict(quality), "bytes": joined.file_bytes, "packets": joined.packets,
              "format": form}
    retention = runtime.config.retention_seconds
    if runtime.records.finish_job(job, location, result, retention) and retention == 0:
        purge_job(runtime, job)


def _write_to_url(runtime: Runtime, url: str, local: Path) -> str:
    """Copy the output to `url` (checked again: the policy may have changed since the job was
    accepted), atomically; returns the URL."""
    normal = runtime.policy.check_output(url)
    parts = urlsplit(normal)
    if parts.scheme != "file":
        raise InputRejected(f"cannot write outputs to {parts.scheme}:// URLs here")
    target = Path(unquote(parts.path))
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with open(local, "rb") as source, open(temp, "wb") as sink:
            while block := source.read(1 << 20):
                sink.write(block)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return url
