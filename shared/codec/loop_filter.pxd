from .frame_context cimport FrameContext

cdef void loop_filter_frame(FrameContext* fc) noexcept nogil
