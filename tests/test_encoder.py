"""The encoder: every frame it writes is decoded by libvpx exactly as by our decoder, quality
follows the quantizer, and encoding is a pure function of its inputs.

- libvpx agreement: key frames and interframes at quantizers 0, 20, 60, 127 on Sintel, the
  carphone clip and synthetic pictures, including odd sizes (175x143, 33x17) and 1x1; a longer
  sequence with per-frame quantizers and a refresh-all frame, checked with vpxdec; interframes
  coded against the states of libvpx streams (hidden alt-ref, segmentation, error resilience,
  token partitions, bitstream versions 1-3), appended to those streams.
- rate and quality: on real content PSNR does not rise and size falls as the quantizer rises;
  an SSIM target (a float quality) is met with the largest quantizer that meets it.
- purity: the same inputs give the same bytes, whatever was encoded in between, and the input
  state, image and a state restored from its serialization all behave as values.
- errors: mismatched sizes, missing key frames, frames of another stream and corrupt states
  raise clear CodecError subclasses; bad quantizers, SSIM targets and non-images raise
  ValueError/TypeError; a key frame wider than VP8's 14 bits is refused.
- the frame writer reproduces our own frames exactly from their parsed records.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from encoder_support import codec, decode_chain, images, libvpx_difference, mean_psnr, psnr, ssim
from libvpx_oracle import peek_header, read_ivf
from shared.codec.frame_writer import serialize
from vp8_streams import STREAMS, Clip, Sintel, Source, Synthetic

CodecError = codec.CodecError
DecoderState = codec.DecoderState
Image = codec.Image
decode, decode_record = codec.decode, codec.decode_record
encode, encode_keyframe, rebase = codec.encode, codec.encode_keyframe, codec.rebase

SOURCES: dict[str, Source] = {
    "sintel-176x144": Sintel(176, 144, 3),
    "sintel-175x143": Sintel(175, 143, 3),
    "carphone-176x144": Clip("carphone_pristine", 176, 144, 3),
    "synthetic-33x17": Synthetic(33, 17, 3, seed=11),
    "synthetic-1x1": Synthetic(1, 1, 3, seed=12),
}
REAL = ["sintel-176x144", "carphone-176x144"]


def encode_sequence(pictures: list[Any], qs: list[int], refresh_all_at: int = -1) -> list[bytes]:
    """A key frame, then interframes each against the state the previous frames left."""
    frames = [encode_keyframe(pictures[0], qs[0])]
    state = decode(DecoderState.initial(), frames[0])[0]
    for index, (picture, q) in enumerate(zip(pictures[1:], qs[1:], strict=True), 1):
        frames.append(encode(state, picture, q, refresh_all=index == refresh_all_at))
        state = decode(state, frames[-1])[0]
    return frames


# --- libvpx decodes what we write exactly as we do -----------------------------------------------


@pytest.mark.parametrize("q", [0, 20, 60, 127])
@pytest.mark.parametrize("name", list(SOURCES))
def test_libvpx_decodes_our_frames_exactly(
    request: pytest.FixtureRequest, name: str, q: int
) -> None:
    pictures = images(SOURCES[name], request)
    frames = encode_sequence(pictures, [q] * len(pictures))
    _, shown = decode_chain(frames)
    assert len(shown) == len(pictures)
    assert [peek_header(f).key_frame for f in frames] == [True, False, False]
    assert all(peek_header(f).q_index == q for f in frames)
    problem = libvpx_difference(frames, shown)
    assert problem is None, f"{name} q={q}: {problem}"
    if name in REAL and q in (20, 60):  # real content: the interframes really predict
        for frame, state in zip(frames[1:], decode_chain(frames)[0], strict=False):
            ref_frame = decode_record(state, frame)[2].macroblocks()["ref_frame"]
            assert (ref_frame > 0).mean() > 0.5, f"{name} q={q}: mostly intra interframe"


def test_libvpx_decodes_longer_sequence(request: pytest.FixtureRequest) -> None:
    """Changing quantizers frame to frame and a refresh-all frame mid-stream; vpxdec."""
    pictures = images(Clip("carphone_pristine", 176, 144, 8), request)
    frames = encode_sequence(pictures, [30, 5, 90, 40, 127, 0, 60, 25], refresh_all_at=4)
    headers = [peek_header(f) for f in frames]
    assert headers[4].refresh_golden and headers[4].refresh_altref and headers[4].refresh_last
    _, shown = decode_chain(frames)
    assert libvpx_difference(frames, shown, vpxdec=True) is None
    assert mean_psnr(shown, pictures) > 30


# Interframes coded against states libvpx streams leave, then appended to those streams.
STATE_STREAMS = [
    "altref-2pass",  # hidden alt-ref frame, three distinct references
    "cbr-rt-segmentation",  # segmentation map and features in force
    "error-resilient",  # probabilities not persisted
    "partitions-8",
    "profile1",  # bilinear prediction, simple loop filter
    "profile2",
    "profile3",  # full-pixel chroma vectors
]


@pytest.mark.parametrize("name", STATE_STREAMS)
def test_interframe_against_libvpx_stream_state(
    request: pytest.FixtureRequest, vp8_stream: Callable[[str], Path], name: str
) -> None:
    frames = read_ivf(vp8_stream(name)).frames
    pictures = images(STREAMS[name].source, request)
    states, shown = decode_chain(frames)
    middle = len(frames) // 2
    shown_before = sum(peek_header(f).show_frame for f in frames[: middle + 1])
    # The next source picture, then the one before again (a jump backwards in content).
    ours = []
    state = states[middle]
    for picture in (pictures[shown_before], pictures[shown_before - 1]):
        ours.append(encode(state, picture, 40))
        state = decode(state, ours[-1])[0]
    stream = [*frames[: middle + 1], *ours]
    _, stream_shown = decode_chain(stream)
    problem = libvpx_difference(stream, stream_shown, vpxdec=True)
    assert problem is None, f"{name}: {problem}"
    assert psnr(stream_shown[-2], pictures[shown_before]) > 30


# --- rate and quality ------------------------------------------------------------------------


@pytest.mark.parametrize("name", REAL)
def test_quality_follows_quantizer(
    request: pytest.FixtureRequest, record_property: Callable[[str, object], None], name: str
) -> None:
    pictures = images(SOURCES[name], request)
    rows = []
    for q in (10, 40, 80, 120):
        frames = encode_sequence(pictures, [q] * len(pictures))
        _, shown = decode_chain(frames)
        rows.append(
            (q, sum(map(len, frames)), [psnr(a, b) for a, b in zip(shown, pictures, strict=True)])
        )
    record_property(
        f"{name} q: bytes, PSNR dB per frame",
        "; ".join(f"{q}: {n} B, " + "/".join(f"{p:.2f}" for p in ps) for q, n, ps in rows),
    )
    for (q0, size0, psnr0), (q1, size1, psnr1) in zip(rows, rows[1:], strict=False):
        assert size1 < size0, f"q {q1} gives {size1} bytes, q {q0} only {size0}"
        for index, (better, worse) in enumerate(zip(psnr0, psnr1, strict=True)):
            assert worse <= better, f"frame {index}: q {q1} {worse:.2f} dB > q {q0} {better:.2f}"


# --- purity ----------------------------------------------------------------------------------


def test_encoding_is_a_pure_function(request: pytest.FixtureRequest) -> None:
    pictures = images(SOURCES["sintel-176x144"], request)
    snapshot = [plane.copy() for picture in pictures for plane in picture.planes]
    key = encode_keyframe(pictures[0], 30)
    state = decode(DecoderState.initial(), key)[0]
    digest, serialized = state.digest(), state.to_bytes()

    inter = encode(state, pictures[1], 30)
    rebased = rebase(state, pictures[2], inter, state)
    # Unrelated work in between (another size, another state) must not leak into the next call.
    other = images(SOURCES["synthetic-33x17"], request)
    encode(decode(DecoderState.initial(), encode_keyframe(other[0], 5))[0], other[1], 5)

    assert encode_keyframe(pictures[0], 30) == key
    assert encode(state, pictures[1], 30) == inter
    assert rebase(state, pictures[2], inter, state) == rebased
    restored = DecoderState.from_bytes(serialized)
    assert encode(restored, pictures[1], 30) == inter
    assert rebase(restored, pictures[2], inter, restored) == rebased
    assert state.digest() == digest and state.to_bytes() == serialized
    current = [plane for picture in pictures for plane in picture.planes]
    assert all(np.array_equal(a, b) for a, b in zip(snapshot, current, strict=True))


# --- errors ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_state() -> tuple[Any, list[Any]]:
    pictures = [Image(*p) for p in Synthetic(48, 32, 2, seed=13).render(None)]
    return decode(DecoderState.initial(), encode_keyframe(pictures[0], 20))[0], pictures


def test_image_size_must_match_state(small_state: tuple[Any, list[Any]]) -> None:
    state, _ = small_state
    with pytest.raises(CodecError, match=r"47x32.*48x32"):
        encode(state, Image.blank(47, 32), 20)


def test_interframe_needs_a_key_frame(small_state: tuple[Any, list[Any]]) -> None:
    _, pictures = small_state
    with pytest.raises(CodecError, match="key frame"):
        encode(DecoderState.initial(), pictures[1], 20)


def test_rebase_refuses_frames_of_another_size(small_state: tuple[Any, list[Any]]) -> None:
    state, pictures = small_state
    other = [Image(*p) for p in Synthetic(80, 64, 2, seed=14).render(None)]
    other_state = decode(DecoderState.initial(), encode_keyframe(other[0], 20))[0]
    frame = encode(other_state, other[1], 20)
    with pytest.raises(CodecError, match="another size"):
        rebase(state, pictures[1], frame, other_state)
    with pytest.raises(CodecError, match="80x64"):  # the image of the other stream
        rebase(state, other[1], frame, other_state)


def test_rebase_refuses_key_and_damaged_frames(small_state: tuple[Any, list[Any]]) -> None:
    state, pictures = small_state
    with pytest.raises(CodecError, match="key frame"):
        rebase(state, pictures[1], encode_keyframe(pictures[1], 20), state)
    frame = encode(state, pictures[1], 20)
    with pytest.raises(codec.CorruptFrameError, match="truncated"):
        rebase(state, pictures[1], frame[:5], state)
    with pytest.raises(codec.MissingKeyFrameError):
        rebase(state, pictures[1], frame, DecoderState.initial())


def _with_body(serialized: bytes, edit: Callable[[bytes], bytes]) -> bytes:
    """A serialized state with its body edited and the checksum made right again."""
    magic, version, flags, _ = struct.unpack_from("<4sHHI", serialized)
    body = zlib.compress(edit(zlib.decompress(serialized[12:])))
    crc = zlib.crc32(body, zlib.crc32(struct.pack("<HH", version, flags)))
    return struct.pack("<4sHHI", magic, version, flags, crc) + body


def test_corrupt_state_is_refused(small_state: tuple[Any, list[Any]]) -> None:
    state, _ = small_state
    data = state.to_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    corrupt = {
        "flipped bit": (bytes(flipped), "checksum"),
        "truncated": (data[:-7], "checksum|truncated"),
        "empty": (b"", "truncated"),
        "not a state": (b"DKIF" + data[4:], "magic"),
        "short body, right checksum": (_with_body(data, lambda b: b[:-100]), "length"),
    }
    for what, (blob, message) in corrupt.items():
        with pytest.raises(codec.StateFormatError, match=message):
            DecoderState.from_bytes(blob)
            pytest.fail(f"{what}: accepted")
    with pytest.raises(TypeError):
        encode(data, Image.blank(48, 32), 20)  # serialized bytes are not a state


@pytest.mark.parametrize(
    ("quality", "error"),
    [(128, ValueError), (-1, ValueError), (True, TypeError), ("9", TypeError), (None, TypeError)],
)
def test_bad_quantizer(small_state: tuple[Any, list[Any]], quality: Any, error: type) -> None:
    state, pictures = small_state
    frame = encode(state, pictures[1], 20)
    calls = {
        "encode_keyframe": lambda: encode_keyframe(pictures[0], quality),
        "encode": lambda: encode(state, pictures[1], quality),
        "rebase": lambda: rebase(state, pictures[1], frame, state, quality),
    }
    if quality is None:  # rebase's default: keep the frame's own quantizer
        del calls["rebase"]
    for name, call in calls.items():
        with pytest.raises(error, match="quantizer"):
            call()
            pytest.fail(f"{name} accepted quantizer {quality!r}")


@pytest.mark.parametrize("quality", [1.5, 0.0, 1.0, -0.5, math.nan])
def test_bad_float_quality(small_state: tuple[Any, list[Any]], quality: float) -> None:
    """A float is an SSIM target for encode and encode_keyframe (in (0, 1)); rebase takes
    quantizer indices only."""
    state, pictures = small_state
    with pytest.raises(ValueError, match="SSIM target"):
        encode_keyframe(pictures[0], quality)
    with pytest.raises(ValueError, match="SSIM target"):
        encode(state, pictures[1], quality)
    frame = encode(state, pictures[1], 20)
    with pytest.raises(TypeError, match="quantizer"):
        rebase(state, pictures[1], frame, state, quality)


def test_ssim_target(request: pytest.FixtureRequest) -> None:
    """The largest quantizer whose decoded picture reaches the SSIM target."""
    pictures = images(SOURCES["sintel-176x144"], request)
    start = DecoderState.initial()
    for target in (0.9, 0.97):
        key = encode_keyframe(pictures[0], target)
        state, image, record = decode_record(start, key)
        assert ssim(image, pictures[0]) >= target
        if record.q_index < 127:
            coarser = decode(start, encode_keyframe(pictures[0], record.q_index + 1))[1]
            assert ssim(coarser, pictures[0]) < target
        inter = encode(state, pictures[1], target)
        assert ssim(decode(state, inter)[1], pictures[1]) >= target


def test_numpy_integer_quantizer(small_state: tuple[Any, list[Any]]) -> None:
    _, pictures = small_state
    assert encode_keyframe(pictures[0], np.int64(20)) == encode_keyframe(pictures[0], 20)


def test_image_must_be_an_image(small_state: tuple[Any, list[Any]]) -> None:
    state, pictures = small_state
    with pytest.raises(TypeError, match="Image"):
        encode_keyframe(np.zeros((32, 48), np.uint8), 20)
    with pytest.raises(TypeError, match="Image"):
        encode(state, pictures[1].y, 20)


def test_key_frame_size_limit() -> None:
    """VP8 codes 14-bit dimensions: 16383 is the widest frame, 16384 cannot be written."""
    frame = encode_keyframe(Image.blank(16383, 1), 127)
    assert (peek_header(frame).width, peek_header(frame).height) == (16383, 1)
    with pytest.raises(codec.FrameSizeError, match="16384"):
        encode_keyframe(Image.blank(16384, 1), 127)


# --- the writer reproduces our frames --------------------------------------------------------


@pytest.mark.parametrize("name", ["sintel-175x143", "synthetic-33x17"])
def test_records_of_our_frames_serialize_identically(
    request: pytest.FixtureRequest, name: str
) -> None:
    pictures = images(SOURCES[name], request)
    for q in (0, 60, 127):
        frames = encode_sequence(pictures, [q] * len(pictures), refresh_all_at=2)
        state = DecoderState.initial()
        for index, frame in enumerate(frames):
            new_state, _, record = decode_record(state, frame)
            assert serialize(record) == frame, f"q={q} frame {index}"
            if index:  # and so do rebased frames
                rebased = rebase(state, pictures[index], frame, state, 127 - q)
                assert serialize(decode_record(state, rebased)[2]) == rebased
            state = new_state


# --- trellis quantization ----------------------------------------------------------------------


def _residual_blocks(current: np.ndarray, previous: np.ndarray, shift: int) -> np.ndarray:
    """4x4 blocks (rows of 16) of a real motion residual: a plane minus the previous picture's
    plane shifted by `shift` pixels."""
    height, width = (s - s % 4 - 4 for s in current.shape)
    diff = current[:height, :width].astype(np.int16) - previous[
        shift : shift + height, shift : shift + width
    ].astype(np.int16)
    blocks = diff.reshape(height // 4, 4, width // 4, 4).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(blocks.reshape(-1, 16))


@pytest.mark.parametrize("q", [10, 40, 80, 120])
@pytest.mark.parametrize("block_type", [0, 2, 3])
def test_trellis_never_costs_more_than_rounding(
    request: pytest.FixtureRequest, q: int, block_type: int
) -> None:
    """On real residuals the trellis's rate-distortion cost is never above rounding + pruning's
    (its choices include theirs), below it overall, and its levels, end-of-block and dequantized
    values agree."""
    from shared.codec.encoder import _trellis_check

    pictures = images(SOURCES["sintel-176x144"], request)
    plane = "u" if block_type == 2 else "y"
    blocks = np.concatenate(
        [
            _residual_blocks(getattr(pictures[i], plane), getattr(pictures[i - 1], plane), s)
            for i in (1, 2)
            for s in (0, 1)
        ]
    )
    result = _trellis_check(blocks, q, block_type)
    assert result[:, 2].all(), "trellis levels inconsistent with its end-of-block or dequant"
    assert (result[:, 1] <= result[:, 0]).all(), (
        f"trellis costs more on {(result[:, 1] > result[:, 0]).sum()} of {len(result)} blocks"
    )
    if q <= (10 if block_type == 2 else 40):  # else small residuals may leave no choice
        assert result[:, 1].sum() < result[:, 0].sum()


# --- motion vector probability updates ---------------------------------------------------------


def test_mv_probability_updates_decode_identically_with_libvpx(
    request: pytest.FixtureRequest,
) -> None:
    """On real motion the encoder sends new vector probabilities (which then persist in the
    state), and libvpx decodes those frames, and the ones after them, exactly as we do."""
    pictures = images(Sintel(320, 176, 8, shrink=2, x=40, y=20), request)
    frames = encode_sequence(pictures, [40] * len(pictures))
    states, shown = decode_chain(frames)
    updates = [
        sum(map(sum, decode_record(state, frame)[2].header["mv_update"]))
        for state, frame in zip(states, frames[1:], strict=False)
    ]
    assert sum(updates) > 0, f"no vector probability updates in {updates}"
    problem = libvpx_difference(frames, shown, vpxdec=True)
    assert problem is None, problem


# --- tuning for SSIM -----------------------------------------------------------------------------


def test_ssim_tuning_changes_choices_and_decodes_exactly(request: pytest.FixtureRequest) -> None:
    """tune="ssim" moves bits between macroblocks (a different stream) and libvpx still shows
    exactly our pictures; the SSIM of the result stays in the same place."""
    pictures = images(SOURCES["carphone-176x144"], request)
    tuned = [encode_keyframe(pictures[0], 30, tune="ssim")]
    plain = [encode_keyframe(pictures[0], 30)]
    state = decode(DecoderState.initial(), tuned[0])[0]
    for picture in pictures[1:]:
        tuned.append(encode(state, picture, 30, tune="ssim"))
        state = decode(state, tuned[-1])[0]
    assert tuned[0] != plain[0]
    _, shown = decode_chain(tuned)
    assert libvpx_difference(tuned, shown) is None
    _, plain_shown = decode_chain(plain)
    assert abs(ssim(shown[0], pictures[0]) - ssim(plain_shown[0], pictures[0])) < 0.01
    original = decode_record(decode(DecoderState.initial(), tuned[0])[0], tuned[1])[2]
    from shared.codec.encoder import rebase_record

    moved = rebase_record(decode(DecoderState.initial(), plain[0])[0], pictures[1],
                                original, tune="ssim")
    assert libvpx_difference([plain[0], moved], decode_chain([plain[0], moved])[1]) is None
    with pytest.raises(ValueError, match="tune"):
        encode_keyframe(pictures[0], 30, tune="vmaf")


def test_lambda_scale_and_greedy_quantization(request: pytest.FixtureRequest) -> None:
    """`lambda_scale` and `trellis=False` change the choices (a different frame, which libvpx
    shows exactly as we do); a larger lambda spends fewer bits; bad scales are refused."""
    pictures = images(SOURCES["carphone-176x144"], request)
    key = encode_keyframe(pictures[0], 10)
    state = decode(DecoderState.initial(), key)[0]
    frames = {
        (scale, trellis): encode(state, pictures[1], 10, refresh_all=True, lambda_scale=scale,
                                 trellis=trellis)
        for scale in (1.0, 4.0) for trellis in (True, False)
    }
    assert len(set(frames.values())) == 4
    assert len(frames[4.0, True]) < len(frames[1.0, True])
    for frame in frames.values():
        assert libvpx_difference([key, frame], decode_chain([key, frame])[1]) is None
    for scale in (0, -1.0, 17.0):
        with pytest.raises(ValueError, match="lambda_scale"):
            encode(state, pictures[1], 10, lambda_scale=scale)


def test_hidden_frames(request: pytest.FixtureRequest) -> None:
    """`hidden=True` codes a frame that is not shown and refreshes golden and alt-ref only (an
    alt-ref): libvpx shows what we do around it, the frame after it predicts from it (fewer
    bits than without it), and `revisit_record` decides such a frame again, hidden still."""
    pictures = images(SOURCES["carphone-176x144"], request)
    key, state = encode_keyframe(pictures[0], 10, with_state=True)
    anchor, after = encode(state, pictures[2], 4, hidden=True, with_state=True)
    header = decode_record(state, anchor)[2].header
    assert not decode_record(state, anchor)[2].show_frame
    assert (header["refresh_last"], header["refresh_golden"], header["refresh_altref"]) == (
        0, 1, 1)
    assert np.array_equal(after.references[0].y, state.references[0].y)  # last: unchanged
    assert not np.array_equal(after.references[1].y, state.references[1].y)
    frame = encode(after, pictures[2], 20)
    states, shown = decode_chain([key, anchor, frame])
    assert len(shown) == 2 and states[-1] == encode(after, pictures[2], 20, with_state=True)[1]
    assert libvpx_difference([key, anchor, frame], shown) is None
    assert len(frame) < len(encode(state, pictures[2], 20)) / 2
    record = decode_record(state, anchor)[2]
    revisited = codec.encoder.revisit_record(state, pictures[2], record)
    again = decode_record(state, revisited)[2]
    assert not again.show_frame and again.header["refresh_last"] == 0
    assert libvpx_difference([key, revisited, frame], decode_chain([key, revisited, frame])[1]) \
        is None
    with pytest.raises(ValueError, match="hidden"):
        encode(state, pictures[2], 4, hidden=True, refresh_all=True)
