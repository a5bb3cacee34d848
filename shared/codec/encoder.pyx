"""The VP8 encoder and rebase (RFC 6386 run backwards), in explicit state-passing style.

    encode_keyframe(image, q)      -> frame         a key frame
    encode(state, image, q)        -> frame         an interframe predicted from `state`
    rebase(state, image, frame, original_state) -> frame'

Every macroblock goes through one path: predict (the decoder's predictors), subtract the
target, forward transform, quantize, then reconstruct with the decoder's inverse transforms, so
the encoder's picture is exactly what a decoder will see. Mode decisions are rate-distortion
choices (SSE + lambda x bits, with bits from the frame's real probabilities); rebase skips the
decisions and keeps the original frame's. Frames are written by frame_writer. With `with_state`
the state after a frame is built from that same reconstruction, loop-filtered and updated by the
decoder's own `next_state`, which equals decoding the frame (the tests hold it to that).
"""

import numpy as np

cimport numpy as cnp
from libc.math cimport cos, log2, lround, sqrt
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport abs, calloc, free, malloc
from libc.string cimport memcpy, memset

from .frame_context cimport FrameContext, MacroblockInfo, MotionVector, Plane
from .frame_header cimport EntropyContext, entropy_context_defaults
from .frame_record cimport FrameRecord
from .frame_writer cimport (
    TokenCounts,
    TokenTally,
    tally_macroblock,
    token_class,
    tree_counts,
    write_frame,
)
from .loop_filter cimport loop_filter_frame
from .modes cimport above_block_mv, find_near_mvs, left_block_mv, mv_equal, submv_context
from .picture cimport Picture
from .predict cimport predict_block_intra, predict_inter, predict_subblock
from .reconstruct cimport build_edges, predict_inter_macroblock, subblock_edges
from .state cimport DecoderState
from .tables cimport (
    ABOVE4X4,
    ALTREF_FRAME,
    LEFT4X4,
    NEW4X4,
    SPLIT_QUARTERS,
    VP8_MBSPLIT_COUNT,
    VP8_MBSPLIT_PROBS,
    VP8_MBSPLIT_TREE,
    VP8_MBSPLITS,
    VP8_MV_UPDATE_PROBS,
    VP8_SUBMV_REF_PROBS,
    VP8_SUBMV_REF_TREE,
    ZERO4X4,
    B_DC_PRED,
    B_PRED,
    DC_PRED,
    GOLDEN_FRAME,
    INTRA_FRAME,
    LAST_FRAME,
    NEARESTMV,
    NEARMV,
    NEWMV,
    SPLITMV,
    TM_PRED,
    VP8_BMODE_PROBS,
    VP8_BMODE_TREE,
    VP8_COEF_BANDS,
    VP8_COEF_UPDATE_PROBS,
    VP8_KF_BMODE_PROBS,
    VP8_KF_UVMODE_PROBS,
    VP8_KF_YMODE_PROBS,
    VP8_KF_YMODE_TREE,
    VP8_MODE_CONTEXTS,
    VP8_SMALL_MV_TREE,
    VP8_UVMODE_TREE,
    VP8_YMODE_TREE,
    VP8_ZIGZAG,
    ZEROMV,
)
from .dsp cimport dsp_idct_add, dsp_idct_add_c
from .encode_dsp cimport (
    edsp_block_sad_sum,
    edsp_block_sad_sum_c,
    edsp_coefficient_bound,
    edsp_dc_from_sum,
    edsp_fdct4x4,
    edsp_fdct4x4_c,
    edsp_fdct4x4_residual,
    edsp_fdct_pair,
    edsp_quantize,
    edsp_quantize_c,
    edsp_sad,
    edsp_sad_c,
    edsp_sse,
)
from .tokens cimport build_dequant_table
from .transform cimport dc_only_add, idct_add, inverse_walsh

from .bool_encoder cimport tree_path
from .decoder cimport next_state

from .decoder import decode, decode_record
from .errors import CodecError, FrameSizeError
from .frame_header import MAX_FRAME_AREA
from .image import Image
from .metrics import ssim

cnp.import_array()

# --- costs ------------------------------------------------------------------------------------

cdef extern from "rows.h" nogil:
    ctypedef void (*rows_worker)(void* job, int worker) noexcept nogil
    int ROWS_MAX_THREADS
    void rows_run(rows_worker fn, void* job, int threads)
    int rows_take(int* next_row)
    void rows_publish(int* progress, int done)
    void rows_wait(const int* progress, int needed)


cdef uint32_t PROB_COST[256]     # cost in 1/256 bits of a 0 coded at probability p/256
cdef int _i
for _i in range(1, 256):
    PROB_COST[_i] = <uint32_t>lround(-log2(_i / 256.0) * 256.0)
PROB_COST[0] = PROB_COST[1]


cdef inline uint32_t bit_cost(int bit, int prob) noexcept nogil:
    return PROB_COST[256 - prob] if bit else PROB_COST[prob]


cdef uint32_t tree_cost(const int8_t* tree, int tree_size, const uint8_t* probs,
                        int value) noexcept nogil:
    cdef int bits[16]
    cdef int nodes[16]
    cdef int n = tree_path(tree, tree_size, value, nodes, bits)
    cdef uint32_t cost = 0
    while n > 0:
        n -= 1
        cost += bit_cost(bits[n], probs[nodes[n] >> 1])
    return cost


# Token tree paths: for each token (0 ZERO, 1-4 ONE..FOUR, 5-10 cat1..cat6, 11 EOB) the bits
# taken at nodes 0..10 (-1 = node not on the path).
cdef int TOKEN_PATH[12][11]
_paths = {
    11: {0: 0},
    0: {0: 1, 1: 0},
    1: {0: 1, 1: 1, 2: 0},
    2: {0: 1, 1: 1, 2: 1, 3: 0, 4: 0},
    3: {0: 1, 1: 1, 2: 1, 3: 0, 4: 1, 5: 0},
    4: {0: 1, 1: 1, 2: 1, 3: 0, 4: 1, 5: 1},
    5: {0: 1, 1: 1, 2: 1, 3: 1, 6: 0, 7: 0},
    6: {0: 1, 1: 1, 2: 1, 3: 1, 6: 0, 7: 1},
    7: {0: 1, 1: 1, 2: 1, 3: 1, 6: 1, 8: 0, 9: 0},
    8: {0: 1, 1: 1, 2: 1, 3: 1, 6: 1, 8: 0, 9: 1},
    9: {0: 1, 1: 1, 2: 1, 3: 1, 6: 1, 8: 1, 10: 0},
    10: {0: 1, 1: 1, 2: 1, 3: 1, 6: 1, 8: 1, 10: 1},
}
for _t, _path in _paths.items():
    for _n in range(11):
        TOKEN_PATH[_t][_n] = _path.get(_n, -1)

# Extra bits of the categories, and the base value of each token.
cdef int TOKEN_EXTRA_BITS[11]
cdef int TOKEN_BASE[11]
for _t, (_base, _bits) in enumerate([(0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (5, 1), (7, 2),
                                     (11, 3), (19, 4), (35, 5), (67, 11)]):
    TOKEN_BASE[_t] = _base
    TOKEN_EXTRA_BITS[_t] = _bits


cdef void fill_token_costs(Encoder* enc, const EntropyContext* probs) noexcept nogil:
    cdef int i, j, k, t, n
    cdef uint32_t cost
    for i in range(4):
        for j in range(8):
            for k in range(3):
                for t in range(12):
                    cost = 0
                    for n in range(1, 11):
                        if TOKEN_PATH[t][n] >= 0:
                            cost += bit_cost(TOKEN_PATH[t][n], probs.coef[i][j][k][n])
                    enc.token_cost_no_eob[i][j][k][t] = cost
                    enc.token_cost[i][j][k][t] = cost + bit_cost(TOKEN_PATH[t][0],
                                                                 probs.coef[i][j][k][0])
                    if t < 11:
                        # Extra bits are close to 1 bit each; the sign is exactly 1 bit.
                        enc.token_cost[i][j][k][t] += (TOKEN_EXTRA_BITS[t] + (t > 0)) * 256
                        enc.token_cost_no_eob[i][j][k][t] += (TOKEN_EXTRA_BITS[t] + (t > 0)) * 256
                    # The same weighted by lambda, in rd_cost units, for the trellis.
                    enc.rd_token_cost[i][j][k][t] = \
                        enc.lambda_trellis * enc.token_cost[i][j][k][t] // 256
                    enc.rd_token_cost_no_eob[i][j][k][t] = \
                        enc.lambda_trellis * enc.token_cost_no_eob[i][j][k][t] // 256


cdef uint32_t mv_component_cost(int value, const uint8_t* p) noexcept nogil:
    # Mirrors write_mv_component (section 17.2); `value` in quarter pel.
    cdef int x = -value if value < 0 else value, i
    cdef uint32_t cost
    if x < 8:
        cost = bit_cost(0, p[0]) + tree_cost(VP8_SMALL_MV_TREE, 14, p + 2, x)
    else:
        cost = bit_cost(1, p[0])
        for i in range(3):
            cost += bit_cost((x >> i) & 1, p[9 + i])
        for i in range(9, 3, -1):
            cost += bit_cost((x >> i) & 1, p[9 + i])
        if x & 0xFFF0:
            cost += bit_cost((x >> 3) & 1, p[9 + 3])
    if x:
        cost += bit_cost(value < 0, p[1])
    return cost


cdef void fill_mv_costs(Encoder* enc, const EntropyContext* probs) noexcept nogil:
    cdef int axis, v
    for axis in range(2):
        for v in range(-1023, 1024):
            enc.mv_cost[axis][v + 1024] = mv_component_cost(v, probs.mv[axis])


cdef inline uint32_t mv_cost(Encoder* enc, MotionVector mv, MotionVector base) noexcept nogil:
    cdef int dr = (mv.row - base.row) >> 1, dc = (mv.col - base.col) >> 1
    if dr < -1023 or dr > 1023 or dc < -1023 or dc > 1023:
        return 1 << 24          # not codable: never chosen
    return enc.mv_cost[0][dr + 1024] + enc.mv_cost[1][dc + 1024]


# --- transforms and quantization ----------------------------------------------------------

cdef void forward_walsh(const int16_t* dc, int16_t* out) noexcept nogil:
    """Inverse of the decoder's second-order transform: Y2 = M^T D M / 2."""
    cdef int M[4][4]
    cdef int tmp[4][4]
    cdef int i, j, k, s
    M[0][0] = M[0][1] = M[0][2] = M[0][3] = 1
    M[1][0] = M[1][1] = 1
    M[1][2] = M[1][3] = -1
    M[2][0] = M[2][3] = 1
    M[2][1] = M[2][2] = -1
    M[3][0] = M[3][2] = 1
    M[3][1] = M[3][3] = -1
    for i in range(4):
        for j in range(4):
            s = 0
            for k in range(4):
                s += M[k][i] * dc[k * 4 + j]
            tmp[i][j] = s
    for i in range(4):
        for j in range(4):
            s = 0
            for k in range(4):
                s += tmp[i][k] * M[k][j]
            out[i * 4 + j] = <int16_t>((s + (1 if s >= 0 else -1)) / 2)


cdef inline int quantize_block(const int16_t* coeffs, int16_t* levels, int16_t* dequantized,
                               int first, int dc_q, int ac_q, int dc_round,
                               int ac_round) noexcept nogil:
    """Quantize a block (raster order); returns the end-of-block scan position. Rounding is in
    1/256 of a step (a dead zone below one half keeps small, costly coefficients at zero)."""
    return edsp_quantize(coeffs, levels, dequantized, first, dc_q, ac_q, dc_round, ac_round)


cdef inline int zero_limit(int q, int rounding) noexcept nogil:
    """quantize_block makes every coefficient below this magnitude a zero level."""
    return q - ((rounding * q) >> 8)


cdef void transform_strip(Encoder* enc, const uint8_t* src, int src_stride, const uint8_t* pred,
                          int pred_stride, int count, int limit, int16_t* coeffs,
                          bint* empty) noexcept nogil:
    """Forward DCT of `count` (2 or 4) side-by-side 4x4 residual blocks into `coeffs` (16
    each). A block whose coefficients are all provably below `limit` is `empty`: it quantizes
    to nothing, so a pair of them is not transformed, only given its exact DC (which Y2 needs).
    Not with the trellis, which may choose levels the dead zone would zero."""
    cdef int sad[4]
    cdef int total[4]
    cdef int b
    if enc.trellis:
        for b in range(count):
            empty[b] = False
    else:
        edsp_block_sad_sum(src, src_stride, pred, pred_stride, count, sad, total)
        for b in range(count):
            empty[b] = edsp_coefficient_bound(sad[b]) < limit
    for b in range(0, count, 2):
        if empty[b] and empty[b + 1]:
            coeffs[b * 16] = edsp_dc_from_sum(total[b])
            coeffs[b * 16 + 16] = edsp_dc_from_sum(total[b + 1])
        else:
            edsp_fdct_pair(src + 4 * b, src_stride, pred + 4 * b, pred_stride,
                           coeffs + b * 16, coeffs + b * 16 + 16)


# More bits than dropping one trailing +-1 token can ever save.
DEF MAX_TOKEN_SAVING = 16


cdef int prune_block(Encoder* enc, int block_type, int context, int first,
                     const int16_t* coeffs, int16_t* levels, int16_t* dequantized,
                     int eob) noexcept nogil:
    """RD-optimized zeroing: drop trailing +-1 levels while the bits saved are worth more than
    the distortion added (coefficient-domain error / 4 is the pixel-domain SSE, section 14)."""
    cdef int n, i, c, new_eob
    cdef int64_t added, saved
    cdef uint32_t rate = 0, new_rate
    cdef bint rated = False
    while eob > first and enc.prune:
        i = VP8_ZIGZAG[eob - 1]
        if levels[i] != 1 and levels[i] != -1:
            break
        c = coeffs[i]
        # Distortion added by zeroing, x4 (coefficient domain), against the bits saved.
        added = <int64_t>c * c - (<int64_t>c - dequantized[i]) * (c - dequantized[i])
        if added * 64 >= enc.lambda_ * MAX_TOKEN_SAVING:
            break                       # cannot pay even if the token and its EOB were free
        if not rated:
            rate = block_rate(enc, block_type, context, first, levels, eob)
            rated = True
        new_eob = eob - 1
        while new_eob > first and levels[VP8_ZIGZAG[new_eob - 1]] == 0:
            new_eob -= 1
        levels[i] = 0
        new_rate = block_rate(enc, block_type, context, first, levels, new_eob)
        saved = <int64_t>rate - new_rate
        if added * 64 >= enc.lambda_ * saved // 256:
            levels[i] = 1 if dequantized[i] > 0 else -1
            break
        dequantized[i] = 0
        rate = new_rate
        eob = new_eob
    return eob


# Trellis quantization: the distortion weight turning coefficient-domain squared error into
# pixel SSE x 256 (a 4x4 block's coefficients carry 4x the pixel energy). Y2 keeps rounding: a
# trellis there (weight 16: Y2 carries 16x) measured worse on the benchmark clips.
DEF TRELLIS_WEIGHT = 64
cdef int64_t TRELLIS_INF = (<int64_t>1) << 62


cdef int trellis_block(Encoder* enc, int block_type, int context, int first,
                       const int16_t* coeffs, int16_t* levels, int16_t* dequantized,
                       int dc_q, int ac_q, int weight) noexcept nogil:
    """Rate-distortion optimal levels for one block given its quantizer steps: each scan
    position chooses among rounding its magnitude down, up, or (for small values) to zero, by
    dynamic programming over the token-context chain (the context of each token is set by the
    previous one: 0, 1 or more), with the end-of-block placed where it is cheapest. Rewrites
    `levels` and `dequantized` (raster order); returns the end-of-block scan position."""
    cdef int64_t cost[17][3]          # best cost of positions first..n-1, by the next context
    cdef int16_t from_level[17][3]    # the level chosen at n-1 on that path
    cdef int8_t from_state[17][3]     # and the context it was coded in
    cdef int64_t tail[17]             # distortion of leaving positions n..15 all zero
    cdef int16_t cand[16][3]
    cdef int8_t cand_token[16][3]     # the token class of each candidate level
    cdef int8_t cand_next[16][3]      # and the context it leaves for the next position
    cdef int64_t cand_dist[16][3]
    cdef int n_cand[16]
    cdef int64_t c_cost, total, best_total, err
    cdef int n, i, s, k, v, a, q, lo, ns, band, best_n, best_s, last
    cdef const int64_t* costs
    # Scan positions past the last one reaching a quarter step can only hold zeros.
    last = first - 1
    for n in range(first, 16):
        a = coeffs[VP8_ZIGZAG[n]]
        if (a if a >= 0 else -a) * 4 >= (dc_q if n == 0 else ac_q):
            last = n
    for n in range(first, 16):
        i = VP8_ZIGZAG[n]
        levels[i] = 0
        dequantized[i] = 0
    if last < first:
        return first
    tail[last + 1] = 0
    for n in range(last, first - 1, -1):
        i = VP8_ZIGZAG[n]
        a = coeffs[i]
        if a < 0:
            a = -a
        q = dc_q if n == 0 else ac_q
        tail[n] = tail[n + 1] + <int64_t>a * a * weight
        lo = a // q
        if lo > 2047:
            lo = 2047
        k = 0
        if lo == 0:
            cand[n][k] = 0
            k += 1
            if a * 4 >= q:      # below a quarter step, 1 never pays
                cand[n][k] = 1
                k += 1
        else:
            cand[n][k] = lo
            k += 1
            if lo < 2047 and a > lo * q:
                cand[n][k] = lo + 1
                k += 1
            if lo <= 2:
                cand[n][k] = 0
                k += 1
        n_cand[n] = k
        for k in range(n_cand[n]):
            v = cand[n][k]
            err = a - v * q
            cand_dist[n][k] = err * err * weight
            cand_token[n][k] = token_class(v)
            cand_next[n][k] = 0 if v == 0 else (1 if v == 1 else 2)
    # Trailing distortion beyond `last` is the same for every path: leave it out.
    cost[first][0] = cost[first][1] = cost[first][2] = TRELLIS_INF
    cost[first][context] = 0
    best_total = TRELLIS_INF
    best_n = first
    best_s = context
    for n in range(first, last + 1):
        band = VP8_COEF_BANDS[n]
        cost[n + 1][0] = cost[n + 1][1] = cost[n + 1][2] = TRELLIS_INF
        for s in range(3):
            c_cost = cost[n][s]
            if c_cost >= TRELLIS_INF:
                continue
            # End of block here (not right after a zero token).
            if n == first or s != 0:
                total = c_cost + tail[n] + enc.rd_token_cost[block_type][band][s][11]
                if total < best_total:
                    best_total = total
                    best_n = n
                    best_s = s
            if n > first and s == 0:
                costs = enc.rd_token_cost_no_eob[block_type][band][0]
            else:
                costs = enc.rd_token_cost[block_type][band][s]
            for k in range(n_cand[n]):
                total = c_cost + cand_dist[n][k] + costs[cand_token[n][k]]
                ns = cand_next[n][k]
                if total < cost[n + 1][ns]:
                    cost[n + 1][ns] = total
                    from_level[n + 1][ns] = cand[n][k]
                    from_state[n + 1][ns] = s
    # End after `last` (an end-of-block token unless the block is full).
    n = last + 1
    for s in range(1, 3):
        total = cost[n][s]
        if total >= TRELLIS_INF:
            continue
        if n < 16:
            total += enc.rd_token_cost[block_type][VP8_COEF_BANDS[n]][s][11]
        if total < best_total:
            best_total = total
            best_n = n
            best_s = s
    # Walk back from the best end.
    s = best_s
    n = best_n
    while n > first:
        v = from_level[n][s]
        i = VP8_ZIGZAG[n - 1]
        q = dc_q if n - 1 == 0 else ac_q
        if coeffs[i] < 0:
            v = -v
        levels[i] = <int16_t>v
        dequantized[i] = <int16_t>(v * q)
        s = from_state[n][s]
        n -= 1
    return best_n


cdef inline int refine_block(Encoder* enc, int block_type, int context, int first,
                             const int16_t* coeffs, int16_t* levels, int16_t* dequantized,
                             int eob, int dc_q, int ac_q) noexcept nogil:
    """After quantize_block: the trellis when enabled, else greedy pruning."""
    if enc.trellis:
        return trellis_block(enc, block_type, context, first, coeffs, levels, dequantized,
                             dc_q, ac_q, TRELLIS_WEIGHT)
    return prune_block(enc, block_type, context, first, coeffs, levels, dequantized, eob)


cdef uint32_t block_rate(Encoder* enc, int block_type, int context, int first,
                         const int16_t* levels, int eob) noexcept nogil:
    """Bits (x256) to code a block's tokens with the frame's probabilities."""
    cdef int n = first, token, v
    cdef uint32_t cost = 0
    cdef bint after_zero = False
    if eob == first:
        return enc.token_cost[block_type][VP8_COEF_BANDS[first]][context][11]
    while n < eob:
        v = levels[VP8_ZIGZAG[n]]
        token = token_class(v if v >= 0 else -v)
        if after_zero:
            cost += enc.token_cost_no_eob[block_type][VP8_COEF_BANDS[n]][context][token]
        else:
            cost += enc.token_cost[block_type][VP8_COEF_BANDS[n]][context][token]
        after_zero = token == 0
        context = 0 if token == 0 else (1 if token == 1 else 2)
        n += 1
    if n < 16:
        cost += enc.token_cost[block_type][VP8_COEF_BANDS[n]][context][11]
    return cost


# --- macroblock encoding -------------------------------------------------------------------

cdef inline int64_t block_sse(const uint8_t* a, int a_stride, const uint8_t* b, int b_stride,
                              int size) noexcept nogil:
    return edsp_sse(a, a_stride, b, b_stride, size, size)


cdef inline void add_block(const int16_t* dequantized, int eob, uint8_t* dst,
                           int stride) noexcept nogil:
    # Exactly the decoder's add_residual.
    if eob > 1:
        idct_add(dequantized, dst, stride)
    elif dequantized[0]:
        dc_only_add(dequantized[0], dst, stride)


ctypedef struct MacroblockCoding:
    # One candidate coding of a macroblock: levels, end positions, rate and distortion.
    int16_t levels[25 * 16]
    uint8_t eobs[25]
    uint32_t rate            # token bits x256 (modes and MVs are added by the caller)
    int64_t distortion       # SSE over Y, U and V


cdef void code_luma_16x16(Encoder* enc, MacroblockInfo* mb, int mb_row, int mb_col,
                          MacroblockCoding* out, const uint8_t* above_ctx,
                          const uint8_t* left_ctx) noexcept nogil:
    """Residual of a luma macroblock whose prediction is already in fc.cur (Y2 path)."""
    cdef FrameContext* fc = enc.fc
    cdef Plane* cur = &fc.cur[0]
    cdef Plane* src = &enc.src[0]
    cdef const int16_t* q = &fc.dequant[mb.segment_id][0][0]
    cdef uint8_t* dst = cur.data + mb_row * 16 * cur.stride + mb_col * 16
    cdef const uint8_t* s = src.data + mb_row * 16 * src.stride + mb_col * 16
    cdef int16_t coeffs[16 * 16]
    cdef int16_t dc[16]
    cdef int16_t y2[16]
    cdef int16_t dequant[25 * 16]
    cdef uint8_t above[9]
    cdef uint8_t left[9]
    cdef bint empty[16]
    cdef int b, eob, ctx
    memcpy(above, above_ctx, 9)
    memcpy(left, left_ctx, 9)
    for b in range(0, 16, 4):
        transform_strip(enc, s + b * src.stride, src.stride, dst + b * cur.stride, cur.stride, 4,
                        zero_limit(q[1], enc.ac_rounding), coeffs + b * 16, empty + b)
    for b in range(16):
        dc[b] = coeffs[b * 16]
    forward_walsh(dc, y2)
    eob = quantize_block(y2, out.levels + 24 * 16, dequant + 24 * 16, 0, q[2], q[3],
                         enc.y2_rounding[0], enc.y2_rounding[1])
    out.eobs[24] = eob
    if enc.need_rate:
        out.rate += block_rate(enc, 1, above[8] + left[8], 0, out.levels + 24 * 16, eob)
    above[8] = left[8] = eob > 0
    inverse_walsh(dequant + 24 * 16, dc)
    for b in range(16):
        ctx = above[b & 3] + left[b >> 2]
        if empty[b]:
            memset(out.levels + b * 16, 0, 16 * sizeof(int16_t))
            eob = 1
        else:
            eob = quantize_block(coeffs + b * 16, out.levels + b * 16, dequant + b * 16, 1,
                                 q[0], q[1], 0, enc.ac_rounding)
            eob = refine_block(enc, 0, ctx, 1, coeffs + b * 16, out.levels + b * 16,
                               dequant + b * 16, eob, q[0], q[1])
        out.eobs[b] = eob
        if enc.need_rate:
            out.rate += block_rate(enc, 0, ctx, 1, out.levels + b * 16, eob)
        above[b & 3] = left[b >> 2] = eob > 1
        dequant[b * 16] = dc[b]
        # DC from Y2: the decoder adds a DC-only block whenever its AC is empty.
        if eob > 1:
            idct_add(dequant + b * 16, dst + 4 * (b >> 2) * cur.stride + 4 * (b & 3), cur.stride)
        elif dc[b]:
            dc_only_add(dc[b], dst + 4 * (b >> 2) * cur.stride + 4 * (b & 3), cur.stride)
    if enc.need_rate:
        out.distortion += block_sse(s, src.stride, dst, cur.stride, 16)


cdef void code_chroma(Encoder* enc, MacroblockInfo* mb, int mb_row, int mb_col,
                      MacroblockCoding* out, const uint8_t* above_ctx,
                      const uint8_t* left_ctx) noexcept nogil:
    """Residual of both chroma planes, whose predictions are already in fc.cur."""
    cdef FrameContext* fc = enc.fc
    cdef const int16_t* q = &fc.dequant[mb.segment_id][2][0]
    cdef int16_t coeffs[4 * 16]
    cdef int16_t dequant[16]
    cdef int p, b, eob, ctx_index, row, col
    cdef int limit = min(zero_limit(q[0], enc.dc_rounding), zero_limit(q[1], enc.ac_rounding))
    cdef uint8_t above[9]
    cdef uint8_t left[9]
    cdef bint empty[4]
    cdef uint8_t* dst
    cdef const uint8_t* s
    memcpy(above, above_ctx, 9)
    memcpy(left, left_ctx, 9)
    for p in range(1, 3):
        for row in range(2):
            transform_strip(
                enc, enc.src[p].data + (mb_row * 8 + 4 * row) * enc.src[p].stride + mb_col * 8,
                enc.src[p].stride,
                fc.cur[p].data + (mb_row * 8 + 4 * row) * fc.cur[p].stride + mb_col * 8,
                fc.cur[p].stride, 2, limit, coeffs + 32 * row, empty + 2 * row)
        for b in range(4):
            row = b >> 1
            col = b & 1
            dst = fc.cur[p].data + (mb_row * 8 + 4 * row) * fc.cur[p].stride + mb_col * 8 + 4 * col
            ctx_index = 4 + (p - 1) * 2
            if empty[b]:
                memset(out.levels + (12 + 4 * p + b) * 16, 0, 16 * sizeof(int16_t))
                dequant[0] = 0
                eob = 0
            else:
                eob = quantize_block(coeffs + 16 * b, out.levels + (12 + 4 * p + b) * 16,
                                     dequant, 0, q[0], q[1], enc.dc_rounding, enc.ac_rounding)
                eob = refine_block(enc, 2, above[ctx_index + col] + left[ctx_index + row], 0,
                                   coeffs + 16 * b, out.levels + (12 + 4 * p + b) * 16, dequant,
                                   eob, q[0], q[1])
            out.eobs[12 + 4 * p + b] = eob
            if enc.need_rate:
                out.rate += block_rate(enc, 2, above[ctx_index + col] + left[ctx_index + row],
                                       0, out.levels + (12 + 4 * p + b) * 16, eob)
            above[ctx_index + col] = left[ctx_index + row] = eob > 0
            add_block(dequant, eob, dst, fc.cur[p].stride)
        if enc.need_rate:
            out.distortion += block_sse(
                enc.src[p].data + mb_row * 8 * enc.src[p].stride + mb_col * 8, enc.src[p].stride,
                fc.cur[p].data + mb_row * 8 * fc.cur[p].stride + mb_col * 8, fc.cur[p].stride, 8)


cdef void predict_chroma_intra(Encoder* enc, int mode, int mb_row, int mb_col) noexcept nogil:
    cdef uint8_t above_buf[22]
    cdef uint8_t left[16]
    cdef int p
    cdef Plane* plane
    for p in range(1, 3):
        plane = &enc.fc.cur[p]
        build_edges(plane, mb_col * 8, mb_row * 8, 8, mb_col == enc.fc.mb_cols - 1,
                    &above_buf[1], left)
        predict_block_intra(plane.data + mb_row * 8 * plane.stride + mb_col * 8, plane.stride,
                            8, mode, &above_buf[1], left, mb_row > 0, mb_col > 0)


cdef void code_luma_split(Encoder* enc, MacroblockInfo* mb, int mb_row, int mb_col,
                          MacroblockCoding* out, const uint8_t* above_ctx,
                          const uint8_t* left_ctx) noexcept nogil:
    """Luma residual without Y2 (SPLITMV), prediction already in fc.cur."""
    cdef FrameContext* fc = enc.fc
    cdef Plane* cur = &fc.cur[0]
    cdef Plane* src = &enc.src[0]
    cdef const int16_t* q = &fc.dequant[mb.segment_id][0][0]
    cdef int16_t coeffs[16 * 16]
    cdef int16_t dequant[16]
    cdef uint8_t above[9]
    cdef uint8_t left[9]
    cdef int b, eob
    cdef bint empty[16]
    cdef uint8_t* dst
    memcpy(above, above_ctx, 9)
    memcpy(left, left_ctx, 9)
    for b in range(0, 16, 4):
        transform_strip(
            enc, src.data + (mb_row * 16 + b) * src.stride + mb_col * 16, src.stride,
            cur.data + (mb_row * 16 + b) * cur.stride + mb_col * 16, cur.stride, 4,
            min(zero_limit(q[0], enc.dc_rounding), zero_limit(q[1], enc.ac_rounding)), coeffs + b * 16, empty + b)
    for b in range(16):
        dst = cur.data + (mb_row * 16 + 4 * (b >> 2)) * cur.stride + mb_col * 16 + 4 * (b & 3)
        if empty[b]:
            memset(out.levels + b * 16, 0, 16 * sizeof(int16_t))
            dequant[0] = 0
            eob = 0
        else:
            eob = quantize_block(coeffs + b * 16, out.levels + b * 16, dequant, 0, q[0], q[1],
                                 enc.dc_rounding, enc.ac_rounding)
            eob = refine_block(enc, 3, above[b & 3] + left[b >> 2], 0, coeffs + b * 16,
                               out.levels + b * 16, dequant, eob, q[0], q[1])
        out.eobs[b] = eob
        if enc.need_rate:
            out.rate += block_rate(enc, 3, above[b & 3] + left[b >> 2], 0, out.levels + b * 16,
                                   eob)
        above[b & 3] = left[b >> 2] = eob > 0
        add_block(dequant, eob, dst, cur.stride)
    if enc.need_rate:
        out.distortion += block_sse(
            src.data + mb_row * 16 * src.stride + mb_col * 16, src.stride,
            cur.data + mb_row * 16 * cur.stride + mb_col * 16, cur.stride, 16)


# Subblock mode costs: their probabilities are fixed (by the neighbours' modes on key frames),
# and B_PRED trials ask for them ten times per subblock.
cdef uint32_t INTER_BMODE_COST[10]
cdef uint32_t KEY_BMODE_COST[10][10][10]      # [above mode][left mode][mode]
cdef int _a, _l, _m
for _m in range(10):
    INTER_BMODE_COST[_m] = tree_cost(VP8_BMODE_TREE, 18, VP8_BMODE_PROBS, _m)
    for _a in range(10):
        for _l in range(10):
            KEY_BMODE_COST[_a][_l][_m] = tree_cost(VP8_BMODE_TREE, 18,
                                                   VP8_KF_BMODE_PROBS[_a][_l], _m)


cdef inline uint32_t bmode_cost(Encoder* enc, const MacroblockInfo* mb, int b,
                                int mode) noexcept nogil:
    cdef const MacroblockInfo* above
    cdef const MacroblockInfo* left
    cdef int above_mode, left_mode
    if not enc.key_frame:
        return INTER_BMODE_COST[mode]
    above = mb - enc.fc.mb_info_stride
    left = mb - 1
    above_mode = above.b_modes[b + 12] if b < 4 else mb.b_modes[b - 4]
    left_mode = left.b_modes[b + 3] if (b & 3) == 0 else mb.b_modes[b - 1]
    return KEY_BMODE_COST[above_mode][left_mode][mode]


# Subblock modes fully coded per 4x4 (the rest are ruled out by their prediction error alone).
DEF SUBBLOCK_SHORTLIST = 3


cdef void shortlist_subblock_modes(Encoder* enc, const MacroblockInfo* mb, int b,
                                   const uint8_t* src, int src_stride, const uint8_t* above,
                                   const uint8_t* left, int* out) noexcept nogil:
    """The SUBBLOCK_SHORTLIST modes of lowest SSE + lambda x mode bits, best first."""
    cdef uint8_t pred[16]
    cdef int64_t costs[10]
    cdef int mode, i, j, tmp
    cdef int order[10]
    for mode in range(10):
        predict_subblock(pred, 4, mode, above, left)
        costs[mode] = block_sse(src, src_stride, pred, 4, 4) * 256 \
            + enc.lambda_ * bmode_cost(enc, mb, b, mode) // 256
        order[mode] = mode
    for i in range(SUBBLOCK_SHORTLIST):
        for j in range(i + 1, 10):
            if costs[order[j]] < costs[order[i]]:
                tmp = order[i]
                order[i] = order[j]
                order[j] = tmp
        out[i] = order[i]


cdef void code_luma_subblocks(Encoder* enc, MacroblockInfo* mb, int mb_row, int mb_col,
                              MacroblockCoding* out, const uint8_t* above_ctx,
                              const uint8_t* left_ctx, bint choose_modes) noexcept nogil:
    """B_PRED: each 4x4 in turn (its prediction sees the reconstructed earlier ones). With
    `choose_modes`, each subblock's mode is the rate-distortion best of the ten."""
    cdef FrameContext* fc = enc.fc
    cdef Plane* cur = &fc.cur[0]
    cdef Plane* src = &enc.src[0]
    cdef const int16_t* q = &fc.dequant[mb.segment_id][0][0]
    cdef uint8_t mb_above_buf[22]
    cdef uint8_t mb_left[16]
    cdef uint8_t edge[13]
    cdef uint8_t sub_left[4]
    cdef uint8_t pred[16]
    cdef uint8_t best_pred[16]
    cdef int16_t coeffs[16]
    cdef int16_t dequant[16]
    cdef int16_t best_dequant[16]
    cdef int16_t levels[16]
    cdef uint8_t above[9]
    cdef uint8_t left[9]
    cdef int b, mode, eob, best_mode, best_eob, r, k, count
    cdef int candidates[SUBBLOCK_SHORTLIST]
    cdef int64_t cost, best_cost, sse
    cdef uint32_t rate, best_rate
    cdef uint8_t* dst
    cdef const uint8_t* s
    memcpy(above, above_ctx, 9)
    memcpy(left, left_ctx, 9)
    build_edges(cur, mb_col * 16, mb_row * 16, 16, mb_col == fc.mb_cols - 1, &mb_above_buf[1],
                mb_left)
    for b in range(16):
        dst = cur.data + (mb_row * 16 + 4 * (b >> 2)) * cur.stride + mb_col * 16 + 4 * (b & 3)
        s = src.data + (mb_row * 16 + 4 * (b >> 2)) * src.stride + mb_col * 16 + 4 * (b & 3)
        subblock_edges(dst, cur.stride, b, &mb_above_buf[1], mb_left, &edge[1], sub_left)
        if choose_modes:
            shortlist_subblock_modes(enc, mb, b, s, src.stride, &edge[1], sub_left, candidates)
            count = SUBBLOCK_SHORTLIST
        else:
            candidates[0] = mb.b_modes[b]
            count = 1
        best_cost = -1
        for k in range(count):
            mode = candidates[k]
            predict_subblock(pred, 4, mode, &edge[1], sub_left)
            edsp_fdct4x4(s, src.stride, pred, 4, coeffs)
            eob = quantize_block(coeffs, levels, dequant, 0, q[0], q[1], enc.dc_rounding, enc.ac_rounding)
            eob = refine_block(enc, 3, above[b & 3] + left[b >> 2], 0, coeffs, levels, dequant,
                               eob, q[0], q[1])
            add_block(dequant, eob, pred, 4)
            rate = cost = 0
            if choose_modes:      # otherwise the one mode is kept whatever it costs
                rate = block_rate(enc, 3, above[b & 3] + left[b >> 2], 0, levels, eob)
                sse = block_sse(s, src.stride, pred, 4, 4)
                cost = sse * 256 + enc.lambda_ * (rate + bmode_cost(enc, mb, b, mode)) // 256
            if best_cost < 0 or cost < best_cost:
                best_cost = cost
                best_mode = mode
                best_eob = eob
                best_rate = rate
                memcpy(best_pred, pred, 16)
                memcpy(out.levels + b * 16, levels, sizeof(levels))
        mb.b_modes[b] = best_mode
        out.eobs[b] = best_eob
        if enc.need_rate:
            out.rate += best_rate + bmode_cost(enc, mb, b, best_mode)
        above[b & 3] = left[b >> 2] = best_eob > 0
        for r in range(4):
            memcpy(dst + r * cur.stride, best_pred + 4 * r, 4)
    if enc.need_rate:
        out.distortion += block_sse(
            src.data + mb_row * 16 * src.stride + mb_col * 16, src.stride,
            cur.data + mb_row * 16 * cur.stride + mb_col * 16, cur.stride, 16)


cdef void code_macroblock(Encoder* enc, MacroblockInfo* mb, int mb_row, int mb_col,
                          MacroblockCoding* out, const uint8_t* above_ctx,
                          const uint8_t* left_ctx, bint choose_subblock_modes) noexcept nogil:
    """Predict, transform, quantize and reconstruct one macroblock with the modes in `mb`."""
    cdef FrameContext* fc = enc.fc
    cdef Plane* cur = &fc.cur[0]
    cdef uint8_t above_buf[22]
    cdef uint8_t left[16]
    # Levels past a block's end are never read: only the end positions need clearing.
    memset(out.eobs, 0, sizeof(out.eobs))
    out.rate = 0
    out.distortion = 0
    if mb.ref_frame == INTRA_FRAME:
        if mb.y_mode == B_PRED:
            code_luma_subblocks(enc, mb, mb_row, mb_col, out, above_ctx, left_ctx,
                                choose_subblock_modes)
        else:
            build_edges(cur, mb_col * 16, mb_row * 16, 16, mb_col == fc.mb_cols - 1,
                        &above_buf[1], left)
            predict_block_intra(cur.data + mb_row * 16 * cur.stride + mb_col * 16, cur.stride,
                                16, mb.y_mode, &above_buf[1], left, mb_row > 0, mb_col > 0)
            code_luma_16x16(enc, mb, mb_row, mb_col, out, above_ctx, left_ctx)
        predict_chroma_intra(enc, mb.uv_mode, mb_row, mb_col)
    else:
        predict_inter_macroblock(fc, mb, mb_row, mb_col)
        if mb.y_mode == SPLITMV:
            code_luma_split(enc, mb, mb_row, mb_col, out, above_ctx, left_ctx)
        else:
            code_luma_16x16(enc, mb, mb_row, mb_col, out, above_ctx, left_ctx)
    code_chroma(enc, mb, mb_row, mb_col, out, above_ctx, left_ctx)


cdef bint coding_is_empty(const MacroblockInfo* mb, const MacroblockCoding* c) noexcept nogil:
    cdef int b, first = 1 if (mb.y_mode != B_PRED and mb.y_mode != SPLITMV) else 0
    if first and c.eobs[24] > 0:
        return False
    for b in range(16):
        if c.eobs[b] > first:
            return False
    for b in range(16, 24):
        if c.eobs[b] > 0:
            return False
    return True


# --- mode decision -------------------------------------------------------------------------

cdef inline int64_t rd_cost(Encoder* enc, const MacroblockCoding* c, uint32_t extra_rate) noexcept nogil:
    return c.distortion * 256 + enc.lambda_ * (c.rate + extra_rate) // 256


cdef inline int64_t block_sad(const uint8_t* a, int a_stride, const uint8_t* b, int b_stride,
                              int size) noexcept nogil:
    return edsp_sad(a, a_stride, b, b_stride, size)


cdef int64_t motion_cost(Encoder* enc, const Plane* ref, int x, int y, int size, MotionVector mv,
                         MotionVector base, uint8_t* scratch) noexcept nogil:
    """SAD of the size x size block at (x, y) predicted with `mv`, plus lambda x vector bits."""
    cdef const Plane* src = &enc.src[0]
    cdef int sx = x + (mv.col >> 3), sy = y + (mv.row >> 3)
    if (mv.row & 7) == 0 and (mv.col & 7) == 0 and sx >= 0 and sy >= 0 \
            and sx + size <= ref.width and sy + size <= ref.height:
        # A whole-pixel vector inside the picture: the prediction is the reference itself.
        return block_sad(src.data + y * src.stride + x, src.stride,
                         ref.data + sy * ref.stride + sx, ref.stride, size) * 256 \
            + enc.lambda_sad * <int64_t>mv_cost(enc, mv, base) // 256
    predict_inter(ref, x, y, size, size, mv.row, mv.col, scratch, 16, enc.fc.bilinear)
    return block_sad(src.data + y * src.stride + x, src.stride, scratch, 16, size) * 256 \
        + enc.lambda_sad * <int64_t>mv_cost(enc, mv, base) // 256


cdef MotionVector motion_search(Encoder* enc, const Plane* ref, int x, int y, int size,
                                const MotionVector* starts, int n_starts, MotionVector base,
                                int max_step) noexcept nogil:
    """Integer diamond search (first step `max_step` pixels; the last, 1-pixel step also tries
    the diagonals) from the best of zero and the `starts`, then half- and quarter-pel
    refinement with the real interpolation filter. Costs
    count vector bits relative to `base` (what NEWMV codes against). Vectors in 1/8 pel."""
    cdef uint8_t scratch[256]
    cdef MotionVector best, centre, trial
    cdef int64_t best_cost, cost
    cdef int i, step, d, improved
    cdef int dr[8]
    cdef int dc[8]
    dr[0] = -1; dc[0] = 0; dr[1] = 1; dc[1] = 0; dr[2] = 0; dc[2] = -1; dr[3] = 0; dc[3] = 1
    dr[4] = -1; dc[4] = -1; dr[5] = -1; dc[5] = 1; dr[6] = 1; dc[6] = -1; dr[7] = 1; dc[7] = 1
    centre.row = 0
    centre.col = 0
    best_cost = motion_cost(enc, ref, x, y, size, centre, base, scratch)
    for i in range(n_starts):
        trial.row = (starts[i].row + 4) & ~7
        trial.col = (starts[i].col + 4) & ~7
        cost = motion_cost(enc, ref, x, y, size, trial, base, scratch)
        if cost < best_cost:
            best_cost = cost
            centre = trial
    step = max_step * 8
    while step >= 8:
        improved = 1
        while improved:
            improved = 0
            for d in range(8 if step == 8 and size == 16 else 4):
                trial.row = centre.row + dr[d] * step
                trial.col = centre.col + dc[d] * step
                if abs(trial.row - base.row) > 2000 or abs(trial.col - base.col) > 2000:
                    continue
                cost = motion_cost(enc, ref, x, y, size, trial, base, scratch)
                if cost < best_cost:
                    best_cost = cost
                    centre = trial
                    improved = 1
        step >>= 1
    step = 4
    while step >= 2:
        best = centre
        for d in range(8):
            trial.row = best.row + dr[d] * step
            trial.col = best.col + dc[d] * step
            cost = motion_cost(enc, ref, x, y, size, trial, base, scratch)
            if cost < best_cost:
                best_cost = cost
                centre = trial
        step >>= 1
    return centre


cdef int choose_intra16_mode(Encoder* enc, int mb_row, int mb_col, const uint8_t* probs,
                             const int8_t* tree) noexcept nogil:
    """The 16x16 intra mode whose prediction alone is cheapest (SSE + lambda x mode bits)."""
    cdef Plane* cur = &enc.fc.cur[0]
    cdef Plane* src = &enc.src[0]
    cdef uint8_t above_buf[22]
    cdef uint8_t left[16]
    cdef uint8_t pred[256]
    cdef int mode, best_mode = DC_PRED
    cdef int64_t cost, best_cost = -1
    build_edges(cur, mb_col * 16, mb_row * 16, 16, mb_col == enc.fc.mb_cols - 1, &above_buf[1],
                left)
    for mode in range(4):
        predict_block_intra(pred, 16, 16, mode, &above_buf[1], left, mb_row > 0, mb_col > 0)
        cost = block_sse(src.data + mb_row * 16 * src.stride + mb_col * 16, src.stride, pred,
                         16, 16) * 256 + enc.lambda_ * tree_cost(tree, 8, probs, mode) // 256
        if best_cost < 0 or cost < best_cost:
            best_cost = cost
            best_mode = mode
    return best_mode


cdef int choose_chroma_mode(Encoder* enc, int mb_row, int mb_col) noexcept nogil:
    cdef uint8_t above_buf[22]
    cdef uint8_t left[16]
    cdef uint8_t pred[64]
    cdef int mode, p, best_mode = DC_PRED
    cdef int64_t cost, best_cost = -1
    cdef Plane* plane
    cdef Plane* src
    for mode in range(4):
        cost = 0
        for p in range(1, 3):
            plane = &enc.fc.cur[p]
            src = &enc.src[p]
            build_edges(plane, mb_col * 8, mb_row * 8, 8, mb_col == enc.fc.mb_cols - 1,
                        &above_buf[1], left)
            predict_block_intra(pred, 8, 8, mode, &above_buf[1], left, mb_row > 0, mb_col > 0)
            cost += block_sse(src.data + mb_row * 8 * src.stride + mb_col * 8, src.stride,
                              pred, 8, 8)
        if best_cost < 0 or cost < best_cost:
            best_cost = cost
            best_mode = mode
    return best_mode


cdef void copy_macroblock_pixels(FrameContext* fc, int mb_row, int mb_col, uint8_t* saved,
                                 bint save) noexcept nogil:
    """Save (or restore) a macroblock's reconstructed pixels in fc.cur: 256 Y, 64 U, 64 V."""
    cdef int p, r, size
    cdef uint8_t* at
    for p in range(3):
        size = 16 if p == 0 else 8
        at = fc.cur[p].data + mb_row * size * fc.cur[p].stride + mb_col * size
        for r in range(size):
            if save:
                memcpy(saved, at + r * fc.cur[p].stride, size)
            else:
                memcpy(at + r * fc.cur[p].stride, saved, size)
            saved += size


cdef void try_candidate(Encoder* enc, MacroblockInfo* mb, int mb_row, int mb_col,
                        const uint8_t* above_ctx, const uint8_t* left_ctx, uint32_t extra_rate,
                        MacroblockCoding* trial, MacroblockCoding* best, MacroblockInfo* best_mb,
                        int64_t* best_cost) noexcept nogil:
    cdef int64_t cost
    code_macroblock(enc, mb, mb_row, mb_col, trial, above_ctx, left_ctx, True)
    cost = rd_cost(enc, trial, extra_rate)
    if best_cost[0] < 0 or cost < best_cost[0]:
        best_cost[0] = cost
        memcpy(best, trial, sizeof(MacroblockCoding))
        memcpy(best_mb, mb, sizeof(MacroblockInfo))
        copy_macroblock_pixels(enc.fc, mb_row, mb_col, enc.best_pixels, True)


# Inter candidates coded in full per macroblock (the others lose on prediction error alone).
DEF INTER_TRIALS = 4
# B_PRED is tried on interframes where the 16x16 intra coding cost at most this many 16ths
# more than the best inter coding.
DEF BPRED_MARGIN_16THS = 8


ctypedef struct InterCandidate:
    int ref_frame
    int mode
    MotionVector mv
    uint32_t rate
    int64_t score
    int partitioning          # SPLITMV only: quarters, with their vectors and references
    MotionVector b_mvs[16]
    uint8_t b_modes[16]


cdef inline uint32_t reference_cost(Encoder* enc, int ref) noexcept nogil:
    """Bits (x256) of coding an inter macroblock's reference frame."""
    cdef uint32_t cost = bit_cost(1, enc.prob_intra)
    if ref == LAST_FRAME:
        return cost + bit_cost(0, enc.prob_last)
    return cost + bit_cost(1, enc.prob_last) + bit_cost(ref == ALTREF_FRAME, enc.prob_golden)


cdef inline uint32_t inter_mode_cost(int mode, const int* counts) noexcept nogil:
    """Bits (x256) of an inter mode in the contexts `counts` (find_near_mvs), without NEWMV's
    vector or SPLITMV's partitions."""
    cdef uint32_t cost = bit_cost(mode != ZEROMV, VP8_MODE_CONTEXTS[counts[0]][0])
    if mode == ZEROMV:
        return cost
    cost += bit_cost(mode != NEARESTMV, VP8_MODE_CONTEXTS[counts[1]][1])
    if mode == NEARESTMV:
        return cost
    cost += bit_cost(mode != NEARMV, VP8_MODE_CONTEXTS[counts[2]][2])
    if mode == NEARMV:
        return cost
    return cost + bit_cost(mode == SPLITMV, VP8_MODE_CONTEXTS[counts[3]][3])


cdef bint split_futile(Encoder* enc, const InterCandidate* candidates, int n) noexcept nogil:
    """Whether some whole-macroblock candidate already predicts so well (its error worth fewer
    than enc.split_min_bits bits) that SPLITMV's extra vectors cannot pay."""
    cdef int i
    for i in range(n):
        if candidates[i].score < enc.lambda_ * enc.split_min_bits:
            return True
    return False


cdef void add_split_candidate(Encoder* enc, MacroblockInfo* mb, InterCandidate* candidates,
                              int* n, int ref, MotionVector mv16, const MotionVector* near_mvs,
                              const int* counts, uint32_t ref_cost, int mb_row,
                              int mb_col) noexcept nogil:
    """SPLITMV in quarters: each 8x8 gets its own vector (a small search around the 16x16 one),
    coded as LEFT/ABOVE/ZERO when it repeats a neighbour, else NEW4X4 against `best`."""
    cdef InterCandidate* c = &candidates[n[0]]
    cdef MotionVector starts[2]
    cdef MotionVector quarter[4]
    cdef MotionVector left_mv, above_mv
    cdef uint8_t scratch[256]
    cdef const Plane* src = &enc.src[0]
    cdef int q, b, part, first, context, sub_mode, x, y
    cdef uint32_t rate
    cdef int64_t sse = 0
    starts[0] = mv16
    starts[1] = near_mvs[0]
    for q in range(4):
        x = mb_col * 16 + 8 * (q & 1)
        y = mb_row * 16 + 8 * (q >> 1)
        quarter[q] = motion_search(enc, &enc.fc.refs[ref][0], x, y, 8, starts, 2, near_mvs[0], 1)
        predict_inter(&enc.fc.refs[ref][0], x, y, 8, 8, quarter[q].row, quarter[q].col, scratch,
                      16, enc.fc.bilinear)
        sse += block_sse(src.data + y * src.stride + x, src.stride, scratch, 16, 8)
    rate = ref_cost + inter_mode_cost(SPLITMV, counts) \
        + tree_cost(VP8_MBSPLIT_TREE, 6, VP8_MBSPLIT_PROBS, SPLIT_QUARTERS)
    # The references of each quarter depend on the quarters before it: fill in order.
    mb.y_mode = SPLITMV
    mb.partitioning = SPLIT_QUARTERS
    for part in range(4):
        first = (part >> 1) * 8 + (part & 1) * 2
        left_mv = left_block_mv(mb, mb - 1, first)
        above_mv = above_block_mv(mb, mb - enc.fc.mb_info_stride, first)
        if mv_equal(quarter[part], left_mv):
            sub_mode = LEFT4X4
        elif mv_equal(quarter[part], above_mv):
            sub_mode = ABOVE4X4
        elif quarter[part].row == 0 and quarter[part].col == 0:
            sub_mode = ZERO4X4
        else:
            sub_mode = NEW4X4
            rate += mv_cost(enc, quarter[part], near_mvs[0])
        context = submv_context(left_mv, above_mv)
        rate += tree_cost(VP8_SUBMV_REF_TREE, 6, VP8_SUBMV_REF_PROBS[context], sub_mode)
        for b in range(16):
            if VP8_MBSPLITS[SPLIT_QUARTERS][b] == part:
                mb.b_mvs[b] = quarter[part]
                mb.b_modes[b] = sub_mode
    c.ref_frame = ref
    c.mode = SPLITMV
    c.mv = mb.b_mvs[15]
    c.rate = rate
    c.partitioning = SPLIT_QUARTERS
    memcpy(c.b_mvs, mb.b_mvs, sizeof(c.b_mvs))
    memcpy(c.b_modes, mb.b_modes, sizeof(c.b_modes))
    c.score = sse * 256 + enc.lambda_ * rate // 256
    n[0] += 1


cdef void add_candidate(Encoder* enc, InterCandidate* candidates, int* n, int ref, int mode,
                        MotionVector mv, uint32_t rate, int mb_row, int mb_col) noexcept nogil:
    cdef uint8_t pred[256]
    cdef const Plane* src = &enc.src[0]
    predict_inter(&enc.fc.refs[ref][0], mb_col * 16, mb_row * 16, 16, 16, mv.row, mv.col, pred,
                  16, enc.fc.bilinear)
    candidates[n[0]].ref_frame = ref
    candidates[n[0]].mode = mode
    candidates[n[0]].mv = mv
    candidates[n[0]].rate = rate
    candidates[n[0]].score = block_sse(src.data + mb_row * 16 * src.stride + mb_col * 16,
                                       src.stride, pred, 16, 16) * 256 \
        + enc.lambda_ * rate // 256
    n[0] += 1


cdef void try_subblock_modes(Encoder* enc, MacroblockInfo* mb, int mb_row, int mb_col,
                             const uint8_t* above_ctx, const uint8_t* left_ctx,
                             uint32_t extra_rate, MacroblockCoding* trial,
                             MacroblockCoding* best, MacroblockInfo* best_mb,
                             int64_t* best_cost, int luma_mode) noexcept nogil:
    """The B_PRED candidate (its subblock mode bits are inside the coding's rate)."""
    mb.ref_frame = INTRA_FRAME
    mb.mv.row = mb.mv.col = 0
    mb.y_mode = B_PRED
    try_candidate(enc, mb, mb_row, mb_col, above_ctx, left_ctx, extra_rate, trial, best,
                  best_mb, best_cost)


cdef void decide_macroblock(Encoder* enc, MacroblockInfo* mb, int mb_row, int mb_col,
                            const uint8_t* above_ctx, const uint8_t* left_ctx,
                            MacroblockCoding* trial, MacroblockCoding* best) noexcept nogil:
    """Choose modes (and vectors) for one macroblock by rate-distortion cost; leaves the
    winner's modes in `mb` and its coding in `best` (fc.cur is recoded by the caller)."""
    cdef FrameContext* fc = enc.fc
    cdef MacroblockInfo best_mb
    cdef int64_t best_cost = -1
    cdef MotionVector near_mvs[4]
    cdef int counts[4]
    cdef int ref, luma_mode, mode, i, j, n, best_candidate
    cdef int64_t intra16_cost
    cdef uint32_t ref_cost, intra_cost
    cdef MotionVector mv, zero
    cdef MotionVector starts[4]
    cdef InterCandidate candidates[13]
    cdef InterCandidate swap
    cdef const uint8_t* ymode_probs = fc.probs.ymode
    cdef const int8_t* ymode_tree = VP8_YMODE_TREE
    cdef const uint8_t* uv_probs = fc.probs.uvmode
    if enc.key_frame:
        ymode_probs = VP8_KF_YMODE_PROBS
        ymode_tree = VP8_KF_YMODE_TREE
        uv_probs = VP8_KF_UVMODE_PROBS
    memset(&best_mb, 0, sizeof(best_mb))
    # Intra: the best 16x16 mode by prediction cost, and B_PRED with per-subblock choices.
    mb.ref_frame = INTRA_FRAME
    mb.mv.row = mb.mv.col = 0
    mb.uv_mode = choose_chroma_mode(enc, mb_row, mb_col)
    intra_cost = 0 if enc.key_frame else bit_cost(0, enc.prob_intra)
    intra_cost += tree_cost(VP8_UVMODE_TREE, 6, uv_probs, mb.uv_mode)
    if not enc.key_frame:
        intra_cost += enc.intra_penalty
    luma_mode = choose_intra16_mode(enc, mb_row, mb_col, ymode_probs, ymode_tree)
    # Key frames code every 16x16 mode in full; interframes only the best prediction.
    for mode in range(4):
        if not enc.key_frame and mode != luma_mode:
            continue
        mb.y_mode = mode
        for i in range(16):
            mb.b_modes[i] = B_DC_PRED + (0 if mode == DC_PRED else (
                2 if mode == 1 else (3 if mode == 2 else 1)))
        try_candidate(enc, mb, mb_row, mb_col, above_ctx, left_ctx,
                      intra_cost + tree_cost(ymode_tree, 8, ymode_probs, mode),
                      trial, best, &best_mb, &best_cost)
    intra16_cost = best_cost
    if enc.key_frame:
        try_subblock_modes(enc, mb, mb_row, mb_col, above_ctx, left_ctx,
                           intra_cost + tree_cost(ymode_tree, 8, ymode_probs, B_PRED),
                           trial, best, &best_mb, &best_cost, luma_mode)
    if not enc.key_frame:
        # Inter candidates are ranked by their luma prediction error plus mode and vector bits;
        # only the best INTER_TRIALS are coded in full.
        n = 0
        for ref in range(LAST_FRAME, ALTREF_FRAME + 1):
            if fc.refs[ref][0].data == NULL:
                continue
            if ref != LAST_FRAME and fc.refs[ref][0].data == fc.refs[LAST_FRAME][0].data:
                continue
            if ref == ALTREF_FRAME and fc.refs[ref][0].data == fc.refs[GOLDEN_FRAME][0].data:
                continue
            ref_cost = reference_cost(enc, ref)
            mb.ref_frame = ref
            find_near_mvs(mb, fc.mb_info_stride, fc.sign_bias, ref, mb_row, mb_col, fc.mb_rows,
                          fc.mb_cols, near_mvs, counts)
            zero.row = zero.col = 0
            add_candidate(enc, candidates, &n, ref, ZEROMV, zero,
                          ref_cost + inter_mode_cost(ZEROMV, counts), mb_row, mb_col)
            if near_mvs[1].row or near_mvs[1].col:
                add_candidate(enc, candidates, &n, ref, NEARESTMV, near_mvs[1],
                              ref_cost + inter_mode_cost(NEARESTMV, counts), mb_row, mb_col)
            if (near_mvs[2].row or near_mvs[2].col) and not mv_equal(near_mvs[2], near_mvs[1]):
                add_candidate(enc, candidates, &n, ref, NEARMV, near_mvs[2],
                              ref_cost + inter_mode_cost(NEARMV, counts), mb_row, mb_col)
            # A wide search on the last frame; golden and alt-ref only refine their census vectors.
            if enc.hint == NULL:
                mv = motion_search(enc, &fc.refs[ref][0], mb_col * 16, mb_row * 16, 16, near_mvs,
                                   3, near_mvs[0], 16 if ref == LAST_FRAME else 2)
            else:
                # Revisiting: the earlier vector was found against references much like these,
                # so a one-pixel step around it and the census vectors finds what a wide
                # search would, at a fraction of its cost.
                starts[0] = near_mvs[0]
                starts[1] = near_mvs[1]
                starts[2] = near_mvs[2]
                starts[3] = enc.hint.mv
                mv = motion_search(enc, &fc.refs[ref][0], mb_col * 16, mb_row * 16, 16, starts,
                                   3 if enc.hint.ref_frame == INTRA_FRAME else 4, near_mvs[0], 1)
            if (mv.row or mv.col) and not mv_equal(mv, near_mvs[1]) \
                    and not mv_equal(mv, near_mvs[2]):
                add_candidate(enc, candidates, &n, ref, NEWMV, mv,
                              ref_cost + inter_mode_cost(NEWMV, counts)
                              + mv_cost(enc, mv, near_mvs[0]), mb_row, mb_col)
            # Revisiting, SPLITMV only where it was chosen before: the chain waits for this.
            if ref == LAST_FRAME and not split_futile(enc, candidates, n) and (
                    enc.hint == NULL or enc.hint.y_mode == SPLITMV):
                add_split_candidate(enc, mb, candidates, &n, ref, mv, near_mvs, counts, ref_cost,
                                    mb_row, mb_col)
        for i in range(n if n < INTER_TRIALS else INTER_TRIALS):
            best_candidate = i
            for j in range(i + 1, n):
                if candidates[j].score < candidates[best_candidate].score:
                    best_candidate = j
            swap = candidates[i]
            candidates[i] = candidates[best_candidate]
            candidates[best_candidate] = swap
            mb.ref_frame = candidates[i].ref_frame
            mb.y_mode = candidates[i].mode
            mb.mv = candidates[i].mv
            if mb.y_mode == SPLITMV:
                mb.partitioning = candidates[i].partitioning
                memcpy(mb.b_mvs, candidates[i].b_mvs, sizeof(mb.b_mvs))
                memcpy(mb.b_modes, candidates[i].b_modes, sizeof(mb.b_modes))
            try_candidate(enc, mb, mb_row, mb_col, above_ctx, left_ctx, candidates[i].rate,
                          trial, best, &best_mb, &best_cost)
        # Subblock intra prediction only where 16x16 intra came close to the best inter coding.
        # (Trying it more often pays on the benchmark clips, at some speed.)
        if intra16_cost <= best_cost + best_cost * BPRED_MARGIN_16THS // 16:
            try_subblock_modes(enc, mb, mb_row, mb_col, above_ctx, left_ctx,
                               intra_cost + tree_cost(ymode_tree, 8, ymode_probs, B_PRED),
                               trial, best, &best_mb, &best_cost, luma_mode)
    memcpy(mb, &best_mb, sizeof(MacroblockInfo))


# Lagrange multipliers per bit as multiples of the squared AC quantizer step, measured best on
# real video (BD-rate vs libvpx, bench/encode.py): LAMBDA_FACTOR for mode decisions, its
# TRELLIS_ counterpart for the trellis's level choices, lower on key frames (the reference of
# every later frame). Motion search uses the square root of SAD_LAMBDA_SCALE x LAMBDA_FACTOR,
# in SAD units.
LAMBDA_FACTOR = 0.010
KEY_LAMBDA_FACTOR = 0.008
TRELLIS_LAMBDA_FACTOR = 0.012
KEY_TRELLIS_LAMBDA_FACTOR = 0.004
SAD_LAMBDA_SCALE = 1.4
# Quantizer rounding in 1/256 of a step (a dead zone below one half keeps small, costly
# coefficients at zero): Y2's DC and AC, every other block's AC, and DC where not in Y2.
Y2_ROUNDING = (80, 64)
# A segmented frame being rebased keeps a narrower one: its segments' quantizers were chosen
# to refresh quality where they are lower (libvpx's cyclic refresh), which the wider dead zone
# would undo (a real-time stream of tests/test_rebase.py: 0.65 dB lower instead of 0.32).
SEGMENTED_REBASE_Y2_ROUNDING = (110, 100)
AC_ROUNDING = 85
DC_ROUNDING = 96
# Tunings of the rate-distortion choices: by squared error, or weighted by how much SSIM counts
# each macroblock's errors (activity_weights).
TUNINGS = ("psnr", "ssim")
# Trellis quantization (trellis_block) for every block coded, decisions included; 0 falls back
# to rounding and greedy pruning.
TRELLIS = 1
INTRA_PENALTY = 0
# SPLITMV is searched only where no whole-macroblock candidate's prediction error (SSE x 256) is
# below this many bits' worth (lambda x bits).
SPLIT_MIN_BITS = 0
# Loop-filter level deltas by reference (intra, last, golden, alt-ref) and by mode class
# (B_PRED, ZEROMV, other whole-macroblock vectors, SPLITMV).
LF_REF_DELTAS = (0, 0, 0, 0)
LF_MODE_DELTAS = (4, -2, 2, 4)

# Priors (in macroblocks) of the running reference-choice estimates that price the intra/inter,
# last/other and golden/alt-ref bits while a frame's macroblocks are decided.
DEF PRIOR_MBS = 32
DEF PRIOR_INTRA = 1
DEF PRIOR_LAST = 28

# --- SSIM tuning -----------------------------------------------------------------------------

cdef double block_variance(const uint8_t* p, int stride) noexcept nogil:
    """Variance of an 8x8 block of pixels."""
    cdef int64_t total = 0, squares = 0
    cdef int r, c, v
    for r in range(8):
        for c in range(8):
            v = p[r * stride + c]
            total += v
            squares += v * v
    return (squares - total * total / 64.0) / 64.0


# SSIM's stabilising constant for contrast, (0.03 x 255)^2.
DEF SSIM_C2 = 58.5225


cdef double ssim_error_weight(const Plane* src, int mb_row, int mb_col) noexcept nogil:
    """How much SSIM counts a squared error in this macroblock: SSIM's loss in a window is
    about its squared error / (2 variance + C2), so the mean of 1 / (2 variance + C2) over
    the macroblock's four 8x8 windows."""
    cdef const uint8_t* p = src.data + mb_row * 16 * src.stride + mb_col * 16
    cdef double total = 0.0
    cdef int k
    for k in range(4):
        total += 1.0 / (2.0 * block_variance(p + (k >> 1) * 8 * src.stride + (k & 1) * 8,
                                             src.stride) + SSIM_C2)
    return total / 4.0


cdef void activity_weights(Encoder* enc, int mb_rows, int mb_cols) noexcept nogil:
    """Each macroblock's lambda weight (x256): the frame's geometric mean of the SSIM error
    weights over its own, clamped to [1/8, 16]. Bits then go where SSIM counts errors most
    (flat areas) instead of evenly by squared error."""
    cdef int index, count = mb_rows * mb_cols
    cdef double log_mean = 0.0, weight
    cdef double* logs = <double*>malloc(count * sizeof(double))
    if logs == NULL:
        for index in range(count):
            enc.mb_weight[index] = 256
        return
    for index in range(count):
        logs[index] = log2(ssim_error_weight(&enc.src[0], index // mb_cols, index % mb_cols))
        log_mean += logs[index]
    log_mean /= count
    for index in range(count):
        weight = 256.0 * 2.0 ** (log_mean - logs[index])
        enc.mb_weight[index] = <uint16_t>(32 if weight < 32 else (4096 if weight > 4096
                                                                   else weight))
    free(logs)


cdef void tune_macroblock(Encoder* enc, int index) noexcept nogil:
    """Macroblock `index`'s lambdas from the frame's and its SSIM weight (when tuning for
    SSIM): lambda in proportion, the motion search's by its square root, the trellis's
    distortion weight inversely."""
    cdef int weight
    if enc.mb_weight == NULL:
        return
    weight = enc.mb_weight[index]
    enc.lambda_ = enc.frame_lambda * weight // 256
    enc.lambda_sad = <int>(enc.frame_lambda_sad * sqrt(weight / 256.0))
    enc.lambda_trellis = enc.frame_lambda_trellis * weight // 256
    enc.trellis_weight = TRELLIS_WEIGHT * 256 // weight


# --- frames --------------------------------------------------------------------------------

ctypedef struct FrameCounts:
    # What a frame's macroblocks add up to, for its header's probabilities.
    uint32_t skip, intra, inter, last, golden


cdef void finish_macroblock(MacroblockInfo* mb, const MacroblockCoding* best, TokenTally* tally,
                            const EntropyContext* probs, uint8_t* above, uint8_t* left,
                            int16_t* levels, uint8_t* eobs, FrameCounts* counts) noexcept nogil:
    """Keep a coded macroblock's levels (`levels`, `eobs`: its place in the record), tally its
    tokens, which also moves the token contexts on past it, and count it."""
    cdef int i, first
    mb.skip = coding_is_empty(mb, best)
    mb.skip_coded = mb.skip
    counts.skip += mb.skip
    tally_macroblock(tally, probs, mb, best.levels, best.eobs, above, left)
    memcpy(eobs, best.eobs, 25)
    # Only levels before a block's end are read; a luma block whose DC is in Y2 starts at
    # position 1, so an end of 1 means it has none.
    first = 1 if mb.y_mode != B_PRED and mb.y_mode != SPLITMV else 0
    for i in range(25):
        if best.eobs[i] > (first if i < 16 else 0):
            memcpy(levels + i * 16, best.levels + i * 16, 16 * sizeof(int16_t))
    if mb.ref_frame == INTRA_FRAME:
        counts.intra += 1
    else:
        counts.inter += 1
        if mb.ref_frame == LAST_FRAME:
            counts.last += 1
        elif mb.ref_frame == GOLDEN_FRAME:
            counts.golden += 1


cdef void estimate_reference_costs(Encoder* enc, const FrameCounts* so_far) noexcept nogil:
    """Reference-choice bit costs from the frame's choices so far (the header's probabilities
    come from the same counts), with a prior."""
    enc.prob_intra = probability_of_zero(so_far.intra + PRIOR_INTRA,
                                         so_far.intra + so_far.inter + PRIOR_MBS)
    enc.prob_last = probability_of_zero(so_far.last + PRIOR_LAST, so_far.inter + PRIOR_MBS)
    enc.prob_golden = probability_of_zero(so_far.golden + PRIOR_MBS // 2,
                                          so_far.inter - so_far.last + PRIOR_MBS)


cdef void add_counts(FrameCounts* total, const FrameCounts* part) noexcept nogil:
    total.skip += part.skip
    total.intra += part.intra
    total.inter += part.inter
    total.last += part.last
    total.golden += part.golden


ctypedef struct RowWorker:
    # A worker's own: the encoder (tune_macroblock sets its lambdas per macroblock, a revisit
    # its hint, reference costs and best pixels), the coding buffers and the token tally.
    Encoder enc
    MacroblockCoding trial
    MacroblockCoding best
    TokenTally tally


ctypedef struct FrameRows:
    # A frame's macroblocks by rows (rows.h): what every worker reads and writes.
    FrameContext* fc
    MacroblockInfo* mb_info           # the record's; the earlier record's has its geometry
    const MacroblockInfo* earlier     # a rebase keeps these decisions, a revisit starts there
    bint revisit
    int mb_info_stride
    int16_t* levels
    uint8_t* level_eobs
    const EntropyContext* probs
    int* progress                     # per row: macroblocks done
    FrameCounts* row_counts           # per row: what its macroblocks add up to
    int next_row
    RowWorker* workers


cdef void code_rows(void* arg, int worker) noexcept nogil:
    """Rebase or revisit rows taken in order until none is left; a macroblock waits for the
    one above and to its right (intra edges, vectors nearby, token contexts), so the result is
    that of one thread."""
    cdef FrameRows* job = <FrameRows*>arg
    cdef RowWorker* w = &job.workers[worker]
    cdef int mb_cols = job.fc.mb_cols, mb_row, mb_col, index, at
    cdef uint8_t left[9]
    cdef uint8_t* above
    cdef MacroblockInfo* mb
    cdef FrameCounts earlier_rows, so_far
    cdef FrameCounts* counts
    while True:
        mb_row = rows_take(&job.next_row)
        if mb_row >= job.fc.mb_rows:
            return
        memset(left, 0, 9)
        counts = &job.row_counts[mb_row]
        memset(&earlier_rows, 0, sizeof(FrameCounts))
        if job.revisit:
            # A revisit prices reference choices by the frame's choices so far, as a full
            # encode does, but in every row but the one just above (still being decided in a
            # wavefront): the same for any number of threads. Two threads seldom wait here.
            if mb_row >= 2:
                rows_wait(&job.progress[mb_row - 2], mb_cols)
            for index in range(mb_row - 1):
                add_counts(&earlier_rows, &job.row_counts[index])
        for mb_col in range(mb_cols):
            if mb_row > 0:
                rows_wait(&job.progress[mb_row - 1], min(mb_col + 2, mb_cols))
            index = mb_row * mb_cols + mb_col
            at = (mb_row + 1) * job.mb_info_stride + mb_col + 1
            mb = job.mb_info + at
            above = job.fc.above_ctx + mb_col * 9
            tune_macroblock(&w.enc, index)
            if job.revisit:
                so_far = earlier_rows
                add_counts(&so_far, counts)
                estimate_reference_costs(&w.enc, &so_far)
                w.enc.hint = job.earlier + at
                decide_macroblock(&w.enc, mb, mb_row, mb_col, above, left, &w.trial, &w.best)
                # The winner's coding is in `best`; its pixels were saved when it won.
                copy_macroblock_pixels(job.fc, mb_row, mb_col, w.enc.best_pixels, False)
            else:
                memcpy(mb, job.earlier + at, sizeof(MacroblockInfo))
                code_macroblock(&w.enc, mb, mb_row, mb_col, &w.best, above, left, False)
            finish_macroblock(mb, &w.best, &w.tally, job.probs, above, left,
                              job.levels + index * 400, job.level_eobs + index * 25, counts)
            rows_publish(&job.progress[mb_row], mb_col + 1)


cdef int code_macroblock_rows(Encoder* enc, FrameRecord rec, FrameRecord earlier, bint revisit,
                              TokenTally* tally, FrameCounts* counts, int threads) noexcept nogil:
    """Rebase (keep `earlier`'s decisions) or revisit (decide again from them) every
    macroblock of `rec` on up to `threads` threads; their tallies and counts are added to
    `tally` and `counts`. -1 if out of memory."""
    cdef FrameRows job
    cdef int w, i, n = max(1, min(threads, ROWS_MAX_THREADS, rec.mb_rows))
    cdef uint32_t* total = <uint32_t*>tally
    cdef uint32_t* part
    job.fc = enc.fc
    job.mb_info = rec.mb_info
    job.earlier = earlier.mb_info
    job.revisit = revisit
    job.mb_info_stride = rec.mb_info_stride
    job.levels = rec.levels
    job.level_eobs = rec.level_eobs
    job.probs = &rec.probs
    job.next_row = 0
    job.progress = <int*>calloc(rec.mb_rows, sizeof(int))
    job.row_counts = <FrameCounts*>calloc(rec.mb_rows, sizeof(FrameCounts))
    job.workers = <RowWorker*>calloc(n, sizeof(RowWorker))
    if job.progress == NULL or job.row_counts == NULL or job.workers == NULL:
        free(job.progress)
        free(job.row_counts)
        free(job.workers)
        return -1
    for w in range(n):
        memcpy(&job.workers[w].enc, enc, sizeof(Encoder))
    rows_run(code_rows, &job, n)
    for w in range(n):
        part = <uint32_t*>&job.workers[w].tally
        for i in range(<int>(sizeof(TokenTally) // sizeof(uint32_t))):
            total[i] += part[i]
    for i in range(rec.mb_rows):
        add_counts(counts, &job.row_counts[i])
    free(job.progress)
    free(job.row_counts)
    free(job.workers)
    return 0


cdef int probability_of_zero(uint32_t zeros, uint32_t total) noexcept nogil:
    if total == 0:
        return 128
    cdef int p = <int>((zeros * 256 + total // 2) // total)
    return 1 if p < 1 else (255 if p > 255 else p)


cdef void choose_coefficient_updates(FrameRecord rec, const EntropyContext* before,
                                     TokenCounts* counts) noexcept nogil:
    """Send a new probability where the bits it saves pay for sending it (section 13.4)."""
    cdef int i, j, k, t, p_new, p_old, u
    cdef uint32_t c0, c1
    cdef int64_t old_bits, new_bits, update_bits
    for i in range(4):
        for j in range(8):
            for k in range(3):
                for t in range(11):
                    c0 = counts[0][i][j][k][t][0]
                    c1 = counts[0][i][j][k][t][1]
                    p_old = before.coef[i][j][k][t]
                    rec.probs.coef[i][j][k][t] = p_old
                    rec.hdr.coef_update[i][j][k][t] = 0
                    if c0 + c1 == 0:
                        continue
                    p_new = probability_of_zero(c0, c0 + c1)
                    u = VP8_COEF_UPDATE_PROBS[i][j][k][t]
                    old_bits = c0 * <int64_t>bit_cost(0, p_old) + c1 * <int64_t>bit_cost(1, p_old)
                    new_bits = c0 * <int64_t>bit_cost(0, p_new) + c1 * <int64_t>bit_cost(1, p_new)
                    update_bits = <int64_t>bit_cost(1, u) + 8 * 256 - bit_cost(0, u)
                    if old_bits - new_bits > update_bits:
                        rec.probs.coef[i][j][k][t] = p_new
                        rec.hdr.coef_update[i][j][k][t] = 1


DEF MV_UPDATES = 1


cdef void count_mv_component(uint32_t counts[19][2], int value) noexcept nogil:
    """Tally the branches write_mv_component takes for `value` (quarter pel), by probability."""
    cdef int x = -value if value < 0 else value, i, n
    cdef int bits[16]
    cdef int nodes[16]
    if x < 8:
        counts[0][0] += 1
        n = tree_path(VP8_SMALL_MV_TREE, 14, x, nodes, bits)   # the short tree
        for i in range(n):
            counts[2 + (nodes[i] >> 1)][bits[i]] += 1
    else:
        counts[0][1] += 1
        for i in range(3):
            counts[9 + i][(x >> i) & 1] += 1
        for i in range(9, 3, -1):
            counts[9 + i][(x >> i) & 1] += 1
        if x & 0xFFF0:
            counts[9 + 3][(x >> 3) & 1] += 1
    if x:
        counts[1][value < 0] += 1


cdef void choose_mv_updates(FrameRecord rec, const EntropyContext* before) noexcept nogil:
    """Count the frame's coded vectors (NEWMV and SPLITMV's NEW4X4, against the macroblock's
    best reference vector) and send a new 7-bit vector probability wherever the bits it saves
    pay for the update (section 17.2)."""
    cdef uint32_t counts[2][19][2]
    cdef MotionVector near_mvs[4]
    cdef int near_counts[4]
    cdef int sign_bias[4]
    cdef int mb_row, mb_col, part, first, i, j, p_new, p_old, u
    cdef uint32_t c0, c1
    cdef int64_t old_bits, new_bits, update_bits
    cdef MacroblockInfo* mb
    memset(counts, 0, sizeof(counts))
    sign_bias[0] = sign_bias[1] = 0
    sign_bias[2] = rec.hdr.sign_bias_golden
    sign_bias[3] = rec.hdr.sign_bias_altref
    for mb_row in range(rec.mb_rows):
        for mb_col in range(rec.mb_cols):
            mb = rec.macroblock(mb_row, mb_col)
            if mb.ref_frame == INTRA_FRAME or (mb.y_mode != NEWMV and mb.y_mode != SPLITMV):
                continue
            find_near_mvs(mb, rec.mb_info_stride, sign_bias, mb.ref_frame, mb_row, mb_col,
                          rec.mb_rows, rec.mb_cols, near_mvs, near_counts)
            if mb.y_mode == NEWMV:
                count_mv_component(counts[0], (mb.mv.row - near_mvs[0].row) >> 1)
                count_mv_component(counts[1], (mb.mv.col - near_mvs[0].col) >> 1)
                continue
            for part in range(VP8_MBSPLIT_COUNT[mb.partitioning]):
                first = 0
                while VP8_MBSPLITS[mb.partitioning][first] != part:
                    first += 1
                if mb.b_modes[first] == NEW4X4:
                    count_mv_component(counts[0], (mb.b_mvs[first].row - near_mvs[0].row) >> 1)
                    count_mv_component(counts[1], (mb.b_mvs[first].col - near_mvs[0].col) >> 1)
    for i in range(2):
        for j in range(19):
            rec.hdr.mv_update[i][j] = 0
            rec.probs.mv[i][j] = before.mv[i][j]
            c0 = counts[i][j][0]
            c1 = counts[i][j][1]
            if c0 + c1 == 0:
                continue
            p_new = probability_of_zero(c0, c0 + c1) >> 1
            p_new = (p_new << 1) if p_new else 1
            p_old = before.mv[i][j]
            if p_new == p_old:
                continue
            u = VP8_MV_UPDATE_PROBS[i][j]
            old_bits = c0 * <int64_t>bit_cost(0, p_old) + c1 * <int64_t>bit_cost(1, p_old)
            new_bits = c0 * <int64_t>bit_cost(0, p_new) + c1 * <int64_t>bit_cost(1, p_new)
            update_bits = <int64_t>bit_cost(1, u) + 7 * 256 - bit_cost(0, u)
            if old_bits - new_bits > update_bits:
                rec.probs.mv[i][j] = p_new
                rec.hdr.mv_update[i][j] = 1


cdef int64_t plane_sse(const Plane* a, const Plane* b) noexcept nogil:
    cdef int64_t total = 0
    cdef int r, c, d, row
    cdef const uint8_t* pa
    cdef const uint8_t* pb
    for r in range(a.height):
        # 32-bit row sums (at most 16384 x 255^2) vectorize.
        pa = a.data + r * a.stride
        pb = b.data + r * b.stride
        row = 0
        for c in range(a.width):
            d = <int>pa[c] - <int>pb[c]
            row += d * d
        total += row
    return total


cdef _pad_plane(plane, int height, int width):
    plane = np.asarray(plane, dtype=np.uint8)
    if plane.shape[0] == height and plane.shape[1] == width:
        return np.ascontiguousarray(plane)       # already macroblock-aligned: no copy
    return np.ascontiguousarray(
        np.pad(plane, ((0, height - plane.shape[0]), (0, width - plane.shape[1])), mode="edge"))


def _check_quantizer(q_index):
    if isinstance(q_index, bool) or not isinstance(q_index, (int, np.integer)):
        raise TypeError(f"quantizer index must be an int in 0..127, not {q_index!r}")
    if not 0 <= q_index <= 127:
        raise ValueError(f"quantizer index {q_index} is outside 0..127")
    return int(q_index)


cdef int64_t _filtered_sse(FrameContext* fc, Encoder* enc, Picture recon, Picture saved,
                           int level):
    """Luma SSE against the source of the unfiltered reconstruction `saved` loop-filtered at
    `level` (filtered in `recon`, which is left filtered)."""
    cdef int64_t sse
    # Chroma is filtered too but not measured, and does not affect luma: only luma is restored
    # (the caller restores all planes at the end).
    np.copyto(recon.y, saved.y)
    fc.hdr.filter_level = level
    fc.hdr.sharpness = 0
    with nogil:
        loop_filter_frame(fc)
        sse = plane_sse(&fc.cur[0], &enc.src[0])
    return sse


cdef object _code_frame(DecoderState state, image, int q_index, FrameRecord original,
                        bint key_frame, bint refresh_all, bint want_state=False,
                        bint as_record=False, bint tune_ssim=False, FrameRecord hint=None,
                        bint trellis=True, double lambda_scale=1.0, bint hidden=False,
                        int threads=1):
    """Encode (original is None) or rebase (keep `original`'s decisions) one frame; returns its
    bytes, or with `want_state` (bytes, the state a decoder reaches after it). With `as_record`
    the coded FrameRecord stands in for the bytes: the state does not depend on them, so a
    caller can hand the state on first and write the frame (frame_writer.serialize) later.
    With `tune_ssim`, lambdas vary by macroblock with SSIM's weight of its errors. With `hint`
    (an encode of the same frame against other references), decisions are made again from
    its decisions, by a narrow search, keeping its loop-filter level (`revisit_record`)."""
    cdef FrameRecord rec = FrameRecord()
    cdef FrameContext* fc = <FrameContext*>calloc(1, sizeof(FrameContext))
    cdef Encoder* enc = <Encoder*>calloc(1, sizeof(Encoder))
    cdef MacroblockCoding* trial = <MacroblockCoding*>malloc(sizeof(MacroblockCoding))
    cdef MacroblockCoding* best = <MacroblockCoding*>malloc(sizeof(MacroblockCoding))
    cdef TokenCounts* counts = <TokenCounts*>calloc(1, sizeof(TokenCounts))
    cdef TokenTally* tally = <TokenTally*>calloc(1, sizeof(TokenTally))
    cdef EntropyContext before
    cdef Picture recon, source, saved
    cdef int width, height, mb_row, mb_col, index, level, best_level, i, centre, n_coarse, first
    cdef int64_t coarse[7]
    cdef int lf_ref[4]
    cdef int lf_mode[4]
    cdef int64_t curvature
    cdef int64_t sse, best_sse
    cdef MacroblockInfo* mb
    cdef uint8_t left[9]
    cdef FrameCounts frame_counts
    cdef bint out_of_memory = False
    cdef FrameRecord earlier       # the decisions a rebase keeps or a revisit starts from
    cdef uint32_t n_mbs
    cdef double step, factor
    cdef bint rebasing = original is not None
    memset(&frame_counts, 0, sizeof(frame_counts))
    try:
        if fc == NULL or enc == NULL or trial == NULL or best == NULL or counts == NULL \
                or tally == NULL:
            raise MemoryError()
        if not isinstance(image, Image):
            raise TypeError(f"expected an Image, not {type(image).__name__}")
        if key_frame:
            width, height = image.width, image.height
            if width > 16383 or height > 16383 or width * height > MAX_FRAME_AREA:
                raise FrameSizeError(
                    f"frame size {width}x{height} is beyond VP8's 16383x16383 or the limit of "
                    f"{MAX_FRAME_AREA} pixels")
        else:
            if not state.has_keyframe:
                raise CodecError("an interframe needs a state that has decoded a key frame")
            if not state.has_references:
                raise CodecError("the state is a parse context without reference pictures")
            width, height = state.width, state.height
            if (image.width, image.height) != (width, height):
                raise CodecError(
                    f"image is {image.width}x{image.height} but the state's frames are "
                    f"{width}x{height}")
        rec.mb_cols = (width + 15) >> 4
        rec.mb_rows = (height + 15) >> 4
        rec.mb_info_stride = rec.mb_cols + 1
        if rebasing and (original.mb_cols != rec.mb_cols or original.mb_rows != rec.mb_rows):
            raise CodecError("the frame being rebased is from a stream of another size")
        if hint is not None and (hint.mb_cols != rec.mb_cols or hint.mb_rows != rec.mb_rows):
            raise CodecError("the frame being revisited is from a stream of another size")
        n_mbs = rec.mb_cols * rec.mb_rows
        rec.mb_info = <MacroblockInfo*>calloc((rec.mb_rows + 1) * rec.mb_info_stride,
                                              sizeof(MacroblockInfo))
        # Every macroblock writes its levels and end positions: no need to zero them first.
        rec.levels = <int16_t*>malloc(n_mbs * 400 * sizeof(int16_t))
        rec.level_eobs = <uint8_t*>malloc(n_mbs * 25)
        fc.above_ctx = <uint8_t*>calloc(rec.mb_cols * 9 + 1, 1)
        if rec.mb_info == NULL or rec.levels == NULL or rec.level_eobs == NULL \
                or fc.above_ctx == NULL:
            raise MemoryError()

        # Frame tag and header.
        rec.tag.key_frame = key_frame
        rec.tag.show_frame = 1
        rec.tag.width = width
        rec.tag.height = height
        if key_frame:
            entropy_context_defaults(&before)
        else:
            before = state.probs
            rec.features = state.features
            rec.deltas = state.deltas
        rec.probs = before
        if rebasing:
            rec.tag.version = original.tag.version
            rec.tag.show_frame = original.tag.show_frame
            rec.hdr = original.hdr
            rec.hdr.ymode_update = rec.hdr.uvmode_update = 0
            memset(rec.hdr.mv_update, 0, sizeof(rec.hdr.mv_update))
            rec.hdr.q_index = q_index
            if rec.hdr.segmentation_enabled:
                # Resend everything segments need: the persistent values may differ.
                rec.features = original.features
                rec.hdr.update_segment_features = 1
                rec.hdr.update_segment_map = 1
                for i in range(4):
                    rec.hdr.segment_quant_present[i] = 1
                    rec.hdr.segment_lf_present[i] = 1
                for i in range(3):
                    rec.hdr.segment_prob_present[i] = 1
            if rec.hdr.lf_deltas_enabled:
                rec.hdr.lf_delta_update = 0
                for i in range(4):
                    if original.deltas.ref[i] != rec.deltas.ref[i] \
                            or original.deltas.mode[i] != rec.deltas.mode[i]:
                        rec.hdr.lf_delta_update = 1
                if rec.hdr.lf_delta_update:
                    rec.deltas = original.deltas
                    for i in range(4):
                        rec.hdr.ref_delta_present[i] = 1
                        rec.hdr.mode_delta_present[i] = 1
        else:
            rec.hdr.q_index = q_index
            rec.hdr.refresh_entropy = 1
            rec.hdr.refresh_last = 1
            rec.hdr.refresh_golden = rec.hdr.refresh_altref = 1 if (key_frame or refresh_all) else 0
            if hidden:
                rec.tag.show_frame = 0
                rec.hdr.refresh_last = 0
                rec.hdr.refresh_golden = rec.hdr.refresh_altref = 1
            # Loop-filter deltas by reference and mode (sent when the state's differ, and on
            # every key frame): static zero-vector macroblocks are filtered less, so that their
            # edges are not smoothed again in every frame.
            rec.hdr.lf_deltas_enabled = 1
            rec.hdr.lf_delta_update = key_frame
            for i in range(4):
                lf_ref[i] = LF_REF_DELTAS[i]
                lf_mode[i] = LF_MODE_DELTAS[i]
            for i in range(4):
                if rec.deltas.ref[i] != lf_ref[i] or rec.deltas.mode[i] != lf_mode[i]:
                    rec.hdr.lf_delta_update = 1
            if rec.hdr.lf_delta_update:
                for i in range(4):
                    rec.deltas.ref[i] = lf_ref[i]
                    rec.deltas.mode[i] = lf_mode[i]
                    rec.hdr.ref_delta_present[i] = 1
                    rec.hdr.mode_delta_present[i] = 1
        rec.hdr.mb_no_coeff_skip = 1

        # Working context: reconstruction target, references, dequantizers, costs.
        recon = Picture.allocate(width, height)
        recon.planes(fc.cur)
        mb_w = rec.mb_cols * 16
        mb_h = rec.mb_rows * 16
        source = Picture(_pad_plane(image.y, mb_h, mb_w), _pad_plane(image.u, mb_h // 2, mb_w // 2),
                         _pad_plane(image.v, mb_h // 2, mb_w // 2), width, height)
        source.planes(enc.src)
        if not key_frame:
            state.reference_planes(fc)
        rec.describe(fc)
        build_dequant_table(fc)
        enc.fc = fc
        enc.key_frame = key_frame
        enc.prune = 1
        # Not when rebasing: the chain is serial, and there the trellis costs 40 % more time
        # for 0.4 % fewer bits (bench/excamera.py, Sintel; libvpx's own chunks re-coded on
        # the states they were made against: 8.3 % more bytes than libvpx with it, 8.4 %
        # without).
        # Nor when revisiting, which is in the serial chain too.
        enc.trellis = TRELLIS and trellis and not rebasing and hint is None
        enc.hint = NULL
        # Y2 (no trellis): a wider dead zone pays, in a full encode (-3 % bits at equal PSNR,
        # bench/encode.py) as in a rebase (libvpx's chunks re-coded on their own states: 8.4 %
        # more bytes than libvpx at its dead zone of 110/100, 0.2 % at this one, 0.05 dB lower;
        # ExCamera[6,16] at equal SSIM: BBB +5.0 -> +3.8 %, Sintel +16.5 -> +15.7 %).
        enc.y2_rounding[0], enc.y2_rounding[1] = (
            SEGMENTED_REBASE_Y2_ROUNDING if rebasing and rec.hdr.segmentation_enabled
            else Y2_ROUNDING)
        enc.ac_rounding, enc.dc_rounding = AC_ROUNDING, DC_ROUNDING
        enc.intra_penalty = INTRA_PENALTY
        enc.split_min_bits = SPLIT_MIN_BITS
        enc.need_rate = not rebasing      # rates only inform decisions, which rebase keeps
        step = fc.dequant[0][0][1]
        factor = (KEY_LAMBDA_FACTOR if key_frame else LAMBDA_FACTOR) * lambda_scale
        enc.lambda_ = <int64_t>(256 * factor * step * step)
        enc.lambda_sad = <int>(256 * sqrt(factor * SAD_LAMBDA_SCALE) * step)
        factor = KEY_TRELLIS_LAMBDA_FACTOR if key_frame else TRELLIS_LAMBDA_FACTOR
        enc.lambda_trellis = <int64_t>(256 * factor * step * step)
        enc.trellis_weight = TRELLIS_WEIGHT
        enc.frame_lambda, enc.frame_lambda_trellis = enc.lambda_, enc.lambda_trellis
        enc.frame_lambda_sad = enc.lambda_sad
        if tune_ssim:
            enc.mb_weight = <uint16_t*>malloc(n_mbs * sizeof(uint16_t))
            if enc.mb_weight == NULL:
                raise MemoryError()
            activity_weights(enc, rec.mb_rows, rec.mb_cols)
        enc.prob_intra = 32
        enc.prob_last = 220
        enc.prob_golden = 128
        fill_token_costs(enc, &before)
        fill_mv_costs(enc, &before)

        earlier = original if rebasing else hint
        with nogil:
            if earlier is not None:
                out_of_memory = code_macroblock_rows(enc, rec, earlier, not rebasing, tally,
                                                     &frame_counts, threads) < 0
            else:
                for mb_row in range(rec.mb_rows):
                    memset(left, 0, 9)
                    for mb_col in range(rec.mb_cols):
                        mb = rec.macroblock(mb_row, mb_col)
                        index = mb_row * rec.mb_cols + mb_col
                        tune_macroblock(enc, index)
                        if not key_frame:
                            estimate_reference_costs(enc, &frame_counts)
                        decide_macroblock(enc, mb, mb_row, mb_col, fc.above_ctx + mb_col * 9,
                                          left, trial, best)
                        # The winner's coding is in `best`; its pixels were saved when it won
                        # (coding it again with its modes gives exactly these).
                        copy_macroblock_pixels(fc, mb_row, mb_col, enc.best_pixels, False)
                        finish_macroblock(mb, best, tally, &rec.probs, fc.above_ctx + mb_col * 9,
                                          left, rec.levels + index * 400,
                                          rec.level_eobs + index * 25, &frame_counts)
        if out_of_memory:
            raise MemoryError()
        with nogil:
            tree_counts(tally, counts)
            choose_coefficient_updates(rec, &before, counts)
            if not key_frame and MV_UPDATES:
                choose_mv_updates(rec, &before)

        rec.hdr.prob_skip_false = probability_of_zero(n_mbs - frame_counts.skip, n_mbs)
        if not key_frame:
            rec.hdr.prob_intra = probability_of_zero(frame_counts.intra, n_mbs)
            rec.hdr.prob_last = probability_of_zero(frame_counts.last, frame_counts.inter)
            rec.hdr.prob_golden = probability_of_zero(frame_counts.golden,
                                                      frame_counts.inter - frame_counts.last)
        if rec.hdr.segmentation_enabled and rebasing:
            _segment_tree_probs(rec)

        if hint is not None:
            # The level search would filter the frame up to ten times more in the serial chain;
            # the level chosen against references this close serves as well.
            rec.hdr.filter_level = hint.hdr.filter_level
        elif not rebasing:
            # Loop-filter level: the one whose filtered picture is closest to the source; a
            # coarse pass in steps of 8, then the minimum of the parabola through the best and
            # its coarse neighbours, and the levels 2 either side of it.
            saved = Picture(recon.y.copy(), recon.u.copy(), recon.v.copy(), width, height)
            n_coarse = 0
            for level in range(0, 49, 8):
                if level > 4 * (q_index // 8 + 2):
                    break
                coarse[n_coarse] = _filtered_sse(fc, enc, recon, saved, level)
                n_coarse += 1
            i = 0
            for index in range(1, n_coarse):
                if coarse[index] < coarse[i]:
                    i = index
            best_level = 8 * i
            best_sse = coarse[i]
            if 0 < i < n_coarse - 1:
                # Vertex of the parabola through (-8, a), (0, b), (8, c): 4 (a - c) / (a - 2b + c).
                curvature = coarse[i - 1] - 2 * coarse[i] + coarse[i + 1]
                centre = best_level + (<int>lround(4.0 * (coarse[i - 1] - coarse[i + 1])
                                                   / curvature) if curvature > 0 else 0)
            else:
                centre = best_level + (4 if i == n_coarse - 1 and i > 0 else 0)
            for level in (centre - 2, centre, centre + 2):
                if level < 0 or level > 63 or level % 8 == 0 and level <= 8 * (n_coarse - 1):
                    continue
                sse = _filtered_sse(fc, enc, recon, saved, level)
                if sse < best_sse:
                    best_sse = sse
                    best_level = level
            rec.hdr.filter_level = best_level
            np.copyto(recon.y, saved.y)
            np.copyto(recon.u, saved.u)
            np.copyto(recon.v, saved.v)
        frame = rec if as_record else write_frame(rec)
        if not want_state:
            return frame
        # The reconstruction is already what a decoder reconstructs; filter it as the header
        # says and apply the same state update as the decoder (decoder.next_state).
        fc.hdr = rec.hdr
        fc.features = rec.features
        fc.deltas = rec.deltas
        with nogil:
            loop_filter_frame(fc)
        recon.freeze()
        return frame, next_state(state, &rec.tag, &rec.hdr, &rec.probs, &rec.features,
                                 &rec.deltas, _segment_map_after(state, rec), recon, width,
                                 height)
    finally:
        free(fc.above_ctx)
        free(fc)
        if enc != NULL:
            free(enc.mb_weight)
        free(enc)
        free(trial)
        free(best)
        free(counts)
        free(tally)


cdef object _segment_map_after(DecoderState state, FrameRecord rec):
    """The persistent segment map after `rec`, as decoding it leaves it."""
    cdef int r, c
    if not (rec.tag.key_frame or rec.hdr.update_segment_map):
        return state.segment_map
    if rec.tag.key_frame:
        segment_map = np.zeros((rec.mb_rows, rec.mb_cols), np.uint8)
    else:
        segment_map = np.array(state.segment_map, dtype=np.uint8, copy=True)
    if rec.hdr.update_segment_map:
        for r in range(rec.mb_rows):
            for c in range(rec.mb_cols):
                segment_map[r, c] = rec.macroblock(r, c).segment_id
    segment_map.flags.writeable = False
    return segment_map


cdef void _segment_tree_probs(FrameRecord rec):
    cdef int counts[4]
    cdef int r, c
    counts[0] = counts[1] = counts[2] = counts[3] = 0
    for r in range(rec.mb_rows):
        for c in range(rec.mb_cols):
            counts[rec.macroblock(r, c).segment_id & 3] += 1
    rec.hdr.segment_tree_probs[0] = probability_of_zero(counts[0] + counts[1],
                                                        counts[0] + counts[1] + counts[2]
                                                        + counts[3])
    rec.hdr.segment_tree_probs[1] = probability_of_zero(counts[0], counts[0] + counts[1])
    rec.hdr.segment_tree_probs[2] = probability_of_zero(counts[2], counts[2] + counts[3])


# --- public API ------------------------------------------------------------------------------

def _with_quality(code, DecoderState state, image, quality, bint with_state):
    """Run `code(q_index, with_state, final)`; for an SSIM target (a float in (0, 1)), binary-search the
    largest quantizer index whose decoded picture still reaches the target (SSIM measured for
    real)."""
    if isinstance(quality, float):
        if not 0.0 < quality < 1.0:
            raise ValueError(f"SSIM target {quality} is outside (0, 1)")
        start = state if state is not None else DecoderState.initial()
        low, high = 0, 127
        best = None
        while low <= high:
            middle = (low + high) // 2
            frame = code(middle, False, False)   # a probe: always bytes
            _, _, record = decode_record(start, frame)
            if ssim(record.image, image) >= quality:
                best = middle
                low = middle + 1
            else:
                high = middle - 1
        return code(best if best is not None else 0, with_state, True)
    return code(_check_quantizer(quality), with_state, True)


def _tune_ssim(tune) -> bool:
    if tune not in TUNINGS:
        raise ValueError(f"tune must be one of {', '.join(TUNINGS)}, not {tune!r}")
    return tune == "ssim"


def encode_keyframe(image, quality, *, with_state=False, tune="psnr"):
    """A key frame of `image`. `quality`: a quantizer index (int, 0 best .. 127 smallest) or
    an SSIM target (float in (0, 1)) met with the largest quantizer that reaches it. With
    `with_state`, returns (frame, the state after it) without decoding the frame again.
    `tune`: "psnr" decides by squared error, "ssim" weights each macroblock's error by how
    much SSIM counts it (TUNINGS)."""
    cdef bint ssim = _tune_ssim(tune)
    return _with_quality(
        lambda q, s, final: _code_frame(None, image, q, None, True, False, s, False, ssim),
        None, image, quality, bool(with_state))


def encode(DecoderState state not None, image, quality, *, refresh_all=False,
           with_state=False, as_record=False, tune="psnr", trellis=True, lambda_scale=1.0,
           hidden=False):
    """An interframe coding `image` against `state`'s references (`quality`, `with_state`
    and `tune` as for `encode_keyframe`).

    With `refresh_all`, the frame replaces all three references, as a key frame would (this is
    how a chunk's first frame continues the previous chunk). With `as_record`, the coded
    FrameRecord comes back in place of the bytes, for `frame_writer.serialize` to write later.
    `trellis=False` quantizes greedily (for a frame whose decisions will be revisited anyway:
    the trellis is 40 % of a boosted frame's encode). `lambda_scale` multiplies the
    rate-distortion multiplier of the decisions (not the trellis's), for frames whose
    decisions must serve references other than the ones they were made against. With
    `hidden`, the frame is not shown and refreshes golden and alt-ref, not last: an alt-ref
    frame, of a picture later frames predict from (ExCamera's chunk anchors, chunk_rebase).
    """
    if not 0.0 < lambda_scale <= 16.0:
        raise ValueError(f"lambda_scale must be in (0, 16], not {lambda_scale!r}")
    if hidden and refresh_all:
        raise ValueError("a hidden frame refreshes golden and alt-ref, not all three")
    cdef bint ssim = _tune_ssim(tune)
    return _with_quality(
        lambda q, s, final: _code_frame(state, image, q, None, False, bool(refresh_all), s,
                                        bool(as_record) and final, ssim, None, bool(trellis),
                                        float(lambda_scale), bool(hidden)),
        state,
        image, quality, bool(with_state))


def rebase(DecoderState state not None, image, frame, DecoderState original_state not None,
           quality=None) -> bytes:
    """Re-encode interframe `frame`, made against `original_state`, so it applies to `state`.

    Modes, vectors, references, segments and header flags are kept (coefficient and vector
    probability updates are chosen again for the new state); prediction is redone from
    `state`'s references and the residual is coded against `image` (the frame's target: the
    source picture, or for a hidden frame what the original stream decoded it to). The
    quantizer stays the frame's own unless `quality` gives another index.
    """
    _, _, record = decode_record(original_state, frame)
    return rebase_record(state, image, record, quality)


def rebase_record(DecoderState state not None, image, FrameRecord record not None,
                  quality=None, *, with_state=False, as_record=False, tune="psnr", threads=1):
    """`rebase` given the original frame already parsed into a FrameRecord; with `with_state`,
    returns (frame, the state after it). With `as_record`, the coded FrameRecord comes back in
    place of the bytes, for `frame_writer.serialize` to write later. `tune` as for `encode`
    (a rebase decides only which trailing levels to drop). `threads` (1 to 8) code macroblock
    rows in a wavefront, for the serial chain; the bytes are the same for any number."""
    if record.tag.key_frame:
        raise CodecError("a key frame does not depend on a state; rebase only interframes")
    q_index = record.hdr.q_index if quality is None else _check_quantizer(quality)
    return _code_frame(state, image, q_index, record, False, False, bool(with_state),
                       bool(as_record), _tune_ssim(tune), None, True, 1.0, False,
                       _check_threads(threads))


def _check_threads(threads) -> int:
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 8:
        raise ValueError(f"threads must be an integer from 1 to 8, not {threads!r}")
    return threads


def revisit_record(DecoderState state not None, image, FrameRecord record not None, *,
                   with_state=False, as_record=False, tune="psnr", threads=1):
    """Encode `image` against `state` again, deciding every macroblock anew from `record`'s
    decisions, which an encode of the same frame made against other references (ExCamera's
    chunk-start frame, encoded in parallel against an approximate state, revisited in the
    serial chain against the true one). Same quantizer, reference refreshes and loop-filter
    level as `record`; vectors are searched one pixel around the record's and the census
    vectors, SPLITMV only where the record chose it. About half a full `encode`'s time and
    six times a `rebase_record`'s (a boosted 720p frame: 80, 170 and 13 ms); it recovers what
    decisions made against other references lose (bench/REPORT.md). A hidden frame that
    refreshes golden and alt-ref (`encode(hidden=True)`) stays one. The reference-choice bit
    costs come from `record`'s header, so `threads` (1 to 8) can decide macroblock rows in a
    wavefront, with the same bytes for any number. `with_state`, `as_record` and `tune` as
    for `encode`."""
    if record.tag.key_frame:
        raise CodecError("a key frame does not depend on a state; revisit only interframes")
    cdef bint refresh_all = record.hdr.refresh_golden and record.hdr.refresh_altref
    cdef bint hidden = (not record.tag.show_frame and refresh_all
                        and not record.hdr.refresh_last)
    if not hidden and not refresh_all and (record.hdr.refresh_golden
                                           or record.hdr.refresh_altref
                                           or not record.hdr.refresh_last):
        raise CodecError("revisit only frames that refresh the last reference or all three, "
                         "or hidden frames that refresh golden and alt-ref")
    if not hidden and not record.tag.show_frame:
        raise CodecError("revisit only shown frames that refresh the last reference or all three, "
                         "or hidden frames that refresh golden and alt-ref")
    return _code_frame(state, image, record.hdr.q_index, None, False, refresh_all and not hidden,
                       bool(with_state), bool(as_record), _tune_ssim(tune), record, True, 1.0,
                       hidden, _check_threads(threads))


# --- kernel access for tests ---------------------------------------------------------------

def _uint8_pair(a, b, int rows, int cols):
    """Two C-contiguous uint8 arrays of shape (rows, cols), for the kernel test hooks."""
    x, y = np.ascontiguousarray(a, np.uint8), np.ascontiguousarray(b, np.uint8)
    if x.shape != (rows, cols) or y.shape != (rows, cols):
        raise ValueError(f"expected two {rows}x{cols} uint8 arrays")
    return x, y


def _kernel_fdct(src, pred):
    """Test hook: coefficients of the two 4x4 blocks of an 8x4 residual (`src` - `pred`, uint8
    arrays of shape (4, 8)) from the SIMD pair kernel, the SIMD single-block kernel and the
    portable definition, as int16 arrays of shape (3, 2, 16)."""
    src, pred = _uint8_pair(src, pred, 4, 8)
    cdef const uint8_t[:, ::1] s = src
    cdef const uint8_t[:, ::1] p = pred
    out = np.zeros((3, 2, 16), np.int16)
    cdef int16_t[:, :, ::1] o = out
    edsp_fdct_pair(&s[0, 0], 8, &p[0, 0], 8, &o[0, 0, 0], &o[0, 1, 0])
    edsp_fdct4x4(&s[0, 0], 8, &p[0, 0], 8, &o[1, 0, 0])
    edsp_fdct4x4(&s[0, 4], 8, &p[0, 4], 8, &o[1, 1, 0])
    edsp_fdct4x4_c(&s[0, 0], 8, &p[0, 0], 8, &o[2, 0, 0])
    edsp_fdct4x4_c(&s[0, 4], 8, &p[0, 4], 8, &o[2, 1, 0])
    return out


def _kernel_block_stats(src, pred):
    """Test hook: per 4x4 block of a 16-wide strip (`src` - `pred`, uint8 arrays of shape
    (4, 16)): SAD and residual sum from the SIMD kernel over 4 blocks and over 2, and from the
    portable definition (int arrays of shape (3, 2, 4); the 2-block row fills its first two),
    with the coefficient bound and the DC each SAD and sum give (arrays of 4)."""
    src, pred = _uint8_pair(src, pred, 4, 16)
    cdef const uint8_t[:, ::1] s = src
    cdef const uint8_t[:, ::1] p = pred
    out = np.zeros((3, 2, 4), np.intc)
    cdef int[:, :, ::1] o = out
    edsp_block_sad_sum(&s[0, 0], 16, &p[0, 0], 16, 4, &o[0, 0, 0], &o[0, 1, 0])
    edsp_block_sad_sum(&s[0, 0], 16, &p[0, 0], 16, 2, &o[1, 0, 0], &o[1, 1, 0])
    edsp_block_sad_sum_c(&s[0, 0], 16, &p[0, 0], 16, 4, &o[2, 0, 0], &o[2, 1, 0])
    bounds = np.array([edsp_coefficient_bound(o[2, 0, b]) for b in range(4)])
    dcs = np.array([edsp_dc_from_sum(o[2, 1, b]) for b in range(4)])
    return out, bounds, dcs


def _kernel_sad(a, b):
    """Test hook: SAD of two 16x16 uint8 blocks and of their top-left 8x8 corners, from the
    SIMD kernel and the portable definition: ((simd 16, portable 16), (simd 8, portable 8))."""
    a, b = _uint8_pair(a, b, 16, 16)
    cdef const uint8_t[:, ::1] x = a
    cdef const uint8_t[:, ::1] y = b
    return tuple((edsp_sad(&x[0, 0], 16, &y[0, 0], 16, size),
                  edsp_sad_c(&x[0, 0], 16, &y[0, 0], 16, size)) for size in (16, 8))


def _kernel_idct(coeffs, pred):
    """Test hook: a 4x4 prediction (uint8) plus the inverse DCT of 16 raster-order
    coefficients (int16), by the SIMD kernel and by the portable definition."""
    cdef const int16_t[::1] c = np.ascontiguousarray(coeffs, np.int16).reshape(16)
    simd = np.array(pred, np.uint8).reshape(4, 4).copy()
    portable = simd.copy()
    cdef uint8_t[:, ::1] a = simd
    cdef uint8_t[:, ::1] b = portable
    dsp_idct_add(&c[0], &a[0, 0], 4)
    dsp_idct_add_c(&c[0], &b[0, 0], 4)
    return simd, portable


def _kernel_quantize(coeffs, int first, int dc_q, int ac_q, int dc_round, int ac_round):
    """Test hook: (levels, dequantized, eob) of one raster-order block from the SIMD kernel and
    from the portable definition."""
    cdef const int16_t[::1] c = np.ascontiguousarray(coeffs, np.int16)
    if c.shape[0] != 16 or not (2 <= dc_q <= 32767 and 2 <= ac_q <= 32767):
        raise ValueError("16 coefficients and quantizers of at least 2")
    results = []
    cdef int16_t[::1] levels
    cdef int16_t[::1] dequantized
    cdef int eob
    for portable in (False, True):
        levels_array = np.zeros(16, np.int16)
        dequantized_array = np.zeros(16, np.int16)
        levels = levels_array
        dequantized = dequantized_array
        if portable:
            eob = edsp_quantize_c(&c[0], &levels[0], &dequantized[0], first, dc_q, ac_q,
                                  dc_round, ac_round)
        else:
            eob = edsp_quantize(&c[0], &levels[0], &dequantized[0], first, dc_q, ac_q,
                                dc_round, ac_round)
        results.append((levels_array, dequantized_array, eob))
    return results


def _trellis_check(residuals, int q_index, int block_type):
    """Test hook: each 4x4 residual block (rows of 16, raster order) is transformed and coded at
    `q_index` with the default probabilities, once by rounding and greedy pruning and once by
    the trellis. Returns an int64 array of rows (rounded cost, trellis cost, trellis levels
    consistent with its end-of-block and dequantized values: 1 or 0), costs as the trellis
    counts them: coefficient-domain distortion x TRELLIS_WEIGHT + lambda x token bits."""
    cdef cnp.int16_t[:, ::1] blocks = np.ascontiguousarray(residuals, dtype=np.int16)
    cdef Encoder* enc = <Encoder*>calloc(1, sizeof(Encoder))
    cdef FrameContext* fc = <FrameContext*>calloc(1, sizeof(FrameContext))
    cdef EntropyContext probs
    cdef int16_t coeffs[16]
    cdef int16_t levels[16]
    cdef int16_t dequant[16]
    cdef int b, k, n, i, eob, first = 1 if block_type == 0 else 0, dc_q, ac_q, kind, ok
    cdef double step
    out = np.zeros((blocks.shape[0], 3), np.int64)
    cdef cnp.int64_t[:, ::1] result = out
    try:
        if enc == NULL or fc == NULL:
            raise MemoryError()
        fc.hdr.q_index = q_index
        build_dequant_table(fc)
        kind = 2 if block_type == 2 else 0
        dc_q = fc.dequant[0][kind][0]
        ac_q = fc.dequant[0][kind][1]
        step = fc.dequant[0][0][1]
        enc.fc = fc
        enc.prune = 1
        enc.lambda_ = <int64_t>(256 * LAMBDA_FACTOR * step * step)
        enc.lambda_trellis = enc.lambda_
        enc.trellis_weight = TRELLIS_WEIGHT
        entropy_context_defaults(&probs)
        fill_token_costs(enc, &probs)
        for b in range(blocks.shape[0]):
            edsp_fdct4x4_residual(&blocks[b, 0], coeffs)
            for k in range(2):
                memset(dequant, 0, sizeof(dequant))
                memset(levels, 0, sizeof(levels))
                eob = quantize_block(coeffs, levels, dequant, first, dc_q, ac_q,
                                     0 if first else 96, 85)
                enc.trellis = k
                eob = refine_block(enc, block_type, 0, first, coeffs, levels, dequant, eob,
                                   dc_q, ac_q)
                result[b, k] = _block_rd(enc, block_type, first, coeffs, levels, dequant, eob)
            ok = 1
            for n in range(first, 16):
                i = VP8_ZIGZAG[n]
                if dequant[i] != levels[i] * (dc_q if n == 0 else ac_q):
                    ok = 0
                if (levels[i] != 0 and n >= eob) or (n == eob - 1 and levels[i] == 0):
                    ok = 0
            result[b, 2] = ok
        return out
    finally:
        free(enc)
        free(fc)


cdef int64_t _block_rd(Encoder* enc, int block_type, int first, const int16_t* coeffs,
                       const int16_t* levels, const int16_t* dequant, int eob) noexcept nogil:
    """A block's rate-distortion cost as the trellis counts it (context 0)."""
    cdef int n, i, v, token, context = 0
    cdef int64_t total = 0, err
    for n in range(first, 16):
        i = VP8_ZIGZAG[n]
        err = coeffs[i] - dequant[i]
        total += err * err * TRELLIS_WEIGHT
    if eob == first:
        return total + enc.rd_token_cost[block_type][VP8_COEF_BANDS[first]][0][11]
    for n in range(first, eob):
        v = levels[VP8_ZIGZAG[n]]
        token = token_class(v if v >= 0 else -v)
        if n > first and context == 0:
            total += enc.rd_token_cost_no_eob[block_type][VP8_COEF_BANDS[n]][0][token]
        else:
            total += enc.rd_token_cost[block_type][VP8_COEF_BANDS[n]][context][token]
        context = 0 if token == 0 else (1 if token == 1 else 2)
    if eob < 16:
        total += enc.rd_token_cost[block_type][VP8_COEF_BANDS[eob]][context][11]
    return total

