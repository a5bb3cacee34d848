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

#if defined(__SSE2__)
#include <emmintrin.h>

/* SSE2 versions: 16 pixels per register in signed saturating 8-bit arithmetic, which is exactly
 * the clamping the filter defines (libvpx's SIMD does the same). */
static inline __m128i dsp_abs_diff(__m128i a, __m128i b) {
    return _mm_or_si128(_mm_subs_epu8(a, b), _mm_subs_epu8(b, a));
}

/* Arithmetic shift right of each signed byte. */
static inline __m128i dsp_sra8(__m128i x, int n) {
    __m128i lo = _mm_srai_epi16(_mm_unpacklo_epi8(x, x), 8 + n);
    __m128i hi = _mm_srai_epi16(_mm_unpackhi_epi8(x, x), 8 + n);
    return _mm_packs_epi16(lo, hi);
}

/* 0xFF where a <= b (unsigned bytes). */
static inline __m128i dsp_le(__m128i a, __m128i b) {
    return _mm_cmpeq_epi8(_mm_subs_epu8(a, b), _mm_setzero_si128());
}

static inline __m128i dsp_edge_ok(__m128i p1, __m128i p0, __m128i q0, __m128i q1, int edge_limit) {
    __m128i d0 = dsp_abs_diff(p0, q0);
    __m128i d1 = _mm_and_si128(dsp_abs_diff(p1, q1), _mm_set1_epi8((char)0xFE));
    __m128i e = _mm_adds_epu8(_mm_adds_epu8(d0, d0), _mm_srli_epi16(d1, 1));
    return dsp_le(e, _mm_set1_epi8((char)edge_limit));
}

/* u = clamp((w * k + 63) >> 7) for signed bytes w, computed in 16 bits. */
static inline __m128i dsp_tap(__m128i w, int k) {
    __m128i lo = _mm_srai_epi16(_mm_unpacklo_epi8(w, w), 8);
    __m128i hi = _mm_srai_epi16(_mm_unpackhi_epi8(w, w), 8);
    __m128i kk = _mm_set1_epi16((short)k), r = _mm_set1_epi16(63);
    lo = _mm_srai_epi16(_mm_add_epi16(_mm_mullo_epi16(lo, kk), r), 7);
    hi = _mm_srai_epi16(_mm_add_epi16(_mm_mullo_epi16(hi, kk), r), 7);
    return _mm_packs_epi16(lo, hi);
}

/* Filter the edge between rows x[3] and x[4] of x[0..7] (p3..q3) in place. */
static inline void dsp_filter_vectors(__m128i *x, int edge_limit, int interior, int hev_threshold,
                                      int kind) {
    const __m128i sign = _mm_set1_epi8((char)0x80);
    __m128i p3 = x[0], p2 = x[1], p1 = x[2], p0 = x[3], q0 = x[4], q1 = x[5], q2 = x[6], q3 = x[7];
    __m128i mask = dsp_edge_ok(p1, p0, q0, q1, edge_limit);
    __m128i hev = _mm_set1_epi8((char)0xFF);
    if (kind != 2) {
        __m128i m = _mm_max_epu8(dsp_abs_diff(p3, p2), dsp_abs_diff(p2, p1));
        __m128i h = _mm_max_epu8(dsp_abs_diff(p1, p0), dsp_abs_diff(q1, q0));
        m = _mm_max_epu8(m, _mm_max_epu8(h, _mm_max_epu8(dsp_abs_diff(q2, q1),
                                                          dsp_abs_diff(q3, q2))));
        mask = _mm_and_si128(mask, dsp_le(m, _mm_set1_epi8((char)interior)));
        hev = _mm_xor_si128(dsp_le(h, _mm_set1_epi8((char)hev_threshold)), hev);
    }
    __m128i ps1 = _mm_xor_si128(p1, sign), ps0 = _mm_xor_si128(p0, sign);
    __m128i qs0 = _mm_xor_si128(q0, sign), qs1 = _mm_xor_si128(q1, sign);
    __m128i d = _mm_subs_epi8(qs0, ps0);
    __m128i outer = _mm_subs_epi8(ps1, qs1);
    if (kind == 0) outer = _mm_and_si128(outer, hev);
    __m128i w = _mm_adds_epi8(_mm_adds_epi8(_mm_adds_epi8(outer, d), d), d);
    w = _mm_and_si128(w, mask);
    __m128i f = kind == 1 ? _mm_and_si128(w, hev) : w;
    __m128i f1 = dsp_sra8(_mm_adds_epi8(f, _mm_set1_epi8(4)), 3);
    __m128i f2 = dsp_sra8(_mm_adds_epi8(f, _mm_set1_epi8(3)), 3);
    qs0 = _mm_subs_epi8(qs0, f1);
    ps0 = _mm_adds_epi8(ps0, f2);
    if (kind == 0) {
        __m128i a = _mm_andnot_si128(hev, dsp_sra8(_mm_add_epi8(f1, _mm_set1_epi8(1)), 1));
        qs1 = _mm_subs_epi8(qs1, a);
        ps1 = _mm_adds_epi8(ps1, a);
    } else if (kind == 1) {
        __m128i qs2 = _mm_xor_si128(q2, sign), ps2 = _mm_xor_si128(p2, sign);
        __m128i wl = _mm_andnot_si128(hev, w), u;
        u = dsp_tap(wl, 27);
        qs0 = _mm_subs_epi8(qs0, u);
        ps0 = _mm_adds_epi8(ps0, u);
        u = dsp_tap(wl, 18);
        qs1 = _mm_subs_epi8(qs1, u);
        ps1 = _mm_adds_epi8(ps1, u);
        u = dsp_tap(wl, 9);
        x[6] = _mm_xor_si128(_mm_subs_epi8(qs2, u), sign);
        x[1] = _mm_xor_si128(_mm_adds_epi8(ps2, u), sign);
    }
    x[2] = _mm_xor_si128(ps1, sign);
    x[3] = _mm_xor_si128(ps0, sign);
    x[4] = _mm_xor_si128(qs0, sign);
    x[5] = _mm_xor_si128(qs1, sign);
}

static inline void dsp_filter_horizontal_edge(uint8_t *s, int stride, int count, int edge_limit,
                                              int interior, int hev_threshold, int kind) {
    __m128i x[8];
    for (int i = 0; i < 8; ++i)
        x[i] = count == 16 ? _mm_loadu_si128((const __m128i *)(s + (i - 4) * stride))
                           : _mm_loadl_epi64((const __m128i *)(s + (i - 4) * stride));
    dsp_filter_vectors(x, edge_limit, interior, hev_threshold, kind);
    for (int i = 1; i < 7; ++i) {
        if (count == 16)
            _mm_storeu_si128((__m128i *)(s + (i - 4) * stride), x[i]);
        else
            _mm_storel_epi64((__m128i *)(s + (i - 4) * stride), x[i]);
    }
}

/* Vertical edge: transpose the 8 columns around it (16 or 8 rows) into 8 registers, filter,
 * transpose back. */
static inline void dsp_filter_vertical_rows(uint8_t **rows, int count, int edge_limit,
                                           int interior, int hev_threshold, int kind) {
    __m128i r[16], a[8], b[8], c[8], x[8];
    for (int i = 0; i < 16; ++i)
        r[i] = i < count ? _mm_loadl_epi64((const __m128i *)(rows[i] - 4))
                         : _mm_setzero_si128();
    for (int i = 0; i < 8; ++i)
        a[i] = _mm_unpacklo_epi8(r[2 * i], r[2 * i + 1]);
    for (int j = 0; j < 4; ++j) {
        b[2 * j] = _mm_unpacklo_epi16(a[2 * j], a[2 * j + 1]);      /* columns 0-3 */
        b[2 * j + 1] = _mm_unpackhi_epi16(a[2 * j], a[2 * j + 1]);  /* columns 4-7 */
    }
    for (int h = 0; h < 2; ++h) {        /* h: columns 0-3 or 4-7 */
        c[4 * h + 0] = _mm_unpacklo_epi32(b[h], b[2 + h]);       /* rows 0-7, cols 4h, 4h+1 */
        c[4 * h + 1] = _mm_unpackhi_epi32(b[h], b[2 + h]);       /* rows 0-7, cols 4h+2, 4h+3 */
        c[4 * h + 2] = _mm_unpacklo_epi32(b[4 + h], b[6 + h]);   /* rows 8-15, cols 4h, 4h+1 */
        c[4 * h + 3] = _mm_unpackhi_epi32(b[4 + h], b[6 + h]);   /* rows 8-15, cols 4h+2, 4h+3 */
        x[4 * h + 0] = _mm_unpacklo_epi64(c[4 * h + 0], c[4 * h + 2]);
        x[4 * h + 1] = _mm_unpackhi_epi64(c[4 * h + 0], c[4 * h + 2]);
        x[4 * h + 2] = _mm_unpacklo_epi64(c[4 * h + 1], c[4 * h + 3]);
        x[4 * h + 3] = _mm_unpackhi_epi64(c[4 * h + 1], c[4 * h + 3]);
    }
    dsp_filter_vectors(x, edge_limit, interior, hev_threshold, kind);
    /* Back: pairs of columns interleaved, then quads, then whole rows. */
    __m128i d[8], e[8], g[8];
    for (int i = 0; i < 4; ++i) {
        d[2 * i] = _mm_unpacklo_epi8(x[2 * i], x[2 * i + 1]);       /* rows 0-7 */
        d[2 * i + 1] = _mm_unpackhi_epi8(x[2 * i], x[2 * i + 1]);   /* rows 8-15 */
    }
    for (int h = 0; h < 2; ++h) {        /* h: rows 0-7 or 8-15 */
        e[4 * h + 0] = _mm_unpacklo_epi16(d[h], d[2 + h]);       /* cols 0-3, rows 8h..8h+3 */
        e[4 * h + 1] = _mm_unpackhi_epi16(d[h], d[2 + h]);       /* cols 0-3, rows 8h+4.. */
        e[4 * h + 2] = _mm_unpacklo_epi16(d[4 + h], d[6 + h]);   /* cols 4-7, rows 8h..8h+3 */
        e[4 * h + 3] = _mm_unpackhi_epi16(d[4 + h], d[6 + h]);   /* cols 4-7, rows 8h+4.. */
        g[4 * h + 0] = _mm_unpacklo_epi32(e[4 * h + 0], e[4 * h + 2]);   /* rows 8h, 8h+1 */
        g[4 * h + 1] = _mm_unpackhi_epi32(e[4 * h + 0], e[4 * h + 2]);   /* rows 8h+2, +3 */
        g[4 * h + 2] = _mm_unpacklo_epi32(e[4 * h + 1], e[4 * h + 3]);   /* rows 8h+4, +5 */
        g[4 * h + 3] = _mm_unpackhi_epi32(e[4 * h + 1], e[4 * h + 3]);   /* rows 8h+6, +7 */
    }
    for (int i = 0; i < count; ++i) {
        __m128i pair = g[(i >> 3) * 4 + ((i & 7) >> 1)];
        if (i & 1) pair = _mm_srli_si128(pair, 8);
        _mm_storel_epi64((__m128i *)(rows[i] - 4), pair);
    }
}

static inline void dsp_filter_vertical_edge(uint8_t *s, int stride, int count, int edge_limit,
                                            int interior, int hev_threshold, int kind) {
    uint8_t *rows[16];
    for (int i = 0; i < 16; ++i)
        rows[i] = s + (i < count ? i : 0) * stride;
    dsp_filter_vertical_rows(rows, count, edge_limit, interior, hev_threshold, kind);
}

/* The same edge of both chroma planes at once: U's 8 rows or columns in the low half of each
 * register, V's in the high half (the planes' edges share their thresholds). */
static inline void dsp_filter_vertical_edge_uv(uint8_t *u, uint8_t *v, int stride,
                                               int edge_limit, int interior, int hev_threshold,
                                               int kind) {
    uint8_t *rows[16];
    for (int i = 0; i < 8; ++i) {
        rows[i] = u + i * stride;
        rows[8 + i] = v + i * stride;
    }
    dsp_filter_vertical_rows(rows, 16, edge_limit, interior, hev_threshold, kind);
}

static inline void dsp_filter_horizontal_edge_uv(uint8_t *u, uint8_t *v, int stride,
                                                 int edge_limit, int interior, int hev_threshold,
                                                 int kind) {
    __m128i x[8];
    for (int i = 0; i < 8; ++i)
        x[i] = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)(u + (i - 4) * stride)),
                                  _mm_loadl_epi64((const __m128i *)(v + (i - 4) * stride)));
    dsp_filter_vectors(x, edge_limit, interior, hev_threshold, kind);
    for (int i = 1; i < 7; ++i) {
        _mm_storel_epi64((__m128i *)(u + (i - 4) * stride), x[i]);
        _mm_storel_epi64((__m128i *)(v + (i - 4) * stride), _mm_unpackhi_epi64(x[i], x[i]));
    }
}

#else
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

static inline void dsp_filter_vertical_edge_uv(uint8_t *u, uint8_t *v, int stride,
                                               int edge_limit, int interior, int hev_threshold,
                                               int kind) {
    dsp_filter_vertical_edge(u, stride, 8, edge_limit, interior, hev_threshold, kind);
    dsp_filter_vertical_edge(v, stride, 8, edge_limit, interior, hev_threshold, kind);
}

static inline void dsp_filter_horizontal_edge_uv(uint8_t *u, uint8_t *v, int stride,
                                                 int edge_limit, int interior, int hev_threshold,
                                                 int kind) {
    dsp_filter_horizontal_edge(u, stride, 8, edge_limit, interior, hev_threshold, kind);
    dsp_filter_horizontal_edge(v, stride, 8, edge_limit, interior, hev_threshold, kind);
}

#endif

/* Inverse DCT of a 4x4 block added to the prediction in dst (section 14.3). Sums are taken in
 * 16 bits, wrapping as libvpx's x86 code (which vpxdec runs) computes them; for every block a
 * valid stream holds this equals the section's wider arithmetic. The products are the spec's
 * (x * 35468) >> 16 and x + ((x * 20091) >> 16). */
static inline int16_t dsp_idct_sin(int16_t x) { return (int16_t)((x * 35468) >> 16); }
static inline int16_t dsp_idct_cos(int16_t x) { return (int16_t)(x + ((x * 20091) >> 16)); }

static inline void dsp_idct_add_c(const int16_t *in, uint8_t *dst, int stride) {
    int16_t tmp[16];
    for (int i = 0; i < 4; ++i) {
        int16_t a1 = (int16_t)(in[i] + in[8 + i]), b1 = (int16_t)(in[i] - in[8 + i]);
        int16_t c1 = (int16_t)(dsp_idct_sin(in[4 + i]) - dsp_idct_cos(in[12 + i]));
        int16_t d1 = (int16_t)(dsp_idct_cos(in[4 + i]) + dsp_idct_sin(in[12 + i]));
        tmp[i] = (int16_t)(a1 + d1);
        tmp[12 + i] = (int16_t)(a1 - d1);
        tmp[4 + i] = (int16_t)(b1 + c1);
        tmp[8 + i] = (int16_t)(b1 - c1);
    }
    for (int i = 0; i < 4; ++i, dst += stride) {
        const int16_t *t = tmp + 4 * i;
        int16_t a1 = (int16_t)(t[0] + t[2]), b1 = (int16_t)(t[0] - t[2]);
        int16_t c1 = (int16_t)(dsp_idct_sin(t[1]) - dsp_idct_cos(t[3]));
        int16_t d1 = (int16_t)(dsp_idct_cos(t[1]) + dsp_idct_sin(t[3]));
        int16_t out[4] = {(int16_t)((int16_t)(a1 + d1 + 4) >> 3),
                          (int16_t)((int16_t)(b1 + c1 + 4) >> 3),
                          (int16_t)((int16_t)(b1 - c1 + 4) >> 3),
                          (int16_t)((int16_t)(a1 - d1 + 4) >> 3)};
        for (int c = 0; c < 4; ++c)
            dst[c] = (uint8_t)dsp_uclamp(dst[c] + out[c]);
    }
}

#if defined(__SSE2__)
#include <emmintrin.h>

/* One 1-D pass over four vectors (x0..x3 = the rows, or columns, of 4 lanes). */
static inline void dsp_idct_pass(__m128i *x) {
    const __m128i k_sin = _mm_set1_epi16((short)(35468 - 65536));   /* x*35468>>16 - x */
    const __m128i k_cos = _mm_set1_epi16(20091);
    __m128i a1 = _mm_add_epi16(x[0], x[2]), b1 = _mm_sub_epi16(x[0], x[2]);
    __m128i sin1 = _mm_add_epi16(_mm_mulhi_epi16(x[1], k_sin), x[1]);
    __m128i sin3 = _mm_add_epi16(_mm_mulhi_epi16(x[3], k_sin), x[3]);
    __m128i cos1 = _mm_add_epi16(_mm_mulhi_epi16(x[1], k_cos), x[1]);
    __m128i cos3 = _mm_add_epi16(_mm_mulhi_epi16(x[3], k_cos), x[3]);
    __m128i c1 = _mm_sub_epi16(sin1, cos3), d1 = _mm_add_epi16(cos1, sin3);
    x[0] = _mm_add_epi16(a1, d1);
    x[1] = _mm_add_epi16(b1, c1);
    x[2] = _mm_sub_epi16(b1, c1);
    x[3] = _mm_sub_epi16(a1, d1);
}

/* Transposes the 4x4 held in the low halves of four registers. */
static inline void dsp_transpose4(__m128i *x) {
    __m128i t01 = _mm_unpacklo_epi16(x[0], x[1]), t23 = _mm_unpacklo_epi16(x[2], x[3]);
    __m128i lo = _mm_unpacklo_epi32(t01, t23), hi = _mm_unpackhi_epi32(t01, t23);
    x[0] = lo;
    x[1] = _mm_unpackhi_epi64(lo, lo);
    x[2] = hi;
    x[3] = _mm_unpackhi_epi64(hi, hi);
}

static inline void dsp_idct_add(const int16_t *in, uint8_t *dst, int stride) {
    const __m128i zero = _mm_setzero_si128();
    __m128i x[4];
    /* The first pass runs down the columns: x[k] = row k of the input. */
    for (int k = 0; k < 4; ++k)
        x[k] = _mm_loadl_epi64((const __m128i *)(in + 4 * k));
    /* Rows in x[0..3] hold elements k of every column: a pass over them is the column pass,
     * with outputs in x[0]=row 0, x[1]=row 1 (b1+c1), x[2]=row 2 (b1-c1), x[3]=row 3. */
    dsp_idct_pass(x);
    dsp_transpose4(x);                /* x[k] = column k of the intermediate = row k's values */
    dsp_idct_pass(x);                 /* x[k] = output column k, lanes = rows */
    dsp_transpose4(x);                /* x[k] = output row k */
    for (int k = 0; k < 4; ++k, dst += stride) {
        __m128i residual = _mm_srai_epi16(_mm_add_epi16(x[k], _mm_set1_epi16(4)), 3);
        int32_t p;
        memcpy(&p, dst, 4);
        __m128i sum = _mm_add_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(p), zero), residual);
        p = _mm_cvtsi128_si32(_mm_packus_epi16(sum, sum));
        memcpy(dst, &p, 4);
    }
}
#else
static inline void dsp_idct_add(const int16_t *in, uint8_t *dst, int stride) {
    dsp_idct_add_c(in, dst, stride);
}
#endif

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

#if defined(__SSE2__)
/* The six taps as vectors. Taps 1 and 4 are never positive, the others never negative
 * (section 18.3), so the positive and negative parts are summed separately in unsigned 16 bits
 * without overflow; the saturating subtraction then clamps below at 0 exactly as the filter's
 * own clamp does. */
typedef struct { __m128i t0, t1, t2, t3, t4, t5; } dsp_taps;

static inline dsp_taps dsp_make_taps(const int16_t *f) {
    dsp_taps t;
    t.t0 = _mm_set1_epi16(f[0]); t.t1 = _mm_set1_epi16((short)-f[1]);
    t.t2 = _mm_set1_epi16(f[2]); t.t3 = _mm_set1_epi16(f[3]);
    t.t4 = _mm_set1_epi16((short)-f[4]); t.t5 = _mm_set1_epi16(f[5]);
    return t;
}

/* One group of 8 outputs from six rows/offsets of 16-bit pixels; still 16-bit, packed
 * (saturating at 255) by the caller. */
static inline __m128i dsp_sixtap_group(__m128i v0, __m128i v1, __m128i v2, __m128i v3,
                                       __m128i v4, __m128i v5, const dsp_taps *t) {
    __m128i pos = _mm_add_epi16(
        _mm_add_epi16(_mm_mullo_epi16(v0, t->t0), _mm_mullo_epi16(v2, t->t2)),
        _mm_add_epi16(_mm_mullo_epi16(v3, t->t3), _mm_mullo_epi16(v5, t->t5)));
    __m128i neg = _mm_add_epi16(_mm_mullo_epi16(v1, t->t1), _mm_mullo_epi16(v4, t->t4));
    __m128i r = _mm_subs_epu16(_mm_add_epi16(pos, _mm_set1_epi16(64)), neg);
    return _mm_srli_epi16(r, 7);
}

static inline __m128i dsp_load8(const uint8_t *p) {
    return _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)p), _mm_setzero_si128());
}

static inline __m128i dsp_load4(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm_unpacklo_epi8(_mm_cvtsi32_si128(v), _mm_setzero_si128());
}

static inline void dsp_store_group(uint8_t *dst, __m128i v, int n) {
    __m128i packed = _mm_packus_epi16(v, v);
    if (n == 8) {
        _mm_storel_epi64((__m128i *)dst, packed);
    } else {
        int32_t w = _mm_cvtsi128_si32(packed);
        memcpy(dst, &w, 4);
    }
}

/* Horizontal pass over `rows` rows: a 16-wide row from six unaligned 16-byte loads. */
static inline void dsp_sixtap_horizontal(const uint8_t *src, int src_stride, uint8_t *dst,
                                         int dst_stride, int width, int rows,
                                         const int16_t *f) {
    const dsp_taps t = dsp_make_taps(f);
    const __m128i zero = _mm_setzero_si128();
    for (int r = 0; r < rows; ++r) {
        const uint8_t *p = src + r * src_stride - 2;
        uint8_t *d = dst + r * dst_stride;
        if (width == 16) {
            __m128i b[6], lo, hi;
            for (int k = 0; k < 6; ++k)
                b[k] = _mm_loadu_si128((const __m128i *)(p + k));
            lo = dsp_sixtap_group(_mm_unpacklo_epi8(b[0], zero), _mm_unpacklo_epi8(b[1], zero),
                                  _mm_unpacklo_epi8(b[2], zero), _mm_unpacklo_epi8(b[3], zero),
                                  _mm_unpacklo_epi8(b[4], zero), _mm_unpacklo_epi8(b[5], zero),
                                  &t);
            hi = dsp_sixtap_group(_mm_unpackhi_epi8(b[0], zero), _mm_unpackhi_epi8(b[1], zero),
                                  _mm_unpackhi_epi8(b[2], zero), _mm_unpackhi_epi8(b[3], zero),
                                  _mm_unpackhi_epi8(b[4], zero), _mm_unpackhi_epi8(b[5], zero),
                                  &t);
            _mm_storeu_si128((__m128i *)d, _mm_packus_epi16(lo, hi));
        } else {
            int n = width < 8 ? 4 : 8;
            __m128i v[6];
            for (int k = 0; k < 6; ++k)
                v[k] = n == 8 ? dsp_load8(p + k) : dsp_load4(p + k);
            dsp_store_group(d, dsp_sixtap_group(v[0], v[1], v[2], v[3], v[4], v[5], &t), n);
        }
    }
}

/* Vertical pass: down each column group with the six source rows in a sliding window, so
 * each output row loads one new row. */
static inline void dsp_sixtap_vertical(const uint8_t *src, int src_stride, uint8_t *dst,
                                       int dst_stride, int width, int height,
                                       const int16_t *f) {
    const dsp_taps t = dsp_make_taps(f);
    int n = width < 8 ? 4 : 8;
    for (int c = 0; c < width; c += n) {
        const uint8_t *s = src + c - 2 * src_stride;
        __m128i v0, v1, v2, v3, v4, v5;
        if (n == 8) {
            v0 = dsp_load8(s); v1 = dsp_load8(s + src_stride); v2 = dsp_load8(s + 2 * src_stride);
            v3 = dsp_load8(s + 3 * src_stride); v4 = dsp_load8(s + 4 * src_stride);
        } else {
            v0 = dsp_load4(s); v1 = dsp_load4(s + src_stride); v2 = dsp_load4(s + 2 * src_stride);
            v3 = dsp_load4(s + 3 * src_stride); v4 = dsp_load4(s + 4 * src_stride);
        }
        for (int r = 0; r < height; ++r) {
            const uint8_t *next = s + (r + 5) * src_stride;
            v5 = n == 8 ? dsp_load8(next) : dsp_load4(next);
            dsp_store_group(dst + r * dst_stride + c,
                            dsp_sixtap_group(v0, v1, v2, v3, v4, v5, &t), n);
            v0 = v1; v1 = v2; v2 = v3; v3 = v4; v4 = v5;
        }
    }
}

static inline void dsp_sixtap(const uint8_t *src, int src_stride, uint8_t *dst, int dst_stride,
                              int width, int height, const int16_t *hf, const int16_t *vf) {
    uint8_t tmp[21 * 16];
    if (hf && vf) {
        dsp_sixtap_horizontal(src - 2 * src_stride, src_stride, tmp, 16, width, height + 5, hf);
        dsp_sixtap_vertical(tmp + 2 * 16, 16, dst, dst_stride, width, height, vf);
    } else if (hf) {
        dsp_sixtap_horizontal(src, src_stride, dst, dst_stride, width, height, hf);
    } else {
        dsp_sixtap_vertical(src, src_stride, dst, dst_stride, width, height, vf);
    }
}
#else
static inline void dsp_sixtap(const uint8_t *src, int src_stride, uint8_t *dst, int dst_stride,
                              int width, int height, const int16_t *hf, const int16_t *vf) {
    if (width == 16) dsp_sixtap_w(src, src_stride, dst, dst_stride, 16, height, hf, vf);
    else if (width == 8) dsp_sixtap_w(src, src_stride, dst, dst_stride, 8, height, hf, vf);
    else dsp_sixtap_w(src, src_stride, dst, dst_stride, 4, height, hf, vf);
}

#endif
#endif
