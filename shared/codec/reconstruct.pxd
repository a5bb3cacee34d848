from .frame_context cimport FrameContext, MacroblockInfo

cdef void reconstruct_macroblock(FrameContext* fc, MacroblockInfo* mb, int mb_row,
                                 int mb_col) noexcept nogil

from libc.stdint cimport uint8_t

from .frame_context cimport Plane

cdef void build_edges(const Plane* plane, int x, int y, int size, bint last_column,
                      uint8_t* above, uint8_t* left) noexcept nogil

cdef void subblock_edges(uint8_t* block, int stride, int b, const uint8_t* mb_above,
                         const uint8_t* mb_left, uint8_t* A, uint8_t* left) noexcept nogil

cdef void predict_inter_macroblock(FrameContext* fc, const MacroblockInfo* mb, int mb_row,
                                   int mb_col) noexcept nogil
