"""Intra and inter prediction (RFC 6386 sections 12 and 18).

Intra predictors take their edges as arrays built by the caller (`above[-1]` is the corner), so
the frame-edge rules live in one place (reconstruct.pyx). Inter prediction reads a reference plane
as if its macroblock-aligned edges were replicated forever, which is what libvpx's borders plus
its motion-vector clamping amount to.
"""

from libc.stdint cimport int16_t, uint8_t
from libc.string cimport memcpy, memset

from .dsp cimport dsp_sixtap
from .frame_context cimport Plane
from .tables cimport (
    B_DC_PRED,
    B_HD_PRED,
    B_HE_PRED,
    B_HU_PRED,
    B_LD_PRED,
    B_RD_PRED,
    B_TM_PRED,
    B_VE_PRED,
    B_VL_PRED,
    B_VR_PRED,
    DC_PRED,
    H_PRED,
    TM_PRED,
    V_PRED,
    VP8_BILINEAR_FILTERS,
    VP8_SIXTAP_FILTERS,
)
from .transform cimport clamp255


cdef inline uint8_t avg2(int x, int y) noexcept nogil:
    return (x + y + 1) >> 1


cdef inline uint8_t avg3(int x, int y, int z) noexcept nogil:
    return (x + 2 * y + z + 2) >> 2


cdef void predict_subblock(uint8_t* dst, int stride, int mode, const uint8_t* A,
                           const uint8_t* L) noexcept nogil:
    """4x4 intra prediction (section 12.3). A[-1..7]: corner, above, above-right; L[0..3]."""
    cdef uint8_t B[4][4]
    cdef uint8_t E[9]
    cdef int r, c, v
    E[0] = L[3]
    E[1] = L[2]
    E[2] = L[1]
    E[3] = L[0]
    E[4] = A[-1]
    E[5] = A[0]
    E[6] = A[1]
    E[7] = A[2]
    E[8] = A[3]
    if mode == B_DC_PRED:
        v = 4
        for r in range(4):
            v += A[r] + L[r]
        v >>= 3
        for r in range(4):
            memset(dst + r * stride, v, 4)
        return
    if mode == B_TM_PRED:
        for r in range(4):
            for c in range(4):
                dst[r * stride + c] = clamp255(L[r] + A[c] - A[-1])
        return
    if mode == B_VE_PRED:
        for c in range(4):
            B[0][c] = avg3(A[c - 1], A[c], A[c + 1])
        for r in range(1, 4):
            for c in range(4):
                B[r][c] = B[0][c]
    elif mode == B_HE_PRED:
        B[0][0] = avg3(A[-1], L[0], L[1])
        B[1][0] = avg3(L[0], L[1], L[2])
        B[2][0] = avg3(L[1], L[2], L[3])
        B[3][0] = avg3(L[2], L[3], L[3])
        for r in range(4):
            B[r][1] = B[r][2] = B[r][3] = B[r][0]
    elif mode == B_LD_PRED:
        B[0][0] = avg3(A[0], A[1], A[2])
        B[0][1] = B[1][0] = avg3(A[1], A[2], A[3])
        B[0][2] = B[1][1] = B[2][0] = avg3(A[2], A[3], A[4])
        B[0][3] = B[1][2] = B[2][1] = B[3][0] = avg3(A[3], A[4], A[5])
        B[1][3] = B[2][2] = B[3][1] = avg3(A[4], A[5], A[6])
        B[2][3] = B[3][2] = avg3(A[5], A[6], A[7])
        B[3][3] = avg3(A[6], A[7], A[7])
    elif mode == B_RD_PRED:
        B[3][0] = avg3(E[0], E[1], E[2])
        B[3][1] = B[2][0] = avg3(E[1], E[2], E[3])
        B[3][2] = B[2][1] = B[1][0] = avg3(E[2], E[3], E[4])
        B[3][3] = B[2][2] = B[1][1] = B[0][0] = avg3(E[3], E[4], E[5])
        B[2][3] = B[1][2] = B[0][1] = avg3(E[4], E[5], E[6])
        B[1][3] = B[0][2] = avg3(E[5], E[6], E[7])
        B[0][3] = avg3(E[6], E[7], E[8])
    elif mode == B_VR_PRED:
        B[3][0] = avg3(E[1], E[2], E[3])
        B[2][0] = avg3(E[2], E[3], E[4])
        B[3][1] = B[1][0] = avg3(E[3], E[4], E[5])
        B[2][1] = B[0][0] = avg2(E[4], E[5])
        B[3][2] = B[1][1] = avg3(E[4], E[5], E[6])
        B[2][2] = B[0][1] = avg2(E[5], E[6])
        B[3][3] = B[1][2] = avg3(E[5], E[6], E[7])
        B[2][3] = B[0][2] = avg2(E[6], E[7])
        B[1][3] = avg3(E[6], E[7], E[8])
        B[0][3] = avg2(E[7], E[8])
    elif mode == B_VL_PRED:
        B[0][0] = avg2(A[0], A[1])
        B[1][0] = avg3(A[0], A[1], A[2])
        B[2][0] = B[0][1] = avg2(A[1], A[2])
        B[1][1] = B[3][0] = avg3(A[1], A[2], A[3])
        B[2][1] = B[0][2] = avg2(A[2], A[3])
        B[3][1] = B[1][2] = avg3(A[2], A[3], A[4])
        B[2][2] = B[0][3] = avg2(A[3], A[4])
        B[3][2] = B[1][3] = avg3(A[3], A[4], A[5])
        B[2][3] = avg3(A[4], A[5], A[6])
        B[3][3] = avg3(A[5], A[6], A[7])
    elif mode == B_HD_PRED:
        B[3][0] = avg2(E[0], E[1])
        B[3][1] = avg3(E[0], E[1], E[2])
        B[2][0] = B[3][2] = avg2(E[1], E[2])
        B[2][1] = B[3][3] = avg3(E[1], E[2], E[3])
        B[2][2] = B[1][0] = avg2(E[2], E[3])
        B[2][3] = B[1][1] = avg3(E[2], E[3], E[4])
        B[1][2] = B[0][0] = avg2(E[3], E[4])
        B[1][3] = B[0][1] = avg3(E[3], E[4], E[5])
        B[0][2] = avg3(E[4], E[5], E[6])
        B[0][3] = avg3(E[5], E[6], E[7])
    else:  # B_HU_PRED
        B[0][0] = avg2(L[0], L[1])
        B[0][1] = avg3(L[0], L[1], L[2])
        B[0][2] = B[1][0] = avg2(L[1], L[2])
        B[0][3] = B[1][1] = avg3(L[1], L[2], L[3])
        B[1][2] = B[2][0] = avg2(L[2], L[3])
        B[1][3] = B[2][1] = avg3(L[2], L[3], L[3])
        B[2][2] = B[2][3] = B[3][0] = B[3][1] = B[3][2] = B[3][3] = L[3]
    for r in range(4):
        memcpy(dst + r * stride, &B[r][0], 4)


cdef void predict_block_intra(uint8_t* dst, int stride, int size, int mode,
                              const uint8_t* above, const uint8_t* left, bint have_above,
                              bint have_left) noexcept nogil:
    """16x16 luma or 8x8 chroma intra prediction (section 12.2)."""
    cdef int r, c, total, shift
    if mode == DC_PRED:
        total = 0
        shift = 3 if size == 16 else 2     # log2(size) - 1: one edge averages size pixels
        if have_above:
            for c in range(size):
                total += above[c]
            shift += 1
        if have_left:
            for r in range(size):
                total += left[r]
            shift += 1
        if have_above or have_left:
            total = (total + (1 << (shift - 1))) >> shift
        else:
            total = 128
        for r in range(size):
            memset(dst + r * stride, total, size)
    elif mode == V_PRED:
        for r in range(size):
            memcpy(dst + r * stride, above, size)
    elif mode == H_PRED:
        for r in range(size):
            memset(dst + r * stride, left[r], size)
    else:  # TM_PRED
        for r in range(size):
            for c in range(size):
                dst[r * stride + c] = clamp255(left[r] + above[c] - above[-1])


# Widest block is 16 pixels; filters read 2 pixels before and 3 after it.
DEF MAX_BLOCK = 16
DEF SOURCE_EXTENT = MAX_BLOCK + 5


cdef void fetch_replicated(const Plane* ref, int x0, int y0, int width, int height,
                           uint8_t* out, int out_stride) noexcept nogil:
    """Copy a window that may leave the plane, replicating its edge rows and columns."""
    cdef int r, sy
    cdef const uint8_t* row
    cdef uint8_t* dst
    # Window columns [0, left_end) lie left of the plane, [right_start, width) right of it.
    cdef int left_end = 0 if x0 >= 0 else (width if -x0 > width else -x0)
    cdef int right_start = ref.width - x0
    if right_start > width:
        right_start = width
    if right_start < left_end:
        right_start = left_end
    for r in range(height):
        sy = y0 + r
        sy = 0 if sy < 0 else (ref.height - 1 if sy >= ref.height else sy)
        row = ref.data + sy * ref.stride
        dst = out + r * out_stride
        memset(dst, row[0], left_end)
        memcpy(dst + left_end, row + x0 + left_end, right_start - left_end)
        memset(dst + right_start, row[ref.width - 1], width - right_start)


cdef void bilinear_2d(const uint8_t* src, int src_stride, uint8_t* dst, int dst_stride,
                      int width, int height, int fx, int fy) noexcept nogil:
    """Bilinear subpixel filter used by versions 1-3 (section 18.3)."""
    cdef uint8_t tmp[SOURCE_EXTENT * MAX_BLOCK]
    cdef int r, c, f0, f1
    cdef const uint8_t* s
    if fx:
        f0 = VP8_BILINEAR_FILTERS[fx][0]
        f1 = VP8_BILINEAR_FILTERS[fx][1]
        for r in range(height + 1 if fy else height):
            s = src + r * src_stride
            for c in range(width):
                tmp[r * MAX_BLOCK + c] = (s[c] * f0 + s[c + 1] * f1 + 64) >> 7
        if not fy:
            for r in range(height):
                memcpy(dst + r * dst_stride, &tmp[r * MAX_BLOCK], width)
            return
        src = tmp
        src_stride = MAX_BLOCK
    f0 = VP8_BILINEAR_FILTERS[fy][0]
    f1 = VP8_BILINEAR_FILTERS[fy][1]
    for r in range(height):
        s = src + r * src_stride
        for c in range(width):
            dst[r * dst_stride + c] = (s[c] * f0 + s[c + src_stride] * f1 + 64) >> 7


cdef void predict_inter(const Plane* ref, int x, int y, int width, int height, int mv_row,
                        int mv_col, uint8_t* dst, int dst_stride, bint bilinear) noexcept nogil:
    """Predict a width x height block at (x, y) from `ref` displaced by an MV in 1/8 pel."""
    cdef uint8_t window[SOURCE_EXTENT * SOURCE_EXTENT]
    cdef int sx = x + (mv_col >> 3)
    cdef int sy = y + (mv_row >> 3)
    cdef int fx = mv_col & 7
    cdef int fy = mv_row & 7
    cdef const uint8_t* src
    cdef int src_stride = ref.stride, r
    if sx - 2 >= 0 and sy - 2 >= 0 and sx + width + 3 <= ref.width \
            and sy + height + 3 <= ref.height:
        src = ref.data + sy * ref.stride + sx
    else:
        fetch_replicated(ref, sx - 2, sy - 2, width + 5, height + 5, window, SOURCE_EXTENT)
        src = &window[2 * SOURCE_EXTENT + 2]
        src_stride = SOURCE_EXTENT
    if fx == 0 and fy == 0:
        for r in range(height):
            memcpy(dst + r * dst_stride, src + r * src_stride, width)
    elif bilinear:
        bilinear_2d(src, src_stride, dst, dst_stride, width, height, fx, fy)
    else:
        dsp_sixtap(src, src_stride, dst, dst_stride, width, height,
                   VP8_SIXTAP_FILTERS[fx] if fx else NULL, VP8_SIXTAP_FILTERS[fy] if fy else NULL)
