from .frame_context cimport FrameContext, MacroblockInfo

cdef void read_macroblock_modes(FrameContext* fc, MacroblockInfo* mb, int mb_row,
                                int mb_col) noexcept nogil
