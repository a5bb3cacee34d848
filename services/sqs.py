"""Amazon SQS, for the messages that are plain JSON (ingest, rebase, join, dead letters): sent
and received with boto3 directly, so their bodies are the documents themselves, as upstream
systems, Lambda event sources and operators reading a dead-letter queue see them. The Celery
tasks go through kombu's SQS transport instead (services/broker.py).

Queue names follow kombu's rule for SQS ("." becomes "-", but a ".fifo" suffix stays), so one
name means the same queue to both. The rebase queue is FIFO: each group's tasks carry the
group as MessageGroupId ("job:group"), and SQS delivers a group's messages in order, one at a
time, to whichever consumer asks; an explicit MessageDeduplicationId per task drops a repeated
publish within SQS's five-minute window.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any

from .errors import TransientError

__all__ = ["SqsQueues", "sqs_name"]

# Longest a receive waits for a message (SQS long polling: fewer empty receives, billed less).
LONG_POLL_SECONDS = 10


def sqs_name(name: str) -> str:
    """kombu's SQS name for a queue: dots become dashes, a ".fifo" suffix stays."""
    if name.endswith(".fifo"):
        return name[: -len(".fifo")].replace(".", "-") + ".fifo"
    return name.replace(".", "-")


@contextlib.contextmanager
def _sqs_errors(doing: str) -> Iterator[None]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise TransientError(f"SQS unavailable while {doing}: {exc}") from exc


class SqsQueues:
    """The queues of one topology on SQS: their URLs (looked up, or created when missing,
    which a deployment's template does first), sending, receiving, deleting, depths."""

    def __init__(self, visibility_timeout: int, client: Any | None = None,
                 fifo_visibility_timeout: int = 30) -> None:
        self.visibility_timeout = visibility_timeout
        # The FIFO (rebase) queue's: short, since a dead consumer's group waits that long.
        self.fifo_visibility_timeout = fifo_visibility_timeout
        self._client = client
        self._urls: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("sqs")
        return self._client

    def url(self, name: str) -> str:
        with self._lock:
            if name not in self._urls:
                self._urls[name] = self._find_or_create(sqs_name(name))
            return self._urls[name]

    def _find_or_create(self, name: str) -> str:
        from botocore.exceptions import ClientError

        with _sqs_errors(f"looking up queue {name}"):
            try:
                return self.client.get_queue_url(QueueName=name)["QueueUrl"]
            except ClientError as exc:
                if "NonExistentQueue" not in str(exc) and "QueueDoesNotExist" not in str(exc):
                    raise
            attributes = {"VisibilityTimeout": str(self.visibility_timeout)}
            if name.endswith(".fifo"):
                attributes.update(FifoQueue="true", ContentBasedDeduplication="false",
                                  VisibilityTimeout=str(self.fifo_visibility_timeout))
            return self.client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]

    def send(self, name: str, document: Any, *, group: str | None = None,
             deduplication: str | None = None, delay: int = 0) -> None:
        body = document if isinstance(document, str) else json.dumps(document)
        request: dict[str, Any] = {"QueueUrl": self.url(name), "MessageBody": body}
        if delay and not name.endswith(".fifo"):
            request["DelaySeconds"] = min(delay, 900)
        if name.endswith(".fifo"):
            request["MessageGroupId"] = group or "default"
            if deduplication is not None:
                request["MessageDeduplicationId"] = deduplication
        with _sqs_errors(f"sending to {name}"):
            self.client.send_message(**request)

    def receive(self, name: str, count: int = 10, wait: int = LONG_POLL_SECONDS
                ) -> list[dict[str, Any]]:
        with _sqs_errors(f"receiving from {name}"):
            answer = self.client.receive_message(
                QueueUrl=self.url(name), MaxNumberOfMessages=count, WaitTimeSeconds=wait,
                AttributeNames=["All"], MessageSystemAttributeNames=["All"],
            )
        return answer.get("Messages", [])

    def delete(self, name: str, receipt: str) -> None:
        with _sqs_errors(f"deleting from {name}"):
            self.client.delete_message(QueueUrl=self.url(name), ReceiptHandle=receipt)

    def release(self, name: str, receipt: str, seconds: int = 0) -> None:
        """Make a received message visible again after `seconds`."""
        with _sqs_errors(f"releasing a message of {name}"):
            self.client.change_message_visibility(QueueUrl=self.url(name),
                                                  ReceiptHandle=receipt,
                                                  VisibilityTimeout=seconds)

    def depth(self, name: str) -> int:
        with _sqs_errors(f"reading the depth of {name}"):
            attributes = self.client.get_queue_attributes(
                QueueUrl=self.url(name), AttributeNames=["ApproximateNumberOfMessages"])
        return int(attributes["Attributes"]["ApproximateNumberOfMessages"])

    def purge_and_delete(self, name: str) -> None:
        with contextlib.suppress(Exception):
            self.client.delete_queue(QueueUrl=self.url(name))
        self._urls.pop(name, None)
