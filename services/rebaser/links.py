"""What every rebaser process does with a link, whichever queue it came from (RabbitMQ's
shards, service.py; SQS's FIFO queue, sqs_rebaser.py): tell whether it came before its
predecessor is final, and run it through the adapter with transient failures retried in
place, in order (never re-queued to the tail, which would break the order), until the
retries run out and the job fails with the reason."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from shared.pipeline.graph import TaskId
from shared.pipeline.messages import MessageError, TaskMessage, parse_task

from ..adapter import Step, fail, handle
from ..config import ServiceConfig
from ..errors import TransientError
from ..events import Sweeper
from ..hedger import Hedger
from ..records import TERMINAL_STATES
from ..retry import backoff
from ..runtime import Runtime

__all__ = ["KEEP_ALIVE_EVERY", "LINK_DELAY_ENV", "LinkRunner"]

log = logging.getLogger("excamera.rebaser")

# Test hook: seconds each link waits before it runs, so a test can kill a rebaser mid-group.
LINK_DELAY_ENV = "EXCAMERA_TEST_LINK_DELAY"
# How often a rebaser keeps its hold on what it works on while links run: well within
# RabbitMQ's heartbeat (30 s) and SQS's visibility (REBASE_VISIBILITY, 30 s).
KEEP_ALIVE_EVERY = 5.0


class LinkRunner:
    """The part of a rebaser process that is not its transport."""

    steps: dict[str, Step] = {}

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.runtime = Runtime.current(config)
        self.topology = self.runtime.topology
        self.hedger = Hedger(self.runtime)
        self.sweeper = Sweeper(self.runtime)
        self.links_run = 0
        self._stopping = False
        self._kept_alive = time.monotonic()
        self.keep_alive_every = KEEP_ALIVE_EVERY

    def tick(self) -> None:
        """The periodic work of a rebaser's loop: hedging stragglers, posting missed ends."""
        self.hedger.tick()
        self.sweeper.tick()

    def stop(self, *_: Any) -> None:
        self._stopping = True

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)

    def before_predecessor(self, message: TaskMessage) -> bool:
        """Whether this link arrived before link index-1 of its group is final."""
        records = self.runtime.records
        if records.job_state(message.job) in (None, *TERMINAL_STATES):
            return False  # the adapter skips it
        try:
            plan = self.runtime.plan(message.job)
        except KeyError:
            return False  # no plan (yet): nothing to wait for; the adapter says what is wrong
        return plan.position(message.index) >= 2 and not records.is_done(
            message.job, TaskId("rebase", message.index - 1))

    def run_link(self, document: Any, source: str) -> None:
        """The adapter on one message, in a thread of its own, while this one keeps the
        transport's hold on the message (a link, or a big job's join, can outlast the broker's
        heartbeats or SQS's visibility: the message would go to a second rebaser meanwhile).
        What went wrong with the transport meanwhile is raised once the link has ended."""
        finished = threading.Event()
        failures: list[BaseException] = []

        def work() -> None:
            try:
                self._run_link(document, source)
            except BaseException as exc:  # noqa: BLE001 - raised below, in this thread
                failures.append(exc)
            finally:
                finished.set()

        thread = threading.Thread(target=work, name="link", daemon=True)
        thread.start()
        while not finished.wait(max(0.0, self._kept_alive + self.keep_alive_every
                                    - time.monotonic())):
            self._kept_alive = time.monotonic()
            if not failures:
                try:
                    self.keep_alive()
                except Exception as exc:  # noqa: BLE001 - the transport's; after the link
                    failures.append(exc)
        thread.join()
        if failures:
            raise failures[0]

    def keep_alive(self) -> None:
        """Keep the transport's hold on the messages being worked on (every
        `keep_alive_every` seconds while links run; each transport says how)."""

    def _run_link(self, document: Any, source: str) -> None:
        """The adapter on one message, transient failures retried here, in place."""
        if os.environ.get(LINK_DELAY_ENV):
            self.pause(float(os.environ[LINK_DELAY_ENV]))
        for retry in range(self.config.retries + 1):
            try:
                began = time.monotonic()
                outcome = handle(document, self.runtime, service="rebaser", source=source,
                                 steps=self.steps)
                self.links_run += 1
                log.info("rebaser: %s %s in %.2f s", _named(document), outcome.value,
                         time.monotonic() - began)  # -v: a line per task, as the workers'
                return
            except TransientError as exc:
                if retry == self.config.retries:
                    fail(self.runtime, parse_task(document),
                         f"gave up after {self.config.retries} retries: {exc}", attempt=0,
                         source=source)
                    return
                delay = backoff(retry)
                log.warning("rebaser: %s; retrying in %.1f s", exc, delay)
                self.pause(delay)

    def pause(self, seconds: float) -> None:
        """Wait, in the link's thread (`run_link` keeps the transport alive meanwhile)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._stopping:
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


def _named(document: Any) -> str:
    try:
        return str(parse_task(document))
    except MessageError:
        return "a message"
