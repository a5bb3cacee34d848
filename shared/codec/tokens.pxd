from libc.stdint cimport int16_t, uint8_t

from .bool_decoder cimport BoolDecoder
from .frame_context cimport FrameContext, MacroblockInfo

cdef bint read_macroblock_tokens(FrameContext* fc, BoolDecoder* d, MacroblockInfo* mb,
                                 uint8_t* above_ctx, int16_t* raw) noexcept nogil

cdef void reset_macroblock_token_contexts(FrameContext* fc, MacroblockInfo* mb,
                                          uint8_t* above_ctx) noexcept nogil

cdef void build_dequant_table(FrameContext* fc) noexcept nogil
