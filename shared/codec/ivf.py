"""IVF, the minimal container libvpx reads and writes (`vpxenc -o x.ivf`, `vpxdec x.ivf`).

Layout, all little-endian: a 32-byte file header

    'DKIF', version u16 (0), header length u16 (32), fourcc, width u16, height u16,
    rate u32 (time-base denominator), scale u32 (time-base numerator), frame count u32, unused u32

then per frame a 12-byte header (size u32, pts u64) and `size` bytes of compressed frame.

The reader trusts nothing in the file: every size is checked against the bytes actually present
before anything is allocated. The file plumbing (a path or a stream, atomic output) is in
`container_io`, shared with `y4m`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .container_io import (
    AtomicOutput,
    FrameReader,
    OutputSink,
    PathOrFile,
    open_input,
    read_at_most,
    remaining_bytes,
)
from .errors import ContainerError
from .limits import MAX_COMPRESSED_FRAME

__all__ = [
    "FILE_HEADER_SIZE",
    "FRAME_HEADER_SIZE",
    "IvfFrame",
    "IvfHeader",
    "IvfReader",
    "IvfWriter",
    "check_frame_sizes",
]

SIGNATURE = b"DKIF"
VERSION = 0
FILE_HEADER_SIZE = 32
FRAME_HEADER_SIZE = 12

_FILE_HEADER = struct.Struct("<4sHH4sHHIII4s")
_FRAME_HEADER = struct.Struct("<IQ")

# --------------------------------------------------------------------------- header and frames


@dataclass(frozen=True)
class IvfHeader:
    """The 32-byte IVF file header. The time base is `timebase_num / timebase_den` seconds per
    pts tick; IVF calls the denominator "rate" and the numerator "scale"."""

    fourcc: bytes
    width: int
    height: int
    timebase_den: int
    timebase_num: int
    frame_count: int
    unused: bytes = bytes(4)

    def __post_init__(self) -> None:
        if len(self.fourcc) != 4:
            raise ValueError(f"fourcc must be 4 bytes, got {self.fourcc!r}")
        if len(self.unused) != 4:
            raise ValueError(f"unused must be 4 bytes, got {self.unused!r}")
        for name, limit in (
            ("width", 0xFFFF),
            ("height", 0xFFFF),
            ("timebase_den", 0xFFFFFFFF),
            ("timebase_num", 0xFFFFFFFF),
            ("frame_count", 0xFFFFFFFF),
        ):
            value = getattr(self, name)
            if not 0 <= value <= limit:
                raise ValueError(f"IVF {name} must be in 0..{limit}, got {value}")

    @property
    def timebase(self) -> tuple[int, int]:
        """(numerator, denominator) of one pts tick in seconds."""
        return self.timebase_num, self.timebase_den

    def pack(self) -> bytes:
        return _FILE_HEADER.pack(
            SIGNATURE,
            VERSION,
            FILE_HEADER_SIZE,
            self.fourcc,
            self.width,
            self.height,
            self.timebase_den,
            self.timebase_num,
            self.frame_count,
            self.unused,
        )

    @classmethod
    def unpack(cls, data: bytes, *, fourcc: bytes | None = b"VP80",
               strict: bool = True) -> IvfHeader:
        """Parse and validate a file header; `fourcc=None` accepts any codec; `strict=False`
        takes any version and header length field, as FFmpeg does."""
        if len(data) < len(SIGNATURE) or data[: len(SIGNATURE)] != SIGNATURE:
            raise ContainerError("not an IVF file: it does not start with the 'DKIF' signature")
        if len(data) < FILE_HEADER_SIZE:
            raise ContainerError(
                f"IVF file header is truncated: {len(data)} of {FILE_HEADER_SIZE} bytes"
            )
        (_, version, header_size, got_fourcc, width, height, rate, scale, count, unused) = (
            _FILE_HEADER.unpack(data[:FILE_HEADER_SIZE])
        )
        if strict and version != VERSION:
            raise ContainerError(f"unsupported IVF version {version} (only {VERSION} is known)")
        if strict and header_size != FILE_HEADER_SIZE:
            raise ContainerError(f"IVF header length is {header_size}, expected {FILE_HEADER_SIZE}")
        if fourcc is not None and got_fourcc != fourcc:
            raise ContainerError(
                f"fourcc is {_show_fourcc(got_fourcc)}, expected {_show_fourcc(fourcc)}"
            )
        return cls(got_fourcc, width, height, rate, scale, count, unused)


def _show_fourcc(fourcc: bytes) -> str:
    # Printable fourccs read as text ('VP90'); anything else as a bytes literal.
    text = fourcc.decode("latin-1")
    return f"'{text}'" if text.isprintable() and text.isascii() else repr(fourcc)


@dataclass(frozen=True)
class IvfFrame:
    """One compressed frame: its 0-based position in the file (hidden frames count), its
    presentation timestamp in time-base ticks, and its bytes (possibly empty)."""

    index: int
    pts: int
    data: bytes


# --------------------------------------------------------------------------- reader


class IvfReader(FrameReader[IvfFrame]):
    """Iterate the frames of an IVF file (a path or a binary file positioned at its start).

        with IvfReader("in.ivf") as reader:
            print(reader.header.width)
            for frame in reader:
                ...

    Raises `ContainerError` for anything malformed, naming the frame index. The header's frame
    count is informational only (encoders writing to pipes leave it 0); the frames are counted
    as they are read. Zero-length frames are returned as they are.
    """

    def __init__(self, source: PathOrFile, *, fourcc: bytes | None = b"VP80",
                 strict: bool = True) -> None:
        self._file, self._owned, self.name = open_input(source)
        try:
            self._remaining = remaining_bytes(self._file)
            self.header = IvfHeader.unpack(self._read(FILE_HEADER_SIZE), fourcc=fourcc,
                                           strict=strict)
        except BaseException:
            self.close()
            raise
        self._next_index = 0
        self._finished = False

    def _read(self, size: int) -> bytes:
        data = read_at_most(self._file, size)
        if self._remaining is not None:
            self._remaining -= len(data)
        return data

    def read_frame(self) -> IvfFrame | None:
        """The next frame, or None at the end of the file."""
        header = self._frame_header()
        if header is None:
            return None
        index, size, pts = header
        data = self._read(size)
        if len(data) < size:
            self._finished = True
            raise ContainerError(
                f"frame {index} is truncated: header says {size} bytes, {len(data)} remain"
            )
        self._next_index += 1
        return IvfFrame(index, pts, data)

    def skip_frame(self) -> bool:
        """Check the next frame's header and seek past its bytes without reading them; False
        at the end of the file. (A file that cannot seek is read, in bounded pieces.)"""
        header = self._frame_header()
        if header is None:
            return False
        index, size, _ = header
        if self._remaining is None:
            skipped = len(self._read(size))
        else:
            self._file.seek(size, 1)
            self._remaining -= size
            skipped = size
        if skipped < size:
            self._finished = True
            raise ContainerError(
                f"frame {index} is truncated: header says {size} bytes, {skipped} remain"
            )
        self._next_index += 1
        return True

    def _frame_header(self) -> tuple[int, int, int] | None:
        """(index, size, pts) of the next frame, its size checked against the bytes left and
        against any VP8 frame's, so a corrupt size never allocates or reads past either."""
        if self._finished:
            return None
        index = self._next_index
        head = self._read(FRAME_HEADER_SIZE)
        if not head:
            self._finished = True
            return None
        if len(head) < FRAME_HEADER_SIZE:
            self._finished = True
            raise ContainerError(
                f"frame {index} is truncated: its frame header has {len(head)} of "
                f"{FRAME_HEADER_SIZE} bytes"
            )
        size, pts = _FRAME_HEADER.unpack(head)
        if self._remaining is not None and size > self._remaining:
            self._finished = True
            raise ContainerError(
                f"frame {index} is truncated: header says {size} bytes, {self._remaining} remain"
            )
        if size > MAX_COMPRESSED_FRAME:
            self._finished = True
            raise ContainerError(
                f"frame {index} claims {size} bytes, more than any frame can have "
                f"(at most {MAX_COMPRESSED_FRAME}): the file is corrupt"
            )
        return index, size, pts

    def _next_item(self) -> IvfFrame | None:
        return self.read_frame()


def check_frame_sizes(source: PathOrFile) -> int:
    """Walk an IVF file's frame headers without reading its frames (of any codec), raising
    `ContainerError` at the first size that is absurd or runs past the end; the frame count.
    For what hands the file to another demuxer, which would trust those sizes (and, as it,
    takes any version and header length field)."""
    with IvfReader(source, fourcc=None, strict=False) as reader:
        count = 0
        while reader.skip_frame():
            count += 1
        return count


# --------------------------------------------------------------------------- writer


class IvfWriter(AtomicOutput):
    """Write an IVF file to a path (atomically) or to a binary stream.

        with IvfWriter("out.ivf", 176, 144, timebase=(1, 30)) as writer:
            writer.write(frame_bytes)          # pts defaults to the previous pts + 1

    The frame count is patched into the header on close when the output can seek (always, for a
    path); on an unseekable stream it stays 0, which readers including libvpx accept. Leaving the
    `with` block by an exception deletes the temporary file, so no partial file is left.
    """

    def __init__(
        self,
        target: PathOrFile,
        width: int,
        height: int,
        timebase: tuple[int, int] = (1, 30),
        fourcc: bytes = b"VP80",
    ) -> None:
        num, den = timebase
        if num <= 0 or den <= 0:
            raise ValueError(f"timebase must be positive, got {num}/{den}")
        # Validates every field before any file is created.
        self._header = IvfHeader(fourcc, width, height, den, num, 0)
        self._sink = OutputSink(target)
        self.frame_count = 0
        self._next_pts = 0
        self._start: int | None = None
        try:
            if self._sink.atomic:
                self._start = 0
            elif self._sink.file.seekable():
                self._start = self._sink.file.tell()
            self._sink.write(self._header.pack())
        except BaseException:
            self._sink.abort()
            raise

    @property
    def header(self) -> IvfHeader:
        """The header as it will be on close (frame count so far)."""
        return IvfHeader(
            self._header.fourcc,
            self._header.width,
            self._header.height,
            self._header.timebase_den,
            self._header.timebase_num,
            self.frame_count,
        )

    def write(self, data: bytes | bytearray | memoryview, pts: int | None = None) -> None:
        if pts is None:
            pts = self._next_pts
        if not 0 <= pts < 1 << 64:
            raise ValueError(f"pts must fit in 64 unsigned bits, got {pts}")
        if len(data) >= 1 << 32:
            raise ValueError(f"an IVF frame holds at most 4 GiB - 1, got {len(data)} bytes")
        if self.frame_count >= 0xFFFFFFFF:
            raise ValueError("an IVF file holds at most 2**32 - 1 frames")
        self._sink.write(_FRAME_HEADER.pack(len(data), pts))
        self._sink.write(data)
        self.frame_count += 1
        self._next_pts = pts + 1

    def close(self) -> None:
        """Patch the frame count and finish the file (rename it into place for a path)."""
        try:
            if self._start is not None:
                file = self._sink.file
                end = file.tell()
                file.seek(self._start)
                file.write(self.header.pack())
                file.seek(end)
        except BaseException:
            self._sink.abort()
            raise
        self._sink.commit()

    def abort(self) -> None:
        """Give up: delete the temporary file (a caller's stream is left as it is)."""
        self._sink.abort()
