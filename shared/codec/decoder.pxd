from .frame_header cimport (
    EntropyContext,
    FrameHeader,
    FrameTag,
    LoopFilterDeltas,
    SegmentFeatures,
)
from .picture cimport Picture
from .state cimport DecoderState

cdef DecoderState next_state(DecoderState state, const FrameTag* tag, const FrameHeader* hdr,
                             const EntropyContext* probs, const SegmentFeatures* features,
                             const LoopFilterDeltas* deltas, object segment_map,
                             Picture picture, int width, int height)
