from libc.stdint cimport int16_t, uint8_t, uint32_t

from .bool_encoder cimport BoolEncoder
from .frame_record cimport FrameRecord

ctypedef uint32_t TokenCounts[4][8][3][11][2]

cdef void write_block(BoolEncoder* e, TokenCounts* counts, int block_type, const uint8_t* probs,
                      int context, int first, const int16_t* levels, int eob) noexcept nogil

cdef bytes write_frame(FrameRecord record)

cdef void count_tokens(FrameRecord r, TokenCounts* counts, uint8_t* above_ctx) noexcept nogil
