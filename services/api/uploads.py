"""Uploads: a multipart body streamed to a temporary file under a size cap (never held whole in
memory), then checked to be a video before anything is stored.

The body has a part `video` (the file) and optionally a part `options` (the job's settings as
JSON, without `input`). File writes and hashing run on an executor, so a big upload never
stalls the event loop that answers status requests.

A video is a Y4M file whose every frame is complete, or a file PyAV opens with a video stream
whose first frame decodes. The codec itself is never imported here: the API stays a small
process that does no pixel work.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import BodyPartReader, MultipartReader, web

from shared.codec.errors import ContainerError
from shared.codec.ivf import SIGNATURE as IVF_SIGNATURE
from shared.codec.ivf import check_frame_sizes
from shared.codec.y4m import MAX_LINE, Y4mHeader
from shared.pipeline.messages import MAX_MESSAGE_BYTES, MessageError, load_json
from shared.pipeline.sources import REFUSED_DEMUXERS_NOTE, open_container

from .bodies import UNREADABLE, arriving, unreadable
from .middleware import ApiError

__all__ = ["MULTIPART_OVERHEAD", "Upload", "receive", "refuse_long_upload", "sniff_video"]

PARTS = ("video", "options")
# What a multipart body may hold beyond the video itself: boundaries, part headers, options.
MULTIPART_OVERHEAD = MAX_MESSAGE_BYTES + 16 * 1024
BLOCK = 1 << 20  # bytes handed to the executor per write
MAX_DIMENSION = 16383  # VP8's largest frame side
PROBE_PACKETS = 256  # packets demuxed, at most, looking for a first decodable frame
Y4M_SIGNATURE = b"YUV4MPEG2 "

Run = Callable[..., Awaitable[Any]]  # runs a blocking function on the file executor


@dataclass(frozen=True)
class Upload:
    path: Path
    size: int
    sha256: str
    options: Any  # the decoded `options` part ({} without one)


class _Sink:
    """The temporary file a video part streams into, with its size and digest."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.limit = limit
        self.size = 0
        self.digest = hashlib.sha256()
        self.file: BinaryIO = open(path, "xb")  # noqa: SIM115 - closed in close()

    def write(self, block: bytes) -> None:  # on the executor
        self.file.write(block)
        self.digest.update(block)

    def close(self) -> None:
        self.file.close()


def refuse_long_upload(length: int | None, max_bytes: int) -> None:
    """413 for an upload whose declared length leaves more than `max_bytes` of video."""
    if length is not None and length > max_bytes + MULTIPART_OVERHEAD:
        raise ApiError(413, f"the upload is {length} bytes; at most {max_bytes} are accepted")


async def receive(request: web.Request, directory: Path, max_bytes: int, idle: float,
                  run: Run) -> Upload:
    """Stream the request's multipart body into `directory`; ApiError if it is not a
    well-formed upload of at most `max_bytes` of video, or stops arriving for `idle` seconds."""
    refuse_long_upload(request.content_length, max_bytes)
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError, KeyError) as exc:
        raise ApiError(400, f"not a multipart/form-data body ({exc})",
                       code="malformed_body") from None
    video: _Sink | None = None
    options: Any = {}
    seen: set[str] = set()
    try:
        while (next_part := await arriving(reader.next(), idle, "the upload")) is not None:
            name, part = _named_part(next_part, seen)
            if name == "video":
                video = _Sink(directory / "video", max_bytes)
                await _stream(part, video, idle, run)
            else:
                options = _options(await _read_small(part, MAX_MESSAGE_BYTES, idle))
    except ApiError:
        raise
    except UNREADABLE as exc:
        raise unreadable(request, exc, "the upload") from None
    except (ValueError, AssertionError, asyncio.IncompleteReadError, EOFError) as exc:
        # A body cut short or not multipart inside: aiohttp's reader says so in its own way.
        raise ApiError(400, f"the upload is truncated or malformed ({exc or 'early end'})",
                       code="malformed_body") from None
    finally:
        if video is not None:
            await run(video.close)
    if video is None:
        raise ApiError(400, "the upload has no part named 'video'")
    if video.size == 0:
        raise ApiError(400, "the video part is empty")
    return Upload(video.path, video.size, video.digest.hexdigest(), options)


def _named_part(part: Any, seen: set[str]) -> tuple[str, BodyPartReader]:
    if isinstance(part, MultipartReader) or not isinstance(part, BodyPartReader):
        raise ApiError(400, "nested multipart bodies are not accepted")
    name = part.name
    if name is None:
        raise ApiError(400, "a part has no name (send the parts 'video' and optionally "
                            "'options', each with Content-Disposition: form-data; name=...)")
    if name not in PARTS:
        raise ApiError(400, f"unknown part {name!r} (send 'video' and optionally 'options')")
    if name in seen:
        raise ApiError(400, f"the part {name!r} is given twice")
    seen.add(name)
    return name, part


async def _stream(part: BodyPartReader, sink: _Sink, idle: float, run: Run) -> None:
    pending = bytearray()
    while True:
        chunk = await arriving(part.read_chunk(BLOCK), idle, "the upload")
        if chunk:
            sink.size += len(chunk)
            if sink.size > sink.limit:
                raise ApiError(413, f"the video is larger than {sink.limit} bytes")
            pending += chunk
        if len(pending) >= BLOCK or (not chunk and pending):
            await run(sink.write, bytes(pending))
            pending.clear()
        if not chunk:
            return


async def _read_small(part: BodyPartReader, limit: int, idle: float) -> bytes:
    data = bytearray()
    while chunk := await arriving(part.read_chunk(8192), idle, "the upload"):
        data += chunk
        if len(data) > limit:
            raise ApiError(413, f"the options part is larger than {limit} bytes")
    return bytes(data)


def _options(data: bytes) -> Any:
    try:
        return load_json(data, "options")
    except MessageError as exc:
        raise ApiError(400, str(exc), code="invalid_job") from None


# --------------------------------------------------------------------------- is it a video?


def not_a_video(reason: str) -> ApiError:
    return ApiError(400, reason, code="not_a_video")


def sniff_video(path: Path) -> str:
    """A one-line description of the video at `path` (blocking: run it on an executor), or
    ApiError(400) saying why it is not one."""
    with open(path, "rb") as file:
        head = file.read(len(Y4M_SIGNATURE))
    if head == Y4M_SIGNATURE:
        return _check_y4m(path)
    if head.startswith(IVF_SIGNATURE):
        try:  # before FFmpeg's demuxer, which trusts each frame's size field
            check_frame_sizes(path)
        except (ContainerError, OSError) as exc:
            raise not_a_video(f"not a usable IVF file: {_describe(exc)}") from None
    return _check_with_pyav(path)


# A Y4M upload whose frames all have a bare "FRAME\n" line is checked at this many of them,
# evenly spread, instead of at each: 8 GiB of 2x2 pictures are 700 million frames.
Y4M_SAMPLED_FRAMES = 4096
BARE_FRAME_LINE = b"FRAME\n"


def _check_y4m(path: Path) -> str:
    size = os.path.getsize(path)
    with open(path, "rb") as file:
        line = file.readline(MAX_LINE)
        try:
            header = Y4mHeader.parse(line)
        except ContainerError as exc:
            raise not_a_video(f"not a usable Y4M file: {exc}") from None
        _check_dimensions(header.width, header.height)
        start = file.tell()
        frames = _bare_frames(file, start, size, header.frame_size)
        if frames is None:
            file.seek(start)
            frames = _walk_frames(file, size, header.frame_size)
    if frames == 0:
        raise not_a_video("the Y4M upload holds no frames")
    return f"Y4M {header.width}x{header.height}, {frames} frames"


def _bare_frames(file: BinaryIO, start: int, size: int, frame_size: int) -> int | None:
    """The frame count if the pixels fill the file exactly as frames with bare FRAME lines, and
    a sample of those lines (first and last included) says so; else None."""
    stride = len(BARE_FRAME_LINE) + frame_size
    frames, left = divmod(size - start, stride)
    if left or frames == 0:
        return None
    step = max(1, frames // Y4M_SAMPLED_FRAMES)
    for index in (*range(0, frames, step), frames - 1):
        file.seek(start + index * stride)
        if file.read(len(BARE_FRAME_LINE)) != BARE_FRAME_LINE:
            return None
    return frames


def _walk_frames(file: BinaryIO, size: int, frame_size: int) -> int:
    # Walk the FRAME lines, skipping the pixels: a cut-off last frame means a truncated
    # upload, which the split would otherwise find only after the job started.
    frames = 0
    while (position := file.tell()) < size:
        tag = file.readline(MAX_LINE)
        if not tag.startswith(b"FRAME") or not tag.endswith(b"\n"):
            raise not_a_video(f"not a usable Y4M file: no FRAME line at byte {position}")
        if file.tell() + frame_size > size:
            raise not_a_video(f"the Y4M upload is truncated: frame {frames} is cut off")
        file.seek(frame_size, os.SEEK_CUR)
        frames += 1
    return frames


def _check_with_pyav(path: Path) -> str:
    import av

    try:
        with open_container(str(path)) as container:
            return _check_container(container)
    except ApiError:
        raise
    except av.ArgumentError as exc:  # among others, a format that is not on the list
        raise not_a_video(f"not a video file (PyAV cannot read it: {_describe(exc)}; "
                            f"{REFUSED_DEMUXERS_NOTE})") from None
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError, IndexError) as exc:
        raise not_a_video(f"not a video file (PyAV cannot read it: {_describe(exc)})") \
            from None


def _check_container(container: Any) -> str:
    name = container.format.name
    # FFmpeg's "tty" demuxer shows any text as ANSI art: not a video. Its image pipes read
    # one picture or more (concatenated PPMs, say): a video from two.
    if name == "tty" or not container.streams.video:
        raise not_a_video("not a video (the file has no video stream)")
    wanted = 2 if name.endswith("_pipe") else 1
    stream = container.streams.video[0]
    decoded = 0
    for count, packet in enumerate(container.demux(stream)):
        for frame in packet.decode():
            _check_dimensions(frame.width, frame.height)
            decoded += 1
            if decoded == wanted:
                return f"{name} {stream.codec_context.name} {frame.width}x{frame.height}"
        if count >= PROBE_PACKETS:
            break
    if decoded:
        raise not_a_video(f"a still image ({name.removesuffix('_pipe')}), not a video")
    raise not_a_video("not a video: no frame of its video stream decodes")


def _check_dimensions(width: int, height: int) -> None:
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
        raise not_a_video(f"frames of {width}x{height} do not fit VP8 (at most "
                            f"{MAX_DIMENSION}x{MAX_DIMENSION})")


def _describe(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text)
