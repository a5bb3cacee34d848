"""The in-loop deblocking filter (RFC 6386 section 15), applied to a whole reconstructed frame.

Macroblocks are filtered in raster order; within one: left edge, inner vertical edges, top edge,
inner horizontal edges. The edge kernels are in dsp.h. Levels come from a per-frame table by segment, reference and mode class,
clamped the way libvpx clamps them.
"""

from libc.stdint cimport uint8_t

from .dsp cimport (
    dsp_filter_horizontal_edge,
    dsp_filter_horizontal_edge_uv,
    dsp_filter_vertical_edge,
    dsp_filter_vertical_edge_uv,
)
from .frame_context cimport FrameContext, MacroblockInfo, Plane
from .tables cimport B_PRED, NEARESTMV, NEARMV, NEWMV, SPLITMV


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
    cdef int i, stride, edge_limit, inner_limit, kind
    cdef bint filter_inner
    cdef MacroblockInfo* mb
    cdef uint8_t* s
    cdef uint8_t* u
    cdef uint8_t* v
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
            kind = 2 if fc.hdr.filter_type else 1
            stride = fc.cur[0].stride
            s = fc.cur[0].data + mb_row * 16 * stride + mb_col * 16
            if mb_col > 0:
                dsp_filter_vertical_edge(s, stride, 16, edge_limit, interior, hev_threshold,
                                         kind)
            if filter_inner:
                for i in range(4, 16, 4):
                    dsp_filter_vertical_edge(s + i, stride, 16, inner_limit, interior,
                                             hev_threshold, kind & 2)
            if mb_row > 0:
                dsp_filter_horizontal_edge(s, stride, 16, edge_limit, interior, hev_threshold,
                                           kind)
            if filter_inner:
                for i in range(4, 16, 4):
                    dsp_filter_horizontal_edge(s + i * stride, stride, 16, inner_limit,
                                               interior, hev_threshold, kind & 2)
            if fc.hdr.filter_type:
                continue                  # the simple filter touches luma only
            # Both chroma planes at once (same edges, same thresholds).
            stride = fc.cur[1].stride
            u = fc.cur[1].data + mb_row * 8 * stride + mb_col * 8
            v = fc.cur[2].data + mb_row * 8 * fc.cur[2].stride + mb_col * 8
            if mb_col > 0:
                dsp_filter_vertical_edge_uv(u, v, stride, edge_limit, interior, hev_threshold,
                                            kind)
            if filter_inner:
                dsp_filter_vertical_edge_uv(u + 4, v + 4, stride, inner_limit, interior,
                                            hev_threshold, 0)
            if mb_row > 0:
                dsp_filter_horizontal_edge_uv(u, v, stride, edge_limit, interior,
                                              hev_threshold, kind)
            if filter_inner:
                dsp_filter_horizontal_edge_uv(u + 4 * stride, v + 4 * stride, stride,
                                              inner_limit, interior, hev_threshold, 0)
