from .frame_context cimport Plane

cdef class Picture:
    cdef readonly object y
    cdef readonly object u
    cdef readonly object v
    cdef readonly int width
    cdef readonly int height
    cdef void planes(self, Plane* out)
