"""An execution environment for our Lambda handlers, as a process of its own: it does what
Lambda's SQS event source mapping does (receive a batch, invoke the handler with the SQS event,
delete the records it did not report as failed), with the handler's module imported once, as
in a warm environment. moto cannot run Lambda functions here (no Docker), so this stands in.

    python tests/lambda_poller.py encoder|decoder [--batch N] [--duplicate]
                                                 [--fail-puts N]

--duplicate delivers every record twice in its batch (at-least-once delivery); --fail-puts N
makes the first N store writes fail as a throttled S3 would (a transient error), so those
records come back as partial batch failures.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from aws_support import poll_once  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("function", choices=("encoder", "decoder"))
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--duplicate", action="store_true")
    parser.add_argument("--fail-puts", type=int, default=0)
    args = parser.parse_args()

    import boto3

    from services.config import ServiceConfig
    from services.runtime import Runtime

    if args.function == "encoder":
        from services.encoder.lambda_handler import handler
    else:
        from services.decoder.lambda_handler import handler
    runtime = Runtime.current(ServiceConfig.from_env())
    topology = runtime.topology
    queue = topology.encode if args.function == "encoder" else topology.decode
    assert runtime.dispatcher.sqs is not None
    url = runtime.dispatcher.sqs.url(queue)
    if args.fail_puts:
        inject_put_failures(runtime, args.fail_puts)
    client = boto3.client("sqs")
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))

    def deliver(received: list) -> list:
        return [m for m in received for _ in (0, 1)] if args.duplicate else received

    while not stopping:
        if not poll_once(client, url, handler, batch=args.batch, deliver=deliver):
            time.sleep(0.05)
    return 0


def inject_put_failures(runtime: object, count: int) -> None:
    """The first `count` store writes raise TransientError, as a throttled S3 answers."""
    from services.errors import TransientError

    store = runtime.store  # type: ignore[attr-defined]
    inner_put = store.inner.put
    left = [count]

    def put(key: str, data: bytes) -> None:
        if left[0] > 0:
            left[0] -= 1
            raise TransientError("S3: SlowDown (injected)")
        inner_put(key, data)

    store.inner.put = put


if __name__ == "__main__":
    sys.exit(main())
