"""Where the pipeline's stages keep their inputs and outputs: a flat key -> bytes store.

Keys are relative, slash-separated names such as `jobs/<job>/chunks/00003/source.y4m`. Every
stage reads its inputs and writes its outputs here and nowhere else, so a stage can run in any
process (or, later, on any machine) that can reach the store. Objects are written whole and
atomically: a reader sees either nothing or the complete object, never a partial one, which is
what lets stages skip work whose output exists.

`LocalStore` keeps objects as files under a root directory. An S3 store implements the same
`Store` interface; `open_store` picks one from a URL, and no caller knows which it has.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

__all__ = ["CountingStore", "LocalStore", "Store", "check_key", "open_store"]

# Portable names only: they must be valid as file names and as S3 keys alike.
_SEGMENT = re.compile(r"[A-Za-z0-9_.-]+")


def check_key(key: str) -> str:
    """Return `key` if it is a valid relative key; raise ValueError otherwise."""
    segments = key.split("/")
    for segment in segments:
        if not _SEGMENT.fullmatch(segment) or segment in (".", ".."):
            raise ValueError(f"invalid store key {key!r}")
    return key


class Store(ABC):
    """A key -> bytes store with atomic, whole-object writes."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key`, replacing any previous object atomically."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object under `key`; raises KeyError if there is none."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""

    def copy(self, source: str, destination: str) -> None:
        """Store the object under `source` again under `destination` (S3: a server-side copy)."""
        self.put(destination, self.get(source))

    @abstractmethod
    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        """Store the contents of a local file under `key` (big files are not read into memory)."""

    @abstractmethod
    def size(self, key: str) -> int:
        """The object's size in bytes; raises KeyError if there is none."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with `prefix` (a directory-like prefix ending
        in "/"); returns how many there were."""

    @property
    @abstractmethod
    def url(self) -> str:
        """The URL `open_store` takes to open this store again (in another process)."""

    def check(self) -> None:
        """Raise (OSError, PipelineError, TransientError) if the store cannot be reached: a
        service checks it once at start. A local directory was made when it was opened."""
        return None

    def url_for(self, key: str) -> str:
        """The URL of one object, e.g. for a message naming an uploaded input."""
        return f"{self.url.rstrip('/')}/{check_key(key)}"

    def key_for(self, url: str) -> str | None:
        """The key of the object `url` names, if it is inside this store, else None."""
        base = self.url.rstrip("/") + "/"
        if not url.startswith(base):
            return None
        try:
            return check_key(url[len(base):])
        except ValueError:
            return None

    def local_path(self, key: str) -> Path | None:
        """The object's own local file when the store keeps one (for serving ranges, say),
        else None."""
        return None

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        """The object as a file opened for reading, without reading it all into memory."""
        with self.local_file(key) as path, open(path, "rb") as file:
            yield file

    @contextlib.contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        """A local file holding the object, for tools that need a path (e.g. vpxenc).

        The default downloads to a temporary file removed afterwards; a local store yields its
        own file. Either way the caller must only read it.
        """
        data = self.get(key)
        with tempfile.TemporaryDirectory(prefix="excamera-object-") as directory:
            path = Path(directory) / Path(key).name
            path.write_bytes(data)
            yield path


class LocalStore(Store):
    """Objects as files under `root` (created if missing); key `a/b/c` is file `root/a/b/c`.

    Every object is written to a temporary file and renamed into place, so a reader never sees
    a partial object, even if the writer dies. `durable` also flushes each object to the disk
    before the rename (it then survives a machine crash too); a scratch directory that is
    deleted with the job does not need that, and skips the cost (milliseconds per object, on
    the serial rebase chain among other places).
    """

    def __init__(self, root: str | os.PathLike[str], *, durable: bool = True) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.durable = durable

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def path_for(self, key: str) -> Path:
        """The file that holds (or would hold) the object under `key`."""
        return self.root / check_key(key)

    def put(self, key: str, data: bytes) -> None:
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A unique temporary name in the same directory: concurrent writers of one key (e.g. a
        # retried task) never share a temporary file, and the rename stays on one file system.
        temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            with open(temp, "xb") as file:
                file.write(data)
                if self.durable:
                    file.flush()
                    os.fsync(file.fileno())
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise

    def get(self, key: str) -> bytes:
        try:
            return self.path_for(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def copy(self, source: str, destination: str) -> None:
        source_path = self.path_for(source)
        if not source_path.is_file():
            raise KeyError(source)
        path = self.path_for(destination)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            shutil.copyfile(source_path, temp)
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise

    @contextlib.contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        path = self.path_for(key)
        if not path.is_file():
            raise KeyError(key)
        yield path

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        target = self.path_for(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            shutil.copyfile(path, temp)
            if self.durable:
                with open(temp, "rb+") as file:
                    os.fsync(file.fileno())
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise

    def size(self, key: str) -> int:
        try:
            return self.path_for(key).stat().st_size
        except FileNotFoundError:
            raise KeyError(key) from None

    def delete_prefix(self, prefix: str) -> int:
        if not prefix.endswith("/"):
            raise ValueError(f"a prefix to delete must end in '/': {prefix!r}")
        directory = self.path_for(prefix.rstrip("/"))
        if not directory.is_dir():
            return 0
        count = sum(1 for path in directory.rglob("*") if path.is_file())
        shutil.rmtree(directory, ignore_errors=True)
        if directory.exists():  # a writer raced us: once more, now that it has finished
            shutil.rmtree(directory, ignore_errors=True)
        return count

    @property
    def url(self) -> str:
        return self.root.as_uri()

    def local_path(self, key: str) -> Path | None:
        path = self.path_for(key)
        return path if path.is_file() else None


# How store operations are billed on S3 (and counted everywhere): writes and listings, reads.
WRITE_OPERATIONS = ("put", "copy", "list")
READ_OPERATIONS = ("get", "head")


class CountingStore(Store):
    """A store that counts its requests by operation (`counts`), as S3 bills them: what a job
    costs in storage requests, and what an operator sees of the load. `on_request(operation)`,
    if given, is told of each (the services export them as metrics)."""

    def __init__(self, inner: Store, on_request: Callable[[str], None] | None = None) -> None:
        self.inner = inner
        self.on_request = on_request
        self.counts: Counter[str] = Counter()

    def _count(self, operation: str) -> None:
        self.counts[operation] += 1
        if self.on_request is not None:
            self.on_request(operation)

    def __repr__(self) -> str:
        return repr(self.inner)  # held states are keyed by the store's repr

    def __getstate__(self) -> dict[str, object]:
        # To a worker process: the store and fresh counts (the callback stays behind).
        return {"inner": self.inner, "on_request": None, "counts": Counter()}

    def put(self, key: str, data: bytes) -> None:
        self._count("put")
        self.inner.put(key, data)

    def get(self, key: str) -> bytes:
        self._count("get")
        return self.inner.get(key)

    def exists(self, key: str) -> bool:
        self._count("head")
        return self.inner.exists(key)

    def copy(self, source: str, destination: str) -> None:
        self._count("copy")
        self.inner.copy(source, destination)

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        self._count("put")
        self.inner.put_file(key, path)

    def size(self, key: str) -> int:
        self._count("head")
        return self.inner.size(key)

    def delete_prefix(self, prefix: str) -> int:
        self._count("list")
        return self.inner.delete_prefix(prefix)

    @property
    def url(self) -> str:
        return self.inner.url

    def local_path(self, key: str) -> Path | None:
        return self.inner.local_path(key)

    @contextlib.contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        self._count("get")
        with self.inner.local_file(key) as path:
            yield path

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        self._count("get")
        with self.inner.open_read(key) as file:
            yield file

    def presigned_url(self, key: str, seconds: int = 3600) -> str | None:
        """The inner store's presigned URL for `key` (S3), or None if it has none."""
        presign = getattr(self.inner, "presigned_url", None)
        return None if presign is None else presign(key, seconds)


def open_store(url: str, *, durable: bool = True) -> Store:
    """A store from a URL: `file:///path` or a plain path is a `LocalStore`.

    `s3://bucket/prefix` is an `S3Store` (boto3; AWS_ENDPOINT_URL names another endpoint).
    """
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        if parsed.scheme and parsed.netloc not in ("", "localhost"):
            raise ValueError(f"unsupported store URL {url!r}: a file URL names no host")
        return LocalStore(unquote(parsed.path) if parsed.scheme else url, durable=durable)
    if parsed.scheme == "s3":
        from .s3store import S3Store

        return S3Store(url)
    raise ValueError(f"unsupported store URL {url!r}: use a path, file:///path or "
                     "s3://bucket/prefix")
