"""Small media files that are valid but awkward, made with PyAV for the tests of inputs."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

# A 16x16 grey PNG (as PyAV's png encoder writes it).
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000010000000100802000000909168360000"
                    "000970485973000000000000000100847917730000001949444154789c634c4949612005"
                    "b090a47a54c3a88621a50100f695016ab25263e80000000049454e44ae426082")


def _write(path: Path, frames: Iterable[Any], *, container_format: str | None, codec: str,
           pixel_format: str, title: str | None = None) -> Path:
    """64x48 `frames` (PyAV VideoFrames) encoded with `codec` at 30 fps into `path`."""
    import av

    with av.open(str(path), "w", format=container_format) as container:
        if title is not None:
            container.metadata["title"] = title
        stream = container.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, pixel_format
        for index, frame in enumerate(frames):
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _picture(rgb: np.ndarray) -> Any:
    import av

    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")


def rawvideo(path: Path, pixel_format: str) -> Path:
    """Two black 64x48 pictures of `pixel_format` as raw video in NUT."""
    import av

    def black() -> Any:
        frame = av.VideoFrame(64, 48, pixel_format)
        for plane in frame.planes:
            memoryview(plane)[:] = bytes(plane.buffer_size)
        return frame

    return _write(path, (black() for _ in range(2)), container_format="nut", codec="rawvideo",
                  pixel_format=pixel_format)


def titled_video(path: Path) -> Path:
    """Three black 64x48 pictures (MPEG-4 in Matroska) whose title tag is not UTF-8."""
    black = (_picture(np.zeros((48, 64, 3), np.uint8)) for _ in range(3))
    _write(path, black, container_format=None, codec="mpeg4", pixel_format="yuv420p",
           title="TITLE_XX")
    data = path.read_bytes()
    assert data.count(b"TITLE_XX") == 1
    path.write_bytes(data.replace(b"TITLE_XX", b"TITLE_\xc3\x28"))  # an invalid UTF-8 pair
    return path


def noisy_clip(path: Path, container_format: str, frames: int) -> Path:
    """`frames` pictures of noise at 64x48 and 30 fps, video only (VP8 in WebM, MPEG-4 in
    other containers)."""
    rng = np.random.default_rng(1)
    noise = (_picture(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)) for _ in range(frames))
    return _write(path, noise, container_format=container_format,
                  codec="libvpx" if container_format == "webm" else "mpeg4",
                  pixel_format="yuv420p")
