/* Pixel kernels of the VP8 decoder: loop-filter edges and subpixel interpolation.
 *
 * Written branch-free over a run of pixels so the compiler vectorizes them (the inner loops run
 * along contiguous memory; vertical edges are transposed into a scratch block first). The
 * arithmetic is RFC 6386 sections 15 and 18 with libvpx's exact rounding and clamping.
 */
#ifndef EXCAMERA_DSP_H
#define EXCAMERA_DSP_H
#include <stdint.h>
#include <string.h>
#include <stdlib.h>

static inline int dsp_sclamp(int v) { v = v < -128 ? -128 : v; return v > 127 ? 127 : v; }
static inline int dsp_uclamp(int v) { v = v < 0 ? 0 : v; return v > 255 ? 255 : v; }

/* Loop-filter edges (section 15). A run of up to 16 pixels along a horizontal edge: the edge
 * lies between rows s[-stride] and s[0], pixel i of the run is at s[i]. Rows are copied into
 * fixed-size local arrays and conditions become bit masks, so the arithmetic vectorizes. */
typedef struct { int16_t p3[16], p2[16], p1[16], p0[16], q0[16], q1[16], q2[16], q3[16]; } dsp_edge;
typedef struct { uint8_t p2[16], p1[16], p0[16], q0[16], q1[16], q2[16]; } dsp_edge_out;

static inline void dsp_load_edge(const uint8_t *s, int stride, const int count, dsp_edge *e) {
    for (int i = 0; i < count; ++i) {
        e->p3[i] = s[i - 4 * stride]; e->p2[i] = s[i - 3 * stride]; e->p1[i] = s[i - 2 * stride];
        e->p0[i] = s[i - stride]; e->q0[i] = s[i]; e->q1[i] = s[i + stride];
        e->q2[i] = s[i + 2 * stride]; e->q3[i] = s[i + 3 * stride];
    }
}

/* -1 where the edge should be filtered (all differences within the limits), else 0. */
static inline int16_t dsp_normal_mask(const dsp_edge *e, int i, int edge_limit, int interior) {
    return -((abs(e->p0[i] - e->q0[i]) * 2 + (abs(e->p1[i] - e->q1[i]) >> 1) <= edge_limit)
             & (abs(e->p3[i] - e->p2[i]) <= interior) & (abs(e->p2[i] - e->p1[i]) <= interior)
             & (abs(e->p1[i] - e->p0[i]) <= interior) & (abs(e->q1[i] - e->q0[i]) <= interior)
             & (abs(e->q2[i] - e->q1[i]) <= interior) & (abs(e->q3[i] - e->q2[i]) <= interior));
}

static inline int16_t dsp_hev_mask(const dsp_edge *e, int i, int threshold) {
    return -((abs(e->p1[i] - e->p0[i]) > threshold) | (abs(e->q1[i] - e->q0[i]) > threshold));
}

static inline void dsp_inner_edge(uint8_t *s, int stride, const int count, int edge_limit,
                                  int interior, int hev_threshold) {
    dsp_edge e;
    dsp_edge_out o;
    dsp_load_edge(s, stride, count, &e);
    for (int i = 0; i < count; ++i) {
        int16_t mask = dsp_normal_mask(&e, i, edge_limit, interior);
        int16_t hev = dsp_hev_mask(&e, i, hev_threshold);
        int16_t ps1 = e.p1[i] - 128, ps0 = e.p0[i] - 128, qs0 = e.q0[i] - 128, qs1 = e.q1[i] - 128;
        int16_t a = dsp_sclamp(ps1 - qs1) & hev;
        a = dsp_sclamp(a + 3 * (qs0 - ps0)) & mask;
        int16_t f1 = dsp_sclamp(a + 4) >> 3, f2 = dsp_sclamp(a + 3) >> 3;
        o.q0[i] = (uint8_t)(dsp_sclamp(qs0 - f1) + 128);
        o.p0[i] = (uint8_t)(dsp_sclamp(ps0 + f2) + 128);
        a = ((f1 + 1) >> 1) & ~hev;     /* outer taps only without high edge variance */
        o.q1[i] = (uint8_t)(dsp_sclamp(qs1 - a) + 128);
        o.p1[i] = (uint8_t)(dsp_sclamp(ps1 + a) + 128);
    }
    for (int i = 0; i < count; ++i) {
        s[i - 2 * stride] = o.p1[i]; s[i - stride] = o.p0[i];
        s[i] = o.q0[i]; s[i + stride] = o.q1[i];
    }
}

static inline void dsp_macroblock_edge(uint8_t *s, int stride, const int count, int edge_limit,
                                       int interior, int hev_threshold) {
    dsp_edge e;
    dsp_edge_out o;
    dsp_load_edge(s, stride, count, &e);
    for (int i = 0; i < count; ++i) {
        int16_t mask = dsp_normal_mask(&e, i, edge_limit, interior);
        int16_t hev = dsp_hev_mask(&e, i, hev_threshold);
        int16_t ps2 = e.p2[i] - 128, ps1 = e.p1[i] - 128, ps0 = e.p0[i] - 128;
        int16_t qs0 = e.q0[i] - 128, qs1 = e.q1[i] - 128, qs2 = e.q2[i] - 128;
        int16_t w = dsp_sclamp(dsp_sclamp(ps1 - qs1) + 3 * (qs0 - ps0)) & mask;
        /* High edge variance: only p0/q0 move, as in the inner filter. */
        int16_t wh = w & hev;
        int16_t f1 = dsp_sclamp(wh + 4) >> 3, f2 = dsp_sclamp(wh + 3) >> 3;
        int16_t nq0 = dsp_sclamp(qs0 - f1), np0 = dsp_sclamp(ps0 + f2);
        /* Otherwise a wider filter: 27/18/9 parts in 128 of the difference. */
        int16_t wl = w & ~hev;
        int16_t a = dsp_sclamp((27 * wl + 63) >> 7);
        o.q0[i] = (uint8_t)(dsp_sclamp(nq0 - a) + 128);
        o.p0[i] = (uint8_t)(dsp_sclamp(np0 + a) + 128);
        a = dsp_sclamp((18 * wl + 63) >> 7);
        o.q1[i] = (uint8_t)(dsp_sclamp(qs1 - a) + 128);
        o.p1[i] = (uint8_t)(dsp_sclamp(ps1 + a) + 128);
        a = dsp_sclamp((9 * wl + 63) >> 7);
        o.q2[i] = (uint8_t)(dsp_sclamp(qs2 - a) + 128);
        o.p2[i] = (uint8_t)(dsp_sclamp(ps2 + a) + 128);
    }
    for (int i = 0; i < count; ++i) {
        s[i - 3 * stride] = o.p2[i]; s[i - 2 * stride] = o.p1[i]; s[i - stride] = o.p0[i];
        s[i] = o.q0[i]; s[i + stride] = o.q1[i]; s[i + 2 * stride] = o.q2[i];
    }
}

static inline void dsp_simple_edge(uint8_t *s, int stride, const int count, int edge_limit) {
    dsp_edge e;
    dsp_edge_out o;
    dsp_load_edge(s, stride, count, &e);
    for (int i = 0; i < count; ++i) {
        int16_t mask = -(abs(e.p0[i] - e.q0[i]) * 2 + (abs(e.p1[i] - e.q1[i]) >> 1) <= edge_limit);
        int16_t ps1 = e.p1[i] - 128, ps0 = e.p0[i] - 128, qs0 = e.q0[i] - 128, qs1 = e.q1[i] - 128;
        int16_t a = dsp_sclamp(dsp_sclamp(ps1 - qs1) + 3 * (qs0 - ps0)) & mask;
        int16_t f1 = dsp_sclamp(a + 4) >> 3, f2 = dsp_sclamp(a + 3) >> 3;
        o.q0[i] = (uint8_t)(dsp_sclamp(qs0 - f1) + 128);
        o.p0[i] = (uint8_t)(dsp_sclamp(ps0 + f2) + 128);
    }
    for (int i = 0; i < count; ++i) {
        s[i - stride] = o.p0[i];
        s[i] = o.q0[i];
    }
}

/* A horizontal edge (between two rows) of `count` pixels; kind 0 inner, 1 macroblock edge,
 * 2 simple filter. */
static inline void dsp_filter_horizontal_edge(uint8_t *s, int stride, int count, int edge_limit,
                                              int interior, int hev_threshold, int kind) {
    /* Constant run lengths let the compiler unroll and vectorize each variant fully. */
    if (count == 16) {
        switch (kind) {
        case 0: dsp_inner_edge(s, stride, 16, edge_limit, interior, hev_threshold); break;
        case 1: dsp_macroblock_edge(s, stride, 16, edge_limit, interior, hev_threshold); break;
        default: dsp_simple_edge(s, stride, 16, edge_limit); break;
        }
    } else {
        switch (kind) {
        case 0: dsp_inner_edge(s, stride, 8, edge_limit, interior, hev_threshold); break;
        case 1: dsp_macroblock_edge(s, stride, 8, edge_limit, interior, hev_threshold); break;
        default: dsp_simple_edge(s, stride, 8, edge_limit); break;
        }
    }
}

/* A vertical edge (between two columns) of `count` rows: transpose the 8 columns around it,
 * filter as a horizontal edge, transpose back. */
static inline void dsp_vertical_edge_n(uint8_t *s, int stride, const int count, int edge_limit,
                                       int interior, int hev_threshold, int kind) {
    uint8_t t[8 * 16];
    for (int r = 0; r < count; ++r)
        for (int c = 0; c < 8; ++c)
            t[c * 16 + r] = s[r * stride + c - 4];
    dsp_filter_horizontal_edge(t + 4 * 16, 16, count, edge_limit, interior, hev_threshold, kind);
    /* Only the 3 pixels each side can change. */
    for (int r = 0; r < count; ++r)
        for (int c = 1; c < 7; ++c)
            s[r * stride + c - 4] = t[c * 16 + r];
}

static inline void dsp_filter_vertical_edge(uint8_t *s, int stride, int count, int edge_limit,
                                            int interior, int hev_threshold, int kind) {
    if (count == 16)
        dsp_vertical_edge_n(s, stride, 16, edge_limit, interior, hev_threshold, kind);
    else
        dsp_vertical_edge_n(s, stride, 8, edge_limit, interior, hev_threshold, kind);
}

/* Six-tap interpolation (section 18.3): horizontal pass into an 8-bit intermediate, then
 * vertical; a pass at phase 0 is the identity and is skipped. W is a compile-time width. */
static inline void dsp_sixtap_w(const uint8_t *src, int src_stride, uint8_t *restrict dst,
                                int dst_stride, const int W, int height, const int16_t *hf,
                                const int16_t *vf) {
    uint8_t tmp[21 * 16];
    int rows;
    if (hf) {
        rows = vf ? height + 5 : height;
        const uint8_t *s = src - (vf ? 2 * src_stride : 0);
        for (int r = 0; r < rows; ++r, s += src_stride)
            for (int c = 0; c < W; ++c)
                tmp[r * 16 + c] = (uint8_t)dsp_uclamp(
                    (s[c - 2] * hf[0] + s[c - 1] * hf[1] + s[c] * hf[2] + s[c + 1] * hf[3]
                     + s[c + 2] * hf[4] + s[c + 3] * hf[5] + 64) >> 7);
        if (!vf) {
            for (int r = 0; r < height; ++r)
                memcpy(dst + r * dst_stride, tmp + r * 16, W);
            return;
        }
        src = tmp + 2 * 16;
        src_stride = 16;
    }
    for (int r = 0; r < height; ++r) {
        const uint8_t *s = src + r * src_stride;
        for (int c = 0; c < W; ++c)
            dst[r * dst_stride + c] = (uint8_t)dsp_uclamp(
                (s[c - 2 * src_stride] * vf[0] + s[c - src_stride] * vf[1] + s[c] * vf[2]
                 + s[c + src_stride] * vf[3] + s[c + 2 * src_stride] * vf[4]
                 + s[c + 3 * src_stride] * vf[5] + 64) >> 7);
    }
}

static inline void dsp_sixtap(const uint8_t *src, int src_stride, uint8_t *dst, int dst_stride,
                              int width, int height, const int16_t *hf, const int16_t *vf) {
    if (width == 16) dsp_sixtap_w(src, src_stride, dst, dst_stride, 16, height, hf, vf);
    else if (width == 8) dsp_sixtap_w(src, src_stride, dst, dst_stride, 8, height, hf, vf);
    else dsp_sixtap_w(src, src_stride, dst, dst_stride, 4, height, hf, vf);
}

#endif
