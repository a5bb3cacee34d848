"""The decoder state: everything VP8 carries from one frame to the next, as an immutable value.

Fields follow libvpx's semantics: the persistent probabilities (coefficients, intra modes, MVs),
segment features and the per-macroblock segment map, loop-filter deltas, the frame size, and the
three references (last, golden, alt-ref). Per-frame header fields (quantizers, sign biases, skip
and reference probabilities, ...) are not state.

Serialized form (`to_bytes`): magic b"EXCS", u16 format version, u16 flags, u32 CRC-32 of
version, flags and the body, then the body. References that share pixels are stored once.
By default planes are stored as horizontal byte differences (which compress far better than raw
pixels) and the body is deflated at zlib's fastest level. For states handed along ExCamera's
serial critical path on fast local storage, `compress=False` stores the planes raw (flag 1) and
the body as it is (flag 2: no zlib wrapper, so writing and reading are little more than copies).
Flag 1 alone (raw planes inside a level-0 zlib stream) is still read. A state without its
reference pictures (`without_references()`: what parsing frames needs, not what decoding them
needs) is stored with flag 4 and an empty reference table.
"""

import hashlib
import struct
import zlib

import numpy as np

from libc.string cimport memcmp, memcpy

from .frame_header cimport entropy_context_defaults
from .frame_context cimport FrameContext
from .picture cimport Picture
from .tables cimport ALTREF_FRAME, GOLDEN_FRAME, LAST_FRAME

from .errors import StateFormatError
from .frame_header import MAX_FRAME_AREA
from .limits import MAX_STATE_BODY

MAGIC = b"EXCS"
FORMAT_VERSION = 1
FLAG_RAW_PLANES = 1       # planes stored as they are rather than as horizontal differences
FLAG_STORED_BODY = 2      # the body is not a zlib stream
FLAG_NO_REFERENCES = 4    # a parse context: no reference pictures
_HEADER = struct.Struct("<4sHHI")
_FIXED = struct.Struct("<BHHBB")
# Largest body a valid state can have: three distinct 4:2:0 pictures plus small fields.
_MAX_BODY = MAX_STATE_BODY


cdef class DecoderState:
    """Immutable; build one with `DecoderState.initial()`, `decode` or `from_bytes`."""

    def __init__(self):
        raise TypeError("use DecoderState.initial(), decode() or DecoderState.from_bytes()")

    @staticmethod
    def initial():
        """The state before any frame: the stream must start with a key frame."""
        cdef DecoderState state = DecoderState.__new__(DecoderState)
        state.has_keyframe = False
        entropy_context_defaults(&state.probs)
        state.segment_map = np.zeros((0, 0), np.uint8)
        state.segment_map.flags.writeable = False
        return state

    @property
    def mb_cols(self):
        return (self.width + 15) >> 4

    @property
    def mb_rows(self):
        return (self.height + 15) >> 4

    @property
    def has_references(self):
        """False for a parse context (`without_references`), which cannot decode frames."""
        return not self.has_keyframe or self.last is not None

    def without_references(self):
        """This state without its reference pictures: all that parsing frames made against it
        needs (probabilities, segmentation, loop-filter deltas, frame size), in a few kilobytes
        instead of megabytes. Decoding or encoding against it raises CodecError."""
        cdef DecoderState context = DecoderState.__new__(DecoderState)
        context.has_keyframe = self.has_keyframe
        context.width, context.height = self.width, self.height
        context.horizontal_scale = self.horizontal_scale
        context.vertical_scale = self.vertical_scale
        context.probs = self.probs
        context.features = self.features
        context.deltas = self.deltas
        context.segment_map = self.segment_map
        return context

    @property
    def references(self):
        """(last, golden, altref) pictures, or Nones before the first key frame."""
        return self.last, self.golden, self.altref

    def probabilities(self):
        """The persistent probabilities as numpy arrays (copies), for inspection and tests."""
        return {
            "coef": np.frombuffer(bytes((<char*>self.probs.coef)[:1056]), np.uint8)
            .reshape(4, 8, 3, 11).copy(),
            "ymode": np.array([self.probs.ymode[i] for i in range(4)], np.uint8),
            "uvmode": np.array([self.probs.uvmode[i] for i in range(3)], np.uint8),
            "mv": np.frombuffer(bytes((<char*>self.probs.mv)[:38]), np.uint8)
            .reshape(2, 19).copy(),
        }

    def segmentation(self):
        """(absolute, quantizer values, filter-level values, segment map) in force."""
        return (bool(self.features.absolute),
                tuple(self.features.quant[i] for i in range(4)),
                tuple(self.features.filter_level[i] for i in range(4)),
                self.segment_map)

    def loop_filter_deltas(self):
        """(by reference frame, by mode class) loop-filter level deltas in force."""
        return (tuple(self.deltas.ref[i] for i in range(4)),
                tuple(self.deltas.mode[i] for i in range(4)))

    cdef void reference_planes(self, FrameContext* fc):
        """Point a frame context's references at this state's last, golden and alt-ref."""
        self.last.planes(fc.refs[LAST_FRAME])
        self.golden.planes(fc.refs[GOLDEN_FRAME])
        self.altref.planes(fc.refs[ALTREF_FRAME])

    # --- serialization -------------------------------------------------------------------

    cdef bytes _payload(self):
        if self._payload_cache is None:
            self._payload_cache = self._build_payload(True)
        return self._payload_cache

    cdef bytes _build_payload(self, bint delta_planes):
        return b"".join(self._payload_parts(delta_planes))

    cdef list _payload_parts(self, bint delta_planes):
        parts = [_FIXED.pack(self.has_keyframe, self.width, self.height,
                             self.horizontal_scale, self.vertical_scale)]
        parts.append(bytes((<char*>&self.probs)[:sizeof(self.probs)]))
        parts.append(bytes((<char*>&self.features)[:sizeof(self.features)]))
        parts.append(bytes((<char*>&self.deltas)[:sizeof(self.deltas)]))
        parts.append(np.ascontiguousarray(self.segment_map, np.uint8).tobytes())
        if self.has_keyframe and self.last is None:
            parts.append(bytes(4))              # an empty reference table
        elif self.has_keyframe:
            distinct = []
            indices = []
            for picture in (self.last, self.golden, self.altref):
                for i, seen in enumerate(distinct):
                    if seen.same_pixels(picture):
                        indices.append(i)
                        break
                else:
                    indices.append(len(distinct))
                    distinct.append(picture)
            parts.append(bytes([len(distinct)] + indices))
            for picture in distinct:
                for plane in (picture.y, picture.u, picture.v):
                    parts.append(_delta_encode(plane) if delta_planes
                                 else memoryview(np.ascontiguousarray(plane)).cast("B"))
        return parts

    def to_bytes(self, compress: bool = True) -> bytes:
        """Versioned, checksummed serialization; `from_bytes` inverts it. Compressed by
        default; `compress=False` stores the planes raw (several times larger, several times
        faster both ways: for states handed between pipeline stages on fast storage)."""
        if compress:
            flags = 0 if self.has_references else FLAG_NO_REFERENCES
            body = zlib.compress(self._payload(), 1)
            return _HEADER.pack(MAGIC, FORMAT_VERSION, flags,
                                _checksum(FORMAT_VERSION, flags, body)) + body
        # The planes go from the pictures to the output in one copy, checksummed on the way.
        flags = FLAG_RAW_PLANES | FLAG_STORED_BODY
        if not self.has_references:
            flags |= FLAG_NO_REFERENCES
        parts = self._payload_parts(False)
        crc = _checksum(FORMAT_VERSION, flags, b"")
        for part in parts:
            crc = zlib.crc32(part, crc)
        return b"".join([_HEADER.pack(MAGIC, FORMAT_VERSION, flags, crc)] + parts)

    @staticmethod
    def from_bytes(data) -> "DecoderState":
        """Rebuild a state from `to_bytes` output; StateFormatError if it is not one."""
        if not isinstance(data, bytes):
            data = bytes(data)        # immutable: raw planes are read in place, not copied
        if len(data) < _HEADER.size:
            raise StateFormatError(f"state is truncated ({len(data)} bytes)")
        magic, version, flags, crc = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise StateFormatError("not an excamera decoder state (bad magic)")
        if version != FORMAT_VERSION:
            raise StateFormatError(
                f"state format version {version} is not supported (this build reads "
                f"version {FORMAT_VERSION})")
        known = FLAG_RAW_PLANES | FLAG_STORED_BODY | FLAG_NO_REFERENCES
        if flags & ~known or (flags & FLAG_STORED_BODY and not flags & FLAG_RAW_PLANES):
            raise StateFormatError(f"state has unknown flags {flags:#06x}")
        body = memoryview(data).cast("B")[_HEADER.size:]
        if _checksum(version, flags, body) != crc:
            raise StateFormatError("state checksum mismatch (corrupt or truncated state)")
        if flags & FLAG_STORED_BODY:
            if len(body) > _MAX_BODY:
                raise StateFormatError("state body is larger than any valid state")
            return _parse_payload(body, True, bool(flags & FLAG_NO_REFERENCES))
        try:
            inflater = zlib.decompressobj()
            payload = inflater.decompress(body, _MAX_BODY)
            if inflater.unconsumed_tail or not inflater.eof:
                raise StateFormatError("state body is larger than any valid state")
        except zlib.error as exc:
            raise StateFormatError(f"state body does not decompress: {exc}") from None
        return _parse_payload(payload, bool(flags & FLAG_RAW_PLANES),
                              bool(flags & FLAG_NO_REFERENCES))

    def digest(self) -> str:
        """A short hex digest of the whole state, for logs and quick comparisons."""
        return hashlib.sha256(self._payload()).hexdigest()[:16]

    def __eq__(self, other):
        if not isinstance(other, DecoderState):
            return NotImplemented
        return self._payload() == (<DecoderState>other)._payload()

    def __hash__(self):
        return hash(self._payload())

    def __repr__(self):
        if not self.has_keyframe:
            return "<DecoderState initial>"
        kind = "" if self.has_references else " parse context"
        return f"<DecoderState{kind} {self.width}x{self.height} {self.digest()}>"

    def __reduce__(self):
        return (DecoderState.from_bytes, (self.to_bytes(),))


def _checksum(version, flags, body) -> int:
    # Covers the header fields after the magic too, so no byte of a state goes unchecked.
    return zlib.crc32(body, zlib.crc32(struct.pack("<HH", version, flags)))


def _delta_encode(plane) -> bytes:
    rows = np.asarray(plane, dtype=np.uint8)
    diff = np.empty_like(rows)
    diff[:, 0] = rows[:, 0]
    np.subtract(rows[:, 1:], rows[:, :-1], out=diff[:, 1:])
    return diff.tobytes()


def _raw_plane(buffer, int height, int width):
    # A read-only view of the serialized bytes (which it keeps alive): no copy.
    return np.frombuffer(buffer, np.uint8, height * width).reshape(height, width)


def _delta_decode(buffer, int height, int width):
    diff = np.frombuffer(buffer, np.uint8, height * width).reshape(height, width)
    return np.cumsum(diff, axis=1, dtype=np.uint8)


cdef _parse_payload(payload, bint raw_planes, bint no_references=False):
    cdef DecoderState state = DecoderState.__new__(DecoderState)
    cdef Py_ssize_t pos = 0, need
    cdef const unsigned char[::1] view = payload
    cdef const unsigned char* raw = &view[0] if len(payload) else NULL
    cdef Py_ssize_t n = len(payload)
    if n < _FIXED.size + sizeof(state.probs) + sizeof(state.features) + sizeof(state.deltas):
        raise StateFormatError("state body is truncated")
    has_keyframe, width, height, hscale, vscale = _FIXED.unpack_from(payload, 0)
    pos = _FIXED.size
    memcpy(&state.probs, raw + pos, sizeof(state.probs))
    pos += sizeof(state.probs)
    memcpy(&state.features, raw + pos, sizeof(state.features))
    pos += sizeof(state.features)
    memcpy(&state.deltas, raw + pos, sizeof(state.deltas))
    pos += sizeof(state.deltas)
    state.has_keyframe = has_keyframe
    if not has_keyframe:
        if width or height or pos != n:
            raise StateFormatError("initial state carries unexpected data")
        state.segment_map = np.zeros((0, 0), np.uint8)
        state.segment_map.flags.writeable = False
        return state
    if width == 0 or height == 0 or width * height > MAX_FRAME_AREA or hscale > 3 or vscale > 3:
        raise StateFormatError(f"state has an invalid frame size {width}x{height}")
    state.width, state.height = width, height
    state.horizontal_scale, state.vertical_scale = hscale, vscale
    mb_cols = (width + 15) >> 4
    mb_rows = (height + 15) >> 4
    need = mb_cols * mb_rows + 4
    if pos + need > n:
        raise StateFormatError("state body is truncated (segment map)")
    state.segment_map = np.frombuffer(payload, np.uint8, mb_rows * mb_cols, pos) \
        .reshape(mb_rows, mb_cols).copy()
    if state.segment_map.max(initial=0) > 3:
        raise StateFormatError("state segment map holds ids above 3")
    state.segment_map.flags.writeable = False
    pos += mb_rows * mb_cols
    count = raw[pos]
    indices = [raw[pos + 1], raw[pos + 2], raw[pos + 3]]
    pos += 4
    if no_references:
        if count or any(indices) or pos != n:
            raise StateFormatError("a state without references carries reference data")
        return state
    if not 1 <= count <= 3 or any(i >= count for i in indices):
        raise StateFormatError("state reference table is invalid")
    luma = mb_rows * 16 * mb_cols * 16
    if n != pos + count * luma * 3 // 2:
        raise StateFormatError("state body has the wrong length for its frame size")
    pictures = []
    planes = _raw_plane if raw_planes else _delta_decode
    for _ in range(count):
        y = planes(payload[pos:pos + luma], mb_rows * 16, mb_cols * 16)
        pos += luma
        u = planes(payload[pos:pos + luma // 4], mb_rows * 8, mb_cols * 8)
        pos += luma // 4
        v = planes(payload[pos:pos + luma // 4], mb_rows * 8, mb_cols * 8)
        pos += luma // 4
        picture = Picture(y, u, v, width, height)
        picture.freeze()
        pictures.append(picture)
    state.last, state.golden, state.altref = (pictures[i] for i in indices)
    return state


cdef DecoderState _new_state():
    return DecoderState.__new__(DecoderState)
