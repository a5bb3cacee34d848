/* Pixel kernels of the VP8 encoder: forward DCT of a residual, quantization, squared error, and
 * the block statistics that let a transform be skipped when it would quantize to nothing.
 *
 * Unlike the decoder's kernels these need not match libvpx bit for bit (an encoder may round as
 * it likes; only the reconstruction has to match the decoder's). They do have to give the same
 * results with and without SSE2, so each kernel has one integer definition: the portable C
 * version below states it, and the SSE2 version computes exactly the same values.
 */
#ifndef EXCAMERA_ENCODE_DSP_H
#define EXCAMERA_ENCODE_DSP_H
#include <stdint.h>
#include <string.h>

/* Forward DCT (section 14.3's inverse, run forwards): the orthonormal 4x4 DCT times two,
 * VP8's coefficient scale. Fixed point: the basis is in 1/4096 (cos(pi/8) and sin(pi/8) terms
 * times sqrt(2)/2: EDSP_K1 = 2676, EDSP_K3 = 1108; the DC term is exactly 2048), the first pass
 * keeps 3 fractional bits, the second rounds to the nearest integer. Every intermediate fits in
 * 16 bits and every product in 32, which is what lets SSE2 do it with pmaddwd. */
#define EDSP_K1 2676
#define EDSP_K3 1108

static inline void edsp_fdct_1d_rows(const int *x, int *t) {
    int a = x[0] + x[3], b = x[1] + x[2], c = x[1] - x[2], d = x[0] - x[3];
    t[0] = (a + b) * 4;
    t[2] = (a - b) * 4;
    t[1] = (EDSP_K1 * d + EDSP_K3 * c + 256) >> 9;
    t[3] = (EDSP_K3 * d - EDSP_K1 * c + 256) >> 9;
}

static inline void edsp_fdct_1d_cols(const int *x, int *t) {
    int a = x[0] + x[3], b = x[1] + x[2], c = x[1] - x[2], d = x[0] - x[3];
    t[0] = (a + b + 4) >> 3;
    t[2] = (a - b + 4) >> 3;
    t[1] = (EDSP_K1 * d + EDSP_K3 * c + 8192) >> 14;
    t[3] = (EDSP_K3 * d - EDSP_K1 * c + 8192) >> 14;
}

/* The definition, on a residual given directly (16 values, raster order, |r| <= 255). */
static inline void edsp_fdct4x4_residual(const int16_t *residual, int16_t *out) {
    int tmp[16], x[4], t[4];
    for (int r = 0; r < 4; ++r) {
        for (int c = 0; c < 4; ++c)
            x[c] = residual[4 * r + c];
        edsp_fdct_1d_rows(x, tmp + 4 * r);
    }
    for (int c = 0; c < 4; ++c) {
        for (int r = 0; r < 4; ++r)
            x[r] = tmp[4 * r + c];
        edsp_fdct_1d_cols(x, t);
        for (int v = 0; v < 4; ++v)
            out[4 * v + c] = (int16_t)t[v];
    }
}

/* The same of residual = src - pred over a 4x4 block. */
static inline void edsp_fdct4x4_c(const uint8_t *src, int src_stride, const uint8_t *pred,
                                  int pred_stride, int16_t *out) {
    int16_t residual[16];
    for (int r = 0; r < 4; ++r)
        for (int c = 0; c < 4; ++c)
            residual[4 * r + c] = (int16_t)(src[r * src_stride + c] - pred[r * pred_stride + c]);
    edsp_fdct4x4_residual(residual, out);
}

/* Quantization of one block in raster order with a dead zone: level = (|c| + bias) / q rounded
 * down, with bias = round * q / 256. The division is a multiply by the 16-bit reciprocal
 * ceil(65536 / q) (q >= 2 in VP8, so it fits), which can overshoot by one, then a correction;
 * levels saturate at 2047, the largest a token can carry. With first = 1 the
 * DC is left out (it travels in Y2) and set to 0. Returns the end of block: one past the last
 * nonzero level in zigzag order, at least `first`. */
static const uint8_t EDSP_ZIGZAG_POSITION[16] = {  /* raster index -> zigzag position + 1 */
    1, 2, 6, 7, 3, 5, 8, 13, 4, 9, 12, 14, 10, 11, 15, 16};

static inline int edsp_quantize_c(const int16_t *coeffs, int16_t *levels, int16_t *dequantized,
                                  int first, int dc_q, int ac_q, int dc_round, int ac_round) {
    int eob = first;
    for (int i = 0; i < 16; ++i) {
        int q = i == 0 ? dc_q : ac_q;
        int bias = ((i == 0 ? dc_round : ac_round) * q) >> 8;
        unsigned reciprocal = (65536u + q - 1) / q;
        int c = coeffs[i], a = c < 0 ? -c : c;
        int level = (int)(((unsigned)(a + bias) * reciprocal) >> 16);
        if (level * q > a + bias) level -= 1;
        if (level > 2047) level = 2047;
        if (i < first) level = 0;
        levels[i] = (int16_t)(c < 0 ? -level : level);
        dequantized[i] = (int16_t)(levels[i] * q);
        if (level && EDSP_ZIGZAG_POSITION[i] > eob) eob = EDSP_ZIGZAG_POSITION[i];
    }
    return eob;
}

/* Sum of squared differences over a width x height block. */
static inline int64_t edsp_sse_c(const uint8_t *a, int a_stride, const uint8_t *b, int b_stride,
                                 int width, int height) {
    int64_t total = 0;
    for (int r = 0; r < height; ++r)
        for (int c = 0; c < width; ++c) {
            int d = a[r * a_stride + c] - b[r * b_stride + c];
            total += d * d;
        }
    return total;
}

/* Sum of absolute differences over a size x size block (size 16 or 8): motion search's cost. */
static inline int edsp_sad_c(const uint8_t *a, int a_stride, const uint8_t *b, int b_stride,
                             int size) {
    int total = 0;
    for (int r = 0; r < size; ++r)
        for (int c = 0; c < size; ++c) {
            int d = a[r * a_stride + c] - b[r * b_stride + c];
            total += d < 0 ? -d : d;
        }
    return total;
}

/* For skipping the transform of blocks that quantize to nothing: each of `count` (2 or 4)
 * side-by-side 4x4 blocks' sum of |src - pred| (sad) and of src - pred (sum). */
static inline void edsp_block_sad_sum_c(const uint8_t *src, int src_stride, const uint8_t *pred,
                                        int pred_stride, int count, int *sad, int *sum) {
    for (int b = 0; b < count; ++b) {
        int absolute = 0, total = 0;
        for (int r = 0; r < 4; ++r)
            for (int c = 0; c < 4; ++c) {
                int d = src[r * src_stride + 4 * b + c] - pred[r * pred_stride + 4 * b + c];
                absolute += d < 0 ? -d : d;
                total += d;
            }
        sad[b] = absolute;
        sum[b] = total;
    }
}

/* An upper bound on |every coefficient| of the forward DCT above of a block whose residual has
 * the given sad: 2676^2 / (512 * 16384) * sad (the largest row gain, then column gain) plus
 * the rounding both passes can add (2676 / 16384 * 4 * 1/2 + 1/2), all in 1/65536 rounded up.
 * A block whose bound is below q - bias quantizes to all zeros (edsp_quantize_c). */
static inline int edsp_coefficient_bound(int sad) {
    return (55946 * sad + 54179) >> 16;
}

/* The DC coefficient the forward DCT gives a block whose residual sums to `sum`: the rows pass
 * makes 4 * (row sum), the columns pass (total + 4) >> 3. */
static inline int edsp_dc_from_sum(int sum) {
    return (4 * sum + 4) >> 3;
}

#if defined(__SSE2__)
#include <emmintrin.h>

/* Transposes the 4x4 blocks held side by side in four registers (lanes 0-3: block A's row,
 * lanes 4-7: block B's row) into registers of columns, in the same layout. */
static inline void edsp_transpose_pair(__m128i *r) {
    __m128i ab01_lo = _mm_unpacklo_epi16(r[0], r[1]), ab01_hi = _mm_unpackhi_epi16(r[0], r[1]);
    __m128i ab23_lo = _mm_unpacklo_epi16(r[2], r[3]), ab23_hi = _mm_unpackhi_epi16(r[2], r[3]);
    __m128i a01 = _mm_unpacklo_epi32(ab01_lo, ab23_lo), a23 = _mm_unpackhi_epi32(ab01_lo, ab23_lo);
    __m128i b01 = _mm_unpacklo_epi32(ab01_hi, ab23_hi), b23 = _mm_unpackhi_epi32(ab01_hi, ab23_hi);
    r[0] = _mm_unpacklo_epi64(a01, b01);
    r[1] = _mm_unpackhi_epi64(a01, b01);
    r[2] = _mm_unpacklo_epi64(a23, b23);
    r[3] = _mm_unpackhi_epi64(a23, b23);
}

/* (k_d * d + k_c * c + round) >> shift for 8 lanes, through pmaddwd on interleaved pairs. */
static inline __m128i edsp_rotate(__m128i d, __m128i c, __m128i k, __m128i round, int shift) {
    __m128i lo = _mm_madd_epi16(_mm_unpacklo_epi16(d, c), k);
    __m128i hi = _mm_madd_epi16(_mm_unpackhi_epi16(d, c), k);
    lo = _mm_srai_epi32(_mm_add_epi32(lo, round), shift);
    hi = _mm_srai_epi32(_mm_add_epi32(hi, round), shift);
    return _mm_packs_epi32(lo, hi);
}

/* One pass of edsp_fdct_1d_rows (first) or _cols over the four registers of columns. */
static inline void edsp_fdct_pass(__m128i *x, int first) {
    const __m128i k_odd1 = _mm_set_epi16(EDSP_K3, EDSP_K1, EDSP_K3, EDSP_K1, EDSP_K3, EDSP_K1,
                                         EDSP_K3, EDSP_K1);
    const __m128i k_odd3 = _mm_set_epi16(-EDSP_K1, EDSP_K3, -EDSP_K1, EDSP_K3, -EDSP_K1, EDSP_K3,
                                         -EDSP_K1, EDSP_K3);
    __m128i a = _mm_add_epi16(x[0], x[3]), b = _mm_add_epi16(x[1], x[2]);
    __m128i c = _mm_sub_epi16(x[1], x[2]), d = _mm_sub_epi16(x[0], x[3]);
    __m128i round = _mm_set1_epi32(first ? 256 : 8192);
    int shift = first ? 9 : 14;
    if (first) {
        x[0] = _mm_slli_epi16(_mm_add_epi16(a, b), 2);
        x[2] = _mm_slli_epi16(_mm_sub_epi16(a, b), 2);
    } else {
        const __m128i four = _mm_set1_epi16(4);
        x[0] = _mm_srai_epi16(_mm_add_epi16(_mm_add_epi16(a, b), four), 3);
        x[2] = _mm_srai_epi16(_mm_add_epi16(_mm_sub_epi16(a, b), four), 3);
    }
    x[1] = edsp_rotate(d, c, k_odd1, round, shift);
    x[3] = edsp_rotate(d, c, k_odd3, round, shift);
}

/* Rows (already residuals, A|B layout) -> coefficients of both blocks. */
static inline void edsp_fdct_rows(__m128i *r, int16_t *out_a, int16_t *out_b) {
    edsp_transpose_pair(r);           /* columns of the residual */
    edsp_fdct_pass(r, 1);             /* r[k]: horizontal frequency k of every row */
    edsp_transpose_pair(r);           /* rows of the intermediate */
    edsp_fdct_pass(r, 0);             /* r[v]: vertical frequency v, lanes = horizontal */
    for (int v = 0; v < 4; ++v) {
        _mm_storel_epi64((__m128i *)(out_a + 4 * v), r[v]);
        if (out_b) _mm_storel_epi64((__m128i *)(out_b + 4 * v), _mm_unpackhi_epi64(r[v], r[v]));
    }
}

static inline __m128i edsp_residual_row(const uint8_t *src, const uint8_t *pred, int bytes) {
    const __m128i zero = _mm_setzero_si128();
    __m128i s, p;
    if (bytes == 8) {
        s = _mm_loadl_epi64((const __m128i *)src);
        p = _mm_loadl_epi64((const __m128i *)pred);
    } else {
        int32_t s4, p4;
        memcpy(&s4, src, 4);
        memcpy(&p4, pred, 4);
        s = _mm_cvtsi32_si128(s4);
        p = _mm_cvtsi32_si128(p4);
    }
    return _mm_sub_epi16(_mm_unpacklo_epi8(s, zero), _mm_unpacklo_epi8(p, zero));
}

/* Two horizontally adjacent 4x4 blocks (an 8x4 area). */
static inline void edsp_fdct_pair(const uint8_t *src, int src_stride, const uint8_t *pred,
                                  int pred_stride, int16_t *out_a, int16_t *out_b) {
    __m128i r[4];
    for (int i = 0; i < 4; ++i)
        r[i] = edsp_residual_row(src + i * src_stride, pred + i * pred_stride, 8);
    edsp_fdct_rows(r, out_a, out_b);
}

static inline void edsp_fdct4x4(const uint8_t *src, int src_stride, const uint8_t *pred,
                                int pred_stride, int16_t *out) {
    __m128i r[4];
    for (int i = 0; i < 4; ++i)
        r[i] = edsp_residual_row(src + i * src_stride, pred + i * pred_stride, 4);
    edsp_fdct_rows(r, out, NULL);
}

static inline int edsp_quantize(const int16_t *coeffs, int16_t *levels, int16_t *dequantized,
                                int first, int dc_q, int ac_q, int dc_round, int ac_round) {
    const __m128i zero = _mm_setzero_si128();
    const __m128i max_level = _mm_set1_epi16(2047);
    int dc_reciprocal = (65536 + dc_q - 1) / dc_q, ac_reciprocal = (65536 + ac_q - 1) / ac_q;
    __m128i q[2], bias[2], reciprocal[2], out[2], nonzero[2];
    q[0] = _mm_insert_epi16(_mm_set1_epi16((int16_t)ac_q), dc_q, 0);
    q[1] = _mm_set1_epi16((int16_t)ac_q);
    bias[0] = _mm_insert_epi16(_mm_set1_epi16((int16_t)((ac_round * ac_q) >> 8)),
                               (dc_round * dc_q) >> 8, 0);
    bias[1] = _mm_set1_epi16((int16_t)((ac_round * ac_q) >> 8));
    reciprocal[0] = _mm_insert_epi16(_mm_set1_epi16((int16_t)ac_reciprocal), dc_reciprocal, 0);
    reciprocal[1] = _mm_set1_epi16((int16_t)ac_reciprocal);
    for (int h = 0; h < 2; ++h) {
        __m128i c = _mm_loadu_si128((const __m128i *)(coeffs + 8 * h));
        __m128i sign = _mm_srai_epi16(c, 15);
        __m128i magnitude = _mm_sub_epi16(_mm_xor_si128(c, sign), sign);
        __m128i biased = _mm_add_epi16(magnitude, bias[h]);
        __m128i level = _mm_mulhi_epu16(biased, reciprocal[h]);
        /* -1 where level * q overshoots the biased magnitude (all values below 2^15 here). */
        level = _mm_add_epi16(level, _mm_cmpgt_epi16(_mm_mullo_epi16(level, q[h]), biased));
        level = _mm_min_epi16(level, max_level);
        if (h == 0 && first) level = _mm_insert_epi16(level, 0, 0);
        out[h] = _mm_sub_epi16(_mm_xor_si128(level, sign), sign);
        nonzero[h] = _mm_xor_si128(_mm_cmpeq_epi16(level, zero), _mm_set1_epi16(-1));
        _mm_storeu_si128((__m128i *)(levels + 8 * h), out[h]);
        _mm_storeu_si128((__m128i *)(dequantized + 8 * h), _mm_mullo_epi16(out[h], q[h]));
    }
    /* The largest zigzag position (plus one) among the nonzero levels. */
    __m128i positions = _mm_max_epi16(
        _mm_and_si128(nonzero[0], _mm_set_epi16(13, 8, 5, 3, 7, 6, 2, 1)),
        _mm_and_si128(nonzero[1], _mm_set_epi16(16, 15, 11, 10, 14, 12, 9, 4)));
    positions = _mm_max_epi16(positions, _mm_srli_si128(positions, 8));
    positions = _mm_max_epi16(positions, _mm_srli_si128(positions, 4));
    positions = _mm_max_epi16(positions, _mm_srli_si128(positions, 2));
    int eob = _mm_extract_epi16(positions, 0);
    return eob > first ? eob : first;
}

static inline int64_t edsp_sse(const uint8_t *a, int a_stride, const uint8_t *b, int b_stride,
                               int width, int height) {
    if (width != 16 && width != 8) return edsp_sse_c(a, a_stride, b, b_stride, width, height);
    const __m128i zero = _mm_setzero_si128();
    __m128i sum = _mm_setzero_si128();
    for (int r = 0; r < height; ++r) {
        for (int c = 0; c < width; c += 8) {
            __m128i x = _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(a + r * a_stride + c)), zero);
            __m128i y = _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(b + r * b_stride + c)), zero);
            __m128i d = _mm_sub_epi16(x, y);
            sum = _mm_add_epi32(sum, _mm_madd_epi16(d, d));
        }
    }
    /* At most 16x16 x 255^2 x 2 per lane: no overflow in 32 bits. */
    sum = _mm_add_epi32(sum, _mm_srli_si128(sum, 8));
    sum = _mm_add_epi32(sum, _mm_srli_si128(sum, 4));
    return (int64_t)(uint32_t)_mm_cvtsi128_si32(sum);
}

static inline int edsp_sad(const uint8_t *a, int a_stride, const uint8_t *b, int b_stride,
                           int size) {
    __m128i total = _mm_setzero_si128();
    if (size == 16) {
        for (int r = 0; r < 16; ++r)
            total = _mm_add_epi64(total, _mm_sad_epu8(
                _mm_loadu_si128((const __m128i *)(a + r * a_stride)),
                _mm_loadu_si128((const __m128i *)(b + r * b_stride))));
        total = _mm_add_epi64(total, _mm_srli_si128(total, 8));
    } else if (size == 8) {
        for (int r = 0; r < 8; ++r)
            total = _mm_add_epi64(total, _mm_sad_epu8(
                _mm_loadl_epi64((const __m128i *)(a + r * a_stride)),
                _mm_loadl_epi64((const __m128i *)(b + r * b_stride))));
    } else {
        return edsp_sad_c(a, a_stride, b, b_stride, size);
    }
    return _mm_cvtsi128_si32(total);
}

static inline void edsp_block_sad_sum(const uint8_t *src, int src_stride, const uint8_t *pred,
                                      int pred_stride, int count, int *sad, int *sum) {
    const __m128i zero = _mm_setzero_si128(), ones = _mm_set1_epi16(1);
    __m128i absolute[2] = {zero, zero}, total[2] = {zero, zero};
    for (int r = 0; r < 4; ++r) {
        __m128i x, y;
        if (count == 4) {
            x = _mm_loadu_si128((const __m128i *)(src + r * src_stride));
            y = _mm_loadu_si128((const __m128i *)(pred + r * pred_stride));
        } else {
            x = _mm_loadl_epi64((const __m128i *)(src + r * src_stride));
            y = _mm_loadl_epi64((const __m128i *)(pred + r * pred_stride));
        }
        __m128i difference = _mm_or_si128(_mm_subs_epu8(x, y), _mm_subs_epu8(y, x));
        absolute[0] = _mm_add_epi16(absolute[0], _mm_unpacklo_epi8(difference, zero));
        absolute[1] = _mm_add_epi16(absolute[1], _mm_unpackhi_epi8(difference, zero));
        total[0] = _mm_add_epi16(total[0], _mm_sub_epi16(_mm_unpacklo_epi8(x, zero),
                                                         _mm_unpacklo_epi8(y, zero)));
        total[1] = _mm_add_epi16(total[1], _mm_sub_epi16(_mm_unpackhi_epi8(x, zero),
                                                         _mm_unpackhi_epi8(y, zero)));
    }
    /* 16-bit lanes hold column sums (|value| <= 1020); add each block's 4 lanes in 32 bits. */
    for (int h = 0; h < count / 2; ++h) {
        __m128i a = _mm_madd_epi16(absolute[h], ones), t = _mm_madd_epi16(total[h], ones);
        a = _mm_add_epi32(a, _mm_shuffle_epi32(a, _MM_SHUFFLE(2, 3, 0, 1)));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, _MM_SHUFFLE(2, 3, 0, 1)));
        sad[2 * h] = _mm_cvtsi128_si32(a);
        sad[2 * h + 1] = _mm_cvtsi128_si32(_mm_srli_si128(a, 8));
        sum[2 * h] = _mm_cvtsi128_si32(t);
        sum[2 * h + 1] = _mm_cvtsi128_si32(_mm_srli_si128(t, 8));
    }
}

#else

static inline void edsp_fdct4x4(const uint8_t *src, int src_stride, const uint8_t *pred,
                                int pred_stride, int16_t *out) {
    edsp_fdct4x4_c(src, src_stride, pred, pred_stride, out);
}

static inline void edsp_fdct_pair(const uint8_t *src, int src_stride, const uint8_t *pred,
                                  int pred_stride, int16_t *out_a, int16_t *out_b) {
    edsp_fdct4x4_c(src, src_stride, pred, pred_stride, out_a);
    edsp_fdct4x4_c(src + 4, src_stride, pred + 4, pred_stride, out_b);
}

static inline int edsp_quantize(const int16_t *coeffs, int16_t *levels, int16_t *dequantized,
                                int first, int dc_q, int ac_q, int dc_round, int ac_round) {
    return edsp_quantize_c(coeffs, levels, dequantized, first, dc_q, ac_q, dc_round, ac_round);
}

static inline int64_t edsp_sse(const uint8_t *a, int a_stride, const uint8_t *b, int b_stride,
                               int width, int height) {
    return edsp_sse_c(a, a_stride, b, b_stride, width, height);
}

static inline int edsp_sad(const uint8_t *a, int a_stride, const uint8_t *b, int b_stride,
                           int size) {
    return edsp_sad_c(a, a_stride, b, b_stride, size);
}

static inline void edsp_block_sad_sum(const uint8_t *src, int src_stride, const uint8_t *pred,
                                      int pred_stride, int count, int *sad, int *sum) {
    edsp_block_sad_sum_c(src, src_stride, pred, pred_stride, count, sad, sum);
}
#endif
#endif
