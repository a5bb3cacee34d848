"""The queues, and how messages reach them: one place that knows the broker's shape.

    <prefix>.ingest        plain JSON jobs from upstream systems and the API (splitter)
    <prefix>.ingest.dead   ingest messages that could not be accepted, with the reason
    <prefix>.split         Celery: split a job's input into chunks (splitter)
    <prefix>.encode        Celery, prioritized: phase 1 and stage 4 (encoder)
    <prefix>.decode        Celery, prioritized: exit states and group checks (decoder)
    <prefix>.rebase        consistent-hash exchange over the shard queues <prefix>.rebase.K:
                           plain JSON rebase tasks, routed by "job:group", so a group always
                           lands in the same shard, which one rebaser owns at a time
    <prefix>.join          plain JSON: join a finished job's chunks into its output (rebaser)
    <prefix>.dead          tasks set aside after a permanent failure, with the reason

The URL chooses the transport: amqp:// is RabbitMQ, sqs:// is Amazon SQS (through kombu's SQS
transport for the Celery tasks, boto3 for the plain JSON: services/sqs.py), where the rebase
shards become one FIFO queue, <prefix>.rebase.fifo, grouped by "job:group". Nothing outside this
module and the rebaser's transports depends on which it is.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

import kombu
from celery import Celery
from kombu.exceptions import KombuError, OperationalError

from shared.pipeline.graph import STAGES
from shared.pipeline.messages import DeadLetter, IngestMessage, JobEvent, TaskMessage

from .config import DEADLINES, ServiceConfig
from .errors import ConfigError, TransientError
from .sqs import SqsQueues, sqs_name

__all__ = ["CELERY_TASKS", "Dispatcher", "Topology", "make_celery"]

# The Celery task each Celery-run service consumes (its only argument: a TaskMessage).
CELERY_TASKS = {
    "splitter": "excamera.splitter.split",
    "encoder": "excamera.encoder.run",
    "decoder": "excamera.decoder.run",
}
MAX_PRIORITY = 9
# SQS: how long a received message stays hidden from other consumers; above the longest
# task (DEADLINES), so no message is handed to a second worker while the first still works.
VISIBILITY_TIMEOUT = 2 * int(max(DEADLINES.values()))
# Test hook: every task message is published twice, as an at-least-once broker may deliver it.
DUPLICATE_ENV = "EXCAMERA_TEST_DUPLICATE_TASKS"
# Publishing retries through a broker restart (about 30 s), then gives up as transient.
PUBLISH_RETRY = {"max_retries": 12, "interval_start": 0.25, "interval_step": 0.5,
                 "interval_max": 4.0}
# For a publish that has somewhere else to go when the broker is down (the API's outbox: the
# job is recorded, and the janitor posts it later): a caller waits a second, not half a minute.
BRIEF_PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0.25, "interval_step": 0.5,
                       "interval_max": 0.5}


EVENTS_KEPT_MS = 14 * 24 * 3600 * 1000
EVENTS_MAX = 1_000_000


class Topology:
    """The names of every exchange and queue, under one prefix (tests use their own), for
    the transport the broker URL names: "amqp" (RabbitMQ) or "sqs"."""

    def __init__(self, prefix: str = "excamera", shards: int = 8,
                 transport: str = "amqp") -> None:
        self.prefix = prefix
        self.shards = shards
        self.transport = transport
        self.ingest = f"{prefix}.ingest"
        self.ingest_dead = f"{prefix}.ingest.dead"
        self.events = f"{prefix}.events"  # a job has ended (JobEvent), for upstream systems
        self.dead = f"{prefix}.dead"
        self.split = f"{prefix}.split"
        self.encode = f"{prefix}.encode"
        self.decode = f"{prefix}.decode"
        self.rebase_exchange = f"{prefix}.rebase"
        self.rebase_fifo = f"{prefix}.rebase.fifo"  # SQS: one FIFO queue, grouped by job:group
        self.join = f"{prefix}.join"
        self.rebasers = f"{prefix}.rebasers"  # every rebaser process consumes it: a headcount
        self.visibility_timeout = VISIBILITY_TIMEOUT

    @classmethod
    def for_config(cls, config: ServiceConfig) -> Topology:
        topology = cls(config.queue_prefix, config.rebase_shards, transport_of(config.broker))
        topology.visibility_timeout = visibility_timeout(config)
        return topology

    @property
    def on_sqs(self) -> bool:
        return self.transport == "sqs"

    def shard(self, number: int) -> str:
        return f"{self.prefix}.rebase.{number}"

    def lease(self, number: int) -> str:
        """An exclusive queue whose holder owns shard `number` (it vanishes with the holder's
        connection, so a killed rebaser's shards are free at once)."""
        return f"{self.prefix}.rebase.{number}.lease"

    def queue_of_service(self, service: str) -> str:
        return {"splitter": self.split, "encoder": self.encode, "decoder": self.decode}[service]

    def celery_queues(self) -> list[kombu.Queue]:
        def queue(name: str, priority: bool) -> kombu.Queue:
            # SQS has no priorities (nor other exchanges than kombu's own direct routing).
            arguments = {"x-max-priority": MAX_PRIORITY} if priority and not self.on_sqs else {}
            return kombu.Queue(name, kombu.Exchange(name, "direct", durable=True), name,
                               durable=True, queue_arguments=arguments)

        return [queue(self.split, False), queue(self.encode, True), queue(self.decode, True)]

    def plain_queue_names(self) -> list[str]:
        """The queues that carry plain JSON documents."""
        names = [self.ingest, self.ingest_dead, self.events, self.dead, self.join]
        if self.on_sqs:
            return [*names, self.rebase_fifo]
        return [*names, self.rebasers, *(self.shard(n) for n in range(self.shards))]

    def plain_queues(self) -> list[kombu.Queue]:
        direct = kombu.Exchange("", "direct")  # the default exchange: routing key = queue
        names = (self.ingest, self.ingest_dead, self.dead, self.join, self.rebasers)
        queues = [kombu.Queue(name, direct, name, durable=True) for name in names]
        # Nobody may consume the events: they expire as on SQS (14 days), and the oldest go
        # first past a million, so an unread queue cannot fill the broker's disk.
        queues.append(kombu.Queue(self.events, direct, self.events, durable=True,
                                  queue_arguments={"x-message-ttl": EVENTS_KEPT_MS,
                                                   "x-max-length": EVENTS_MAX}))
        hashed = kombu.Exchange(self.rebase_exchange, "x-consistent-hash", durable=True)
        for number in range(self.shards):
            # Weight "1" each: groups spread evenly over the shards.
            queues.append(kombu.Queue(
                self.shard(number), hashed, "1", durable=True,
                queue_arguments={"x-single-active-consumer": True},
            ))
        return queues

    def all_queue_names(self) -> list[str]:
        return [q.name for q in self.celery_queues()] + self.plain_queue_names()

    def declare(self, connection: kombu.Connection, sqs: SqsQueues | None = None) -> None:
        """Make every queue (each declaration is idempotent)."""
        with _broker_errors("declaring the queues"):
            if self.on_sqs:
                sqs = sqs or SqsQueues(self.visibility_timeout)
                for name in self.all_queue_names():
                    sqs.url(name)
                return
            channel = connection.default_channel
            for queue in (*self.celery_queues(), *self.plain_queues()):
                queue(channel).declare()
            self._check_no_more_shards(connection)

    def _check_no_more_shards(self, connection: kombu.Connection) -> None:
        """ConfigError if the broker has a shard beyond this topology's: the hash exchange
        keeps every binding it was given, so groups hashed to a shard nobody consumes would
        wait there for ever, unseen."""
        from amqp.exceptions import NotFound

        probe = connection.channel()  # a failed passive declare closes its channel
        try:
            probe.queue_declare(self.shard(self.shards), passive=True)
        except NotFound:
            return
        finally:
            with contextlib.suppress(Exception):
                probe.close()
        raise ConfigError(
            f"the broker has rebase shard queue {self.shard(self.shards)!r}, beyond the "
            f"{self.shards} shards configured (EXCAMERA_REBASE_SHARDS): groups routed there "
            f"would never run. Give every service the shard count the queues were made with, "
            f"or delete exchange {self.rebase_exchange!r} and its shard queues first")

    def delete(self, connection: kombu.Connection, sqs: SqsQueues | None = None) -> None:
        """Remove every queue and exchange (tests clean up after themselves)."""
        if self.on_sqs:
            sqs = sqs or SqsQueues(self.visibility_timeout)
            for name in self.all_queue_names():
                sqs.purge_and_delete(name)
            return
        channel = connection.channel()
        for queue in (*self.celery_queues(), *self.plain_queues()):
            with contextlib.suppress(Exception):
                channel.queue_delete(queue.name)
            with contextlib.suppress(Exception):
                if queue.exchange.name:
                    channel.exchange_delete(queue.exchange.name)
        channel.close()


def visibility_timeout(config: ServiceConfig) -> int:
    return config.sqs_visibility_timeout or VISIBILITY_TIMEOUT


def transport_of(broker: str) -> str:
    scheme = broker.split("://", 1)[0].lower()
    if scheme in ("amqp", "amqps", "pyamqp"):
        return "amqp"
    if scheme == "sqs":
        return "sqs"
    raise ConfigError(f"unsupported broker URL scheme {scheme + '://'!r}: use amqp://... "
                      "(RabbitMQ) or sqs:// (Amazon SQS)")


@contextlib.contextmanager
def _broker_errors(doing: str) -> Iterator[None]:
    try:
        yield
    except (OperationalError, ConnectionError, OSError, KombuError) as exc:
        raise TransientError(f"broker unavailable while {doing}: {exc}") from exc


def make_celery(config: ServiceConfig, topology: Topology | None = None) -> Celery:
    """The Celery app every service shares: JSON only, acknowledged after the task (so a
    killed worker's task is delivered again), one task reserved at a time, no results."""
    topology = topology or Topology.for_config(config)
    app = Celery("excamera", broker=config.broker, set_as_current=False)
    longest = max(DEADLINES.values()) * config.deadline_scale
    if topology.on_sqs:
        # A message a worker holds stays invisible this long: above the longest task, or SQS
        # would hand it to a second worker mid-task.
        transport_options = {"visibility_timeout": visibility_timeout(config),
                             "wait_time_seconds": 10, "polling_interval": 0.1,
                             "region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                             "predefined_queues": _predefined_queues(topology)}
        transport = "services.sqs_transport:Transport"  # kombu's, for bodies of any shape
    else:
        transport_options = {"confirm_publish": True}
        transport = None  # the URL's: amqp
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_queues=topology.celery_queues(),
        task_create_missing_queues=False,
        task_default_queue=topology.split,
        task_default_priority=0,
        task_publish_retry=True,
        task_publish_retry_policy=PUBLISH_RETRY,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # ride out a broker restart, however long
        broker_transport=transport,
        broker_transport_options=transport_options,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_time_limit=longest + 120,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        worker_enable_remote_control=False,  # no pidbox queues per worker
        broker_heartbeat=30,
    )
    app.excamera_topology = topology  # type: ignore[attr-defined]
    return app


def _predefined_queues(topology: Topology) -> dict[str, dict[str, str]]:
    """Every queue's URL, for kombu's SQS transport (Celery's queues and the ingest queue the
    splitter consumes through kombu): it then neither lists nor creates
    queues (which a deployment's IAM roles do not allow; the template made them)."""
    sqs = SqsQueues(topology.visibility_timeout)
    with _broker_errors("looking up the queues"):
        return {sqs_name(name): {"url": sqs.url(name)} for name in topology.all_queue_names()}


def priority_for(stage: str, position: int) -> int:
    """The broker priority of a task, higher first: stage 4 feeds the serial chain, so it
    goes before any libvpx encode, and among encodes chain heads go before tails (a head
    gates its whole group)."""
    if stage in ("first", "state"):
        return MAX_PRIORITY - 1
    if stage == "encode":
        return max(1, MAX_PRIORITY - 2 - position)
    return 1


class Dispatcher:
    """Publishes messages where they belong: Celery tasks for the Celery-run services, plain
    JSON for the ingest queue, the rebaser and dead letters. Publishing waits for the broker's
    confirmation, retries through a broker restart, then raises TransientError."""

    def __init__(self, app: Celery, encoder_function: str | None = None) -> None:
        self.app = app
        self.topology: Topology = app.excamera_topology  # type: ignore[attr-defined]
        self.sqs = (SqsQueues(self.topology.visibility_timeout) if self.topology.on_sqs
                    else None)
        self.invoker = None
        if encoder_function and self.sqs is not None:
            from .invoker import Invoker

            self.invoker = Invoker(encoder_function)

    def publish_task(self, message: TaskMessage, *, ordering_key: str, position: int) -> None:
        self.publish_tasks([(message, ordering_key, position)])

    def publish_tasks(self, tasks: list[tuple[TaskMessage, str, int]]) -> None:
        """Publish each (message, ordering key, position in its group), in this order. With
        an encoder function named (AWS), encoder tasks are also invoked directly, as a burst
        (services/invoker.py)."""
        copies = 2 if os.environ.get(DUPLICATE_ENV) else 1
        direct = []
        for message, ordering_key, position in tasks:
            if self.invoker is not None and STAGES[message.stage].service == "encoder":
                direct.append(message.stamped().to_json())
                continue
            for _ in range(copies):
                self._publish_task(message, ordering_key=ordering_key, position=position)
        if direct:
            self._invoke_directly(direct)

    def _invoke_directly(self, documents: list[dict[str, Any]]) -> None:
        """The burst, and each task's delayed copy on the queue (in case its invocation never
        ran); the copy finds the task done if it did."""
        assert self.invoker is not None and self.sqs is not None
        from .invoker import FALLBACK_DELAY

        for document in documents:
            self.sqs.send(self.topology.encode, {**document, "fallback": True},
                          delay=FALLBACK_DELAY)
        self.invoker.invoke_all(documents)

    def _publish_task(self, message: TaskMessage, *, ordering_key: str, position: int) -> None:
        service = STAGES[message.stage].service
        document = message.stamped().to_json()
        if service in CELERY_TASKS:
            with _broker_errors(f"publishing {message}"):
                self.app.send_task(
                    CELERY_TASKS[service], args=[document],
                    queue=self.topology.queue_of_service(service),
                    priority=priority_for(message.stage, position),
                )
        elif message.stage == "rebase":
            if self.sqs is not None:
                self.sqs.send(self.topology.rebase_fifo, document, group=ordering_key,
                              deduplication=f"{message.job}:{message.stage}:{message.index}")
            else:
                self.publish_json(document, exchange=self.topology.rebase_exchange,
                                  routing_key=ordering_key, what=str(message))
        else:
            self.publish_json(document, routing_key=self.topology.join, what=str(message))

    def publish_ingest(self, message: IngestMessage, *, brief: bool = False) -> None:
        """`brief`: retry a lost broker briefly (BRIEF_PUBLISH_RETRY), for an outbox."""
        self.publish_json(message.to_json(), routing_key=self.topology.ingest,
                          what=f"ingest message {message.id}",
                          retry_policy=BRIEF_PUBLISH_RETRY if brief else PUBLISH_RETRY)

    def publish_event(self, event: JobEvent) -> None:
        self.publish_json(event.to_json(), routing_key=self.topology.events,
                          what=f"the end of job {event.job}")

    def publish_dead(self, letter: DeadLetter, queue: str) -> None:
        self.publish_json(letter.to_json(), routing_key=queue, what="a dead letter")

    def publish_json(
        self, document: dict[str, Any], *, routing_key: str, exchange: str = "", what: str,
        retry_policy: dict[str, float] = PUBLISH_RETRY,
    ) -> None:
        if self.sqs is not None:
            self.sqs.send(routing_key, document)
            return
        with _broker_errors(f"publishing {what}"), self.app.producer_or_acquire() as producer:
            producer.publish(
                json.dumps(document).encode(), exchange=exchange, routing_key=routing_key,
                content_type="application/json", content_encoding="utf-8", delivery_mode=2,
                retry=True, retry_policy=retry_policy,
            )

    def queue_depths(self) -> dict[str, int]:
        """Messages waiting in each queue (what an operator scales on)."""
        if self.sqs is not None:
            return {name: self.sqs.depth(name) for name in self.topology.all_queue_names()}
        depths = {}
        with _broker_errors("reading queue depths"), self.app.connection_for_write() as conn:
            channel = conn.channel()
            try:
                for name in self.topology.all_queue_names():
                    try:
                        depths[name] = channel.queue_declare(name, passive=True).message_count
                    except Exception:  # noqa: BLE001 - a missing queue: reopen and go on
                        channel = conn.channel()
            finally:
                with contextlib.suppress(Exception):
                    channel.close()
        return depths
