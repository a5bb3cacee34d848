"""DCT coefficient tokens (RFC 6386 section 13).

Blocks are numbered as libvpx does: 0-15 luma in raster order, 16-19 U, 20-23 V, 24 Y2. Token
contexts keep one flag per 4x4 column above and per 4x4 row to the left (Y x4, U x2, V x2, Y2):
whether that block ended later than its first position. Coefficients are dequantized as they are
read and stored as int16, wrapping as libvpx's short arithmetic does.
"""

from libc.stdint cimport int16_t, uint8_t
from libc.string cimport memset

from .bool_decoder cimport BoolDecoder, bool_read
from .frame_context cimport FrameContext, MacroblockInfo
from .tables cimport (
    B_PRED,
    BLOCK_UV,
    BLOCK_Y2,
    BLOCK_Y_AFTER_Y2,
    BLOCK_Y_WITH_DC,
    SPLITMV,
    VP8_AC_QLOOKUP,
    VP8_COEF_BANDS,
    VP8_DC_QLOOKUP,
    VP8_PCAT3,
    VP8_PCAT4,
    VP8_PCAT5,
    VP8_PCAT6,
    VP8_ZIGZAG,
)

ctypedef const uint8_t (*BandProbs)[3][11]


cdef inline int read_extra(BoolDecoder* d, const uint8_t* probs) noexcept nogil:
    # Category extra bits, most significant first, until the list's terminating 0.
    cdef int value = 0
    while probs[0]:
        value = (value << 1) | bool_read(d, probs[0])
        probs += 1
    return value


cdef int read_block(BoolDecoder* d, BandProbs probs, int context, int first, int16_t* out,
                    int dc_q, int ac_q, int16_t* raw) noexcept nogil:
    """Read one block's tokens; return the scan position after the last token (first if none)."""
    cdef int n = first
    cdef int value
    cdef const uint8_t* p = probs[VP8_COEF_BANDS[n]][context]
    if not bool_read(d, p[0]):
        return n                                   # end of block straight away
    while True:
        if not bool_read(d, p[1]):                 # DCT_0; no end-of-block may follow a zero
            n += 1
            if n == 16:
                return 16
            p = probs[VP8_COEF_BANDS[n]][0]
            continue
        if not bool_read(d, p[2]):
            value = 1
            context = 1
        else:
            context = 2
            if not bool_read(d, p[3]):
                if not bool_read(d, p[4]):
                    value = 2
                else:
                    value = 3 + bool_read(d, p[5])
            elif not bool_read(d, p[6]):
                if not bool_read(d, p[7]):
                    value = 5 + bool_read(d, 159)                     # cat1
                else:
                    value = 7 + (bool_read(d, 165) << 1)             # cat2
                    value += bool_read(d, 145)
            elif not bool_read(d, p[8]):
                if not bool_read(d, p[9]):
                    value = 11 + read_extra(d, VP8_PCAT3)
                else:
                    value = 19 + read_extra(d, VP8_PCAT4)
            elif not bool_read(d, p[10]):
                value = 35 + read_extra(d, VP8_PCAT5)
            else:
                value = 67 + read_extra(d, VP8_PCAT6)
        if bool_read(d, 128):
            value = -value
        out[VP8_ZIGZAG[n]] = <int16_t>(value * (ac_q if n > 0 else dc_q))
        if raw != NULL:
            raw[VP8_ZIGZAG[n]] = <int16_t>value
        n += 1
        if n == 16:
            return 16
        p = probs[VP8_COEF_BANDS[n]][context]
        if not bool_read(d, p[0]):
            return n


cdef inline bint has_y2(const MacroblockInfo* mb) noexcept nogil:
    return mb.y_mode != B_PRED and mb.y_mode != SPLITMV


cdef bint read_macroblock_tokens(FrameContext* fc, BoolDecoder* d, MacroblockInfo* mb,
                                 uint8_t* above_ctx, int16_t* raw) noexcept nogil:
    """Read all of a macroblock's tokens into fc.coeffs/fc.eobs; True if any block has data.

    With `raw` (25 x 16, zeroed), the coded levels are also stored there, in raster order."""
    cdef uint8_t* left_ctx = fc.left_ctx
    cdef const int16_t* q = &fc.dequant[mb.segment_id][0][0]   # [Y1, Y2, UV][DC, AC]
    cdef int16_t* coeffs = fc.coeffs
    cdef int b, eob, first = 0, kind = BLOCK_Y_WITH_DC, ctx_index, flag
    cdef bint nonzero = False
    if has_y2(mb):
        eob = read_block(d, fc.probs.coef[BLOCK_Y2], above_ctx[8] + left_ctx[8], 0,
                         coeffs + 24 * 16, q[2], q[3],
                         raw + 24 * 16 if raw != NULL else NULL)
        fc.eobs[24] = eob
        flag = eob > 0
        above_ctx[8] = left_ctx[8] = flag
        nonzero = flag
        first = 1
        kind = BLOCK_Y_AFTER_Y2
    for b in range(16):
        eob = read_block(d, fc.probs.coef[kind], above_ctx[b & 3] + left_ctx[b >> 2], first,
                         coeffs + b * 16, q[0], q[1], raw + b * 16 if raw != NULL else NULL)
        fc.eobs[b] = eob
        flag = eob > first
        above_ctx[b & 3] = left_ctx[b >> 2] = flag
        nonzero |= flag
    for b in range(16, 24):
        # U blocks 16-19 use contexts 4-5, V blocks 20-23 use 6-7.
        ctx_index = 4 + ((b - 16) >> 2) * 2
        eob = read_block(d, fc.probs.coef[BLOCK_UV],
                         above_ctx[ctx_index + (b & 1)] + left_ctx[ctx_index + ((b >> 1) & 1)],
                         0, coeffs + b * 16, q[4], q[5], raw + b * 16 if raw != NULL else NULL)
        fc.eobs[b] = eob
        flag = eob > 0
        above_ctx[ctx_index + (b & 1)] = left_ctx[ctx_index + ((b >> 1) & 1)] = flag
        nonzero |= flag
    return nonzero


cdef void reset_macroblock_token_contexts(FrameContext* fc, MacroblockInfo* mb,
                                          uint8_t* above_ctx) noexcept nogil:
    """A macroblock without tokens leaves zero contexts; Y2's only if it would have had one."""
    memset(above_ctx, 0, 8)
    memset(fc.left_ctx, 0, 8)
    if has_y2(mb):
        above_ctx[8] = 0
        fc.left_ctx[8] = 0
    memset(fc.eobs, 0, 25)


cdef inline int clamp_q(int q) noexcept nogil:
    return 0 if q < 0 else (127 if q > 127 else q)


cdef void build_dequant_table(FrameContext* fc) noexcept nogil:
    """Dequantization factors per segment (section 14.1, libvpx's rounding of Y2 AC)."""
    cdef int seg, q, v
    for seg in range(4):
        q = fc.hdr.q_index
        if fc.hdr.segmentation_enabled:
            q = fc.features.quant[seg] if fc.features.absolute else q + fc.features.quant[seg]
            q = clamp_q(q)
        fc.dequant[seg][0][0] = VP8_DC_QLOOKUP[clamp_q(q + fc.hdr.y1_dc_delta)]
        fc.dequant[seg][0][1] = VP8_AC_QLOOKUP[q]
        fc.dequant[seg][1][0] = VP8_DC_QLOOKUP[clamp_q(q + fc.hdr.y2_dc_delta)] * 2
        v = (VP8_AC_QLOOKUP[clamp_q(q + fc.hdr.y2_ac_delta)] * 101581) >> 16
        fc.dequant[seg][1][1] = v if v >= 8 else 8
        v = VP8_DC_QLOOKUP[clamp_q(q + fc.hdr.uv_dc_delta)]
        fc.dequant[seg][2][0] = v if v <= 132 else 132
        fc.dequant[seg][2][1] = VP8_AC_QLOOKUP[clamp_q(q + fc.hdr.uv_ac_delta)]
