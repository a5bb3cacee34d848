"""FrameRecord: a parsed frame (header, per-macroblock decisions, coded levels)."""

import numpy as np

from libc.stdlib cimport free

from .frame_context cimport FrameContext, MacroblockInfo
from .tables cimport ALTREF_FRAME, GOLDEN_FRAME


cdef void set_prediction_options(FrameContext* fc) noexcept nogil:
    """What the frame's version and header say about prediction: filter, whole-pixel chroma,
    and which references' vectors point the other way (section 9.7 and libvpx)."""
    fc.bilinear = 1 <= fc.tag.version <= 3
    fc.full_pixel = fc.tag.version == 3
    fc.sign_bias[GOLDEN_FRAME] = fc.hdr.sign_bias_golden
    fc.sign_bias[ALTREF_FRAME] = fc.hdr.sign_bias_altref


cdef class FrameRecord:
    def __cinit__(self):
        self.mb_info = NULL
        self.levels = NULL
        self.level_eobs = NULL

    def __dealloc__(self):
        free(self.mb_info)
        free(self.levels)
        free(self.level_eobs)

    cdef MacroblockInfo* macroblock(self, int mb_row, int mb_col) noexcept nogil:
        return self.mb_info + (mb_row + 1) * self.mb_info_stride + mb_col + 1

    cdef void adopt(self, FrameContext* fc, object segment_map):
        """Keep what a decode of this frame found, taking over its per-macroblock arrays."""
        self.tag = fc.tag
        self.hdr = fc.hdr
        self.probs = fc.probs
        self.features = fc.features
        self.deltas = fc.deltas
        self.mb_cols = fc.mb_cols
        self.mb_rows = fc.mb_rows
        self.mb_info_stride = fc.mb_info_stride
        self.segment_map = segment_map
        self.mb_info, fc.mb_info = fc.mb_info, NULL
        self.levels, fc.levels = fc.levels, NULL
        self.level_eobs, fc.level_eobs = fc.level_eobs, NULL

    cdef void describe(self, FrameContext* fc):
        """Set up a frame context for coding this record: header, probabilities, geometry and
        its macroblocks (shared, still owned by the record), and the prediction settings."""
        fc.tag = self.tag
        fc.hdr = self.hdr
        fc.features = self.features
        fc.deltas = self.deltas
        fc.probs = self.probs
        fc.mb_cols = self.mb_cols
        fc.mb_rows = self.mb_rows
        fc.mb_info_stride = self.mb_info_stride
        fc.mb_info = self.mb_info
        set_prediction_options(fc)

    @property
    def key_frame(self):
        return bool(self.tag.key_frame)

    @property
    def show_frame(self):
        return bool(self.tag.show_frame)

    @property
    def version(self):
        return self.tag.version

    @property
    def width(self):
        return self.tag.width

    @property
    def height(self):
        return self.tag.height

    @property
    def q_index(self):
        return self.hdr.q_index

    @property
    def header(self):
        """The frame header fields as a dict (presence flags included)."""
        result = dict(self.hdr)
        result.pop("coef_update")
        result["coef_updates"] = sum(1 for x in (<unsigned char*>self.hdr.coef_update)[:1056] if x)
        return result

    def follow_dropped_key_frame(self):
        """Make this interframe, which follows a key frame that is being dropped, also do what
        that key frame did to the golden and alt-ref references: take the picture in the last
        reference (copy flags, section 9.7), unless it refreshes them itself. Decoded after
        the frame before the key frame, it then leaves the references as the key frame would
        have, with the earlier picture in place of the key frame's."""
        if self.tag.key_frame:
            raise ValueError("a key frame refreshes every reference already")
        if not self.hdr.refresh_altref:
            self.hdr.copy_to_altref = 1
        if not self.hdr.refresh_golden:
            self.hdr.copy_to_golden = 1

    def macroblocks(self):
        """Per-macroblock decisions as numpy arrays: y_mode, uv_mode, ref_frame, segment_id,
        skip, mv (rows, cols, 2: row, col in 1/8 pel), b_modes (rows, cols, 16: subblock
        intra modes, implied ones for 16x16 modes; SPLITMV references for SPLITMV)."""
        cdef int r, c, b
        cdef MacroblockInfo* mb
        shape = (self.mb_rows, self.mb_cols)
        out = {name: np.zeros(shape, np.uint8)
               for name in ("y_mode", "uv_mode", "ref_frame", "segment_id", "skip")}
        mv = np.zeros(shape + (2,), np.int16)
        b_modes = np.zeros(shape + (16,), np.uint8)
        for r in range(self.mb_rows):
            for c in range(self.mb_cols):
                mb = self.macroblock(r, c)
                out["y_mode"][r, c] = mb.y_mode
                out["uv_mode"][r, c] = mb.uv_mode
                out["ref_frame"][r, c] = mb.ref_frame
                out["segment_id"][r, c] = mb.segment_id
                out["skip"][r, c] = mb.skip_coded
                mv[r, c, 0] = mb.mv.row
                mv[r, c, 1] = mb.mv.col
                for b in range(16):
                    b_modes[r, c, b] = mb.b_modes[b]
        out["mv"] = mv
        out["b_modes"] = b_modes
        return out

    def __repr__(self):
        kind = "key" if self.tag.key_frame else "inter"
        shown = "" if self.tag.show_frame else " hidden"
        return f"<FrameRecord {kind}{shown} {self.mb_cols}x{self.mb_rows} MBs q={self.hdr.q_index}>"
