"""Frame tag and frame header parsing (RFC 6386 sections 9 and 19).

`parse_frame_tag` validates the uncompressed bytes at the start of a frame; `parse_frame_header`
reads the first partition's header fields in bitstream order, applying probability, segment and
loop-filter updates to the structs it is given (the caller decides what persists).
"""

from libc.stdint cimport uint8_t
from libc.string cimport memcpy, memset

from .bool_decoder cimport (
    bool_decoder_init,
    bool_decoder_overran,
    BoolDecoder,
    bool_read,
    bool_read_bit,
    bool_read_literal,
    bool_read_signed,
)
from .tables cimport (
    VP8_COEF_DEFAULT_PROBS,
    VP8_COEF_UPDATE_PROBS,
    VP8_MV_DEFAULT_PROBS,
    VP8_MV_UPDATE_PROBS,
    VP8_UVMODE_DEFAULT_PROBS,
    VP8_YMODE_DEFAULT_PROBS,
)

from .errors import CorruptFrameError, FrameSizeError
from .limits import MAX_FRAME_AREA  # frames larger are refused before anything is allocated


class FrameInfo:
    """What the first bytes of a frame say, without decoding it."""

    __slots__ = ("key_frame", "version", "show_frame", "first_partition_size", "width", "height",
                 "horizontal_scale", "vertical_scale")

    def __init__(self, key_frame, version, show_frame, first_partition_size, width, height,
                 horizontal_scale, vertical_scale):
        self.key_frame = key_frame
        self.version = version
        self.show_frame = show_frame
        self.first_partition_size = first_partition_size
        self.width = width
        self.height = height
        self.horizontal_scale = horizontal_scale
        self.vertical_scale = vertical_scale

    def __repr__(self):
        kind = "key" if self.key_frame else "inter"
        size = f" {self.width}x{self.height}" if self.key_frame else ""
        shown = "" if self.show_frame else " hidden"
        return f"<FrameInfo {kind}{size} v{self.version}{shown}>"


cdef int parse_frame_tag(const unsigned char[:] data, FrameTag* tag) except -1:
    """Validate the frame tag (section 9.1) and, for key frames, start code and size."""
    cdef Py_ssize_t n = data.shape[0]
    cdef unsigned int raw
    if n == 0:
        raise CorruptFrameError("empty frame (0 bytes)")
    if n < 3:
        raise CorruptFrameError(f"frame too short for a frame tag ({n} bytes)")
    raw = data[0] | (data[1] << 8) | (data[2] << 16)
    tag.key_frame = not (raw & 1)
    tag.version = (raw >> 1) & 7
    tag.show_frame = (raw >> 4) & 1
    tag.first_part_size = raw >> 5
    tag.width = tag.height = tag.hscale = tag.vscale = 0
    if tag.key_frame:
        if n < 10:
            raise CorruptFrameError(f"key frame too short for its header ({n} bytes)")
        if data[3] != 0x9D or data[4] != 0x01 or data[5] != 0x2A:
            raise CorruptFrameError(
                f"bad key frame start code {data[3]:02x} {data[4]:02x} {data[5]:02x}"
                " (expected 9d 01 2a)")
        tag.width = (data[6] | (data[7] << 8)) & 0x3FFF
        tag.hscale = data[7] >> 6
        tag.height = (data[8] | (data[9] << 8)) & 0x3FFF
        tag.vscale = data[9] >> 6
        tag.header_size = 10
        if tag.width == 0 or tag.height == 0:
            raise FrameSizeError(f"key frame has a zero dimension ({tag.width}x{tag.height})")
        if tag.width * tag.height > MAX_FRAME_AREA:
            raise FrameSizeError(
                f"frame size {tag.width}x{tag.height} exceeds the limit of "
                f"{MAX_FRAME_AREA} pixels")
    else:
        tag.header_size = 3
    if tag.first_part_size > n - tag.header_size:
        raise CorruptFrameError(
            f"first partition size {tag.first_part_size} exceeds the "
            f"{n - tag.header_size} bytes after the frame header (truncated frame?)")
    return 0


def peek_frame_info(frame) -> FrameInfo:
    """Read a frame's tag (and size, for key frames) without decoding it."""
    cdef FrameTag tag
    cdef const unsigned char[:] data = frame
    parse_frame_tag(data, &tag)
    return FrameInfo(bool(tag.key_frame), tag.version, bool(tag.show_frame), tag.first_part_size,
                     tag.width if tag.key_frame else None, tag.height if tag.key_frame else None,
                     tag.hscale, tag.vscale)


cdef void entropy_context_defaults(EntropyContext* ctx) noexcept nogil:
    memcpy(ctx.coef, VP8_COEF_DEFAULT_PROBS, sizeof(ctx.coef))
    memcpy(ctx.ymode, VP8_YMODE_DEFAULT_PROBS, sizeof(ctx.ymode))
    memcpy(ctx.uvmode, VP8_UVMODE_DEFAULT_PROBS, sizeof(ctx.uvmode))
    memcpy(ctx.mv, VP8_MV_DEFAULT_PROBS, sizeof(ctx.mv))


cdef inline int read_optional_signed(BoolDecoder* d, int bits, uint8_t* present) noexcept nogil:
    """A flagged signed field: 0 unless its flag bit is set."""
    present[0] = bool_read_bit(d)
    if present[0]:
        return bool_read_signed(d, bits)
    return 0


cdef void parse_segmentation(BoolDecoder* d, FrameHeader* hdr,
                             SegmentFeatures* features) noexcept nogil:
    # Section 9.3.
    cdef int i
    hdr.update_segment_map = bool_read_bit(d)
    hdr.update_segment_features = bool_read_bit(d)
    if hdr.update_segment_features:
        features.absolute = bool_read_bit(d)
        # Values not sent this frame become 0 (section 9.3, as libvpx).
        for i in range(4):
            features.quant[i] = read_optional_signed(d, 7, &hdr.segment_quant_present[i])
        for i in range(4):
            features.filter_level[i] = read_optional_signed(d, 6, &hdr.segment_lf_present[i])
    if hdr.update_segment_map:
        for i in range(3):
            hdr.segment_prob_present[i] = bool_read_bit(d)
            hdr.segment_tree_probs[i] = bool_read_literal(d, 8) if hdr.segment_prob_present[i] \
                else 255


cdef void parse_loop_filter_deltas(BoolDecoder* d, FrameHeader* hdr,
                                   LoopFilterDeltas* deltas) noexcept nogil:
    # Section 9.6: a delta whose flag is clear keeps its previous value (libvpx).
    cdef int i
    hdr.lf_delta_update = bool_read_bit(d)
    if not hdr.lf_delta_update:
        return
    for i in range(4):
        hdr.ref_delta_present[i] = bool_read_bit(d)
        if hdr.ref_delta_present[i]:
            deltas.ref[i] = bool_read_signed(d, 6)
    for i in range(4):
        hdr.mode_delta_present[i] = bool_read_bit(d)
        if hdr.mode_delta_present[i]:
            deltas.mode[i] = bool_read_signed(d, 6)


cdef void parse_coefficient_updates(BoolDecoder* d, FrameHeader* hdr,
                                    EntropyContext* probs) noexcept nogil:
    # Section 13.4.
    cdef int i, j, k, t
    for i in range(4):
        for j in range(8):
            for k in range(3):
                for t in range(11):
                    hdr.coef_update[i][j][k][t] = bool_read(d, VP8_COEF_UPDATE_PROBS[i][j][k][t])
                    if hdr.coef_update[i][j][k][t]:
                        probs.coef[i][j][k][t] = bool_read_literal(d, 8)


cdef void parse_mv_updates(BoolDecoder* d, FrameHeader* hdr, EntropyContext* probs) noexcept nogil:
    # Section 17.2: a 7-bit value v gives probability v << 1, or 1 when v is 0.
    cdef int i, j, v
    for i in range(2):
        for j in range(19):
            hdr.mv_update[i][j] = bool_read(d, VP8_MV_UPDATE_PROBS[i][j])
            if hdr.mv_update[i][j]:
                v = bool_read_literal(d, 7)
                probs.mv[i][j] = (v << 1) if v else 1


cdef void parse_frame_header(BoolDecoder* d, const FrameTag* tag, FrameHeader* hdr,
                             EntropyContext* probs, SegmentFeatures* features,
                             LoopFilterDeltas* deltas) noexcept nogil:
    """Read the frame header in bitstream order (section 19.2).

    `probs`, `features` and `deltas` arrive holding the values in force before this frame (reset
    by the caller for key frames) and leave holding this frame's values.
    """
    cdef int i
    memset(hdr, 0, sizeof(FrameHeader))
    if tag.key_frame:
        hdr.color_space = bool_read_bit(d)
        hdr.clamping_type = bool_read_bit(d)
    hdr.segmentation_enabled = bool_read_bit(d)
    if hdr.segmentation_enabled:
        parse_segmentation(d, hdr, features)
    hdr.filter_type = bool_read_bit(d)
    hdr.filter_level = bool_read_literal(d, 6)
    hdr.sharpness = bool_read_literal(d, 3)
    hdr.lf_deltas_enabled = bool_read_bit(d)
    if hdr.lf_deltas_enabled:
        parse_loop_filter_deltas(d, hdr, deltas)
    hdr.log2_partitions = bool_read_literal(d, 2)
    hdr.q_index = bool_read_literal(d, 7)
    hdr.y1_dc_delta = read_optional_signed(d, 4, &hdr.q_delta_present[0])
    hdr.y2_dc_delta = read_optional_signed(d, 4, &hdr.q_delta_present[1])
    hdr.y2_ac_delta = read_optional_signed(d, 4, &hdr.q_delta_present[2])
    hdr.uv_dc_delta = read_optional_signed(d, 4, &hdr.q_delta_present[3])
    hdr.uv_ac_delta = read_optional_signed(d, 4, &hdr.q_delta_present[4])
    if tag.key_frame:
        hdr.refresh_golden = hdr.refresh_altref = hdr.refresh_last = 1
        hdr.refresh_entropy = bool_read_bit(d)
    else:
        hdr.refresh_golden = bool_read_bit(d)
        hdr.refresh_altref = bool_read_bit(d)
        if not hdr.refresh_golden:
            hdr.copy_to_golden = bool_read_literal(d, 2)
        if not hdr.refresh_altref:
            hdr.copy_to_altref = bool_read_literal(d, 2)
        hdr.sign_bias_golden = bool_read_bit(d)
        hdr.sign_bias_altref = bool_read_bit(d)
        hdr.refresh_entropy = bool_read_bit(d)
        hdr.refresh_last = bool_read_bit(d)
    parse_coefficient_updates(d, hdr, probs)
    hdr.mb_no_coeff_skip = bool_read_bit(d)
    hdr.prob_skip_false = bool_read_literal(d, 8) if hdr.mb_no_coeff_skip else 0
    if not tag.key_frame:
        hdr.prob_intra = bool_read_literal(d, 8)
        hdr.prob_last = bool_read_literal(d, 8)
        hdr.prob_golden = bool_read_literal(d, 8)
        hdr.ymode_update = bool_read_bit(d)
        if hdr.ymode_update:
            for i in range(4):
                probs.ymode[i] = bool_read_literal(d, 8)
        hdr.uvmode_update = bool_read_bit(d)
        if hdr.uvmode_update:
            for i in range(3):
                probs.uvmode[i] = bool_read_literal(d, 8)
        parse_mv_updates(d, hdr, probs)


def read_frame_header(frame) -> dict:
    """Parse a frame's tag and header into a dict (for tools and tests); no decoding."""
    cdef FrameTag tag
    cdef FrameHeader hdr
    cdef EntropyContext probs
    cdef SegmentFeatures features
    cdef LoopFilterDeltas deltas
    cdef BoolDecoder d
    cdef const unsigned char[:] data = frame
    parse_frame_tag(data, &tag)
    entropy_context_defaults(&probs)
    memset(&features, 0, sizeof(features))
    memset(&deltas, 0, sizeof(deltas))
    bool_decoder_init(&d, &data[tag.header_size], tag.first_part_size)
    parse_frame_header(&d, &tag, &hdr, &probs, &features, &deltas)
    result = dict(hdr)
    result["coef_update"] = sum(1 for x in (<uint8_t*>hdr.coef_update)[:1056] if x)
    result.update(tag=dict(tag), overran=bool(bool_decoder_overran(&d)),
                  bool_overrun=d.overrun, bool_count=d.count, bytes_loaded=d.pos - &data[tag.header_size])
    return result
