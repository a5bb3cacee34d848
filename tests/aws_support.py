"""moto in server mode on localhost, standing in for S3 and SQS (there is no AWS here), and a
poller that drives Lambda handlers the way Lambda's SQS event source mapping does: receive a
batch, call the handler with an SQS event made of the real messages, delete what it did not
report as failed."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

REGION = "us-east-1"
ACCOUNT = "123456789012"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto server on a free port; yields its URL, with AWS_* set for boto3 (this process
    and every child started while it runs)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    saved = {key: os.environ.get(key) for key in AWS_ENV}
    os.environ.update(aws_env(url))
    try:
        yield url
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


AWS_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
           "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN")


def aws_env(url: str) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}


def sqs_event(queue_url: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping delivers for these received messages."""
    name = queue_url.rsplit("/", 1)[-1]
    return {"Records": [{
        "messageId": m["MessageId"],
        "receiptHandle": m["ReceiptHandle"],
        "body": m["Body"],
        "attributes": {key: str(value) for key, value in (m.get("Attributes") or {}).items()},
        "messageAttributes": m.get("MessageAttributes") or {},
        "md5OfBody": m.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}",
        "awsRegion": REGION,
    } for m in messages]}


def poll_once(client: Any, queue_url: str, handler: Callable[[dict, Any], dict],
              batch: int = 10, deliver: Callable[[list], list] | None = None) -> int:
    """One round of the event source mapping: up to `batch` messages, one handler call,
    successes deleted. `deliver` may rearrange the batch (repeat records, say). Returns how
    many messages were received."""
    received = client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=batch,
                                      WaitTimeSeconds=0, AttributeNames=["All"],
                                      MessageSystemAttributeNames=["All"]).get("Messages", [])
    if not received:
        return 0
    delivered = deliver(received) if deliver else received
    answer = handler(sqs_event(queue_url, delivered), None) or {}
    failed = {item["itemIdentifier"] for item in answer.get("batchItemFailures", [])}
    for message in received:
        if message["MessageId"] not in failed:
            with contextlib.suppress(Exception):
                client.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return len(received)
