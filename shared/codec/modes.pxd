# Macroblock modes and motion vectors; the MV helpers are inline so the writer shares them.
from .frame_context cimport FrameContext, MacroblockInfo, MotionVector
from .tables cimport SPLITMV

# Margin (1/8 pel) by which NEAREST/NEAR/best vectors may point outside the frame (16 pixels).
DEF MV_BORDER = 16 << 3


cdef inline bint mv_equal(MotionVector a, MotionVector b) noexcept nogil:
    return a.row == b.row and a.col == b.col


cdef inline bint mv_is_zero(MotionVector a) noexcept nogil:
    return a.row == 0 and a.col == 0


cdef inline void clamp_mv(MotionVector* mv, int to_left, int to_right, int to_top,
                          int to_bottom) noexcept nogil:
    if mv.col < to_left - MV_BORDER:
        mv.col = to_left - MV_BORDER
    elif mv.col > to_right + MV_BORDER:
        mv.col = to_right + MV_BORDER
    if mv.row < to_top - MV_BORDER:
        mv.row = to_top - MV_BORDER
    elif mv.row > to_bottom + MV_BORDER:
        mv.row = to_bottom + MV_BORDER


cdef inline MotionVector neighbour_mv(const int* sign_bias, const MacroblockInfo* neighbour,
                                      int ref_frame) noexcept nogil:
    # A neighbour's vector points the other way when its reference has the other sign bias.
    cdef MotionVector mv = neighbour.mv
    if sign_bias[neighbour.ref_frame] != sign_bias[ref_frame]:
        mv.row = -mv.row
        mv.col = -mv.col
    return mv


cdef inline MotionVector left_block_mv(const MacroblockInfo* mb, const MacroblockInfo* left,
                                       int b) noexcept nogil:
    if b & 3:
        return mb.b_mvs[b - 1]
    if left.y_mode == SPLITMV:
        return left.b_mvs[b + 3]
    return left.mv


cdef inline MotionVector above_block_mv(const MacroblockInfo* mb, const MacroblockInfo* above,
                                        int b) noexcept nogil:
    if b >= 4:
        return mb.b_mvs[b - 4]
    if above.y_mode == SPLITMV:
        return above.b_mvs[b + 12]
    return above.mv


cdef inline int submv_context(MotionVector left_mv, MotionVector above_mv) noexcept nogil:
    # Section 16.4: which of the five sub-MV reference probability sets applies.
    if mv_equal(left_mv, above_mv):
        return 4 if mv_is_zero(left_mv) else 3
    if mv_is_zero(above_mv):
        return 2
    if mv_is_zero(left_mv):
        return 1
    return 0


cdef void find_near_mvs(const MacroblockInfo* mb, int stride, const int* sign_bias,
                        int ref_frame, int mb_row, int mb_col, int mb_rows, int mb_cols,
                        MotionVector* near_mvs, int* counts) noexcept nogil

cdef void read_macroblock_modes(FrameContext* fc, MacroblockInfo* mb, int mb_row,
                                int mb_col) noexcept nogil
