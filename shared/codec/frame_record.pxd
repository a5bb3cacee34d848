from libc.stdint cimport int16_t, uint8_t

from .frame_context cimport FrameContext, MacroblockInfo
from .frame_header cimport (
    EntropyContext,
    FrameHeader,
    FrameTag,
    LoopFilterDeltas,
    SegmentFeatures,
)


cdef void set_prediction_options(FrameContext* fc) noexcept nogil


cdef class FrameRecord:
    # Everything coded in one frame: the header, the probabilities and segment/filter values in
    # force, every macroblock's decisions and every block's coded levels. Rebase keeps the
    # decisions; the writer turns a record back into the same bytes.
    cdef FrameTag tag
    cdef FrameHeader hdr
    cdef EntropyContext probs
    cdef SegmentFeatures features
    cdef LoopFilterDeltas deltas
    cdef readonly int mb_cols
    cdef readonly int mb_rows
    cdef int mb_info_stride
    cdef MacroblockInfo* mb_info      # (mb_rows + 1) x (mb_cols + 1) with a zeroed border
    cdef int16_t* levels              # [mb][25][16] raster order within each block
    cdef uint8_t* level_eobs          # [mb][25]
    cdef readonly object segment_map  # ids in force after this frame
    cdef readonly object image        # the decoded picture (an Image), shown or not

    cdef MacroblockInfo* macroblock(self, int mb_row, int mb_col) noexcept nogil
    cdef void adopt(self, FrameContext* fc, object segment_map)
    cdef void describe(self, FrameContext* fc)
