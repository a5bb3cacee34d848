"""Bounded, reproducible fuzzing of `decode` and `DecoderState.from_bytes`.

A fixed-seed RNG mutates real frames from several vectors and generated streams (bit flips,
byte changes, truncation, splices, insertions and deletions, frame-tag and key-frame-size
tweaks, partition-size tweaks) and decodes each from the valid state that frame expects. Only
CodecError subclasses may escape; a crash kills the run (faulthandler prints where) and a hang
is cut off by a watchdog. Failed decodes must leave their input state intact, and what decodes
must give a usable state.

Serialized states are mutated too: raw mutations must raise StateFormatError, and mutations of
the decompressed body, resealed with a valid checksum, must raise it or give a usable state.
"""

from __future__ import annotations

import faulthandler
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from decoder_support import decode_all, require_decoder
from libvpx_oracle import peek_header, read_ivf

codec = require_decoder()
DecoderState = codec.DecoderState
CodecError = codec.CodecError
StateFormatError = codec.StateFormatError

SEED = 0x5EED_0008
# Frames to mutate: (vector, how many of its first frames).
FUZZ_VECTORS = {
    "vp80-00-comprehensive-001.ivf": 6,  # profile 0, one partition
    "vp80-00-comprehensive-003.ivf": 4,  # version 1: bilinear, simple loop filter
    "vp80-00-comprehensive-005.ivf": 4,  # version 3: full-pixel
    "vp80-00-comprehensive-007.ivf": 4,  # segmentation, 2 partitions
    "vp80-00-comprehensive-018.ivf": 3,  # hidden key frame
    "vp80-04-partitions-1406.ivf": 4,  # 8 partitions
    "vp80-03-segmentation-1436.ivf": 2,  # size change with segmentation
}
# Generated streams to mutate too: hidden alt-ref, non-reference frames, segmentation toggles.
FUZZ_GENERATED = {"altref-2pass": 3, "temporal-layers": 3}
CASES_PER_FRAME = 250  # x 33 frames: about 8000 mutated frames
STATE_CASES = 1000
WATCHDOG_SECONDS = 240  # far above the expected run time; a hang ends the run with a traceback


@pytest.fixture
def watchdog() -> Iterator[None]:
    faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


# --- frame mutations -------------------------------------------------------------------------

Mutation = Callable[[np.random.Generator, bytes, bytes], tuple[str, bytes]]


def _flip_bits(rng: np.random.Generator, frame: bytes, other: bytes) -> tuple[str, bytes]:
    data = bytearray(frame)
    span = min(len(data), 40) if rng.random() < 0.5 else len(data)  # favour the headers
    for _ in range(int(rng.integers(1, 9))):
        data[int(rng.integers(span))] ^= 1 << int(rng.integers(8))
    return "bit flips", bytes(data)


def _set_bytes(rng: np.random.Generator, frame: bytes, other: bytes) -> tuple[str, bytes]:
    data = bytearray(frame)
    for _ in range(int(rng.integers(1, 5))):
        data[int(rng.integers(len(data)))] = int(rng.choice([0, 0xFF, rng.integers(256)]))
    return "byte changes", bytes(data)


def _truncate(rng: np.random.Generator, frame: bytes, other: bytes) -> tuple[str, bytes]:
    return "truncation", frame[: int(rng.integers(len(frame)))]


def _splice(rng: np.random.Generator, frame: bytes, other: bytes) -> tuple[str, bytes]:
    return "splice", frame[: int(rng.integers(len(frame)))] + other[int(rng.integers(len(other))) :]


def _insert_delete(rng: np.random.Generator, frame: bytes, other: bytes) -> tuple[str, bytes]:
    at = int(rng.integers(len(frame)))
    if rng.random() < 0.5:
        return "insertion", frame[:at] + rng.bytes(int(rng.integers(1, 64))) + frame[at:]
    return "deletion", frame[:at] + frame[at + int(rng.integers(1, 64)) :]


def _tweak_tag(rng: np.random.Generator, frame: bytes, other: bytes) -> tuple[str, bytes]:
    tag = int.from_bytes(frame[:3], "little")
    field = int(rng.integers(4))
    if field == 0:
        tag ^= 1  # key frame <-> interframe
    elif field == 1:
        tag = (tag & ~0b1110) | int(rng.integers(8)) << 1  # version, including reserved 4..7
    elif field == 2:
        tag ^= 1 << 4  # show_frame
    else:
        size = (
            int(rng.integers(len(frame) + 64)) if rng.random() < 0.8 else int(rng.integers(1 << 19))
        )
        tag = (tag & 0x1F) | size << 5  # first partition size
    return f"tag field {field}", tag.to_bytes(3, "little") + frame[3:]


def _tweak_key_size(rng: np.random.Generator, frame: bytes, other: bytes) -> tuple[str, bytes]:
    if frame[0] & 1 or len(frame) < 10:
        return _tweak_tag(rng, frame, other)
    # Sizes up to 400 keep a mutated key frame cheap; huge sizes are test_bad_input's job.
    w, h = (int(rng.integers(1, 400)) | int(rng.integers(4)) << 14 for _ in range(2))
    return "key frame size", frame[:6] + struct.pack("<HH", w, h) + frame[10:]


def _tweak_partition_sizes(
    rng: np.random.Generator, frame: bytes, other: bytes
) -> tuple[str, bytes]:
    h = peek_header(frame)
    table = h.first_part_offset + h.first_part_size
    if h.token_partitions == 1 or len(frame) < table + 3:
        return _set_bytes(rng, frame, other)
    at = table + 3 * int(rng.integers(h.token_partitions - 1))
    size = int(rng.integers(len(frame))) if rng.random() < 0.7 else int(rng.integers(1 << 24))
    return "partition size", frame[:at] + size.to_bytes(3, "little") + frame[at + 3 :]


MUTATIONS: list[Mutation] = [
    _flip_bits,
    _flip_bits,
    _set_bytes,
    _truncate,
    _splice,
    _insert_delete,
    _tweak_tag,
    _tweak_key_size,
    _tweak_partition_sizes,
]


@pytest.fixture(scope="module")
def bases(
    vectors_dir: Path, vp8_stream: Callable[[str], Path]
) -> list[tuple[str, int, object, bytes, bytes | None, list[bytes]]]:
    """(stream, index, state before the frame, frame, its straight image bytes, the stream)."""
    paths = {name: vectors_dir / name for name in FUZZ_VECTORS}
    paths |= {name: vp8_stream(name) for name in FUZZ_GENERATED}
    out = []
    for name, count in (FUZZ_VECTORS | FUZZ_GENERATED).items():
        frames = read_ivf(paths[name]).frames[: count + 1]
        straight = decode_all(codec, frames)
        for index in range(count):
            before = straight.states[index - 1] if index else DecoderState.initial()
            image = straight.images[index]
            expected = None if image is None else image.to_i420()
            out.append((name, index, before, frames[index], expected, frames))
    return out


def test_fuzz_frames(bases: list, watchdog: object, record_property: Callable) -> None:
    rng = np.random.default_rng(SEED)
    pool = [base[3] for base in bases]
    problems: list[str] = []
    outcomes: dict[str, int] = {}
    for name, index, before, frame, expected, frames in bases:
        for case in range(CASES_PER_FRAME):
            mutate = MUTATIONS[int(rng.integers(len(MUTATIONS)))]
            what, data = mutate(rng, frame, pool[int(rng.integers(len(pool)))])
            where = f"{name} frame {index} case {case} ({what}, {len(data)} bytes)"
            try:
                state, image = codec.decode(before, data)
            except CodecError as exc:
                outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
                continue
            except Exception as exc:  # noqa: BLE001 - collecting exactly these is the point
                problems.append(f"{where}: {exc!r}")
                continue
            outcomes["decoded"] = outcomes.get("decoded", 0) + 1
            if image is not None:
                w, h = image.width, image.height
                if len(image.to_i420()) != w * h + 2 * ((w + 1) // 2) * ((h + 1) // 2):
                    problems.append(f"{where}: image {w}x{h} has a wrong I420 size")
            if case % 8 == 0:  # the new state must be usable: serialize it, decode on from it
                try:
                    assert DecoderState.from_bytes(state.to_bytes()) == state
                    if index + 1 < len(frames):
                        codec.decode(state, frames[index + 1])
                except CodecError:
                    pass
                except Exception as exc:  # noqa: BLE001
                    problems.append(f"{where}: the resulting state is unusable: {exc!r}")
        # After all those decodes (and failures) from `before`, it must still decode the frame.
        _, image = codec.decode(before, frame)
        if (None if image is None else image.to_i420()) != expected:
            problems.append(f"{name} frame {index}: fuzzing changed the input state")
    record_property("fuzz_frame_outcomes", outcomes)
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:25])


# --- state mutations -----------------------------------------------------------------------


def _reseal(data: bytes, payload: bytes) -> bytes:
    """`data` with its body replaced by compressed `payload` and a matching checksum.

    Follows the format documented in `shared.codec.state`: magic, u16 version, u16 flags,
    u32 CRC-32 of version, flags and the compressed body, zlib body.
    """
    body = zlib.compress(payload)
    crc = zlib.crc32(body, zlib.crc32(data[4:8]))
    return data[:8] + struct.pack("<I", crc) + body


def _payload(data: bytes) -> bytes:
    try:
        return zlib.decompress(data[12:])
    except zlib.error:
        pytest.fail("serialized state layout changed; update test_fuzz._reseal/_payload")


@pytest.fixture(scope="module")
def states(vectors_dir: Path) -> list[tuple[object, bytes]]:
    """(state, the next frame) at a few interesting points."""
    out = []
    for name, at in [
        ("vp80-00-comprehensive-001.ivf", 2),
        ("vp80-00-comprehensive-007.ivf", 3),  # segmentation
        ("vp80-03-segmentation-1436.ivf", 0),  # 282x231, before the size change
    ]:
        frames = read_ivf(vectors_dir / name).frames
        out.append((decode_all(codec, frames[: at + 1]).states[-1], frames[at + 1]))
    return out


def test_fuzz_states(states: list, watchdog: object, record_property: Callable) -> None:
    rng = np.random.default_rng(SEED + 1)
    problems: list[str] = []
    accepted = 0
    for case in range(STATE_CASES):
        state, next_frame = states[case % len(states)]
        data = state.to_bytes()
        kind = case % 4
        if kind == 0:  # raw bit flips anywhere: the checksum or the header must catch them
            bad = bytearray(data)
            for _ in range(int(rng.integers(1, 5))):
                bad[int(rng.integers(len(bad)))] ^= 1 << int(rng.integers(8))
            mutated = bytes(bad)
        elif kind == 1:  # truncation or extension
            cut = int(rng.integers(len(data)))
            mutated = (
                data[:cut] if rng.random() < 0.6 else data + rng.bytes(int(rng.integers(1, 9)))
            )
        elif kind == 2:  # splice two states
            other = states[int(rng.integers(len(states)))][0].to_bytes()
            mutated = data[: int(rng.integers(len(data)))] + other[int(rng.integers(len(other))) :]
        else:  # the body itself, resealed so the checksum passes: the parser must cope
            payload = bytearray(_payload(data))
            span = min(len(payload), 2048) if rng.random() < 0.7 else len(payload)
            for _ in range(int(rng.integers(1, 9))):
                payload[int(rng.integers(span))] = int(rng.integers(256))
            if rng.random() < 0.2:
                payload = payload[: int(rng.integers(len(payload)))]
            mutated = _reseal(data, bytes(payload))
        if mutated == data:
            continue
        where = f"state case {case} (kind {kind})"
        try:
            restored = DecoderState.from_bytes(mutated)
        except StateFormatError:
            continue
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{where}: {exc!r}")
            continue
        if kind != 3:
            problems.append(f"{where}: a corrupted state was accepted")
            continue
        accepted += 1
        try:  # a checksummed state that parses must be safe to use
            restored.digest()
            codec.decode(restored, next_frame)
        except CodecError:
            pass
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{where}: accepted, then {exc!r}")
    record_property("fuzz_states_accepted_after_reseal", accepted)
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:25])


def test_reseal_matches_the_format(states: list) -> None:
    state = states[0][0]
    data = state.to_bytes()
    assert DecoderState.from_bytes(_reseal(data, _payload(data))) == state
    assert data[:4] == sys.modules[type(state).__module__].MAGIC
