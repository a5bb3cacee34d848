"""The one way a service handles a task message, whichever service and transport it is (a
Celery worker, the rebaser, a Lambda handler):

1. validate the message (a malformed one, or one for a job or task that does not exist, is
   set aside with its reason);
2. skip it if its job has ended (cancelled, failed, done);
3. record the attempt (start, worker; a task delivered too often without reporting back,
   i.e. whose workers crashed or were killed, is given up; transient failures are retries,
   with a bound of their own, and do not count);
4. run the task's stage function (`graph.run_task`; the split and the join have their own
   steps, which fetch the input and write the output);
5. record it done (the join: the job too, in the same transaction), *then* publish every
   task that this made ready, judged from the records:
   of two racing tasks, each records itself before it looks at the other, so at least one
   sees both done; it claims the next task (atomically), so exactly one publishes it.

Failures: `TransientError` (storage, broker, database) propagates for the caller to retry with
backoff; anything else fails the job at once, with the reason in its record and the message
in the dead-letter queue. Work for a job cancelled while it ran is deleted as it finishes.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from shared.codec.errors import CodecError
from shared.pipeline import graph
from shared.pipeline.graph import TaskId
from shared.pipeline.messages import DeadLetter, MessageError, TaskMessage, parse_task
from shared.pipeline.store import READ_OPERATIONS, WRITE_OPERATIONS

from . import metrics
from .errors import Deferred, PipelineError, TransientError
from .events import announce_end
from .invoker import DIRECT_RUN_LIMIT
from .records import TERMINAL_STATES, JobOutput
from .runtime import Runtime

__all__ = ["Outcome", "cancel_job", "dead_letter", "describe_failure", "fail", "fail_job",
           "handle", "publish", "purge_job", "set_aside"]

log = logging.getLogger("excamera.services")

# Failures expected of bad input (anything else is logged with its traceback as well); none
# is retried: the job fails with the reason at once.
PERMANENT = (PipelineError, CodecError, MessageError, ValueError, KeyError, LookupError)


class Outcome(enum.Enum):
    DONE = "done"
    SKIPPED = "skipped"  # its job has ended, or the task was done already
    FAILED = "failed"  # permanently: the job failed with the reason
    REJECTED = "rejected"  # not a valid message: set aside


Step = Callable[[Runtime, TaskMessage], Any]


def handle(document: Any, runtime: Runtime, *, service: str, source: str,
           steps: dict[str, Step] | None = None) -> Outcome:
    """Handle one task message (steps 1-5 above). `source` names the queue it came from;
    `steps` gives stages that are not plain stage functions (the split, the join)."""
    try:
        message = parse_task(document)
    except MessageError as exc:
        set_aside(runtime, document, str(exc), source)
        metrics.TASKS.labels(service, "?", Outcome.REJECTED.value).inc()
        return Outcome.REJECTED
    task = TaskId(message.stage, message.index)
    if message.sent is not None:
        metrics.QUEUE_LATENCY.labels(service).observe(max(0.0, time.time() - message.sent))
    if (message.fallback and service == "encoder"  # only the invoker's copies
            and (left := runtime.records.running_for(message.job, task,
                                                     DIRECT_RUN_LIMIT)) > 0):
        # The direct invocation it backs up is running: wait for it to end (done: this copy
        # is skipped then) or to miss its deadline (lost: this copy runs it).
        raise Deferred(f"{message}: running elsewhere; back after its deadline", left + 5)
    state, attempt = runtime.records.start_task(message.job, task, runtime.worker,
                                                runtime.config.deadline(message.stage))
    if state is None or state in TERMINAL_STATES:
        if state is None:
            set_aside(runtime, document, f"{message}: no such job", source)
        else:  # a retry, or a copy, of a task whose job has ended: it will not run now
            runtime.records.abandon_task(message.job, task)
        metrics.TASKS.labels(service, message.stage, Outcome.SKIPPED.value).inc()
        return Outcome.SKIPPED
    if attempt < 0:  # every task of a job is recorded before it is published: not one of its
        set_aside(runtime, document, f"{message}: the job has no such task", source)
        metrics.TASKS.labels(service, message.stage, Outcome.REJECTED.value).inc()
        return Outcome.REJECTED
    if attempt == 0:  # done already: only make sure what it made ready was published
        _publish_ready(runtime, message.job, task, recovering=True)
        metrics.TASKS.labels(service, message.stage, Outcome.SKIPPED.value).inc()
        return Outcome.SKIPPED
    try:
        if attempt > runtime.config.max_attempts:
            raise PipelineError(
                f"{task} was delivered {attempt} times without finishing (its worker crashed "
                "or was killed each time); giving up"
            )
        began = time.perf_counter()
        requests_before = Counter(runtime.store.counts)
        _straggle(message, attempt)
        step = (steps or {}).get(message.stage, _run_stage)
        made = step(runtime, message)
        seconds = time.perf_counter() - began
        requests = Counter(runtime.store.counts) - requests_before
    except TransientError:
        _retried(runtime, service, message, task)
        raise
    except SystemExit:
        _stopped(runtime, message, task)
        raise
    except OSError as exc:  # local disk trouble: worth the retries, as storage is
        _retried(runtime, service, message, task)
        raise TransientError(f"{task}: {exc.strerror or exc}") from exc
    except Exception as exc:  # noqa: BLE001 - whatever it is, no retry will cure it
        if not isinstance(exc, PERMANENT):
            log.exception("%s: unexpected failure", message)
        fail(runtime, message, describe_failure(exc), attempt=attempt, source=source)
        metrics.TASKS.labels(service, message.stage, Outcome.FAILED.value).inc()
        return Outcome.FAILED
    metrics.TASK_SECONDS.labels(service, message.stage).observe(seconds)
    finished = runtime.records.finish_task(
        message.job, task, runtime.worker, seconds,
        reads=sum(requests[op] for op in READ_OPERATIONS),
        writes=sum(requests[op] for op in WRITE_OPERATIONS),
        output=made if isinstance(made, JobOutput) else None,
        retention_seconds=runtime.config.retention_seconds,
    )
    if finished.job_state == "cancelled" or (
            finished.job_state in ("done", "failed") and not finished.ended
            and _cleaned_already(runtime, message.job)):
        # A late task (a hedged or straggling copy) wrote into a job whose clean-up has run:
        # what it wrote would stay for ever. Tasks write intermediates only (the upload went
        # with the clean-up), and that is all a worker's role may delete on S3.
        purge_intermediates(runtime, message.job)
    elif finished.ended:
        if runtime.config.retention_seconds == 0:
            purge_job(runtime, message.job)
        announce_end(runtime, message.job)
    elif message.stage != "join" and _within_budget(runtime, message.job):
        _publish_ready(runtime, message.job, task, recovering=False)
    metrics.TASKS.labels(service, message.stage, Outcome.DONE.value).inc()
    return Outcome.DONE


# Test hook: "STAGE:INDEX:SECONDS" makes the first attempt at that task sleep first, as a
# straggler (a slow machine, a noisy neighbour) would.
SLOW_TASK_ENV = "EXCAMERA_TEST_SLOW_TASK"


def _straggle(message: TaskMessage, attempt: int) -> None:
    spec = os.environ.get(SLOW_TASK_ENV, "")
    if spec and attempt == 1:
        stage, index, seconds = spec.split(":")
        if message.stage == stage and message.index == int(index):
            time.sleep(float(seconds))


def _cleaned_already(runtime: Runtime, job: str) -> bool:
    """Whether an ended job's intermediates were deleted: at its end (no retention) or by
    the janitor since."""
    record = runtime.records.get_job(job)
    return record is not None and (record.cleaned_at is not None
                                   or runtime.config.retention_seconds == 0)


def _retried(runtime: Runtime, service: str, message: TaskMessage, task: TaskId) -> None:
    """A transient failure, which the caller retries: counted as a retry, not an attempt."""
    metrics.TASK_RETRIES.labels(service, message.stage).inc()
    try:
        runtime.records.uncount_attempt(message.job, task, runtime.worker)
    except Exception as exc:  # noqa: BLE001 - the records may be what is down; then it counts
        log.debug("%s: the attempt stays counted: %s", message, exc)


def _stopped(runtime: Runtime, message: TaskMessage, task: TaskId) -> None:
    """The process is told to stop while the task runs (billiard turns a pool process's
    SIGTERM into SystemExit), for a reason not the task's own: Celery stops the tasks whose
    broker connection was lost, and they come again. Their attempt is taken back, so such
    stops never use up `max_attempts`, which counts crashes (a kill -9, which cannot). The
    task stays running, with its deadline: if its message was acknowledged (a hard time
    limit), it shows as overdue, and may be hedged. At most 5 s: the records may be
    unreachable too, and the process is going."""
    signal.alarm(5)
    try:
        runtime.records.uncount_attempt(message.job, task)
    except Exception as exc:  # noqa: BLE001 - then the attempt stays counted
        log.debug("%s: the attempt stays counted: %s", message, exc)
    finally:
        signal.alarm(0)


def _run_stage(runtime: Runtime, message: TaskMessage) -> Any:
    plan = runtime.plan(message.job)
    task = TaskId(message.stage, message.index)
    if not graph.is_task(plan, task):
        raise MessageError(f"{message}: the job's plan has no such task")
    settings = runtime.facts(message.job).request.settings()
    return graph.run_task(runtime.store, plan, settings, task)


def _publish_ready(runtime: Runtime, job: str, done: TaskId, *, recovering: bool) -> None:
    """Publish the tasks `done` was the last missing input of, judged after recording it.

    Normally each is claimed first (atomically marked queued), so of two racing tasks only
    one publishes it. A task delivered again after it was done (`recovering`: its worker may
    have died between claiming and publishing) publishes again whatever has not started yet;
    a duplicate of a queued task is harmless, a lost one would hang the job.
    """
    plan = runtime.plan(job)
    if done.stage == "split":
        candidates = [task for task in graph.tasks(plan) if not graph.dependencies(plan, task)]
    else:
        candidates = list(graph.dependents(plan, done))
    if not candidates:
        return
    with_deps = [(task, graph.dependencies(plan, task)) for task in candidates]
    chosen = runtime.records.claim_ready(job, with_deps, runtime.stage_sizes(job),
                                         recovering=recovering)
    publish(runtime, job, [task for task in candidates if task in chosen])


def publish(runtime: Runtime, job: str, tasks: Iterable[TaskId]) -> None:
    """Publish `tasks` of `job`, most urgent first (group heads before tails)."""
    plan = runtime.plan(job)
    batch = []
    for task in sorted(tasks, key=lambda task: graph.urgency(plan, task)):
        chunk = graph.chunk_of(plan, task)
        batch.append((TaskMessage(job, task.stage, task.index),
                      f"{job}:{plan.group_of(chunk)}", plan.position(chunk)))
    runtime.dispatcher.publish_tasks(batch)


def fail(runtime: Runtime, message: TaskMessage, reason: str, *, attempt: int,
         source: str) -> None:
    """Fail the task and its job with `reason`, and set the message aside."""
    log.warning("%s failed: %s", message, reason)
    task = TaskId(message.stage, message.index)
    runtime.records.fail_task(message.job, task, reason, attempt=attempt, permanent=True)
    fail_job(runtime, message.job, f"{task}: {reason}")
    set_aside(runtime, message.to_json(), reason, source, said=True)


# A dead letter quotes the message it sets aside up to this many characters: a huge body would
# make the dead letter too big for the broker (SQS takes 1 MiB at most) and it says nothing more.
MAX_QUOTED = 16 * 1024


def dead_letter(document: Any, reason: str, source: str) -> DeadLetter:
    """The dead letter of a message (as received: a document, or its text), cut to MAX_QUOTED
    characters when it is bigger."""
    text = document if isinstance(document, str) else json.dumps(document)
    if len(text) > MAX_QUOTED:
        document = f"{text[:MAX_QUOTED]}... (cut: {len(text)} characters in all)"
    return DeadLetter(reason, source, document)


def set_aside(runtime: Runtime, document: Any, reason: str, source: str, *,
              said: bool = False) -> None:
    """Publish the message to the dead-letter queue with its reason (best effort: a broker
    that is down must not turn a failure into a retry loop), and say so in one line unless
    the caller has (`said`)."""
    if not said:
        log.warning("a message from %s set aside: %s", source, reason)
    try:
        runtime.dispatcher.publish_dead(dead_letter(document, reason, source),
                                        runtime.topology.dead)
    except TransientError as exc:
        log.error("could not dead-letter a message (%s): %s", reason, exc)


def _within_budget(runtime: Runtime, job: str) -> bool:
    """False (and the job cancelled, with the reason) once the job's projected cost passes
    the budget its request set."""
    budget = runtime.facts(job).request.budget_usd if job_has_facts(runtime, job) else None
    if budget is None:
        return True
    from .estimate import job_estimate

    projected = job_estimate(runtime.records, job, runtime.config)["projected"]["total"]
    if projected <= budget:
        return True
    reason = f"cancelled: the projected cost ${projected:.4f} passes the budget ${budget:.4f}"
    log.warning("%s %s", job, reason)
    runtime.records.record_error(job, reason)
    cancel_job(runtime, job)
    return False


def job_has_facts(runtime: Runtime, job: str) -> bool:
    try:
        runtime.facts(job)
    except KeyError:
        return False
    return True


def fail_job(runtime: Runtime, job: str, reason: str) -> bool:
    """Fail the job with `reason` (kept for the configured retention; with none, its
    intermediates and upload go now) and announce its end; False if it had ended already."""
    retention = runtime.config.retention_seconds
    if not runtime.records.fail_job(job, reason, retention):
        return False
    if not retention:
        purge_job(runtime, job)
    announce_end(runtime, job)
    return True


def cancel_job(runtime: Runtime, job: str) -> str | None:
    """Cancel a job: its queued tasks will be skipped, its running ones stop at their next
    step (each deletes what it wrote as it finishes), its intermediates are deleted now.
    Returns its state afterwards ("cancelled", or the state it had ended in; None: no job)."""
    state = runtime.records.cancel_job(job)
    if state == "cancelled":
        purge_job(runtime, job)
        announce_end(runtime, job)
    return state


def purge_job(runtime: Runtime, job: str) -> None:
    """Delete a job's intermediates and upload (not its output)."""
    purge_intermediates(runtime, job)
    runtime.store.delete_prefix(f"uploads/{job}/")


def purge_intermediates(runtime: Runtime, job: str) -> None:
    runtime.store.delete_prefix(f"jobs/{job}/")


def describe_failure(exc: BaseException) -> str:
    """A failure as a job's record and a dead letter show it: one line, at most 500 characters."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError):
        text = f"missing from the store: {text}"
    elif not isinstance(exc, (PipelineError, CodecError, MessageError)):
        text = f"{type(exc).__name__}: {text}"
    return text.splitlines()[0][:500]
