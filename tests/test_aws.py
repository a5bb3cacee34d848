"""The AWS side against moto in server mode on localhost: the S3 store, the SQS transport, and
Lambda handlers driven with SQS events made of messages the real producer published."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import boto3
import psycopg
import pytest
from aws_support import moto_server

from services.broker import Topology
from services.config import ServiceConfig
from services.runtime import Runtime
from shared.pipeline.messages import MessageError, TaskMessage
from shared.pipeline.s3store import MULTIPART_THRESHOLD, S3Store


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def bucket(moto: str) -> str:
    name = f"b{secrets.token_hex(4)}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def test_s3_store_round_trip(bucket: str, tmp_path: Path) -> None:
    store = S3Store(f"s3://{bucket}/pre/fix")
    assert store.url == f"s3://{bucket}/pre/fix/"
    store.put("jobs/a/x.bin", b"hello")
    assert store.get("jobs/a/x.bin") == b"hello" and store.exists("jobs/a/x.bin")
    assert not store.exists("jobs/a/missing")
    with pytest.raises(KeyError):
        store.get("jobs/a/missing")
    store.copy("jobs/a/x.bin", "jobs/a/y.bin")  # server-side
    assert store.get("jobs/a/y.bin") == b"hello" and store.size("jobs/a/y.bin") == 5
    # A big object goes up in parts, and comes back whole.
    big = tmp_path / "big"
    big.write_bytes(os.urandom(MULTIPART_THRESHOLD + 12345))
    store.put_file("outputs/big", big)
    head = boto3.client("s3").head_object(Bucket=bucket, Key="pre/fix/outputs/big")
    assert head["ETag"].strip('"').endswith("-2")  # a multipart upload's ETag
    with store.local_file("outputs/big") as path:
        assert path.read_bytes() == big.read_bytes()
    with store.open_read("jobs/a/x.bin") as file:
        assert file.read() == b"hello"
    assert store.key_for(store.url_for("uploads/j/input")) == "uploads/j/input"
    assert store.delete_prefix("jobs/") == 2
    assert not store.exists("jobs/a/x.bin") and store.exists("outputs/big")
    with pytest.raises(ValueError):
        store.put("../escape", b"")


def test_s3_store_missing_bucket_is_a_clear_error(moto: str) -> None:
    from shared.pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match="NoSuchBucket"):
        S3Store("s3://no-such-bucket-here/x").put("k", b"data")


def _throttled(request: object, **_: object) -> object:
    """A botocore before-send hook: S3's 503 SlowDown instead of sending the request."""
    from botocore.awsrequest import AWSResponse

    class Body:
        def stream(self, **_: object) -> Iterator[bytes]:
            yield b"<Error><Code>SlowDown</Code><Message>Reduce your rate.</Message></Error>"

    return AWSResponse(request.url, 503, {}, Body())  # type: ignore[attr-defined]


def test_a_throttled_multipart_upload_is_transient(bucket: str, tmp_path: Path) -> None:
    # boto3's transfer manager wraps the failed part's ClientError in S3UploadFailedError,
    # which is not a ClientError: unmapped, the job failed for good on a throttled part.
    from botocore.config import Config

    from shared.pipeline.errors import TransientError

    client = boto3.client("s3", config=Config(retries={"max_attempts": 1}))
    client.meta.events.register("before-send.s3.UploadPart", _throttled)
    store = S3Store(f"s3://{bucket}/t", client=client)
    big = tmp_path / "big"
    big.write_bytes(bytes(MULTIPART_THRESHOLD + 1))
    with pytest.raises(TransientError, match="SlowDown"):
        store.put_file("jobs/j/big", big)
    with pytest.raises(TransientError, match="SlowDown"):
        store.put("jobs/j/big", big.read_bytes())


def test_objects_delete_objects_did_not_delete_are_an_error(bucket: str) -> None:
    # DeleteObjects answers 200 with per-key errors (e.g. AccessDenied): not a success.
    from shared.pipeline.errors import PipelineError

    client = boto3.client("s3")
    store = S3Store(f"s3://{bucket}/d", client=client)
    store.put("jobs/j/a", b"a")

    def denied(parsed: dict, **_: object) -> None:
        parsed["Errors"] = [{"Key": "d/jobs/j/a", "Code": "AccessDenied",
                             "Message": "Access Denied"}]

    client.meta.events.register("after-call.s3.DeleteObjects", denied)
    with pytest.raises(PipelineError, match="1 objects not deleted .AccessDenied"):
        store.delete_prefix("jobs/j/")


@pytest.fixture
def sqs_runtime(moto: str, bucket: str) -> Iterator[Runtime]:
    config = ServiceConfig(broker="sqs://", store=f"s3://{bucket}/store",
                           queue_prefix=f"q{secrets.token_hex(3)}")
    runtime = Runtime(config)
    runtime.topology.declare(None)  # type: ignore[arg-type]
    yield runtime
    runtime.topology.delete(None)  # type: ignore[arg-type]


def receive_all(queue_url: str) -> list[dict]:
    client = boto3.client("sqs")
    messages = []
    while batch := client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                          WaitTimeSeconds=0, AttributeNames=["All"],
                                          MessageSystemAttributeNames=["All"]
                                          ).get("Messages", []):
        messages += batch
    return messages


def test_tasks_published_to_sqs_unwrap_to_the_same_document(sqs_runtime: Runtime) -> None:
    """What the real producer (the dispatcher: Celery's send_task through kombu's SQS
    transport) puts on the encode queue is what the Lambda handler reads back; rebase tasks
    go to the FIFO queue as plain JSON with their group and a deduplication id."""
    from services.lambda_runtime import task_document

    topology: Topology = sqs_runtime.topology
    job = "j-" + "0" * 24
    sqs_runtime.dispatcher.publish_task(TaskMessage(job, "encode", 7), ordering_key="k",
                                        position=0)
    sqs_runtime.dispatcher.publish_task(TaskMessage(job, "rebase", 9), ordering_key=f"{job}:0",
                                        position=9)
    sqs_runtime.dispatcher.publish_task(TaskMessage(job, "rebase", 9), ordering_key=f"{job}:0",
                                        position=9)  # a repeat within 5 minutes: dropped
    (encode,) = receive_all(sqs_runtime.dispatcher.sqs.url(topology.encode))
    document = task_document(encode["Body"])
    assert {k: document[k] for k in ("version", "job", "stage", "index")} == {
        "version": 1, "job": job, "stage": "encode", "index": 7}
    assert isinstance(document["sent"], float)
    (rebase,) = receive_all(sqs_runtime.dispatcher.sqs.url(topology.rebase_fifo))
    assert json.loads(rebase["Body"])["index"] == 9
    assert rebase["Attributes"]["MessageGroupId"] == f"{job}:0"
    assert rebase["Attributes"]["MessageDeduplicationId"] == f"{job}:rebase:9"
    assert task_document(rebase["Body"])["stage"] == "rebase"  # plain JSON reads as it is
    for bad in ("not json", json.dumps({"body": "e30=", "properties": {}, "headers": {
            "task": "someone.else"}})):
        with pytest.raises(MessageError):
            task_document(bad)


def test_partial_batch_failures(sqs_runtime: Runtime, monkeypatch: pytest.MonkeyPatch,
                                caplog: pytest.LogCaptureFixture) -> None:
    """A record whose task hits a transient failure (here: job records out of reach) is
    reported, the others are not; on a FIFO queue, the failure and every record after it."""
    from aws_support import sqs_event

    from services.encoder.lambda_handler import handler

    config = sqs_runtime.config.with_changes(db="postgresql://postgres@127.0.0.1:9/none")
    for key, value in config.to_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(Runtime, "_instance", None)
    task = json.dumps({"version": 1, "job": "j-" + "1" * 24, "stage": "encode", "index": 0})
    messages = [{"MessageId": f"m{k}", "ReceiptHandle": f"r{k}", "Body": body,
                 "Attributes": {"ApproximateReceiveCount": "1"}}
                for k, body in enumerate(["not json", task, "[1, 2"])]
    caplog.set_level("INFO")
    standard = handler(sqs_event("https://sqs/123/q-encode", messages), None)
    assert standard == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    # What is set aside is said, in a line each (the dead-letter queue was the only trace).
    set_aside = [r for r in caplog.records if "set aside" in r.getMessage()]
    assert len(set_aside) == 2 and all(r.exc_info is None for r in set_aside), set_aside
    assert "not valid JSON" in set_aside[0].getMessage()
    caplog.clear()
    assert handler({"detail-type": "Scheduled Event"}, None) == {"batchItemFailures": []}
    assert "not an SQS event" in caplog.text
    fifo = handler(sqs_event("https://sqs/123/q-encode.fifo", messages), None)
    assert fifo == {"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m2"}]}
    assert handler({"warm": True}, None) == {"warm": True}
    monkeypatch.setattr(Runtime, "_instance", None)


@pytest.mark.parametrize("env, expected", [
    ({}, "S3 bucket 'no-such-bucket-here' does not exist"),
    ({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, "S3 bucket 'no-such-bucket-here': "),
])
def test_a_service_whose_store_is_out_of_reach_says_so_at_start(
        moto: str, env: dict[str, str], expected: str) -> None:
    # Before, a worker said "ready" and only failed on its first task.
    import subprocess
    import sys

    from services_support import CHILD

    clean = {k: v for k, v in os.environ.items() if not k.startswith("EXCAMERA_")}
    done = subprocess.run([sys.executable, "-c", *CHILD, "service", "encoder",
                           "--store=s3://no-such-bucket-here/x"],
                          env={**clean, **env}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("excamera service: store s3://no-such-bucket-here/x: "), line
    assert expected in line, line


class _LambdaStandIn:
    """Lambda's Invoke API, as far as the dispatcher uses it (moto cannot run functions)."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def invoke(self, FunctionName: str, InvocationType: str, Payload: bytes) -> dict:  # noqa: N803
        self.events.append(json.loads(Payload))
        return {"StatusCode": 202}


def test_the_queued_copy_of_a_running_direct_invocation_waits(
        sqs_runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """An encoder task goes out as a direct invocation and a delayed copy on the queue. The
    copy ran the task a second time whenever the invocation was still running: twice the
    bill, and a spent attempt. It now waits until that run's deadline, not counted."""
    from aws_support import sqs_event

    from services import invoker
    from services.encoder.lambda_handler import handler
    from shared.pipeline.graph import TaskId

    monkeypatch.setattr(invoker, "FALLBACK_DELAY", 0)
    monkeypatch.setattr(Runtime, "_instance", sqs_runtime)
    records = sqs_runtime.records
    job = "j-" + secrets.token_hex(12)
    records.create_job(job, "ingest", job, {"input": "file:///x.y4m"}, None)
    records.start_job(job)
    task = TaskId("encode", 0)
    records.set_plan(job, {"p": 1}, {"encode": 1}, [task])
    lambda_api = _LambdaStandIn()
    sqs_runtime.dispatcher.invoker = invoker.Invoker("excamera-encoder", client=lambda_api)
    sqs_runtime.dispatcher.publish_task(TaskMessage(job, "encode", 0), ordering_key="k",
                                        position=0)
    (direct,) = lambda_api.events
    assert records.start_task(job, task, "the-direct-invocation", 900.0) == ("running", 1)
    queue_url = sqs_runtime.dispatcher.sqs.url(sqs_runtime.topology.encode)
    (copy,) = receive_all(queue_url)
    assert json.loads(copy["Body"]).get("fallback") is True
    assert "fallback" not in json.loads(direct["Records"][0]["body"])
    answer = handler(sqs_event(queue_url, [copy]), None)
    assert answer == {"batchItemFailures": [{"itemIdentifier": copy["MessageId"]}]}
    (shown,) = records.tasks(job, "encode")
    assert (shown["state"], shown["attempts"], shown["worker"]) == (
        "running", 1, "the-direct-invocation")
    # A run that stopped is not waited for: one that failed transiently (a direct event is
    # never delivered again, so the copy is what retries it), or one past the longest a
    # Lambda runs (killed, timed out).
    for stopped in ("transient", "timed out"):
        records.delete_job(job)  # a fresh record of the same job, its task running again
        records.create_job(job, "ingest", job, {"input": "file:///x.y4m"}, None)
        records.start_job(job)
        records.set_plan(job, {"p": 1}, {"encode": 1}, [task])
        records.start_task(job, task, "the-direct-invocation", 3600.0)
        if stopped == "transient":
            records.uncount_attempt(job, task, "the-direct-invocation")
        else:
            with psycopg.connect(records.url, autocommit=True) as db:
                db.execute("UPDATE excamera_tasks SET started_at = now() - interval "
                           "'1000 seconds' WHERE job = %s", (job,))
        assert handler(sqs_event(queue_url, [copy]), None) == {"batchItemFailures": []}, stopped
        (shown,) = records.tasks(job, "encode")
        assert shown["worker"] != "the-direct-invocation", stopped  # the copy ran it
