"""Per-macroblock header: segment id, skip flag, prediction modes and motion vectors.

RFC 6386 sections 10, 11, 16, 17 and 19.3. Motion vectors are kept in 1/8 pel like libvpx (the
bitstream's quarter-pel values doubled), so luma vectors are always even.
"""

from libc.stdint cimport int16_t, uint8_t

from .bool_decoder cimport BoolDecoder, bool_read, bool_read_tree
from .frame_context cimport FrameContext, MacroblockInfo, MotionVector
from .modes cimport (
    above_block_mv,
    clamp_mv,
    left_block_mv,
    mv_equal,
    mv_is_zero,
    neighbour_mv,
    submv_context,
)
from .tables cimport (
    ABOVE4X4,
    ALTREF_FRAME,
    B_DC_PRED,
    B_HE_PRED,
    B_PRED,
    B_TM_PRED,
    B_VE_PRED,
    DC_PRED,
    GOLDEN_FRAME,
    H_PRED,
    INTRA_FRAME,
    LAST_FRAME,
    LEFT4X4,
    MV_LONG_BITS,
    MVP_BITS,
    MVP_IS_SHORT,
    MVP_SHORT,
    MVP_SIGN,
    NEARESTMV,
    NEARMV,
    NEW4X4,
    NEWMV,
    SPLITMV,
    TM_PRED,
    V_PRED,
    VP8_BMODE_PROBS,
    VP8_BMODE_TREE,
    VP8_KF_BMODE_PROBS,
    VP8_KF_UVMODE_PROBS,
    VP8_KF_YMODE_PROBS,
    VP8_KF_YMODE_TREE,
    VP8_MBSPLIT_COUNT,
    VP8_MBSPLIT_PROBS,
    VP8_MBSPLIT_TREE,
    VP8_MBSPLITS,
    VP8_MODE_CONTEXTS,
    VP8_SEGMENT_TREE,
    VP8_SMALL_MV_TREE,
    VP8_SUBMV_REF_PROBS,
    VP8_SUBMV_REF_TREE,
    VP8_UVMODE_TREE,
    VP8_YMODE_TREE,
    ZERO4X4,
    ZEROMV,
)

cdef inline uint8_t implied_subblock_mode(int y_mode) noexcept nogil:
    # Section 11.3: a 16x16 intra mode's subblocks count as the matching 4x4 mode for contexts.
    if y_mode == V_PRED:
        return B_VE_PRED
    if y_mode == H_PRED:
        return B_HE_PRED
    if y_mode == TM_PRED:
        return B_TM_PRED
    return B_DC_PRED


cdef void read_keyframe_modes(BoolDecoder* d, MacroblockInfo* mb, const MacroblockInfo* above,
                              const MacroblockInfo* left) noexcept nogil:
    # Section 11.2-11.3: contexts are the modes of the subblocks above and to the left.
    cdef int b, above_mode, left_mode
    mb.y_mode = bool_read_tree(d, VP8_KF_YMODE_TREE, VP8_KF_YMODE_PROBS)
    if mb.y_mode == B_PRED:
        for b in range(16):
            above_mode = above.b_modes[b + 12] if b < 4 else mb.b_modes[b - 4]
            left_mode = left.b_modes[b + 3] if (b & 3) == 0 else mb.b_modes[b - 1]
            mb.b_modes[b] = bool_read_tree(d, VP8_BMODE_TREE,
                                           VP8_KF_BMODE_PROBS[above_mode][left_mode])
    else:
        for b in range(16):
            mb.b_modes[b] = implied_subblock_mode(mb.y_mode)
    mb.uv_mode = bool_read_tree(d, VP8_UVMODE_TREE, VP8_KF_UVMODE_PROBS)


cdef void read_intra_modes(FrameContext* fc, BoolDecoder* d, MacroblockInfo* mb) noexcept nogil:
    # Section 16.1: intra macroblocks of interframes use the persistent mode probabilities and
    # context-free subblock probabilities.
    cdef int b
    mb.y_mode = bool_read_tree(d, VP8_YMODE_TREE, fc.probs.ymode)
    if mb.y_mode == B_PRED:
        for b in range(16):
            mb.b_modes[b] = bool_read_tree(d, VP8_BMODE_TREE, VP8_BMODE_PROBS)
    else:
        for b in range(16):
            mb.b_modes[b] = implied_subblock_mode(mb.y_mode)
    mb.uv_mode = bool_read_tree(d, VP8_UVMODE_TREE, fc.probs.uvmode)


cdef int read_mv_component(BoolDecoder* d, const uint8_t* p) noexcept nogil:
    # Section 17.2; returns quarter-pel units.
    cdef int x = 0, i
    if bool_read(d, p[MVP_IS_SHORT]):
        for i in range(3):
            x += bool_read(d, p[MVP_BITS + i]) << i
        i = MV_LONG_BITS - 1
        while i > 3:
            x += bool_read(d, p[MVP_BITS + i]) << i
            i -= 1
        # Bit 3 is implicit when no higher bit is set: such values would be short.
        if not (x & 0xFFF0) or bool_read(d, p[MVP_BITS + 3]):
            x += 8
    else:
        x = bool_read_tree(d, VP8_SMALL_MV_TREE, p + MVP_SHORT)
    if x and bool_read(d, p[MVP_SIGN]):
        x = -x
    return x


cdef inline void read_mv(FrameContext* fc, BoolDecoder* d, MotionVector* mv) noexcept nogil:
    mv.row = <int16_t>(read_mv_component(d, fc.probs.mv[0]) * 2)
    mv.col = <int16_t>(read_mv_component(d, fc.probs.mv[1]) * 2)


cdef void read_split_mv(FrameContext* fc, BoolDecoder* d, MacroblockInfo* mb,
                        const MacroblockInfo* above, const MacroblockInfo* left,
                        MotionVector best) noexcept nogil:
    # Section 16.4: each partition's first subblock carries the vector for the whole partition.
    cdef int partitioning = bool_read_tree(d, VP8_MBSPLIT_TREE, VP8_MBSPLIT_PROBS)
    cdef int part, first, b, context, sub_mode
    cdef MotionVector left_mv, above_mv, mv
    mb.partitioning = partitioning
    for part in range(VP8_MBSPLIT_COUNT[partitioning]):
        first = 0
        while VP8_MBSPLITS[partitioning][first] != part:
            first += 1
        left_mv = left_block_mv(mb, left, first)
        above_mv = above_block_mv(mb, above, first)
        context = submv_context(left_mv, above_mv)
        sub_mode = bool_read_tree(d, VP8_SUBMV_REF_TREE, VP8_SUBMV_REF_PROBS[context])
        if sub_mode == LEFT4X4:
            mv = left_mv
        elif sub_mode == ABOVE4X4:
            mv = above_mv
        elif sub_mode == ZERO4X4:
            mv.row = 0
            mv.col = 0
        else:
            read_mv(fc, d, &mv)
            mv.row += best.row
            mv.col += best.col
        for b in range(first, 16):
            if VP8_MBSPLITS[partitioning][b] == part:
                mb.b_mvs[b] = mv
                mb.b_modes[b] = sub_mode       # kept so the frame can be written back as read
    mb.mv = mb.b_mvs[15]


cdef void find_near_mvs(const MacroblockInfo* mb, int stride, const int* sign_bias,
                        int ref_frame, int mb_row, int mb_col, int mb_rows, int mb_cols,
                        MotionVector* near_mvs, int* counts) noexcept nogil:
    """Section 16.3: the "census" of neighbouring vectors.

    Fills near_mvs[0] best (the base of new vectors), [1] nearest, [2] near (all clamped to
    16 pixels beyond the frame) and the four counts that select the mode-tree probabilities.
    """
    cdef const MacroblockInfo* above = mb - stride
    cdef const MacroblockInfo* left = mb - 1
    cdef const MacroblockInfo* above_left = above - 1
    cdef int slot = 0, tmp, b
    cdef MotionVector this_mv, swap_mv
    cdef int to_left = -((mb_col * 16) << 3)
    cdef int to_right = ((mb_cols - 1 - mb_col) * 16) << 3
    cdef int to_top = -((mb_row * 16) << 3)
    cdef int to_bottom = ((mb_rows - 1 - mb_row) * 16) << 3
    for b in range(4):
        near_mvs[b].row = 0
        near_mvs[b].col = 0
        counts[b] = 0
    # Above (weight 2), left (2), above-left (1); a vector equal to the latest distinct one
    # adds to its weight, a zero vector to the "zero" count.
    if above.ref_frame != INTRA_FRAME:
        if not mv_is_zero(above.mv):
            slot += 1
            near_mvs[slot] = neighbour_mv(sign_bias, above, ref_frame)
            counts[slot] += 2
        else:
            counts[0] += 2
    if left.ref_frame != INTRA_FRAME:
        if not mv_is_zero(left.mv):
            this_mv = neighbour_mv(sign_bias, left, ref_frame)
            if not mv_equal(this_mv, near_mvs[slot]):
                slot += 1
                near_mvs[slot] = this_mv
            counts[slot] += 2
        else:
            counts[0] += 2
    if above_left.ref_frame != INTRA_FRAME:
        if not mv_is_zero(above_left.mv):
            this_mv = neighbour_mv(sign_bias, above_left, ref_frame)
            if not mv_equal(this_mv, near_mvs[slot]):
                slot += 1
                near_mvs[slot] = this_mv
            counts[slot] += 1
        else:
            counts[0] += 1
    # Three distinct vectors: the third merges into "nearest" if equal to it.
    if counts[3] and mv_equal(near_mvs[slot], near_mvs[1]):
        counts[1] += 1
    counts[3] = ((above.y_mode == SPLITMV) + (left.y_mode == SPLITMV)) * 2 + \
        (above_left.y_mode == SPLITMV)
    if counts[2] > counts[1]:
        tmp = counts[1]
        counts[1] = counts[2]
        counts[2] = tmp
        swap_mv = near_mvs[1]
        near_mvs[1] = near_mvs[2]
        near_mvs[2] = swap_mv
    if counts[1] >= counts[0]:
        near_mvs[0] = near_mvs[1]
    for b in range(3):
        clamp_mv(&near_mvs[b], to_left, to_right, to_top, to_bottom)


cdef void read_inter_modes(FrameContext* fc, BoolDecoder* d, MacroblockInfo* mb, int mb_row,
                           int mb_col) noexcept nogil:
    cdef MotionVector near_mvs[4]
    cdef int counts[4]
    cdef int ref_frame
    if bool_read(d, fc.hdr.prob_last):
        ref_frame = ALTREF_FRAME if bool_read(d, fc.hdr.prob_golden) else GOLDEN_FRAME
    else:
        ref_frame = LAST_FRAME
    mb.ref_frame = ref_frame
    mb.uv_mode = DC_PRED
    find_near_mvs(mb, fc.mb_info_stride, fc.sign_bias, ref_frame, mb_row, mb_col, fc.mb_rows,
                  fc.mb_cols, near_mvs, counts)
    if not bool_read(d, VP8_MODE_CONTEXTS[counts[0]][0]):
        mb.y_mode = ZEROMV
        mb.mv.row = 0
        mb.mv.col = 0
    elif not bool_read(d, VP8_MODE_CONTEXTS[counts[1]][1]):
        mb.y_mode = NEARESTMV
        mb.mv = near_mvs[1]
    elif not bool_read(d, VP8_MODE_CONTEXTS[counts[2]][2]):
        mb.y_mode = NEARMV
        mb.mv = near_mvs[2]
    elif not bool_read(d, VP8_MODE_CONTEXTS[counts[3]][3]):
        mb.y_mode = NEWMV
        read_mv(fc, d, &mb.mv)
        mb.mv.row += near_mvs[0].row
        mb.mv.col += near_mvs[0].col
    else:
        mb.y_mode = SPLITMV
        read_split_mv(fc, d, mb, mb - fc.mb_info_stride, mb - 1, near_mvs[0])


cdef void read_macroblock_modes(FrameContext* fc, MacroblockInfo* mb, int mb_row,
                                int mb_col) noexcept nogil:
    """Read one macroblock's header from the first partition (section 19.3)."""
    cdef BoolDecoder* d = &fc.first_partition
    cdef int index = mb_row * fc.mb_cols + mb_col
    if fc.hdr.update_segment_map:
        mb.segment_id = bool_read_tree(d, VP8_SEGMENT_TREE, fc.hdr.segment_tree_probs)
        fc.segment_map[index] = mb.segment_id
    elif fc.tag.key_frame:
        # A key frame without a map resets every id to 0; otherwise ids persist (libvpx).
        mb.segment_id = 0
        fc.segment_map[index] = 0
    else:
        mb.segment_id = fc.segment_map[index]
    mb.skip_coded = bool_read(d, fc.hdr.prob_skip_false) if fc.hdr.mb_no_coeff_skip else 0
    mb.skip = mb.skip_coded
    mb.partitioning = 0
    if fc.tag.key_frame:
        mb.ref_frame = INTRA_FRAME
        read_keyframe_modes(d, mb, mb - fc.mb_info_stride, mb - 1)
    elif bool_read(d, fc.hdr.prob_intra):
        read_inter_modes(fc, d, mb, mb_row, mb_col)
    else:
        mb.ref_frame = INTRA_FRAME
        read_intra_modes(fc, d, mb)
    if mb.ref_frame == INTRA_FRAME:
        mb.mv.row = 0
        mb.mv.col = 0
