"""Rebasing whole chunks: the operation ExCamera's stitching is built from.

`rebase_chunk(incoming_state, chunk_frames, source_images, original_state=None)` re-encodes a
chunk so that it continues from `incoming_state`:

- a key frame (libvpx starts every chunk with one) becomes an interframe against the incoming
  state, chosen with a full mode decision, at a quantizer blended from its own and the next
  frame's (ExCamera used 3/4 of the key frame's), refreshing all three references as the key
  frame would have;
- every interframe keeps its decisions (modes, vectors, references, segments, header flags) and
  gets new residuals: against its source picture if shown, or, for a hidden alt-ref frame,
  against the picture the original stream decoded for it.

The state after each output frame comes from the encoder's own reconstruction, loop-filtered and
updated exactly as the decoder does (the tests check it against decoding the output), so the
returned exit state is what a decoder of the joined stream will hold.
"""

from __future__ import annotations

from collections.abc import Sequence

from .decoder import decode_record, parse_records
from .encoder import encode, rebase_record
from .errors import CodecError
from .image import Image
from .state import DecoderState

_SHOW_FRAME_BIT = 0x10      # in the first byte of a frame tag (section 9.1)

# Weight of a key frame's own quantizer when it is re-encoded as an interframe (ExCamera's).
KEY_FRAME_QUANTIZER_WEIGHT = 0.75


def rebase_chunk(
    incoming_state: DecoderState,
    chunk_frames: Sequence[bytes],
    source_images: Sequence[Image],
    original_state: DecoderState | None = None,
    *,
    key_frame_weight: float = KEY_FRAME_QUANTIZER_WEIGHT,
) -> tuple[list[bytes], DecoderState]:
    """Re-encode `chunk_frames` (made against `original_state`, or starting with a key frame)
    to continue from `incoming_state`; returns the new frames and the state after them."""
    if not incoming_state.has_keyframe:
        raise CodecError("the incoming state has no decoded key frame to continue from")
    records = _records(chunk_frames, original_state)
    shown = sum(1 for record in records if record.show_frame)
    if shown != len(source_images):
        raise CodecError(
            f"chunk shows {shown} frames but {len(source_images)} source images were given")

    output: list[bytes] = []
    state = incoming_state
    sources = iter(source_images)
    for index, record in enumerate(records):
        target = next(sources) if record.show_frame else record.image
        if record.key_frame:
            frame, state = encode(state, target,
                                  _key_frame_quantizer(records, index, key_frame_weight),
                                  refresh_all=True, with_state=True)
        else:
            frame, state = rebase_record(state, target, record, with_state=True)
        output.append(frame)
    return output, state


def _records(chunk_frames: Sequence[bytes], original_state: DecoderState | None) -> list:
    """The chunk's FrameRecords. Pictures are decoded only when a hidden frame needs its decoded
    picture as a target; otherwise parsing alone is enough (and several times cheaper)."""
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


def _key_frame_quantizer(records: Sequence, index: int, weight: float) -> int:
    own = records[index].q_index
    following = next((r.q_index for r in records[index + 1:] if not r.key_frame), own)
    return max(0, min(127, round(weight * own + (1 - weight) * following)))
