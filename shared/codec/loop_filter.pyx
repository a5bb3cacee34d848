"""The in-loop deblocking filter (RFC 6386 section 15), applied to a whole reconstructed frame.

Macroblocks are filtered in raster order; within one: left edge, inner vertical edges, top edge,
inner horizontal edges. Levels come from a per-frame table by segment, reference and mode class,
clamped the way libvpx clamps them.
"""

from libc.stdint cimport int8_t, uint8_t
from libc.stdlib cimport abs

from .frame_context cimport FrameContext, MacroblockInfo, Plane
from .tables cimport B_PRED, NEARESTMV, NEARMV, NEWMV, SPLITMV, ZEROMV


cdef inline int8_t sclamp(int v) noexcept nogil:
    return -128 if v < -128 else (127 if v > 127 else v)


cdef inline int8_t u2s(uint8_t v) noexcept nogil:
    return <int8_t>(v ^ 0x80)


cdef inline uint8_t s2u(int8_t v) noexcept nogil:
    return <uint8_t>(v ^ 0x80)


cdef inline bint normal_mask(const uint8_t* s, int step, int interior, int edge) noexcept nogil:
    # All differences within the edge neighbourhood small enough to filter.
    cdef int p3 = s[-4 * step], p2 = s[-3 * step], p1 = s[-2 * step], p0 = s[-step]
    cdef int q0 = s[0], q1 = s[step], q2 = s[2 * step], q3 = s[3 * step]
    return (abs(p3 - p2) <= interior and abs(p2 - p1) <= interior
            and abs(p1 - p0) <= interior and abs(q1 - q0) <= interior
            and abs(q2 - q1) <= interior and abs(q3 - q2) <= interior
            and abs(p0 - q0) * 2 + (abs(p1 - q1) >> 1) <= edge)


cdef inline bint high_edge_variance(const uint8_t* s, int step, int threshold) noexcept nogil:
    return abs(s[-2 * step] - s[-step]) > threshold or abs(s[step] - s[0]) > threshold


cdef inline void inner_edge_filter(uint8_t* s, int step, bint hev) noexcept nogil:
    # Adjusts p0/q0, and p1/q1 unless the edge has high variance (the "common adjust").
    cdef int8_t p1 = u2s(s[-2 * step]), p0 = u2s(s[-step]), q0 = u2s(s[0]), q1 = u2s(s[step])
    cdef int8_t a, f1, f2
    a = sclamp(p1 - q1) if hev else 0
    a = sclamp(a + 3 * (q0 - p0))
    f1 = sclamp(a + 4) >> 3
    f2 = sclamp(a + 3) >> 3
    s[0] = s2u(sclamp(q0 - f1))
    s[-step] = s2u(sclamp(p0 + f2))
    if not hev:
        a = (f1 + 1) >> 1
        s[step] = s2u(sclamp(q1 - a))
        s[-2 * step] = s2u(sclamp(p1 + a))


cdef inline void mb_edge_filter(uint8_t* s, int step, bint hev) noexcept nogil:
    cdef int8_t p2 = u2s(s[-3 * step]), p1 = u2s(s[-2 * step]), p0 = u2s(s[-step])
    cdef int8_t q0 = u2s(s[0]), q1 = u2s(s[step]), q2 = u2s(s[2 * step])
    cdef int8_t w, f1, f2, a
    w = sclamp(sclamp(p1 - q1) + 3 * (q0 - p0))
    if hev:
        f1 = sclamp(w + 4) >> 3
        f2 = sclamp(w + 3) >> 3
        s[0] = s2u(sclamp(q0 - f1))
        s[-step] = s2u(sclamp(p0 + f2))
        return
    a = sclamp((27 * w + 63) >> 7)
    s[0] = s2u(sclamp(q0 - a))
    s[-step] = s2u(sclamp(p0 + a))
    a = sclamp((18 * w + 63) >> 7)
    s[step] = s2u(sclamp(q1 - a))
    s[-2 * step] = s2u(sclamp(p1 + a))
    a = sclamp((9 * w + 63) >> 7)
    s[2 * step] = s2u(sclamp(q2 - a))
    s[-3 * step] = s2u(sclamp(p2 + a))


cdef void filter_edge(uint8_t* s, int across, int along, int count, int edge_limit,
                      int interior, int hev_threshold, bint macroblock_edge) noexcept nogil:
    """Filter `count` pixels along an edge; `across` steps over the edge, `along` along it."""
    cdef int i
    for i in range(count):
        if normal_mask(s, across, interior, edge_limit):
            if macroblock_edge:
                mb_edge_filter(s, across, high_edge_variance(s, across, hev_threshold))
            else:
                inner_edge_filter(s, across, high_edge_variance(s, across, hev_threshold))
        s += along


cdef void simple_edge(uint8_t* s, int across, int along, int edge_limit) noexcept nogil:
    # Section 15.2: only p0/q0 change, for the luma plane.
    cdef int i
    cdef int8_t p1, p0, q0, q1, a, f1, f2
    for i in range(16):
        if abs(s[-across] - s[0]) * 2 + (abs(s[-2 * across] - s[across]) >> 1) <= edge_limit:
            p1 = u2s(s[-2 * across])
            p0 = u2s(s[-across])
            q0 = u2s(s[0])
            q1 = u2s(s[across])
            a = sclamp(sclamp(p1 - q1) + 3 * (q0 - p0))
            f1 = sclamp(a + 4) >> 3
            f2 = sclamp(a + 3) >> 3
            s[0] = s2u(sclamp(q0 - f1))
            s[-across] = s2u(sclamp(p0 + f2))
        s += along


cdef inline int mode_class(int y_mode) noexcept nogil:
    # Index into the mode deltas: 0 B_PRED, 1 ZEROMV (and 16x16 intra, without delta),
    # 2 NEAREST/NEAR/NEW, 3 SPLITMV.
    if y_mode == B_PRED:
        return 0
    if y_mode == NEARESTMV or y_mode == NEARMV or y_mode == NEWMV:
        return 2
    if y_mode == SPLITMV:
        return 3
    return 1


cdef inline int clamp63(int v) noexcept nogil:
    return 0 if v < 0 else (63 if v > 63 else v)


cdef void level_table(FrameContext* fc, uint8_t levels[4][4][4]) noexcept nogil:
    """Filter level by [segment][reference][mode class] (libvpx's loop_filter_frame_init)."""
    cdef int seg, ref, mode, base, ref_level
    for seg in range(4):
        base = fc.hdr.filter_level
        if fc.hdr.segmentation_enabled:
            if fc.features.absolute:
                base = fc.features.filter_level[seg]
            else:
                base += fc.features.filter_level[seg]
            base = clamp63(base)
        for ref in range(4):
            for mode in range(4):
                levels[seg][ref][mode] = base
        if not fc.hdr.lf_deltas_enabled:
            continue
        ref_level = base + fc.deltas.ref[0]
        levels[seg][0][0] = clamp63(ref_level + fc.deltas.mode[0])
        levels[seg][0][1] = clamp63(ref_level)
        for ref in range(1, 4):
            ref_level = base + fc.deltas.ref[ref]
            for mode in range(1, 4):
                levels[seg][ref][mode] = clamp63(ref_level + fc.deltas.mode[mode])


cdef void loop_filter_frame(FrameContext* fc) noexcept nogil:
    cdef uint8_t levels[4][4][4]
    cdef int mb_row, mb_col, level, interior, hev_threshold, sharpness = fc.hdr.sharpness
    cdef int p, i, size, stride, edge_limit, inner_limit
    cdef bint filter_inner
    cdef MacroblockInfo* mb
    cdef uint8_t* s
    if fc.hdr.filter_level == 0:
        return
    level_table(fc, levels)
    for mb_row in range(fc.mb_rows):
        for mb_col in range(fc.mb_cols):
            mb = fc.mb_info + (mb_row + 1) * fc.mb_info_stride + mb_col + 1
            level = levels[mb.segment_id][mb.ref_frame][mode_class(mb.y_mode)]
            if level == 0:
                continue
            interior = level
            if sharpness:
                interior >>= 2 if sharpness > 4 else 1
                if interior > 9 - sharpness:
                    interior = 9 - sharpness
            if interior < 1:
                interior = 1
            if fc.tag.key_frame:
                hev_threshold = 2 if level >= 40 else (1 if level >= 15 else 0)
            else:
                hev_threshold = 3 if level >= 40 else (2 if level >= 20 else (1 if level >= 15 else 0))
            edge_limit = (level + 2) * 2 + interior
            inner_limit = level * 2 + interior
            filter_inner = not (mb.skip and mb.y_mode != B_PRED and mb.y_mode != SPLITMV)
            if fc.hdr.filter_type:
                stride = fc.cur[0].stride
                s = fc.cur[0].data + mb_row * 16 * stride + mb_col * 16
                if mb_col > 0:
                    simple_edge(s, 1, stride, edge_limit)
                if filter_inner:
                    for i in range(4, 16, 4):
                        simple_edge(s + i, 1, stride, inner_limit)
                if mb_row > 0:
                    simple_edge(s, stride, 1, edge_limit)
                if filter_inner:
                    for i in range(4, 16, 4):
                        simple_edge(s + i * stride, stride, 1, inner_limit)
                continue
            for p in range(3):
                size = 16 if p == 0 else 8
                stride = fc.cur[p].stride
                s = fc.cur[p].data + mb_row * size * stride + mb_col * size
                if mb_col > 0:
                    filter_edge(s, 1, stride, size, edge_limit, interior, hev_threshold, True)
                if filter_inner:
                    for i in range(4, size, 4):
                        filter_edge(s + i, 1, stride, size, inner_limit, interior,
                                    hev_threshold, False)
                if mb_row > 0:
                    filter_edge(s, stride, 1, size, edge_limit, interior, hev_threshold, True)
                if filter_inner:
                    for i in range(4, size, 4):
                        filter_edge(s + i * stride, stride, 1, size, inner_limit, interior,
                                    hev_threshold, False)
