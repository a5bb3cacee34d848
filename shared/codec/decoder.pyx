"""decode(state, frame) -> (state', image | None): one VP8 frame, as a pure function.

Order of work (RFC 6386 section 19 and libvpx's decoder): frame tag; header from the first
partition; then per macroblock in raster order its modes (first partition), its tokens (DCT
partition `row % n`) and its reconstruction; then the loop filter over the whole frame; then the
reference updates. The input state is never modified: the new state shares unchanged parts.
"""

import numpy as np

cimport numpy as cnp
from libc.stdint cimport int16_t, uint8_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

from .bool_decoder cimport BoolDecoder, bool_decoder_init, bool_decoder_overran
from .frame_context cimport FrameContext, MacroblockInfo
from .frame_header cimport (
    EntropyContext,
    FrameHeader,
    FrameTag,
    LoopFilterDeltas,
    SegmentFeatures,
    entropy_context_defaults,
    parse_frame_header,
    parse_frame_tag,
)
from .frame_record cimport FrameRecord, set_prediction_options
from .loop_filter cimport loop_filter_frame
from .modes cimport read_macroblock_modes
from .picture cimport Picture
from .reconstruct cimport reconstruct_macroblock
from .state cimport DecoderState
from .tables cimport (
    ALTREF_FRAME,
    B_PRED,
    GOLDEN_FRAME,
    INTRA_FRAME,
    LAST_FRAME,
    SPLITMV,
)
from .tokens cimport build_dequant_table, read_macroblock_tokens, reset_macroblock_token_contexts

from .errors import CodecError, CorruptFrameError, MissingKeyFrameError
from .image import Image

cnp.import_array()


cdef void decode_macroblocks(FrameContext* fc, bint reconstruct, bint read_tokens) noexcept nogil:
    cdef int mb_row, mb_col
    cdef MacroblockInfo* mb
    cdef BoolDecoder* tokens
    cdef uint8_t* above_ctx
    for mb_row in range(fc.mb_rows):
        tokens = &fc.partitions[mb_row & (fc.num_partitions - 1)]
        memset(fc.left_ctx, 0, sizeof(fc.left_ctx))
        mb = fc.mb_info + (mb_row + 1) * fc.mb_info_stride + 1
        for mb_col in range(fc.mb_cols):
            read_macroblock_modes(fc, mb, mb_row, mb_col)
            if not read_tokens:
                mb += 1
                continue
            above_ctx = fc.above_ctx + mb_col * 9
            if mb.skip:
                reset_macroblock_token_contexts(fc, mb, above_ctx)
            elif not read_macroblock_tokens(
                    fc, tokens, mb, above_ctx,
                    fc.levels + (mb_row * fc.mb_cols + mb_col) * 400 if fc.levels != NULL else NULL) \
                    and mb.y_mode != B_PRED and mb.y_mode != SPLITMV:
                # No block has data: treated as skipped, also by the loop filter (libvpx).
                mb.skip = 1
            if fc.level_eobs != NULL:
                memcpy(fc.level_eobs + (mb_row * fc.mb_cols + mb_col) * 25, fc.eobs, 25)
            if reconstruct:
                reconstruct_macroblock(fc, mb, mb_row, mb_col)
            else:
                memset(fc.coeffs, 0, sizeof(fc.coeffs))
            mb += 1


cdef int setup_partitions(FrameContext* fc, const unsigned char[:] data) except -1:
    """Split the DCT partitions after the first one (section 9.5), checking every size."""
    cdef Py_ssize_t n = data.shape[0]
    cdef Py_ssize_t sizes_at = fc.tag.header_size + fc.tag.first_part_size
    cdef Py_ssize_t at, size
    cdef int i, count = 1 << fc.hdr.log2_partitions
    fc.num_partitions = count
    at = sizes_at + 3 * (count - 1)
    if at > n:
        raise CorruptFrameError(
            f"frame ends inside the table of {count} partition sizes (truncated frame?)")
    for i in range(count):
        if i < count - 1:
            size = data[sizes_at + 3 * i] | (data[sizes_at + 3 * i + 1] << 8) \
                | (data[sizes_at + 3 * i + 2] << 16)
            if at + size > n:
                raise CorruptFrameError(
                    f"DCT partition {i + 1} of {count} runs past the end of the frame "
                    f"({size} bytes declared, {n - at} left; truncated frame?)")
        else:
            size = n - at
        bool_decoder_init(&fc.partitions[i], &data[0] + at if n > 0 else NULL, size)
        at += size
    return 0


cdef Picture choose_copy(int flag, Picture last, Picture golden, Picture altref,
                         Picture keep, str target):
    if flag == 0:
        return keep
    if flag == 1:
        return last
    if flag == 2:
        return altref if target == "golden" else golden
    raise CorruptFrameError(f"invalid copy-to-{target} flag {flag}")


def decode(DecoderState state not None, frame):
    """Decode one frame: returns the new state and the shown image (None if hidden).

    Raises a CodecError subclass on bad input: CorruptFrameError, MissingKeyFrameError (an
    interframe with no key frame before it), FrameSizeError (zero or oversized dimensions).
    """
    return _decode(state, frame, None)


def decode_record(DecoderState state not None, frame):
    """Like `decode`, also returning the frame's FrameRecord (its decisions and coded levels)."""
    record = FrameRecord()
    new_state, image = _decode(state, frame, record)
    return new_state, image, record


cdef DecoderState next_state(DecoderState state, const FrameTag* tag, const FrameHeader* hdr,
                             const EntropyContext* probs, const SegmentFeatures* features,
                             const LoopFilterDeltas* deltas, object segment_map,
                             Picture picture, int width, int height):
    """The state after a frame: what persists (section 9.7-9.11 and libvpx's buffer updates)."""
    cdef DecoderState new_state = DecoderState.__new__(DecoderState)
    cdef Picture last, golden, altref
    new_state.has_keyframe = True
    new_state.width = width
    new_state.height = height
    if tag.key_frame:
        new_state.horizontal_scale = tag.hscale
        new_state.vertical_scale = tag.vscale
    else:
        new_state.horizontal_scale = state.horizontal_scale
        new_state.vertical_scale = state.vertical_scale
    if hdr.refresh_entropy:
        new_state.probs = probs[0]
    elif tag.key_frame:
        entropy_context_defaults(&new_state.probs)
    else:
        new_state.probs = state.probs
    new_state.features = features[0]
    new_state.deltas = deltas[0]
    new_state.segment_map = segment_map
    if tag.key_frame:
        last = golden = altref = picture
    else:
        # libvpx's order: copy to alt-ref, copy to golden (seeing the new alt-ref),
        # then the refreshes with the new frame.
        altref = choose_copy(hdr.copy_to_altref, state.last, state.golden, state.altref,
                             state.altref, "altref")
        golden = choose_copy(hdr.copy_to_golden, state.last, state.golden, altref,
                             state.golden, "golden")
        if hdr.refresh_golden:
            golden = picture
        if hdr.refresh_altref:
            altref = picture
        last = picture if hdr.refresh_last else state.last
    new_state.last = last
    new_state.golden = golden
    new_state.altref = altref
    return new_state


def parse_records(DecoderState state not None, frames, *, bint levels=True) -> list:
    """FrameRecords of consecutive frames, parsed without reconstructing any picture: the
    decisions and coded levels only (`record.image` is None). Several times cheaper than
    `decode_record` where the pictures are not needed. With `levels=False` the token
    partitions are not read at all: headers and macroblock decisions only (what a rebase
    keeps), and the records cannot be serialized again."""
    records = []
    for frame in frames:
        record = FrameRecord()
        # The intermediate states hold stale references and never leave this function.
        state, _ = _decode(state, frame, record, False, levels)
        records.append(record)
    return records


cdef _decode(DecoderState state, frame, FrameRecord record, bint reconstruct=True,
             bint read_tokens=True):
    cdef const unsigned char[:] data = frame
    cdef FrameContext* fc = <FrameContext*>calloc(1, sizeof(FrameContext))
    cdef DecoderState new_state
    cdef Picture picture, last, golden, altref
    cdef int i, width, height
    cdef cnp.ndarray segment_map
    if fc == NULL:
        raise MemoryError()
    try:
        parse_frame_tag(data, &fc.tag)
        if fc.tag.key_frame:
            width, height = fc.tag.width, fc.tag.height
            entropy_context_defaults(&fc.probs)
            # features and deltas start zeroed (calloc): a key frame resets them.
        else:
            if not state.has_keyframe:
                raise MissingKeyFrameError("interframe without a preceding key frame")
            if reconstruct and not state.has_references:
                raise CodecError("the state is a parse context without reference pictures: "
                                 "it can parse interframes, not decode them")
            width, height = state.width, state.height
            fc.probs = state.probs
            fc.features = state.features
            fc.deltas = state.deltas
        fc.mb_cols = (width + 15) >> 4
        fc.mb_rows = (height + 15) >> 4
        fc.mb_info_stride = fc.mb_cols + 1

        bool_decoder_init(&fc.first_partition, &data[fc.tag.header_size],
                          fc.tag.first_part_size)
        parse_frame_header(&fc.first_partition, &fc.tag, &fc.hdr, &fc.probs, &fc.features,
                           &fc.deltas)
        if bool_decoder_overran(&fc.first_partition):
            raise CorruptFrameError("frame header runs past the end of the first partition")
        setup_partitions(fc, data)
        if fc.hdr.copy_to_golden == 3 or fc.hdr.copy_to_altref == 3:
            raise CorruptFrameError("invalid reference copy flag 3")
        set_prediction_options(fc)

        if fc.tag.key_frame or fc.hdr.update_segment_map:
            if fc.tag.key_frame:
                segment_map = np.zeros((fc.mb_rows, fc.mb_cols), np.uint8)
            else:
                segment_map = np.array(state.segment_map, dtype=np.uint8, copy=True)
        else:
            segment_map = state.segment_map
        fc.segment_map = <uint8_t*>cnp.PyArray_DATA(segment_map)

        picture = Picture.allocate(width, height) if reconstruct else None
        if reconstruct:
            picture.planes(fc.cur)
        if reconstruct and not fc.tag.key_frame:
            state.reference_planes(fc)

        fc.mb_info = <MacroblockInfo*>calloc((fc.mb_rows + 1) * fc.mb_info_stride,
                                             sizeof(MacroblockInfo))
        fc.above_ctx = <uint8_t*>calloc(fc.mb_cols * 9, 1)
        if fc.mb_info == NULL or fc.above_ctx == NULL:
            raise MemoryError()
        build_dequant_table(fc)
        if record is not None and read_tokens:
            fc.levels = <int16_t*>calloc(fc.mb_rows * fc.mb_cols * 400, sizeof(int16_t))
            fc.level_eobs = <uint8_t*>calloc(fc.mb_rows * fc.mb_cols * 25, 1)
            if fc.levels == NULL or fc.level_eobs == NULL:
                raise MemoryError()

        with nogil:
            decode_macroblocks(fc, reconstruct, read_tokens)
            if reconstruct:
                loop_filter_frame(fc)

        if bool_decoder_overran(&fc.first_partition):
            raise CorruptFrameError("macroblock headers run past the end of the first "
                                    "partition (truncated or corrupt frame)")
        for i in range(fc.num_partitions):
            if bool_decoder_overran(&fc.partitions[i]):
                raise CorruptFrameError(
                    f"DCT partition {i + 1} of {fc.num_partitions} ends before its last "
                    f"macroblock (truncated or corrupt frame)")

        if reconstruct:
            picture.freeze()
        if segment_map is not state.segment_map:
            segment_map.flags.writeable = False

        new_state = next_state(state, &fc.tag, &fc.hdr, &fc.probs, &fc.features, &fc.deltas,
                               segment_map, picture, width, height)

        if record is not None:
            record.adopt(fc, segment_map)
        if not reconstruct:
            return new_state, None
        y, u, v = picture.cropped()
        image = Image(y, u, v)
        if record is not None:
            record.image = image
        return new_state, image if fc.tag.show_frame else None
    finally:
        free(fc.mb_info)
        free(fc.above_ctx)
        free(fc.levels)
        free(fc.level_eobs)
        free(fc)
