"""A decoded frame buffer: three macroblock-aligned planes plus the frame's display size.

Pictures are immutable once decoded (their arrays are read-only), so states share them freely:
refreshing golden from last is taking another reference, never a copy.
"""

import numpy as np

cimport numpy as cnp

from .frame_context cimport Plane

cnp.import_array()


cdef class Picture:
    def __init__(self, y, u, v, int width, int height):
        mb_width = (width + 15) & ~15
        mb_height = (height + 15) & ~15
        if y.shape != (mb_height, mb_width) or u.shape != (mb_height // 2, mb_width // 2) \
                or v.shape != u.shape:
            raise ValueError("plane shapes do not match the macroblock-aligned frame size")
        self.y = np.ascontiguousarray(y, dtype=np.uint8)
        self.u = np.ascontiguousarray(u, dtype=np.uint8)
        self.v = np.ascontiguousarray(v, dtype=np.uint8)
        self.width = width
        self.height = height

    @staticmethod
    def allocate(int width, int height):
        """Uninitialised writable planes for a frame about to be decoded."""
        mb_width = (width + 15) & ~15
        mb_height = (height + 15) & ~15
        return Picture(np.empty((mb_height, mb_width), np.uint8),
                       np.empty((mb_height // 2, mb_width // 2), np.uint8),
                       np.empty((mb_height // 2, mb_width // 2), np.uint8), width, height)

    def freeze(self):
        for plane in (self.y, self.u, self.v):
            plane.flags.writeable = False

    def cropped(self):
        """Read-only views of the display area: Y, then U and V of ceil(w/2) x ceil(h/2)."""
        cw = (self.width + 1) // 2
        ch = (self.height + 1) // 2
        return self.y[:self.height, :self.width], self.u[:ch, :cw], self.v[:ch, :cw]

    def same_pixels(self, Picture other):
        return self is other or (self.width == other.width and self.height == other.height
                                 and np.array_equal(self.y, other.y)
                                 and np.array_equal(self.u, other.u)
                                 and np.array_equal(self.v, other.v))

    cdef void planes(self, Plane* out):
        cdef cnp.ndarray arr
        for i, arr in enumerate((self.y, self.u, self.v)):
            out[i].data = <unsigned char*>cnp.PyArray_DATA(arr)
            out[i].stride = arr.shape[1]
            out[i].width = arr.shape[1]
            out[i].height = arr.shape[0]

    def __repr__(self):
        return f"<Picture {self.width}x{self.height}>"
