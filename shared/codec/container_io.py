"""File plumbing shared by the containers (`ivf`, `y4m`) and the CLI: a path or an open binary
stream as input or output, bounded reads that never trust a size field, and `OutputSink`, which
writes a path through a temporary file renamed into place only on success, so a failed or
interrupted run never leaves a partial file that looks finished. `FrameReader` and
`AtomicOutput` give the container readers and writers their iteration and `with` behaviour.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Generic, TypeVar

__all__ = [
    "AtomicOutput",
    "FrameReader",
    "OutputSink",
    "PathOrFile",
    "open_input",
    "read_at_most",
    "remaining_bytes",
]

# Reads from unsized streams (pipes) grow by at most this much at a time, so a lying size field
# costs at most one chunk of memory beyond the data really there.
_READ_CHUNK = 1 << 20

PathOrFile = str | os.PathLike[str] | BinaryIO


def remaining_bytes(file: BinaryIO) -> int | None:
    """Bytes left between the current position and the end, or None for an unsized stream."""
    try:
        if not file.seekable():
            return None
        here = file.tell()
        end = file.seek(0, os.SEEK_END)
        file.seek(here)
    except (OSError, ValueError):
        return None
    return max(end - here, 0)


def read_at_most(file: BinaryIO, size: int) -> bytes:
    """Read `size` bytes, or fewer at end of file, allocating no more than what actually arrives.

    `file.read(n)` allocates n bytes up front, so a corrupt size field could ask for gigabytes;
    reading in bounded chunks keeps memory proportional to the real data.
    """
    if size <= _READ_CHUNK:
        return file.read(size)
    parts = bytearray()
    while len(parts) < size:
        chunk = file.read(min(_READ_CHUNK, size - len(parts)))
        if not chunk:
            break
        parts += chunk
    return bytes(parts)


class AtomicOutput:
    """`with` for a writer of a file: `close()` (finish it) on a clean exit, `abort()` (leave no
    partial file that looks finished) when an exception escapes."""

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> AtomicOutput:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class OutputSink(AtomicOutput):
    """A binary output: a path written atomically, or a caller's stream written directly.

    For a path, bytes go to a hidden temporary file in the same directory (so the final rename
    stays on one file system and is atomic); `commit()` renames it over the path, `abort()`
    deletes it. Special files such as /dev/null or a FIFO are opened directly, since renaming
    over them would replace the device node rather than write to it. A caller's stream is never
    closed by the sink.
    """

    def __init__(self, target: PathOrFile) -> None:
        self._final: Path | None = None
        self._temp: Path | None = None
        self._owned = False
        self._done = False
        if isinstance(target, (str, os.PathLike)):
            # Through a symlink to its target: the rename would replace the link itself.
            path = Path(os.path.realpath(target)) if os.path.islink(target) else Path(target)
            self.name = str(target)
            if _is_special_file(path):
                self.file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed in commit/abort
                self._owned = True
                return
            temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
            # 'x' refuses to follow a planted file; the mode honours the umask like open(path).
            self.file = open(temp, "xb")  # noqa: SIM115 - closed in commit/abort
            self._owned = True
            self._final = path
            self._temp = temp
        else:
            self.file = target
            self.name = str(getattr(target, "name", "<stream>"))

    @property
    def atomic(self) -> bool:
        """True when output goes through a temporary file (and can therefore be seeked)."""
        return self._temp is not None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.file.write(data)

    def commit(self) -> None:
        """Finish successfully: flush, and move the temporary file into place."""
        if self._done:
            return
        self._done = True
        try:
            self.file.flush()
            if self._temp is not None:
                os.fsync(self.file.fileno())
            if self._owned:
                self.file.close()
            if self._temp is not None and self._final is not None:
                os.replace(self._temp, self._final)
                self._temp = None
        finally:
            self._discard_temp()

    def abort(self) -> None:
        """Finish unsuccessfully: close, and delete the temporary file if there is one."""
        if self._done:
            return
        self._done = True
        try:
            # A failed flush on the way out changes nothing: the output is discarded anyway.
            if self._owned:
                with contextlib.suppress(OSError):
                    self.file.close()
        finally:
            self._discard_temp()

    def _discard_temp(self) -> None:
        if self._temp is not None:
            with contextlib.suppress(FileNotFoundError):
                self._temp.unlink()
            self._temp = None

    def close(self) -> None:
        self.commit()


def _is_special_file(path: Path) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode)


def open_input(source: PathOrFile) -> tuple[BinaryIO, bool, str]:
    """(file, whether we opened it and must close it, a name for messages)."""
    if isinstance(source, (str, os.PathLike)):
        return open(source, "rb"), True, str(source)  # noqa: SIM115 - closed by the reader
    return source, False, str(getattr(source, "name", "<stream>"))


Item = TypeVar("Item")


class FrameReader(Generic[Item]):
    """Iteration and `with` for a reader of a container's items (pictures, frames) from a file it
    may have opened: subclasses set `_file` and `_owned` (from `open_input`) and define
    `_next_item()`, which returns None at the end."""

    _file: BinaryIO
    _owned: bool

    def _next_item(self) -> Item | None:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Item]:
        return self

    def __next__(self) -> Item:
        item = self._next_item()
        if item is None:
            raise StopIteration
        return item

    def close(self) -> None:
        if self._owned:
            self._file.close()

    def __enter__(self) -> FrameReader[Item]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
