"""Rebase: a frame keeps its decisions and gets new residuals so it applies to another state.

- identity: rebasing a frame onto the state it was made against, aiming at the picture it
  decoded to, reproduces that picture (> 45 dB) with the same decisions, for our frames and for
  libvpx's (hidden alt-ref and segmented frames included);
- another state: libvpx's interframes rebased after a different previous frame or a different
  key frame lose under 0.5 dB against the source;
- libvpx streams with hidden alt-ref frames, segmentation (cyclic refresh, error resilience),
  non-reference frames and 8 token partitions, rebased with `rebase_chunk` (both from a key
  frame and continuing from `original_state`): libvpx decodes the result exactly as we do, it
  shows the same frames, keeps every header decision, and quality stays within 0.5 dB;
- ExCamera: chunks of Sintel encoded independently by vpxenc with the original's settings,
  joined by a provisional rebase against the libvpx exit state and the serial rebase onto the
  true one: one key frame, libvpx-exact, far smaller than the independent chunks, and the exit
  states `rebase_chunk` returns are exactly what a decoder of the joined stream holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from decoder_support import require_tools
from encoder_support import codec, decode_chain, images, libvpx_difference, mean_psnr, psnr, ssim
from libvpx_oracle import peek_header, read_ivf
from vp8_streams import STREAMS, Clip, Sintel, Stream, Synthetic, build

DecoderState = codec.DecoderState
decode, decode_record = codec.decode, codec.decode_record
encode, encode_keyframe = codec.encode, codec.encode_keyframe
rebase, rebase_chunk = codec.rebase, codec.rebase_chunk

Record = Callable[[str, object], None]
# Per-macroblock decisions a rebase keeps (`skip` follows the new residual).
DECISIONS = ("y_mode", "uv_mode", "ref_frame", "segment_id", "mv")


def stream_frames(
    request: pytest.FixtureRequest, vp8_stream: Callable[[str], Path], name: str
) -> tuple[list[bytes], list[Any]]:
    return read_ivf(vp8_stream(name)).frames, images(STREAMS[name].source, request)


def targets(frames: Sequence[bytes], pictures: Sequence[Any]) -> list[Any]:
    """What each frame codes: its source picture if shown, else what libvpx decoded it to."""
    out, shown, state = [], iter(pictures), DecoderState.initial()
    for frame in frames:
        state, _, record = decode_record(state, frame)
        out.append(next(shown) if record.show_frame else record.image)
    return out


def changed_decisions(a: Any, b: Any) -> list[str]:
    """The decision arrays in which two FrameRecords differ."""
    ma, mb = a.macroblocks(), b.macroblocks()
    return [name for name in DECISIONS if not np.array_equal(ma[name], mb[name])]


def header_changes(original: bytes, rebased: bytes) -> list[str]:
    """Header fields (as the literal-coded header start gives them) a rebase changed."""
    a, b = dataclasses.asdict(peek_header(original)), dataclasses.asdict(peek_header(rebased))
    return [f"{k} {a[k]} -> {b[k]}" for k in a if k != "first_part_size" and a[k] != b[k]]


# --- (a) identity ------------------------------------------------------------------------------


def check_identity(frames: list[bytes], record_property: Record, label: str) -> None:
    """Rebase each interframe onto the state it was made against, aiming at what it decoded
    to: same decisions and header, > 45 dB from the original decode, and libvpx decodes the
    stream with the rebased frame in place of the original exactly as we do."""
    states, original = decode_chain(frames)
    worst = np.inf
    for index in range(1, len(frames)):
        before = states[index - 1]
        record = decode_record(before, frames[index])[2]
        rebased = rebase(before, record.image, frames[index], before)
        again = decode_record(before, rebased)[2]
        worst = min(worst, psnr(again.image, record.image))
        assert not changed_decisions(record, again), f"frame {index}"
        assert not header_changes(frames[index], rebased), f"frame {index}"
        shown_before = sum(peek_header(f).show_frame for f in frames[:index])
        ours = original[:shown_before] + ([again.image] if again.show_frame else [])
        problem = libvpx_difference([*frames[:index], rebased], ours)
        assert problem is None, f"frame {index}: {problem}"
    record_property(f"{label}: min PSNR of rebased vs original decode (dB)", f"{worst:.2f}")
    assert worst > 45


@pytest.mark.parametrize(
    "source",
    [Sintel(176, 144, 4), Clip("carphone_pristine", 176, 144, 4)],
    ids=["sintel", "carphone"],
)
def test_rebase_onto_own_state_reproduces_our_frames(
    request: pytest.FixtureRequest, record_property: Record, source: Any
) -> None:
    pictures = images(source, request)
    frames = [encode_keyframe(pictures[0], 40)]
    state = decode(DecoderState.initial(), frames[0])[0]
    for picture in pictures[1:]:
        frames.append(encode(state, picture, 40))
        state = decode(state, frames[-1])[0]
    check_identity(frames, record_property, f"our {type(source).__name__} frames")


@pytest.mark.parametrize("name", ["sintel-good-cpu0", "altref-2pass", "cbr-rt-segmentation"])
def test_rebase_onto_own_state_reproduces_libvpx_frames(
    request: pytest.FixtureRequest,
    vp8_stream: Callable[[str], Path],
    record_property: Record,
    name: str,
) -> None:
    check_identity(read_ivf(vp8_stream(name)).frames, record_property, name)


# --- (b) another state -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sintel-good-cpu0", "carphone"])
@pytest.mark.parametrize("change", ["previous frame", "key frame"])
def test_rebase_onto_another_state_keeps_quality(
    request: pytest.FixtureRequest,
    vp8_stream: Callable[[str], Path],
    record_property: Record,
    name: str,
    change: str,
) -> None:
    """Frames from `first` on rebased after our own encode of the frame(s) before them."""
    frames, pictures = stream_frames(request, vp8_stream, name)
    assert all(peek_header(f).show_frame for f in frames)
    states, original = decode_chain(frames)
    if change == "key frame":
        first, prefix = 1, [encode_keyframe(pictures[0], peek_header(frames[0]).q_index)]
    else:
        first, prefix = (
            2,
            [frames[0], encode(states[0], pictures[1], peek_header(frames[1]).q_index)],
        )
    state = decode_chain(prefix)[0][-1]
    assert state != states[first - 1]
    stream = list(prefix)
    for index in range(first, len(frames)):
        stream.append(rebase(state, pictures[index], frames[index], states[index - 1]))
        state = decode(state, stream[-1])[0]
    _, shown = decode_chain(stream)
    before = mean_psnr(original[first:], pictures[first:])
    after = mean_psnr(shown[first:], pictures[first:])
    size_before = sum(map(len, frames[first:]))
    size_after = sum(map(len, stream[first:]))
    record_property(
        f"{name}, another {change}: PSNR, bytes of the rebased frames",
        f"{before:.2f} -> {after:.2f} dB ({after - before:+.2f}), "
        f"{size_before} -> {size_after} B ({size_after / size_before - 1:+.1%})",
    )
    assert libvpx_difference(stream, shown) is None
    assert after > before - 0.5, f"{name}, another {change}: {after - before:+.2f} dB"


# --- (c) libvpx streams with hidden alt-ref, segmentation, partitions ----------------------------

REBASE_STREAMS = [
    "altref-2pass",  # hidden alt-ref frame, three distinct references
    "cbr-rt-segmentation",  # cyclic refresh: segment map and features
    "error-resilient",  # segmentation, probabilities never persisted
    "temporal-layers",  # non-reference frames, segmentation switched off and on
    "partitions-8",
]


@pytest.mark.parametrize("whole", [False, True], ids=["continuing", "from-key-frame"])
@pytest.mark.parametrize("name", REBASE_STREAMS)
def test_rebase_chunk_of_libvpx_stream(
    request: pytest.FixtureRequest,
    vp8_stream: Callable[[str], Path],
    record_property: Record,
    name: str,
    whole: bool,
) -> None:
    """After our own key frame: either the stream's frames after its key frame (continuing
    from `original_state`) or the whole stream (its key frame becomes an interframe)."""
    frames, pictures = stream_frames(request, vp8_stream, name)
    states, original = decode_chain(frames)
    # whole: a key frame of the *last* picture, so the converted key frame must really predict.
    key = encode_keyframe(pictures[-1 if whole else 0], peek_header(frames[0]).q_index)
    incoming = decode(DecoderState.initial(), key)[0]
    if whole:
        chunk, sources, original_state = frames, pictures, None
    else:
        chunk, sources, original_state = frames[1:], pictures[1:], states[0]
    rebased, exit_state = rebase_chunk(incoming, chunk, sources, original_state)

    stream = [key, *rebased]
    states_after, shown = decode_chain(stream)
    assert states_after[-1] == exit_state
    assert len(shown) == 1 + len(sources)
    assert [peek_header(f).show_frame for f in rebased] == [
        peek_header(f).show_frame for f in chunk
    ]
    problem = libvpx_difference(stream, shown, vpxdec=True)
    assert problem is None, f"{name}: {problem}"

    # The same frames as rebasing one at a time with `rebase`.
    goals = targets(frames, pictures)
    state = decode(incoming, rebased[0])[0] if whole else incoming
    for index, frame in enumerate(rebased[1:] if whole else rebased, 1):
        before = states[index - 1]
        assert frame == rebase(state, goals[index], frames[index], before), f"frame {index}"
        state = decode(state, frame)[0]

    # Header decisions kept, and quality of the frames after the stream's key frame (the
    # converted key frame is only reported): both checked, so one failure does not hide the other.
    changed = {
        index: header_changes(frame, out)
        for index, (frame, out) in enumerate(zip(chunk, rebased, strict=True))
        if not (whole and index == 0)
    }
    changed = {index: fields for index, fields in changed.items() if fields}
    skip = 2 if whole else 1
    before, after = mean_psnr(original[1:], pictures[1:]), mean_psnr(shown[skip:], pictures[1:])
    sizes = sum(map(len, chunk)), sum(map(len, rebased))
    note = f"{before:.2f} -> {after:.2f} dB ({after - before:+.2f}); {sizes[0]} -> {sizes[1]} B"
    if whole:
        converted = psnr(shown[1], pictures[0]) - psnr(original[0], pictures[0])
        note += f"; converted key frame {converted:+.2f} dB"
    record_property(f"{name}: PSNR of frames 1.., bytes", note)
    problems = [f"header fields changed: {changed}"] if changed else []
    if after <= before - 0.5:
        problems.append(f"PSNR dropped by more than 0.5 dB: {note}")
    assert not problems, f"{name}: " + "; ".join(problems)


# --- (d) ExCamera: independent vpxenc chunks joined by rebasing ---------------------------------

# ExCamera's vpxenc settings (vp8_streams adds --ivf, --threads=1 and the stats file). In 6-frame
# chunks libvpx 1.12 places no alt-ref frame; hidden alt-refs are covered by altref-2pass above.
EXCAMERA_VPXENC = (
    "--good",
    "--cpu-used=0",
    "--end-usage=cq",
    "--cq-level=30",
    "--passes=2",
    "--auto-alt-ref=1",
    "--tune=ssim",
)


@dataclasses.dataclass(frozen=True)
class SintelChunk(Sintel):
    """`frames` Sintel pictures starting at picture `first` (chunk k starts at 6 (k - 1))."""

    first: int = 0

    def render(self, video_dir: Path | None) -> list[Any]:
        whole = Sintel(
            self.width, self.height, self.first + self.frames, self.shrink, self.x, self.y
        )
        return whole.render(video_dir)[self.first :]


@dataclasses.dataclass
class Chunk:
    frames: list[bytes]
    pictures: list[Any]
    exit_state: Any  # libvpx's own exit state: the chunk decoded on its own


@pytest.fixture(scope="module")
def sintel_chunks(video_dir: Path, stream_cache: Path) -> list[Chunk]:
    """Sintel chunks 1-3 (320x176 crops of the half-size pictures), each encoded on its own."""
    require_tools()
    chunks = []
    for index in range(3):
        source = SintelChunk(320, 176, 6, shrink=2, x=96, y=20, first=6 * index)
        stream = Stream(f"excamera-chunk{index + 1}", "ExCamera chunk", source, EXCAMERA_VPXENC)
        frames = read_ivf(build(stream, video_dir, stream_cache)).frames
        pictures = [codec.Image(*planes) for planes in source.render(video_dir)]
        chunks.append(Chunk(frames, pictures, decode_chain(frames)[0][-1]))
    return chunks


def _check_joined(
    joined: list[bytes], chunks: list[Chunk], exits: list[Any], record_property: Record
) -> None:
    """The joined stream: exact exit states at every chunk end, libvpx-exact, one key frame,
    smaller than the independent chunks, about as good."""
    states, shown = decode_chain(joined)
    ends = np.cumsum([len(chunk.frames) for chunk in chunks]) - 1
    for number, (end, exit_state) in enumerate(zip(ends[1:], exits, strict=True), 2):
        assert states[end] == exit_state, f"exit state of chunk {number}"
    assert sum(peek_header(f).key_frame for f in joined) == 1
    pictures = [p for chunk in chunks for p in chunk.pictures]
    assert len(shown) == len(pictures)
    problem = libvpx_difference(joined, shown, vpxdec=True)
    assert problem is None, problem
    independent = [p for chunk in chunks for p in decode_chain(chunk.frames)[1]]
    size, size_independent = sum(map(len, joined)), sum(len(f) for c in chunks for f in c.frames)
    quality = [
        (
            mean_psnr(pics, pictures),
            float(np.mean([ssim(a, b) for a, b in zip(pics, pictures, strict=True)])),
        )
        for pics in (independent, shown)
    ]
    record_property(
        f"{len(chunks)} chunks joined vs independent: bytes, PSNR, SSIM",
        f"{size} vs {size_independent} B ({size / size_independent - 1:+.1%}), "
        f"{quality[1][0]:.2f} vs {quality[0][0]:.2f} dB, "
        f"SSIM {quality[1][1]:.4f} vs {quality[0][1]:.4f}",
    )
    assert size < 0.9 * size_independent
    assert quality[1][0] > quality[0][0] - 0.5, f"{quality[1][0] - quality[0][0]:+.2f} dB"


def test_excamera_two_chunks(sintel_chunks: list[Chunk], record_property: Record) -> None:
    first, second = sintel_chunks[:2]
    provisional, provisional_exit = rebase_chunk(first.exit_state, second.frames, second.pictures)
    assert not peek_header(provisional[0]).key_frame
    # Rebasing frames onto the state they were made against, with the same sources, is a fixed
    # point (for frames a rebase made: the converted key frame was chosen with the trellis,
    # which a rebase does not run, so start after it).
    after_first, _ = decode(first.exit_state, provisional[0])
    again, again_exit = rebase_chunk(
        after_first, provisional[1:], second.pictures[1:], original_state=after_first
    )
    assert again == provisional[1:] and again_exit == provisional_exit
    # The serial step: onto the true exit state of chunk 1, which chunk 1 kept as is.
    final, exit_state = rebase_chunk(
        first.exit_state, provisional, second.pictures, original_state=first.exit_state
    )
    _check_joined(first.frames + final, sintel_chunks[:2], [exit_state], record_property)


def test_excamera_three_chunks_serial_rebase(
    sintel_chunks: list[Chunk], record_property: Record
) -> None:
    """Chunk 3's provisional frames are made against chunk 2's libvpx exit state, then rebased
    onto the true exit state of rebased chunk 2."""
    first, second, third = sintel_chunks
    provisional2, _ = rebase_chunk(first.exit_state, second.frames, second.pictures)
    provisional3, _ = rebase_chunk(second.exit_state, third.frames, third.pictures)
    final2, exit2 = rebase_chunk(
        first.exit_state, provisional2, second.pictures, original_state=first.exit_state
    )
    assert exit2 != second.exit_state
    final3, exit3 = rebase_chunk(
        exit2, provisional3, third.pictures, original_state=second.exit_state
    )
    _check_joined(first.frames + final2 + final3, sintel_chunks, [exit2, exit3], record_property)


def test_excamera_revisited_chunk_start(
    sintel_chunks: list[Chunk], record_property: Record
) -> None:
    """The serial step with the chunk's first frame decided again against the true state: the
    joined stream is still libvpx-exact with exact exit states, the revisited frame keeps its
    quantizer, refreshes and loop-filter level, and its decisions are its own."""
    first, second, third = sintel_chunks
    provisional2, _ = rebase_chunk(first.exit_state, second.frames, second.pictures)
    provisional3, _ = rebase_chunk(second.exit_state, third.frames, third.pictures)
    final2, exit2 = rebase_chunk(
        first.exit_state, provisional2, second.pictures, original_state=first.exit_state
    )
    rebased3, _ = rebase_chunk(exit2, provisional3, third.pictures,
                               original_state=second.exit_state)
    final3, exit3 = rebase_chunk(exit2, provisional3, third.pictures,
                                 original_state=second.exit_state, revisit_start=True)
    original = decode_record(second.exit_state, provisional3[0])[2]
    for threads in (2, 3):  # the chain's wavefront decides the same macroblocks
        assert codec.encoder.revisit_record(exit2, third.pictures[0], original, threads=threads,
                                            with_state=True) == codec.encoder.revisit_record(
            exit2, third.pictures[0], original, with_state=True), threads
    assert final3[1:] != rebased3[1:]  # the frames after it follow the new reconstruction
    revisited = decode_record(exit2, final3[0])[2]
    for field in ("q_index", "filter_level", "refresh_golden", "refresh_altref", "refresh_last"):
        assert revisited.header[field] == original.header[field], field
    assert changed_decisions(original, revisited), "no macroblock decided differently"
    _check_joined(first.frames + final2 + final3, sintel_chunks, [exit2, exit3], record_property)


def test_revisit_refuses_what_it_cannot_revisit(sintel_chunks: list[Chunk]) -> None:
    first, second = sintel_chunks[:2]
    key = decode_record(DecoderState.initial(), second.frames[0])[2]
    with pytest.raises(codec.CodecError, match="key frame"):
        codec.encoder.revisit_record(first.exit_state, second.pictures[0], key)
    small = encode_keyframe(codec.Image(*[np.zeros((h, w), np.uint8) for h, w in
                                          ((32, 32), (16, 16), (16, 16))]), 40, with_state=True)
    inter = decode_record(small[1], encode(small[1], codec.Image(
        *[np.full((h, w), 9, np.uint8) for h, w in ((32, 32), (16, 16), (16, 16))]), 40))[2]
    with pytest.raises(codec.CodecError, match="another size"):
        codec.encoder.revisit_record(first.exit_state, second.pictures[0], inter)


def _anchored_phase1(chunk: Chunk) -> list[bytes]:
    """What phase 1 makes of a chunk with start_frames "anchor": libvpx's encode of the chunk
    after a key frame of its middle picture (the pipeline's settings, in process)."""
    from shared import libvpx

    pictures = chunk.pictures
    anchor = pictures[codec.chunk_rebase.anchor_index(len(pictures))]
    packets = libvpx.encode_two_pass_packets([anchor, *pictures], anchor.width, anchor.height,
                                             (24, 1), cq_level=20, lag_in_frames=25)
    return [bytes(packet.data) for packet in packets]


def test_excamera_anchored_chunks(sintel_chunks: list[Chunk], record_property: Record) -> None:
    """Anchored chunks (start_frames "anchor"): stage 4 makes each chunk's key frame a hidden
    anchor and encodes its first picture anew, against libvpx's exit state of the chunk
    before; the chain rebases them onto the true state, deciding the anchor and the first
    frame again. The joined stream is libvpx-exact with exact exit states, each anchor is
    hidden, refreshes golden and alt-ref only, at ANCHOR_QUANTIZER_WEIGHT of its key frame's
    quantizer (and the rest of the next frame's), and the chunks after it show every picture
    once."""
    from shared.codec import chunk_rebase

    first, second, third = sintel_chunks
    phase1 = [_anchored_phase1(chunk) for chunk in (second, third)]
    records = [chunk_rebase.parse_chunk(frames) for frames in phase1]
    # Position 1: against chunk 1's exit state, which is already the true one.
    coded2, exit2 = chunk_rebase.anchor_chunk(first.exit_state, records[0], second.pictures)
    final2 = chunk_rebase.write_frames(coded2)
    # Position 2: stage 4 against chunk 2's libvpx exit state, then the chain.
    vpx_exit2 = decode_chain(phase1[0])[0][-1]
    provisional3 = chunk_rebase.write_frames(chunk_rebase.anchor_chunk(
        vpx_exit2, records[1], third.pictures, trellis=False)[0])
    parsed3 = chunk_rebase.parse_chunk(provisional3, vpx_exit2)
    anchor3 = third.pictures[chunk_rebase.anchor_index(len(third.pictures))]
    coded3, exit3 = chunk_rebase.rebase_records(exit2, parsed3, third.pictures,
                                                revisit_start=True, anchor_image=anchor3)
    final3 = chunk_rebase.write_frames(coded3)
    for threads in (2, 3):  # the chain's wavefront: revisits and rebases, the same bytes
        coded, exit_state = chunk_rebase.rebase_records(
            exit2, parsed3, third.pictures, revisit_start=True, anchor_image=anchor3,
            threads=threads)
        assert chunk_rebase.write_frames(coded) == final3 and exit_state == exit3, threads
    assert [peek_header(f).show_frame for f in final2 + final3] == ([False] + [True] * 6) * 2
    for frames, chunk_records in ((final2, records[0]), (final3, records[1])):
        header = peek_header(frames[0])
        assert (header.refresh_last, header.refresh_golden, header.refresh_altref) == (0, 1, 1)
        key_q, next_q = chunk_records[0].q_index, chunk_records[1].q_index
        weight = chunk_rebase.ANCHOR_QUANTIZER_WEIGHT
        assert header.q_index == round(weight * key_q + (1 - weight) * next_q) < next_q
    revisited = decode_record(exit2, final3[0])[2]
    assert changed_decisions(parsed3[0], revisited), "the anchor was not decided again"

    joined = first.frames + final2 + final3
    states, shown = decode_chain(joined)
    assert states[len(first.frames) + len(final2) - 1] == exit2
    assert states[-1] == exit3
    assert sum(peek_header(f).key_frame for f in joined) == 1
    assert len(shown) == 18
    problem = libvpx_difference(joined, shown, vpxdec=True)
    assert problem is None, problem
    pictures = [p for chunk in sintel_chunks for p in chunk.pictures]
    classic2, exit_classic2 = rebase_chunk(first.exit_state, second.frames, second.pictures)
    classic3, _ = rebase_chunk(exit_classic2, rebase_chunk(second.exit_state, third.frames,
                                                           third.pictures)[0],
                               third.pictures, original_state=second.exit_state)
    classic = first.frames + classic2 + classic3
    record_property(
        "anchored vs rebased chunk starts: bytes, PSNR",
        f"{sum(map(len, joined))} vs {sum(map(len, classic))} B, "
        f"{mean_psnr(shown, pictures):.2f} vs "
        f"{mean_psnr(decode_chain(classic)[1], pictures):.2f} dB",
    )


def test_anchored_chunks_refuse_other_chunks(sintel_chunks: list[Chunk]) -> None:
    from shared.codec import chunk_rebase

    first, second = sintel_chunks[:2]
    plain = chunk_rebase.parse_chunk(second.frames)   # no anchor key frame before the chunk
    with pytest.raises(codec.CodecError, match="after its anchor"):
        chunk_rebase.anchor_chunk(first.exit_state, plain, second.pictures)
    with pytest.raises(codec.CodecError, match="one key frame"):
        chunk_rebase.anchor_chunk(first.exit_state, plain[1:], second.pictures[1:])
    provisional, _ = rebase_chunk(first.exit_state, second.frames, second.pictures)
    parsed = chunk_rebase.parse_chunk(provisional, first.exit_state)
    with pytest.raises(codec.CodecError, match="hidden anchor"):
        chunk_rebase.rebase_records(first.exit_state, parsed, second.pictures,
                                    anchor_image=second.pictures[3])


# --- the state returned with the frame ----------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["altref-2pass", "cbr-rt-segmentation", "error-resilient", "partitions-8", "profile3"]
)
def test_with_state_equals_decoding_the_frame(
    vp8_stream: Callable[[str], Path], name: str
) -> None:
    """`with_state` builds the next state from the encoder's reconstruction; it must be exactly
    the state decoding the written frame gives, for rebased frames and for our own encodes."""
    frames = read_ivf(vp8_stream(name)).frames
    state = decode(DecoderState.initial(), frames[0])[0]
    original = state
    for frame in frames[1:6]:
        original, _, record = decode_record(original, frame)
        if record.key_frame:
            break
        written, after = codec.encoder.rebase_record(state, record.image, record, with_state=True)
        assert decode(state, written)[0] == after
        state = after
        if record.image is not None and record.show_frame:
            written, after = encode(state, record.image, 50, with_state=True)
            assert decode(state, written)[0] == after
    key, after = encode_keyframe(record.image, 70, with_state=True)
    assert decode(DecoderState.initial(), key)[0] == after


@pytest.mark.parametrize("name", ["altref-2pass", "partitions-8", "cbr-rt-segmentation"])
def test_as_record_writes_the_same_frame_later(
    vp8_stream: Callable[[str], Path], name: str
) -> None:
    """`as_record` returns the coded frame unwritten, with the same state: written afterwards
    (as a serial chain does once it has passed the state on) it is the very same frame."""
    from shared.codec.frame_writer import serialize

    frames = read_ivf(vp8_stream(name)).frames
    state, image = decode(DecoderState.initial(), frames[0])
    original, _, record = decode_record(state, frames[1])
    written, after = codec.encoder.rebase_record(state, record.image, record, with_state=True)
    coded, after_record = codec.encoder.rebase_record(
        state, record.image, record, with_state=True, as_record=True
    )
    assert after_record == after
    assert serialize(coded) == written
    encoded, encoded_after = encode(state, image, 40, refresh_all=True, with_state=True)
    coded, coded_after = encode(
        state, image, 40, refresh_all=True, with_state=True, as_record=True
    )
    assert serialize(coded) == encoded and coded_after == encoded_after
    assert decode(state, serialize(coded))[0] == coded_after


@pytest.mark.parametrize(
    "name", ["sintel-good-cpu0", "altref-2pass", "cbr-rt-segmentation", "partitions-8"]
)
def test_rebase_on_threads_writes_the_same_frames(
    vp8_stream: Callable[[str], Path], name: str
) -> None:
    """The serial chain rebases macroblock rows in a wavefront (`threads`): every thread count,
    more threads than rows included, writes the frames and reaches the states of one thread.
    Each frame is rebased onto another state than its own (the previous frame's decode held
    back one frame), so predictions, residuals and skips all change."""
    frames = read_ivf(vp8_stream(name)).frames
    states, _ = decode_chain(frames)
    for index in range(2, min(len(frames), 8)):
        record = decode_record(states[index - 1], frames[index])[2]
        if record.key_frame:
            continue
        onto = states[index - 2]
        target = record.image
        one = codec.encoder.rebase_record(onto, target, record, with_state=True)
        for threads in (2, 3, 8):
            assert codec.encoder.rebase_record(
                onto, target, record, with_state=True, threads=threads) == one, (index, threads)


def test_rebase_on_more_threads_than_rows() -> None:
    """A frame one macroblock row high, on eight threads: seven find no row and return."""
    pictures = images(Synthetic(72, 16, 2), None)
    key, state = encode_keyframe(pictures[0], 30, with_state=True)
    frame = encode(state, pictures[1], 30)
    record = decode_record(state, frame)[2]
    other = decode(DecoderState.initial(), encode_keyframe(pictures[1], 60))[0]
    one = codec.encoder.rebase_record(other, pictures[1], record, with_state=True)
    assert codec.encoder.rebase_record(
        other, pictures[1], record, with_state=True, threads=8) == one


@pytest.mark.parametrize("threads", [0, 9, -1, 1.5, True, "2"])
def test_rebase_refuses_a_bad_thread_count(threads: object) -> None:
    pictures = images(Synthetic(48, 16, 2), None)
    key, state = encode_keyframe(pictures[0], 30, with_state=True)
    record = decode_record(state, encode(state, pictures[1], 30))[2]
    with pytest.raises(ValueError, match="threads must be an integer from 1 to 8"):
        codec.encoder.rebase_record(state, pictures[1], record, threads=threads)
