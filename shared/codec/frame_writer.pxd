from libc.stdint cimport int16_t, uint8_t, uint32_t

from .bool_encoder cimport BoolEncoder
from .frame_context cimport MacroblockInfo
from .frame_header cimport EntropyContext
from .frame_record cimport FrameRecord

ctypedef uint32_t TokenCounts[4][8][3][11][2]
ctypedef uint32_t TokenTally[4][8][3][2][12]   # type, band, context, EOB tested?, class

cdef void write_block(BoolEncoder* e, TokenCounts* counts, int block_type, const uint8_t* probs,
                      int context, int first, const int16_t* levels, int eob) noexcept nogil

cdef bytes write_frame(FrameRecord record)

cdef void count_tokens(FrameRecord r, TokenCounts* counts, uint8_t* above_ctx) noexcept nogil

cdef void tally_macroblock(TokenTally* tally, const EntropyContext* probs,
                           const MacroblockInfo* mb,
                           const int16_t* levels, const uint8_t* eobs, uint8_t* above,
                           uint8_t* left) noexcept nogil

cdef void tree_counts(const TokenTally* tally, TokenCounts* counts) noexcept nogil


cdef inline int token_class(int magnitude) noexcept nogil:
    """The token of a coefficient magnitude: 0 ZERO, 1 ONE, 2-4 TWO..FOUR, 5-10 CAT1..CAT6
    (section 13.2)."""
    if magnitude <= 4:
        return magnitude
    if magnitude <= 6:
        return 5
    if magnitude <= 10:
        return 6
    if magnitude <= 18:
        return 7
    if magnitude <= 34:
        return 8
    if magnitude <= 66:
        return 9
    return 10
