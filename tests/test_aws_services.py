"""The services once more on moto (S3 and SQS): a splitter and a rebaser as processes on SQS,
the encoder and the state-decoder as Lambda handlers in execution environments of their own
fed by SQS events, the output in S3 byte-identical to `excamera encode`; through a handler
killed mid-batch, duplicate deliveries and throttled S3 writes (partial batch failures)."""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_support import moto_server
from services_support import Cluster, carphone_inputs, cluster_at, embedded_output

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, video_dir: Path) -> Path:
    return carphone_inputs(tmp_path_factory.mktemp("inputs"), video_dir)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, inputs: Path) -> bytes:
    return embedded_output(inputs / "carphone.mp4",
                           tmp_path_factory.mktemp("ref") / "out.ivf", 3, 8)


@pytest.fixture
def aws_cluster(moto: str, tmp_path: Path, inputs: Path) -> Iterator[Cluster]:
    bucket = f"b{secrets.token_hex(4)}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    settings = {"allow_output": (f"s3://{bucket}/out/",), "sqs_visibility_timeout": 3}
    with cluster_at(tmp_path, inputs, broker="sqs://", store=f"s3://{bucket}/store",
                    settings=settings) as cluster:
        cluster.bucket = bucket  # type: ignore[attr-defined]
        cluster.settings["allow_input"] = (
            *cluster.env_settings()["allow_input"], f"s3://{bucket}/in/")
        cluster.start({"encoder": 0, "decoder": 0})
        yield cluster


def submit(cluster: Cluster, inputs: Path, name: str) -> tuple[str, str]:
    from shared.pipeline.messages import job_id_for

    key = f"out/{name}.ivf"
    cluster.post({"version": 1, "id": name, "input": (inputs / "carphone.mp4").as_uri(),
                  "output": f"s3://{cluster.bucket}/{key}",  # type: ignore[attr-defined]
                  "frames_per_chunk": 3, "chunks_per_group": 8, "cq_level": 20,
                  "format": "ivf"})
    return job_id_for(None, name), key


def output_bytes(cluster: Cluster, key: str) -> bytes:
    return boto3.client("s3").get_object(Bucket=cluster.bucket,  # type: ignore[attr-defined]
                                         Key=key)["Body"].read()


def done(cluster: Cluster, job: str, **wait: Any) -> Any:
    record = cluster.wait(job, timeout=240, **wait)
    assert record.state == "done", (record.state, record.error, [
        p.log()[-2000:] for p in cluster.extra])
    return record


def test_end_to_end_on_s3_and_sqs_with_lambda_handlers(aws_cluster: Cluster, inputs: Path,
                                                       reference: bytes) -> None:
    aws_cluster.poller("encoder")
    aws_cluster.poller("decoder")
    # Upstream systems post to the ingest queue: a body nested past Python's recursion limit
    # once raised out of kombu's SQS poll in the splitter; it is set aside, the job behind it
    # runs.
    aws_cluster.post(b'{"version": 1, "id": ' + b"[" * 20_000 + b"]" * 20_000 + b"}")
    job, key = submit(aws_cluster, inputs, "aws-plain")
    record = done(aws_cluster, job)
    assert output_bytes(aws_cluster, key) == reference
    assert record.output == f"s3://{aws_cluster.bucket}/{key}"  # type: ignore[attr-defined]
    with aws_cluster.records() as records:
        assert records.errors(job) == []
        workers = {t["worker"] for t in records.tasks(job, stage="encode")}
    assert len(workers) == 1  # one execution environment ran every encode
    letter, = aws_cluster.queue_messages("ingest.dead")
    assert "nested more than 32 levels" in letter["reason"], letter["reason"]
    (event,) = aws_cluster.events_of(job)  # the end, on the SQS events queue
    assert (event["state"], event["output"]) == ("done", record.output)


def test_duplicates_throttling_and_a_handler_killed_mid_batch(
    aws_cluster: Cluster, inputs: Path, reference: bytes
) -> None:
    """Every record delivered twice; the decoder's first S3 writes throttled (those records
    are reported as batch item failures and come back); the encoder's environment killed
    mid-batch and a new one started: the same bytes in the end."""
    encoder = aws_cluster.poller("encoder", "--duplicate", "--batch", "4")
    aws_cluster.poller("decoder", "--duplicate", "--fail-puts", "3")
    job, key = submit(aws_cluster, inputs, "aws-rough")
    when = random.randrange(3, 30)
    killed: list[bool] = []

    def kill_mid_batch(records: Any) -> None:
        encode = records.progress(job).get("encode")
        if not killed and encode and encode["done"] >= when:
            encoder.kill9()
            killed.append(True)
            time.sleep(0.2)
            aws_cluster.poller("encoder", "--batch", "4")

    done(aws_cluster, job, during=kill_mid_batch)
    assert killed
    assert output_bytes(aws_cluster, key) == reference
    with aws_cluster.records() as records:
        tasks = records.tasks(job)
    assert all(t["state"] == "done" for t in tasks)
    # Only what was in flight when the environment died ran twice.
    assert sum(t["attempts"] > 1 for t in tasks) <= 5


def test_direct_invocations_through_throttling(moto: str, tmp_path: Path, inputs: Path,
                                               reference: bytes) -> None:
    """The encoder invoked directly, in bursts, by whoever publishes its tasks, through an
    Invoke API that refuses 30 % of calls as throttled: every refusal is retried with
    backoff and jitter, the environments are warmed when the job arrives, and the output is
    the same bytes."""
    import json as json_module
    import sys

    from aws_support import free_port
    from services_support import REPO, ServiceProcess

    bucket = f"b{secrets.token_hex(4)}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    port, counts = free_port(), tmp_path / "counts.json"
    settings = {"allow_output": (f"s3://{bucket}/out/",), "sqs_visibility_timeout": 3,
                "encoder_function": "excamera-encoder", "warm_environments": 3}
    with cluster_at(tmp_path, inputs, broker="sqs://", store=f"s3://{bucket}/store",
                    settings=settings) as cluster:
        cluster.bucket = bucket  # type: ignore[attr-defined]
        env = {**cluster.env(), "AWS_ENDPOINT_URL_LAMBDA": f"http://127.0.0.1:{port}"}
        standin = ServiceProcess("lambda-standin", [], env, tmp_path / "standin.log", command=[
            sys.executable, str(REPO / "tests" / "lambda_standin.py"), str(port), "--refuse",
            "0.3", "--log", str(counts)])
        cluster.extra.append(standin.start())
        for name in ("splitter", "rebaser"):
            service = cluster.service(name, "--concurrency=1")
            service.env.update(env)
            cluster.services[name] = service.start()
        decoder = cluster.poller("decoder")
        decoder.stop()
        decoder.env.update(env)
        decoder.start()
        cluster.wait_ready()
        job, key = submit(cluster, inputs, "direct")
        done(cluster, job)
        assert output_bytes(cluster, key) == reference
        seen = json_module.loads(counts.read_text())
    assert seen["refused"] > 0 and seen["warm"] == 3
    # Every encoder task ran from a direct invocation (none waited for its queued copy).
    assert seen["handled"] >= 40 + 35
    assert seen["failed_records"] == 0


def test_s3_input_and_a_rebaser_killed_on_sqs(aws_cluster: Cluster, inputs: Path,
                                              reference: bytes) -> None:
    """An s3:// input under an allowed prefix; the rebaser killed mid-job and started again:
    the FIFO queue hands its groups to the new process once the messages' visibility lapses,
    and the output is the same bytes."""
    bucket = aws_cluster.bucket  # type: ignore[attr-defined]
    boto3.client("s3").upload_file(str(inputs / "carphone.mp4"), bucket, "in/carphone.mp4")
    aws_cluster.poller("encoder")
    aws_cluster.poller("decoder")
    from shared.pipeline.messages import job_id_for

    aws_cluster.post({"version": 1, "id": "from-s3", "input": f"s3://{bucket}/in/carphone.mp4",
                      "output": f"s3://{bucket}/out/from-s3.ivf", "frames_per_chunk": 3,
                      "chunks_per_group": 8, "cq_level": 20, "format": "ivf"})
    job = job_id_for(None, "from-s3")
    killed: list[bool] = []

    def kill_rebaser(records: Any) -> None:
        rebase = records.progress(job).get("rebase")
        if not killed and rebase and rebase["done"] >= 8:
            aws_cluster.services["rebaser"].kill9()
            killed.append(True)
            aws_cluster.services["rebaser"].start()

    done(aws_cluster, job, during=kill_rebaser)
    assert killed
    assert output_bytes(aws_cluster, "out/from-s3.ivf") == reference


def test_excamera_up_on_sqs_and_s3(moto: str, tmp_path: Path, inputs: Path,
                                   reference: bytes) -> None:
    """`excamera up --broker sqs:// --store s3://...` against the endpoint AWS_ENDPOINT_URL
    names (moto): every service on SQS (the encoder and decoder as Celery workers), an HTTP
    job whose output comes back from S3 byte-identical."""
    from services_support import excamera_up, http_json, wait_done

    bucket = f"b{secrets.token_hex(4)}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    source = inputs / "carphone.mp4"
    with cluster_at(tmp_path, inputs, broker="sqs://", store=f"s3://{bucket}/store") as names:
        token = "t" * 24
        env = {**names.env(), "EXCAMERA_API_TOKENS": f"me:{token}"}
        with excamera_up(env, "--broker=sqs://", f"--store=s3://{bucket}/store",
                         f"--db={names.db_url}", f"--queue-prefix={names.prefix}",
                         f"--allow-input={inputs.as_uri()}/") as (url, _):
            job = http_json(f"{url}/v1/jobs", token, {
                "input": source.as_uri(), "frames_per_chunk": 3, "chunks_per_group": 8,
                "format": "ivf"})["id"]
            status = wait_done(url, token, job)
            assert status["state"] == "done", status
        key = f"store/outputs/{job}/output.ivf"
        assert boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read() == reference
