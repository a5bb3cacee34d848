"""Phase 1 of ExCamera: libvpx (`vpxenc`) encodes one chunk on its own, with the original's
settings.

ExCamera's workers ran (mu / gg / the step-function port, all alike):

    vpxenc --ivf -q --codec=vp8 --good --cpu-used=0 --end-usage=cq --min-q=0 --max-q=63
           --cq-level=Q --buf-initial-sz=10000 --buf-optimal-sz=20000 --buf-sz=40000
           --undershoot-pct=100 --passes=2 --auto-alt-ref=1 --threads=1 --token-parts=0
           --tune=ssim --target-bitrate=4294967295

We add `--lag-in-frames` (alt-ref frames need look-ahead; VP8's default lag is 0, which would
silently disable them) and `--disable-kf` with an unbounded key-frame distance, so the chunk's
first frame is its only key frame: the rebase stages turn exactly that frame into an
interframe. The huge target bitrate makes the cap of constant-quality mode irrelevant, so every
frame is coded at the cq level (vpxenc's default target, 256 kbit/s, would cap it).
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import ToolError

__all__ = [
    "DEFAULT_CQ_LEVEL",
    "EncodeSettings",
    "find_vpxenc",
    "is_key_frame",
    "is_shown",
    "run_vpxenc",
    "vpxenc_command",
    "vpxenc_version",
]

DEFAULT_CQ_LEVEL = 20
MAX_CQ_LEVEL = 63
MAX_LAG_IN_FRAMES = 25  # libvpx's limit for VP8
_INSTALL_HINT = "install vpx-tools (e.g. apt-get install vpx-tools)"


@dataclass(frozen=True)
class EncodeSettings:
    """How phase 1 encodes a chunk.

    `cq_level` (0-63, lower is better) is used as is unless `target_ssim_db` is set; then each
    chunk gets the largest cq level whose libvpx encode reaches that SSIM (dB, libvpx's SSIM
    over all planes), found by bisection over 0-63.
    """

    cq_level: int = DEFAULT_CQ_LEVEL
    target_ssim_db: float | None = None
    lag_in_frames: int = MAX_LAG_IN_FRAMES
    vpxenc: str = "vpxenc"

    def __post_init__(self) -> None:
        if not 0 <= self.cq_level <= MAX_CQ_LEVEL:
            raise ValueError(f"cq level must be 0-{MAX_CQ_LEVEL}, got {self.cq_level}")
        if self.target_ssim_db is not None and not 0 < self.target_ssim_db <= 100:
            raise ValueError(f"target SSIM must be in (0, 100] dB, got {self.target_ssim_db}")
        if not 0 <= self.lag_in_frames <= MAX_LAG_IN_FRAMES:
            raise ValueError(f"lag in frames must be 0-{MAX_LAG_IN_FRAMES}")

    def describe(self) -> str:
        if self.target_ssim_db is not None:
            return f"ssim>={self.target_ssim_db:g}dB"
        return f"cq{self.cq_level}"


def vpxenc_command(
    vpxenc: str, cq_level: int, lag_in_frames: int, source: Path, output: Path
) -> list[str]:
    return [
        vpxenc,
        "--codec=vp8",
        "--ivf",
        "--quiet",
        "--good",
        "--cpu-used=0",
        "--end-usage=cq",
        "--min-q=0",
        "--max-q=63",
        f"--cq-level={cq_level}",
        "--target-bitrate=4294967295",
        "--buf-initial-sz=10000",
        "--buf-optimal-sz=20000",
        "--buf-sz=40000",
        "--undershoot-pct=100",
        "--passes=2",
        "--auto-alt-ref=1",
        f"--lag-in-frames={lag_in_frames}",
        "--tune=ssim",
        "--threads=1",
        "--token-parts=0",
        "--kf-min-dist=0",
        "--kf-max-dist=99999",
        "--disable-kf",
        "-o",
        str(output),
        str(source),
    ]


def find_vpxenc(name: str = "vpxenc") -> str:
    """The absolute path of vpxenc, or ToolError saying how to get it."""
    path = shutil.which(name)
    if path is None:
        raise ToolError(f"{name} not found: {_INSTALL_HINT}")
    return path


@functools.cache
def vpxenc_version(vpxenc: str) -> str:
    """libvpx's VP8 encoder version as vpxenc reports it (part of a job's identity)."""
    try:
        result = subprocess.run([vpxenc, "--help"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolError(f"{vpxenc} does not run: {exc}") from exc
    match = re.search(r"vp8\s+-\s+(.*VP8 Encoder \S+)", result.stdout + result.stderr)
    return match.group(1) if match else "unknown"


def run_vpxenc(
    vpxenc: str, cq_level: int, lag_in_frames: int, source: Path, workdir: Path
) -> bytes:
    """Encode the Y4M file `source`; returns the IVF file's bytes. Two-pass statistics stay
    in vpxenc's memory; `workdir` holds the output until it is read back."""
    output = workdir / f"vpx-cq{cq_level}.ivf"
    command = vpxenc_command(vpxenc, cq_level, lag_in_frames, source, output)
    try:
        result = subprocess.run(command, capture_output=True, text=True)
    except OSError as exc:
        raise ToolError(
            f"{vpxenc}: cannot run it ({exc.strerror or exc}); {_INSTALL_HINT}"
        ) from exc
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        detail = lines[-1] if lines else f"exit status {result.returncode}"
        raise ToolError(f"vpxenc failed on {source.name}: {detail}")
    return output.read_bytes()


def is_key_frame(frame: bytes) -> bool:
    """The frame tag's first bit (RFC 6386 section 9.1): 0 means key frame."""
    return len(frame) > 0 and frame[0] & 1 == 0


def is_shown(frame: bytes) -> bool:
    """The frame tag's show_frame bit (RFC 6386 section 9.1); alt-ref frames are hidden."""
    return len(frame) > 0 and bool(frame[0] & 0x10)
