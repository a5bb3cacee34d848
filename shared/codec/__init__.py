"""A VP8 codec in explicit state-passing style.

    state = DecoderState.initial()
    state, image = decode(state, frame)      # image is None for a hidden frame
    frame = encode_keyframe(image, quality)  # quality: quantizer index 0..127
    frame = encode(state, image, quality)    # an interframe against state's references
    frame = rebase(state, image, frame, original_state)
    frames, exit_state = rebase_chunk(state, chunk_frames, source_images)

`DecoderState` is an immutable value holding everything VP8 carries between frames; `decode`
never mutates its input. Containers: `shared.codec.ivf`, `shared.codec.y4m`.
Errors: `shared.codec.errors` (all subclasses of `CodecError`).
"""

from importlib import import_module

from .errors import (
    CodecError,
    ContainerError,
    CorruptFrameError,
    FrameSizeError,
    MissingKeyFrameError,
    StateFormatError,
    UnsupportedStreamError,
)

# Compiled names are imported on first use, so pure-Python parts (errors, containers) work
# without loading the extensions.
_LAZY = {
    "encode": "encoder",
    "encode_keyframe": "encoder",
    "rebase": "encoder",
    "rebase_chunk": "chunk_rebase",
    "decode_record": "decoder",
    "DecoderState": "state",
    "Image": "image",
    "decode": "decoder",
    "peek_frame_info": "frame_header",
    "FrameInfo": "frame_header",
}

__all__ = [
    "CodecError",
    "ContainerError",
    "CorruptFrameError",
    "DecoderState",
    "FrameInfo",
    "FrameSizeError",
    "Image",
    "MissingKeyFrameError",
    "StateFormatError",
    "UnsupportedStreamError",
    "decode",
    "decode_record",
    "encode",
    "encode_keyframe",
    "peek_frame_info",
    "rebase",
    "rebase_chunk",
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
