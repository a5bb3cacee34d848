from .frame_header cimport EntropyContext, LoopFilterDeltas, SegmentFeatures
from .frame_context cimport FrameContext
from .picture cimport Picture

cdef class DecoderState:
    cdef readonly bint has_keyframe
    cdef readonly int width
    cdef readonly int height
    cdef readonly int horizontal_scale
    cdef readonly int vertical_scale
    cdef EntropyContext probs
    cdef SegmentFeatures features
    cdef LoopFilterDeltas deltas
    cdef readonly object segment_map      # (mb_rows, mb_cols) uint8, read-only
    cdef readonly Picture last
    cdef readonly Picture golden
    cdef readonly Picture altref
    cdef bytes _payload_cache

    cdef bytes _payload(self)
    cdef void reference_planes(self, FrameContext* fc)
    cdef bytes _build_payload(self, bint delta_planes)
    cdef list _payload_parts(self, bint delta_planes)
