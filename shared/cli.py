"""The `excamera` command line.

    excamera decode IN.ivf -o OUT [--frames A:B] [--state-in FILE] [--state-out FILE]
    excamera encode INPUT -o OUT.ivf|OUT.webm [-n N] [-x X] [--cq-level Q | --ssim S] ...
    excamera encode-frames IN.y4m -o OUT.ivf [--quantizer Q | --ssim S] [--state-in F] ...
    excamera rebase IN.ivf --source IN.y4m --state-in F [--original-state G] -o OUT.ivf ...
    excamera service api|splitter|encoder|decoder|rebaser [--broker URL] [--store URL] ...
    excamera up [--broker URL] [--store URL] [--port PORT]

Each subcommand is one `_add_<name>` function registering its arguments and one `_run_<name>`
function doing the work; add a command by appending its `_add_` function to `_COMMANDS`.

Failures caused by input (a malformed or unsupported stream, container or state, or an OS
error) are reported as one line, `excamera CMD: FILE: [frame N: ]MESSAGE`, with exit status 1
and no traceback; usage errors exit with 2 (argparse). Outputs are written to a temporary file
and renamed into place only when the command succeeds, so a failed run leaves no file that looks
complete.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any, BinaryIO

from shared.codec.container_io import OutputSink, read_at_most
from shared.codec.errors import CodecError, ContainerError, MissingKeyFrameError
from shared.codec.image import Image
from shared.codec.ivf import IvfHeader, IvfReader, IvfWriter
from shared.codec.limits import MAX_STATE_BYTES
from shared.codec.y4m import Y4mReader, Y4mWriter

PROG = "excamera"

SubParsers = argparse._SubParsersAction  # argparse exposes no public name for this type


class CommandError(Exception):
    """A failure reported as one line: `excamera CMD: [WHERE: ]MESSAGE`."""

    def __init__(self, where: str | None, message: str) -> None:
        super().__init__(message if where is None else f"{where}: {message}")


def _describe(exc: BaseException) -> str:
    # OSError's str() repeats the file name (which the caller already names) and its errno.
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("excamera")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def _load_codec() -> ModuleType:
    """`shared.codec`, after checking that its compiled modules import."""
    try:
        import shared.codec as codec

        codec.DecoderState  # noqa: B018 - triggers the lazy import of the compiled modules
        codec.decode  # noqa: B018
    except ImportError as exc:
        raise CommandError(
            None,
            f"the compiled codec is not available ({exc}); "
            "build it with `python setup.py build_ext --inplace` or `pip install .`",
        ) from exc
    return codec


# --------------------------------------------------------------------------- decode


def frame_range(text: str) -> tuple[int, int | None]:
    """Parse `A:B`, `A:` or `:B` (0-based, B exclusive) into (start, stop or None)."""
    start_text, colon, stop_text = text.partition(":")
    if not colon:
        raise argparse.ArgumentTypeError(f"expected A:B, A: or :B, got {text!r}")
    try:
        start = int(start_text) if start_text.strip() else 0
        stop = int(stop_text) if stop_text.strip() else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"frame indices must be integers, got {text!r}") from None
    if start < 0 or (stop is not None and stop < 0):
        raise argparse.ArgumentTypeError(f"frame indices must not be negative, got {text!r}")
    if stop is not None and stop < start:
        raise argparse.ArgumentTypeError(f"range {text!r} ends before it starts")
    return start, stop


def _add_decode(commands: SubParsers) -> None:
    parser = commands.add_parser(
        "decode",
        help="decode a VP8 IVF file to raw I420 or Y4M",
        description=(
            "Decode a VP8 IVF file. Raw I420 output (-o - or any path not ending in .y4m) is "
            "every shown frame at its own size, concatenated: byte-identical to "
            "`vpxdec --i420 -o OUT IN.ivf`. With --frames and the state options, a stream can "
            "be decoded in pieces that together print exactly what one decode prints."
        ),
    )
    parser.add_argument("input", metavar="IN.ivf", help="the VP8 stream to decode")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output file: .y4m for Y4M, anything else (or - for stdout) for raw I420",
    )
    parser.add_argument(
        "--format",
        choices=("auto", "i420", "y4m"),
        default="auto",
        help="output format; auto (default) picks y4m for a .y4m path, i420 otherwise",
    )
    parser.add_argument(
        "--frames",
        type=frame_range,
        default=(0, None),
        metavar="A:B",
        help=(
            "decode only IVF frames A..B-1 (0-based, hidden frames counted; A: and :B allowed). "
            "Earlier frames are not decoded: frame A must be a key frame unless --state-in "
            "gives the state before it"
        ),
    )
    parser.add_argument("--state-in", metavar="FILE", help="start from this stored decoder state")
    parser.add_argument(
        "--state-out", metavar="FILE", help="store the decoder state after the last decoded frame"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print a short summary on stderr"
    )
    parser.set_defaults(run=_run_decode)


class _ImageOutput:
    """Shown frames to raw I420 or Y4M, through an `OutputSink` (atomic for a path)."""

    def __init__(self, target: str, y4m: bool, fps: tuple[int, int]) -> None:
        stream: str | BinaryIO = sys.stdout.buffer if target == "-" else target
        self.sink = OutputSink(stream)
        self.y4m = y4m
        self.fps = fps
        self._y4m_writer: Y4mWriter | None = None

    def write(self, image: Image) -> None:
        if not self.y4m:
            self.sink.write(image.to_i420())
            return
        # Y4M's one size is the first shown frame's, which the IVF header need not match.
        if self._y4m_writer is None:
            self._y4m_writer = Y4mWriter(self.sink.file, image.width, image.height, self.fps)
        self._y4m_writer.write(image)

    def commit(self, fallback_size: tuple[int, int]) -> None:
        try:
            if self.y4m and self._y4m_writer is None and min(fallback_size) > 0:
                # No shown frame: still a valid (empty) Y4M stream, sized from the IVF header.
                Y4mWriter(self.sink.file, *fallback_size, self.fps).close()
            elif self._y4m_writer is not None:
                self._y4m_writer.close()  # flushes only: its target is our sink's stream
        except BaseException:
            self.sink.abort()
            raise
        self.sink.commit()

    def abort(self) -> None:
        self.sink.abort()


def _key_frame_size(codec: ModuleType, data: bytes) -> tuple[int, int] | None:
    try:
        info = codec.peek_frame_info(data)
    except CodecError:
        return None  # decode, if it gets there, says what is wrong
    return (info.width, info.height) if info.key_frame else None


def _size_mismatch(codec: ModuleType, state: Any, first: bytes, size: tuple[int, int],
                   state_path: str) -> str:
    """A --state-in of another size than the stream's at the first frame decoded, an
    interframe, said in a sentence (or ""). Interframes carry no size: decoded against another
    stream's state, they mostly decode, into garbage."""
    if not state.has_keyframe or _key_frame_size(codec, first) is not None:
        return ""
    if (state.width, state.height) == size:
        return ""
    return (f"the state in {state_path} is {state.width}x{state.height}, the stream "
            f"{size[0]}x{size[1]}: was it saved from another stream?")


def _ivf_frame_rate(header: IvfHeader) -> tuple[int, int]:
    """The frame rate an IVF header implies (one frame per tick), or 30 fps if it is unset."""
    num, den = header.timebase
    if num == 0 or den == 0:
        return 30, 1
    divisor = math.gcd(den, num)
    return den // divisor, num // divisor


def refuse_overwriting(outputs: Sequence[str | None], inputs: Sequence[str | None],
                        in_place: tuple[str | None, str | None] = (None, None)) -> None:
    """Refuse an output that is one of the inputs, or another output, before any work: the
    atomic rename at the end would otherwise replace that file. `in_place` is the one pair
    allowed to be one file: --state-out updating --state-in (replaced only on success)."""
    seen: list[str] = [path for path in inputs if path is not None and path != "-"]
    for output in outputs:
        if output is None or output == "-":
            continue
        for other in seen:
            if (output, other) == in_place:
                continue
            if _same_file(output, other):
                raise CommandError(output, f"writing it would replace {other}, which this "
                                           "command also reads or writes; choose another path")
        seen.append(output)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist yet: compare where they would be
        return os.path.realpath(a) == os.path.realpath(b)


def _write_state(path: str, data: bytes) -> None:
    try:
        with OutputSink(path) as sink:
            sink.write(data)
    except OSError as exc:
        raise CommandError(path, _describe(exc)) from exc


def _run_decode(args: argparse.Namespace) -> int:
    refuse_overwriting([args.output, args.state_out], [args.input, args.state_in],
                        in_place=(args.state_out, args.state_in))
    codec = _load_codec()
    start, stop = args.frames
    state = (codec.DecoderState.initial() if args.state_in is None
             else _read_state(codec, args.state_in))

    try:
        reader = IvfReader(args.input)
    except (CodecError, OSError) as exc:
        raise CommandError(args.input, _describe(exc)) from exc

    y4m = args.format == "y4m" or (
        args.format == "auto" and args.output != "-" and args.output.lower().endswith(".y4m")
    )
    decoded = hidden = read = 0
    began = time.perf_counter()
    size = (reader.header.width, reader.header.height)  # as of the last key frame read
    mismatch = ""
    with reader:
        try:
            output = _ImageOutput(args.output, y4m, _ivf_frame_rate(reader.header))
        except OSError as exc:
            raise CommandError(args.output, _describe(exc)) from exc
        try:
            while True:
                try:
                    frame = reader.read_frame()
                except (CodecError, OSError) as exc:
                    raise CommandError(args.input, _describe(exc)) from exc
                if frame is None:
                    if read < start and (stop is None or start < stop):
                        raise CommandError(args.input, f"--frames starts at frame {start}, but "
                                           f"the stream has {_plural(read, 'frame')}")
                    break
                if stop is not None and frame.index >= stop:
                    break
                read = frame.index + 1
                size = _key_frame_size(codec, frame.data) or size
                if frame.index < start:
                    continue
                if decoded == 0 and args.state_in is not None:
                    mismatch = _size_mismatch(codec, state, frame.data, size, args.state_in)
                    if mismatch:
                        print(f"{PROG} decode: note: {mismatch}", file=sys.stderr)
                try:
                    state, image = codec.decode(state, frame.data)
                except CodecError as exc:
                    message = f"frame {frame.index}: {exc}"
                    if isinstance(exc, MissingKeyFrameError) and args.state_in is None:
                        message += " (start at a key frame, or give --state-in)"
                    if mismatch:
                        message += f" ({mismatch})"
                    raise CommandError(args.input, message) from exc
                decoded += 1
                if image is None:
                    hidden += 1
                    continue
                try:
                    output.write(image)
                except (ContainerError, OSError) as exc:
                    message = f"frame {frame.index}: {_describe(exc)}"
                    if isinstance(exc, ContainerError):
                        message += "; write raw I420 (a .yuv path) instead"
                    raise CommandError(args.output, message) from exc
            # The state first: if it cannot be stored, the output is discarded with it.
            if args.state_out is not None:
                _write_state(args.state_out, state.to_bytes())
        except BaseException:
            output.abort()
            raise
        try:
            output.commit((reader.header.width, reader.header.height))
        except OSError as exc:
            raise CommandError(args.output, _describe(exc)) from exc

    if args.verbose:
        seconds = time.perf_counter() - began
        rate = decoded / seconds if seconds > 0 else 0.0
        print(
            f"{PROG} decode: {args.input}: {decoded} frames decoded "
            f"({hidden} hidden, {decoded - hidden} shown) in {seconds:.2f} s "
            f"({rate:.1f} frames/s); final state {state.digest()}",
            file=sys.stderr,
        )
    return 0


# --------------------------------------------------------------------------- encode


def _lambda_memory(text: str) -> int:
    """An argparse type: a Lambda function's memory, in MB (what Lambda allows)."""
    value = positive_int(text)
    if not 128 <= value <= 10240:
        raise argparse.ArgumentTypeError(f"Lambda functions have 128 to 10240 MB, not {value}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number, at least 1 (counts of frames, chunks, processes)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


# More worker processes than any one machine runs well; a bound keeps absurd values a usage error.
MAX_WORKERS = 1024


def _worker_count(text: str) -> int:
    value = positive_int(text)
    if value > MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_WORKERS} workers, got {value}")
    return value


def _cq_level(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 63:
        raise argparse.ArgumentTypeError(f"expected an integer 0-63, got {text!r}")
    return value


def ssim_target(text: str) -> float:
    """An SSIM target in dB; a value below 1 is taken as plain SSIM (0.98 -> 16.99 dB)."""
    from shared.pipeline.vpx import ssim_decibels

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SSIM in dB, got {text!r}") from None
    try:
        return ssim_decibels(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_job_options(parser: argparse.ArgumentParser, service: bool = False) -> None:
    """What a job is asked to do, for `encode` and `submit` alike. `service`: no defaults of
    our own (an option left out is the service's default, which its operator may set)."""

    def default(value: Any) -> Any:
        return None if service else value

    def said(ours: str) -> str:
        return "the service's" if service else ours

    parser.add_argument(
        "-n",
        "--frames-per-chunk",
        type=positive_int,
        default=default(6),
        metavar="N",
        help=f"frames per chunk (default {said('6')})",
    )
    parser.add_argument(
        "-x",
        "--chunks-per-group",
        type=positive_int,
        default=default(16),
        metavar="X",
        help=f"chunks per group, i.e. per key frame (default {said('16')}; 1 = independent "
             "chunks)",
    )
    quality = parser.add_mutually_exclusive_group()
    quality.add_argument(
        "--cq-level",
        type=_cq_level,
        metavar="Q",
        help=f"vpxenc's constant quality level, 0 (best) to 63 (default {said('20')})",
    )
    quality.add_argument(
        "--ssim",
        type=ssim_target,
        metavar="S",
        help=(
            "instead of a fixed level, give each chunk the highest cq level whose libvpx encode "
            "reaches this SSIM: in dB (e.g. 16), or below 1 as plain SSIM (e.g. 0.975)"
        ),
    )
    parser.add_argument(
        "--scene-cuts",
        choices=("auto", "off"),
        default=default("auto"),
        help=(
            "auto: start a group, with a key frame, at every scene cut the splitter is "
            "confident of, varying chunk lengths around N there; off: cut every N frames "
            f"(default {said('auto')})"
        ),
    )
    parser.add_argument(
        "--start-frames",
        choices=("rebase", "revisit", "anchor"),  # stages.START_FRAME_MODES
        default=default("rebase"),
        help=(
            f"how a chunk that continues its group starts (default {said('rebase')}). rebase: "
            "the serial chain keeps the decisions the parallel stage made for the chunk's "
            "first frame; revisit: it decides that frame again against the true state (3-6 %% "
            "fewer bits at equal SSIM, a serial chain about 3x as long); anchor: the chunk "
            "predicts from a boosted hidden frame of its middle picture, an alt-ref, which the "
            "chain decides again with the first frame (the fewest bits: within +3 %% of one "
            "libvpx stream at equal SSIM on every clip measured; one more libvpx frame per "
            "chunk, a serial chain about 4x as long)"
        ),
    )


def _add_encode(commands: SubParsers) -> None:
    parser = commands.add_parser(
        "encode",
        help="encode a video to VP8 with ExCamera[n,x] on a local process pool",
        description=(
            "Encode a video with ExCamera[n,x]: split it into chunks of n frames, encode every "
            "chunk in parallel with libvpx (vpxenc), then, in groups of x chunks, turn each "
            "chunk's key frame into an interframe and rebase it onto the end of the chunk "
            "before, so each group costs one key frame. Every stage runs on a local process "
            "pool. Prints a summary: size, bitrate, SSIM and PSNR of the output (decoded by "
            "excamera) against the input, and the time per stage."
        ),
    )
    parser.add_argument("input", metavar="INPUT", help="Y4M, or any video PyAV reads (mp4, ...)")
    parser.add_argument(
        "-o", "--output", required=True, metavar="OUTPUT", help="the VP8 stream: .ivf or .webm"
    )
    add_job_options(parser)
    parser.add_argument(
        "--workers",
        type=_worker_count,
        default=os.cpu_count() or 1,
        metavar="N",
        help="worker processes (default: the number of cores, here %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--estimate-cost",
        action="store_true",
        help=(
            "also print what the same job would cost on AWS (the deploy/ stack, us-east-1 "
            "prices), itemized, from the time and storage requests each stage took here"
        ),
    )
    parser.add_argument(
        "--lambda-memory",
        type=_lambda_memory,
        default=None,
        metavar="MB",
        help="the encoder's Lambda memory for --estimate-cost (default 1769: one vCPU)",
    )
    parser.add_argument(
        "--keep-work",
        metavar="DIR",
        help=(
            "keep intermediate files (chunks, libvpx streams, states) in DIR instead of a "
            "temporary directory; a rerun with the same DIR, input and options reuses them"
        ),
    )
    parser.set_defaults(run=_run_encode)


def _run_encode(args: argparse.Namespace) -> int:
    from shared.pipeline.errors import PipelineError
    from shared.pipeline.runner import run_job
    from shared.pipeline.vpx import DEFAULT_CQ_LEVEL, EncodeSettings

    refuse_overwriting([args.output], [args.input, args.keep_work])
    if args.keep_work is not None and (args.keep_work == "" or (
            os.path.exists(args.keep_work) and not os.path.isdir(args.keep_work))):
        raise CommandError(args.keep_work or "--keep-work ''", "not a directory (--keep-work "
                                                                "names one, made if missing)")
    if args.lambda_memory is not None and not args.estimate_cost:
        raise CommandError(None, "--lambda-memory only goes with --estimate-cost")
    settings = EncodeSettings(
        cq_level=DEFAULT_CQ_LEVEL if args.cq_level is None else args.cq_level,
        target_ssim_db=args.ssim,
    )
    try:
        summary = run_job(
            args.input,
            args.output,
            n=args.frames_per_chunk,
            x=args.chunks_per_group,
            quality=settings,
            workers=args.workers,
            progress=not args.json,
            work_dir=args.keep_work,
            log=lambda message: print(f"{PROG} encode: note: {message}", file=sys.stderr),
            scene_cuts=args.scene_cuts,
            start_frames=args.start_frames,
        )
    except PipelineError as exc:
        raise CommandError(None, str(exc)) from exc
    except CodecError as exc:  # not the input's (those are PipelineErrors): a kept file's
        where = (f"; a file under --keep-work {args.keep_work} is damaged: remove its jobs/ "
                 "directory to start afresh") if args.keep_work else ""
        raise CommandError(None, f"{exc}{where}") from exc
    estimate = _estimate(summary, args.lambda_memory) if args.estimate_cost else None
    if args.json:
        document = json.loads(summary.to_json())
        if estimate is not None:
            document["cost_estimate_usd"] = estimate
        _print_out(json.dumps(document, indent=2))
    else:
        _print_out(_describe_summary(summary))
        if estimate is not None:
            _print_out(_describe_estimate(estimate))
    return 0


def _print_out(text: str) -> None:
    """Print to stdout; a full disk behind it is reported like any other output error (a reader
    that went away is handled in main)."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        raise
    except OSError as exc:
        _silence_stdout()
        raise CommandError("stdout", _describe(exc)) from exc


def _estimate(summary: Any, lambda_memory_mb: int | None) -> dict[str, Any]:
    """The job's AWS cost from its measured stages (shared.pipeline.job_cost)."""
    from shared.pipeline import costs, job_cost
    from shared.pipeline.graph import STAGES

    stage_of_label = {info.label: stage for stage, info in STAGES.items()}
    uses = {
        stage_of_label[label]: job_cost.StageUse(t.tasks, t.busy, dict(t.requests))
        for label, t in summary.stages.items()
    }
    memory = lambda_memory_mb or job_cost.DEFAULT_LAMBDA_MEMORY_MB
    items = job_cost.job_estimate(uses, lambda_memory_mb=memory)
    return {"items": items, "lambda_memory_mb": memory, "prices_date": costs.PRICES_DATE,
            "region": "us-east-1"}


def _describe_estimate(estimate: dict[str, Any]) -> str:
    items = estimate["items"]
    parts = ", ".join(f"{name.replace('_', ' ')} ${value:.4f}" for name, value in items.items()
                      if name != "total")
    return (f"  on AWS (us-east-1 prices of {estimate['prices_date']}, Lambda at "
            f"{estimate['lambda_memory_mb']} MB): about ${items['total']:.4f}: {parts}")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


_START_FRAME_NOTES = {
    "revisit": ", chunk-start frames revisited",
    "anchor": ", chunks anchored on hidden frames",
}


def _describe_cuts(cuts: Sequence[int]) -> list[str]:
    """The summary's line about scene cuts (none when there were none)."""
    if not cuts:
        return []
    frames = "frame" if len(cuts) == 1 else "frames"
    where = ", ".join(map(str, cuts))
    return [f"  {_plural(len(cuts), 'scene cut')}, each starting a group: at {frames} {where}"]


def _describe_summary(summary: Any) -> str:
    levels = summary.cq_levels
    quality = f"cq {levels[0]}" if levels[0] == levels[1] else f"cq {levels[0]}-{levels[1]}"
    # Stages overlap in time, so each is shown by the work it took (summed over workers).
    stage_times = ", ".join(f"{name} {t.busy:.2f}" for name, t in summary.stages.items())
    return "\n".join(
        [
            f"wrote {summary.output}: {_plural(summary.frames, 'frame')}, "
            f"{summary.width}x{summary.height} "
            f"at {summary.fps:.5g} fps, ExCamera[{summary.frames_per_chunk},"
            f"{summary.chunks_per_group}] ({_plural(summary.chunks, 'chunk')}, "
            f"{_plural(summary.groups, 'key frame')}), {quality}"
            # Only chunks after a group's first have their starts rebased, revisited or anchored.
            + (_START_FRAME_NOTES.get(summary.start_frames, "")
               if summary.chunks > summary.groups else ""),
            *_describe_cuts(summary.scene_cuts),
            f"  {summary.bytes:,} bytes, {summary.bitrate_kbps:.1f} kbit/s; "
            f"SSIM {summary.ssim_db:.2f} dB, PSNR {summary.psnr_db:.2f} dB (vs the input)",
            f"  {summary.seconds:.2f} s with {_plural(summary.workers, 'worker')}; work per stage "
            f"(s, overlapping): {stage_times}",
        ]
    )


# --------------------------------------------------------------------------- entry point

# --------------------------------------------------------------------------- encode-frames, rebase


def _quantizer(text: str) -> int:
    value = int(text) if text.strip().lstrip("-").isdigit() else -1
    if not 0 <= value <= 127:
        raise argparse.ArgumentTypeError(f"quantizer index must be 0..127, got {text!r}")
    return value


def _read_state(codec: ModuleType, path: str) -> Any:
    """A stored decoder state, read no further than the largest a state can be (the path may
    name a huge file, or /dev/zero)."""
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size  # a regular file's: refused unread
            data = b"" if size > MAX_STATE_BYTES else read_at_most(file, MAX_STATE_BYTES + 1)
        if size > MAX_STATE_BYTES or len(data) > MAX_STATE_BYTES:
            raise CommandError(path, f"not a decoder state: larger than any state can be "
                                     f"({MAX_STATE_BYTES} bytes)")
        return codec.DecoderState.from_bytes(data)
    except (CodecError, OSError) as exc:
        raise CommandError(path, _describe(exc)) from exc


def _read_y4m(path: str) -> tuple[list[Image], tuple[int, int]]:
    with _open_y4m(path) as reader:
        return list(_pictures(reader, path)), reader.header.fps


def _write_ivf(path: str, frames: list[bytes], width: int, height: int,
               fps: tuple[int, int]) -> None:
    try:
        with IvfWriter(path, width, height, timebase=(fps[1], fps[0])) as writer:
            for frame in frames:
                writer.write(frame)
    except OSError as exc:
        raise CommandError(path, _describe(exc)) from exc


def _write_ivf_and_state(path: str, frames: list[bytes], width: int, height: int,
                         fps: tuple[int, int], state_path: str | None, state: Any) -> None:
    _write_ivf(path, frames, width, height, fps)
    _write_state_or_drop(path, state_path, state)


def _write_state_or_drop(stream_path: str, state_path: str | None, state: Any) -> None:
    """The exit state of the stream just written; if it cannot be stored, the stream goes too,
    so a failed run leaves neither (as in decode)."""
    if state_path is None:
        return
    try:
        _write_state(state_path, state.to_bytes())
    except BaseException:
        os.unlink(stream_path)
        raise


def _add_encode_frames(commands: SubParsers) -> None:
    parser = commands.add_parser(
        "encode-frames",
        help="encode a Y4M clip with excamera's own VP8 encoder",
        description=(
            "Encode every picture of IN.y4m with the state-passing encoder: the first as a key "
            "frame, unless --state-in gives a state to continue from, the rest as interframes."
        ),
    )
    parser.add_argument("input", metavar="IN.y4m")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.ivf")
    quality = parser.add_mutually_exclusive_group()
    quality.add_argument("--quantizer", type=_quantizer, metavar="Q",
                         help="quantizer index 0 (best) .. 127 (smallest); default 40")
    quality.add_argument("--ssim", type=ssim_target, metavar="S",
                         help="per-frame SSIM target, in dB (e.g. 16) or as a fraction below 1 "
                              "(e.g. 0.975), met with the largest quantizer that reaches it")
    parser.add_argument("--state-in", metavar="FILE", help="continue from this decoder state")
    parser.add_argument("--state-out", metavar="FILE", help="store the state after the last frame")
    parser.add_argument("-v", "--verbose", action="store_true", help="report each frame")
    parser.set_defaults(run=_run_encode_frames)


def _refuse_webm(output: str) -> None:
    if output.lower().endswith(".webm"):  # the bytes would be IVF under a WebM name
        raise CommandError(output, "this command writes IVF: name the output .ivf (excamera "
                                   "encode writes WebM)")


def _run_encode_frames(args: argparse.Namespace) -> int:
    _refuse_webm(args.output)
    refuse_overwriting([args.output, args.state_out], [args.input, args.state_in],
                        in_place=(args.state_out, args.state_in))
    codec = _load_codec()
    quality: int | float
    if args.ssim is not None:
        quality = 1 - 10 ** (-args.ssim / 10)     # the codec takes SSIM as a fraction
    else:
        quality = 40 if args.quantizer is None else args.quantizer
    state = _read_state(codec, args.state_in) if args.state_in else None
    began = time.perf_counter()
    count = size = 0
    # Picture by picture, so memory stays one picture and its state, whatever the clip's length.
    with _open_y4m(args.input) as reader:
        header = reader.header
        fps = header.fps
        try:
            writer = IvfWriter(args.output, header.width, header.height, timebase=(fps[1], fps[0]))
        except OSError as exc:
            raise CommandError(args.output, _describe(exc)) from exc
        with writer:
            for index, image in enumerate(_pictures(reader, args.input)):
                try:
                    if state is None:
                        frame = codec.encode_keyframe(image, quality)
                        state = codec.DecoderState.initial()
                    else:
                        frame = codec.encode(state, image, quality)
                    state, _ = codec.decode(state, frame)
                except CodecError as exc:
                    raise CommandError(args.input, f"frame {index}: {exc}") from exc
                _write_frame(writer, args.output, frame)
                count, size = count + 1, size + len(frame)
                if args.verbose:
                    print(f"{PROG} encode-frames: frame {index}: {len(frame)} bytes",
                          file=sys.stderr)
            if count == 0:
                raise CommandError(args.input, "the clip has no frames")
    _write_state_or_drop(args.output, args.state_out, state)
    if args.verbose:
        seconds = time.perf_counter() - began
        print(f"{PROG} encode-frames: {_plural(count, 'frame')}, {size} bytes in "
              f"{seconds:.2f} s", file=sys.stderr)
    return 0


def _open_y4m(path: str) -> Y4mReader:
    try:
        return Y4mReader(path)
    except (CodecError, OSError) as exc:
        raise CommandError(path, _describe(exc)) from exc


def _pictures(reader: Y4mReader, path: str) -> Iterator[Image]:
    while True:
        try:
            image = reader.read_image()
        except (CodecError, OSError) as exc:
            raise CommandError(path, _describe(exc)) from exc
        if image is None:
            return
        yield image


def _write_frame(writer: IvfWriter, path: str, frame: bytes) -> None:
    try:
        writer.write(frame)
    except OSError as exc:
        raise CommandError(path, _describe(exc)) from exc


def _add_rebase(commands: SubParsers) -> None:
    parser = commands.add_parser(
        "rebase",
        help="re-encode an IVF stream so it continues from another decoder state",
        description=(
            "Rebase every frame of IN.ivf onto --state-in: a stream starting with a key frame "
            "(a libvpx chunk) gets that frame re-encoded as an interframe against the state and "
            "the rest rebased onto it, so the output continues the stream the state came from. "
            "Frames made against another state name it with --original-state."
        ),
    )
    parser.add_argument("input", metavar="IN.ivf")
    parser.add_argument("--source", required=True, metavar="IN.y4m",
                        help="the source pictures, one per shown frame")
    parser.add_argument("--state-in", required=True, metavar="FILE",
                        help="the state the output continues from")
    parser.add_argument("--original-state", metavar="FILE",
                        help="the state IN.ivf was encoded against (default: it starts with a "
                             "key frame)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.ivf")
    parser.add_argument("--state-out", metavar="FILE", help="store the state after the last frame")
    parser.set_defaults(run=_run_rebase)


def _run_rebase(args: argparse.Namespace) -> int:
    _refuse_webm(args.output)
    refuse_overwriting([args.output, args.state_out],
                        [args.input, args.source, args.state_in, args.original_state],
                        in_place=(args.state_out, args.state_in))
    codec = _load_codec()
    state = _read_state(codec, args.state_in)
    original = _read_state(codec, args.original_state) if args.original_state else None
    images, fps = _read_y4m(args.source)
    try:
        with IvfReader(args.input) as reader:
            frames = [frame.data for frame in reader]
    except (CodecError, OSError) as exc:
        raise CommandError(args.input, _describe(exc)) from exc
    try:
        rebased, exit_state = codec.rebase_chunk(state, frames, images, original)
    except CodecError as exc:
        message = str(exc)
        if isinstance(exc, MissingKeyFrameError) and original is None:
            message += (" (a stream that does not start with a key frame was made against "
                        "another state: name it with --original-state)")
        raise CommandError(args.input, message) from exc
    _write_ivf_and_state(args.output, rebased, exit_state.width, exit_state.height, fps,
                         args.state_out, exit_state)
    return 0


# --------------------------------------------------------------------------- services


def _services_command(run: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """A services command whose configuration and pipeline errors print as one line."""

    def wrapped(args: argparse.Namespace) -> int:
        from services.errors import ConfigError, PipelineError

        try:
            return run(args)
        except (ConfigError, PipelineError) as exc:
            raise CommandError(None, str(exc)) from exc

    return wrapped


def _add_service(commands: SubParsers) -> None:
    from services.cli import add_service_parser, run_service

    add_service_parser(commands)
    commands.choices["service"].set_defaults(run=_services_command(run_service))


def _add_up(commands: SubParsers) -> None:
    from services.cli import add_up_parser, run_up

    add_up_parser(commands)
    commands.choices["up"].set_defaults(run=_services_command(run_up))


def _add_submit(commands: SubParsers) -> None:
    from services.submit import add_submit_parser

    add_submit_parser(commands)


_COMMANDS: tuple[Callable[[SubParsers], None], ...] = (
    _add_decode, _add_encode, _add_encode_frames, _add_rebase, _add_service, _add_submit,
    _add_up)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="VP8 encoding with many small parallel workers (ExCamera[n,x]).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (argparse exits 2 itself on usage errors)."""
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.run(args))
    except BrokenPipeError:
        # The reader of stdout (`| head`) went away after the work was done: not an error to
        # report, and the interpreter's final flush must not report it either.
        _silence_stdout()
        return 1
    except CommandError as exc:
        if isinstance(exc.__cause__, BrokenPipeError):
            _silence_stdout()  # the reader went away (`| head`): quietly, as above
            return 1
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print(f"{PROG} {args.command}: {'terminated' if terminated else 'interrupted'}",
              file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a service manager, `timeout`, `kill`): unwinds like Ctrl-C, so the worker
    pools shut down and temporary work is removed."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def _silence_stdout() -> None:
    # Point stdout at /dev/null so the interpreter's final flush does not print a second error.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
