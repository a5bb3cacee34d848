"""Rebasing whole chunks: the operation ExCamera's stitching is built from.

`rebase_chunk(incoming_state, chunk_frames, source_images, original_state=None)` re-encodes a
chunk so that it continues from `incoming_state`:

- a key frame (libvpx starts every chunk with one) becomes an interframe against the incoming
  state, chosen with a full mode decision, at a quantizer blended from its own and the next
  frame's (0.7 of the key frame's; ExCamera used 3/4), refreshing all three references as the key
  frame would have;
- every interframe keeps its decisions (modes, vectors, references, segments, header flags) and
  gets new residuals: against its source picture if shown, or, for a hidden alt-ref frame,
  against the picture the original stream decoded for it.

With `revisit_start`, a chunk whose first frame is such a converted key frame, already encoded
against an approximate state (stage 4), has that frame decided again against the true incoming
state instead of rebased (`encoder.revisit_record`): decisions made against other references
cost ExCamera most of its bitrate gap, at six times a rebased frame's time.

An anchored chunk (`anchor_chunk`) was encoded by libvpx after a key frame of its own middle
picture, the anchor. It is turned into a hidden interframe of that picture, boosted, which
refreshes golden and alt-ref and not last, then the chunk's first picture coded anew as an
ordinary interframe against the last reference and the anchor, then the rest rebased: the
alt-ref structure of a single stream, a boosted future picture that the whole chunk predicts
from, instead of a boosted first frame. `rebase_records(..., anchor_image=)` rebases such a
chunk; with `revisit_start` it decides the anchor and the first frame again.

The state after each output frame comes from the encoder's own reconstruction, loop-filtered and
updated exactly as the decoder does (the tests check it against decoding the output), so the
returned exit state is what a decoder of the joined stream will hold.

`rebase_chunk` is three steps, which a serial chain runs apart: `parse_chunk` (before the
incoming state is there), `rebase_records` (the only step that needs it, from it to the exit
state) and `write_frames` (after the exit state has been passed on).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from .decoder import decode_record, parse_records
from .encoder import encode, rebase_record, revisit_record
from .errors import CodecError
from .frame_record import FrameRecord
from .frame_writer import serialize
from .image import Image
from .state import DecoderState

_SHOW_FRAME_BIT = 0x10      # in the first byte of a frame tag (section 9.1)

# Weight of a key frame's own quantizer when it is re-encoded as an interframe (ExCamera's
# was 0.75), and the scale of that encode's lambda. The frame is decided against an
# approximate state (stage 4) and rebased onto the true one: decisions at 1.6x the lambda,
# and a quantizer a step coarser, serve the true references better (ExCamera[6,16] at equal
# SSIM: BBB +3.8 -> +2.4 %, Sintel +15.7 -> +15.5 %, scene cuts +11.8 -> +10.8 %; either
# alone +2.9 / +3.3 % on BBB; bench/REPORT.md). A per-chunk rate-distortion choice among
# quantizers 3 apart, scored over the whole chunk rebased after it, measured worse.
KEY_FRAME_QUANTIZER_WEIGHT = 0.7
KEY_FRAME_LAMBDA_SCALE = 1.6

# The anchor's quantizer: 0.75 of its key frame's and 0.25 of the chunk's (q 6 at cq 20, where
# libvpx's single stream codes its alt-refs at q 4). ExCamera[6,16] at equal SSIM, BBB /
# Sintel: 0.75 +1.0 / +2.9 %, 0.8 +1.2 / +3.0 %, 0.85 +2.9 / +4.6 % (bench/REPORT.md).
ANCHOR_QUANTIZER_WEIGHT = 0.75


def anchor_index(length: int) -> int:
    """Which of a chunk's `length` pictures is its anchor: the middle one, closest on average
    to the rest (a third of the way in, or two thirds, measured worse on Sintel)."""
    return length // 2

# How the pipeline's rebase tunes its choices (encoder.TUNINGS). By squared error: weighting
# by SSIM measured worse at equal SSIM as well (bench/REPORT.md); the variable lets the
# benchmark measure it.
TUNE_ENV = "EXCAMERA_CODEC_TUNE"


def default_tuning() -> str:
    return os.environ.get(TUNE_ENV, "psnr").strip().lower() or "psnr"


def rebase_chunk(
    incoming_state: DecoderState,
    chunk_frames: Sequence[bytes],
    source_images: Sequence[Image],
    original_state: DecoderState | None = None,
    *,
    key_frame_weight: float = KEY_FRAME_QUANTIZER_WEIGHT,
    tune: str | None = None,
    revisit_start: bool = False,
) -> tuple[list[bytes], DecoderState]:
    """Re-encode `chunk_frames` (made against `original_state`, or starting with a key frame)
    to continue from `incoming_state`; returns the new frames and the state after them.
    `revisit_start`: as for `rebase_records`."""
    records = parse_chunk(chunk_frames, original_state)
    coded, exit_state = rebase_records(
        incoming_state, records, source_images, key_frame_weight=key_frame_weight, tune=tune,
        revisit_start=revisit_start,
    )
    return write_frames(coded), exit_state


def rebase_records(
    incoming_state: DecoderState,
    records: Sequence[FrameRecord],
    source_images: Sequence[Image],
    *,
    key_frame_weight: float = KEY_FRAME_QUANTIZER_WEIGHT,
    tune: str | None = None,
    revisit_start: bool = False,
    trellis: bool = True,
    anchor_image: Image | None = None,
    threads: int = 1,
) -> tuple[list[FrameRecord], DecoderState]:
    """The part of `rebase_chunk` that needs the incoming state: the chunk's parsed `records`
    coded again, as FrameRecords not yet written (`write_frames`), and the exit state. The
    state does not depend on the written bytes, so a serial chain can pass it on first.
    `tune`: encoder.TUNINGS, by default `default_tuning()`. `revisit_start`: decide a first
    frame that refreshes every reference (a converted key frame) again (module docstring).
    `trellis=False`: a converted key frame is quantized greedily, for a chain that will
    revisit it. `anchor_image`: the records are an anchored chunk's (`anchor_chunk`), whose
    first record, the hidden anchor, codes this picture; with `revisit_start` the anchor and
    the first shown frame are decided again. `threads`: the rebased and revisited frames'
    macroblock rows on that many threads (the same bytes), for the serial chain."""
    tune = tune or default_tuning()
    if not incoming_state.has_keyframe:
        raise CodecError("the incoming state has no decoded key frame to continue from")
    shown = sum(1 for record in records if record.show_frame)
    if shown != len(source_images):
        raise CodecError(
            f"chunk shows {shown} frames but {len(source_images)} source images were given")

    if anchor_image is not None and not (records and _is_anchor(records[0])):
        raise CodecError("an anchored chunk starts with its hidden anchor frame")

    coded: list[FrameRecord] = []
    state = incoming_state
    sources = iter(source_images)
    for index, record in enumerate(records):
        target = next(sources) if record.show_frame else record.image
        if index == 0 and anchor_image is not None:
            target = anchor_image     # the source picture, not its approximate decode
        if anchor_image is not None and index < 2 and revisit_start:
            frame, state = revisit_record(state, target, record, with_state=True,
                                          as_record=True, tune=tune, threads=threads)
        elif record.key_frame:
            frame, state = encode(state, target,
                                  _key_frame_quantizer(records, index, key_frame_weight),
                                  refresh_all=True, with_state=True, as_record=True, tune=tune,
                                  trellis=trellis, lambda_scale=KEY_FRAME_LAMBDA_SCALE)
        elif index == 0 and revisit_start and _is_converted_key_frame(record):
            frame, state = revisit_record(state, target, record, with_state=True,
                                          as_record=True, tune=tune, threads=threads)
        else:
            frame, state = rebase_record(state, target, record, with_state=True, as_record=True,
                                         tune=tune, threads=threads)
        coded.append(frame)
    return coded, state


def anchor_chunk(
    state: DecoderState,
    records: Sequence[FrameRecord],
    source_images: Sequence[Image],
    *,
    tune: str | None = None,
    trellis: bool = True,
) -> tuple[list[FrameRecord], DecoderState]:
    """An anchored chunk made to continue from `state` (module docstring): `records` are
    libvpx's encode of the chunk after a key frame of its anchor picture
    (`source_images[anchor_index(len(source_images))]`). Returns the coded records (the
    hidden anchor, then one per picture) and the state after them. `trellis=False` for frames
    a chain will decide again."""
    tune = tune or default_tuning()
    if not state.has_keyframe:
        raise CodecError("the incoming state has no decoded key frame to continue from")
    if len(records) < 2 or not records[0].key_frame or any(r.key_frame for r in records[1:]):
        raise CodecError("an anchored chunk is one key frame, of its anchor, then interframes")
    shown = sum(1 for record in records[1:] if record.show_frame)
    if shown != len(source_images):
        raise CodecError(f"chunk shows {shown} frames after its anchor but "
                         f"{len(source_images)} source images were given")
    anchor, state = encode(state, source_images[anchor_index(len(source_images))],
                           _key_frame_quantizer(records, 0, ANCHOR_QUANTIZER_WEIGHT),
                           hidden=True, with_state=True, as_record=True, tune=tune,
                           trellis=trellis)
    first, state = encode(state, source_images[0], records[1].q_index, with_state=True,
                          as_record=True, tune=tune, trellis=trellis)
    rest, state = rebase_records(state, records[2:], source_images[1:], tune=tune)
    return [anchor, first, *rest], state


def write_frames(coded: Sequence[FrameRecord]) -> list[bytes]:
    """The VP8 frames of records coded by `rebase_records`."""
    return [serialize(record) for record in coded]


def parse_chunk(
    chunk_frames: Sequence[bytes], original_state: DecoderState | None = None
) -> list[FrameRecord]:
    """The chunk's FrameRecords: what `rebase_records` needs, no incoming state involved.
    Pictures are decoded only when a hidden frame needs its decoded picture as a target;
    otherwise parsing alone is enough (and several times cheaper)."""
    state = original_state if original_state is not None else DecoderState.initial()
    if not any(frame and not frame[0] & _SHOW_FRAME_BIT for frame in chunk_frames):
        try:
            return parse_records(state, chunk_frames, levels=False)
        except CodecError:
            pass                  # decode frame by frame below, to say which frame is bad
    records = []
    for index, frame in enumerate(chunk_frames):
        try:
            state, _, record = decode_record(state, frame)
        except CodecError as exc:
            raise type(exc)(f"chunk frame {index}: {exc}") from None
        records.append(record)
    return records


def drop_lead_in(records: Sequence[FrameRecord]) -> list[FrameRecord]:
    """A chunk encoded after a lead-in (a key frame of the picture before the chunk) without
    that key frame: the frame after it then also does what the key frame did to the golden and
    alt-ref references, taking the last reference's picture, which in the stream it now
    continues is the previous chunk's last picture, the one the lead-in coded
    (FrameRecord.follow_dropped_key_frame). Records are changed in place."""
    if len(records) < 2 or not records[0].key_frame or records[1].key_frame:
        raise CodecError("a chunk with a lead-in starts with one key frame and continues")
    records[1].follow_dropped_key_frame()
    return list(records[1:])


def _is_anchor(record: FrameRecord) -> bool:
    header = record.header
    return not record.show_frame and not record.key_frame and bool(
        header["refresh_golden"] and header["refresh_altref"] and not header["refresh_last"])


def _is_converted_key_frame(record: FrameRecord) -> bool:
    header = record.header
    return record.show_frame and bool(header["refresh_golden"] and header["refresh_altref"])


def _key_frame_quantizer(records: Sequence, index: int, weight: float) -> int:
    own = records[index].q_index
    following = next((r.q_index for r in records[index + 1:] if not r.key_frame), own)
    return max(0, min(127, round(weight * own + (1 - weight) * following)))
