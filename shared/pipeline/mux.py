"""Writing the joined stream: IVF, or WebM muxed by PyAV without re-encoding.

Both writers take the compressed frames in decode order (hidden alt-ref frames included) and
write the path atomically: into a temporary file in the same directory, renamed over the path
only when complete, so a failure never leaves a file that looks finished.

Timestamps: shown frame k is at k / fps. A hidden frame carries no picture of its own; IVF gives
it the next shown frame's pts (as vpxenc does); WebM needs strictly increasing block times, so it
gets the next shown frame's time minus one millisecond.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import tempfile
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

from shared.codec.ivf import IvfReader, IvfWriter

from .errors import OutputError
from .vpx import is_key_frame, is_shown

__all__ = ["OUTPUT_FORMATS", "check_output", "ivf_bytes", "output_format", "read_ivf_frames",
           "write_output"]

OUTPUT_FORMATS = (".ivf", ".webm")
_WEBM_TIME_BASE = Fraction(1, 1000)  # Matroska's usual 1 ms timecode scale


def output_format(path: str | Path) -> str:
    """The container for a path, by suffix (any case): ".ivf" or ".webm"; else ValueError."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        if Path(path).name.lower() in OUTPUT_FORMATS:  # ".ivf": a hidden file with no suffix
            raise ValueError(f"the output needs a name before its suffix, e.g. "
                             f"out{Path(path).name}")
        raise ValueError(f"the output must end in .ivf or .webm, not {suffix or 'no suffix'!r}")
    return suffix


def check_output(path: Path) -> str:
    """The output's container (".ivf" or ".webm"), once `path` is known to be writable:
    OutputError otherwise, before any work is done."""
    try:
        form = output_format(path)
    except ValueError as exc:
        raise OutputError(f"{path}: {exc}") from exc
    if path.is_dir():
        raise OutputError(f"{path}: is a directory")
    if path.exists() and not path.is_file():  # a FIFO, a device: renaming would replace it
        raise OutputError(f"{path}: not a regular file (the output is written beside it and "
                          "renamed over it)")
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent or ".", prefix=f".{path.name}."):
            pass
    except OSError as exc:
        raise OutputError(f"{path}: cannot write there ({exc.strerror or exc})") from exc
    return form


def ivf_bytes(frames: Iterable[bytes], width: int, height: int, fps: tuple[int, int]) -> bytes:
    """Frames as an in-memory IVF file, timestamped as `write_output` does."""
    buffer = io.BytesIO()
    writer = IvfWriter(buffer, width, height, timebase=(fps[1], fps[0]))
    for frame, pts in _ivf_timestamps(frames):
        writer.write(frame, pts)
    writer.close()
    return buffer.getvalue()


def read_ivf_frames(data: bytes) -> list[bytes]:
    """The frame payloads of an in-memory IVF file."""
    with IvfReader(io.BytesIO(data)) as reader:
        return [frame.data for frame in reader]


def write_output(
    path: str | Path, frames: Iterable[bytes], width: int, height: int, fps: tuple[int, int]
) -> None:
    """Write frames to `path` as IVF or WebM (by suffix), atomically."""
    target = Path(path)
    if output_format(target) == ".ivf":
        with IvfWriter(target, width, height, timebase=(fps[1], fps[0])) as writer:
            for frame, pts in _ivf_timestamps(frames):
                writer.write(frame, pts)
        return
    import av

    if target.is_symlink():  # its target is the output: the rename would replace the link
        target = Path(os.path.realpath(target))
    temp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        _write_webm(temp, frames, width, height, fps)
        os.replace(temp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        if isinstance(exc, av.FFmpegError):
            raise OutputError(f"{target}: cannot write WebM: {exc.strerror or exc}") from exc
        raise


def _ivf_timestamps(frames: Iterable[bytes]) -> Iterator[tuple[bytes, int]]:
    shown = 0
    for frame in frames:
        yield frame, shown
        shown += is_shown(frame)


def _write_webm(
    path: Path, frames: Iterable[bytes], width: int, height: int, fps: tuple[int, int]
) -> None:
    import av

    rate = Fraction(*fps)
    # bitexact: no random segment UID and no date in the header, so the same frames always
    # make the same file (a job's output is byte-identical whoever runs it, and whenever).
    with av.open(str(path), "w", format="webm", options={"fflags": "+bitexact"}) as container:
        # PyAV opens the stream's codec context (a libvpx encoder) when the header is written;
        # nothing is ever encoded with it: packets are muxed as they are.
        stream = container.add_stream("libvpx", rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.time_base = _WEBM_TIME_BASE
        frame_ticks = max(1, round(1 / rate / _WEBM_TIME_BASE))
        for frame, ticks in _webm_timestamps(frames, rate):
            packet = av.Packet(frame)
            packet.stream = stream
            packet.time_base = _WEBM_TIME_BASE
            packet.pts = packet.dts = ticks
            packet.is_keyframe = is_key_frame(frame)
            if is_shown(frame):
                packet.duration = frame_ticks
            container.mux(packet)


def _webm_timestamps(frames: Iterable[bytes], rate: Fraction) -> Iterator[tuple[bytes, int]]:
    """Milliseconds per frame, strictly increasing (Matroska requires it of one track)."""
    shown = 0
    previous = -1
    for frame in frames:
        ticks = round(shown / rate / _WEBM_TIME_BASE)
        if is_shown(frame):
            shown += 1
        else:
            ticks -= 1  # just before the frame it prepares
        ticks = max(ticks, previous + 1)
        previous = ticks
        yield frame, ticks
