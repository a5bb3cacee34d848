from .frame_context cimport FrameContext, MacroblockInfo

cdef void reconstruct_macroblock(FrameContext* fc, MacroblockInfo* mb, int mb_row,
                                 int mb_col) noexcept nogil
