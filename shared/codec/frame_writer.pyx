"""Frame serialization: the exact inverse of the parser (RFC 6386 section 19).

`write_frame(record)` writes a FrameRecord's header fields, macroblock decisions and coded
levels; a record parsed from a frame is written back to the very same bytes. The encoder and
rebase fill records with their own decisions and use the same writer.
"""

from libc.stdint cimport int16_t, uint8_t, uint32_t
from libc.stdlib cimport calloc, free
from libc.string cimport memset

from .bool_encoder cimport (
    BoolEncoder,
    bool_encoder_flush,
    bool_encoder_free,
    bool_encoder_init,
    bool_write,
    bool_write_literal,
    bool_write_signed,
    bool_write_tree,
)
from .frame_context cimport MacroblockInfo, MotionVector
from .frame_header cimport EntropyContext, FrameHeader, FrameTag
from .frame_record cimport FrameRecord
from .modes cimport above_block_mv, find_near_mvs, left_block_mv, submv_context
from .tables cimport (
    ALTREF_FRAME,
    B_PRED,
    GOLDEN_FRAME,
    INTRA_FRAME,
    LAST_FRAME,
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
    VP8_BMODE_PROBS,
    VP8_BMODE_TREE,
    VP8_COEF_BANDS,
    VP8_COEF_UPDATE_PROBS,
    VP8_KF_BMODE_PROBS,
    VP8_KF_UVMODE_PROBS,
    VP8_KF_YMODE_PROBS,
    VP8_KF_YMODE_TREE,
    VP8_MBSPLIT_COUNT,
    VP8_MBSPLIT_PROBS,
    VP8_MBSPLIT_TREE,
    VP8_MBSPLITS,
    VP8_MODE_CONTEXTS,
    VP8_MV_UPDATE_PROBS,
    VP8_PCAT3,
    VP8_PCAT4,
    VP8_PCAT5,
    VP8_PCAT6,
    VP8_SEGMENT_TREE,
    VP8_SMALL_MV_TREE,
    VP8_SUBMV_REF_PROBS,
    VP8_SUBMV_REF_TREE,
    VP8_UVMODE_TREE,
    VP8_YMODE_TREE,
    VP8_ZIGZAG,
    ZEROMV,
)

import numpy as np

from .errors import CodecError

# The frame tag's 19-bit field bounds the first partition.
DEF MAX_FIRST_PARTITION = (1 << 19) - 1


cdef inline void write_optional_signed(BoolEncoder* e, int present, int value,
                                       int bits) noexcept nogil:
    bool_write(e, present, 128)
    if present:
        bool_write_signed(e, value, bits)


cdef void write_header(BoolEncoder* e, FrameRecord r) noexcept nogil:
    # Field for field the order of parse_frame_header (section 19.2).
    cdef const FrameHeader* h = &r.hdr
    cdef int i, j, k, t
    if r.tag.key_frame:
        bool_write(e, h.color_space, 128)
        bool_write(e, h.clamping_type, 128)
    bool_write(e, h.segmentation_enabled, 128)
    if h.segmentation_enabled:
        bool_write(e, h.update_segment_map, 128)
        bool_write(e, h.update_segment_features, 128)
        if h.update_segment_features:
            bool_write(e, r.features.absolute, 128)
            for i in range(4):
                write_optional_signed(e, h.segment_quant_present[i], r.features.quant[i], 7)
            for i in range(4):
                write_optional_signed(e, h.segment_lf_present[i], r.features.filter_level[i], 6)
        if h.update_segment_map:
            for i in range(3):
                bool_write(e, h.segment_prob_present[i], 128)
                if h.segment_prob_present[i]:
                    bool_write_literal(e, h.segment_tree_probs[i], 8)
    bool_write(e, h.filter_type, 128)
    bool_write_literal(e, h.filter_level, 6)
    bool_write_literal(e, h.sharpness, 3)
    bool_write(e, h.lf_deltas_enabled, 128)
    if h.lf_deltas_enabled:
        bool_write(e, h.lf_delta_update, 128)
        if h.lf_delta_update:
            for i in range(4):
                write_optional_signed(e, h.ref_delta_present[i], r.deltas.ref[i], 6)
            for i in range(4):
                write_optional_signed(e, h.mode_delta_present[i], r.deltas.mode[i], 6)
    bool_write_literal(e, h.log2_partitions, 2)
    bool_write_literal(e, h.q_index, 7)
    write_optional_signed(e, h.q_delta_present[0], h.y1_dc_delta, 4)
    write_optional_signed(e, h.q_delta_present[1], h.y2_dc_delta, 4)
    write_optional_signed(e, h.q_delta_present[2], h.y2_ac_delta, 4)
    write_optional_signed(e, h.q_delta_present[3], h.uv_dc_delta, 4)
    write_optional_signed(e, h.q_delta_present[4], h.uv_ac_delta, 4)
    if r.tag.key_frame:
        bool_write(e, h.refresh_entropy, 128)
    else:
        bool_write(e, h.refresh_golden, 128)
        bool_write(e, h.refresh_altref, 128)
        if not h.refresh_golden:
            bool_write_literal(e, h.copy_to_golden, 2)
        if not h.refresh_altref:
            bool_write_literal(e, h.copy_to_altref, 2)
        bool_write(e, h.sign_bias_golden, 128)
        bool_write(e, h.sign_bias_altref, 128)
        bool_write(e, h.refresh_entropy, 128)
        bool_write(e, h.refresh_last, 128)
    for i in range(4):
        for j in range(8):
            for k in range(3):
                for t in range(11):
                    bool_write(e, h.coef_update[i][j][k][t], VP8_COEF_UPDATE_PROBS[i][j][k][t])
                    if h.coef_update[i][j][k][t]:
                        bool_write_literal(e, r.probs.coef[i][j][k][t], 8)
    bool_write(e, h.mb_no_coeff_skip, 128)
    if h.mb_no_coeff_skip:
        bool_write_literal(e, h.prob_skip_false, 8)
    if not r.tag.key_frame:
        bool_write_literal(e, h.prob_intra, 8)
        bool_write_literal(e, h.prob_last, 8)
        bool_write_literal(e, h.prob_golden, 8)
        bool_write(e, h.ymode_update, 128)
        if h.ymode_update:
            for i in range(4):
                bool_write_literal(e, r.probs.ymode[i], 8)
        bool_write(e, h.uvmode_update, 128)
        if h.uvmode_update:
            for i in range(3):
                bool_write_literal(e, r.probs.uvmode[i], 8)
        for i in range(2):
            for j in range(19):
                bool_write(e, h.mv_update[i][j], VP8_MV_UPDATE_PROBS[i][j])
                if h.mv_update[i][j]:
                    bool_write_literal(e, r.probs.mv[i][j] >> 1, 7)


cdef void write_mv_component(BoolEncoder* e, int value, const uint8_t* p) noexcept nogil:
    # Inverse of read_mv_component (section 17.2); `value` in quarter pel.
    cdef int x = -value if value < 0 else value, i
    if x < 8:
        bool_write(e, 0, p[MVP_IS_SHORT])
        bool_write_tree(e, VP8_SMALL_MV_TREE, 14, p + MVP_SHORT, x)
    else:
        bool_write(e, 1, p[MVP_IS_SHORT])
        for i in range(3):
            bool_write(e, (x >> i) & 1, p[MVP_BITS + i])
        i = MV_LONG_BITS - 1
        while i > 3:
            bool_write(e, (x >> i) & 1, p[MVP_BITS + i])
            i -= 1
        if x & 0xFFF0:
            bool_write(e, (x >> 3) & 1, p[MVP_BITS + 3])
    if x:
        bool_write(e, value < 0, p[MVP_SIGN])


cdef inline void write_mv(BoolEncoder* e, const EntropyContext* probs, MotionVector mv,
                          MotionVector base) noexcept nogil:
    write_mv_component(e, (mv.row - base.row) >> 1, probs.mv[0])
    write_mv_component(e, (mv.col - base.col) >> 1, probs.mv[1])


cdef void write_split_mv(BoolEncoder* e, FrameRecord r, const MacroblockInfo* mb,
                         MotionVector best) noexcept nogil:
    cdef int partitioning = mb.partitioning, part, first, context
    cdef MotionVector left_mv, above_mv
    bool_write_tree(e, VP8_MBSPLIT_TREE, 6, VP8_MBSPLIT_PROBS, partitioning)
    for part in range(VP8_MBSPLIT_COUNT[partitioning]):
        first = 0
        while VP8_MBSPLITS[partitioning][first] != part:
            first += 1
        left_mv = left_block_mv(mb, mb - 1, first)
        above_mv = above_block_mv(mb, mb - r.mb_info_stride, first)
        context = submv_context(left_mv, above_mv)
        bool_write_tree(e, VP8_SUBMV_REF_TREE, 6, VP8_SUBMV_REF_PROBS[context], mb.b_modes[first])
        if mb.b_modes[first] == NEW4X4:
            write_mv(e, &r.probs, mb.b_mvs[first], best)


cdef void write_macroblock_modes(BoolEncoder* e, FrameRecord r, const MacroblockInfo* mb,
                                 int mb_row, int mb_col, const int* sign_bias) noexcept nogil:
    # Mirror of read_macroblock_modes (section 19.3).
    cdef const FrameHeader* h = &r.hdr
    cdef const MacroblockInfo* above = mb - r.mb_info_stride
    cdef const MacroblockInfo* left = mb - 1
    cdef MotionVector near_mvs[4]
    cdef int counts[4]
    cdef int b, above_mode, left_mode
    if h.update_segment_map:
        bool_write_tree(e, VP8_SEGMENT_TREE, 6, h.segment_tree_probs, mb.segment_id)
    if h.mb_no_coeff_skip:
        bool_write(e, mb.skip_coded, h.prob_skip_false)
    if r.tag.key_frame:
        bool_write_tree(e, VP8_KF_YMODE_TREE, 8, VP8_KF_YMODE_PROBS, mb.y_mode)
        if mb.y_mode == B_PRED:
            for b in range(16):
                above_mode = above.b_modes[b + 12] if b < 4 else mb.b_modes[b - 4]
                left_mode = left.b_modes[b + 3] if (b & 3) == 0 else mb.b_modes[b - 1]
                bool_write_tree(e, VP8_BMODE_TREE, 18, VP8_KF_BMODE_PROBS[above_mode][left_mode],
                                mb.b_modes[b])
        bool_write_tree(e, VP8_UVMODE_TREE, 6, VP8_KF_UVMODE_PROBS, mb.uv_mode)
        return
    bool_write(e, mb.ref_frame != INTRA_FRAME, h.prob_intra)
    if mb.ref_frame == INTRA_FRAME:
        bool_write_tree(e, VP8_YMODE_TREE, 8, r.probs.ymode, mb.y_mode)
        if mb.y_mode == B_PRED:
            for b in range(16):
                bool_write_tree(e, VP8_BMODE_TREE, 18, VP8_BMODE_PROBS, mb.b_modes[b])
        bool_write_tree(e, VP8_UVMODE_TREE, 6, r.probs.uvmode, mb.uv_mode)
        return
    bool_write(e, mb.ref_frame != LAST_FRAME, h.prob_last)
    if mb.ref_frame != LAST_FRAME:
        bool_write(e, mb.ref_frame == ALTREF_FRAME, h.prob_golden)
    find_near_mvs(mb, r.mb_info_stride, sign_bias, mb.ref_frame, mb_row, mb_col, r.mb_rows,
                  r.mb_cols, near_mvs, counts)
    bool_write(e, mb.y_mode != ZEROMV, VP8_MODE_CONTEXTS[counts[0]][0])
    if mb.y_mode == ZEROMV:
        return
    bool_write(e, mb.y_mode != NEARESTMV, VP8_MODE_CONTEXTS[counts[1]][1])
    if mb.y_mode == NEARESTMV:
        return
    bool_write(e, mb.y_mode != NEARMV, VP8_MODE_CONTEXTS[counts[2]][2])
    if mb.y_mode == NEARMV:
        return
    bool_write(e, mb.y_mode == SPLITMV, VP8_MODE_CONTEXTS[counts[3]][3])
    if mb.y_mode == NEWMV:
        write_mv(e, &r.probs, mb.mv, near_mvs[0])
    else:
        write_split_mv(e, r, mb, near_mvs[0])


cdef inline void token_bit(BoolEncoder* e, TokenCounts* counts, int block_type, int band,
                           int context, int node, int bit, const uint8_t* p) noexcept nogil:
    if e != NULL:
        bool_write(e, bit, p[node])
    if counts != NULL:
        counts[0][block_type][band][context][node][bit] += 1


cdef inline void write_extra(BoolEncoder* e, int extra, const uint8_t* probs) noexcept nogil:
    cdef int n = 0, i
    while probs[n]:
        n += 1
    if e == NULL:
        return
    for i in range(n):
        bool_write(e, (extra >> (n - 1 - i)) & 1, probs[i])


cdef void write_block(BoolEncoder* e, TokenCounts* counts, int block_type, const uint8_t* probs,
                      int context, int first, const int16_t* levels, int eob) noexcept nogil:
    """Write one block's tokens up to scan position `eob` (inverse of read_block); with
    `counts`, also tally every tree branch taken. `probs` is [8][3][11] for the block type."""
    cdef int n = first, v, a, band = VP8_COEF_BANDS[first]
    cdef const uint8_t* p = probs + (band * 3 + context) * 11
    if eob == first:
        token_bit(e, counts, block_type, band, context, 0, 0, p)
        return
    token_bit(e, counts, block_type, band, context, 0, 1, p)
    while True:
        v = levels[VP8_ZIGZAG[n]]
        if v == 0:
            token_bit(e, counts, block_type, band, context, 1, 0, p)
            n += 1
            if n == 16:
                return
            context = 0
            band = VP8_COEF_BANDS[n]
            p = probs + (band * 3 + context) * 11
            continue
        token_bit(e, counts, block_type, band, context, 1, 1, p)
        a = -v if v < 0 else v
        if a == 1:
            token_bit(e, counts, block_type, band, context, 2, 0, p)
        else:
            token_bit(e, counts, block_type, band, context, 2, 1, p)
            if a <= 4:
                token_bit(e, counts, block_type, band, context, 3, 0, p)
                if a == 2:
                    token_bit(e, counts, block_type, band, context, 4, 0, p)
                else:
                    token_bit(e, counts, block_type, band, context, 4, 1, p)
                    token_bit(e, counts, block_type, band, context, 5, a == 4, p)
            else:
                token_bit(e, counts, block_type, band, context, 3, 1, p)
                if a <= 10:
                    token_bit(e, counts, block_type, band, context, 6, 0, p)
                    if a <= 6:
                        token_bit(e, counts, block_type, band, context, 7, 0, p)
                        if e != NULL:
                            bool_write(e, a - 5, 159)
                    else:
                        token_bit(e, counts, block_type, band, context, 7, 1, p)
                        if e != NULL:
                            bool_write(e, ((a - 7) >> 1) & 1, 165)
                            bool_write(e, (a - 7) & 1, 145)
                else:
                    token_bit(e, counts, block_type, band, context, 6, 1, p)
                    if a <= 34:
                        token_bit(e, counts, block_type, band, context, 8, 0, p)
                        if a <= 18:
                            token_bit(e, counts, block_type, band, context, 9, 0, p)
                            write_extra(e, a - 11, VP8_PCAT3)
                        else:
                            token_bit(e, counts, block_type, band, context, 9, 1, p)
                            write_extra(e, a - 19, VP8_PCAT4)
                    else:
                        token_bit(e, counts, block_type, band, context, 8, 1, p)
                        if a <= 66:
                            token_bit(e, counts, block_type, band, context, 10, 0, p)
                            write_extra(e, a - 35, VP8_PCAT5)
                        else:
                            token_bit(e, counts, block_type, band, context, 10, 1, p)
                            write_extra(e, a - 67, VP8_PCAT6)
        if e != NULL:
            bool_write(e, v < 0, 128)
        context = 1 if a == 1 else 2
        n += 1
        if n == 16:
            return
        band = VP8_COEF_BANDS[n]
        p = probs + (band * 3 + context) * 11
        if n == eob:
            token_bit(e, counts, block_type, band, context, 0, 0, p)
            return
        token_bit(e, counts, block_type, band, context, 0, 1, p)


# Token classes of the coefficient tree, and the class of a level's magnitude.
DEF TOKEN_ZERO = 0
DEF TOKEN_ONE = 1
DEF TOKEN_EOB = 11


cdef void tally_block(TokenTally* tally, int block_type, int context, int first,
                      const int16_t* levels, int eob) noexcept nogil:
    """Count each token of a block once, by class and whether its EOB branch is coded (not
    after a ZERO); `tree_counts` turns the tallies into the branch counts of every node."""
    cdef int n = first, v, token
    cdef int eob_tested = 1
    while n < eob:
        v = levels[VP8_ZIGZAG[n]]
        token = token_class(v if v >= 0 else -v)
        tally[0][block_type][VP8_COEF_BANDS[n]][context][eob_tested][token] += 1
        eob_tested = token != TOKEN_ZERO
        context = 0 if token == TOKEN_ZERO else (1 if token == TOKEN_ONE else 2)
        n += 1
    if n < 16:
        tally[0][block_type][VP8_COEF_BANDS[n]][context][1][TOKEN_EOB] += 1


# Per tree node: the token classes that take its 0 branch and its 1 branch (a class range).
cdef int NODE_ZERO_FIRST[11]
cdef int NODE_ZERO_LAST[11]
cdef int NODE_ONE_LAST[11]
NODE_ZERO_FIRST[:] = [11, 0, 1, 2, 2, 3, 5, 5, 7, 7, 9]
NODE_ZERO_LAST[:] = [11, 0, 1, 4, 2, 3, 6, 5, 8, 7, 9]
NODE_ONE_LAST[:] = [10, 10, 10, 10, 4, 4, 10, 6, 10, 8, 10]


cdef void tree_counts(const TokenTally* tally, TokenCounts* counts) noexcept nogil:
    """Branch counts of every node from per-class tallies: a token takes a node's 0 branch if
    its class is in the node's 0 range, its 1 branch if in the 1 range (right after it);
    node 0 (EOB) only sees tokens whose EOB branch is coded."""
    cdef int i, j, k, node, c, first_class
    cdef uint32_t zeros, ones, per_class
    for i in range(4):
        for j in range(8):
            for k in range(3):
                for node in range(11):
                    zeros = ones = 0
                    first_class = NODE_ZERO_FIRST[node] if node else 0
                    for c in range(first_class, 12):
                        per_class = tally[0][i][j][k][1][c]
                        if node:
                            per_class += tally[0][i][j][k][0][c]
                        if node == 0:
                            if c == TOKEN_EOB:
                                zeros += per_class
                            else:
                                ones += per_class
                        elif c <= NODE_ZERO_LAST[node]:
                            zeros += per_class
                        elif c <= NODE_ONE_LAST[node]:
                            ones += per_class
                    counts[0][i][j][k][node][0] += zeros
                    counts[0][i][j][k][node][1] += ones


cdef void write_macroblock_tokens(BoolEncoder* e, TokenTally* tally, TokenCounts* counts,
                                  const EntropyContext* probs,
                                  const MacroblockInfo* mb, const int16_t* levels,
                                  const uint8_t* eobs, uint8_t* above, uint8_t* left) noexcept nogil:
    # Block order and contexts exactly as read_macroblock_tokens.
    cdef int b, first = 0, kind = 3, ctx_index, flag
    cdef bint has_y2 = mb.y_mode != B_PRED and mb.y_mode != SPLITMV
    if mb.skip_coded:
        memset(above, 0, 8)
        memset(left, 0, 8)
        if has_y2:
            above[8] = left[8] = 0
        return
    if has_y2:
        code_block(e, tally, counts, 1, &probs.coef[1][0][0][0], above[8] + left[8], 0,
                   levels + 24 * 16, eobs[24])
        above[8] = left[8] = eobs[24] > 0
        first = 1
        kind = 0
    for b in range(16):
        code_block(e, tally, counts, kind, &probs.coef[kind][0][0][0],
                   above[b & 3] + left[b >> 2], first, levels + b * 16, eobs[b])
        above[b & 3] = left[b >> 2] = eobs[b] > first
    for b in range(16, 24):
        ctx_index = 4 + ((b - 16) >> 2) * 2
        code_block(e, tally, counts, 2, &probs.coef[2][0][0][0],
                   above[ctx_index + (b & 1)] + left[ctx_index + ((b >> 1) & 1)], 0,
                   levels + b * 16, eobs[b])
        flag = eobs[b] > 0
        above[ctx_index + (b & 1)] = left[ctx_index + ((b >> 1) & 1)] = flag


cdef inline void code_block(BoolEncoder* e, TokenTally* tally, TokenCounts* counts,
                            int block_type, const uint8_t* probs, int context, int first,
                            const int16_t* levels, int eob) noexcept nogil:
    # One of: write the tokens, tally them by class, or count every branch they take.
    if tally != NULL:
        tally_block(tally, block_type, context, first, levels, eob)
    else:
        write_block(e, counts, block_type, probs, context, first, levels, eob)


cdef void tally_macroblock(TokenTally* tally, const EntropyContext* probs,
                           const MacroblockInfo* mb,
                           const int16_t* levels, const uint8_t* eobs, uint8_t* above,
                           uint8_t* left) noexcept nogil:
    """Tally a macroblock's tokens as it is coded (`tree_counts` makes branch counts of the
    tallies) and leave the token contexts as a decoder of it is left: what `count_tokens` does
    for a whole record, for an encoder that has the levels at hand."""
    write_macroblock_tokens(NULL, tally, NULL, probs, mb, levels, eobs, above, left)


cdef void count_tokens(FrameRecord r, TokenCounts* counts, uint8_t* above_ctx) noexcept nogil:
    """Add the tree branches all of the frame's tokens take to `counts` (for probability
    updates): each token is tallied once by class, then the classes give the branches."""
    cdef uint8_t left[9]
    cdef int mb_row, mb_col, index
    cdef TokenTally* tally = <TokenTally*>calloc(1, sizeof(TokenTally))
    if tally == NULL:
        return
    for mb_row in range(r.mb_rows):
        memset(left, 0, 9)
        for mb_col in range(r.mb_cols):
            index = mb_row * r.mb_cols + mb_col
            write_macroblock_tokens(NULL, tally, NULL, &r.probs, r.macroblock(mb_row, mb_col),
                                    r.levels + index * 400, r.level_eobs + index * 25,
                                    above_ctx + mb_col * 9, left)
    tree_counts(tally, counts)
    free(tally)


cdef bytes write_frame(FrameRecord r):
    cdef BoolEncoder first
    cdef BoolEncoder parts[8]
    cdef int num_parts = 1 << r.hdr.log2_partitions, i, mb_row, mb_col, index
    cdef int sign_bias[4]
    cdef uint8_t left[9]
    cdef uint8_t* above_ctx
    cdef bytearray out
    cdef unsigned int tag
    sign_bias[0] = sign_bias[1] = 0
    sign_bias[2] = r.hdr.sign_bias_golden
    sign_bias[3] = r.hdr.sign_bias_altref
    above_ctx = <uint8_t*>calloc(r.mb_cols * 9 + 1, 1)
    if above_ctx == NULL:
        raise MemoryError()
    bool_encoder_init(&first)
    for i in range(num_parts):
        bool_encoder_init(&parts[i])
    try:
        with nogil:
            write_header(&first, r)
            for mb_row in range(r.mb_rows):
                memset(left, 0, 9)
                for mb_col in range(r.mb_cols):
                    index = mb_row * r.mb_cols + mb_col
                    write_macroblock_modes(&first, r, r.macroblock(mb_row, mb_col), mb_row,
                                           mb_col, sign_bias)
                    write_macroblock_tokens(&parts[mb_row & (num_parts - 1)], NULL, NULL,
                                            &r.probs, r.macroblock(mb_row, mb_col),
                                            r.levels + index * 400, r.level_eobs + index * 25,
                                            above_ctx + mb_col * 9, left)
            bool_encoder_flush(&first)
            for i in range(num_parts):
                bool_encoder_flush(&parts[i])
        if first.failed or any(parts[i].failed for i in range(num_parts)):
            raise MemoryError()
        if first.pos > MAX_FIRST_PARTITION:
            raise CodecError(f"first partition too large to code ({first.pos} bytes)")
        out = bytearray()
        tag = (0 if r.tag.key_frame else 1) | (r.tag.version << 1) | (r.tag.show_frame << 4) \
            | (<unsigned int>first.pos << 5)
        out += bytes([tag & 0xFF, (tag >> 8) & 0xFF, (tag >> 16) & 0xFF])
        if r.tag.key_frame:
            out += bytes([0x9D, 0x01, 0x2A,
                          r.tag.width & 0xFF, ((r.tag.width >> 8) & 0x3F) | (r.tag.hscale << 6),
                          r.tag.height & 0xFF, ((r.tag.height >> 8) & 0x3F) | (r.tag.vscale << 6)])
        out += (<char*>first.buf)[:first.pos]
        for i in range(num_parts - 1):
            out += bytes([parts[i].pos & 0xFF, (parts[i].pos >> 8) & 0xFF,
                          (parts[i].pos >> 16) & 0xFF])
        for i in range(num_parts):
            if parts[i].pos:
                out += (<char*>parts[i].buf)[:parts[i].pos]
        return bytes(out)
    finally:
        bool_encoder_free(&first)
        for i in range(num_parts):
            bool_encoder_free(&parts[i])
        free(above_ctx)


def serialize(FrameRecord record not None) -> bytes:
    """Write a FrameRecord as a VP8 frame."""
    if record.levels == NULL:
        raise ValueError("this record holds no coded levels (parsed with levels=False)")
    return write_frame(record)


def _branch_counts(FrameRecord record not None, bint by_class=True):
    """Test hook: the tree-branch counts of a record's tokens (4, 8, 3, 11, 2), tallied by
    token class (what the encoder uses) or by walking every token down the tree."""
    if record.levels == NULL:
        raise ValueError("this record holds no coded levels (parsed with levels=False)")
    counts_array = np.zeros((4, 8, 3, 11, 2), np.uint32)
    cdef uint32_t[:, :, :, :, ::1] view = counts_array
    cdef TokenCounts* counts = <TokenCounts*>&view[0, 0, 0, 0, 0]
    cdef uint8_t* above_ctx = <uint8_t*>calloc(record.mb_cols * 9 + 1, 1)
    cdef uint8_t left[9]
    cdef int mb_row, mb_col, index
    if above_ctx == NULL:
        raise MemoryError()
    try:
        if by_class:
            count_tokens(record, counts, above_ctx)
            return counts_array
        for mb_row in range(record.mb_rows):
            memset(left, 0, 9)
            for mb_col in range(record.mb_cols):
                index = mb_row * record.mb_cols + mb_col
                write_macroblock_tokens(NULL, NULL, counts, &record.probs,
                                        record.macroblock(mb_row, mb_col),
                                        record.levels + index * 400,
                                        record.level_eobs + index * 25,
                                        above_ctx + mb_col * 9, left)
        return counts_array
    finally:
        free(above_ctx)

