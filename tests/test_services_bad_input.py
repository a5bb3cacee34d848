"""Bad input to the services, from a hostile upstream system or a careless operator: messages
published straight to the queues (not JSON, the wrong content type, too big, for a job or task
that does not exist, for a cancelled job), malformed SQS events for the Lambda handlers, and
invalid settings. Each gets a one-line reason (a dead letter, or an error at start-up), and no
service stops or loops on it."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kombu
import pytest
from services_support import BROKER, CHILD, Cluster, ServiceProcess, cluster_at

from services.config import ServiceConfig
from services.errors import ConfigError
from services.runtime import Runtime
from shared.pipeline.messages import job_id_for

UNKNOWN_JOB = "j-" + "a" * 24


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Names of its own (queues, database, store); each test starts what it needs."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    with cluster_at(tmp_path, inputs) as made:
        with kombu.Connection(BROKER) as connection:
            made_topology(made).declare(connection)
        yield made


def made_topology(cluster: Cluster) -> Any:
    from services.broker import Topology

    return Topology(cluster.prefix, 4)


@pytest.fixture
def runtime(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """The cluster's runtime, as this process's own (what a Lambda handler finds)."""
    with cluster.runtime() as made:
        monkeypatch.setattr(Runtime, "_instance", made)
        yield made


def start(cluster: Cluster, name: str) -> ServiceProcess:
    service = cluster.service(name, "--concurrency=1")
    cluster.services[name] = service.start()
    cluster.wait_ready()
    return service


def letters(cluster: Cluster, queue: str, count: int, timeout: float = 10.0) -> list[Any]:
    """At least `count` messages of a dead-letter queue (fewer after `timeout`)."""
    taken: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(taken) < count and time.monotonic() < deadline:
        taken += cluster.queue_messages(queue)
        time.sleep(0.1)
    return taken


def publish(cluster: Cluster, body: bytes, *, exchange: str = "", routing_key: str,
            content_type: str = "application/json", headers: dict[str, Any] | None = None
            ) -> None:
    with kombu.Connection(BROKER) as connection:
        channel = connection.default_channel
        channel.basic_publish(channel.prepare_message(body, content_type=content_type,
                                                      headers=headers or {}),
                              exchange=exchange, routing_key=routing_key)


def task(job: str, stage: str, index: int) -> dict[str, Any]:
    return {"version": 1, "job": job, "stage": stage, "index": index}


def make_job(runtime: Runtime, client: str, state: str = "running") -> str:
    job = job_id_for(None, client)
    runtime.records.create_job(job, "ingest", client, {"input": "file:///x.y4m"}, None)
    if state in ("running", "cancelled"):
        runtime.records.start_job(job)
    if state == "cancelled":
        assert runtime.records.cancel_job(job) == "cancelled"
    return job


# --------------------------------------------------------------------------- the rebaser


def test_the_rebaser_outlives_links_for_unknown_and_cancelled_jobs(
        cluster: Cluster, runtime: Runtime) -> None:
    """A rebase task for a job that does not exist, and one for a cancelled job (whose plan
    is gone from the store), are set aside or skipped; the rebaser goes on (it used to exit,
    looking up the plan of the link that would follow)."""
    cancelled = make_job(runtime, "cancelled-link", "cancelled")
    rebaser = start(cluster, "rebaser")
    for job in (UNKNOWN_JOB, cancelled):
        publish(cluster, json.dumps(task(job, "rebase", 3)).encode(),
                exchange=f"{cluster.prefix}.rebase", routing_key=f"{job}:0")
    publish(cluster, b"{not json", exchange=f"{cluster.prefix}.rebase", routing_key="x:0")
    dead = letters(cluster, "dead", 2)
    reasons = sorted(letter["reason"] for letter in dead)
    assert len(reasons) == 2, reasons
    assert "no such job" in reasons[0] and "not valid JSON" in reasons[1], reasons
    time.sleep(1.0)
    assert rebaser.alive, rebaser.log()[-3000:]
    assert "Traceback" not in rebaser.log()
    with kombu.Connection(BROKER) as connection:  # every link was acknowledged
        channel = connection.channel()
        assert sum(channel.queue_declare(f"{cluster.prefix}.rebase.{n}", passive=True)
                   .message_count for n in range(4)) == 0


def test_a_task_whose_job_ended_before_its_retry_stops_showing_as_running(
        runtime: Runtime) -> None:
    """A task that failed transiently is retried; if its job is cancelled meanwhile, the
    retry is skipped. It stayed 'running' in the job's status for ever."""
    from services.adapter import Outcome, handle
    from shared.pipeline.graph import TaskId

    job = make_job(runtime, f"retried-{secrets.token_hex(3)}")
    link = TaskId("rebase", 3)
    runtime.records.set_plan(job, {"p": 1}, {"rebase": 1}, [link])
    assert runtime.records.start_task(job, link, "w", 60.0)[1] == 1
    runtime.records.uncount_attempt(job, link)  # the transient failure: a retry follows
    assert runtime.records.cancel_job(job) == "cancelled"
    assert runtime.records.active_task_count(job) == 1
    assert handle(task(job, "rebase", 3), runtime, service="rebaser",
                  source="test") is Outcome.SKIPPED
    assert runtime.records.active_task_count(job) == 0
    (shown,) = runtime.records.tasks(job, "rebase")
    assert shown["state"] == "cancelled"


def test_links_held_for_an_ended_job_are_let_go(runtime: Runtime) -> None:
    """Links held back for their predecessor, whose job then ended (or never existed), are
    handed on to be skipped, instead of holding the shard's prefetch for ever."""
    from services.rebaser.service import RebaserProcess, _Delivery, _Shard

    cancelled = make_job(runtime, "held-cancelled", "cancelled")
    running = make_job(runtime, "held-running")
    rebaser = RebaserProcess(runtime.config)
    held = {(job, 5): _Delivery(None, n, b"{}", "q", 0)
            for n, job in enumerate((cancelled, running, UNKNOWN_JOB))}
    rebaser._shards = {0: _Shard(0, None, None, pending=dict(held))}
    rebaser._release_ended()
    assert set(rebaser._shards[0].pending) == {(running, 5)}
    assert {d.tag for d in rebaser._inbox} == {0, 2}


def test_the_sqs_rebaser_sets_aside_a_message_that_breaks(
        runtime: Runtime, cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """On SQS too, a message whose handling fails unexpectedly is set aside and deleted
    (it used to stop the process, and come back to stop the next one)."""
    from services.rebaser.sqs_rebaser import SqsRebaserProcess

    deleted: list[str] = []

    class Queues:
        def delete(self, queue: str, receipt: str) -> None:
            deleted.append(receipt)

    rebaser = object.__new__(SqsRebaserProcess)
    rebaser.runtime, rebaser.sqs, rebaser.config = runtime, Queues(), runtime.config
    rebaser.topology = runtime.topology

    def broken(*_: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(rebaser, "run_link", broken)
    body = json.dumps(task(make_job(runtime, "sqs-broken"), "join", 0))
    rebaser._process("q.join", {"Body": body, "ReceiptHandle": "r1"})
    assert deleted == ["r1"]
    (letter,) = letters(cluster, "dead", 1)
    assert letter["reason"] == "RuntimeError: a bug" and letter["source"] == "q.join"


# --------------------------------------------------------------------------- the splitter


def test_the_splitter_outlives_a_url_with_a_lone_surrogate(cluster: Cluster) -> None:
    """JSON may spell a lone surrogate ("\\ud800"), which no file name can hold: the ingest
    message is set aside with the reason; the splitter used to exit on it (and meet it again
    on every start, as it was never acknowledged)."""
    splitter = start(cluster, "splitter")
    inputs = cluster.inputs.as_uri()
    cluster.post(b'{"version": 1, "id": "sur-in", "input": "' + inputs.encode()
                 + b'/\\ud800.y4m"}')
    cluster.post(b'{"version": 1, "id": "sur-out", "input": "' + inputs.encode()
                 + b'/x.y4m", "output": "' + cluster.outputs.as_uri().encode()
                 + b'/\\udc80.ivf"}')
    cluster.post({"version": 1, "id": "after", "input": f"{inputs}/missing.y4m"})
    dead = letters(cluster, "ingest.dead", 2)
    assert [letter["reason"] for letter in dead] == [
        "ingest message: input: holds a lone surrogate (not valid Unicode text)",
        "ingest message: output: holds a lone surrogate (not valid Unicode text)"]
    record = cluster.wait(job_id_for(None, "after"), timeout=20)
    assert record.state == "failed" and "no such file" in record.error
    assert splitter.alive and "Traceback" not in splitter.log()


def test_an_unexpected_failure_on_an_ingest_message_sets_it_aside(
        runtime: Runtime, cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever goes wrong with one ingest message (a bug, say) dead-letters it and
    acknowledges it: the consumer goes on with the next."""
    from services import celery_tasks

    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("a bug\nsecond line")

    monkeypatch.setattr(celery_tasks, "accept_body", broken)

    class Message:
        body = b'{"version": 1}'
        delivery_info: dict[str, Any] = {}
        acked = False

        def ack(self) -> None:
            self.acked = True

    message = Message()
    celery_tasks.IngestConsumer.on_message(None, message)  # type: ignore[arg-type]
    assert message.acked
    (letter,) = letters(cluster, "ingest.dead", 1)
    assert letter["reason"] == "RuntimeError: a bug"


def test_a_huge_ingest_message_is_quoted_cut(runtime: Runtime, cluster: Cluster) -> None:
    """A dead letter quotes at most MAX_QUOTED characters of the message it sets aside (SQS
    would refuse a dead letter of over 1 MiB, and the message would be lost)."""
    from services.adapter import MAX_QUOTED
    from services.splitter.ingest import accept_body

    assert accept_body(b'"' + b"x" * 3_000_000 + b'"', runtime) is None
    (letter,) = letters(cluster, "ingest.dead", 1)
    assert "3000002 bytes is more than" in letter["reason"]
    assert len(letter["message"]) < MAX_QUOTED + 100
    assert letter["message"].endswith("(cut: 3000002 characters in all)")


def test_a_request_the_splitter_refuses_fails_the_job_the_api_made(
        runtime: Runtime, cluster: Cluster) -> None:
    """The API records a job, then posts it; a splitter whose policy refuses the request
    (operators gave the two different prefixes) set the message aside and the job stayed
    queued for ever. It fails with the reason, and its end is posted. A job another message
    made (a different request under the same id) is left alone."""
    from services.splitter.ingest import accept_body
    from shared.pipeline.messages import job_id_for

    client = f"refused-{secrets.token_hex(3)}"
    request = {"input": "file:///not/allowed/clip.y4m", "frames_per_chunk": 6}
    job = job_id_for("alice", client)
    runtime.records.create_job(job, "alice", client, request, None)
    other = f"other-{secrets.token_hex(3)}"
    kept = job_id_for("alice", other)
    runtime.records.create_job(kept, "alice", other, {**request, "frames_per_chunk": 4}, None)
    for client_id in (client, other):
        message = {"version": 1, "id": client_id, "owner": "alice", **request}
        assert accept_body(json.dumps(message).encode(), runtime) is None
    record = runtime.records.get_job(job)
    assert record.state == "failed" and "not under a prefix" in record.error, record.error
    assert (record.expires_at - record.finished_at).total_seconds() == (
        runtime.config.retention_seconds)  # kept to be read, like any failed job
    assert runtime.records.get_job(kept).state == "queued"
    assert [event["state"] for event in cluster.events_of(job)] == ["failed"]


def test_a_name_lookup_failing_for_now_does_not_hold_up_the_ingest(
        runtime: Runtime, cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """EAI_AGAIN from the resolver (also what a lasting SERVFAIL gives) at ingest: the job is
    accepted and its split checks the input again as it reads it, with bounded retries; a
    transient error here put the message back at the head of the queue for ever."""
    import socket
    from dataclasses import replace as changed

    from services.inputs import UrlPolicy
    from services.splitter.ingest import accept_body

    real = socket.getaddrinfo

    def lookup(host: str, *args: Any, **kwargs: Any) -> Any:
        if host != "media.example.com":  # the broker's, the database's
            return real(host, *args, **kwargs)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(runtime, "policy", changed(runtime.policy, allow_input=("https://",)))
    assert isinstance(runtime.policy, UrlPolicy)
    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    client = f"lookup-{secrets.token_hex(3)}"
    message = {"version": 1, "id": client, "input": "https://media.example.com/a.y4m"}
    job = accept_body(json.dumps(message).encode(), runtime)
    assert job == job_id_for(None, client)
    assert runtime.records.get_job(job).state == "queued"


# --------------------------------------------------------------------------- tasks


def test_a_celery_encoder_defers_the_copy_of_a_task_running_elsewhere(
        runtime: Runtime, cluster: Cluster) -> None:
    """The queued copy of a direct invocation (services/invoker.py), taken by a Celery
    encoder while the invocation still runs: handed back for later, neither run a second
    time nor counted as a retry."""
    from shared.pipeline.graph import TaskId
    from shared.pipeline.messages import TaskMessage

    job = make_job(runtime, f"copy-{secrets.token_hex(3)}")
    task = TaskId("encode", 0)
    runtime.records.set_plan(job, {"p": 1}, {"encode": 1}, [task])
    assert runtime.records.start_task(job, task, "the-direct-invocation", 900.0)[1] == 1
    encoder = start(cluster, "encoder")
    runtime.dispatcher.publish_task(TaskMessage(job, "encode", 0, fallback=True),
                                    ordering_key=job, position=0)
    deadline = time.monotonic() + 30
    while "running elsewhere" not in encoder.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "running elsewhere" in encoder.log(), encoder.log()[-3000:]
    (shown,) = runtime.records.tasks(job, "encode")
    assert (shown["state"], shown["attempts"], shown["worker"]) == (
        "running", 1, "the-direct-invocation")
    assert "retrying" not in encoder.log() and "Traceback" not in encoder.log()


def test_a_task_its_job_does_not_have_is_set_aside(runtime: Runtime, cluster: Cluster) -> None:
    """A task posted for a running job with an index its plan has no such task for: set
    aside, and the job goes on (it used to fail the job)."""
    from services.adapter import Outcome, handle

    job = make_job(runtime, "no-such-task")
    outcome = handle(task(job, "encode", 999), runtime, service="encoder", source="q")
    assert outcome is Outcome.REJECTED
    assert runtime.records.get_job(job).state == "running"
    (letter,) = letters(cluster, "dead", 1)
    assert letter["reason"] == f"{job} encode[999]: the job has no such task"


def test_transient_failures_are_retries_not_attempts(runtime: Runtime, cluster: Cluster
                                                     ) -> None:
    """A task whose step fails transiently (S3 SlowDown, a full disk) as often as the retries
    allow still runs each time, and then fails with its own reason: the attempts, which give up
    on a task whose workers crash, count no retry (each retry counted as one, so the job failed
    at the sixth, 'delivered 6 times without finishing', before the retries were out)."""
    from services.adapter import Outcome, handle
    from services.errors import TransientError

    job = make_job(runtime, "flaky-store")
    calls: list[str] = []

    def flaky(runtime: Runtime, message: Any) -> None:
        calls.append(message.stage)
        if len(calls) <= runtime.config.retries:
            raise (TransientError("S3: SlowDown") if len(calls) % 2 else OSError(28, "No "
                                                                              "space left"))
        raise ValueError("the last straw")

    for _ in range(runtime.config.retries):  # what Celery's retries and the rebaser's do
        with pytest.raises(TransientError):
            handle(task(job, "split", 0), runtime, service="splitter", source="q",
                   steps={"split": flaky})
        # Nobody runs it until the retry: queued, not running (a copy would wait for it).
        (split,) = runtime.records.tasks(job, "split")
        assert (split["state"], split["attempts"]) == ("queued", 0), split
    outcome = handle(task(job, "split", 0), runtime, service="splitter", source="q",
                     steps={"split": flaky})
    assert outcome is Outcome.FAILED and len(calls) == runtime.config.retries + 1
    assert runtime.config.retries + 1 > runtime.config.max_attempts  # else this proves nothing
    assert runtime.records.get_job(job).error == "split[0]: ValueError: the last straw"


@pytest.mark.parametrize("cleaned", ["by the janitor", "at its end"])
def test_what_a_late_task_writes_into_a_cleaned_job_is_deleted(
        runtime: Runtime, cluster: Cluster, monkeypatch: pytest.MonkeyPatch,
        cleaned: str) -> None:
    """A task still running when its job failed (another task's failure) finishes after the
    job's intermediates were deleted: what it wrote is deleted too (it stayed for ever; only a
    cancelled job's late writes were)."""
    from dataclasses import replace as changed

    from services.adapter import Outcome, handle

    if cleaned == "at its end":
        monkeypatch.setattr(runtime, "config", changed(runtime.config, retention_seconds=0.0))
    job = make_job(runtime, f"late-{cleaned[:2]}")
    key = f"jobs/{job}/chunks/00000/late.ivf"

    def late(runtime: Runtime, message: Any) -> None:
        runtime.records.fail_job(job, "another task failed", runtime.config.retention_seconds)
        if cleaned == "by the janitor":
            runtime.records.mark_cleaned(job)
        runtime.store.put(key, b"written after the clean-up")

    outcome = handle(task(job, "split", 0), runtime, service="splitter", source="q",
                     steps={"split": late})
    assert outcome is Outcome.DONE
    assert runtime.records.get_job(job).state == "failed"
    assert not runtime.store.exists(key)


def test_the_task_queues_set_aside_what_is_not_a_task(cluster: Cluster) -> None:
    """Messages on a Celery task queue that are no task of ours (not JSON, no Celery
    message, a content type Celery refuses, another task's name, no argument) go to the
    dead-letter queue with a one-line reason, not to Celery's tracebacks and a silent drop."""
    encoder = start(cluster, "encoder")
    queue = f"{cluster.prefix}.encode"
    ours = {"task": "excamera.encoder.run", "id": "t1"}
    publish(cluster, b"{not json", routing_key=queue, headers=ours)
    publish(cluster, b'{"version": 1}', routing_key=queue)
    publish(cluster, b"\x80\x04", routing_key=queue, content_type="application/x-python-serialize",
            headers=ours)
    publish(cluster, json.dumps([[task(UNKNOWN_JOB, "encode", 0)], {}, {}]).encode(),
            routing_key=queue, headers={"task": "someone.else", "id": "t2"})
    publish(cluster, json.dumps([[], {}, {}]).encode(), routing_key=queue, headers=ours)
    dead = letters(cluster, "dead", 5)
    reasons = [letter["reason"] for letter in dead]
    assert len(reasons) == 5, reasons
    for expected, reason in zip(["cannot be decoded", "it names no task",
                                 "Refusing to deserialize", "not a task of this service",
                                 "takes one argument"], reasons, strict=True):
        assert expected in reason and "\n" not in reason, (expected, reason)
    assert all(letter["source"] == queue for letter in dead)
    time.sleep(0.5)
    assert encoder.alive and "Traceback" not in encoder.log()


# --------------------------------------------------------------------------- Lambda


def record(body: Any, number: int, **fields: Any) -> dict[str, Any]:
    return {"messageId": f"m{number}", "receiptHandle": "", "body": body,
            "attributes": {"ApproximateReceiveCount": "1"},
            "eventSourceARN": "arn:aws:sqs:us-east-1:1:q-encode", **fields}


MALFORMED_EVENTS: list[Any] = [
    [1, 2], {"Records": "abc"}, {"Records": {"a": 1}}, {"Records": [1, "x", None]},
]

MALFORMED_BODIES: list[Any] = [
    None, {"a": 1}, 5, "[" * 50_000, '"' + "x" * 2_000_000 + '"',
    json.dumps({"body": "!!!", "properties": {"body_encoding": "base64"},
                "headers": {"task": "excamera.encoder.run"}}),
    json.dumps({"body": "//4=", "properties": {"body_encoding": "base64"},
                "headers": {"task": "excamera.encoder.run"}}),
    json.dumps({"body": "e30=", "properties": "x", "headers": {}}),
    json.dumps({"body": 5, "properties": {}, "headers": {"task": "excamera.encoder.run"}}),
]


@pytest.fixture(autouse=True)
def _tempdir_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    # A Lambda handler called in this process points `tempfile` at its environment's own
    # directory, which does not outlive it: later tests here must not inherit that.
    monkeypatch.setattr(tempfile, "tempdir", tempfile.tempdir)


def test_lambda_handler_given_malformed_events(runtime: Runtime, cluster: Cluster) -> None:
    """Events that are not SQS events, and records whose bodies are no task (not text, too
    deep, too big, a Celery envelope that is broken): no exception out of the handler (which
    would make SQS deliver the whole batch again); each bad record is dead-lettered, in one
    line, and done with."""
    from services.encoder.lambda_handler import handler

    for event in MALFORMED_EVENTS:
        assert handler(event, None) == {"batchItemFailures": []}, event
    event = {"Records": [record(body, n) for n, body in enumerate(MALFORMED_BODIES)]}
    assert handler(event, None) == {"batchItemFailures": []}
    dead = letters(cluster, "dead", len(MALFORMED_BODIES))
    assert len(dead) == len(MALFORMED_BODIES)
    assert all("\n" not in letter["reason"] for letter in dead)
    assert all(len(json.dumps(letter)) < 20_000 for letter in dead)


def test_lambda_partial_batch_failures_for_odd_records(
        runtime: Runtime, cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record whose handling fails unexpectedly is reported in batchItemFailures, alone
    (the rest of the batch is not delivered again); a record without a messageId, or with
    an unreadable receive count, does not break the batch."""
    from services import lambda_runtime
    from services.adapter import handle as real_handle
    from services.encoder.lambda_handler import handler

    def sometimes_broken(document: Any, *args: Any, **kwargs: Any) -> Any:
        if document.get("index") == 1:
            raise RuntimeError("a bug")
        return real_handle(document, *args, **kwargs)

    monkeypatch.setattr(lambda_runtime, "handle", sometimes_broken)
    tasks = [json.dumps(task(UNKNOWN_JOB, "encode", n)) for n in range(3)]
    event = {"Records": [record(tasks[0], 0, attributes={"ApproximateReceiveCount": "x"}),
                         record(tasks[1], 1), {"body": tasks[2]}]}
    assert handler(event, None) == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    fifo = "arn:aws:sqs:us-east-1:1:q-encode.fifo"
    event = {"Records": [record(tasks[1], 1, eventSourceARN=fifo),
                         record(tasks[0], 2, eventSourceARN=fifo)]}
    assert handler(event, None) == {"batchItemFailures": [{"itemIdentifier": "m1"},
                                                          {"itemIdentifier": "m2"}]}
    # Given up after max_attempts receives: the record is done with.
    event = {"Records": [record(tasks[1], 1, attributes={"ApproximateReceiveCount": "99"})]}
    assert handler(event, None) == {"batchItemFailures": []}


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("EXCAMERA_ALLOW_PRIVATE_NETWORKS", "maybe", "give 1/true/yes/on or 0/false/no/off"),
    ("EXCAMERA_RETENTION_SECONDS", "nan", "retention must be"),
    ("EXCAMERA_HELD_STATES", "-1", "EXCAMERA_HELD_STATES"),
    ("EXCAMERA_MAX_INPUT_BYTES", "0", "EXCAMERA_MAX_INPUT_BYTES"),
    ("EXCAMERA_WARM_ENVIRONMENTS", "-3", "EXCAMERA_WARM_ENVIRONMENTS"),
    ("EXCAMERA_SQS_VISIBILITY_TIMEOUT", "-5", "EXCAMERA_SQS_VISIBILITY_TIMEOUT"),
    ("EXCAMERA_METRICS_PORT", "99999", "not a port"),
    ("EXCAMERA_DEADLINE_SCALE", "inf", "deadline scale"),
    ("EXCAMERA_MAX_ATTEMPTS", "many", "give a whole number"),
])
def test_invalid_settings_are_refused(variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        ServiceConfig.from_env({variable: value})


@pytest.mark.parametrize("value", ["off", "0", "false", "1", "yes", "TRUE"])
def test_boolean_settings(value: str) -> None:
    config = ServiceConfig.from_env({"EXCAMERA_ALLOW_PRIVATE_NETWORKS": value})
    assert config.allow_private_networks is (value.lower() in ("1", "yes", "true"))


def excamera_service(*args: str, env: dict[str, str] | None = None
                     ) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EXCAMERA_")}
    return subprocess.run([sys.executable, "-c", *CHILD, "service", *args],
                          env={**clean, **(env or {})}, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize(("args", "env", "expected"), [
    (["encoder"], {"EXCAMERA_DB": "notaurl"}, "job records (notaurl): missing"),
    (["encoder"], {"EXCAMERA_DB": "postgresql://u:secret@127.0.0.1:9/x"},
     "job records (postgresql://u:***@127.0.0.1:9/x): "),
    (["encoder"], {"EXCAMERA_DB": "postgresql://u:secret@[bad/x"}, "(postgresql://***@[bad/x)"),
    (["encoder"], {"EXCAMERA_METRICS_PORT": "99999"}, "metrics port 99999 is not a port"),
    (["encoder"], {"EXCAMERA_BROKER": "amqq://guest:secret@127.0.0.1:5672//"},
     "unsupported broker URL scheme 'amqq://'"),
    # another service's flags: refused, not ignored
    (["encoder", "--port=19089", "--idle-timeout=5"], {},
     "--port, --idle-timeout: not for the encoder service (they are the API's)"),
    (["api", "--concurrency=2"], {}, "--concurrency: not for the api service"),
])
def test_a_service_with_bad_settings_says_so_in_one_line(
        tmp_path: Path, args: list[str], env: dict[str, str], expected: str) -> None:
    done = excamera_service(*args, f"--store={tmp_path.as_uri()}", env=env)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], done.stderr
    assert "secret" not in done.stderr


def test_a_service_that_ends_leaves_no_metrics_directory(cluster: Cluster,
                                                         tmp_path: Path) -> None:
    # Each start made one in TMPDIR and none was ever removed.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = excamera_service("encoder", f"--store={tmp_path.as_uri()}",
                            env={"EXCAMERA_DB": "postgresql://u@127.0.0.1:9/x",
                                 "TMPDIR": str(scratch)})
    assert done.returncode == 1, done.stderr
    assert not list(scratch.glob("excamera-metrics-*"))
    service = ServiceProcess("decoder", ["-v", "--concurrency=1"],
                             {**cluster.env(), "TMPDIR": str(scratch)}, tmp_path / "d.log")
    service.start()
    deadline = time.monotonic() + 60
    while not list(scratch.glob("excamera-metrics-*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(scratch.glob("excamera-metrics-*"))  # while it runs
    time.sleep(2)
    service.stop()
    assert not list(scratch.glob("excamera-metrics-*")), service.log()[-2000:]
    # One killed (kill -9) cannot remove its own: the next service to start does, and leaves
    # a running one's alone.
    killed, running = (ServiceProcess("decoder", ["-v", "--concurrency=1"],
                                      {**cluster.env(), "TMPDIR": str(scratch)},
                                      tmp_path / f"{name}.log").start()
                       for name in ("killed", "running"))
    deadline = time.monotonic() + 60
    while len(list(scratch.glob("excamera-metrics-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    killed.kill9()
    assert len(list(scratch.glob("excamera-metrics-*"))) == 2
    done = excamera_service("encoder", f"--store={tmp_path.as_uri()}",
                            env={"EXCAMERA_DB": "postgresql://u@127.0.0.1:9/x",
                                 "TMPDIR": str(scratch)})
    assert done.returncode == 1, done.stderr
    (kept,) = scratch.glob("excamera-metrics-*")
    assert kept.name.startswith(f"excamera-metrics-{running.process.pid}@")
    running.stop()


def test_rebaser_processes_log_and_a_dead_one_is_said_so(cluster: Cluster,
                                                          runtime: Runtime) -> None:
    # Spawned rebasers (--concurrency 2) started without logging: no "owns shard" line, and
    # a killed one was replaced in silence.
    from procfs import children

    service = cluster.service("rebaser", "--concurrency=2").start()
    try:
        deadline = time.monotonic() + 60
        while service.log().count("owns shard") < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert service.log().count("owns shard") >= 4, service.log()[-3000:]
        cancelled = make_job(runtime, f"logged-{secrets.token_hex(3)}", "cancelled")
        publish(cluster, json.dumps(task(cancelled, "rebase", 3)).encode(),
                exchange=f"{cluster.prefix}.rebase", routing_key=f"{cancelled}:0")
        deadline = time.monotonic() + 30
        while f"{cancelled} rebase[3] skipped in" not in service.log() and (
                time.monotonic() < deadline):
            time.sleep(0.2)
        assert f"rebaser: {cancelled} rebase[3] skipped in" in service.log()  # -v: each task
        victim = min(pid for pid in children(service.process.pid)
                     if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes())
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while f"rebaser process {victim} ended" not in service.log() and (
                time.monotonic() < deadline):
            time.sleep(0.2)
        assert f"rebaser process {victim} ended (exit code -9); starting another" in (
            service.log()), service.log()[-3000:]
    finally:
        service.stop()


def test_fewer_rebase_shards_than_the_broker_has_are_refused(cluster: Cluster,
                                                               tmp_path: Path) -> None:
    """The hash exchange keeps the bindings of every shard it was given: rebasers started
    with fewer shards left the groups hashed to the others waiting, with nothing said."""
    done = excamera_service("rebaser", f"--store={tmp_path.as_uri()}", f"--db={cluster.db_url}",
                            f"--queue-prefix={cluster.prefix}",
                            env={"EXCAMERA_REBASE_SHARDS": "2"})
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert f"rebase shard queue '{cluster.prefix}.rebase.2', beyond the 2 shards" in line, line


def test_an_unknown_setting_is_said_to_be_ignored(tmp_path: Path) -> None:
    done = excamera_service("encoder", f"--store={tmp_path.as_uri()}",
                            env={"EXCAMERA_RETENTION": "5", "EXCAMERA_TEST_ANYTHING": "1",
                                 "EXCAMERA_DB": "postgresql://u@127.0.0.1:9/x"})
    assert done.returncode == 1, done.stderr
    warning, error = done.stderr.strip().splitlines()
    assert warning.endswith("EXCAMERA_RETENTION is not a setting of excamera (a typo?): "
                            "ignored"), warning
    assert "job records" in error


@pytest.mark.parametrize("args", [["rebaser", "--concurrency=-1"], ["encoder", "--concurrency=0"],
                                  ["api", "--port=70000"], ["encoder", "--metrics-port=x"],
                                  ["api", "--idle-timeout=0"], ["api", "--idle-timeout=nan"],
                                  ["api", "--idle-timeout=1e9"]])
def test_bad_numbers_on_the_command_line_are_usage_errors(args: list[str]) -> None:
    done = excamera_service(*args)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "error: argument" in done.stderr


@pytest.mark.parametrize("host, expected", [
    ("127.0.0.1", "address already in use"),
    ("nosuchhost.invalid", "not known|name resolution"),  # with a resolver, or without
    ("10.9.9.9", "cannot assign requested address"),
])
def test_an_api_that_cannot_listen_says_why_in_one_line(
        cluster: Cluster, tmp_path: Path, host: str, expected: str) -> None:
    import socket

    with socket.socket() as taken:  # the port, held by another program
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = excamera_service("api", f"--host={host}", f"--port={port}",
                                f"--store={tmp_path.as_uri()}", f"--db={cluster.db_url}",
                                f"--queue-prefix={cluster.prefix}")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"excamera service: the API cannot listen on {host}:{port}: ")
    assert re.search(expected, last), last


@pytest.mark.parametrize("service", ["encoder", "rebaser"])
def test_a_metrics_port_in_use_says_so_in_one_line(cluster: Cluster, tmp_path: Path,
                                                   service: str) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = excamera_service(service, f"--metrics-port={port}", f"--store={tmp_path.as_uri()}",
                                f"--db={cluster.db_url}", f"--queue-prefix={cluster.prefix}")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"excamera service: the metrics port {port} cannot be listened on: "
        "Address already in use")


def test_a_privileged_worker_says_so_in_one_line(cluster: Cluster) -> None:
    """Celery's seven-line SecurityWarning for a worker run as root (or in group sudo or wheel)
    is one line of ours; an unprivileged worker says nothing of it."""
    import grp

    service = start(cluster, "decoder")
    service.stop()
    log = service.log()
    assert "SecurityWarning" not in log and "superuser privileges" not in log, log
    groups = {grp.getgrgid(gid).gr_name for gid in {os.getgid(), os.getegid()}}
    privileged = os.geteuid() == 0 or os.getuid() == 0 or bool(groups & {"sudo", "wheel"})
    notes = [line for line in log.splitlines() if "unprivileged user" in line]
    assert notes == ["excamera service decoder: note: running as root (or in group sudo or "
                     "wheel); run the services as an unprivileged user, as deploy/'s image "
                     "does"] * privileged, log
