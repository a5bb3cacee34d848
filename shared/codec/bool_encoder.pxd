# The boolean entropy encoder (RFC 6386 section 7.3), inline like the decoder. Output goes to a
# growable heap buffer; `flush` pads with 32 zero bits at probability 1/2 as libvpx does, so a
# decoder never needs bits past the end.
from libc.stdint cimport int8_t, uint8_t, uint32_t
from libc.stdlib cimport free, malloc, realloc


cdef extern from *:
    int __builtin_clz(unsigned int) nogil


ctypedef struct BoolEncoder:
    uint8_t* buf
    size_t pos
    size_t capacity
    uint32_t low
    uint32_t range
    int count
    int failed               # allocation failed; the output is unusable


cdef inline void bool_encoder_init(BoolEncoder* e) noexcept nogil:
    e.capacity = 4096
    e.buf = <uint8_t*>malloc(e.capacity)
    e.failed = e.buf == NULL
    e.pos = 0
    e.low = 0
    e.range = 255
    e.count = -24


cdef inline void bool_encoder_free(BoolEncoder* e) noexcept nogil:
    free(e.buf)
    e.buf = NULL


cdef inline void bool_encoder_put(BoolEncoder* e, uint8_t byte) noexcept nogil:
    cdef uint8_t* grown
    if e.failed:
        return
    if e.pos == e.capacity:
        grown = <uint8_t*>realloc(e.buf, e.capacity * 2)
        if grown == NULL:
            e.failed = 1
            return
        e.buf = grown
        e.capacity *= 2
    e.buf[e.pos] = byte
    e.pos += 1


cdef inline void bool_write(BoolEncoder* e, int bit, int prob) noexcept nogil:
    cdef uint32_t split = 1 + (((e.range - 1) * <uint32_t>prob) >> 8)
    cdef int shift, offset
    cdef Py_ssize_t x
    if bit:
        e.low += split
        e.range -= split
    else:
        e.range = split
    shift = __builtin_clz(e.range) - 24
    e.range <<= shift
    e.count += shift
    if e.count >= 0:
        offset = shift - e.count
        if (e.low << (offset - 1)) & 0x80000000u:
            # Carry into bytes already written.
            x = <Py_ssize_t>e.pos - 1
            while x >= 0 and e.buf[x] == 0xFF:
                e.buf[x] = 0
                x -= 1
            if x >= 0:
                e.buf[x] += 1
        bool_encoder_put(e, (e.low >> (24 - offset)) & 0xFF)
        e.low = (e.low << offset) & 0xFFFFFF
        shift = e.count
        e.count -= 8
    e.low <<= shift


cdef inline void bool_write_literal(BoolEncoder* e, int value, int bits) noexcept nogil:
    while bits > 0:
        bits -= 1
        bool_write(e, (value >> bits) & 1, 128)


cdef inline void bool_write_signed(BoolEncoder* e, int value, int bits) noexcept nogil:
    bool_write_literal(e, -value if value < 0 else value, bits)
    bool_write(e, value < 0, 128)


cdef inline int tree_path(const int8_t* tree, int tree_size, int value, int* nodes,
                          int* bits) noexcept nogil:
    """The branches coding `value` takes in a tree in array form, from its leaf up to the
    root: node indices and bits, returned count (trees have at most 11 levels)."""
    cdef int n = 0, j = 0, k, node
    while j < tree_size and not (tree[j] <= 0 and tree[j] == -value):
        j += 1
    while True:
        node = j & ~1
        bits[n] = j & 1
        nodes[n] = node
        n += 1
        if node == 0:
            return n
        k = 0
        while tree[k] != node:
            k += 1
        j = k


cdef inline void bool_write_tree(BoolEncoder* e, const int8_t* tree, int tree_size,
                                 const uint8_t* probs, int value) noexcept nogil:
    """Write `value` with a tree in array form: its branches from the root down."""
    cdef int bits[16]
    cdef int nodes[16]
    cdef int n = tree_path(tree, tree_size, value, nodes, bits)
    while n > 0:
        n -= 1
        bool_write(e, bits[n], probs[nodes[n] >> 1])


cdef inline void bool_encoder_flush(BoolEncoder* e) noexcept nogil:
    cdef int i
    for i in range(32):
        bool_write(e, 0, 128)
