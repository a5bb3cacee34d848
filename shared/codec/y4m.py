"""YUV4MPEG2 (Y4M): raw pictures with a one-line text header, and raw I420 files.

    YUV4MPEG2 W1024 H436 F24:1 Ip A0:0 C420jpeg\\n
    FRAME\\n <Y plane> <U plane> <V plane>
    FRAME\\n ...

Only 8-bit 4:2:0 is accepted (all C420 variants differ in chroma siting only, which the codec
does not use); anything else is refused with a clear `ContainerError` instead of being
misread. Header and FRAME lines are read with a length cap, and pixel data is read only as far as
the file really goes, so a hostile file cannot make the reader allocate without bound.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

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
from .image import Image, i420_frame_size

__all__ = [
    "MAX_PIXELS",
    "SUPPORTED_COLORSPACES",
    "Y4mHeader",
    "Y4mReader",
    "Y4mWriter",
    "read_raw_i420",
    "write_raw_i420",
]

SIGNATURE = b"YUV4MPEG2"
FRAME_TAG = b"FRAME"
# Longer than any sane header or FRAME line; bounds readline() on garbage input.
MAX_LINE = 4096
# 16384 x 16384 luma samples: above VP8's 16383 x 16383 maximum, far below memory trouble.
MAX_PIXELS = 16384 * 16384
# The 8-bit 4:2:0 variants; they differ only in chroma siting.
SUPPORTED_COLORSPACES = frozenset({"420jpeg", "420paldv", "420mpeg2", "420"})
DEFAULT_COLORSPACE = "420jpeg"
# No F tag is malformed by the spec; FFmpeg assumes 25 fps, and so do we.
DEFAULT_FPS = (25, 1)
# libvpx takes each term of its timebase in 1..10^9 (and IVF in 32 bits).
MAX_RATE_TERM = 10**9

_NUMBER = re.compile(rb"[0-9]{1,9}")
_RATIO = re.compile(rb"([0-9]{1,10}):([0-9]{1,10})")


@dataclass(frozen=True)
class Y4mHeader:
    """A Y4M stream header. `colorspace` is the C tag's value without the 'C' ("420jpeg"),
    `interlace` the I tag's value ('p', 't', 'b', 'm' or '?'), `extra` the remaining tags
    (X... and any unknown ones) verbatim."""

    width: int
    height: int
    fps: tuple[int, int] = DEFAULT_FPS
    interlace: str = "p"
    aspect: tuple[int, int] = (0, 0)
    colorspace: str = DEFAULT_COLORSPACE
    extra: tuple[str, ...] = ()

    @property
    def frame_size(self) -> int:
        """Bytes of pixel data per frame."""
        return i420_frame_size(self.width, self.height)

    def pack(self) -> bytes:
        tags = [
            f"W{self.width}",
            f"H{self.height}",
            f"F{self.fps[0]}:{self.fps[1]}",
            f"I{self.interlace}",
            f"A{self.aspect[0]}:{self.aspect[1]}",
            f"C{self.colorspace}",
            *self.extra,
        ]
        return b"YUV4MPEG2 " + " ".join(tags).encode("ascii") + b"\n"

    @classmethod
    def parse(cls, line: bytes) -> Y4mHeader:
        """Parse a header line (with or without its newline); raises `ContainerError`."""
        line = line.rstrip(b"\n")
        words = line.split(b" ")
        if words[0] != SIGNATURE:
            raise ContainerError("not a Y4M file: it does not start with 'YUV4MPEG2 '")
        if line.endswith(b"\r"):  # else the last tag carries an invisible '\r' into its error
            raise ContainerError("the Y4M header ends in CR LF (a Windows line end): Y4M lines "
                                 "end in LF alone")
        seen: set[str] = set()
        width = height = 0
        fps = DEFAULT_FPS
        aspect = (0, 0)
        interlace = "p"
        colorspace = DEFAULT_COLORSPACE
        extra: list[str] = []
        for word in words[1:]:
            if not word:
                continue  # tolerate doubled or trailing spaces
            tag, value = chr(word[0]), word[1:]
            if tag in "WHFAIC":
                if tag in seen:
                    raise ContainerError(f"Y4M header has more than one {tag} tag")
                seen.add(tag)
            if tag in "WH":
                if not _NUMBER.fullmatch(value) or int(value) == 0:
                    raise ContainerError(
                        f"Y4M header has a bad {tag} tag {_show(word)}: expected a positive number"
                    )
                if tag == "W":
                    width = int(value)
                else:
                    height = int(value)
            elif tag in "FA":
                match = _RATIO.fullmatch(value)
                if match is None:
                    raise ContainerError(
                        f"Y4M header has a bad {tag} tag {_show(word)}: expected N:D"
                    )
                if tag == "F":
                    fps = (int(match[1]), int(match[2]))
                else:
                    aspect = (int(match[1]), int(match[2]))
            elif tag == "I":
                interlace = value.decode("ascii", "replace")
            elif tag == "C":
                colorspace = value.decode("ascii", "replace")
            else:
                extra.append(word.decode("ascii", "replace"))
        for tag, name in (("W", "width"), ("H", "height")):
            if tag not in seen:
                raise ContainerError(f"Y4M header has no {tag} tag ({name})")
        if width * height > MAX_PIXELS:
            raise ContainerError(
                f"Y4M frame size {width}x{height} is too large: at most {MAX_PIXELS} pixels "
                "(16384x16384) are accepted"
            )
        if not (0 < fps[0] <= MAX_RATE_TERM and 0 < fps[1] <= MAX_RATE_TERM):
            raise ContainerError(
                f"Y4M frame rate F{fps[0]}:{fps[1]} is not a valid rate: each term must be "
                f"1..{MAX_RATE_TERM}")
        if colorspace not in SUPPORTED_COLORSPACES:
            raise ContainerError(
                f"Y4M colorspace 'C{colorspace}' is not supported: only 8-bit 4:2:0 (C420*) "
                "input is accepted"
            )
        return cls(width, height, fps, interlace, aspect, colorspace, tuple(extra))


def _show(word: bytes) -> str:
    return repr(word.decode("ascii", "replace")[:40])


class BufferFile:
    """A read-only binary file over a bytes-like buffer whose `read` returns memoryview slices
    (no copy): a `Y4mReader` over it yields pictures that are views of the buffer, e.g. of a
    memory-mapped file."""

    def __init__(self, buffer: bytes | memoryview) -> None:
        self._view = memoryview(buffer).cast("B")
        self._pos = 0

    def readline(self, limit: int = -1) -> bytes:
        end = len(self._view) if limit < 0 else min(len(self._view), self._pos + limit)
        chunk = self._view[self._pos : end].tobytes()
        newline = chunk.find(b"\n")
        line = chunk if newline < 0 else chunk[: newline + 1]
        self._pos += len(line)
        return line

    def read(self, size: int = -1) -> memoryview:
        end = len(self._view) if size < 0 else min(len(self._view), self._pos + size)
        data = self._view[self._pos : end]
        self._pos = end
        return data

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self._pos, len(self._view))[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def close(self) -> None:
        pass


def _read_line(file: BinaryIO) -> bytes:
    """One line of at most MAX_LINE bytes including its newline (shorter only at end of file)."""
    return file.readline(MAX_LINE)


class Y4mReader(FrameReader[Image]):
    """Iterate the pictures of a Y4M file (a path or a binary file at the stream's start) as
    `Image`s. `header` is parsed on construction; each frame is validated as it is read.

        with Y4mReader("in.y4m") as reader:
            for image in reader:
                ...
    """

    def __init__(self, source: PathOrFile) -> None:
        self._file, self._owned, self.name = open_input(source)
        try:
            self.header = self._read_header()
            self._remaining = remaining_bytes(self._file)
        except BaseException:
            self.close()
            raise
        self.frame_index = 0  # index of the next frame to be read
        self._finished = False

    def _read_header(self) -> Y4mHeader:
        line = _read_line(self._file)
        if not line.startswith(SIGNATURE + b" "):
            raise ContainerError("not a Y4M file: it does not start with 'YUV4MPEG2 '")
        if not line.endswith(b"\n"):
            if len(line) >= MAX_LINE:
                raise ContainerError(f"Y4M header line is longer than {MAX_LINE} bytes")
            raise ContainerError("Y4M header is truncated: the file ends inside it")
        return Y4mHeader.parse(line)

    def read_image(self) -> Image | None:
        """The next picture, or None at the end of the stream."""
        if self._finished:
            return None
        index = self.frame_index
        line = _read_line(self._file)
        if not line:
            self._finished = True
            return None
        if self._remaining is not None:
            self._remaining -= len(line)
        if not (line.startswith(FRAME_TAG) and line[len(FRAME_TAG) : len(FRAME_TAG) + 1] in b" \n"):
            self._finished = True
            if FRAME_TAG.startswith(line):
                raise ContainerError(f"Y4M frame {index} is truncated: the file ends in its header")
            raise ContainerError(f"Y4M frame {index} does not start with 'FRAME'")
        if not line.endswith(b"\n"):
            self._finished = True
            if len(line) >= MAX_LINE:
                raise ContainerError(f"Y4M frame {index} header is longer than {MAX_LINE} bytes")
            raise ContainerError(f"Y4M frame {index} is truncated: the file ends in its header")
        size = self.header.frame_size
        # Refuse before reading when the file is known to be short: no oversized allocation.
        if self._remaining is not None and self._remaining < size:
            self._finished = True
            raise ContainerError(
                f"Y4M frame {index} is truncated: {self._remaining} of {size} bytes present"
            )
        # With the size left known (and checked above) one read is safe; otherwise read in
        # bounded pieces, so a lying header cannot make us allocate what never arrives.
        data = self._file.read(size) if self._remaining is not None else read_at_most(
            self._file, size
        )
        if self._remaining is not None:
            self._remaining -= len(data)
        if len(data) < size:
            self._finished = True
            raise ContainerError(
                f"Y4M frame {index} is truncated: {len(data)} of {size} bytes present"
            )
        self.frame_index += 1
        return Image.from_i420(data, self.header.width, self.header.height)

    def _next_item(self) -> Image | None:
        return self.read_image()


class Y4mWriter(AtomicOutput):
    """Write a C420jpeg Y4M stream to a path (atomically: a temporary file renamed into place on
    a clean close, deleted on an exception) or to a binary stream.

        with Y4mWriter("out.y4m", 1024, 436, fps=(24, 1)) as writer:
            writer.write(image)

    Y4M has one size per stream: an image of any other size raises `ContainerError`.
    """

    def __init__(
        self,
        target: PathOrFile,
        width: int,
        height: int,
        fps: tuple[int, int] = (30, 1),
        *,
        interlace: str = "p",
        aspect: tuple[int, int] = (0, 0),
    ) -> None:
        if width <= 0 or height <= 0 or width * height > MAX_PIXELS:
            raise ValueError(f"bad Y4M frame size {width}x{height}")
        if fps[0] <= 0 or fps[1] <= 0:
            raise ValueError(f"frame rate must be positive, got {fps[0]}:{fps[1]}")
        # Reduced, so 30000:1000 is written as the conventional 30:1.
        divisor = math.gcd(*fps)
        self.header = Y4mHeader(
            width,
            height,
            (fps[0] // divisor, fps[1] // divisor),
            interlace,
            aspect,
            DEFAULT_COLORSPACE,
        )
        self.frame_count = 0
        self._sink = OutputSink(target)
        try:
            self._sink.write(self.header.pack())
        except BaseException:
            self._sink.abort()
            raise

    def write(self, image: Image) -> None:
        if image.size != (self.header.width, self.header.height):
            raise ContainerError(
                f"Y4M cannot change frame size: this image is {image.width}x{image.height}, "
                f"the stream is {self.header.width}x{self.header.height}"
            )
        self._sink.write(b"FRAME\n")
        for plane in image.planes:
            self._sink.write(plane.tobytes())
        self.frame_count += 1

    def close(self) -> None:
        self._sink.commit()

    def abort(self) -> None:
        self._sink.abort()


def read_raw_i420(source: PathOrFile, width: int, height: int) -> Iterator[Image]:
    """Iterate the pictures of a headerless I420 file of known size (as `vpxdec --i420` writes).

    A trailing partial picture raises `ContainerError` naming its index.
    """
    size = i420_frame_size(width, height)
    file, owned, _ = open_input(source)
    try:
        index = 0
        while True:
            data = read_at_most(file, size)
            if not data:
                return
            if len(data) < size:
                raise ContainerError(
                    f"I420 frame {index} is truncated: {len(data)} of {size} bytes present"
                )
            yield Image.from_i420(data, width, height)
            index += 1
    finally:
        if owned:
            file.close()


def write_raw_i420(target: PathOrFile, images: Iterable[Image]) -> int:
    """Write pictures as concatenated raw I420 (each at its own size); returns how many.

    A path is written atomically, as by the writers above.
    """
    count = 0
    with OutputSink(target) as sink:
        for image in images:
            for plane in image.planes:
                sink.write(plane.tobytes())
            count += 1
    return count
