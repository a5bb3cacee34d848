"""The inner loop of libvpx's SSIM (`vpx_ssim2`): the mean similarity of every 8x8 window on the
4-pixel grid of two planes. `shared.codec.metrics` is the interface; this is its hot part (about
20x faster than the same sums in numpy, which made SSIM the slowest part of checking an output).
"""

from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport free, malloc

# libvpx's constants for a 64-sample window: 64^2 * (0.01 * 255)^2 and 64^2 * (0.03 * 255)^2,
# scaled as in its similarity() for count = 64.
DEF C1 = (26634 * 64 * 64) >> 12
DEF C2 = (239708 * 64 * 64) >> 12


cdef inline double similarity(int64_t s, int64_t r, int64_t ss, int64_t rr,
                              int64_t sr) noexcept nogil:
    cdef int64_t numerator_a = 2 * s * r + C1
    cdef int64_t numerator_b = 2 * 64 * sr - 2 * s * r + C2
    cdef int64_t denominator_a = s * s + r * r + C1
    cdef int64_t denominator_b = 64 * ss - s * s + 64 * rr - r * r + C2
    return (<double>(numerator_a * numerator_b)) / (<double>(denominator_a * denominator_b))


def mean_window_similarity(const uint8_t[:, :] a, const uint8_t[:, :] b) -> float:
    """Mean of libvpx's similarity() over the 8x8 windows at rows and columns 0, 4, ... of two
    same-shaped planes at least 8x8 (sums from 4x4 block sums, 2x2 blocks per window)."""
    cdef Py_ssize_t height = a.shape[0], width = a.shape[1]
    if b.shape[0] != height or b.shape[1] != width or height < 8 or width < 8:
        raise ValueError("two planes of the same shape, at least 8x8")
    cdef Py_ssize_t rows = height // 4, cols = width // 4, i, j, y, x
    # Block sums of two consecutive block rows: s, r, ss, rr, sr per block.
    cdef int64_t* blocks = <int64_t*>malloc(2 * cols * 5 * sizeof(int64_t))
    cdef int64_t* current
    cdef int64_t* previous
    cdef int64_t* k
    cdef int64_t* l
    cdef int64_t p, q
    cdef double total = 0.0
    if blocks == NULL:
        raise MemoryError()
    try:
        with nogil:
            for i in range(rows):
                current = blocks + (i & 1) * cols * 5
                previous = blocks + ((i + 1) & 1) * cols * 5
                for j in range(cols):
                    k = current + j * 5
                    k[0] = k[1] = k[2] = k[3] = k[4] = 0
                    for y in range(4 * i, 4 * i + 4):
                        for x in range(4 * j, 4 * j + 4):
                            p = a[y, x]
                            q = b[y, x]
                            k[0] += p
                            k[1] += q
                            k[2] += p * p
                            k[3] += q * q
                            k[4] += p * q
                if i == 0:
                    continue
                for j in range(cols - 1):
                    k = previous + j * 5
                    l = current + j * 5
                    total += similarity(k[0] + k[5] + l[0] + l[5], k[1] + k[6] + l[1] + l[6],
                                        k[2] + k[7] + l[2] + l[7], k[3] + k[8] + l[3] + l[8],
                                        k[4] + k[9] + l[4] + l[9])
    finally:
        free(blocks)
    return total / ((rows - 1) * (cols - 1))
