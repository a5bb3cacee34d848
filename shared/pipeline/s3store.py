"""The store on S3 (`s3://bucket/prefix`), through boto3: the same `Store` as a local
directory, so no stage or service knows which it has.

- Whole-object puts are atomic on S3 (a reader sees the old object or the new one, never a
  part), which is what lets stages skip work whose output exists.
- Big files go up as multipart uploads (boto3's transfer manager), copies are server-side.
- The endpoint comes from AWS_ENDPOINT_URL when set (moto in tests, MinIO, ...), credentials
  and region from the usual boto3 chain.
- Throttling, 5xx answers and lost connections are `TransientError` (the services retry them
  with backoff); anything else, such as access denied, a `PipelineError` naming the key.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from .errors import PipelineError, TransientError
from .store import Store, check_key

__all__ = ["S3Store"]

# Objects above this go up in parts (S3's minimum part is 5 MiB).
MULTIPART_THRESHOLD = 16 << 20
_TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
    "InternalError", "ServiceUnavailable", "503", "500", "RequestLimitExceeded",
}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


class S3Store(Store):
    def __init__(self, url: str, client: Any | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"not an S3 URL: {url!r} (expected s3://bucket/prefix)")
        self.bucket = parts.netloc
        prefix = parts.path.strip("/")
        if prefix:
            check_key(prefix)
        self.prefix = f"{prefix}/" if prefix else ""
        self._client = client

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(retries={"max_attempts": 5, "mode": "adaptive"},
                            max_pool_connections=32)
            self._client = boto3.client("s3", config=config)
        return self._client

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        from boto3.exceptions import RetriesExceededError, S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            error = self._classified(key, exc)
            raise error from (None if isinstance(error, KeyError) else exc)
        except S3UploadFailedError as exc:
            # The transfer manager's wrapping of the failed part's ClientError (its context):
            # a throttled part is as transient as a throttled put.
            cause = exc.__context__
            if isinstance(cause, ClientError):
                raise self._classified(key, cause) from exc
            raise TransientError(f"S3 {self.bucket}/{self._key(key)}: {exc}") from exc
        except (BotoCoreError, RetriesExceededError) as exc:  # no connection, a timeout, ...
            raise TransientError(f"S3 {self.bucket}: {exc}") from exc

    def _classified(self, key: str, exc: Any) -> Exception:
        """A ClientError as ours: KeyError (missing), TransientError, else PipelineError."""
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _MISSING_CODES:
            return KeyError(key)
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            return TransientError(f"S3 {self.bucket}/{self._key(key)}: {code}")
        return PipelineError(
            f"S3 {self.bucket}/{self._key(key)}: {code}: {error.get('Message', '')}")

    def check(self) -> None:
        """One request to the bucket: it exists, and these credentials reach it."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING_CODES or code == "NoSuchBucket":
                raise PipelineError(f"S3 bucket {self.bucket!r} does not exist") from None
            if code in _TRANSIENT_CODES or code.startswith("5"):
                raise TransientError(f"S3 bucket {self.bucket!r}: {code}") from None
            raise PipelineError(f"S3 bucket {self.bucket!r}: {code or exc}") from None
        except BotoCoreError as exc:  # no credentials, no region, no connection
            raise TransientError(f"S3 bucket {self.bucket!r}: {exc}") from None

    def put(self, key: str, data: bytes) -> None:
        if len(data) > MULTIPART_THRESHOLD:
            with tempfile.NamedTemporaryFile(prefix="excamera-put-") as file:
                file.write(data)
                file.flush()
                self.put_file(key, file.name)
            return
        with self._errors(key):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD,
                                multipart_chunksize=MULTIPART_THRESHOLD)
        with self._errors(key):
            self.client.upload_file(str(path), self.bucket, self._key(key), Config=config)

    def get(self, key: str) -> bytes:
        with self._errors(key):
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except KeyError:
            return False
        return True

    def size(self, key: str) -> int:
        with self._errors(key):
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        return int(head["ContentLength"])

    def copy(self, source: str, destination: str) -> None:
        with self._errors(source):
            # The managed copy: one CopyObject, or a multipart copy above 5 GB.
            self.client.copy({"Bucket": self.bucket, "Key": self._key(source)}, self.bucket,
                             self._key(destination))

    def delete_prefix(self, prefix: str) -> int:
        if not prefix.endswith("/"):
            raise ValueError(f"a prefix to delete must end in '/': {prefix!r}")
        check_key(prefix.rstrip("/"))
        count = 0
        with self._errors(prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix)
            for page in pages:
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                for start in range(0, len(keys), 1000):  # DeleteObjects' limit
                    answer = self.client.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": keys[start:start + 1000],
                                                    "Quiet": True})
                    self._check_deleted(prefix, answer.get("Errors") or [])
                count += len(keys)
        return count

    def _check_deleted(self, prefix: str, errors: list[dict[str, Any]]) -> None:
        """DeleteObjects answers 200 even when it deleted nothing: its per-key errors (access
        denied, throttled) are failures of the delete."""
        if not errors:
            return
        first = errors[0]
        code = str(first.get("Code", ""))
        shown = (f"S3 {self.bucket}/{self.prefix}{prefix}: {len(errors)} objects not "
                 f"deleted ({code}: {first.get('Message', '')}, {first.get('Key', '')})")
        if code in _TRANSIENT_CODES:
            raise TransientError(shown)
        raise PipelineError(shown)

    @contextlib.contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="excamera-object-") as directory:
            path = Path(directory) / Path(key).name
            with self._errors(key):
                self.client.download_file(self.bucket, self._key(key), str(path))
            yield path

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        with self._errors(key):
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        try:
            yield body
        finally:
            body.close()

    def presigned_url(self, key: str, seconds: int = 3600) -> str:
        """A URL that reads the object for `seconds` without credentials (for downloads)."""
        with self._errors(key):
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)},
                ExpiresIn=seconds)
