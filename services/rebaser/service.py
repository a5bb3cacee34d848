"""The rebaser: stage 5 in chunk order within each group, groups in parallel; then the join.

Ordering. Rebase tasks are published to a consistent-hash exchange with the routing key
"job:group", so every task of a group lands in the same one of K shard queues. Each shard is
owned by one rebaser process at a time, which consumes it alone: the owner holds an exclusive
*lease* queue, which the broker deletes the moment the owner's connection goes (a kill -9
included), and only then may another process take the shard over. The shard queues are also
single-active-consumer queues, so even a second consumer could never run beside the owner.

Sharing. Every rebaser process consumes a headcount queue; each aims to own its fair share of
the K shards (K divided by the headcount, rounded up), taking free leases and handing back
surplus ones, re-checked every `BALANCE_INTERVAL`. A process that dies frees its shards, which
the others take within one interval; unacknowledged messages go back to the shard queue.

Links. A group's owner keeps the exit state of its last link in memory (`stages.HELD_STATES`)
and runs link i once stage 4 of chunk i is done and link i-1 is final (the records say).
A link that arrives early is held back, unacknowledged, until its predecessor is done. A
process that does not hold a state (it took the group over) decodes it from the stored final
chunks, so no finished link is ever redone. A message is acknowledged only once its link is
final. Transient failures are retried in place, in order (never re-queued to the tail, which
would break the order), with backoff, until the retries run out and the job fails.

This file is the RabbitMQ transport of the rebaser; the links themselves run through the same
adapter (and so the same stage function) as every other task.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import amqp
import kombu

from shared.pipeline.messages import MessageError, TaskMessage, load_json, parse_task

from ..adapter import describe_failure, set_aside
from ..config import ServiceConfig
from ..errors import TransientError
from ..records import TERMINAL_STATES
from ..retry import backoff
from .join import join_step
from .links import KEEP_ALIVE_EVERY, LinkRunner

__all__ = ["BALANCE_INTERVAL", "RebaserProcess"]

log = logging.getLogger("excamera.rebaser")

BALANCE_INTERVAL = 0.5
HEARTBEAT_SECONDS = 30  # AMQP heartbeats: a rebaser gone silent for two loses its shards
HEARTBEAT_ENV = "EXCAMERA_TEST_HEARTBEAT"  # test hook: a shorter one, to outlast in a test
SHARD_PREFETCH = 256  # early links are held unacknowledged; normally there are none
STEPS = {"join": join_step}
# What a lost connection (to the broker, or to the job records) looks like: the session ends
# and reconnects, and unacknowledged messages are delivered again.
BROKER_ERRORS = (OSError, amqp.exceptions.AMQPError, kombu.exceptions.KombuError,
                 TransientError)


@dataclass
class _Delivery:
    channel: Any
    tag: int
    body: bytes
    source: str
    shard: int | None  # None: the join queue


@dataclass
class _Shard:
    number: int
    channel: Any  # consuming the shard queue
    lease: Any  # the channel that declared the lease queue
    # Links held back until their predecessor is final, by (job, chunk index).
    pending: dict[tuple[str, int], _Delivery] = field(default_factory=dict)


class RebaserProcess(LinkRunner):
    """One rebaser process: `run()` until `stop()` (or SIGTERM)."""

    steps = STEPS

    def __init__(self, config: ServiceConfig) -> None:
        super().__init__(config)
        self._inbox: deque[_Delivery] = deque()
        self._shards: dict[int, _Shard] = {}
        self._connection: kombu.Connection | None = None

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> None:
        self.install_signals()
        failures = 0
        while not self._stopping:
            try:
                self._session()
                failures = 0
            except BROKER_ERRORS as exc:
                failures += 1
                delay = backoff(min(failures, 6))
                log.warning("rebaser: broker connection lost (%s); reconnecting in %.1f s",
                            exc, delay)
                self._forget_session()
                time.sleep(delay)

    def _session(self) -> None:
        heartbeat = float(os.environ.get(HEARTBEAT_ENV) or HEARTBEAT_SECONDS)
        self.keep_alive_every = min(KEEP_ALIVE_EVERY, heartbeat / 3)  # py-amqp's rate is 2
        connection = kombu.Connection(self.config.broker, heartbeat=heartbeat,
                                      transport_options={"confirm_publish": True})
        connection.ensure_connection(max_retries=1)
        self._connection = connection
        try:
            self.topology.declare(connection)
            members = connection.channel()
            members.basic_consume(self.topology.rebasers, no_ack=True, callback=lambda m: None)
            joins = connection.channel()
            joins.basic_qos(0, 1, False)
            joins.basic_consume(self.topology.join, callback=self._receiver(joins, None))
            next_balance = 0.0
            while not self._stopping:
                if time.monotonic() >= next_balance:
                    self._balance(connection)
                    self._release_ended()
                    next_balance = time.monotonic() + BALANCE_INTERVAL
                self._drain(connection)
                while self._inbox and not self._stopping:
                    self._process(self._inbox.popleft())
                self.tick()
                connection.heartbeat_check()
        finally:
            self._release_all()
            with contextlib.suppress(Exception):
                connection.release()
            self._connection = None

    def _forget_session(self) -> None:
        self._inbox.clear()
        self._shards.clear()

    def _drain(self, connection: kombu.Connection) -> None:
        with contextlib.suppress(TimeoutError):
            connection.drain_events(timeout=0.05 if self._inbox else 0.2)

    def _receiver(self, channel: Any, shard: int | None, source: str | None = None) -> Any:
        source = source or (self.topology.join if shard is None else self.topology.shard(shard))

        def receive(message: Any) -> None:
            self._inbox.append(_Delivery(channel, message.delivery_tag, message.body, source,
                                         shard))

        return receive

    # ------------------------------------------------------------------ shard ownership

    def _balance(self, connection: kombu.Connection) -> None:
        channel = connection.default_channel
        headcount = max(1, channel.queue_declare(self.topology.rebasers, passive=True)
                        .consumer_count)
        target = math.ceil(self.topology.shards / headcount)
        while len(self._shards) > target:
            self._release(max(self._shards, key=lambda n: (not self._busy(n), n)))
        if len(self._shards) >= target:
            return
        free = [n for n in range(self.topology.shards) if n not in self._shards]
        random.shuffle(free)
        for number in free:
            if len(self._shards) >= target:
                break
            self._try_acquire(connection, number)

    def _busy(self, number: int) -> bool:
        return bool(self._shards[number].pending)

    def _try_acquire(self, connection: kombu.Connection, number: int) -> bool:
        lease = connection.channel()
        try:
            lease.queue_declare(self.topology.lease(number), exclusive=True, auto_delete=True)
        except amqp.exceptions.ResourceLocked:
            return False  # owned by another process (the broker closed this channel)
        except amqp.exceptions.ChannelError:
            return False
        channel = connection.channel()
        channel.basic_qos(0, SHARD_PREFETCH, False)
        channel.basic_consume(self.topology.shard(number), callback=self._receiver(channel,
                                                                                   number))
        self._shards[number] = _Shard(number, channel, lease)
        log.info("rebaser %s: owns shard %d", self.runtime.worker, number)
        return True

    def _release(self, number: int) -> None:
        shard = self._shards.pop(number)
        # Closing the channel hands its unacknowledged messages (held-back links included)
        # back to the queue, before the lease goes and another process may take the shard.
        self._inbox = deque(d for d in self._inbox if d.shard != number)
        with contextlib.suppress(Exception):
            shard.channel.close()
        # An exclusive queue lives as long as its connection, not its channel: delete it.
        with contextlib.suppress(Exception):
            shard.lease.queue_delete(self.topology.lease(number))
        with contextlib.suppress(Exception):
            shard.lease.close()
        log.info("rebaser %s: handed shard %d back", self.runtime.worker, number)

    def _release_all(self) -> None:
        for number in list(self._shards):
            self._release(number)

    @property
    def owned_shards(self) -> list[int]:
        return sorted(self._shards)

    # ------------------------------------------------------------------ messages

    def _process(self, delivery: _Delivery) -> None:
        """One delivery. Broker and database trouble propagates (the session reconnects and
        the unacknowledged message comes back); anything else this message causes sets it
        aside with the reason, never stops the process (which would only meet it again)."""
        try:
            self._process_message(delivery)
        except BROKER_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad message must not stop the rebaser
            reason = describe_failure(exc)
            log.error("rebaser: a message from %s set aside: %s", delivery.source, reason)
            log.debug("rebaser: the failure", exc_info=True)
            set_aside(self.runtime, delivery.body.decode("utf-8", "replace"), reason,
                      delivery.source, said=True)
            delivery.channel.basic_ack(delivery.tag)

    def _process_message(self, delivery: _Delivery) -> None:
        try:
            document = load_json(delivery.body, "task message")
            message = parse_task(document)
        except MessageError as exc:
            set_aside(self.runtime, delivery.body.decode("utf-8", "replace"), str(exc),
                      delivery.source)
            delivery.channel.basic_ack(delivery.tag)
            return
        if delivery.shard is not None and message.stage == "rebase" and self._hold_back(
                message, delivery):
            return
        self.run_link(document, delivery.source)
        delivery.channel.basic_ack(delivery.tag)
        if delivery.shard is not None and message.stage == "rebase":
            self._release_successor(delivery.shard, message.job, message.index)

    def _hold_back(self, message: TaskMessage, delivery: _Delivery) -> bool:
        """Hold a link back, unacknowledged, if its predecessor is not final yet."""
        if not self.before_predecessor(message):
            return False
        shard = self._shards.get(delivery.shard)  # type: ignore[arg-type]
        if shard is not None:
            # Its predecessor (index - 1) is in the same group: a link is held back only at
            # position 2 or later.
            shard.pending[(message.job, message.index)] = delivery
        return True

    def _release_successor(self, shard_number: int, job: str, index: int) -> None:
        """Run the link held back for this one next (no plan needed: a job that has ended,
        or never existed, has none in the store)."""
        shard = self._shards.get(shard_number)
        if shard is None:
            return
        successor = shard.pending.pop((job, index + 1), None)
        if successor is not None:
            self._inbox.appendleft(successor)

    def _release_ended(self) -> None:
        """Links held back for jobs that have ended since (cancelled, failed) or that do not
        exist: their predecessors may never come, so they go through now (the adapter skips
        them, and they are acknowledged) instead of holding the shard's prefetch for ever."""
        jobs = {job for shard in self._shards.values() for job, _ in shard.pending}
        ended = {job for job in jobs
                 if self.runtime.records.job_state(job) in (None, *TERMINAL_STATES)}
        for shard in self._shards.values():
            for key in [key for key in shard.pending if key[0] in ended]:
                self._inbox.append(shard.pending.pop(key))

    def keep_alive(self) -> None:
        """While a link runs: read what the broker sent (its heartbeats; deliveries go to the
        inbox) and send ours, so neither side takes the connection, and with it the shards'
        leases, for dead."""
        if self._connection is not None:
            self._drain(self._connection)
            self._connection.heartbeat_check()
