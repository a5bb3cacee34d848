# Inverse transforms (RFC 6386 section 14.3-14.4), inline for the reconstruction loops.
# Intermediate values are kept in int16 exactly where libvpx keeps them in shorts.
from libc.stdint cimport int16_t, uint8_t

from .dsp cimport dsp_idct_add


cdef inline uint8_t clamp255(int v) noexcept nogil:
    return 0 if v < 0 else (255 if v > 255 else v)


cdef inline void inverse_walsh(const int16_t* input, int16_t* output) noexcept nogil:
    """Second-order transform: 16 Y2 coefficients -> the DC of each luma block."""
    cdef int16_t tmp[16]
    cdef int i, a1, b1, c1, d1, a2, b2, c2, d2
    for i in range(4):
        a1 = input[i] + input[12 + i]
        b1 = input[4 + i] + input[8 + i]
        c1 = input[4 + i] - input[8 + i]
        d1 = input[i] - input[12 + i]
        tmp[i] = <int16_t>(a1 + b1)
        tmp[4 + i] = <int16_t>(c1 + d1)
        tmp[8 + i] = <int16_t>(a1 - b1)
        tmp[12 + i] = <int16_t>(d1 - c1)
    for i in range(4):
        a1 = tmp[4 * i] + tmp[4 * i + 3]
        b1 = tmp[4 * i + 1] + tmp[4 * i + 2]
        c1 = tmp[4 * i + 1] - tmp[4 * i + 2]
        d1 = tmp[4 * i] - tmp[4 * i + 3]
        a2 = a1 + b1
        b2 = c1 + d1
        c2 = a1 - b1
        d2 = d1 - c1
        output[4 * i] = <int16_t>((a2 + 3) >> 3)
        output[4 * i + 1] = <int16_t>((b2 + 3) >> 3)
        output[4 * i + 2] = <int16_t>((c2 + 3) >> 3)
        output[4 * i + 3] = <int16_t>((d2 + 3) >> 3)


cdef inline void idct_add(const int16_t* input, uint8_t* dst, int stride) noexcept nogil:
    """Inverse DCT of a 4x4 block, added to the prediction already in dst (dsp.h)."""
    dsp_idct_add(input, dst, stride)


cdef inline void dc_only_add(int16_t dc, uint8_t* dst, int stride) noexcept nogil:
    """The inverse DCT of a block whose only coefficient is its DC: one value added to all."""
    cdef int value = (dc + 4) >> 3
    cdef int r, c
    for r in range(4):
        for c in range(4):
            dst[c] = clamp255(dst[c] + value)
        dst += stride
