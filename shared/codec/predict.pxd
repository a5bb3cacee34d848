from libc.stdint cimport uint8_t

from .frame_context cimport Plane

cdef void predict_subblock(uint8_t* dst, int stride, int mode, const uint8_t* above,
                           const uint8_t* left) noexcept nogil

cdef void predict_block_intra(uint8_t* dst, int stride, int size, int mode,
                              const uint8_t* above, const uint8_t* left, bint have_above,
                              bint have_left) noexcept nogil

cdef void predict_inter(const Plane* ref, int x, int y, int width, int height, int mv_row,
                        int mv_col, uint8_t* dst, int dst_stride, bint bilinear) noexcept nogil
