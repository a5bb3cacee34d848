"""Every generated stream (see `vp8_streams`) decodes exactly as libvpx decodes it.

The oracle is vpxdec; `test_oracle.py` checks it against PyAV's libvpx and the conformance suite.
Hidden frames must give no image, and every shown frame must equal libvpx's, plane by plane.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from decoder_support import decode_all, first_difference, require_decoder
from libvpx_oracle import peek_header, read_ivf, vpxdec_frames
from vp8_streams import TEST_STREAMS

codec = require_decoder()


@pytest.mark.parametrize("name", TEST_STREAMS)
def test_matches_libvpx(vp8_stream: Callable[[str], Path], name: str) -> None:
    path = vp8_stream(name)
    frames = read_ivf(path).frames
    decoded = decode_all(codec, frames)
    hidden = [i for i, f in enumerate(frames) if not peek_header(f).show_frame]
    assert [i for i, image in enumerate(decoded.images) if image is None] == hidden
    problem = first_difference(vpxdec_frames(path), decoded.shown)
    assert problem is None, f"{name}: {problem}"
