"""Running the real services for tests: each service as its own process group (so kill -9
takes all of it), on the real RabbitMQ and PostgreSQL, with names of their own (a queue prefix,
a database, a store directory) that are removed afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kombu
import psycopg
import pytest

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
BROKER = "amqp://guest:guest@127.0.0.1:5672//"
# `python -c` with the current directory off sys.path (as `excamera up` runs its children).
CHILD = ("import sys; del sys.path[0]; from shared.console import main; sys.exit(main())",)


def require_peers() -> None:
    """RabbitMQ and PostgreSQL must answer (scripts/test.sh starts them); in CI they must."""
    problems = []
    try:
        with kombu.Connection(BROKER, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:  # noqa: BLE001
        problems.append(f"RabbitMQ at 127.0.0.1:5672 ({exc})")
    try:
        psycopg.connect(PG_ADMIN, connect_timeout=5).close()
    except Exception as exc:  # noqa: BLE001
        problems.append(f"PostgreSQL at 127.0.0.1:5432 ({exc})")
    if problems:
        message = "the services' tests need " + " and ".join(problems)
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@dataclass
class ServiceProcess:
    """One `excamera service NAME` process (and its children), logging to a file; or, with
    `command`, any other program of the test rig (a Lambda poller, say)."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    command: list[str] | None = None

    def start(self) -> ServiceProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child
        argv = self.command or [sys.executable, "-c", *CHILD, "service", self.name, *self.args]
        self.process = subprocess.Popen(
            argv,
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=self.log_path.parent,
        )
        log.close()
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> None:
        """SIGKILL to the whole process group: the service and every worker it forked."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.kill9()

    def restart(self) -> ServiceProcess:
        self.kill9()
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Cluster:
    """Every worker service, on queues, a database and a store of its own."""

    root: Path
    prefix: str
    database: str
    inputs: Path
    outputs: Path
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    extra: list[ServiceProcess] = field(default_factory=list)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    broker: str = BROKER
    store: str | None = None  # None: a directory of its own
    settings: dict[str, Any] = field(default_factory=dict)  # more ServiceConfig fields
    events: list[Any] = field(default_factory=list)  # taken from the events queue so far

    @property
    def store_url(self) -> str:
        return self.store or (self.root / "store").as_uri()

    @property
    def on_sqs(self) -> bool:
        return self.broker.startswith("sqs")

    @property
    def db_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:5432/{self.database}"

    def env_settings(self) -> dict[str, Any]:
        """The ServiceConfig fields this cluster's services get (beyond the URLs)."""
        return {
            "allow_input": (self.inputs.as_uri() + "/", (REPO / "samples").as_uri() + "/",
                            (self.root / "inputs").as_uri() + "/"),
            "allow_output": (self.outputs.as_uri() + "/",), "retention_seconds": 3600.0,
            "rebase_shards": 4, **self.settings,
        }

    def env(self) -> dict[str, str]:
        from services.config import ServiceConfig

        config = ServiceConfig(broker=self.broker, store=self.store_url, db=self.db_url,
                               queue_prefix=self.prefix, **self.env_settings())
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("EXCAMERA_", "PROMETHEUS_"))}
        env.update(config.to_env())
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def service(self, name: str, *args: str) -> ServiceProcess:
        log = self.root / f"{name}-{len(self.extra) + len(self.services)}.log"
        return ServiceProcess(name, ["-v", *args], self.env(), log)

    def start(self, concurrency: dict[str, int] | None = None) -> Cluster:
        concurrency = {"splitter": 1, "encoder": 2, "decoder": 1, "rebaser": 1,
                       **(concurrency or {})}
        for name, count in concurrency.items():
            if count:
                self.metrics_ports[name] = free_port()
                self.services[name] = self.service(
                    name, f"--concurrency={count}", f"--metrics-port={self.metrics_ports[name]}"
                ).start()
        self.wait_ready()
        return self

    def poller(self, function: str, *args: str) -> ServiceProcess:
        """A Lambda execution environment for the encoder or decoder handler (on SQS)."""
        log = self.root / f"lambda-{function}-{len(self.extra)}.log"
        command = [sys.executable, str(REPO / "tests" / "lambda_poller.py"), function, *args]
        service = ServiceProcess(f"lambda-{function}", [], self.env(), log, command=command)
        self.extra.append(service)
        return service.start()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until every worker consumes its queue (and the rebaser owns its shards)."""
        if self.on_sqs:
            self._wait_ready_on_sqs(timeout)
            return
        wanted = {f"{self.prefix}.split": "splitter", f"{self.prefix}.encode": "encoder",
                  f"{self.prefix}.decode": "decoder", f"{self.prefix}.join": "rebaser",
                  f"{self.prefix}.ingest": "splitter"}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            consumers = self.consumer_counts()
            running = {name for name, service in self.services.items() if service.alive}
            if all(consumers.get(queue, 0) > 0 for queue, name in wanted.items()
                   if name in running):
                return
            for service in self.services.values():
                if not service.alive:
                    raise AssertionError(f"{service.name} exited:\n{service.log()[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"services not ready within {timeout} s: {self.consumer_counts()}")

    def _wait_ready_on_sqs(self, timeout: float) -> None:
        """SQS has no consumer counts: until each Celery worker says it is ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for service in self.services.values():
                if not service.alive:
                    raise AssertionError(f"{service.name} exited:\n{service.log()[-3000:]}")
            celery = [s for n, s in self.services.items() if n in ("splitter", "encoder",
                                                                   "decoder")]
            if all(" ready." in s.log() for s in celery):
                time.sleep(1.0)  # the rebaser polls without saying so
                return
            time.sleep(0.2)
        raise AssertionError(f"services not ready on SQS within {timeout} s")

    def consumer_counts(self) -> dict[str, int]:
        counts = {}
        with kombu.Connection(BROKER) as connection:
            for queue in (".split", ".encode", ".decode", ".join", ".ingest", ".rebasers"):
                channel = connection.channel()
                try:
                    counts[self.prefix + queue] = channel.queue_declare(
                        self.prefix + queue, passive=True).consumer_count
                except Exception:  # noqa: BLE001 - not declared yet
                    counts[self.prefix + queue] = 0
        return counts

    def stop(self) -> None:
        for service in [*self.services.values(), *self.extra]:
            service.stop()

    # ------------------------------------------------------------------ jobs

    def post(self, document: dict[str, Any] | bytes, queue: str = "ingest") -> None:
        """Publish a plain JSON message (as an upstream system would) to a queue."""
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        if self.on_sqs:
            import boto3

            from services.sqs import sqs_name

            client = boto3.client("sqs")
            url = client.get_queue_url(QueueName=sqs_name(f"{self.prefix}.{queue}"))["QueueUrl"]
            client.send_message(QueueUrl=url, MessageBody=body.decode())
            return
        with kombu.Connection(BROKER) as connection:
            channel = connection.default_channel
            channel.basic_publish(channel.prepare_message(body, content_type="application/json"),
                                  exchange="", routing_key=f"{self.prefix}.{queue}")

    def submit(self, client_id: str, source: Path, output: Path | None = None,
               **options: Any) -> str:
        """Post an ingest message; returns the job's id."""
        from shared.pipeline.messages import job_id_for

        document = {"version": 1, "id": client_id, "input": source.as_uri(),
                    "frames_per_chunk": 6, "chunks_per_group": 16, "cq_level": 20,
                    "format": "ivf", **options}
        if output is not None:
            document["output"] = output.as_uri()
        self.post(document)
        return job_id_for(options.get("owner"), client_id)

    @contextlib.contextmanager
    def runtime(self) -> Iterator[Any]:
        """A service runtime of this cluster's own (records, store, dispatcher)."""
        from services.config import ServiceConfig
        from services.runtime import Runtime

        runtime = Runtime(ServiceConfig.from_env(
            {k: v for k, v in self.env().items() if k.startswith("EXCAMERA_")}))
        try:
            yield runtime
        finally:
            runtime.close()

    @contextlib.contextmanager
    def records(self) -> Iterator[Any]:
        from services.records import JobRecords

        records = JobRecords(self.db_url, pool_size=1)
        try:
            yield records
        finally:
            records.close()

    def job_exists(self, job: str) -> bool:
        with self.records() as records:
            return records.get_job(job) is not None

    def wait(self, job: str, timeout: float = 120.0, states: tuple[str, ...] = (
            "done", "failed", "cancelled"), during: Callable[[Any], None] | None = None) -> Any:
        """Poll the job's record until it reaches one of `states`; returns the record.
        `during(records)` runs at each poll (to kill a worker at the right moment, say)."""
        deadline = time.monotonic() + timeout
        with self.records() as records:
            while time.monotonic() < deadline:
                record = records.get_job(job)
                if record is not None and record.state in states:
                    return record
                if during is not None:
                    during(records)
                time.sleep(0.05)
            record = records.get_job(job)
            progress = records.progress(job) if record else None
        logs = "\n".join(f"--- {s.name}\n{s.log()[-2000:]}" for s in self.services.values())
        raise AssertionError(f"job {job} not finished within {timeout} s: "
                             f"{record and record.state}, {progress}\n{logs}")

    def events_of(self, job: str, timeout: float = 15.0) -> list[Any]:
        """The events posted for `job` (see `events_for`); other jobs' are kept for theirs."""
        return events_for(job, lambda: self.queue_messages("events"), self.events, timeout)

    def queue_messages(self, queue: str) -> list[Any]:
        """Take every message from a queue (dead letters, say), decoded."""
        messages = []
        if self.on_sqs:
            import boto3

            from services.sqs import sqs_name

            client = boto3.client("sqs")
            url = client.get_queue_url(QueueName=sqs_name(f"{self.prefix}.{queue}"))["QueueUrl"]
            while batch := client.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                                  WaitTimeSeconds=0).get("Messages", []):
                for message in batch:
                    messages.append(json.loads(message["Body"]))
                    client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            return messages
        with kombu.Connection(BROKER) as connection:
            channel = connection.channel()
            while True:
                message = channel.basic_get(f"{self.prefix}.{queue}", no_ack=True)
                if message is None:
                    return messages
                messages.append(json.loads(message.body))


def events_for(job: str, take: Callable[[], list[Any]], seen: list[Any],
               timeout: float = 15.0, settle: float = 0.5) -> list[Any]:
    """The events posted for `job`, validated against their schema: `take()` empties the
    events queue into `seen` (which keeps other jobs' events) until the first of `job`'s has
    come, or `timeout`, then for `settle` more, for any repeat."""
    import jsonschema

    from shared.pipeline.messages import EVENT_SCHEMA

    deadline = time.monotonic() + timeout
    settled: float | None = None
    while time.monotonic() < (deadline if settled is None else settled):
        seen.extend(take())
        if settled is None and any(e.get("job") == job for e in seen):
            settled = time.monotonic() + settle
        time.sleep(0.05)
    mine = [e for e in seen if e.get("job") == job]
    for event in mine:
        jsonschema.validate(event, EVENT_SCHEMA)
    return mine


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def cluster_at(root: Path, inputs: Path, **options: Any) -> Iterator[Cluster]:
    """A cluster (not started) with names of its own, removed afterwards; `options` are
    Cluster fields (broker, store, settings)."""
    require_peers()
    tag = secrets.token_hex(4)
    cluster = Cluster(root=root, prefix=f"t{tag}", database=f"excamera_t_{tag}",
                      inputs=inputs, outputs=root / "out", **options)
    cluster.outputs.mkdir(parents=True, exist_ok=True)
    from services.records import ensure_database

    ensure_database(cluster.db_url)
    try:
        yield cluster
    finally:
        cluster.stop()
        from services.broker import Topology

        if cluster.on_sqs:
            with contextlib.suppress(Exception):
                Topology(cluster.prefix, 4, "sqs").delete(None)  # type: ignore[arg-type]
        else:
            with contextlib.suppress(Exception), kombu.Connection(BROKER) as connection:
                Topology(cluster.prefix, 4).delete(connection)
        with contextlib.suppress(Exception):
            drop_database(cluster.database)


def carphone_inputs(directory: Path, video_dir: Path) -> Path:
    """A directory for the cluster to allow, holding the 120-frame carphone clip."""
    shutil.copy(video_dir / "clips" / "carphone_pristine.mp4", directory / "carphone.mp4")
    return directory


def embedded_output(source: Path, output: Path, n: int = 6, x: int = 16, cq: int = 20,
                    scene_cuts: str = "auto", start_frames: str = "rebase") -> bytes:
    """What `excamera encode` makes of the same input: the reference every service path must
    reproduce byte for byte."""
    from shared.pipeline.runner import run_job

    run_job(source, output, n=n, x=x, quality=cq, workers=2, progress=False,
            scene_cuts=scene_cuts, start_frames=start_frames)
    return output.read_bytes()


def up_banner(up: subprocess.Popen[str]) -> str:
    """What `excamera up` printed until its banner's last line (at most 120 s)."""
    banner = ""
    deadline = time.monotonic() + 120
    while "Ctrl-C" not in banner and time.monotonic() < deadline and up.poll() is None:
        banner += up.stdout.readline()  # type: ignore[union-attr]
    assert "Ctrl-C" in banner, banner
    return banner


@contextlib.contextmanager
def excamera_up(env: dict[str, str], *args: str) -> Iterator[tuple[str, str]]:
    """`excamera up ARGS` in a process group of its own: yields (the API's URL, its banner)
    once the banner is out; then SIGTERM, and checks it exited cleanly."""
    port = free_port()
    up = subprocess.Popen([sys.executable, "-c", *CHILD, "up", f"--port={port}", *args],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True)
    try:
        yield f"http://127.0.0.1:{port}", up_banner(up)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(up.pid, signal.SIGTERM)
        up.wait(60)
    assert up.returncode == 0, up.returncode


def http_json(url: str, token: str, body: dict[str, Any] | bytes | None = None,
              content_type: str = "application/json") -> Any:
    """One request to the API; the answer's JSON."""
    import urllib.request

    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)


def wait_done(url: str, token: str, job: str, timeout: float = 240) -> dict[str, Any]:
    """Poll GET /v1/jobs/ID until the job ends; its status."""
    status: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while status.get("state") not in ("done", "failed", "cancelled") and (
            time.monotonic() < deadline):
        time.sleep(0.2)
        status = http_json(f"{url}/v1/jobs/{job}", token)
    return status
