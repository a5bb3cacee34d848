# Frame tag and first-partition header (RFC 6386 sections 9.1-9.11, 19.1-19.2).
from libc.stdint cimport int8_t, uint8_t, uint32_t

from .bool_decoder cimport BoolDecoder


ctypedef struct EntropyContext:
    # The probabilities that persist between frames (libvpx's FRAME_CONTEXT).
    uint8_t coef[4][8][3][11]
    uint8_t ymode[4]
    uint8_t uvmode[3]
    uint8_t mv[2][19]


ctypedef struct SegmentFeatures:
    # Persistent segment feature data (section 9.3); replaced only when a frame sends it.
    uint8_t absolute          # 1: values are absolute, 0: deltas from the frame's values
    int8_t quant[4]
    int8_t filter_level[4]


ctypedef struct LoopFilterDeltas:
    # Persistent loop-filter adjustments (section 9.6): by reference frame and by mode class.
    int8_t ref[4]
    int8_t mode[4]


ctypedef struct FrameTag:
    int key_frame
    int version
    int show_frame
    uint32_t first_part_size
    int width                 # key frames only
    int height
    int hscale
    int vscale
    int header_size           # bytes before the first partition (10 key, 3 inter)


ctypedef struct FrameHeader:
    # Field values, then which optional fields were present in the bitstream (so a frame can be
    # written back exactly as it was read, and an encoder can say what it sends).
    int color_space
    int clamping_type
    int segmentation_enabled
    int update_segment_map
    int update_segment_features
    uint8_t segment_tree_probs[3]
    int filter_type           # 0 normal, 1 simple
    int filter_level
    int sharpness
    int lf_deltas_enabled
    int log2_partitions
    int q_index
    int y1_dc_delta
    int y2_dc_delta
    int y2_ac_delta
    int uv_dc_delta
    int uv_ac_delta
    int refresh_golden
    int refresh_altref
    int copy_to_golden        # 0 none, 1 last, 2 altref
    int copy_to_altref        # 0 none, 1 last, 2 golden
    int sign_bias_golden
    int sign_bias_altref
    int refresh_entropy
    int refresh_last
    int mb_no_coeff_skip
    int prob_skip_false
    int prob_intra
    int prob_last
    int prob_golden
    uint8_t segment_quant_present[4]
    uint8_t segment_lf_present[4]
    uint8_t segment_prob_present[3]
    int lf_delta_update
    uint8_t ref_delta_present[4]
    uint8_t mode_delta_present[4]
    uint8_t q_delta_present[5]
    uint8_t coef_update[4][8][3][11]
    int ymode_update
    int uvmode_update
    uint8_t mv_update[2][19]


cdef void entropy_context_defaults(EntropyContext* ctx) noexcept nogil

cdef void parse_frame_header(BoolDecoder* d, const FrameTag* tag, FrameHeader* hdr,
                             EntropyContext* probs, SegmentFeatures* features,
                             LoopFilterDeltas* deltas) noexcept nogil

cdef int parse_frame_tag(const unsigned char[:] data, FrameTag* tag) except -1
