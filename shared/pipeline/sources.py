"""Reading the input video as 8-bit 4:2:0 pictures: Y4M directly, anything else through PyAV.

`open_source(path)` returns a `Source`: its size, frame rate, notices for the user (audio
ignored, pixel format converted) and an iterator of `Image`s. Every failure caused by the file
is an `InputError` whose message names the file and, where it applies, the frame.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from shared.codec.errors import ContainerError
from shared.codec.image import Image
from shared.codec.ivf import SIGNATURE as IVF_SIGNATURE
from shared.codec.ivf import check_frame_sizes
from shared.codec.limits import MAX_FRAME_AREA, MAX_FRAME_SIDE
from shared.codec.y4m import Y4mReader

from .errors import InputError

__all__ = ["REFUSED_DEMUXERS_NOTE", "Source", "open_container", "open_source"]

Y4M_SIGNATURE = b"YUV4MPEG2 "
DEFAULT_FPS = (30, 1)  # when a container states no usable rate
# The rates taken as stated (a container's outside them is replaced by DEFAULT_FPS, with a
# note; a Y4M file's, which is all it says about time, is refused).
MIN_FPS = Fraction(1, 1000)
MAX_FPS = Fraction(1000)
# FFmpeg's demuxers that open what the file names: other files (an ffconcat script, an HLS or
# DASH playlist, an IMF composition, an image sequence, a VobSub index) or network streams (an
# SDP session). An input is one file: such a file would have the split open whatever it names,
# outside any directory an operator allows, and an ffconcat script that names itself recurses
# until the process runs out of file descriptors. PyAV opens inputs with every other demuxer.
REFERRING_FORMATS = frozenset({"concat", "hls", "dash", "imf", "image2", "vobsub", "sdp",
                               "rtsp", "rtp", "lavfi"})
REFUSED_DEMUXERS_NOTE = ("files that name other files, such as ffconcat scripts or playlists, "
                         "are not accepted")


@dataclass
class Source:
    """An opened input. `images` yields each picture once; `close()` releases the file."""

    name: str
    width: int
    height: int
    fps: tuple[int, int]
    images: Iterator[Image]
    notices: list[str] = field(default_factory=list)
    _closer: Any = None

    def close(self) -> None:
        if self._closer is not None:
            self._closer.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_source(path: str | Path, name: str | None = None) -> Source:
    """Open a Y4M file (by its signature, whatever its name) or any video PyAV can decode.
    `name`: what notices and errors call it (default: the path), e.g. the URL a service
    fetched it from, rather than the temporary file it was fetched to."""
    name = str(path) if name is None else name
    try:
        with open(path, "rb") as file:
            head = file.read(len(Y4M_SIGNATURE))
    except OSError as exc:
        raise InputError(f"{name}: {exc.strerror or exc}") from exc
    if head.startswith(IVF_SIGNATURE):
        _check_ivf(str(path), name)
    source = _open_y4m(str(path), name) if head == Y4M_SIGNATURE else _open_with_pyav(
        str(path), name)
    if (source.width > MAX_FRAME_SIDE or source.height > MAX_FRAME_SIDE
            or source.width * source.height > MAX_FRAME_AREA):
        source.close()  # refused before any frame is encoded, not by the decoder after
        raise InputError(f"{name}: {source.width}x{source.height} is too large for VP8 here: at "
                         f"most {MAX_FRAME_SIDE} pixels a side and {MAX_FRAME_AREA} in all "
                         "(8192x4352)")
    return source


# --------------------------------------------------------------------------- Y4M


def _open_y4m(path: str, name: str) -> Source:
    try:
        reader = Y4mReader(path)
    except (ContainerError, OSError) as exc:
        raise InputError(f"{name}: {_describe(exc)}") from exc
    header = reader.header
    divisor = math.gcd(*header.fps)
    fps = (header.fps[0] // divisor, header.fps[1] // divisor)
    if not MIN_FPS <= Fraction(*fps) <= MAX_FPS:
        reader.close()  # libvpx takes such a rate, but its rate control makes a ruin of it
        raise InputError(f"{name}: Y4M frame rate F{header.fps[0]}:{header.fps[1]} is outside "
                         f"{MIN_FPS} to {MAX_FPS} frames a second")
    order = Y4M_FIELD_ORDERS.get(header.interlace)
    notices = [_interlaced_notice(name, order)] if order else []
    return Source(name, header.width, header.height, fps, _y4m_images(reader, name), notices,
                  reader)


Y4M_FIELD_ORDERS = {"t": "top field first", "b": "bottom field first", "m": "mixed fields"}


def _interlaced_notice(name: str, order: str) -> str:
    # VP8 has no fields: each picture is coded as one frame, its two fields woven together,
    # which costs bits where they differ (motion) and plays with combing on progressive screens.
    return (f"{name}: interlaced ({order}), encoded as progressive frames; deinterlace it "
            "first (e.g. with FFmpeg's bwdif) to avoid combing")


def _y4m_images(reader: Y4mReader, name: str) -> Iterator[Image]:
    while True:
        try:
            image = reader.read_image()
        except (ContainerError, OSError) as exc:
            raise InputError(f"{name}: {_describe(exc)}") from exc
        if image is None:
            return
        yield image


# --------------------------------------------------------------------------- PyAV


def _check_ivf(path: str, name: str) -> None:
    """FFmpeg's IVF demuxer trusts each frame's size field: one of 4 GB in a big (or sparse)
    file has it read for hours. The sizes are checked first, without reading the frames."""
    try:
        check_frame_sizes(path)
    except (ContainerError, OSError) as exc:
        raise InputError(f"{name}: {_describe(exc)}") from exc


def _open_with_pyav(path: str, name: str) -> Source:
    import av

    try:
        container = open_container(path)
    except av.ArgumentError as exc:  # among others, a demuxer that is not allowed
        raise InputError(f"{name}: not a video file PyAV can read ({_describe(exc)}; "
                         f"{REFUSED_DEMUXERS_NOTE})") from exc
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise InputError(f"{name}: not a video file PyAV can read ({_describe(exc)})") from exc
    try:
        return _pyav_source(name, container)
    except BaseException:
        container.close()
        raise


def open_container(path: str) -> Any:
    """`av.open` as every reader of inputs calls it: FFmpeg's demuxers but REFERRING_FORMATS,
    and a tag that is not UTF-8 (a title, say) shown replaced, as it does not make the video
    unreadable."""
    import av

    return av.open(path, options=_pyav_open_options(), metadata_errors="replace")


def _pyav_open_options() -> dict[str, str]:
    """`av.open` options that allow FFmpeg's demuxers but REFERRING_FORMATS."""
    return {"format_whitelist": _allowed_demuxers()}


@functools.cache
def _allowed_demuxers() -> str:
    import av

    return ",".join(sorted(
        name for name in av.formats_available
        if av.ContainerFormat(name).input is not None
        and not REFERRING_FORMATS.intersection(name.split(","))))


def _pyav_source(name: str, container: Any) -> Source:
    import av

    # FFmpeg's "tty" demuxer renders any text file as ANSI art: that is not a video.
    if not container.streams.video or container.format.name == "tty":
        raise InputError(f"{name}: not a video (the file has no video stream)")
    stream = container.streams.video[0]
    # With frame threads FFmpeg's VP8 decoder drops a frame that does not decode and says
    # nothing (vpxdec calls the stream corrupt), and errors name later frames: VP8 with slice
    # threads. Other decoders conceal damage either way (H.264's error concealment, say), and
    # keep their frame threads, which a serial split needs.
    stream.thread_type = "SLICE" if stream.codec_context.name == "vp8" else "AUTO"
    notices = []
    if container.streams.audio:
        notices.append(f"{name}: audio ignored (the output is video only)")
    if len(container.streams.video) > 1:
        notices.append(f"{name}: only the first of {len(container.streams.video)} video streams")
    fps = _pyav_rate(stream)
    if fps is None:
        fps = DEFAULT_FPS
        notices.append(f"{name}: no frame rate stated; assuming {fps[0]}/{fps[1]} fps")
    # The size is the first picture's, not what the container claims (which a file may
    # misstate), so that the size limit and the plan hold for every frame decoded.
    frames = _decoded_frames(name, container, stream, av.FFmpegError)
    first = next(frames, None)
    if first is None:
        width, height = stream.codec_context.width, stream.codec_context.height
    else:
        width, height = first.width, first.height
        frames = itertools.chain([first], frames)
    frames = _complete(name, frames, _stated_end(container, stream))
    if container.format.name.endswith("_pipe"):  # FFmpeg's image pipes: one picture, or more
        frames = _more_than_one(name, frames, container.format.name.removesuffix("_pipe"))
    images = _pyav_images(name, frames, (width, height), fps, notices)
    return Source(name, width, height, fps, images, notices, container)


def _pyav_rate(stream: Any) -> tuple[int, int] | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            rate = Fraction(rate).limit_denominator(1_000_000)
            if MIN_FPS <= rate <= MAX_FPS:
                return rate.numerator, rate.denominator
    return None


def _pyav_images(
    name: str, frames: Iterator[Any], size: tuple[int, int], fps: tuple[int, int],
    notices: list[str],
) -> Iterator[Image]:
    import av

    width, height = size
    timing = _Timing(name, fps)
    for index, frame in enumerate(frames):
        if (frame.width, frame.height) != (width, height):
            raise InputError(
                f"{name}: frame {index} is {frame.width}x{frame.height}, the first "
                f"{width}x{height}: a changing frame size is not supported"
            )
        if index == 0 and frame.interlaced_frame:
            order = "top field first" if frame.top_field_first else "bottom field first"
            notices.append(_interlaced_notice(name, order))
        if frame.format.name != "yuv420p":
            if index == 0:
                notices.append(f"{name}: converted {frame.format.name} to 8-bit 4:2:0 (yuv420p)")
            try:
                frame = frame.reformat(format="yuv420p")
            except (av.FFmpegError, ValueError) as exc:
                raise InputError(f"{name}: frame {index}: cannot convert {frame.format.name} "
                                 f"to 8-bit 4:2:0 ({_describe(exc)})") from exc
        if note := timing.check(index, frame.time):
            notices.append(note)
        yield _frame_to_image(frame)


class _Timing:
    """Notices, once, a frame shown more than half a frame away from where a constant rate
    puts it: the output (IVF and WebM alike) shows every frame for 1/fps, so a variable-rate
    input plays retimed, and its length may change."""

    def __init__(self, name: str, fps: tuple[int, int]) -> None:
        self.name = name
        self.fps = fps
        self.period = fps[1] / fps[0]
        self.first: float | None = None
        self.noted = False

    def check(self, index: int, seconds: float | None) -> str | None:
        if self.noted or seconds is None:
            return None
        if self.first is None:
            self.first = seconds - index * self.period
            return None
        expected = index * self.period
        shown = seconds - self.first
        if abs(shown - expected) <= self.period / 2:
            return None
        self.noted = True
        rate = f"{self.fps[0]}/{self.fps[1]}" if self.fps[1] != 1 else str(self.fps[0])
        return (f"{self.name}: variable frame rate (frame {index} is shown at {shown:.3f} s, "
                f"not {expected:.3f} s): the output shows every frame for {self.period:.4g} s, "
                f"at {rate} fps")


def _decoded_frames(name: str, container: Any, stream: Any, ffmpeg_error: type) -> Iterator[Any]:
    """The stream's frames, packet by packet. A packet the demuxer marks corrupt (an IVF or MP4
    cut short inside a frame) is refused, as a truncated Y4M is: FFmpeg would otherwise decode
    it as far as it goes or drop it, and the output would silently end early or differ."""
    read = 0  # frames read: the numbering of decode and of a stream without reordering
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets, None)
            if packet is None:
                return
            if packet.is_corrupt:
                raise InputError(f"{name}: frame {read}: the container marks it truncated or "
                                 "corrupt (is the file cut short?)")
            frames = packet.decode()
            read += packet.size > 0
        except (ffmpeg_error, OSError) as exc:
            raise InputError(f"{name}: frame {read}: cannot decode ({_describe(exc)})") from exc
        yield from frames


# How far short of the length a Matroska or WebM file states its frames may end (a rounded
# header, a last frame without a duration). Past it the file was cut between frames (an
# interrupted copy), which FFmpeg reads to the cut without a word or a packet marked corrupt.
SHORTFALL_SECONDS = 0.5
SHORTFALL_SHARE = 0.05
_DURATION_TAG = re.compile(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)")


def _stated_end(container: Any, stream: Any) -> float | None:
    """When a Matroska or WebM file says the video stream ends, in seconds from 0: the
    track's DURATION tag, or the file's duration when the video is its only stream (audio
    may outlast the video). Other containers: None (an MP4's sample table, say, lists every
    frame, and a cut one does not open; a TS estimates its length from what it holds)."""
    if "matroska" not in container.format.name.split(","):
        return None
    if match := _DURATION_TAG.fullmatch(stream.metadata.get("DURATION", "")):
        hours, minutes, seconds = match.groups()
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    if container.duration is not None and len(container.streams) == 1:
        return container.duration / 1_000_000  # in AV_TIME_BASE units
    return None


def _complete(name: str, frames: Iterator[Any], stated: float | None) -> Iterator[Any]:
    """`frames`, then an InputError if they end well before the `stated` end."""
    end = None
    for frame in frames:
        if frame.time is not None:
            # Until the frame is no longer shown, when the file says: a variable-rate file
            # may hold its last picture for seconds.
            shown_for = (float(frame.duration * frame.time_base)
                         if frame.duration and frame.time_base else 0.0)
            end = frame.time + shown_for if end is None else max(end, frame.time + shown_for)
        yield frame
    if stated is None or end is None:
        return
    if end < stated - max(SHORTFALL_SECONDS, SHORTFALL_SHARE * stated):
        raise InputError(f"{name}: its frames end at {end:.2f} s, but the file says the "
                         f"video lasts until {stated:.2f} s: is the file cut short?")


def _more_than_one(name: str, frames: Iterator[Any], kind: str) -> Iterator[Any]:
    """`frames`, then an InputError if there was only one: a still image is not a video."""
    count = 0
    for count, frame in enumerate(frames, 1):  # noqa: B007 - the count is wanted after
        yield frame
    if count == 1:
        raise InputError(f"{name}: a still image ({kind}), not a video")


def _frame_to_image(frame: Any) -> Image:
    """Copy a yuv420p `av.VideoFrame` (rows padded to line_size) into a compact Image."""
    planes = []
    for plane in frame.planes:
        rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
        planes.append(np.ascontiguousarray(rows[: plane.height, : plane.width]))
    return Image(*planes)


def _describe(exc: BaseException) -> str:
    # OSError and PyAV's errors repeat errno and file name in str(); the caller names the file.
    strerror = getattr(exc, "strerror", None)
    if isinstance(strerror, str) and strerror:
        return strerror
    return str(exc) or type(exc).__name__
