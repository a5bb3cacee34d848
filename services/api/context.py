"""What every handler works with: the process's runtime (store, job records, dispatcher), the
tokens, the limits, and the two executors that keep blocking work off the event loop.

Two executors, so that one kind of work never queues behind the other: `control` runs the short
database and broker calls (a status request must answer in milliseconds even while uploads are
copied), `files` runs what touches big files or the network (storing uploads, checking videos,
resolving input hosts, deleting intermediates).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import kombu
from aiohttp import web
from kombu.exceptions import KombuError

from shared.pipeline.messages import MAX_MESSAGE_BYTES

from ..config import API_IDLE_SECONDS, ServiceConfig
from ..errors import TransientError
from ..events import ANNOUNCE_GRACE_SECONDS
from ..runtime import Runtime
from .auth import Tokens

__all__ = ["CONTEXT", "ApiContext", "Limits"]

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    max_json_bytes: int = MAX_MESSAGE_BYTES
    max_upload_bytes: int = 8 << 30
    max_page: int = 1000  # items per page of a listing
    default_page: int = 100
    janitor_seconds: float = 60.0  # how often ended jobs past retention are cleaned up
    # ... and ends not announced this long after the job ended are announced (events.py).
    announce_grace_seconds: float = ANNOUNCE_GRACE_SECONDS
    link_seconds: int = 3600  # how long a status's signed output link stays valid
    body_idle_seconds: float = 60.0  # a request body that sends nothing this long gets a 408
    # A connection that completes no request's headers this long after it opens or after its
    # last answer is closed. Longer than a load balancer's idle timeout (60 s by default on an
    # ALB), so the balancer, which reuses connections, is the side that closes them.
    connection_idle_seconds: float = API_IDLE_SECONDS
    upload_dir: Path | None = None  # where uploads stream to first (default: the system's)
    control_threads: int = 8
    file_threads: int = 4


class ApiContext:
    def __init__(self, config: ServiceConfig, tokens: Tokens, limits: Limits) -> None:
        self.config = config
        self.tokens = tokens
        self.limits = limits
        self.runtime = Runtime(config)  # this app's own: a test may run several apps
        self._control = ThreadPoolExecutor(limits.control_threads, "excamera-api-control")
        self._files = ThreadPoolExecutor(limits.file_threads, "excamera-api-files")
        self._declared = False
        self._declare_lock = threading.Lock()

    async def control(self, function: Callable[..., T], *args: Any) -> T:
        """Run a short blocking call (database, broker) on the control executor."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._control, functools.partial(function, *args))

    async def files(self, function: Callable[..., T], *args: Any) -> T:
        """Run blocking file or network work on the files executor."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._files, functools.partial(function, *args))

    def declare_queues(self) -> None:
        """Declare the broker's queues once (blocking). Publishing to a queue that does not
        exist would drop the message without a word, so this happens before the first
        publish, and again after a failure."""
        if self._declared:
            return
        with self._declare_lock:
            if self._declared:
                return
            with self.broker_connection() as connection:
                self.runtime.topology.declare(connection)
            self._declared = True

    def forget_queues(self) -> None:
        self._declared = False

    @contextlib.contextmanager
    def broker_connection(self) -> Iterator[Any]:
        """A fresh connection to the broker, or TransientError at once if it is down (kombu
        would otherwise retry for ever)."""
        connection: Any = kombu.Connection(  # type: ignore[attr-defined, no-untyped-call]
            self.config.broker, connect_timeout=5)
        try:
            try:
                # One quick retry for a dropped connection; a health check must not wait.
                connection.ensure_connection(max_retries=1, interval_start=0.2,
                                             interval_step=0)
            except (OSError, KombuError) as exc:
                raise TransientError(f"broker unavailable: {exc}") from exc
            yield connection
        finally:
            connection.release()

    def check_broker(self) -> None:
        """One round trip to the broker (blocking): the ingest queue must exist."""
        with self.broker_connection() as connection:
            try:
                connection.default_channel.queue_declare(self.runtime.topology.ingest,
                                                         passive=True)
            except (OSError, KombuError) as exc:
                raise TransientError(f"broker: {exc}") from exc
            except Exception as exc:  # noqa: BLE001 - amqp's NotFound and the like
                raise TransientError(f"broker: the ingest queue is missing ({exc})") from exc

    def close(self) -> None:
        self._control.shutdown(wait=True, cancel_futures=True)
        self._files.shutdown(wait=True, cancel_futures=True)
        self.runtime.close()


CONTEXT = web.AppKey("excamera_api", ApiContext)
