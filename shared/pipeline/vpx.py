"""Phase 1 of ExCamera: libvpx encodes one chunk on its own, with the original's settings (in
process through the binding `shared.libvpx`, or by running `vpxenc`).

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

`encode_chunk` runs these settings in process through `shared.libvpx`, a thin Cython binding of
libvpx's encoder API, when that extension is built with libvpx linked in and its heap zeroed
(setup.py does so where libvpx-dev is installed): both passes in memory, the same configuration
and codec controls as vpxenc, and for the same libvpx the same bytes but where a libvpx bug
makes vpxenc's own output depend on its heap (shared/libvpx/heap.c; rare). Otherwise, or with
`EncodeSettings(encoder="vpxenc")` or EXCAMERA_PHASE1=vpxenc, it runs `vpxenc_command`, which
therefore stays the reference for the exact settings. (The binding takes the samples as they
are; vpxenc would resample the chroma of a C420mpeg2/C420paldv Y4M, which split never writes.)
"""

from __future__ import annotations

import functools
import io
import math
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType

from shared.codec.ivf import IvfWriter
from shared.codec.y4m import Y4mReader

from .errors import ToolError

__all__ = [
    "DEFAULT_CQ_LEVEL",
    "ENCODERS",
    "PHASE1_ENV",
    "EncodeSettings",
    "encode_chunk",
    "encoder_version",
    "find_vpxenc",
    "is_key_frame",
    "is_shown",
    "deterministic_libvpx",
    "load_libvpx",
    "prepare",
    "ssim_decibels",
    "resolve_encoder",
    "run_libvpx",
    "run_vpxenc",
    "vpxenc_command",
    "vpxenc_version",
]

DEFAULT_CQ_LEVEL = 20
MAX_CQ_LEVEL = 63
MAX_LAG_IN_FRAMES = 25  # libvpx's limit for VP8
_INSTALL_HINT = "install vpx-tools (e.g. apt-get install vpx-tools)"
# How phase 1 runs libvpx: "libvpx", the in-process binding (shared.libvpx); "vpxenc", the
# command; "auto", the binding when it is built with its zeroed heap, else vpxenc (PHASE1_ENV
# overrides "auto").
ENCODERS = ("auto", "libvpx", "vpxenc")
PHASE1_ENV = "EXCAMERA_PHASE1"


MAX_SSIM_DB = 100  # an SSIM of 0.9999999999: beyond it, a target is lossless in all but name


AMBIGUOUS_SSIM = ("1 is ambiguous (an SSIM of 1 is lossless, 1 dB an SSIM of 0.21); give dB "
                  "(e.g. 16) or SSIM below 1 (e.g. 0.975)")


def ssim_decibels(value: float) -> float:
    """An SSIM target as the command line and job requests spell it, in dB: below 1 it is plain
    SSIM (0.98 -> 16.9897 dB, rounded to 6 places so that every spelling of a job agrees), else
    dB. ValueError for what no encode can be asked: 0 or less, past MAX_SSIM_DB, and 1 (an
    SSIM of 1, lossless, or 1 dB, an SSIM of 0.21? Neither is a target anyone means)."""
    shown = format(value, ".15g")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{shown} is not an SSIM target; give dB (e.g. 16) or SSIM below 1 "
                         "(e.g. 0.975)")
    if value == 1:
        raise ValueError(AMBIGUOUS_SSIM)
    decibels = round(-10 * math.log10(1 - value), 6) if value < 1 else float(value)
    if decibels <= 0:  # an SSIM so small that it rounds to 0 dB
        raise ValueError(f"{shown} rounds to 0 dB: not an SSIM target; give dB (e.g. 16) or "
                         "SSIM below 1 (e.g. 0.975)")
    if decibels > MAX_SSIM_DB:
        raise ValueError(f"{shown} is {decibels:g} dB; at most {MAX_SSIM_DB} dB (an SSIM of "
                         "0.9999999999) can be asked for")
    return decibels


@dataclass(frozen=True)
class EncodeSettings:
    """How phase 1 encodes a chunk.

    `cq_level` (0-63, lower is better) is used as is unless `target_ssim_db` is set; then each
    chunk gets the largest cq level whose libvpx encode reaches that SSIM (dB, libvpx's SSIM
    over all planes), found by bisection over 0-63. `encoder` picks how libvpx runs (ENCODERS):
    "auto" (the default) is the in-process binding when it is built with its zeroed heap, else
    `vpxenc`, the command at path `vpxenc`.
    """

    cq_level: int = DEFAULT_CQ_LEVEL
    target_ssim_db: float | None = None
    lag_in_frames: int = MAX_LAG_IN_FRAMES
    vpxenc: str = "vpxenc"
    encoder: str = "auto"  # one of ENCODERS

    def __post_init__(self) -> None:
        if not 0 <= self.cq_level <= MAX_CQ_LEVEL:
            raise ValueError(f"cq level must be 0-{MAX_CQ_LEVEL}, got {self.cq_level}")
        if self.target_ssim_db is not None and not 0 < self.target_ssim_db <= 100:
            raise ValueError(f"target SSIM must be in (0, 100] dB, got {self.target_ssim_db}")
        if not 0 <= self.lag_in_frames <= MAX_LAG_IN_FRAMES:
            raise ValueError(f"lag in frames must be 0-{MAX_LAG_IN_FRAMES}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {', '.join(ENCODERS)}, got {self.encoder!r}")

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
        # `source` is a temporary copy of the chunk's pictures: its name means nothing to users.
        raise ToolError(f"vpxenc failed to encode a chunk at cq {cq_level}: {detail}")
    return output.read_bytes()


# --------------------------------------------------------------------------- in process or not


@functools.cache
def load_libvpx() -> ModuleType | None:
    """The binding `shared.libvpx`, or None when its extension is not built (or does not load)."""
    try:
        import shared.libvpx as binding
    except ImportError:
        return None
    return binding


def deterministic_libvpx() -> bool:
    """Whether the binding is built and links libvpx with its heap zeroed (shared/libvpx/heap.c),
    so that its output is a function of the input alone: only then does "auto" choose it."""
    binding = load_libvpx()
    return binding is not None and bool(binding.ZEROED_HEAP)


def resolve_encoder(settings: EncodeSettings) -> EncodeSettings:
    """`settings` with `encoder` decided: "auto" becomes whatever EXCAMERA_PHASE1 names, else
    "libvpx" when the binding is built with its zeroed heap (`deterministic_libvpx`), else
    "vpxenc". ToolError when the binding is asked for but not built."""
    encoder = settings.encoder
    if encoder == "auto":
        wanted = os.environ.get(PHASE1_ENV, "auto").strip().lower() or "auto"
        if wanted not in ENCODERS:
            raise ToolError(f"{PHASE1_ENV}={wanted}: expected one of {', '.join(ENCODERS)}")
        encoder = wanted
    if encoder == "auto":
        encoder = "libvpx" if deterministic_libvpx() else "vpxenc"
    if encoder == "libvpx" and load_libvpx() is None:
        raise ToolError(
            "the libvpx binding (shared.libvpx) is not built: install libvpx-dev and reinstall "
            "(bash scripts/setup.sh), or use vpxenc"
        )
    return settings if encoder == settings.encoder else replace(settings, encoder=encoder)


def prepare(settings: EncodeSettings) -> EncodeSettings:
    """What workers get: the encoder decided and, for vpxenc, its absolute path (their PATH is
    not consulted again). ToolError, saying how to get it, when the encoder is missing."""
    settings = resolve_encoder(settings)
    if settings.encoder == "vpxenc":
        settings = replace(settings, vpxenc=find_vpxenc(settings.vpxenc))
    return settings


def encoder_version(settings: EncodeSettings) -> str:
    """The version of the libvpx that phase 1 runs (part of a job's identity): the binding's
    libvpx, or vpxenc's."""
    settings = resolve_encoder(settings)
    if settings.encoder == "libvpx":
        binding = load_libvpx()
        assert binding is not None
        return f"libvpx {binding.version()} in process ({binding.encoder_name()})"
    return vpxenc_version(settings.vpxenc)


def run_libvpx(cq_level: int, lag_in_frames: int, source: Path) -> bytes:
    """`run_vpxenc` in process: the Y4M file `source` encoded by the binding, returned as the
    IVF file vpxenc would write (same header, frames and timestamps)."""
    binding = load_libvpx()
    if binding is None:
        raise ToolError("the libvpx binding (shared.libvpx) is not built")
    with Y4mReader(source) as reader:
        pictures = list(reader)
        header = reader.header
    packets = binding.encode_two_pass_packets(
        pictures, header.width, header.height, header.fps,
        cq_level=cq_level, lag_in_frames=lag_in_frames,
    )
    buffer = io.BytesIO()
    fps_num, fps_den = header.fps
    with IvfWriter(buffer, header.width, header.height, timebase=(fps_den, fps_num)) as writer:
        for packet in packets:
            writer.write(packet.data, packet.pts)
    return buffer.getvalue()


def encode_chunk(settings: EncodeSettings, cq_level: int, source: Path, workdir: Path) -> bytes:
    """Phase 1 on one chunk: the Y4M file `source` encoded at `cq_level` with the settings of
    `vpxenc_command`, in process through the binding or by vpxenc (`settings.encoder`);
    returns the IVF file's bytes. `workdir` is where vpxenc writes its output."""
    settings = resolve_encoder(settings)
    if settings.encoder == "libvpx":
        return run_libvpx(cq_level, settings.lag_in_frames, source)
    return run_vpxenc(settings.vpxenc, cq_level, settings.lag_in_frames, source, workdir)


def is_key_frame(frame: bytes) -> bool:
    """The frame tag's first bit (RFC 6386 section 9.1): 0 means key frame."""
    return len(frame) > 0 and frame[0] & 1 == 0


def is_shown(frame: bytes) -> bool:
    """The frame tag's show_frame bit (RFC 6386 section 9.1); alt-ref frames are hidden."""
    return len(frame) > 0 and bool(frame[0] & 0x10)
