# Pixel kernels written in C for vectorization (dsp.h): loop-filter edges, inverse DCT,
# six-tap filter.
from libc.stdint cimport int16_t, uint8_t

cdef extern from "dsp.h" nogil:
    void dsp_filter_horizontal_edge(uint8_t* s, int stride, int count, int edge_limit,
                                    int interior, int hev_threshold, int kind)
    void dsp_filter_vertical_edge(uint8_t* s, int stride, int count, int edge_limit,
                                  int interior, int hev_threshold, int kind)
    void dsp_filter_horizontal_edge_uv(uint8_t* u, uint8_t* v, int stride, int edge_limit,
                                       int interior, int hev_threshold, int kind)
    void dsp_filter_vertical_edge_uv(uint8_t* u, uint8_t* v, int stride, int edge_limit,
                                     int interior, int hev_threshold, int kind)
    void dsp_idct_add(const int16_t* input, uint8_t* dst, int stride)
    void dsp_idct_add_c(const int16_t* input, uint8_t* dst, int stride)
    void dsp_sixtap(const uint8_t* src, int src_stride, uint8_t* dst, int dst_stride, int width,
                    int height, const int16_t* hf, const int16_t* vf)
