"""The codec's exception types.

Every failure caused by input data (a stream, a container, a stored state) raises a subclass of
`CodecError`; each also inherits `ValueError` where the input was malformed, so callers may catch
either. Messages name the problem; callers add the file name and frame index.
"""


class CodecError(Exception):
    """Base class of every error the codec raises on bad or unsupported input."""


class CorruptFrameError(CodecError, ValueError):
    """A VP8 frame is malformed: truncated, bad start code, partitions past the end, ..."""


class MissingKeyFrameError(CorruptFrameError):
    """An interframe arrived but the state holds no decoded key frame to predict from."""


class UnsupportedStreamError(CodecError):
    """A well-formed frame uses something this codec refuses (e.g. a frame over the size limit)."""


class FrameSizeError(UnsupportedStreamError, ValueError):
    """Frame dimensions are zero or beyond the size limit; nothing was allocated."""


class StateFormatError(CodecError, ValueError):
    """Serialized decoder state is corrupt, truncated, or from an incompatible format version."""


class ContainerError(CodecError, ValueError):
    """An IVF or Y4M file is malformed or in a format this package does not accept."""
