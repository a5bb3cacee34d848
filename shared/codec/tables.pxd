# Declarations of the constant VP8 tables in tables.h (the single place they are written).
from libc.stdint cimport int8_t, int16_t, uint8_t

cdef extern from "tables.h" nogil:
    const uint8_t VP8_COEF_UPDATE_PROBS[4][8][3][11]
    const uint8_t VP8_COEF_DEFAULT_PROBS[4][8][3][11]
    const int16_t VP8_DC_QLOOKUP[128]
    const int16_t VP8_AC_QLOOKUP[128]
    const uint8_t VP8_MODE_CONTEXTS[6][4]
    const uint8_t VP8_MV_UPDATE_PROBS[2][19]
    const uint8_t VP8_MV_DEFAULT_PROBS[2][19]
    const uint8_t VP8_KF_BMODE_PROBS[10][10][9]
    const uint8_t VP8_BMODE_PROBS[9]
    const uint8_t VP8_SUBMV_REF_PROBS[5][3]
    const uint8_t VP8_MBSPLIT_PROBS[3]
    const int16_t VP8_SIXTAP_FILTERS[8][6]
    const int16_t VP8_BILINEAR_FILTERS[8][2]
    const uint8_t VP8_ZIGZAG[16]
    const uint8_t VP8_COEF_BANDS[16]
    const uint8_t VP8_PCAT1[2]
    const uint8_t VP8_PCAT2[3]
    const uint8_t VP8_PCAT3[4]
    const uint8_t VP8_PCAT4[5]
    const uint8_t VP8_PCAT5[6]
    const uint8_t VP8_PCAT6[12]
    const int16_t VP8_DCT_CAT_BASE[6]
    const uint8_t VP8_KF_YMODE_PROBS[4]
    const uint8_t VP8_KF_UVMODE_PROBS[3]
    const uint8_t VP8_YMODE_DEFAULT_PROBS[4]
    const uint8_t VP8_UVMODE_DEFAULT_PROBS[3]
    const int8_t VP8_YMODE_TREE[8]
    const int8_t VP8_KF_YMODE_TREE[8]
    const int8_t VP8_UVMODE_TREE[6]
    const int8_t VP8_BMODE_TREE[18]
    const int8_t VP8_SEGMENT_TREE[6]
    const int8_t VP8_MV_REF_TREE[8]
    const int8_t VP8_MBSPLIT_TREE[6]
    const int8_t VP8_SUBMV_REF_TREE[6]
    const int8_t VP8_SMALL_MV_TREE[14]
    const uint8_t VP8_MBSPLITS[4][16]
    const uint8_t VP8_MBSPLIT_COUNT[4]

    enum:
        DC_PRED, V_PRED, H_PRED, TM_PRED, B_PRED
        NEARESTMV, NEARMV, ZEROMV, NEWMV, SPLITMV
    enum:
        B_DC_PRED, B_TM_PRED, B_VE_PRED, B_HE_PRED, B_LD_PRED
        B_RD_PRED, B_VR_PRED, B_VL_PRED, B_HD_PRED, B_HU_PRED
        LEFT4X4, ABOVE4X4, ZERO4X4, NEW4X4
    enum:
        INTRA_FRAME, LAST_FRAME, GOLDEN_FRAME, ALTREF_FRAME
    enum:
        SPLIT_16X8, SPLIT_8X16, SPLIT_QUARTERS, SPLIT_4X4
    enum:
        BLOCK_Y_AFTER_Y2, BLOCK_Y2, BLOCK_UV, BLOCK_Y_WITH_DC
    enum:
        MVP_IS_SHORT, MVP_SIGN, MVP_SHORT, MVP_BITS, MVP_COUNT, MV_LONG_BITS
