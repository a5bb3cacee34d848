"""A thin binding of libvpx's VP8 encoder API (`vpx/vpx_encoder.h`), for ExCamera's phase 1
in process: both passes in memory, no Y4M or IVF files, no `vpxenc` process.

    from shared.libvpx import encode_two_pass, version
    frames = encode_two_pass(images, width, height, (30, 1), cq_level=20, lag_in_frames=25)

`encode_two_pass` applies exactly the settings of `shared.pipeline.vpx.vpxenc_command` and
returns the frames vpxenc's IVF file would hold; `encode_two_pass_packets` adds each frame's
timestamps and libvpx flags (`Packet`). Errors raise `LibvpxError` (a `ToolError`).

The extension is built only where libvpx's headers and library are found (setup.py); importing
this package raises ImportError otherwise, and `shared.pipeline.vpx` falls back to vpxenc. Where
libvpx.a is found, libvpx is linked in with its allocations zeroed (`ZEROED_HEAP`, heap.c): with
--tune=ssim libvpx reads heap bytes it never wrote, and only so are the frames a function of the
input alone.
"""

from shared.pipeline.errors import LibvpxError

from .encoder import (
    FRAME_IS_INVISIBLE,
    FRAME_IS_KEY,
    MAX_CQ_LEVEL,
    MAX_DIMENSION,
    MAX_LAG_IN_FRAMES,
    ZEROED_HEAP,
    Packet,
    encode_two_pass,
    encode_two_pass_packets,
    encoder_name,
    version,
)

__all__ = [
    "FRAME_IS_INVISIBLE",
    "FRAME_IS_KEY",
    "MAX_CQ_LEVEL",
    "MAX_DIMENSION",
    "MAX_LAG_IN_FRAMES",
    "LibvpxError",
    "Packet",
    "ZEROED_HEAP",
    "encode_two_pass",
    "encode_two_pass_packets",
    "encoder_name",
    "version",
]
