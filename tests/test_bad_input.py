"""Bad input gets a clear error of the codec's own types (CodecError subclasses), never another
exception, a crash, a hang or a huge allocation.

Damaged frames are also held to libvpx's behaviour, which is:
- a cut inside the frame header, the first partition or the partition-size table, or one that
  leaves a token partition empty, is rejected ("Truncated packet or corrupt partition");
- the first key frame of a stream must be complete: libvpx rejects it if any partition is read
  past its end ("A stream must start with a complete key frame");
- any other damaged frame is decoded as if zeros followed the data, and shown.
Our decoder may reject more than libvpx (a clear error beats garbage), but it must not accept
what libvpx rejects, and what it accepts it must decode exactly as libvpx does.
"""

from __future__ import annotations

import os
import resource
import struct
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from decoder_support import REPO, require_decoder
from libvpx_oracle import KEY_FRAME_START_CODE, join_ivf, peek_header, pyav_decode_each, read_ivf

codec = require_decoder()
DecoderState = codec.DecoderState
CodecError = codec.CodecError
CorruptFrameError = codec.CorruptFrameError

TRUNCATION_VECTORS = [
    "vp80-00-comprehensive-001.ivf",  # one partition
    "vp80-00-comprehensive-016.ivf",  # two partitions
    "vp80-04-partitions-1406.ivf",  # eight partitions
    "vp80-03-segmentation-1436.ivf",  # segmentation, 282x231 key frame
]


def key_frame(width: int, height: int, payload: bytes = bytes(32), *, scale: int = 0) -> bytes:
    """A key frame with the given size fields; the payload is the (garbage) first partition."""
    tag = (1 << 4) | (len(payload) << 5)  # key frame, version 0, shown
    size = struct.pack("<HH", width | scale << 14, height | scale << 14)
    return tag.to_bytes(3, "little") + KEY_FRAME_START_CODE + size + payload


def outcome(state: Any, frame: bytes) -> Any:
    """The decode result, or the exception raised (callers reject all but CodecErrors)."""
    try:
        return codec.decode(state, frame)
    except Exception as exc:  # noqa: BLE001 - the tests report which input raised what
        return exc


def wrong_type(result: Any) -> bool:
    return isinstance(result, Exception) and not isinstance(result, CodecError)


def libvpx_outcome(previous: list[bytes], frame: bytes) -> object:
    """libvpx's output for `frame` after `previous`, or the exception it raised."""
    try:
        return pyav_decode_each([*previous, frame])[-1]
    except Exception as exc:  # noqa: BLE001 - any libvpx failure means "rejected"
        return exc


def compare_with_libvpx(previous: list[bytes], frame: bytes, ours: Any) -> str | None:
    """What is wrong with having accepted `frame` (decoded to `ours`), by libvpx's standard."""
    libvpx = libvpx_outcome(previous, frame)
    if isinstance(libvpx, Exception):
        return f"accepted, but libvpx rejects it ({libvpx})"
    image = ours[1]
    if (None if image is None else image.to_i420()) != (None if libvpx is None else libvpx.data):
        return "accepted, but decoded unlike libvpx"
    return None


def header_end(frame: bytes) -> int:
    """Bytes up to the end of the partition-size table: a cut before it is always corrupt."""
    h = peek_header(frame)
    return h.first_part_offset + h.first_part_size + 3 * (h.token_partitions - 1)


@pytest.fixture(scope="module")
def vectors(vectors_dir: Path) -> dict[str, list[bytes]]:
    names = {*TRUNCATION_VECTORS, "vp80-00-comprehensive-002.ivf"}
    return {name: read_ivf(vectors_dir / name).frames for name in names}


@pytest.mark.parametrize("name", TRUNCATION_VECTORS)
def test_truncated_frames(vectors: dict[str, list[bytes]], name: str) -> None:
    frames = vectors[name]
    start = DecoderState.initial()
    after_key, _ = codec.decode(start, frames[0])
    problems = []
    for index, state in ((0, start), (1, after_key)):
        frame = frames[index]
        # Every cut in the headers, ~150 through the data, and the last few bytes (the subtle
        # ones: the bool decoder reads a little ahead of what it returns).
        n = len(frame)
        cuts = sorted({*range(min(n, 48)), *range(48, n, max(1, n // 150)), *range(n - 4, n)})
        for cut in cuts:
            ours = outcome(state, frame[:cut])
            where = f"frame {index} cut to {cut} of {len(frame)} bytes"
            if wrong_type(ours):
                problems.append(f"{where}: raised {ours!r}")
            elif cut < header_end(frame) and not isinstance(ours, CorruptFrameError):
                problems.append(f"{where}: {ours!r}, expected CorruptFrameError")
            if isinstance(ours, Exception):
                continue
            problem = compare_with_libvpx(frames[:index], frame[:cut], ours)
            if problem:
                problems.append(f"{where}: {problem}")
    assert not problems, "\n".join(problems[:20])


def test_zero_length_frame(vectors: dict[str, list[bytes]]) -> None:
    frames = vectors["vp80-00-comprehensive-001.ivf"]
    with pytest.raises(CorruptFrameError):
        codec.decode(DecoderState.initial(), b"")
    state, _ = codec.decode(DecoderState.initial(), frames[0])
    with pytest.raises(CorruptFrameError):
        codec.decode(state, b"")


def test_interframe_without_key_frame(vectors: dict[str, list[bytes]]) -> None:
    with pytest.raises(codec.MissingKeyFrameError):
        codec.decode(DecoderState.initial(), vectors["vp80-00-comprehensive-001.ivf"][1])


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00",
        b"\x10\x02\x00",  # key frame tag, nothing else
        b"\x10\x02\x00\x9d\x01\x2a\xb0\x00",  # header cut inside the size fields
        b"\x10\x02\x00\x00\x00\x00\xb0\x00\x90\x00" + bytes(16),  # wrong start code
        key_frame(176, 144, b"")[:10],  # empty first partition
        key_frame(176, 144)[:20],  # first partition shorter than its declared size
    ],
    ids=["1 byte", "tag only", "cut size", "bad start code", "empty partition", "short partition"],
)
def test_malformed_key_frames(frame: bytes) -> None:
    assert isinstance(libvpx_outcome([], frame), Exception), "libvpx accepts it: bad test"
    with pytest.raises(CorruptFrameError):
        codec.decode(DecoderState.initial(), frame)


@pytest.mark.parametrize("version", [4, 5, 6, 7])
def test_reserved_versions_decode_like_libvpx(
    vectors: dict[str, list[bytes]], version: int
) -> None:
    """libvpx decodes the reserved bitstream versions 4-7 exactly like version 0."""
    frames = [
        bytes([frame[0] & ~0b1110 | version << 1]) + frame[1:]
        for frame in vectors["vp80-00-comprehensive-002.ivf"][:4]
    ]
    state = DecoderState.initial()
    for index, frame in enumerate(frames):
        result = outcome(state, frame)
        assert not wrong_type(result), f"frame {index}: {result!r}"
        if isinstance(result, CodecError):
            break  # rejecting them is allowed; decoding them differently is not
        assert compare_with_libvpx(frames[:index], frame, result) is None, f"frame {index}"
        state = result[0]


@pytest.mark.parametrize("size", [(0, 0), (0, 16), (16, 0)])
def test_zero_dimensions(size: tuple[int, int]) -> None:
    with pytest.raises(codec.FrameSizeError):
        codec.decode(DecoderState.initial(), key_frame(*size))


@pytest.mark.parametrize("scale", [0, 3])
def test_absurd_dimensions_fail_fast_without_allocating(scale: int) -> None:
    frame = key_frame(16383, 16383, scale=scale)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(codec.FrameSizeError):
            codec.decode(DecoderState.initial(), frame)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5, f"rejecting took {elapsed:.2f} s"
    assert peak < 16 << 20, f"traced allocations peaked at {peak >> 20} MiB"


_LIMITED_CHILD = """
import sys
import shared.codec as codec
frame = bytes.fromhex(sys.argv[1])
try:
    codec.decode(codec.DecoderState.initial(), frame)
except codec.FrameSizeError:
    print("FrameSizeError")
"""


def test_absurd_dimensions_under_a_memory_limit() -> None:
    """In a child limited to 384 MiB of address space, where one 16383x16383 picture (~400 MB)
    cannot be allocated: any allocation attempt shows up as a MemoryError or a crash."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (384 << 20, 384 << 20))

    done = subprocess.run(
        [sys.executable, "-c", _LIMITED_CHILD, key_frame(16383, 16383).hex()],
        preexec_fn=limit,
        capture_output=True,
        text=True,
        cwd=REPO,
        # The parent's import path, so the child finds the same build of the codec.
        env={"OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.strip() == "FrameSizeError", done.stderr[-2000:]


def test_random_bytes(vectors: dict[str, list[bytes]]) -> None:
    rng = np.random.default_rng(20240601)
    start = DecoderState.initial()
    mid_stream = codec.decode(start, vectors["vp80-00-comprehensive-001.ivf"][0])[0]
    problems = []
    for case in range(300):
        length = int(rng.integers(1, 2000))
        data = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
        if case % 3 == 0:  # make it look like a key frame, so the decoder goes deeper
            data = key_frame(int(rng.integers(1, 200)), int(rng.integers(1, 200)), data)
        for state in (start, mid_stream):
            result = outcome(state, data)
            if wrong_type(result):
                problems.append(f"case {case} ({len(data)} bytes): {result!r}")
    assert not problems, "\n".join(problems[:20])


def test_interframe_of_another_size(vp8_stream_frames: dict[str, list[bytes]]) -> None:
    """An interframe from an 80x64 stream after a 64x48 key frame: damaged, but no crash."""
    small, large = vp8_stream_frames["size-change-a"], vp8_stream_frames["size-change-b"]
    state = codec.decode(DecoderState.initial(), small[0])[0]
    for frame in large[1:]:
        result = outcome(state, frame)
        assert not wrong_type(result), repr(result)
        if not isinstance(result, CodecError):
            assert compare_with_libvpx(small[:1], frame, result) is None


@pytest.fixture
def vp8_stream_frames(vp8_stream: Callable[[str], Path]) -> dict[str, list[bytes]]:
    return {name: read_ivf(vp8_stream(name)).frames for name in ("size-change-a", "size-change-b")}


def test_corrupt_state_files(vectors: dict[str, list[bytes]]) -> None:
    state = codec.decode(DecoderState.initial(), vectors["vp80-00-comprehensive-001.ivf"][0])[0]
    data = state.to_bytes()
    for bad in (b"", b"\0" * 64, data[: len(data) // 2], data[:-1] + bytes([data[-1] ^ 1])):
        with pytest.raises(codec.StateFormatError):
            DecoderState.from_bytes(bad)


@pytest.mark.parametrize(
    "damage",
    ["wrong fourcc", "bad signature", "short header", "frame past the end", "short frame header"],
)
def test_bad_ivf_files(tmp_path: Path, vectors: dict[str, list[bytes]], damage: str) -> None:
    from shared.codec.ivf import IvfReader

    frames = vectors["vp80-00-comprehensive-001.ivf"][:3]
    data = join_ivf(frames, 176, 144)
    data = {
        "wrong fourcc": join_ivf(frames, 176, 144, fourcc=b"VP90"),
        "bad signature": b"DKIX" + data[4:],
        "short header": data[:20],
        "frame past the end": data[:-5],
        "short frame header": data[: 32 + 12 + len(frames[0]) + 6],
    }[damage]
    path = tmp_path / "bad.ivf"
    path.write_bytes(data)
    with pytest.raises(codec.ContainerError), IvfReader(path) as reader:
        for _ in reader:
            pass
