"""Helpers shared by the encoder and rebase tests: source pictures, PSNR, straight decodes and
the libvpx comparison of a whole stream.

Sources are `vp8_streams` sources (Sintel, the carphone clip, synthetic patterns); the real ones
need the reference folder, which the `video_dir` fixture provides (skipping, or failing in CI,
when it is absent).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from decoder_support import first_difference, require_decoder, unavailable
from libvpx_oracle import join_ivf, pyav_frames, vpxdec_frames
from vp8_streams import Noise, Source, Synthetic

from shared.codec.metrics import psnr, ssim  # noqa: F401 - re-exported for the tests

codec = require_decoder()
try:
    import shared.codec.encoder  # noqa: F401 - the compiled encoder itself
except ImportError as exc:
    unavailable(f"the compiled encoder is not available ({exc}); build the extensions in place")
Image = codec.Image


def images(source: Source, request: pytest.FixtureRequest) -> list[Any]:
    """The source's pictures as `Image`s (real video only through the `video_dir` fixture)."""
    video = None if isinstance(source, Synthetic | Noise) else request.getfixturevalue("video_dir")
    return [Image(*planes) for planes in source.render(video)]


def mean_psnr(decoded: Sequence[Any], sources: Sequence[Any]) -> float:
    assert len(decoded) == len(sources), f"{len(decoded)} pictures for {len(sources)} sources"
    return float(np.mean([psnr(a, b) for a, b in zip(decoded, sources, strict=True)]))


def decode_chain(frames: Sequence[bytes], state: Any = None) -> tuple[list[Any], list[Any]]:
    """(state after each frame, shown images) of a straight decode with our decoder."""
    state = codec.DecoderState.initial() if state is None else state
    states, shown = [], []
    for frame in frames:
        state, image = codec.decode(state, frame)
        states.append(state)
        if image is not None:
            shown.append(image)
    return states, shown


def libvpx_difference(
    frames: Sequence[bytes], ours: Sequence[Any], *, vpxdec: bool = False
) -> str | None:
    """None if libvpx shows exactly `ours` for `frames`, else where it first differs.

    PyAV's libvpx decoder by default (in process, fast); `vpxdec=True` runs /usr/bin/vpxdec on
    the stream written as IVF.
    """
    if not vpxdec:
        return first_difference(pyav_frames(frames), ours)
    first = ours[0]
    with tempfile.TemporaryDirectory(prefix="encoder-test-") as tmp:
        path = Path(tmp) / "stream.ivf"
        path.write_bytes(join_ivf(frames, first.width, first.height))
        return first_difference(vpxdec_frames(path), ours)
