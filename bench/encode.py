"""Encoder benchmark: `shared.codec.encode` and `rebase` against vpxenc, in the same run.

    .venv/bin/python bench/encode.py [--frames N] [--quantizers Q,Q,...] [--clips sintel,bbb]
                                     [--quick] [--json]

Sources (decoded once to Y4M and cached under bench/.cache/):
  sintel  1024x436, the 24 frames of ../shared/video/sintel/chunk1..4.y4m
  bbb     1280x720, the first 10 frames (by default) of ../shared/video/clips/bigbuckbunny.mp4

Each clip is encoded at every quantizer index q (0..127) by
  excamera  `encode_keyframe` for frame 0, then `encode(state, image, q)` for each later frame,
            the state advanced with `decode`; all of that is timed (the pictures are preloaded)
  vpxenc    one pass, one thread, good quality, cpu-used 0, fixed quantizer (--end-usage=q with
            --cq-level = --min-q = --max-q = L, the 0-63 level libvpx's q_trans maps to the
            smallest index >= q), no alt-ref frames and no key frame after frame 0, like ours;
            timed by vpxenc's own encode time (excludes reading the Y4M), wall time shown too

Quality is measured on the decoded pictures against the source (vpxdec decodes vpxenc's
streams; ours are decoded by vpxdec too, to check libvpx sees what we measured): PSNR is the
mean over frames of each frame's PSNR over all three planes (libvpx's "Avg"), SSIM is
ssim_db(mean over frames of SSIM). Bitrate counts the frames' bytes, not the IVF framing.

BD-rate (Bjontegaard): a cubic fit of log bitrate against quality for each encoder, integrated
over the quality range both cover; the mean difference, as a percentage, is how many more bits
excamera spends than vpxenc for the same quality (negative: fewer).

Rebase: each interframe of excamera's stream at q is rebased onto the state that follows a
different key frame (frame 0 coded at q + 4), chained as ExCamera does; `rebase` calls alone
are timed against the `encode` calls alone for the same interframes.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

# bench/ is not a package: make decode.py importable however this file is run.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from decode import (  # noqa: E402
    CACHE,
    CLIPS,
    DEFAULT_SHARED,
    BenchError,
    Clip,
    cached,
    read_ivf,
    require_source,
    require_tool,
)

from shared.codec.image import Image  # noqa: E402  (pure Python; found through decode.py's path)

if TYPE_CHECKING:
    from shared.codec import DecoderState

GOAL_BD_RATE = 10.0  # percent, excamera vs vpxenc, at equal PSNR and at equal SSIM
GOAL_FPS_RATIO = 0.25  # excamera fps / vpxenc fps
GOAL_REBASE_SPEEDUP = 5.0  # rebase fps / encode fps

# libvpx vp8_cx_iface.c: the 0-63 level of --cq-level/--min-q/--max-q -> quantizer index.
Q_TRANS = (
    0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 12, 13, 15, 17, 18, 19,
    20, 21, 23, 24, 25, 26, 27, 28, 29, 30, 31, 33, 35, 37, 39, 41,
    43, 45, 47, 49, 51, 53, 55, 57, 59, 61, 64, 67, 70, 73, 76, 79,
    82, 85, 88, 91, 94, 97, 100, 103, 106, 109, 112, 115, 118, 121, 124, 127,
)  # fmt: skip
DEFAULT_QUANTIZERS = (9, 20, 29, 43, 59)  # Q_TRANS at levels 8, 16, 24, 32, 40
DEFAULT_FRAMES = {"sintel": 24, "bbb": 10}
QUICK_FRAMES = 8
REBASE_KEY_OFFSET = 4  # the other key frame's quantizer: q + 4 (q - 4 near the top)


VPXENC_ARGS = (
    "--codec=vp8",
    "--good",
    "--cpu-used=0",
    "--end-usage=q",
    "--passes=1",
    "--threads=1",
    "--auto-alt-ref=0",
    "--kf-max-dist=100000",
    "--disable-warning-prompt",  # min-q == max-q draws a warning
)


def vpxenc_args(level: str | int) -> tuple[str, ...]:
    return (*VPXENC_ARGS, f"--cq-level={level}", f"--min-q={level}", f"--max-q={level}")


def level_for(q_index: int) -> int:
    """vpxenc's 0-63 level for a quantizer index: the smallest whose q_trans is >= it."""
    return next(level for level, q in enumerate(Q_TRANS) if q >= q_index)


# ---------------------------------------------------------------------------------------------
# Sources.


def source_y4m(clip: Clip, shared: Path) -> Path:
    """The clip as Y4M, from bench/.cache/ or written now with decode.py's converters."""
    return cached(
        CACHE / f"{clip.name}-source.y4m",
        f"converting {clip.label}",
        lambda partial, _: clip.write_y4m(require_source(shared, clip.source), partial),
    )


def read_pictures(path: Path, frames: int) -> tuple[list[Image], tuple[int, int]]:
    """The first `frames` pictures of a Y4M file, and its frame rate."""
    from shared.codec.y4m import Y4mReader

    with Y4mReader(path) as reader:
        pictures = [image for _, image in zip(range(frames), reader, strict=False)]
        return pictures, reader.header.fps


def vpxdec_i420(ivf: Path) -> bytes:
    """Every decoded picture of an IVF stream as raw I420, from libvpx."""
    cmd = [require_tool("vpxdec"), "--codec=vp8", "--threads=1", "--i420", "-o", "-", str(ivf)]
    done = subprocess.run(cmd, capture_output=True)
    if done.returncode != 0:
        raise BenchError(f"vpxdec failed on {ivf.name} ({done.returncode}): {done.stderr!r}")
    return done.stdout


# ---------------------------------------------------------------------------------------------
# Results.


@dataclass
class Point:
    """One encoder at one quantizer over a clip's frames."""

    encoder: str
    q_index: int  # requested; for vpxenc Q_TRANS[cq_level]
    cq_level: int | None  # vpxenc only
    q_used: tuple[int, int]  # lowest and highest frame quantizer index in the stream
    frames: int
    bytes: int
    kbps: float
    psnr: float
    ssim: float
    ssim_db: float
    seconds: float  # encoding only (ours: encode + the decode that advances the state)
    wall_seconds: float  # ours: the same; vpxenc: the whole process
    fps: float
    key_frames: int
    libvpx_match: bool | None = None  # ours: vpxdec decodes the pictures we measured


@dataclass
class Rebase:
    """Rebasing excamera's stream at q onto the state after a key frame at key_q_index."""

    q_index: int
    key_q_index: int
    frames: int  # interframes rebased
    encode_seconds: float  # the `encode` calls that made those interframes
    rebase_seconds: float  # the `rebase` calls
    speedup: float  # encode_seconds / rebase_seconds
    original_bytes: int
    rebased_bytes: int
    original_psnr: float  # over the interframes
    rebased_psnr: float


@dataclass
class BdRate:
    metric: str
    percent: float | None  # None: the quality ranges do not overlap
    overlap: tuple[float, float] | None  # quality range integrated over (dB)


@dataclass
class ClipResult:
    clip: str
    width: int
    height: int
    frames: int
    frame_rate: float
    points: list[Point] = field(default_factory=list)
    rebases: list[Rebase] = field(default_factory=list)
    bd_rates: list[BdRate] = field(default_factory=list)
    ours_fps: float = 0.0
    vpxenc_fps: float = 0.0
    fps_ratio: float = 0.0
    encode_fps: float | None = None  # interframe `encode` calls alone (None: one frame only)
    rebase_fps: float | None = None
    rebase_speedup: float | None = None


# ---------------------------------------------------------------------------------------------
# Encoders.


def load_ours() -> None:
    """Fail early, and clearly, when the compiled codec is missing."""
    try:
        from shared.codec import decode, decode_record, encode, encode_keyframe, rebase  # noqa: F401
    except (ImportError, AttributeError) as exc:
        raise BenchError(
            "excamera's codec is not available (importing encode, rebase and decode from "
            f"shared.codec failed: {exc}).\nBuild it with `bash scripts/setup.sh` and run this "
            "script with `.venv/bin/python bench/encode.py`."
        ) from exc


def measure(pictures: list[Image], decoded: list[Image]) -> tuple[float, float]:
    """(mean per-frame PSNR, mean per-frame SSIM) of decoded pictures against the sources."""
    from shared.codec.metrics import psnr, ssim

    if len(decoded) != len(pictures):
        raise BenchError(f"{len(decoded)} pictures decoded for {len(pictures)} frames")
    return (
        float(np.mean([psnr(d, p) for d, p in zip(decoded, pictures, strict=True)])),
        float(np.mean([ssim(d, p) for d, p in zip(decoded, pictures, strict=True)])),
    )


def q_range(frames: list[bytes]) -> tuple[int, int]:
    """Lowest and highest frame quantizer index of a stream."""
    from shared.codec import DecoderState, decode_record

    state = DecoderState.initial()
    used = []
    for frame in frames:
        state, _, record = decode_record(state, frame)
        used.append(record.q_index)
    return min(used), max(used)


def make_point(
    encoder: str,
    q: int,
    level: int | None,
    frames: list[bytes],
    quality: tuple[float, float],
    seconds: float,
    wall: float,
    frame_rate: float,
) -> Point:
    from shared.codec import peek_frame_info
    from shared.codec.metrics import ssim_db

    size = sum(map(len, frames))
    return Point(
        encoder,
        q,
        level,
        q_range(frames),
        len(frames),
        size,
        size * 8 * frame_rate / len(frames) / 1000,
        quality[0],
        quality[1],
        ssim_db(quality[1]),
        seconds,
        wall,
        len(frames) / seconds,
        sum(peek_frame_info(frame).key_frame for frame in frames),
    )


def encode_ours(
    pictures: list[Image],
    q: int,
    frame_rate: float,
    tmp: Path,
) -> tuple[Point, Rebase | None]:
    from shared.codec import DecoderState, decode, encode, encode_keyframe
    from shared.codec.ivf import IvfWriter

    frames: list[bytes] = []
    decoded: list[Image] = []
    states: list[DecoderState] = []  # states[i]: what frame i was encoded against
    inter_seconds = 0.0
    seconds = 0.0
    state = DecoderState.initial()
    for index, picture in enumerate(pictures):
        states.append(state)
        started = time.perf_counter()
        frame = encode_keyframe(picture, q) if index == 0 else encode(state, picture, q)
        coded = time.perf_counter()
        state, image = decode(state, frame)
        seconds += time.perf_counter() - started
        if index:
            inter_seconds += coded - started
        frames.append(frame)
        decoded.append(image)
    quality = measure(pictures, decoded)
    point = make_point("excamera", q, None, frames, quality, seconds, seconds, frame_rate)

    # Does libvpx decode our stream to the pictures we measured?
    ivf = tmp / f"excamera-q{q}.ivf"
    width, height = pictures[0].size
    with IvfWriter(ivf, width, height) as writer:
        for frame in frames:
            writer.write(frame)
    point.libvpx_match = vpxdec_i420(ivf) == b"".join(image.to_i420() for image in decoded)

    if len(pictures) < 2:
        return point, None
    return point, rebase_ours(pictures, q, frames, states, decoded, inter_seconds)


def rebase_ours(
    pictures: list[Image],
    q: int,
    frames: list[bytes],
    states: list[DecoderState],
    decoded: list[Image],
    encode_seconds: float,
) -> Rebase:
    """Rebase frames[1:] onto the state after frame 0 coded at another quantizer."""
    from shared.codec import DecoderState, decode, encode_keyframe, rebase
    from shared.codec.metrics import psnr

    key_q = q + REBASE_KEY_OFFSET if q + REBASE_KEY_OFFSET <= 127 else q - REBASE_KEY_OFFSET
    key = encode_keyframe(pictures[0], key_q)
    state, _ = decode(DecoderState.initial(), key)
    seconds = 0.0
    rebased: list[bytes] = []
    rebased_psnr = []
    for index in range(1, len(frames)):
        started = time.perf_counter()
        frame = rebase(state, pictures[index], frames[index], states[index])
        seconds += time.perf_counter() - started
        state, image = decode(state, frame)
        rebased.append(frame)
        rebased_psnr.append(psnr(image, pictures[index]))
    original_psnr = [psnr(d, p) for d, p in zip(decoded[1:], pictures[1:], strict=True)]
    return Rebase(
        q,
        key_q,
        len(rebased),
        encode_seconds,
        seconds,
        encode_seconds / seconds,
        sum(map(len, frames[1:])),
        sum(map(len, rebased)),
        float(np.mean(original_psnr)),
        float(np.mean(rebased_psnr)),
    )


VPXENC_TIME = re.compile(r"(\d+) us \(([\d.]+) fps\)")


def encode_vpxenc(
    y4m: Path,
    pictures: list[Image],
    q: int,
    frame_rate: float,
    tmp: Path,
) -> Point:
    from shared.codec.y4m import read_raw_i420

    level = level_for(q)
    out = tmp / f"vpxenc-L{level}.ivf"
    n = len(pictures)
    cmd = [require_tool("vpxenc"), *vpxenc_args(level), f"--limit={n}", "--ivf", "-o", str(out)]
    started = time.perf_counter()
    done = subprocess.run([*cmd, str(y4m)], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(f"vpxenc failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr}")
    reported = VPXENC_TIME.findall(done.stderr)
    seconds = int(reported[-1][0]) / 1e6 if reported else wall  # its final summary line
    _, _, frames = read_ivf(out)
    if len(frames) != n:
        raise BenchError(f"vpxenc wrote {len(frames)} frames for {n} pictures: {' '.join(cmd)}")
    width, height = pictures[0].size
    decoded = list(read_raw_i420(io.BytesIO(vpxdec_i420(out)), width, height))
    quality = measure(pictures, decoded)
    return make_point("vpxenc", Q_TRANS[level], level, frames, quality, seconds, wall, frame_rate)


# ---------------------------------------------------------------------------------------------
# Bjontegaard delta rate.


def bd_rate(
    anchor: list[tuple[float, float]], test: list[tuple[float, float]]
) -> tuple[float, tuple[float, float]] | None:
    """Percent more bitrate `test` needs than `anchor` at equal quality, from (kbps, dB) points:
    cubic fits of log rate against quality, averaged over the common quality range."""
    fits, ranges = [], []
    for points in (anchor, test):
        rate, quality = np.log([p[0] for p in points]), np.array([p[1] for p in points])
        fits.append(np.polyint(np.polyfit(quality, rate, 3)))
        ranges.append((quality.min(), quality.max()))
    low, high = max(r[0] for r in ranges), min(r[1] for r in ranges)
    if not low < high:
        return None
    mean = [(np.polyval(f, high) - np.polyval(f, low)) / (high - low) for f in fits]
    return (math.exp(mean[1] - mean[0]) - 1) * 100, (float(low), float(high))


# ---------------------------------------------------------------------------------------------
# The run.


def bench_clip(clip: Clip, args: argparse.Namespace) -> ClipResult:
    y4m = source_y4m(clip, args.shared)
    pictures, (num, den) = read_pictures(y4m, args.frames or DEFAULT_FRAMES[clip.name])
    if not pictures:
        raise BenchError(f"{y4m}: no pictures")
    width, height = pictures[0].size
    frame_rate = num / den
    result = ClipResult(clip.label, width, height, len(pictures), frame_rate)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        for q in args.quantizers:
            print(f"{clip.name}: q {q} ...", file=sys.stderr, flush=True)
            point, rebased = encode_ours(pictures, q, frame_rate, Path(tmp))
            result.points.append(point)
            if rebased is not None:
                result.rebases.append(rebased)
            result.points.append(encode_vpxenc(y4m, pictures, q, frame_rate, Path(tmp)))

    ours = [p for p in result.points if p.encoder == "excamera"]
    vpx = [p for p in result.points if p.encoder == "vpxenc"]
    for metric in ("psnr", "ssim_db"):
        found = bd_rate(
            [(p.kbps, getattr(p, metric)) for p in vpx],
            [(p.kbps, getattr(p, metric)) for p in ours],
        )
        label = "PSNR" if metric == "psnr" else "SSIM (dB)"
        result.bd_rates.append(BdRate(label, *(found or (None, None))))

    def fps(points: list[Point]) -> float:
        return sum(p.frames for p in points) / sum(p.seconds for p in points)

    result.ours_fps, result.vpxenc_fps = fps(ours), fps(vpx)
    result.fps_ratio = result.ours_fps / result.vpxenc_fps
    if result.rebases:
        frames = sum(r.frames for r in result.rebases)
        encode_fps = frames / sum(r.encode_seconds for r in result.rebases)
        rebase_fps = frames / sum(r.rebase_seconds for r in result.rebases)
        result.encode_fps, result.rebase_fps = encode_fps, rebase_fps
        result.rebase_speedup = rebase_fps / encode_fps
    return result


def verdict(value: float | None, goal: float, at_most: bool = False) -> str:
    if value is None:
        return "n/a"
    return "met" if (value <= goal if at_most else value >= goal) else "NOT met"


def print_tables(result: ClipResult) -> None:
    print(
        f"\n{result.clip} {result.width}x{result.height}, {result.frames} frames at "
        f"{result.frame_rate:g} fps"
    )
    print(
        f"  {'encoder':<9} {'q':>4} {'L':>3} {'q used':>7} {'kbit/s':>9} {'PSNR':>7} "
        f"{'SSIM':>7} {'SSIM dB':>7} {'fps':>7} {'wall s':>7} {'key':>4}  libvpx"
    )
    for p in result.points:
        used = f"{p.q_used[0]}" if p.q_used[0] == p.q_used[1] else f"{p.q_used[0]}-{p.q_used[1]}"
        level = "-" if p.cq_level is None else str(p.cq_level)
        check = {None: "", True: "same", False: "DIFFERS"}[p.libvpx_match]
        print(
            f"  {p.encoder:<9} {p.q_index:>4} {level:>3} {used:>7} {p.kbps:>9.1f} "
            f"{p.psnr:>7.3f} {p.ssim:>7.5f} {p.ssim_db:>7.3f} {p.fps:>7.2f} "
            f"{p.wall_seconds:>7.2f} {p.key_frames:>4}  {check}"
        )
    if result.rebases:
        print(
            f"\n  {'rebase q':>8} {'key q':>5} {'frames':>6} {'encode s':>8} {'rebase s':>8} "
            f"{'speedup':>7} {'bytes':>8} {'rebased':>8} {'PSNR':>7} {'rebased':>7}"
        )
        for r in result.rebases:
            print(
                f"  {r.q_index:>8} {r.key_q_index:>5} {r.frames:>6} {r.encode_seconds:>8.2f} "
                f"{r.rebase_seconds:>8.2f} {r.speedup:>6.1f}x {r.original_bytes:>8} "
                f"{r.rebased_bytes:>8} {r.original_psnr:>7.3f} {r.rebased_psnr:>7.3f}"
            )
    print()
    for bd in result.bd_rates:
        if bd.percent is None or bd.overlap is None:
            print(f"  BD-rate at equal {bd.metric}: quality ranges do not overlap")
            continue
        print(
            f"  BD-rate at equal {bd.metric:<9}: {bd.percent:+6.1f} % "
            f"(over {bd.overlap[0]:.2f}-{bd.overlap[1]:.2f} dB; goal <= +{GOAL_BD_RATE:g} %: "
            f"{verdict(bd.percent, GOAL_BD_RATE, at_most=True)})"
        )
    print(
        f"  speed: excamera {result.ours_fps:.2f} fps, vpxenc {result.vpxenc_fps:.2f} fps, "
        f"ratio {result.fps_ratio:.3f}x (goal >= {GOAL_FPS_RATIO}x: "
        f"{verdict(result.fps_ratio, GOAL_FPS_RATIO)})"
    )
    if result.rebase_speedup is not None:
        print(
            f"  rebase: {result.rebase_fps:.2f} fps vs encode {result.encode_fps:.2f} fps, "
            f"{result.rebase_speedup:.1f}x (goal >= {GOAL_REBASE_SPEEDUP:g}x: "
            f"{verdict(result.rebase_speedup, GOAL_REBASE_SPEEDUP)})"
        )
    if any(p.libvpx_match is False for p in result.points):
        print("  WARNING: vpxdec decodes excamera's stream differently from shared.codec.decode")
    sys.stdout.flush()


def quantizer_list(text: str) -> list[int]:
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from exc
    if len(values) < 4 or not all(0 <= q <= 127 for q in values):
        raise argparse.ArgumentTypeError("give at least 4 distinct quantizer indices in 0..127")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--frames",
        type=int,
        default=None,
        metavar="N",
        help="encode the first N frames of each clip (default: sintel 24, bbb 10)",
    )
    parser.add_argument(
        "--quantizers",
        type=quantizer_list,
        default=list(DEFAULT_QUANTIZERS),
        metavar="Q,Q,...",
        help="quantizer indices 0..127, at least 4 (default: "
        f"{','.join(map(str, DEFAULT_QUANTIZERS))}); vpxenc gets the level mapping to each",
    )
    parser.add_argument(
        "--clips",
        default=None,
        help=f"comma-separated, from {', '.join(CLIPS)} (default: all; sintel with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"Sintel only, {QUICK_FRAMES} frames (unless --frames/--clips say otherwise)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--shared",
        type=Path,
        default=DEFAULT_SHARED,
        help="the reference folder (default: ../shared beside the repository)",
    )
    args = parser.parse_args(argv)
    if args.quick and args.frames is None:
        args.frames = QUICK_FRAMES
    if args.clips is None:
        args.clips = "sintel" if args.quick else ",".join(CLIPS)
    if args.frames is not None and args.frames < 1:
        parser.error("--frames must be at least 1")
    names = [name.strip() for name in args.clips.split(",") if name.strip()]
    unknown = [name for name in names if name not in CLIPS]
    if unknown:
        parser.error(f"unknown clip(s) {unknown}; choose from {list(CLIPS)}")

    try:
        load_ours()  # fail before any work if the codec is missing
        require_tool("vpxenc")
        require_tool("vpxdec")
        started = time.perf_counter()
        results = []
        for name in names:
            result = bench_clip(CLIPS[name], args)
            results.append(result)
            if not args.json:
                print_tables(result)
    except BenchError as exc:
        print(f"bench/encode.py: {exc}", file=sys.stderr)
        return 2

    if args.json:
        report = {
            "quantizers": args.quantizers,
            "vpxenc_args": list(vpxenc_args("L")),
            "goals": {
                "bd_rate_percent_max": GOAL_BD_RATE,
                "fps_ratio_min": GOAL_FPS_RATIO,
                "rebase_speedup_min": GOAL_REBASE_SPEEDUP,
            },
            "clips": [asdict(r) for r in results],
        }
        print(json.dumps(report, indent=2))
        return 0
    print(f"\nheadline ({time.perf_counter() - started:.0f} s):")
    for r in results:
        bd = ", ".join(
            f"{b.metric} {b.percent:+.1f} %" if b.percent is not None else f"{b.metric} n/a"
            for b in r.bd_rates
        )
        rebased = f"; rebase {r.rebase_speedup:.1f}x encode" if r.rebase_speedup else ""
        print(f"  {r.clip}: BD-rate vs vpxenc {bd}; speed {r.fps_ratio:.3f}x vpxenc{rebased}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
