"""Both serialized forms of a decoder state: compressed (default) and raw planes."""

import struct
import zlib

import pytest
from decoder_support import require_decoder

require_decoder()

from shared.codec import DecoderState, StateFormatError, decode  # noqa: E402
from shared.codec.ivf import IvfReader  # noqa: E402


@pytest.fixture(scope="module")
def state(vectors_dir):
    state = DecoderState.initial()
    for frame in IvfReader(vectors_dir / "vp80-05-sharpness-1438.ivf"):
        state, _ = decode(state, frame.data)
    return state


def test_raw_and_compressed_forms_round_trip_to_equal_states(state):
    compressed = state.to_bytes()
    raw = state.to_bytes(compress=False)
    assert len(raw) > len(compressed)
    assert DecoderState.from_bytes(raw) == state == DecoderState.from_bytes(compressed)
    assert DecoderState.from_bytes(raw).digest() == state.digest()


def test_raw_form_decodes_on_identically(state, vectors_dir):
    frames = [f.data for f in IvfReader(vectors_dir / "vp80-05-sharpness-1438.ivf")]
    restored = DecoderState.from_bytes(state.to_bytes(compress=False))
    # Continue both with the stream's last frame (an interframe against these references).
    ours = decode(restored, frames[-1])
    theirs = decode(state, frames[-1])
    assert ours[0] == theirs[0]
    assert ours[1] == theirs[1]


def test_unknown_flags_are_rejected(state):
    data = bytearray(state.to_bytes(compress=False))
    magic, version, flags, _ = struct.unpack_from("<4sHHI", data)
    body = bytes(data[12:])
    bad_flags = flags | 0x8000
    crc = zlib.crc32(body, zlib.crc32(struct.pack("<HH", version, bad_flags)))
    forged = struct.pack("<4sHHI", magic, version, bad_flags, crc) + body
    with pytest.raises(StateFormatError, match="unknown flags"):
        DecoderState.from_bytes(forged)


def _forge(version: int, flags: int, body: bytes) -> bytes:
    crc = zlib.crc32(body, zlib.crc32(struct.pack("<HH", version, flags)))
    return struct.pack("<4sHHI", b"EXCS", version, flags, crc) + body


def test_raw_form_is_stored_without_zlib_and_the_older_deflated_raw_form_still_reads(state):
    raw = state.to_bytes(compress=False)
    _, version, flags, _ = struct.unpack_from("<4sHHI", raw)
    assert flags == 3  # raw planes, stored body
    # Raw planes wrapped in a level-0 zlib stream (flag 1 alone) is what earlier builds wrote.
    older = _forge(version, 1, zlib.compress(raw[12:], 0))
    assert DecoderState.from_bytes(older) == state
    assert DecoderState.from_bytes(memoryview(raw)) == state


@pytest.mark.parametrize("cut", [1, 100, 5000])
def test_truncated_or_padded_stored_body_is_a_format_error(state, cut):
    raw = state.to_bytes(compress=False)
    _, version, flags, _ = struct.unpack_from("<4sHHI", raw)
    for body in (raw[12:-cut], raw[12:] + bytes(cut)):
        with pytest.raises(StateFormatError, match="length|truncated"):
            DecoderState.from_bytes(_forge(version, flags, body))


def test_stored_body_flag_without_raw_planes_is_rejected(state):
    raw = state.to_bytes(compress=False)
    _, version, _, _ = struct.unpack_from("<4sHHI", raw)
    with pytest.raises(StateFormatError, match="unknown flags"):
        DecoderState.from_bytes(_forge(version, 2, raw[12:]))


def test_a_state_without_references_parses_but_does_not_decode(state, vectors_dir):
    """`without_references()`: the few kilobytes parsing needs; decoding or encoding against it
    is a clear error, and both serialized forms keep it reference-free."""
    from shared.codec.decoder import parse_records

    from shared.codec import CodecError, encode

    frames = [f.data for f in IvfReader(vectors_dir / "vp80-05-sharpness-1438.ivf")]
    context = state.without_references()
    assert state.has_references and not context.has_references
    assert context != state and repr(context).startswith("<DecoderState parse context")
    for compress in (True, False):
        data = context.to_bytes(compress=compress)
        assert len(data) < 20_000
        restored = DecoderState.from_bytes(data)
        assert restored == context and not restored.has_references
    parsed = parse_records(context, frames[-1:], levels=False)[0]
    full = parse_records(state, frames[-1:], levels=False)[0]
    for key, value in parsed.macroblocks().items():
        assert (value == full.macroblocks()[key]).all(), key
    with pytest.raises(CodecError, match="parse context"):
        decode(context, frames[-1])
    with pytest.raises(CodecError, match="parse context"):
        encode(context, decode(state, frames[-1])[1], 40)


def test_reference_data_in_a_reference_free_state_is_rejected(state):
    raw = state.to_bytes(compress=False)
    _, version, flags, _ = struct.unpack_from("<4sHHI", raw)
    with pytest.raises(StateFormatError, match="without references carries reference data"):
        DecoderState.from_bytes(_forge(version, flags | 4, raw[12:]))
