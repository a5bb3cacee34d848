"""libvpx as the reference decoder, plus the small bitstream tools the tests need.

Everything here is independent of `shared.codec`, so the oracle can be trusted (and tested)
before our decoder exists:

- `split_ivf` / `join_ivf`: a private IVF reader and writer (32-byte 'DKIF' file header, then a
  12-byte header per frame: u32 size, u64 pts).
- `peek_header`: the frame tag and the uncompressed part of the first partition's header (every
  field up to the quantizer and the reference-update flags is a plain literal), enough to check
  that a generated stream really exercises what it claims to.
- `vpxdec_frames` / `pyav_frames`: every shown frame as raw I420, decoded by `/usr/bin/vpxdec` or
  by PyAV's `libvpx` decoder. `test_oracle.py` checks the two against each other and against the
  conformance suite's SHA1SUMS, which is what makes either one usable as the oracle.
"""

from __future__ import annotations

import functools
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IVF_HEADER = struct.Struct("<4sHH4sHHIII4x")  # magic, version, size, fourcc, w, h, rate, scale, n
IVF_FRAME_HEADER = struct.Struct("<IQ")  # frame size, pts
KEY_FRAME_START_CODE = b"\x9d\x01\x2a"


@dataclass(frozen=True)
class IvfStream:
    fourcc: bytes
    width: int
    height: int
    rate: int
    scale: int
    frames: list[bytes]


def split_ivf(data: bytes) -> IvfStream:
    """Parse an IVF file into its frames; raises ValueError on anything malformed."""
    if len(data) < IVF_HEADER.size:
        raise ValueError("IVF file shorter than its header")
    magic, _version, header_size, fourcc, width, height, rate, scale, _count = (
        IVF_HEADER.unpack_from(data)
    )
    if magic != b"DKIF" or header_size < IVF_HEADER.size:
        raise ValueError(f"not an IVF file (magic {magic!r}, header size {header_size})")
    frames = []
    pos = header_size
    while pos < len(data):
        if pos + IVF_FRAME_HEADER.size > len(data):
            raise ValueError(f"truncated frame header at byte {pos}")
        size, _pts = IVF_FRAME_HEADER.unpack_from(data, pos)
        pos += IVF_FRAME_HEADER.size
        if pos + size > len(data):
            raise ValueError(f"frame {len(frames)} runs past the end of the file")
        frames.append(data[pos : pos + size])
        pos += size
    return IvfStream(fourcc, width, height, rate, scale, frames)


def join_ivf(
    frames: Sequence[bytes], width: int, height: int, fourcc: bytes = b"VP80", rate: int = 30
) -> bytes:
    """Write frames as an IVF file with consecutive pts (used to splice and craft streams)."""
    out = [
        IVF_HEADER.pack(b"DKIF", 0, IVF_HEADER.size, fourcc, width, height, rate, 1, len(frames))
    ]
    for pts, frame in enumerate(frames):
        out.append(IVF_FRAME_HEADER.pack(len(frame), pts))
        out.append(frame)
    return b"".join(out)


def read_ivf(path: Path) -> IvfStream:
    return split_ivf(Path(path).read_bytes())


# --- frame header peek -----------------------------------------------------------------------


class _BoolReader:
    """The VP8 boolean decoder, only as far as literals (p = 128) need it.

    Reading past the end shifts in zeros, as libvpx does, so a short header never raises here.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 2
        self._value = int.from_bytes(data[:2].ljust(2, b"\0"), "big")
        self._range = 255
        self._shift = 0

    def bool(self, prob: int = 128) -> int:
        split = 1 + (((self._range - 1) * prob) >> 8)
        big_split = split << 8
        if self._value >= big_split:
            bit = 1
            self._range -= split
            self._value -= big_split
        else:
            bit = 0
            self._range = split
        while self._range < 128:
            self._range <<= 1
            self._value <<= 1
            self._shift += 1
            if self._shift == 8:
                self._shift = 0
                if self._pos < len(self._data):
                    self._value |= self._data[self._pos]
                self._pos += 1
        return bit

    def literal(self, bits: int) -> int:
        value = 0
        for _ in range(bits):
            value = (value << 1) | self.bool()
        return value

    def signed(self, bits: int) -> int:
        magnitude = self.literal(bits)
        return -magnitude if self.bool() else magnitude

    def flagged_signed(self, bits: int) -> int | None:
        return self.signed(bits) if self.bool() else None


@dataclass(frozen=True)
class FrameHeader:
    """The fields of a VP8 frame header the stream checks look at (RFC 6386 §9, §19.2)."""

    key_frame: bool
    version: int
    show_frame: bool
    first_part_size: int
    width: int | None  # key frames only
    height: int | None
    horiz_scale: int | None
    vert_scale: int | None
    segmentation_enabled: bool
    update_mb_segmentation_map: bool
    update_segment_feature_data: bool
    filter_type: int  # 0 normal, 1 simple
    loop_filter_level: int
    sharpness: int
    lf_deltas_enabled: bool
    token_partitions: int
    q_index: int
    refresh_golden: bool
    refresh_altref: bool
    copy_to_golden: int  # 0 none, 1 last, 2 altref
    copy_to_altref: int  # 0 none, 1 last, 2 golden
    sign_bias_golden: bool
    sign_bias_altref: bool
    refresh_entropy_probs: bool
    refresh_last: bool

    @property
    def first_part_offset(self) -> int:
        return 10 if self.key_frame else 3


def peek_header(frame: bytes) -> FrameHeader:
    """Parse the frame tag and the literal-coded start of the frame header."""
    if len(frame) < 3:
        raise ValueError("frame shorter than its 3-byte tag")
    tag = int.from_bytes(frame[:3], "little")
    key_frame = not tag & 1
    width = height = horiz_scale = vert_scale = None
    offset = 3
    if key_frame:
        if len(frame) < 10 or frame[3:6] != KEY_FRAME_START_CODE:
            raise ValueError("key frame without a start code")
        w, h = struct.unpack_from("<HH", frame, 6)
        width, horiz_scale, height, vert_scale = w & 0x3FFF, w >> 14, h & 0x3FFF, h >> 14
        offset = 10
    first_part_size = tag >> 5
    bits = _BoolReader(frame[offset : offset + first_part_size])
    if key_frame:
        bits.literal(2)  # colour space, clamping type

    seg_enabled = bool(bits.bool())
    update_map = update_data = False
    if seg_enabled:
        update_map, update_data = bool(bits.bool()), bool(bits.bool())
        if update_data:
            bits.bool()  # absolute or delta values
            for _ in range(4):
                bits.flagged_signed(7)  # quantizer per segment
            for _ in range(4):
                bits.flagged_signed(6)  # loop-filter level per segment
        if update_map:
            for _ in range(3):
                if bits.bool():
                    bits.literal(8)  # segment-id tree probability

    filter_type = bits.bool()
    level = bits.literal(6)
    sharpness = bits.literal(3)
    lf_deltas = bool(bits.bool())
    if lf_deltas and bits.bool():
        for _ in range(8):
            bits.flagged_signed(6)  # ref-frame and mode deltas
    partitions = 1 << bits.literal(2)
    q_index = bits.literal(7)
    for _ in range(5):
        bits.flagged_signed(4)  # y_dc, y2_dc, y2_ac, uv_dc, uv_ac deltas

    refresh_golden = refresh_altref = True
    copy_golden = copy_altref = 0
    sign_golden = sign_altref = False
    if key_frame:
        refresh_entropy = bool(bits.bool())
        refresh_last = True
    else:
        refresh_golden, refresh_altref = bool(bits.bool()), bool(bits.bool())
        if not refresh_golden:
            copy_golden = bits.literal(2)
        if not refresh_altref:
            copy_altref = bits.literal(2)
        sign_golden, sign_altref = bool(bits.bool()), bool(bits.bool())
        refresh_entropy = bool(bits.bool())
        refresh_last = bool(bits.bool())

    return FrameHeader(
        key_frame=key_frame,
        version=(tag >> 1) & 7,
        show_frame=bool(tag & 0x10),
        first_part_size=first_part_size,
        width=width,
        height=height,
        horiz_scale=horiz_scale,
        vert_scale=vert_scale,
        segmentation_enabled=seg_enabled,
        update_mb_segmentation_map=update_map,
        update_segment_feature_data=update_data,
        filter_type=filter_type,
        loop_filter_level=level,
        sharpness=sharpness,
        lf_deltas_enabled=lf_deltas,
        token_partitions=partitions,
        q_index=q_index,
        refresh_golden=refresh_golden,
        refresh_altref=refresh_altref,
        copy_to_golden=copy_golden,
        copy_to_altref=copy_altref,
        sign_bias_golden=sign_golden,
        sign_bias_altref=sign_altref,
        refresh_entropy_probs=refresh_entropy,
        refresh_last=refresh_last,
    )


def reference_slots(headers: Iterable[FrameHeader]) -> list[tuple[int, int, int]]:
    """For each frame, which frame index (last, golden, altref) hold *after* decoding it.

    Follows libvpx's buffer swap order (`swap_frame_buffers`): the copy into altref happens
    first, so a golden copied "from altref" in the same frame gets the *updated* altref; then
    the refreshes. Used to find split points where the three references really differ.
    """
    slots: list[tuple[int, int, int]] = []
    last = golden = altref = -1
    for index, h in enumerate(headers):
        if h.key_frame:
            last = golden = altref = index
        else:
            if h.copy_to_altref == 1:
                altref = last
            elif h.copy_to_altref == 2:
                altref = golden
            if h.copy_to_golden == 1:
                golden = last
            elif h.copy_to_golden == 2:
                golden = altref
            if h.refresh_golden:
                golden = index
            if h.refresh_altref:
                altref = index
            if h.refresh_last:
                last = index
        slots.append((last, golden, altref))
    return slots


# --- reference decoding ------------------------------------------------------------------------


@dataclass(frozen=True)
class RawFrame:
    """One shown frame as libvpx outputs it with --i420: Y, then U, then V, no padding."""

    width: int
    height: int
    data: bytes

    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return i420_planes(self.data, self.width, self.height)


def i420_planes(data: bytes, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cw, ch = (width + 1) // 2, (height + 1) // 2
    if len(data) != width * height + 2 * cw * ch:
        raise ValueError(f"{len(data)} bytes is not an I420 frame of {width}x{height}")
    flat = np.frombuffer(data, np.uint8)
    y = flat[: width * height].reshape(height, width)
    u = flat[width * height : width * height + cw * ch].reshape(ch, cw)
    v = flat[width * height + cw * ch :].reshape(ch, cw)
    return y, u, v


VPXDEC = shutil.which("vpxdec") or "/usr/bin/vpxdec"
VPXENC = shutil.which("vpxenc") or "/usr/bin/vpxenc"
_FRAME_FILE = re.compile(r"frame-(\d+)-(\d+)x(\d+)\.i420$")


def vpxdec_frames(path: Path, *, damaged: bool = False) -> list[RawFrame]:
    """Decode with vpxdec into one file per shown frame (the pattern keeps each frame's size).

    vpxdec fails on frames libvpx flags as corrupt; `damaged=True` keeps going (`--keep-going`)
    and returns what it showed, for comparisons on deliberately damaged streams.
    """
    with tempfile.TemporaryDirectory(prefix="vpxdec-") as tmp:
        pattern = str(Path(tmp) / "frame-%9-%wx%h.i420")
        command = [VPXDEC, "--codec=vp8", "--i420", "-t", "1", "-o", pattern, str(path)]
        if damaged:
            command.insert(1, "--keep-going")
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode and not damaged:
            raise RuntimeError(f"vpxdec failed on {path}: {done.stderr.strip()}")
        found = []
        for file in Path(tmp).iterdir():
            match = _FRAME_FILE.search(file.name)
            if match is None:
                raise RuntimeError(f"unexpected vpxdec output {file.name}")
            number, width, height = map(int, match.groups())
            found.append((number, RawFrame(width, height, file.read_bytes())))
    return [frame for _, frame in sorted(found, key=lambda item: item[0])]


def pyav_frames(frames: Iterable[bytes]) -> list[RawFrame]:
    """Decode with PyAV's libvpx decoder (single thread); hidden frames produce no output."""
    import av

    codec = av.CodecContext.create("libvpx", "r")
    codec.thread_count = 1
    out = []
    for data in [*frames, None]:  # None flushes
        packet = av.Packet(data) if data is not None else None
        for frame in codec.decode(packet):
            out.append(_pyav_to_raw(frame))
    return out


def pyav_decode_each(frames: Iterable[bytes]) -> list[RawFrame | None]:
    """libvpx's output for each frame in turn (None: nothing shown); raises where libvpx fails.

    For damaged input: which frames libvpx rejects, and what it makes of the ones it accepts.
    """
    import av

    codec = av.CodecContext.create("libvpx", "r")
    codec.thread_count = 1
    out: list[RawFrame | None] = []
    for data in frames:
        shown = [_pyav_to_raw(frame) for frame in codec.decode(av.Packet(data))]
        out.append(shown[0] if shown else None)
    return out


def _pyav_to_raw(frame) -> RawFrame:  # noqa: ANN001 - av.VideoFrame, imported lazily
    if frame.format.name != "yuv420p":
        raise RuntimeError(f"libvpx returned {frame.format.name}, expected yuv420p")
    parts = []
    for plane in frame.planes:
        rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        parts.append(rows[:, : plane.width].tobytes())
    return RawFrame(frame.width, frame.height, b"".join(parts))


@functools.cache
def libvpx_version() -> str:
    """vpxenc's version string (part of the stream cache key: another libvpx encodes otherwise)."""
    out = subprocess.run([VPXENC, "--help"], capture_output=True, text=True).stdout
    match = re.search(r"vp8\s+-\s+(.*VP8 Encoder \S+)", out)
    return match.group(1) if match else "unknown"
