# Encoder kernels written in C for SIMD (encode_dsp.h): forward DCT, quantization, squared error,
# and what skipping the transform of an empty block needs.
from libc.stdint cimport int16_t, int64_t, uint8_t

cdef extern from "encode_dsp.h" nogil:
    void edsp_fdct4x4(const uint8_t* src, int src_stride, const uint8_t* pred, int pred_stride,
                      int16_t* out)
    void edsp_fdct_pair(const uint8_t* src, int src_stride, const uint8_t* pred,
                        int pred_stride, int16_t* out_a, int16_t* out_b)
    void edsp_fdct4x4_c(const uint8_t* src, int src_stride, const uint8_t* pred,
                        int pred_stride, int16_t* out)
    void edsp_fdct4x4_residual(const int16_t* residual, int16_t* out)
    int edsp_quantize(const int16_t* coeffs, int16_t* levels, int16_t* dequantized, int first,
                      int dc_q, int ac_q, int dc_round, int ac_round)
    int edsp_quantize_c(const int16_t* coeffs, int16_t* levels, int16_t* dequantized,
                        int first, int dc_q, int ac_q, int dc_round, int ac_round)
    int64_t edsp_sse(const uint8_t* a, int a_stride, const uint8_t* b, int b_stride, int width,
                     int height)
    void edsp_block_sad_sum(const uint8_t* src, int src_stride, const uint8_t* pred,
                            int pred_stride, int count, int* sad, int* sum)
    void edsp_block_sad_sum_c(const uint8_t* src, int src_stride, const uint8_t* pred,
                              int pred_stride, int count, int* sad, int* sum)
    int edsp_coefficient_bound(int sad)
    int edsp_dc_from_sum(int sum)
    int edsp_sad(const uint8_t* a, int a_stride, const uint8_t* b, int b_stride, int size)
    int edsp_sad_c(const uint8_t* a, int a_stride, const uint8_t* b, int b_stride, int size)
