"""ExCamera[n,x] against single-stream libvpx on real video: bitrate, quality, time, latency.

    python bench/excamera.py [--clips bbb,sintel] [--cq 10,20,30,40] [--workers 2]
                             [--configs 6x1,6x16,12x1,12x8,24x1,24x4] [--quick] [--json]
                             [--no-check] [--plots DIR] [--save FILE] [--replot FILE]

Clips (converted once to Y4M and cached under bench/.cache/):
  bbb     Big Buck Bunny 1280x720, the first 96 frames (16 chunks of 6, as the original measured)
  sintel  Sintel 1024x436, the 24 frames of ../shared/video/sintel/chunk1..4.y4m
  cuts    the scene-cut clip (CUTS_AT below), at Sintel's size
  bbb1080 bbb upscaled to 1920x1080 (not by default): the stage times bench/scale.py can scale

For every clip and cq level:
  libvpx      the whole clip as one stream: the exact vpxenc command line the pipeline uses for a
              chunk (shared/pipeline/vpx.py: 2-pass, good, cpu-used 0, cq, tune ssim, alt-refs,
              one thread, one key frame), timed as the wall time of the vpxenc process
  [n,x]       ExCamera[n,x]: the pipeline's stage functions (shared/pipeline/stages.py) on a
              LocalStore, run as the embedded runner runs them (same task graph and urgency) on
              a pool of --workers processes; every task is timed. x is capped at the chunk count
              ([6,16] on 24 frames is [6,4]); configs with a single chunk are skipped.

Every stream is decoded by vpxdec (libvpx, the oracle) and compared with the source: SSIM is
libvpx's (shared.codec.metrics), the mean over pictures, in dB; PSNR pools the squared error
over all planes and pictures (as the runner's Summary does). Bitrate counts VP8 frames only.

BD-rate (Bjontegaard): per encoder a cubic fit of log bitrate against quality (dB), integrated
over the quality range both encoders cover; the result is how many more bits ExCamera spends
than the single stream at equal quality. With fewer than 4 levels the fit degree drops.

Projected latency with one worker per chunk (each figure measured per chunk):
  max over chunks of (split / chunks + libvpx encode + exit-state decode + encode given state
                      + preparing the chunk's rebase link: reading and parsing its frames)
  + the longest serial rebase chain (sum of a group's links, each timed from its incoming state
    to handing its exit state on: stages.LinkTimes.critical)
  + writing the last link's frames + join.
A link's preparing and writing overlap the links before and after it (stage 5 parses its chunk
before it takes the incoming state, and passes the exit state on before it writes), so they
are off the chain; both are timed and shown. "DAG" is the same model solved exactly: chunk i's
encode given state waits for chunk i-1's exit state, and its link for chunk i-1's link.

--check also runs the embedded runner itself (shared.pipeline.runner.run_job, which verifies the
output with our decoder) once per clip, for the goal config at the reference cq, and compares its
Summary with this benchmark's figures. Results are saved as JSON (--save) so that --replot can
redraw the tables and plots without encoding. matplotlib is needed for the plots only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

# bench/ is not a package: make decode.py importable however this file is run.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from decode import (  # noqa: E402
    CACHE,
    DEFAULT_SHARED,
    REPO,
    BenchError,
    cached,
    require_source,
    require_tool,
    sintel_y4m,
)

from shared.codec import metrics  # noqa: E402
from shared.codec.y4m import Y4mReader, Y4mWriter, read_raw_i420  # noqa: E402
from shared.pipeline import stages  # noqa: E402
from shared.pipeline.mux import read_ivf_frames  # noqa: E402
from shared.pipeline.progress import Progress  # noqa: E402
from shared.pipeline.runner import Lanes, Scheduler, lane_pools, process_pool, task_graph  # noqa: E402,E501
from shared.pipeline.store import LocalStore  # noqa: E402
from shared.pipeline.vpx import MAX_LAG_IN_FRAMES, EncodeSettings, vpxenc_command  # noqa: E402

GOAL_CONFIG = (6, 16)  # ExCamera[6,16] (x capped at the chunk count)
GOAL_BD_RATE = 3.0  # percent over single-stream libvpx at equal SSIM, at most (issue 11)
GOAL_CHAIN_SHARE = 34.0  # percent of the projected latency, under (33 % before issue 11)

DEFAULT_CQ = (10, 20, 30, 40)
QUICK_CQ = (20, 40)
DEFAULT_CONFIGS = "6x1,6x16,12x1,12x8,24x1,24x4"
REFERENCE_CQ = 20  # per-stage tables, latency bars and --check use the level nearest this
PLOTS = REPO / "bench" / "plots"



# ---------------------------------------------------------------------------------------------
# Sources.


@dataclass(frozen=True)
class Clip:
    name: str
    label: str
    source: str  # path inside ../shared ("" for a clip joined from others: CUTS_CLIP)
    frames: int | None  # None: all


CLIPS = {
    "bbb": Clip("bbb", "Big Buck Bunny", "video/clips/bigbuckbunny.mp4", 96),
    "sintel": Clip("sintel", "Sintel", "video/sintel", None),
    "cuts": Clip("cuts", "Scene cuts", "", 96),
    # The per-stage times at 1080p, for bench/scale.py's pixel scaling (no real 1080p clip in
    # the reference folder: Big Buck Bunny's first 96 frames, upscaled bicubically).
    "bbb1080": Clip("bbb1080", "Big Buck Bunny upscaled to 1920x1080",
                    "video/clips/bigbuckbunny.mp4", 96),
}
UPSCALED = {"bbb1080": (1920, 1080)}

# The scene-cut clip: real video joined with two hard cuts, both inside a 6-frame chunk
# (frames 40 and 64), at Sintel's 1024x436: Big Buck Bunny frames 0-39 (the centre of the
# 720p picture, cropped: no resampling), Sintel's 24 frames, then Big Buck Bunny frames
# 100-131 (the same shot as the first part, later: a cut back, as an edit makes).
CUTS_BBB_PARTS = ((0, 40), (100, 132))
CUTS_AT = (40, 64)


def cuts_y4m(shared: Path, partial: Path) -> None:
    """Write the scene-cut clip (CUTS_BBB_PARTS, CUTS_AT) to `partial`."""
    from shared.codec.image import Image
    from shared.pipeline.sources import open_source

    with open_source(require_source(shared, CLIPS["bbb"].source)) as video:
        bbb = [image for number, image in enumerate(video.images)
               if any(a <= number < b for a, b in CUTS_BBB_PARTS)]
    with Y4mReader(CACHE / "excamera-sintel-all.y4m") as reader:
        width, height, fps = reader.header.width, reader.header.height, reader.header.fps
        sintel = list(reader)
    top, left = (720 - height) // 2 & ~1, (1280 - width) // 2 & ~1

    def crop(image: Image) -> Image:
        return Image(image.y[top:top + height, left:left + width].copy(),
                     image.u[top // 2:(top + height) // 2, left // 2:(left + width) // 2].copy(),
                     image.v[top // 2:(top + height) // 2, left // 2:(left + width) // 2].copy())

    first = CUTS_BBB_PARTS[0][1] - CUTS_BBB_PARTS[0][0]
    pictures = [*map(crop, bbb[:first]), *sintel, *map(crop, bbb[first:])]
    with partial.open("wb") as file:
        writer = Y4mWriter(file, width, height, fps)
        for image in pictures:
            writer.write(image)
        writer.close()


def source_y4m(clip: Clip, shared: Path) -> Path:
    """The clip as 4:2:0 Y4M, from bench/.cache/ or converted now."""

    def make(partial: Path, _: Path) -> None:
        if clip.name == "cuts":
            source_y4m(CLIPS["sintel"], shared)
            cuts_y4m(shared, partial)
            return
        source = require_source(shared, clip.source)
        if source.is_dir():
            sintel_y4m(source, partial)
            return
        if clip.name in UPSCALED:
            upscaled_y4m(source, partial, *UPSCALED[clip.name], clip.frames)
            return
        from shared.pipeline.sources import open_source  # PyAV; converts to 8-bit 4:2:0

        with open_source(source) as video, partial.open("wb") as file:
            writer = Y4mWriter(file, video.width, video.height, video.fps)
            for count, image in enumerate(video.images):
                if clip.frames is not None and count == clip.frames:
                    break
                writer.write(image)
            writer.close()

    out = CACHE / f"excamera-{clip.name}-{clip.frames or 'all'}.y4m"
    return cached(out, f"converting {clip.label}", make)


def upscaled_y4m(source: Path, partial: Path, width: int, height: int, frames: int | None
                 ) -> None:
    """The first `frames` pictures of `source`, resized bicubically by FFmpeg (PyAV)."""
    import av

    from shared.codec.image import Image

    with av.open(str(source)) as container, partial.open("wb") as file:
        stream = container.streams.video[0]
        fps = (stream.average_rate.numerator, stream.average_rate.denominator)
        writer = Y4mWriter(file, width, height, fps)
        for count, frame in enumerate(container.decode(stream)):
            if frames is not None and count == frames:
                break
            frame = frame.reformat(width=width, height=height, format="yuv420p",
                                   interpolation="BICUBIC")
            planes = [np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
                      [: plane.height, : plane.width].copy() for plane in frame.planes]
            writer.write(Image(*planes))
        writer.close()


def y4m_info(path: Path) -> tuple[int, int, tuple[int, int], int]:
    """(width, height, fps, frames) of a Y4M file."""
    with Y4mReader(path) as reader:
        header = reader.header
        frames = sum(1 for _ in reader)
    return header.width, header.height, header.fps, frames


# ---------------------------------------------------------------------------------------------
# Results.


@dataclass
class Latency:
    """Projected latency with one worker per chunk (seconds), from per-chunk stage times."""

    split_share: float
    encode: float  # the parts of the slowest chunk's parallel path
    state: float
    first: float  # encode given state, and preparing the chunk's rebase link
    chain: float  # the longest group's summed rebase times (incoming to exit state)
    join: float  # writing the last link's frames, and the join
    total: float
    chain_share: float  # percent of total
    dag: float  # the exact critical path of the same model


@dataclass
class Point:
    """One encode of a clip: the single stream (n = x = 0) or ExCamera[n,x]."""

    config: str
    n: int
    x: int
    cq: int
    payload_bytes: int = 0
    packets: int = 0
    kbps: float = 0.0
    ssim_db: float = 0.0
    psnr_db: float = 0.0
    seconds: float = 0.0  # wall time (ExCamera: on --workers processes)
    split: float = 0.0
    join: float = 0.0
    chunk_times: dict[str, list[float | None]] = field(default_factory=dict)  # stage -> per chunk
    latency: Latency | None = None
    positions: list[int] = field(default_factory=list)  # each chunk's place in its group
    scene_cuts: list[int] = field(default_factory=list)  # frames where the plan starts groups
    start_cost: float | None = None  # chunk-start frames' bytes / the chunks' other frames'
    rebase_gap_db: float | None = None  # libvpx's PSNR of rebased chunks minus the output's


@dataclass
class BdRate:
    config: str
    metric: str  # "ssim" or "psnr"
    percent: float | None  # None: the quality ranges do not overlap
    low: float | None = None
    high: float | None = None


@dataclass
class Check:
    """The embedded runner's own Summary for one config, beside this benchmark's point."""

    config: str
    cq: int
    kbps: float
    ssim_db: float
    psnr_db: float
    seconds: float
    stages: dict[str, dict[str, float]]
    bench_kbps: float
    bench_ssim_db: float
    bench_psnr_db: float
    bench_seconds: float


@dataclass
class ClipResult:
    clip: str
    label: str
    width: int
    height: int
    frames: int
    fps: float
    workers: int
    points: list[Point] = field(default_factory=list)
    bd_rates: list[BdRate] = field(default_factory=list)
    check: Check | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipResult:
        points = []
        for raw in data["points"]:
            latency = raw.pop("latency")
            points.append(Point(**raw, latency=Latency(**latency) if latency else None))
        check = data.get("check")
        return cls(
            **{k: v for k, v in data.items() if k not in ("points", "bd_rates", "check")},
            points=points,
            bd_rates=[BdRate(**b) for b in data["bd_rates"]],
            check=Check(**check) if check else None,
        )

    def configs(self) -> list[str]:
        return list(dict.fromkeys(p.config for p in self.points if p.n))

    def series(self, config: str) -> list[Point]:
        return sorted((p for p in self.points if p.config == config), key=lambda p: p.cq)


BASELINE = "libvpx"


def label(n: int, x: int) -> str:
    return f"[{n},{x}]"


# ---------------------------------------------------------------------------------------------
# Work in pool processes.


def timed(function: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """In a worker: (result, seconds) of one call."""
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def single_stream_path(source: Path, vpxenc: str, cq: int) -> Path:
    """Where the single stream of `source` at `cq` is cached: keyed by the source's name and
    size, the vpxenc command line and vpxenc's version (the stream depends on nothing else)."""
    from shared.pipeline.vpx import vpxenc_version

    command = " ".join(vpxenc_command("vpxenc", cq, MAX_LAG_IN_FRAMES, Path("in"), Path("out")))
    identity = f"{source.name} {source.stat().st_size} {command} {vpxenc_version(vpxenc)}"
    digest = hashlib.sha1(identity.encode()).hexdigest()[:10]
    return CACHE / f"single-{source.stem}-cq{cq}-{digest}.ivf"


def cached_seconds(stream: Path) -> float:
    """vpxenc's wall time when it made the cached stream (recorded beside it)."""
    return float(json.loads(stream.with_suffix(".json").read_text())["seconds"])


def encode_single(vpxenc: str, cq: int, source: str, output: str) -> float:
    """The whole clip as one libvpx stream; returns vpxenc's wall time.

    The pipeline's settings, but with libvpx's own key-frame placement (no --disable-kf, which
    a chunk needs to have exactly one key frame): at scene cuts libvpx starts key frames, as
    any single-stream encode would. Where it places none (BBB, Sintel) the bytes are the same.
    """
    command = vpxenc_command(vpxenc, cq, MAX_LAG_IN_FRAMES, Path(source), Path(output))
    command.remove("--disable-kf")
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(f"vpxenc failed ({done.returncode}): {done.stderr.strip()}")
    Path(output).with_suffix(".json").write_text(json.dumps({"seconds": seconds}))
    return seconds


@dataclass(frozen=True)
class Quality:
    payload_bytes: int
    packets: int
    frames: int
    ssim_db: float
    psnr_db: float


def measure_stream(ivf: str, source: str, vpxdec: str) -> Quality:
    """Decode `ivf` with vpxdec and compare every picture with the source Y4M."""
    frames = read_ivf_frames(Path(ivf).read_bytes())
    with tempfile.TemporaryDirectory(prefix="excamera-bench-") as directory:
        raw = Path(directory) / "decoded.yuv"
        command = [vpxdec, "--codec=vp8", "--threads=1", "--i420", "--rawvideo", "-o", raw, ivf]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(f"vpxdec failed on {ivf} ({done.returncode}): {done.stderr.strip()}")
        ssim_sum, error, samples, count = 0.0, 0, 0, 0
        with Y4mReader(source) as reader:
            decoded = read_raw_i420(raw, reader.header.width, reader.header.height)
            for picture, image in zip(reader, decoded, strict=True):
                ssim_sum += metrics.ssim(image, picture)
                error += sum(
                    metrics.sse(a, b) for a, b in zip(image.planes, picture.planes, strict=True)
                )
                samples += sum(plane.size for plane in picture.planes)
                count += 1
    return Quality(
        payload_bytes=sum(map(len, frames)),
        packets=len(frames),
        frames=count,
        ssim_db=metrics.ssim_db(ssim_sum / count),
        psnr_db=metrics.psnr_from_sse(error, samples),
    )


# ---------------------------------------------------------------------------------------------
# ExCamera[n,x]: the runner's task graph, each task timed.

def run_excamera(
    pool: ProcessPoolExecutor,
    lanes: Lanes,
    workers: int,
    source: Path,
    n: int,
    x: int,
    cq: int,
    output: Path,
    options: argparse.Namespace,
) -> Point:
    """Encode `source` with ExCamera[n,x] into `output` (`options`: the split's, from the
    command line); the point has times, not quality."""
    settings = EncodeSettings(cq_level=cq, vpxenc=require_tool("vpxenc"))
    with tempfile.TemporaryDirectory(prefix="excamera-bench-") as directory:
        store, job = LocalStore(directory, durable=False), f"bench-{n}x{x}-cq{cq}"
        started = time.perf_counter()
        split_options = {"scene_cuts": options.scene_cuts, "lead_in": options.lead_in,
                         "start_frames": options.start_frames}
        plan, split = pool.submit(
            timed, partial(stages.split, **split_options), store, job, str(source), n, x
        ).result()
        scheduler = Scheduler(pool, workers, Progress(False), None, lanes)
        results = scheduler.run(task_graph(store, plan, settings, output, verify=False))
        seconds = scheduler.task_seconds
        wall = time.perf_counter() - started
        start_cost = chunk_start_cost(store, plan)
        gap = rebase_gap(store, plan)
    chunk_times: dict[str, list[float | None]] = {
        stage: [seconds.get((stage, i)) for i in range(plan.chunk_count)]
        for stage in ("encode", "state", "first")
    }
    # Stage 5 in its parts (stages.LinkTimes): only "rebase" (incoming state to exit state
    # handed on) is serial; "rebase_task" is the whole task as the runner ran it.
    links = [results[("rebase", i)] for i in range(plan.chunk_count)]
    chunk_times["prepare"] = [link.prepare for link in links]
    chunk_times["rebase"] = [link.critical for link in links]
    chunk_times["finish"] = [link.finish for link in links]
    chunk_times["rebase_task"] = [seconds.get(("rebase", i)) for i in range(plan.chunk_count)]
    point = Point(
        label(n, x), n, x, cq, seconds=wall, split=split, join=seconds[("join", 0)],
        chunk_times=chunk_times, positions=[plan.position(i) for i in range(plan.chunk_count)],
        scene_cuts=list(plan.scene_cuts), start_cost=start_cost, rebase_gap_db=gap,
    )  # fmt: skip
    point.latency = project_latency(point)
    return point


def rebase_gap(store: LocalStore, plan: stages.ChunkPlan) -> float | None:
    """How much lower the PSNR of rebased chunks is than libvpx's own encode of them (phase 1),
    in dB: over the chunks that continue their group, their frames after the first (the
    rebased ones), all squared errors pooled; None without such chunks."""
    from shared.codec import DecoderState

    errors = {"final": 0, "libvpx": 0}
    samples = 0
    state = DecoderState.initial()
    for i in range(plan.chunk_count):
        pictures = stages._source_images(store, plan.job, i)
        final = read_ivf_frames(store.get(stages.chunk_key(plan.job, i, "final.ivf")))
        state, decoded = decode_shown(state, final)
        if plan.position(i) == 0 or len(pictures) < 2:
            continue
        vpx = read_ivf_frames(store.get(stages.chunk_key(plan.job, i, "vpx.ivf")))
        _, own = decode_shown(DecoderState.initial(), vpx)
        own = own[len(own) - len(pictures):]  # after a lead-in, if any
        for name, images in (("final", decoded), ("libvpx", own)):
            errors[name] += sum(picture_sse(a, b) for a, b in zip(images[1:], pictures[1:],
                                                                   strict=True))
        samples += sum(sum(plane.size for plane in p.planes) for p in pictures[1:])
    if not samples:
        return None
    return metrics.psnr_from_sse(errors["libvpx"], samples) - metrics.psnr_from_sse(
        errors["final"], samples)


def decode_shown(state: Any, frames: list[bytes]) -> tuple[Any, list[Any]]:
    from shared.codec import decode

    shown = []
    for frame in frames:
        state, image = decode(state, frame)
        if image is not None:
            shown.append(image)
    return state, shown


def picture_sse(a: Any, b: Any) -> int:
    return sum(metrics.sse(x, y) for x, y in zip(a.planes, b.planes, strict=True))


def chunk_start_cost(store: LocalStore, plan: stages.ChunkPlan) -> float | None:
    """What the first frame of a chunk that continues its group costs, in ordinary frames:
    over those chunks, the first frames' bytes over the mean bytes of the chunks' other shown
    frames (None without such chunks)."""
    firsts, others = 0, []
    for i in range(plan.chunk_count):
        if plan.position(i) == 0:
            continue
        frames = read_ivf_frames(store.get(stages.chunk_key(plan.job, i, "final.ivf")))
        shown = [len(frame) for frame in frames if frame[0] & 0x10]
        if len(shown) < 2:
            continue
        firsts += len(frames[0])
        others.append(sum(shown[1:]) / len(shown[1:]))
    return firsts / sum(others) if others else None


def project_latency(point: Point) -> Latency:
    """One worker per chunk: the simple projection, and the exact critical path (DAG).

    A link of the rebase chain is serial only from its incoming state to its exit state
    ("rebase"); its worker prepares it ("prepare": reads and parses its chunk) while earlier
    links run, and writes its frames ("finish") while later ones run. So the chain is the sum of
    a group's "rebase" times, "prepare" joins each chunk's parallel path, and the last link's
    "finish" follows the chain. Results saved before the split have whole tasks as "rebase".
    """
    chunks = len(point.chunk_times["encode"])
    # Results saved before variable groups have no positions: groups of x then.
    positions = point.positions or [i % point.x for i in range(chunks)]
    times = {
        stage: [t or 0.0 for t in point.chunk_times.get(stage, [None] * chunks)]
        for stage in ("encode", "state", "first", "prepare", "rebase", "finish")
    }
    share = point.split / chunks
    paths = [
        share + times["encode"][i] + times["state"][i] + times["first"][i] + times["prepare"][i]
        for i in range(chunks)
    ]
    slowest = max(range(chunks), key=paths.__getitem__)
    starts = [i for i in range(chunks) if positions[i] == 0] + [chunks]
    groups = [range(a, b) for a, b in zip(starts, starts[1:], strict=False)]
    chain = max(sum(times["rebase"][i] for i in group) for group in groups)
    tail = max(times["finish"][group[-1]] for group in groups)
    total = paths[slowest] + chain + tail + point.join
    # Exact: worker i encodes, decodes its exit state, encodes given chunk i-1's state and
    # prepares its link; the link starts when chunk i-1's link hands its exit state on.
    state_done = [share + times["encode"][i] + times["state"][i] for i in range(chunks)]
    handed_on: list[float] = []
    done: list[float] = []
    for i in range(chunks):
        ready = state_done[i]
        if positions[i]:
            ready = max(ready, state_done[i - 1]) + times["first"][i]
            ready += times["prepare"][i]
            if positions[i] >= 2:
                ready = max(ready, handed_on[i - 1])
        handed_on.append(ready + times["rebase"][i])
        done.append(handed_on[-1] + times["finish"][i])
    return Latency(
        split_share=share,
        encode=times["encode"][slowest],
        state=times["state"][slowest],
        first=times["first"][slowest] + times["prepare"][slowest],
        chain=chain,
        join=tail + point.join,
        total=total,
        chain_share=100 * chain / total,
        dag=max(done) + point.join,
    )


# ---------------------------------------------------------------------------------------------
# Bjontegaard delta rate.


def bd_rate(
    anchor: list[tuple[float, float]], test: list[tuple[float, float]]
) -> tuple[float, float, float] | None:
    """Percent more bitrate `test` needs than `anchor` at equal quality, from (kbps, dB)
    points, and the quality range compared: fits of log rate against quality (cubic, or of
    degree points - 1), their mean over the range both cover."""
    fits, ranges = [], []
    for points in (anchor, test):
        rate, quality = np.log([p[0] for p in points]), np.array([p[1] for p in points])
        fits.append(np.polyint(np.polyfit(quality, rate, min(3, len(points) - 1))))
        ranges.append((quality.min(), quality.max()))
    low, high = max(r[0] for r in ranges), min(r[1] for r in ranges)
    if not low < high:
        return None
    mean = [(np.polyval(f, high) - np.polyval(f, low)) / (high - low) for f in fits]
    return (math.exp(mean[1] - mean[0]) - 1) * 100, float(low), float(high)


def add_bd_rates(result: ClipResult) -> None:
    anchor = result.series(BASELINE)
    result.bd_rates = []
    for config in result.configs():
        for metric in ("ssim", "psnr"):
            series = result.series(config)
            if min(len(anchor), len(series)) < 2:
                result.bd_rates.append(BdRate(config, metric, None))
                continue
            found = bd_rate(
                [(p.kbps, getattr(p, f"{metric}_db")) for p in anchor],
                [(p.kbps, getattr(p, f"{metric}_db")) for p in series],
            )
            result.bd_rates.append(BdRate(config, metric, *(found or (None, None, None))))


# ---------------------------------------------------------------------------------------------
# The run.


def clip_configs(specs: list[tuple[int, int]], frames: int) -> list[tuple[int, int]]:
    """(n, x) with x capped at the chunk count; single-chunk configs dropped; no duplicates."""
    configs = []
    for n, x in specs:
        chunks = -(-frames // n)
        if chunks >= 2 and (n, min(x, chunks)) not in configs:
            configs.append((n, min(x, chunks)))
    return configs


def goal_config(result: ClipResult) -> str | None:
    n, x = GOAL_CONFIG
    found = [p for p in result.points if p.n == n and p.x > 1]
    return label(n, min(x, max(p.x for p in found))) if found else None


def reference_cq(cqs: list[int]) -> int:
    return min(cqs, key=lambda q: (abs(q - REFERENCE_CQ), q))


def codec_fingerprint() -> str:
    """A digest of shared/ (sources and compiled modules): results from different builds of the
    codec must not be mixed, and it is rebuilt in place."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "shared").rglob("*")):
        if path.suffix in (".py", ".pyx", ".so") and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def git_commit() -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def bench_clip(clip: Clip, args: argparse.Namespace, specs: list[tuple[int, int]]) -> ClipResult:
    source = source_y4m(clip, args.shared)
    width, height, (num, den), frames = y4m_info(source)
    fps = num / den
    result = ClipResult(clip.name, clip.label, width, height, frames, fps, args.workers)
    vpxenc, vpxdec = require_tool("vpxenc"), require_tool("vpxdec")
    configs = clip_configs(specs, frames)
    note(f"{clip.label}: {frames} frames; configs {', '.join(label(*c) for c in configs)}")
    with (
        tempfile.TemporaryDirectory(prefix="excamera-bench-") as directory,
        process_pool(args.workers) as pool,
        lane_pools(args.workers) as lanes,
    ):
        streams: dict[tuple[str, int], Path] = {}
        # Single streams: each vpxenc process is single-threaded; --workers of them at once.
        single = {}
        for cq in args.cq:
            streams[(BASELINE, cq)] = single_stream_path(source, vpxenc, cq)
            if not streams[(BASELINE, cq)].exists() or args.fresh_single:
                single[cq] = pool.submit(
                    encode_single, vpxenc, cq, str(source), str(streams[(BASELINE, cq)])
                )
        for cq in args.cq:
            stream = streams[(BASELINE, cq)]
            seconds = single[cq].result() if cq in single else cached_seconds(stream)
            result.points.append(Point(BASELINE, 0, 0, cq, seconds=seconds))
            cached_note = "" if cq in single else " (cached)"
            note(f"  cq {cq:2d} libvpx single stream: {seconds:6.1f} s{cached_note}")
        # ExCamera configs one at a time, each with the whole pool.
        for cq in args.cq:
            for n, x in configs:
                output = Path(directory) / f"excamera-{n}x{x}-cq{cq}.ivf"
                point = run_excamera(pool, lanes, args.workers, source, n, x, cq, output, args)
                streams[(point.config, cq)] = output
                result.points.append(point)
                assert point.latency is not None
                note(
                    f"  cq {cq:2d} ExCamera{point.config}: {point.seconds:6.1f} s on "
                    f"{args.workers} workers; projected {point.latency.total:5.1f} s "
                    f"(chain {point.latency.chain_share:.0f} %)"
                )
        note(f"  measuring {len(streams)} streams with vpxdec ...")
        quality = {
            key: pool.submit(measure_stream, str(path), str(source), vpxdec)
            for key, path in streams.items()
        }
        for point in result.points:
            found = quality[(point.config, point.cq)].result()
            if found.frames != frames:
                raise BenchError(f"{point.config} cq {point.cq}: {found.frames} frames decoded")
            point.payload_bytes, point.packets = found.payload_bytes, found.packets
            point.kbps = found.payload_bytes * 8 * fps / frames / 1000
            point.ssim_db, point.psnr_db = found.ssim_db, found.psnr_db
    add_bd_rates(result)
    if args.check:
        result.check = runner_check(result, source, args.workers, args.start_frames)
    return result


def runner_check(
    result: ClipResult, source: Path, workers: int, start_frames: str = "rebase"
) -> Check | None:
    """The embedded runner on the goal config at the reference cq, for comparison."""
    from shared.pipeline.runner import run_job

    config = goal_config(result)
    if config is None:
        return None
    cq = reference_cq(sorted({p.cq for p in result.points}))
    point = next(p for p in result.points if p.config == config and p.cq == cq)
    note(f"  check: the embedded runner, ExCamera{config} cq {cq} ...")
    with tempfile.TemporaryDirectory(prefix="excamera-bench-") as directory:
        summary = run_job(
            source, Path(directory) / "out.ivf", n=point.n, x=point.x, quality=cq,
            workers=workers, progress=False, start_frames=start_frames,
        )  # fmt: skip
    return Check(
        config=config,
        cq=cq,
        kbps=summary.bitrate_kbps,
        ssim_db=summary.ssim_db,
        psnr_db=summary.psnr_db,
        seconds=summary.seconds,
        stages={name: asdict(times) for name, times in summary.stages.items()},
        bench_kbps=point.kbps,
        bench_ssim_db=point.ssim_db,
        bench_psnr_db=point.psnr_db,
        bench_seconds=point.seconds,
    )


# ---------------------------------------------------------------------------------------------
# Tables.


def percent(value: float | None) -> str:
    return f"{value:+.1f} %" if value is not None else "n/a"


def print_tables(result: ClipResult) -> None:
    print(
        f"\n## {result.label}: {result.width}x{result.height}, {result.frames} frames at "
        f"{result.fps:g} fps, {result.workers} workers\n"
    )
    print("| encoder | cq | kbit/s | SSIM dB | PSNR dB | wall s | projected s | chain % | "
          "chunk start, frames | rebase gap dB |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for config in [BASELINE, *result.configs()]:
        for p in result.series(config):
            lat = p.latency
            projected = f"{lat.total:.2f}" if lat else "-"
            chain = f"{lat.chain_share:.0f}" if lat and p.x > 1 else "-"
            name = "libvpx, one stream" if config == BASELINE else f"ExCamera{config}"
            start = f"{p.start_cost:.1f}" if p.start_cost is not None else "-"
            gap = f"{p.rebase_gap_db:.2f}" if p.rebase_gap_db is not None else "-"
            print(
                f"| {name} | {p.cq} | {p.kbps:.0f} | {p.ssim_db:.3f} | {p.psnr_db:.3f} | "
                f"{p.seconds:.1f} | {projected} | {chain} | {start} | {gap} |"
            )
    if any(p.scene_cuts for p in result.points):
        cuts = next(p.scene_cuts for p in result.points if p.scene_cuts)
        print(f"\nScene cuts found by the split (frames): {', '.join(map(str, cuts))}")

    print("\nBD-rate against the single libvpx stream (positive: ExCamera spends more bits):\n")
    print("| ExCamera | at equal SSIM | SSIM range dB | at equal PSNR | PSNR range dB |")
    print("|---|---:|---:|---:|---:|")
    for config in result.configs():
        found = {b.metric: b for b in result.bd_rates if b.config == config}
        cells = []
        for metric in ("ssim", "psnr"):
            b = found[metric]
            span = f"{b.low:.2f}-{b.high:.2f}" if b.low is not None else "-"
            cells += [percent(b.percent), span]
        print(f"| {config} | {' | '.join(cells)} |")

    cq = reference_cq(sorted({p.cq for p in result.points}))
    print(f"\nTime per stage at cq {cq} (seconds; per chunk: mean / max):\n")
    print("| encoder | wall | split | libvpx encode | exit state | encode given state | "
          "link: prepare | link: rebase (serial) | link: write | join |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in result.points:
        if p.cq != cq:
            continue
        if not p.n:
            print(f"| libvpx, one stream | {p.seconds:.1f} | | {p.seconds:.1f} | | | | | | |")
            continue
        cells = []
        for stage in ("encode", "state", "first", "prepare", "rebase", "finish"):
            values = [t for t in p.chunk_times.get(stage, []) if t is not None]
            cells.append(f"{np.mean(values):.2f} / {max(values):.2f}" if values else "-")
        print(
            f"| ExCamera{p.config} | {p.seconds:.1f} | {p.split:.2f} | {' | '.join(cells)} | "
            f"{p.join:.2f} |"
        )

    print(f"\nProjected latency with one worker per chunk (seconds), cq {cq}:\n")
    print("| ExCamera | split share | libvpx encode | exit state | encode given state + "
          "prepare link | serial chain | write last link + join | total | chain % | "
          "DAG |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in result.points:
        if p.cq != cq or p.latency is None:
            continue
        lat = p.latency
        print(
            f"| {p.config} | {lat.split_share:.2f} | {lat.encode:.2f} | {lat.state:.2f} | "
            f"{lat.first:.2f} | {lat.chain:.2f} | {lat.join:.2f} | {lat.total:.2f} | "
            f"{lat.chain_share:.0f} | {lat.dag:.2f} |"
        )

    if result.check is not None:
        c = result.check
        print(f"\nCheck: the embedded runner (run_job) on ExCamera{c.config}, cq {c.cq}:\n")
        print("| | kbit/s | SSIM dB | PSNR dB | wall s |")
        print("|---|---:|---:|---:|---:|")
        print(f"| run_job Summary | {c.kbps:.1f} | {c.ssim_db:.3f} | {c.psnr_db:.3f} | "
              f"{c.seconds:.1f} |")  # fmt: skip
        print(f"| this benchmark | {c.bench_kbps:.1f} | {c.bench_ssim_db:.3f} | "
              f"{c.bench_psnr_db:.3f} | {c.bench_seconds:.1f} |")  # fmt: skip
        stage_cells = ", ".join(
            f"{name} {t['wall']:.1f}/{t['busy']:.1f}" for name, t in c.stages.items()
        )
        print(f"\nrun_job stage times (wall/busy s): {stage_cells}")
    sys.stdout.flush()


def verdicts(results: list[ClipResult]) -> list[str]:
    lines = []
    for result in results:
        config = goal_config(result)
        if config is None:
            continue
        bd = next((b for b in result.bd_rates if b.config == config and b.metric == "ssim"),
                  None)
        if bd is None:  # results merged from several runs label their configs otherwise
            continue
        ok = bd.percent is not None and bd.percent <= GOAL_BD_RATE
        lines.append(
            f"{result.label}: ExCamera{config} BD-rate at equal SSIM {percent(bd.percent)} "
            f"(goal <= +{GOAL_BD_RATE:g} %: {'met' if ok else 'NOT met'})"
        )
        shares = [p.latency.chain_share for p in result.series(config) if p.latency]
        worst = max(shares)
        lines.append(
            f"{result.label}: ExCamera{config} serial chain {min(shares):.0f}-{worst:.0f} % of "
            f"the projected latency (goal < {GOAL_CHAIN_SHARE:g} %: "
            f"{'met' if worst < GOAL_CHAIN_SHARE else 'NOT met'})"
        )
    return lines


# ---------------------------------------------------------------------------------------------
# Plots.


def load_pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise BenchError(
            f"matplotlib is needed for the plots ({exc}): pip install matplotlib, or --no-plots"
        ) from exc
    return plt


def plot_rd(result: ClipResult, path: Path) -> None:
    plt = load_pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    bd = {(b.config, b.metric): b.percent for b in result.bd_rates}
    for config in [BASELINE, *result.configs()]:
        series = result.series(config)
        rates = [p.kbps for p in series]
        for ax, metric in zip(axes, ("ssim", "psnr"), strict=True):
            if config == BASELINE:
                name, style = "libvpx, one stream", {"color": "black", "linewidth": 2.5}
            else:
                name, style = f"ExCamera{config} ({percent(bd.get((config, metric)))})", {}
            values = [getattr(p, f"{metric}_db") for p in series]
            ax.plot(rates, values, marker="o", label=name, **style)
    for ax, metric in zip(axes, ("SSIM", "PSNR"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("bitrate (kbit/s, log scale)")
        ax.set_ylabel(f"{metric} (dB)")
        ax.set_title(f"{result.label}, {result.frames} frames: bitrate vs {metric}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, title=f"BD-rate at equal {metric}", title_fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


LATENCY_PARTS = (
    ("split_share", "split (share)"),
    ("encode", "libvpx encode"),
    ("state", "exit-state decode"),
    ("first", "encode given state, prepare link"),
    ("chain", "serial rebase chain"),
    ("join", "write last link, join"),
)


def plot_latency(results: list[ClipResult], path: Path) -> None:
    plt = load_pyplot()
    figure, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.8), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    for ax, result in zip(axes[0], results, strict=True):
        cq = reference_cq(sorted({p.cq for p in result.points}))
        points = [p for p in result.points if p.cq == cq and p.latency is not None]
        single = next(p for p in result.points if p.cq == cq and not p.n)
        names = ["libvpx\none stream", *(p.config for p in points)]
        ax.bar(names[0], single.seconds, color="0.6", label="libvpx, one stream (wall)")
        bottom = np.zeros(len(points))
        for color, (attribute, name) in zip(colors, LATENCY_PARTS, strict=False):
            heights = np.array([getattr(p.latency, attribute) for p in points])
            ax.bar(names[1:], heights, bottom=bottom, label=name, color=color)
            bottom += heights
        for position, p in enumerate(points):
            assert p.latency is not None
            if p.x > 1:
                ax.annotate(
                    f"chain {p.latency.chain_share:.0f} %", (position + 1, bottom[position]),
                    ha="center", va="bottom", fontsize=8,
                )  # fmt: skip
        ax.set_ylabel("seconds")
        ax.set_title(f"{result.label}, cq {cq}: projected latency, one worker per chunk")
        ax.grid(True, axis="y", alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, names, loc="lower center", ncol=len(names), fontsize=8)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_plots(results: list[ClipResult], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for result in results:
        written.append(directory / f"rd-{result.clip}.png")
        plot_rd(result, written[-1])
    written.append(directory / "latency.png")
    plot_latency(results, written[-1])
    return written


# ---------------------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def config_list(text: str) -> list[tuple[int, int]]:
    configs = []
    for item in text.split(","):
        n, sep, x = item.strip().partition("x")
        if not (sep and n.isdigit() and x.isdigit() and int(n) >= 1 and int(x) >= 1):
            raise argparse.ArgumentTypeError(f"configs are NxX, e.g. 6x16; got {item!r}")
        configs.append((int(n), int(x)))
    return configs


def run(args: argparse.Namespace, names: list[str]) -> tuple[list[ClipResult], dict[str, Any]]:
    require_tool("vpxenc")
    require_tool("vpxdec")
    started, fingerprint = time.perf_counter(), codec_fingerprint()
    results = []
    for name in names:
        results.append(bench_clip(CLIPS[name], args, args.configs))
        if not args.json:
            print_tables(results[-1])
    note(f"benchmark done in {time.perf_counter() - started:.0f} s")
    if codec_fingerprint() != fingerprint:
        note("WARNING: shared/ changed during the run: the results mix two codec builds")
        fingerprint += "+changed"
    report = {
        "commit": git_commit(),
        "codec": fingerprint,
        "workers": args.workers,
        "cq": args.cq,
        "seconds": round(time.perf_counter() - started, 1),
        "clips": [asdict(r) for r in results],
    }
    return results, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--clips", default="bbb,sintel,cuts",
        help="from bbb, sintel, cuts, bbb1080 (default: the first three)",
    )
    parser.add_argument(
        "--cq", type=int_list, default=None, help="cq levels (default: 10,20,30,40)"
    )
    parser.add_argument(
        "--configs", type=config_list, default=config_list(DEFAULT_CONFIGS),
        help=f"ExCamera NxX configs (default: {DEFAULT_CONFIGS})",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="pool processes (default: 2)")
    parser.add_argument(
        "--quick", action="store_true", help=f"Sintel only, cq {QUICK_CQ[0]} and {QUICK_CQ[1]}"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--scene-cuts", choices=("auto", "off"), default="auto",
        help="the split's scene-cut detection (default: auto)",
    )  # fmt: skip
    parser.add_argument(
        "--lead-in", action="store_true",
        help="chunks start with a lead-in picture in phase 1 instead of a re-encoded key frame",
    )  # fmt: skip
    parser.add_argument(
        "--start-frames", choices=stages.START_FRAME_MODES, default="rebase",
        help="how a chunk that continues its group starts (default: rebase)",
    )  # fmt: skip
    parser.add_argument(
        "--fresh-single", action="store_true",
        help="encode the single streams again (and time them) instead of using bench/.cache/",
    )  # fmt: skip
    parser.add_argument(
        "--no-check", dest="check", action="store_false", help="skip the run_job cross-check"
    )
    parser.add_argument("--plots", type=Path, default=None, help=f"default: {PLOTS}")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument(
        "--save", type=Path, default=None,
        help="write the results here (default: bench/.cache/excamera[-quick].json)",
    )  # fmt: skip
    parser.add_argument("--replot", type=Path, help="tables and plots from a saved result")
    parser.add_argument(
        "--shared", type=Path, default=DEFAULT_SHARED,
        help="the reference folder (default: ../shared beside the repository)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:
        args.clips, args.cq = "sintel", args.cq or list(QUICK_CQ)
    args.cq = sorted(set(args.cq or DEFAULT_CQ))
    names = [name.strip() for name in args.clips.split(",") if name.strip()]
    if unknown := [name for name in names if name not in CLIPS]:
        parser.error(f"unknown clip(s) {unknown}; choose from {list(CLIPS)}")
    if args.workers < 1 or not all(0 <= q <= 63 for q in args.cq):
        parser.error("--workers must be at least 1 and cq levels 0-63")
    save = args.save or CACHE / ("excamera-quick.json" if args.quick else "excamera.json")
    plots = args.plots or (CACHE / "plots-quick" if args.quick else PLOTS)

    try:
        if args.replot:
            try:
                report = json.loads(args.replot.read_text())
                results = [ClipResult.from_dict(clip) for clip in report["clips"]]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise BenchError(f"{args.replot}: not a saved result ({exc})") from exc
        else:
            results, report = run(args, names)
            save.parent.mkdir(parents=True, exist_ok=True)
            save.write_text(json.dumps(report, indent=1))
            note(f"results saved to {save}")
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            if args.replot:
                for result in results:
                    print_tables(result)
            print(f"\ncommit {report['commit']}, codec digest {report['codec']}")
            for line in verdicts(results):
                print(line)
        if not args.no_plots:
            for path in write_plots(results, plots):
                note(f"wrote {path}")
    except BenchError as exc:
        print(f"bench/excamera.py: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
