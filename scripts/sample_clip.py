"""Write a small synthetic VP8 clip with vpxenc, for trying excamera on any machine.

    .venv/bin/python scripts/sample_clip.py sample.ivf [--size 352x288] [--frames 30]

The picture is made here (a scrolling textured background with a moving disc and colour
gradients), so nothing needs downloading; vpxenc (package vpx-tools) encodes it: key frame
plus interframes at good quality, one thread.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys

import numpy as np

VPXENC_ARGS = [
    "--codec=vp8",
    "--good",
    "--cpu-used=1",
    "--end-usage=cq",
    "--cq-level=20",
    "--target-bitrate=4000",
    "--passes=1",
    "--threads=1",
]


def frames(width: int, height: int, count: int):
    """I420 frames as bytes: texture panning diagonally, a disc moving on its own path."""
    yy, xx = np.mgrid[0 : 2 * height, 0 : 2 * width].astype(np.float32)
    texture = (
        128
        + 50 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
        + 30 * np.sin((xx + 2 * yy) / 31.0)
        + 12 * np.sin(xx * yy / 4000.0)
    )
    cy, cx = np.mgrid[0 : height // 2, 0 : width // 2].astype(np.float32)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    radius = min(width, height) / 6
    for i in range(count):
        dx, dy = (3 * i) % width, (2 * i) % height  # whole-pixel pan: motion search finds it
        luma = texture[dy : dy + height, dx : dx + width].copy()
        x0 = width * (0.2 + 0.6 * (i % 20) / 19)
        y0 = height * (0.5 + 0.3 * np.sin(i / 4))
        disc = (cols - x0) ** 2 + (rows - y0) ** 2 < radius**2
        luma[disc] = 235 - 40 * np.sin((cols[disc] - x0) / 5)
        u = 128 + 60 * np.sin(cx / 40 + i / 10)
        v = 128 + 60 * np.cos(cy / 30 - i / 12)
        yield b"".join(np.clip(plane, 0, 255).astype(np.uint8).tobytes() for plane in (luma, u, v))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", help="the IVF file to write")
    parser.add_argument("--size", default="352x288", help="WIDTHxHEIGHT, even (default 352x288)")
    parser.add_argument("--frames", type=int, default=30, help="number of frames (default 30)")
    args = parser.parse_args(argv)
    try:
        width, height = (int(n) for n in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size {args.size!r}: expected WIDTHxHEIGHT")
    if width < 16 or height < 16 or width % 2 or height % 2 or args.frames < 1:
        parser.error("the size must be even and at least 16x16, and --frames at least 1")
    vpxenc = shutil.which("vpxenc")
    if vpxenc is None:
        sys.exit("vpxenc not found: install vpx-tools (bash scripts/setup.sh does, as root)")

    cmd = [vpxenc, *VPXENC_ARGS, "--ivf", "--quiet", "-o", args.output, "-"]
    with subprocess.Popen(cmd, stdin=subprocess.PIPE) as proc:
        assert proc.stdin is not None
        proc.stdin.write(f"YUV4MPEG2 W{width} H{height} F25:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames(width, height, args.frames):
            proc.stdin.write(b"FRAME\n" + frame)
        proc.stdin.close()
    if proc.returncode != 0:
        sys.exit(f"vpxenc failed with exit code {proc.returncode}")
    print(f"wrote {args.output}: {args.frames} frames, {width}x{height}, VP8 in IVF")
    return 0


if __name__ == "__main__":
    sys.exit(main())
