"""Decoder throughput: `shared.codec.decode` against libvpx, single-threaded, in the same run.

    .venv/bin/python bench/decode.py [--frames N] [--repeat R] [--json] [--libvpx-only]

Streams (encoded once with vpxenc, ExCamera's settings, and cached under bench/.cache/):
  sintel  1024x436, the 24 frames of ../shared/video/sintel/chunk1..4.y4m
  bbb     1280x720, the 132 frames of ../shared/video/clips/bigbuckbunny.mp4

Decoders, each timed as best of R over the same frames:
  excamera      `state, image = decode(state, frame)` over the frames, already split from the IVF
  vpxdec        `vpxdec --threads=1 --noblit --summary`: its own decode-only time (--summary) and
                the wall time of the whole process
  PyAV libvpx   FFmpeg's wrapper of libvpx, thread_count=1, packets already split from the IVF
  PyAV vp8      FFmpeg's own VP8 decoder, thread_count=1 (for scale; not the oracle)

"ours/x" is excamera's frames per second divided by x's. Peak memory is ru_maxrss of a separate
process per decoder that decodes the stream once; the Python rows include the interpreter and
imports (the "python, no decode" row is that baseline).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "bench" / ".cache"
# The installed package comes first; the source tree serves its pure-Python parts (the IVF
# reader) when the project is not installed, e.g. for --libvpx-only.
sys.path.append(str(REPO))
DEFAULT_SHARED = REPO.parent / "shared"
GOAL_720P = 0.5  # excamera fps / libvpx fps at 720p

# ExCamera's vpxenc settings (good quality, cpu-used 0, constant quality, alt-ref frames, SSIM
# tuning), one thread. In cq mode the target bitrate is only a ceiling.
VPXENC_ARGS = (
    "--codec=vp8",
    "--good",
    "--cpu-used=0",
    "--end-usage=cq",
    "--cq-level=20",
    "--target-bitrate=20000",
    "--passes=2",
    "--auto-alt-ref=1",
    "--lag-in-frames=16",
    "--tune=ssim",
    "--token-parts=0",
    "--threads=1",
)


class BenchError(Exception):
    """A problem the user can fix (missing tool, input or build); printed without a traceback."""


def require_source(shared: Path, relative: str | Path) -> Path:
    """A source file in the reference folder, or a BenchError saying where to get it."""
    source = shared / relative
    if not source.exists():
        raise BenchError(
            f"{source} not found: the benchmark reads its input from the reference folder "
            f"(../shared beside the repository, or --shared DIR)"
        )
    return source


def read_ivf(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, frames) of a VP8 IVF file, split before any timing starts."""
    from shared.codec.errors import ContainerError
    from shared.codec.ivf import IvfReader

    try:
        with IvfReader(path) as reader:
            return reader.header.width, reader.header.height, [frame.data for frame in reader]
    except ContainerError as exc:
        raise BenchError(f"{path}: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# Sources and cached streams.


@dataclass(frozen=True)
class Clip:
    name: str
    label: str
    source: str  # path inside ../shared
    write_y4m: Callable[[Path, Path], None]  # (source, destination)


def sintel_y4m(source: Path, dest: Path) -> None:
    """Concatenate chunk1..4.y4m: the first file whole, then each other one after its header."""
    chunks = sorted(source.glob("chunk*.y4m"))
    if len(chunks) != 4:
        raise BenchError(f"{source}: expected chunk1..4.y4m, found {[c.name for c in chunks]}")
    first_header = None
    with dest.open("wb") as out:
        for chunk in chunks:
            data = chunk.read_bytes()
            header, _, frames = data.partition(b"\n")
            if first_header is None:
                first_header = header
                out.write(data)
            elif header != first_header:
                raise BenchError(f"{chunk}: its Y4M header differs from {chunks[0]}'s")
            else:
                out.write(frames)


def pyav_y4m(source: Path, dest: Path) -> None:
    """Decode any video PyAV reads to 4:2:0 Y4M."""
    import av

    with av.open(str(source)) as container, dest.open("wb") as out:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        header_written = False
        for frame in container.decode(stream):
            frame = frame.reformat(format="yuv420p")
            if frame.width % 2 or frame.height % 2:
                raise BenchError(f"{source}: odd frame size {frame.width}x{frame.height}")
            if not header_written:
                num, den = (rate.numerator, rate.denominator) if rate else (25, 1)
                size = f"W{frame.width} H{frame.height}"
                out.write(f"YUV4MPEG2 {size} F{num}:{den} Ip A1:1 C420jpeg\n".encode())
                header_written = True
            out.write(b"FRAME\n")
            out.write(frame.to_ndarray().tobytes())  # yuv420p: Y, U, V planes, contiguous


CLIPS = {
    "sintel": Clip("sintel", "Sintel", "video/sintel", sintel_y4m),
    "bbb": Clip("bbb", "Big Buck Bunny", "video/clips/bigbuckbunny.mp4", pyav_y4m),
}


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BenchError(
            f"{name} not found: install libvpx's tools (Debian/Ubuntu: apt-get install vpx-tools; "
            "bash scripts/setup.sh does it when run as root)"
        )
    return path


def cached(out: Path, what: str, make: Callable[[Path, Path], None]) -> Path:
    """`out` in bench/.cache/, made now if missing: `make(partial, scratch)` writes `partial`
    (scratch is a temporary directory beside it), which then replaces `out` atomically."""
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"{what} into {out.relative_to(REPO)} ...", file=sys.stderr)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        partial = Path(tmp) / out.name
        make(partial, Path(tmp))
        partial.replace(out)
    print(f"  done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return out


def encoded_stream(clip: Clip, shared: Path) -> Path:
    """The clip encoded with VPXENC_ARGS, from bench/.cache/ or encoded now."""
    digest = hashlib.sha1(" ".join(VPXENC_ARGS).encode()).hexdigest()[:10]

    def make(partial: Path, scratch: Path) -> None:
        y4m = scratch / "input.y4m"
        clip.write_y4m(require_source(shared, clip.source), y4m)
        cmd = [require_tool("vpxenc"), *VPXENC_ARGS, "--ivf", "--quiet", "-o", str(partial),
               str(y4m)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(f"vpxenc failed ({done.returncode}):\n{done.stderr.strip()}")

    return cached(CACHE / f"{clip.name}-{digest}.ivf", f"encoding {clip.label} with vpxenc", make)


# ---------------------------------------------------------------------------------------------
# Decoders. Each returns (seconds, frames shown) for one pass over `frames`.


def load_ours():
    try:
        from shared.codec import DecoderState, decode
    except (ImportError, AttributeError) as exc:
        raise BenchError(
            "excamera's decoder is not available (from shared.codec import DecoderState, decode "
            f"failed: {exc}).\nBuild it with `bash scripts/setup.sh` and run this script with "
            "`.venv/bin/python bench/decode.py`, or pass --libvpx-only to time libvpx alone."
        ) from exc
    return DecoderState, decode


def decode_ours(frames: list[bytes]) -> tuple[float, int]:
    DecoderState, decode = load_ours()
    started = time.perf_counter()
    state = DecoderState.initial()
    shown = 0
    for frame in frames:
        state, image = decode(state, frame)
        if image is not None:
            shown += 1
    return time.perf_counter() - started, shown


def pyav_decoder(codec: str) -> Callable[[list[bytes]], tuple[float, int]]:
    def run(frames: list[bytes]) -> tuple[float, int]:
        import av

        ctx = av.CodecContext.create(codec, "r")
        ctx.thread_count = 1
        packets = [av.Packet(frame) for frame in frames]
        started = time.perf_counter()
        shown = 0
        for packet in packets:
            shown += len(ctx.decode(packet))
        shown += len(ctx.decode(None))
        return time.perf_counter() - started, shown

    return run


SUMMARY = re.compile(r"(\d+) decoded frames/(\d+) showed frames in (\d+) us")


def vpxdec_command(path: Path, frames: int) -> list[str]:
    return [
        require_tool("vpxdec"),
        "--codec=vp8",
        "--threads=1",
        "--noblit",
        "--summary",
        f"--limit={frames}",
        str(path),
    ]


def decode_vpxdec(path: Path, frames: int) -> tuple[float, float, int]:
    """(wall seconds, vpxdec's own decode seconds, frames shown) for one vpxdec run."""
    cmd = vpxdec_command(path, frames)
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(f"vpxdec failed ({done.returncode}): {done.stderr.strip()}")
    match = SUMMARY.search(done.stderr)
    if match is None:
        raise BenchError(f"no timing summary in vpxdec's output: {done.stderr.strip()!r}")
    return wall, int(match[3]) / 1e6, int(match[2])


CHILD_DECODERS = {
    "none": lambda frames: (0.0, 0),
    "excamera": decode_ours,
    "pyav-libvpx": pyav_decoder("libvpx"),
    "pyav-vp8": pyav_decoder("vp8"),
}


# ---------------------------------------------------------------------------------------------
# Peak memory: one process per decoder. A process started from this (large) one inherits its
# peak RSS through fork/exec, so each is started by a minimal Python launcher that reports the
# ru_maxrss of exactly that grandchild via wait4. The launcher's own size is a floor under every
# figure (RSS_FLOOR, measured with `true`): a decoder at or below it is shown as "<floor".

LAUNCHER = """
import os, sys
devnull = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
pid = os.posix_spawnp(sys.argv[1], sys.argv[1:], os.environ, file_actions=devnull)
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def peak_rss_mib(cmd: list[str]) -> float:
    launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER, *cmd]
    done = subprocess.run(launcher, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    # Linux reports KiB, macOS bytes.
    return int(done.stdout) / (1024 * 1024 if sys.platform == "darwin" else 1024)


def child_command(decoder: str, path: Path, frames: int) -> list[str]:
    return [
        sys.executable,
        __file__,
        "--child",
        decoder,
        "--child-stream",
        str(path),
        "--frames",
        str(frames),
    ]


def run_child(decoder: str, path: Path, frames: int | None) -> None:
    import av  # noqa: F401  (same imports in every Python child, so the baseline is comparable)

    _, _, stream = read_ivf(path)
    CHILD_DECODERS[decoder](stream[:frames])


# ---------------------------------------------------------------------------------------------
# The run.


@dataclass
class Row:
    decoder: str
    seconds: float  # best of R, for all the stream's frames (hidden ones too)
    fps: float
    shown: int
    peak_rss_mib: float
    ours_over_this: float | None = None


@dataclass
class ClipResult:
    clip: str
    width: int
    height: int
    frames: int
    stream_bytes: int
    stream: str
    rss_floor_mib: float  # the launcher's own size: figures at or below it are upper bounds
    python_baseline_mib: float  # a Python child that imports PyAV and reads the stream
    rows: list[Row] = field(default_factory=list)
    ours_over_libvpx: float | None = None  # against vpxdec's decode-only time


def best_of(repeat: int, run: Callable[[], tuple[float, int]]) -> tuple[float, int]:
    return min((run() for _ in range(repeat)), key=lambda result: result[0])


def bench_clip(clip: Clip, args: argparse.Namespace, floor: float) -> ClipResult:
    path = encoded_stream(clip, args.shared)
    width, height, stream = read_ivf(path)
    frames = stream[: args.frames] if args.frames else stream
    n = len(frames)
    result = ClipResult(
        clip.label,
        width,
        height,
        n,
        sum(map(len, frames)),
        str(path.relative_to(REPO)),
        floor,
        peak_rss_mib(child_command("none", path, n)),
    )

    def add(name: str, seconds: float, shown: int, rss: float) -> None:
        result.rows.append(Row(name, seconds, n / seconds, shown, rss))

    def add_python(name: str, key: str) -> None:
        seconds, shown = best_of(args.repeat, lambda: CHILD_DECODERS[key](frames))
        add(name, seconds, shown, peak_rss_mib(child_command(key, path, n)))

    if not args.libvpx_only:
        add_python("excamera shared.codec.decode", "excamera")

    vpx = [decode_vpxdec(path, n) for _ in range(args.repeat)]
    vpx_rss = peak_rss_mib(vpxdec_command(path, n))
    add("libvpx vpxdec, decode only", min(v[1] for v in vpx), vpx[0][2], vpx_rss)
    add("libvpx vpxdec, whole process", min(v[0] for v in vpx), vpx[0][2], vpx_rss)
    add_python("libvpx via PyAV", "pyav-libvpx")
    add_python("ffmpeg vp8 via PyAV", "pyav-vp8")

    if not args.libvpx_only:
        ours = result.rows[0]
        for row in result.rows[1:]:
            row.ours_over_this = ours.fps / row.fps
        result.ours_over_libvpx = result.rows[1].ours_over_this
    return result


def print_table(result: ClipResult, repeat: int) -> None:
    shown = result.rows[0].shown
    print(
        f"\n{result.clip} {result.width}x{result.height}: {result.frames} frames ({shown} shown), "
        f"{result.stream_bytes / 1024:.0f} KiB, {result.stream}; best of {repeat}"
    )
    print(f"  {'decoder':<30} {'best s':>8} {'fps':>8} {'shown':>6} {'ours/x':>7} {'peak MiB':>9}")
    for row in result.rows:
        ratio = f"{row.ours_over_this:.2f}" if row.ours_over_this is not None else "-"
        if row.peak_rss_mib <= result.rss_floor_mib * 1.02:
            rss = f"<{result.rss_floor_mib:.1f}"
        else:
            rss = f"{row.peak_rss_mib:.1f}"
        print(
            f"  {row.decoder:<30} {row.seconds:>8.4f} {row.fps:>8.1f} {row.shown:>6} "
            f"{ratio:>7} {rss:>9}"
        )
    print(f"  (Python rows include {result.python_baseline_mib:.1f} MiB for Python and PyAV)")
    if len({row.shown for row in result.rows}) > 1:
        print("  WARNING: the decoders disagree on the number of frames shown")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--frames",
        type=int,
        default=None,
        metavar="N",
        help="decode only the first N frames of each stream (default: all)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        metavar="R",
        help="time each decoder R times and keep the best (default: 3)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--clips",
        default="sintel,bbb",
        help=f"comma-separated, from {', '.join(CLIPS)} (default: all)",
    )
    parser.add_argument(
        "--shared",
        type=Path,
        default=DEFAULT_SHARED,
        help="the reference folder (default: ../shared beside the repository)",
    )
    parser.add_argument(
        "--libvpx-only",
        action="store_true",
        help="skip excamera's decoder (e.g. before it is built)",
    )
    parser.add_argument("--child", choices=sorted(CHILD_DECODERS), help=argparse.SUPPRESS)
    parser.add_argument("--child-stream", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    try:
        if args.child:
            run_child(args.child, args.child_stream, args.frames)
            return 0
        if args.repeat < 1 or (args.frames is not None and args.frames < 1):
            parser.error("--frames and --repeat must be at least 1")
        names = [name.strip() for name in args.clips.split(",") if name.strip()]
        unknown = [name for name in names if name not in CLIPS]
        if unknown:
            parser.error(f"unknown clip(s) {unknown}; choose from {list(CLIPS)}")
        if not args.libvpx_only:
            load_ours()  # fail before any encoding if the decoder is missing
        require_tool("vpxdec")

        floor = peak_rss_mib([shutil.which("true") or "true"])
        results = []
        for name in names:
            result = bench_clip(CLIPS[name], args, floor)
            results.append(result)
            if not args.json:
                print_table(result, args.repeat)
    except BenchError as exc:
        print(f"bench/decode.py: {exc}", file=sys.stderr)
        return 2

    if args.json:
        report = {"repeat": args.repeat, "goal_720p": GOAL_720P}
        print(json.dumps({**report, "clips": [asdict(r) for r in results]}, indent=2))
        return 0
    for result in results:
        if result.height == 720 and result.ours_over_libvpx is not None:
            verdict = "met" if result.ours_over_libvpx >= GOAL_720P else "NOT met"
            print(
                f"\n720p: excamera/libvpx = {result.ours_over_libvpx:.2f} "
                f"(goal >= {GOAL_720P}: {verdict})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
