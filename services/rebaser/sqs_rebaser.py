"""The rebaser on Amazon SQS: the rebase tasks arrive on one FIFO queue, each carrying its
group ("job:group") as MessageGroupId. SQS hands a group's messages out in order and never
two at once: while a message of a group is received and not deleted, no other consumer gets
that group's next one. So any number of rebaser processes share the groups without owning
shards, and a link is deleted from the queue only once it is final.

What RabbitMQ's shards give and SQS does not is affinity: the next link of a group may go to
another process. Every link therefore also stores its exit state (`keep_state`, after its
frames, off the serial path), and a process that does not hold the state reads it with one
request instead of decoding the group. A link that arrives before its predecessor is final
(only a republished duplicate can) is deleted, not held: holding it would block its group,
and the predecessor's completion publishes it again (the records say it was never begun).

A process that dies mid-link leaves its messages invisible for REBASE_VISIBILITY seconds (the
process extends that while it works), after which another process takes them. The join queue
is a plain SQS queue, polled between batches.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from shared.pipeline import stages
from shared.pipeline.messages import MessageError, TaskMessage, load_json, parse_task

from ..adapter import describe_failure, set_aside
from ..config import ServiceConfig
from ..errors import TransientError
from ..retry import backoff
from ..runtime import Runtime
from .join import join_step
from .links import KEEP_ALIVE_EVERY, LinkRunner

__all__ = ["REBASE_VISIBILITY", "SqsRebaserProcess"]

log = logging.getLogger("excamera.rebaser")

# How long a received rebase message stays hidden: a dead rebaser's group waits this long
# before another process takes it over; a live one extends it while it works.
REBASE_VISIBILITY = 30
VISIBILITY_ENV = "EXCAMERA_TEST_REBASE_VISIBILITY"  # test hook: a shorter one, to outlast


def _rebase_keeping_state(runtime: Runtime, message: TaskMessage) -> Any:
    return stages.rebase_serial(runtime.store, message.job, message.index, keep_state=True)


STEPS = {"rebase": _rebase_keeping_state, "join": join_step}


class SqsRebaserProcess(LinkRunner):
    steps = STEPS

    def __init__(self, config: ServiceConfig) -> None:
        super().__init__(config)
        sqs = self.runtime.dispatcher.sqs
        assert sqs is not None, "the SQS rebaser needs an sqs:// broker"
        self.sqs = sqs
        self._held: list[tuple[str, str]] = []  # (queue, receipt handle)
        self.visibility = int(os.environ.get(VISIBILITY_ENV) or REBASE_VISIBILITY)
        self.keep_alive_every = min(KEEP_ALIVE_EVERY, self.visibility / 3)

    def run(self) -> None:
        self.install_signals()
        failures = 0
        while not self._stopping:
            try:
                worked = self._poll(self.topology.rebase_fifo, count=10, wait=1)
                worked |= self._poll(self.topology.join, count=1, wait=0 if worked else 1)
                self.tick()
                failures = 0
            except TransientError as exc:
                failures += 1
                delay = backoff(min(failures, 6))
                log.warning("rebaser: %s; again in %.1f s", exc, delay)
                time.sleep(delay)

    def _poll(self, queue: str, *, count: int, wait: int) -> bool:
        messages = self.sqs.receive(queue, count=count, wait=wait)
        # Held, i.e. kept invisible, until processed: while links run, `keep_alive` extends
        # them; a batch of quick links extends them between links as often.
        self._held = [(queue, message["ReceiptHandle"]) for message in messages]
        if queue == self.topology.rebase_fifo:
            self.keep_alive()  # before starting: a batch may take a while
        for message in messages:
            self._process(queue, message)
            self._held.pop(0)
        return bool(messages)

    def keep_alive(self) -> None:
        """Extend the visibility of the messages received and not yet done with."""
        for queue, receipt in self._held:
            self.sqs.release(queue, receipt, self.visibility)

    def _process(self, queue: str, received: dict[str, Any]) -> None:
        """One message. SQS and database trouble propagates (the message comes back when
        its visibility ends); anything else it causes sets it aside with the reason, never
        stops the process (which would only meet it again)."""
        try:
            self._process_message(queue, received)
        except TransientError:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad message must not stop the rebaser
            reason = describe_failure(exc)
            log.error("rebaser: a message from %s set aside: %s", queue, reason)
            log.debug("rebaser: the failure", exc_info=True)
            set_aside(self.runtime, received.get("Body", ""), reason, queue, said=True)
            self.sqs.delete(queue, received["ReceiptHandle"])

    def _process_message(self, queue: str, received: dict[str, Any]) -> None:
        body = received["Body"]
        try:
            document = load_json(body, "task message")
            message = parse_task(document)
        except MessageError as exc:
            set_aside(self.runtime, body, str(exc), queue)
            self.sqs.delete(queue, received["ReceiptHandle"])
            return
        if message.stage != "rebase" or not self.before_predecessor(message):
            self.run_link(document, queue)
        self.sqs.delete(queue, received["ReceiptHandle"])
