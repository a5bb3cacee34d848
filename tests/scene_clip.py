"""A real clip with two hard cuts, built from the reference videos: carphone 0-13, Big Buck
Bunny 0-9 (cropped to carphone's 176x144, no resampling), carphone 60-71."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared.codec.image import Image
from shared.pipeline.sources import open_source

CUTS = (14, 24)
WIDTH, HEIGHT = 176, 144


def frames_of(path: Path, wanted: range) -> list[Image]:
    with open_source(path) as source:
        return [image for number, image in enumerate(source.images) if number in wanted]


def _crop(image: Image, width: int, height: int) -> Image:
    top = (image.height - height) // 2 & ~1
    left = (image.width - width) // 2 & ~1

    def plane(p: np.ndarray, scale: int) -> np.ndarray:
        t, lft = top // scale, left // scale
        return p[t : t + height // scale, lft : lft + width // scale].copy()

    return Image(plane(image.y, 1), plane(image.u, 2), plane(image.v, 2))


def _write_y4m(path: Path, images: list[Image], fps: str = "30000:1001") -> Path:
    with open(path, "wb") as file:
        file.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F{fps} Ip A0:0 C420jpeg\n".encode())
        for image in images:
            file.write(b"FRAME\n" + b"".join(p.tobytes() for p in image.planes))
    return path


def joined_clip(video_dir: Path, path: Path) -> Path:
    """Writes the joined clip to `path` (a y4m) and returns it; its cuts are `CUTS`."""
    carphone = frames_of(video_dir / "clips" / "carphone_pristine.mp4", range(72))
    bbb = frames_of(video_dir / "clips" / "bigbuckbunny.mp4", range(10))
    images = carphone[:14] + [_crop(image, WIDTH, HEIGHT) for image in bbb] + carphone[60:72]
    return _write_y4m(path, images)
