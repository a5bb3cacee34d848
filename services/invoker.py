"""Invoking the encoder's Lambda function directly, in bursts: for low latency, since an SQS
event source mapping scales its pollers up by a few hundred a minute, while direct
asynchronous invocations reach a thousand environments in seconds.

Each task goes out as an SQS-shaped event of one record, the same the handler gets from its
queue, so one handler serves both. A throttled invocation (TooManyRequests, or a 5xx) is
retried with exponential backoff and jitter; the original system had no retries and saw 7-14 %
of 1,000-way invocations throttled. The same task also goes to the encode queue, delayed
(`FALLBACK_DELAY`) and marked `fallback`: if the direct invocation ran, the queued copy finds
the task done and costs one short invocation; while it still runs, the copy is handed back
until that run's deadline (services/adapter.py), so a long task is not run twice; if it never
ran (throttled past its retries, or lost) or missed its deadline, the copy runs it. Should two
copies run all the same, either may write: the stages' outputs are the same bytes whoever
writes them.

Warm-up: when a job is accepted, before its split finishes, `warm(n)` starts execution
environments with an event that only loads the code, so the split's burst finds them warm.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DIRECT_RUN_LIMIT", "FALLBACK_DELAY", "InvokeStats", "Invoker", "direct_event"]

log = logging.getLogger("excamera.invoker")

FALLBACK_DELAY = 60  # seconds before the queued copy of a directly invoked task is delivered
# A direct invocation runs at most Lambda's longest timeout (900 s); one running longer than
# this is dead (timed out, killed), and its queued copy runs the task.
DIRECT_RUN_LIMIT = 900 + 60
_THROTTLED = {"TooManyRequestsException", "ThrottlingException", "EC2ThrottledException",
              "ServiceException", "ResourceNotReadyException", "Throttling"}


@dataclass
class InvokeStats:
    invoked: int = 0
    throttled: int = 0  # refusals, each retried
    failed: int = 0  # given up after the retries (the queued copy still runs them)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *, invoked: int = 0, throttled: int = 0, failed: int = 0) -> None:
        with self.lock:
            self.invoked += invoked
            self.throttled += throttled
            self.failed += failed


def direct_event(document: dict[str, Any], function: str) -> dict[str, Any]:
    """A task as the one record of an SQS-shaped event (what the handler reads)."""
    identity = f"direct:{document.get('job')}:{document.get('stage')}:{document.get('index')}"
    return {"Records": [{"messageId": identity, "receiptHandle": "", "body": json.dumps(document),
                         "attributes": {"ApproximateReceiveCount": "1"},
                         "eventSource": "excamera:direct", "eventSourceARN": f"direct:{function}"}]}


class Invoker:
    def __init__(self, function: str, client: Any | None = None, *, retries: int = 8,
                 burst: int = 64, base_delay: float = 0.05, max_delay: float = 5.0) -> None:
        self.function = function
        self._client = client
        self.retries = retries
        self.burst = burst
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.stats = InvokeStats()

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            # Our own retries (with jitter) decide; botocore's would stack on them.
            self._client = boto3.client("lambda", config=Config(
                retries={"max_attempts": 1, "mode": "standard"}, max_pool_connections=128))
        return self._client

    def invoke(self, event: dict[str, Any]) -> bool:
        """One asynchronous invocation, retried while throttled; False if it never went."""
        from botocore.exceptions import BotoCoreError, ClientError

        payload = json.dumps(event).encode()
        for attempt in range(self.retries + 1):
            try:
                self.client.invoke(FunctionName=self.function, InvocationType="Event",
                                   Payload=payload)
                self.stats.add(invoked=1)
                return True
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if code not in _THROTTLED and status not in (429, 500, 502, 503):
                    log.error("invoking %s: %s", self.function, exc)
                    break
                self.stats.add(throttled=1)
            except BotoCoreError as exc:  # the endpoint out of reach: as good as throttled
                log.warning("invoking %s: %s", self.function, exc)
                self.stats.add(throttled=1)
            if attempt < self.retries:
                time.sleep(self._delay(attempt))
        self.stats.add(failed=1)
        return False

    def _delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2^attempt)] (AWS's advice for many
        clients retrying at once)."""
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** attempt))

    def invoke_all(self, documents: Iterable[dict[str, Any]]) -> InvokeStats:
        """Invoke the function once per task document, up to `burst` calls in flight."""
        with ThreadPoolExecutor(self.burst, thread_name_prefix="invoke") as pool:
            list(pool.map(lambda d: self.invoke(direct_event(d, self.function)), documents))
        return self.stats

    def warm(self, count: int) -> InvokeStats:
        """Start about `count` execution environments (they only load the code)."""
        with ThreadPoolExecutor(min(self.burst, max(1, count)),
                                thread_name_prefix="warm") as pool:
            list(pool.map(lambda _: self.invoke({"warm": True}), range(count)))
        return self.stats
