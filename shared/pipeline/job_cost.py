"""What a job would cost on AWS, from what its tasks measurably did: each stage's task count,
time and store requests (measured by `excamera encode`, or recorded by the services), priced
with the constants of `costs.py`.

Where each stage runs in the deployment (deploy/excamera.yaml): phase 1, stage 4, exit
states and group checks on Lambda (the encoder and decoder functions, one invocation per task,
billed for its duration at the function's memory); the split, the rebase chain and the join on
Fargate (billed for the time they work, at 1 vCPU and 2 GB). Every task is one SQS message:
sent, received and deleted (the rebase tasks on the FIFO queue, whose consumer also extends
its visibility once). Store requests are billed as S3's: writes (PUT, COPY, LIST) and reads
(GET, HEAD).

A time measured on one core here stands for a Lambda's time at 1,769 MB (one vCPU's worth);
more memory buys no speed for our single-threaded tasks, only cost, so the default memory is
that. Cold starts (the init phase, billed since 2025-08) are one per execution environment,
not per task, and are left out; bench/scale.py models them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .costs import Usage, estimate, lambda_gb_seconds

__all__ = ["LAMBDA_STAGES", "StageUse", "job_estimate", "project", "usage_of"]

LAMBDA_STAGES = ("encode", "first", "state", "measure")
DECODER_STAGES = ("state", "measure")  # the decoder function's; the rest are the encoder's
FARGATE_STAGES = ("split", "rebase", "join")
DEFAULT_LAMBDA_MEMORY_MB = 1769
FARGATE_GB = 2.0
SQS_REQUESTS_PER_TASK = 3  # send, receive, delete
FIFO_REQUESTS_PER_TASK = 4  # and one visibility extension
WRITES = ("put", "copy", "list")
READS = ("get", "head")


@dataclass
class StageUse:
    """One stage's measured work: tasks done, their summed seconds, store requests."""

    tasks: int = 0
    seconds: float = 0.0
    requests: dict[str, int] = field(default_factory=dict)

    @property
    def writes(self) -> int:
        return sum(self.requests.get(op, 0) for op in WRITES)

    @property
    def reads(self) -> int:
        return sum(self.requests.get(op, 0) for op in READS)


def usage_of(stages: dict[str, StageUse], *, lambda_memory_mb: float = DEFAULT_LAMBDA_MEMORY_MB,
             decoder_memory_mb: float | None = None, arm: bool = False) -> Usage:
    """The AWS usage of a job whose stages (by graph stage name) did this much; the decoder
    function's stages at `decoder_memory_mb` when it differs from the encoder's."""
    usage = Usage()
    for stage, use in stages.items():
        usage.s3_puts += use.writes
        usage.s3_gets += use.reads
        if stage == "rebase":
            usage.sqs_fifo_requests += FIFO_REQUESTS_PER_TASK * use.tasks
        else:
            usage.sqs_requests += SQS_REQUESTS_PER_TASK * use.tasks
        if stage in LAMBDA_STAGES:
            memory = (decoder_memory_mb if stage in DECODER_STAGES and decoder_memory_mb
                      else lambda_memory_mb)
            gb_s = lambda_gb_seconds(memory, use.seconds)
            if arm:
                usage.lambda_gb_s_arm += gb_s
            else:
                usage.lambda_gb_s_x86 += gb_s
            usage.lambda_requests += use.tasks
        else:
            usage.fargate_vcpu_hours += use.seconds / 3600
            usage.fargate_gb_hours += use.seconds / 3600 * FARGATE_GB
    return usage


def project(done: dict[str, StageUse], totals: dict[str, int]) -> dict[str, StageUse]:
    """The whole job's use, extrapolated from the tasks done so far of each stage (a stage
    not begun counts as nothing yet: early in a job the projection is low)."""
    projected = {}
    for stage, use in done.items():
        total = totals.get(stage, use.tasks)
        if use.tasks == 0:
            projected[stage] = StageUse()
            continue
        scale = total / use.tasks
        projected[stage] = StageUse(total, use.seconds * scale,
                                    {op: round(n * scale) for op, n in use.requests.items()})
    return projected


def job_estimate(stages: dict[str, StageUse], *,
                 lambda_memory_mb: float = DEFAULT_LAMBDA_MEMORY_MB,
                 decoder_memory_mb: float | None = None) -> dict[str, float]:
    """Itemized dollars (lambda_compute, lambda_requests, s3_requests, sqs_requests, fargate,
    total), to the micro-dollar."""
    items = estimate(usage_of(stages, lambda_memory_mb=lambda_memory_mb,
                              decoder_memory_mb=decoder_memory_mb))
    return {name: round(value, 6) for name, value in items.items()}
