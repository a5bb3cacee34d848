# Everything one frame's decode works on: header, probabilities, per-macroblock decisions,
# the planes being written and the references read. Lives only for the duration of a decode.
from libc.stdint cimport int16_t, int32_t, uint8_t

from .bool_decoder cimport BoolDecoder
from .frame_header cimport EntropyContext, FrameHeader, FrameTag, LoopFilterDeltas, SegmentFeatures


ctypedef struct MotionVector:
    # In 1/8 pel (the bitstream's quarter-pel values doubled, as libvpx keeps them).
    int16_t row
    int16_t col


ctypedef struct MacroblockInfo:
    uint8_t y_mode            # DC_PRED..B_PRED, or NEARESTMV..SPLITMV for inter macroblocks
    uint8_t uv_mode
    uint8_t ref_frame         # INTRA_FRAME..ALTREF_FRAME
    uint8_t segment_id
    uint8_t skip              # no residual: coded skip flag, or all blocks ended at once
    uint8_t skip_coded        # the mb_skip_coeff flag as coded
    uint8_t partitioning      # SPLIT_* when y_mode == SPLITMV
    MotionVector mv           # the macroblock's MV (for SPLITMV, that of subblock 15)
    uint8_t b_modes[16]       # intra subblock modes (implied ones for 16x16 intra modes);
                              # for SPLITMV, each subblock's LEFT4X4..NEW4X4 reference
    MotionVector b_mvs[16]    # SPLITMV subblock MVs


ctypedef struct Plane:
    uint8_t* data
    int stride
    int width                 # macroblock-aligned
    int height


ctypedef struct FrameContext:
    FrameTag tag
    FrameHeader hdr
    EntropyContext probs
    SegmentFeatures features
    LoopFilterDeltas deltas
    int mb_cols
    int mb_rows
    # (mb_rows + 1) x (mb_cols + 1) entries; row 0 and column 0 are a zeroed border that reads
    # as "intra, DC_PRED, zero MV" so neighbour lookups need no edge tests (as libvpx).
    MacroblockInfo* mb_info
    int mb_info_stride
    uint8_t* segment_map      # mb_rows x mb_cols, persistent segment ids (written if updated)
    Plane cur[3]              # Y, U, V of the frame being decoded
    Plane refs[4][3]          # by reference frame; [0] unused
    int sign_bias[4]
    int bilinear              # versions 1-3 predict with the bilinear filter
    int full_pixel            # version 3: chroma MVs are whole pixels
    BoolDecoder first_partition
    BoolDecoder partitions[8]
    int num_partitions
    int16_t dequant[4][3][2]  # [segment][Y1, Y2, UV][DC, AC]
    uint8_t* above_ctx        # 9 token contexts per macroblock column: Y x4, U x2, V x2, Y2
    uint8_t left_ctx[9]
    int16_t coeffs[25 * 16]   # the current macroblock's dequantized coefficients
    uint8_t eobs[25]          # per block: scan position after the last token read
    # Optional capture of the coded coefficient levels (not dequantized) for every macroblock,
    # [mb_rows * mb_cols][25][16] and [mb_rows * mb_cols][25]; NULL when not wanted.
    int16_t* levels
    uint8_t* level_eobs
