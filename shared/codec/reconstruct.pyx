"""Macroblock reconstruction: prediction plus the inverse-transformed residual.

Intra prediction reads the current frame before loop filtering (the decoder filters after the
whole frame is reconstructed). Frame-edge rules (section 12.2 and libvpx): above the frame is 127,
left of it 129, the corner above-left is 127 on the top row and 129 elsewhere on the left column;
the 4 pixels above-right of the rightmost macroblock repeat the last pixel of the row above.
"""

from libc.stdint cimport int16_t, uint8_t
from libc.string cimport memcpy, memset

from .frame_context cimport FrameContext, MacroblockInfo, MotionVector, Plane
from .modes cimport mv_equal
from .predict cimport predict_block_intra, predict_inter, predict_subblock
from .tables cimport B_PRED, INTRA_FRAME, SPLITMV
from .transform cimport dc_only_add, idct_add, inverse_walsh


cdef inline void add_residual(const int16_t* coeffs, int eob, bint dc_from_y2, uint8_t* dst,
                              int stride) noexcept nogil:
    # A block with no AC coefficients needs only its DC added (same result as the full IDCT).
    if eob > 1:
        idct_add(coeffs, dst, stride)
    elif eob == 1 or dc_from_y2:
        if coeffs[0]:
            dc_only_add(coeffs[0], dst, stride)


cdef void build_edges(const Plane* plane, int x, int y, int size, bint last_column,
                      uint8_t* above, uint8_t* left) noexcept nogil:
    """Edges of the size x size block at (x, y): above[-1] corner, above[0..size+3], left."""
    cdef const uint8_t* row
    cdef int i
    if y == 0:
        memset(above - 1, 127, size + 5)
    else:
        row = plane.data + (y - 1) * plane.stride
        memcpy(above, row + x, size)
        above[-1] = row[x - 1] if x > 0 else 129
        if size == 16:
            if last_column:
                memset(above + 16, row[x + 15], 4)
            else:
                memcpy(above + 16, row + x + 16, 4)
    if x == 0:
        memset(left, 129, size)
    else:
        row = plane.data + y * plane.stride + x - 1
        for i in range(size):
            left[i] = row[i * plane.stride]


cdef void subblock_edges(uint8_t* block, int stride, int b, const uint8_t* mb_above,
                         const uint8_t* mb_left, uint8_t* A, uint8_t* left) noexcept nogil:
    """Edges of luma subblock b at `block`: A[-1] corner, A[0..7] above and above-right."""
    cdef int r = b >> 2, c = b & 3, i
    if r == 0:
        memcpy(A - 1, mb_above + 4 * c - 1, 9)
    else:
        memcpy(A, block - stride, 4)
        A[-1] = block[-stride - 1] if c > 0 else mb_left[4 * r - 1]
        # Right column: above-right comes from the macroblock row above (libvpx).
        if c < 3:
            memcpy(A + 4, block - stride + 4, 4)
        else:
            memcpy(A + 4, mb_above + 16, 4)
    if c == 0:
        memcpy(left, mb_left + 4 * r, 4)
    else:
        for i in range(4):
            left[i] = block[i * stride - 1]


cdef void reconstruct_subblocks(FrameContext* fc, MacroblockInfo* mb, uint8_t* dst, int stride,
                                const uint8_t* mb_above, const uint8_t* mb_left) noexcept nogil:
    """B_PRED: predict and reconstruct each 4x4 in turn, later ones seeing earlier ones."""
    cdef uint8_t edge[13]               # corner, 4 above, 4 above-right, padding
    cdef uint8_t left[4]
    cdef uint8_t* A = &edge[1]
    cdef uint8_t* block
    cdef int b
    for b in range(16):
        block = dst + 4 * (b >> 2) * stride + 4 * (b & 3)
        subblock_edges(block, stride, b, mb_above, mb_left, A, left)
        predict_subblock(block, stride, mb.b_modes[b], A, left)
        add_residual(fc.coeffs + b * 16, fc.eobs[b], False, block, stride)


cdef void reconstruct_intra(FrameContext* fc, MacroblockInfo* mb, int mb_row,
                            int mb_col) noexcept nogil:
    cdef uint8_t above_buf[22]
    cdef uint8_t left[16]
    cdef uint8_t* above = &above_buf[1]
    cdef Plane* plane
    cdef uint8_t* dst
    cdef int p, b, size, x, y
    cdef bint last_column = mb_col == fc.mb_cols - 1
    plane = &fc.cur[0]
    x = mb_col * 16
    y = mb_row * 16
    dst = plane.data + y * plane.stride + x
    build_edges(plane, x, y, 16, last_column, above, left)
    if mb.y_mode == B_PRED:
        reconstruct_subblocks(fc, mb, dst, plane.stride, above, left)
    else:
        predict_block_intra(dst, plane.stride, 16, mb.y_mode, above, left, mb_row > 0, mb_col > 0)
        for b in range(16):
            add_residual(fc.coeffs + b * 16, fc.eobs[b], True,
                         dst + 4 * (b >> 2) * plane.stride + 4 * (b & 3), plane.stride)
    for p in range(1, 3):
        plane = &fc.cur[p]
        x = mb_col * 8
        y = mb_row * 8
        dst = plane.data + y * plane.stride + x
        build_edges(plane, x, y, 8, last_column, above, left)
        predict_block_intra(dst, plane.stride, 8, mb.uv_mode, above, left, mb_row > 0,
                            mb_col > 0)
        for b in range(4):
            add_residual(fc.coeffs + (12 + 4 * p + b) * 16, fc.eobs[12 + 4 * p + b], False,
                         dst + 4 * (b >> 1) * plane.stride + 4 * (b & 1), plane.stride)


cdef inline int chroma_mv_component(int luma) noexcept nogil:
    # Half the luma vector, rounded away from zero (libvpx).
    luma += 1 if luma >= 0 else -1
    return luma / 2


cdef inline int split_chroma_mv_component(int total) noexcept nogil:
    # Average of four luma vectors, halved: total / 8 rounded half away from zero.
    total += 4 if total >= 0 else -4
    return total / 8


cdef void predict_inter_macroblock(FrameContext* fc, const MacroblockInfo* mb, int mb_row,
                                   int mb_col) noexcept nogil:
    """Inter prediction of all three planes of a macroblock into fc.cur (section 18): one
    vector for 16x16 luma and 8x8 chroma, or per 4x4 for SPLITMV (chroma averaging 2x2)."""
    cdef const Plane* ref = fc.refs[mb.ref_frame]
    cdef Plane* plane = &fc.cur[0]
    cdef int x = mb_col * 16, y = mb_row * 16, b, i, j, k, p, q, mv_row, mv_col
    cdef int full_pixel_mask = ~7 if fc.full_pixel else ~0
    cdef uint8_t* dst = plane.data + y * plane.stride + x
    cdef const MotionVector* mvs = mb.b_mvs
    if mb.y_mode != SPLITMV:
        predict_inter(&ref[0], x, y, 16, 16, mb.mv.row, mb.mv.col, dst, plane.stride, fc.bilinear)
        mv_row = chroma_mv_component(mb.mv.row) & full_pixel_mask
        mv_col = chroma_mv_component(mb.mv.col) & full_pixel_mask
        for p in range(1, 3):
            predict_inter(&ref[p], x >> 1, y >> 1, 8, 8, mv_row, mv_col,
                          fc.cur[p].data + (y >> 1) * fc.cur[p].stride + (x >> 1),
                          fc.cur[p].stride, fc.bilinear)
        return
    # Luma by 8x8 quadrant when its four subblocks share a vector (the 16x8, 8x16 and 8x8
    # partitions always do): the filter is per pixel, so one 8x8 prediction is exactly the
    # four 4x4 ones.
    for q in range(4):
        b = (q >> 1) * 8 + (q & 1) * 2          # the quadrant's top-left subblock
        if mv_equal(mvs[b], mvs[b + 1]) and mv_equal(mvs[b], mvs[b + 4]) \
                and mv_equal(mvs[b], mvs[b + 5]):
            predict_inter(&ref[0], x + 4 * (b & 3), y + 4 * (b >> 2), 8, 8, mvs[b].row,
                          mvs[b].col, dst + 4 * (b >> 2) * plane.stride + 4 * (b & 3),
                          plane.stride, fc.bilinear)
            continue
        for k in range(4):
            j = b + (k & 1) + (k >> 1) * 4
            predict_inter(&ref[0], x + 4 * (j & 3), y + 4 * (j >> 2), 4, 4, mvs[j].row,
                          mvs[j].col, dst + 4 * (j >> 2) * plane.stride + 4 * (j & 3),
                          plane.stride, fc.bilinear)
    for i in range(2):
        for j in range(2):
            b = i * 8 + j * 2
            mv_row = split_chroma_mv_component(
                mvs[b].row + mvs[b + 1].row + mvs[b + 4].row + mvs[b + 5].row)
            mv_col = split_chroma_mv_component(
                mvs[b].col + mvs[b + 1].col + mvs[b + 4].col + mvs[b + 5].col)
            mv_row &= full_pixel_mask
            mv_col &= full_pixel_mask
            for p in range(1, 3):
                predict_inter(&ref[p], (x >> 1) + 4 * j, (y >> 1) + 4 * i, 4, 4, mv_row,
                              mv_col, fc.cur[p].data + ((y >> 1) + 4 * i) * fc.cur[p].stride
                              + (x >> 1) + 4 * j, fc.cur[p].stride, fc.bilinear)


cdef void reconstruct_inter(FrameContext* fc, MacroblockInfo* mb, int mb_row,
                            int mb_col) noexcept nogil:
    cdef Plane* plane = &fc.cur[0]
    cdef int x = mb_col * 16, y = mb_row * 16, b, p
    cdef uint8_t* dst = plane.data + y * plane.stride + x
    cdef bint has_y2 = mb.y_mode != SPLITMV
    predict_inter_macroblock(fc, mb, mb_row, mb_col)
    if mb.skip:
        return
    for b in range(16):
        add_residual(fc.coeffs + b * 16, fc.eobs[b], has_y2,
                     dst + 4 * (b >> 2) * plane.stride + 4 * (b & 3), plane.stride)
    for p in range(1, 3):
        plane = &fc.cur[p]
        dst = plane.data + (y >> 1) * plane.stride + (x >> 1)
        for b in range(4):
            add_residual(fc.coeffs + (12 + 4 * p + b) * 16, fc.eobs[12 + 4 * p + b], False,
                         dst + 4 * (b >> 1) * plane.stride + 4 * (b & 1), plane.stride)


cdef void reconstruct_macroblock(FrameContext* fc, MacroblockInfo* mb, int mb_row,
                                 int mb_col) noexcept nogil:
    """Write one macroblock of fc.cur from its modes and fc.coeffs/fc.eobs, then clear them."""
    cdef int b
    if not mb.skip and mb.y_mode != B_PRED and mb.y_mode != SPLITMV:
        # The second-order transform supplies each luma block's DC.
        inverse_walsh(fc.coeffs + 24 * 16, fc.coeffs + 24 * 16)
        for b in range(16):
            fc.coeffs[b * 16] = fc.coeffs[24 * 16 + b]
    if mb.ref_frame == INTRA_FRAME:
        reconstruct_intra(fc, mb, mb_row, mb_col)
    else:
        reconstruct_inter(fc, mb, mb_row, mb_col)
    memset(fc.coeffs, 0, sizeof(fc.coeffs))
