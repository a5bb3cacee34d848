# The boolean entropy decoder (RFC 6386 section 7), inline so every caller compiles it in.
#
# A 64-bit window holds the next bits MSB-first; `count` is how many bits beyond the top byte
# are valid. Past the end of the data zeros are shifted in (as libvpx does) and counted in
# `overrun`, so the hot path never tests for the end; `bool_decoder_overran` checks once later.
from libc.stdint cimport int8_t, int64_t, uint8_t, uint32_t, uint64_t


cdef extern from *:
    int __builtin_clz(unsigned int) nogil


ctypedef struct BoolDecoder:
    const uint8_t* pos
    const uint8_t* end
    uint64_t value
    int count
    uint32_t range
    int64_t overrun


cdef inline void bool_decoder_fill(BoolDecoder* d) noexcept nogil:
    cdef int shift = 48 - d.count
    while shift >= 0:
        if d.pos < d.end:
            d.value |= (<uint64_t>d.pos[0]) << shift
            d.pos += 1
        else:
            d.overrun += 8
        d.count += 8
        shift -= 8


cdef inline void bool_decoder_init(BoolDecoder* d, const uint8_t* data, size_t size) noexcept nogil:
    d.pos = data
    d.end = data + size
    d.value = 0
    d.count = -8
    d.range = 255
    d.overrun = 0
    bool_decoder_fill(d)


cdef inline int bool_read(BoolDecoder* d, int prob) noexcept nogil:
    cdef uint32_t split = 1 + (((d.range - 1) * <uint32_t>prob) >> 8)
    cdef uint64_t big_split
    cdef int bit, shift
    if d.count < 0:
        bool_decoder_fill(d)
    big_split = (<uint64_t>split) << 56
    if d.value >= big_split:
        d.range -= split
        d.value -= big_split
        bit = 1
    else:
        d.range = split
        bit = 0
    # Renormalise so range is back in [128, 255].
    shift = __builtin_clz(d.range) - 24
    d.range <<= shift
    d.value <<= shift
    d.count -= shift
    return bit


cdef inline int bool_read_bit(BoolDecoder* d) noexcept nogil:
    return bool_read(d, 128)


cdef inline int bool_read_literal(BoolDecoder* d, int bits) noexcept nogil:
    """An unsigned n-bit value, most significant bit first, each bit at probability 1/2."""
    cdef int value = 0
    while bits > 0:
        value = (value << 1) | bool_read(d, 128)
        bits -= 1
    return value


cdef inline int bool_read_signed(BoolDecoder* d, int bits) noexcept nogil:
    """Magnitude then sign bit, as the header's delta fields are coded."""
    cdef int value = bool_read_literal(d, bits)
    if bool_read(d, 128):
        return -value
    return value


cdef inline int bool_read_tree(BoolDecoder* d, const int8_t* tree, const uint8_t* probs) noexcept nogil:
    """Walk a tree in its array form (section 8.1): positive entries are indices, leaves -value."""
    cdef int i = 0
    while True:
        i = tree[i + bool_read(d, probs[i >> 1])]
        if i <= 0:
            return -i


cdef inline bint bool_decoder_overran(const BoolDecoder* d) noexcept nogil:
    """libvpx's test for a partition read past its end: once the data is exhausted, the bits
    still buffered (`count`) are fewer than the zeros that were shifted in."""
    return d.overrun > 0 and d.overrun > d.count

