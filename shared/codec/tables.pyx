"""Python view of the constant VP8 tables (for tests and tools); the codec reads tables.h."""

import numpy as np

from .tables cimport (
    VP8_AC_QLOOKUP,
    VP8_BILINEAR_FILTERS,
    VP8_COEF_BANDS,
    VP8_COEF_DEFAULT_PROBS,
    VP8_COEF_UPDATE_PROBS,
    VP8_DC_QLOOKUP,
    VP8_KF_BMODE_PROBS,
    VP8_MODE_CONTEXTS,
    VP8_MV_DEFAULT_PROBS,
    VP8_MV_UPDATE_PROBS,
    VP8_SIXTAP_FILTERS,
    VP8_ZIGZAG,
)


cdef object _copy(const void* data, Py_ssize_t size, dtype, shape):
    return np.frombuffer((<const char*>data)[:size], dtype=dtype).reshape(shape).copy()


def table(name: str) -> np.ndarray:
    """Return a copy of the named constant table as a numpy array."""
    if name == "coef_default_probs":
        return _copy(VP8_COEF_DEFAULT_PROBS, 1056, np.uint8, (4, 8, 3, 11))
    if name == "coef_update_probs":
        return _copy(VP8_COEF_UPDATE_PROBS, 1056, np.uint8, (4, 8, 3, 11))
    if name == "kf_bmode_probs":
        return _copy(VP8_KF_BMODE_PROBS, 900, np.uint8, (10, 10, 9))
    if name == "mv_default_probs":
        return _copy(VP8_MV_DEFAULT_PROBS, 38, np.uint8, (2, 19))
    if name == "mv_update_probs":
        return _copy(VP8_MV_UPDATE_PROBS, 38, np.uint8, (2, 19))
    if name == "mode_contexts":
        return _copy(VP8_MODE_CONTEXTS, 24, np.uint8, (6, 4))
    if name == "zigzag":
        return _copy(VP8_ZIGZAG, 16, np.uint8, (16,))
    if name == "coef_bands":
        return _copy(VP8_COEF_BANDS, 16, np.uint8, (16,))
    if name == "dc_qlookup":
        return _copy(VP8_DC_QLOOKUP, 256, np.int16, (128,))
    if name == "ac_qlookup":
        return _copy(VP8_AC_QLOOKUP, 256, np.int16, (128,))
    if name == "sixtap_filters":
        return _copy(VP8_SIXTAP_FILTERS, 96, np.int16, (8, 6))
    if name == "bilinear_filters":
        return _copy(VP8_BILINEAR_FILTERS, 32, np.int16, (8, 2))
    raise KeyError(name)
