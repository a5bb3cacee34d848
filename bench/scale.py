"""Projected wall time and cost of a 14.8-minute 4K job (Sintel: 21,312 frames, 4096x1744, 24 fps)
as ExCamera[n,x] on AWS Lambda with 1,000-4,000 concurrent workers: a discrete-event simulation.

    python bench/scale.py                 # tables: the worker sweep for [6,16], then n and x
    python bench/scale.py --json          # {"config": "6x16", "workers": N, "latency_s", ...}
    python bench/scale.py --plots DIR     # also latency vs workers and vs n, x (bench/plots/)
    options: --config 6x16 --workers 3600 --dispatch direct|sqs --prewarm SECONDS --seeds 5
             --rebaser-lanes 256 --cpu-factor 1.0 --no-hedge --report bench/REPORT.md
             --stage-times bench/.cache/excamera.json [--stage-clip bbb1080]

Per-stage times are the ones bench/excamera.py measured on this machine, saved in
bench/stage-times.json (`python bench/excamera.py --clips bbb,bbb1080 --cq 20 --configs 6x16
--no-check --save bench/stage-times.json`): Big Buck Bunny's first 96 frames at 1280x720 and
upscaled to 1920x1080, [6,16], cq 20, per-chunk means of the libvpx encode, the exit state, the
encode given state, and a rebase link's serial step and write. The 1080p ones (the largest
clip, by default) are scaled by pixel count to 4096x1744 (x3.44) and by frames per chunk, times
--cpu-factor for a Lambda vCPU against this machine's core (1769 MB is one vCPU). Linear
pixel scaling holds between the two sizes: the text output prints each stage's 1080p/720p
ratio against the pixel ratio, 2.25.

What is modelled (each a named constant below):
- The task graph per chunk: libvpx encode; exit-state decode (decoder function); encode given
  the previous chunk's state (stage 4); the serial rebase link per group (rebaser lanes, a lane
  keeps its group's state in memory); a streaming join (each group a multipart part).
- S3 transfers: first-byte latency plus size over a per-worker throughput.
- Lambda scaling: each function adds at most 1,000 execution environments per 10 s (from 1,000
  at the start); concurrency capped by the workers setting (reserved concurrency) and the
  account limit; a new environment pays a cold start (lognormal, p50 2.3 s, p99 3.5 s, as in the
  original's logs); a finished environment takes the next task warm. With --dispatch sqs the
  SQS event-source mapping feeds the encoder instead: it starts at 5 concurrent invocations and
  adds 300 a minute, at most 1,000 per mapping (MaximumConcurrency).
- Throttling: calls beyond the allowed concurrency, and a share of new-environment calls in a
  burst (the original saw 7-14 % at 1,000-way), are refused and retried with exponential
  backoff and full jitter.
- Stragglers: every compute time has a lognormal body and, rarely, a heavy tail (2-8x). Hedging
  duplicates a task that runs past twice its expected time; the first writer wins (both bill).

Shares reported: chain = the serial rebase links of the last group to finish, summed, over the
latency; ramp-up and
stragglers = how much shorter the same job is without them (instant warm capacity; no tail).
Cost: shared/pipeline/costs.py (us-east-1 prices with their date), per job.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import re
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STAGE_TIMES = ROOT / "bench" / "stage-times.json"
sys.path.insert(0, str(ROOT))

from shared.pipeline import costs  # noqa: E402

# --------------------------------------------------------------------------- the job
FRAMES = 21_312
WIDTH, HEIGHT = 4096, 1744  # Sintel 4K
FPS = 24
BITRATE_BPS = 27.4e6  # ExCamera[6,16]'s at SSIM 20 dB on 4K Sintel (the original's figure)
ORIGINAL_6X16_S = 156.6  # the original's ExCamera[6,16] on this job, chunks already in S3

# --------------------------------------------------------------------------- AWS behaviour
SCALE_STEP_ENVS = 1000  # environments a function may add per SCALE_STEP_S
SCALE_STEP_S = 10.0
ACCOUNT_CONCURRENCY = 5000  # raised quota assumed (the default is 1,000)
COLD_P50_S, COLD_P99_S = 2.3, 3.5
ESM_START, ESM_PER_MINUTE, ESM_MAX = 5, 300, 1000
BURST_THROTTLE_SHARE = 0.10  # of new-environment calls in the first scaling step
BACKOFF_BASE_S, BACKOFF_CAP_S = 0.1, 5.0
DISPATCH_S = 0.04  # a hop: direct invoke or SQS long poll to handler start
S3_FIRST_BYTE_S = 0.03
S3_MB_PER_S = 90.0  # one Lambda's throughput to S3
ENCODER_MEMORY_MB = 1769
DECODER_MEMORY_MB = 1769
DECODER_CONCURRENCY = 1000
REBASER_LANES = 256  # Fargate vCPUs for the rebaser (16 tasks of 16 vCPU), one group at a time
REBASER_GB_PER_VCPU = 2.0
TAIL_SHARE, TAIL_MIN, TAIL_MAX = 0.01, 2.0, 8.0
BODY_SIGMA = 0.10
HEDGE_AFTER = 2.0  # times the expected duration

# --------------------------------------------------------------------------- stage times


@dataclass(frozen=True)
class StageTimes:
    """Seconds per chunk of n frames at width x height; the serial step of a link apart."""

    width: int
    height: int
    frames: int
    encode: float  # libvpx, both passes
    state: float  # decoding the exit state
    stage4: float  # encode given the previous chunk's state
    link: float  # the rebase link's serial step (incoming state to exit state)
    link_write: float  # writing the link's final frames (off the chain but for the last)
    source: str = ""

    def scaled(self, width: int, height: int, frames: int, cpu: float) -> StageTimes:
        factor = (width * height) / (self.width * self.height) * frames / self.frames * cpu
        return StageTimes(width, height, frames, self.encode * factor, self.state * factor,
                          self.stage4 * factor, self.link * factor, self.link_write * factor,
                          f"{self.source}, x{factor:.2f}")


def _mean(values: list[float | None]) -> float:
    known = [value for value in values if value is not None]
    if not known:
        raise SystemExit("a saved result without those stage times")
    return sum(known) / len(known)


def print_pixel_scaling(path: Path) -> None:
    """Each stage's time ratio between the two sizes in `path`, against their pixel ratio."""
    clips = {c["clip"] for c in json.loads(path.read_text())["clips"]}
    if len(clips) < 2:
        return
    small, large = sorted((read_saved(path, clip) for clip in clips),
                          key=lambda t: t.width * t.height)[:: len(clips) - 1]
    pixels = large.width * large.height / (small.width * small.height)
    ratios = ", ".join(f"{name} {getattr(large, name) / getattr(small, name):.2f}"
                       for name in ("encode", "state", "stage4", "link", "link_write"))
    print(f"{large.width}x{large.height} over {small.width}x{small.height}: pixels "
          f"x{pixels:.2f}; time {ratios}")


def read_saved(path: Path, clip: str | None) -> StageTimes:
    """The [6,16] cq 20 per-chunk means of one clip (default: the one with the most pixels) in
    a result bench/excamera.py saved (--save), e.g. the 1080p clip: `--clips bbb1080`."""
    try:
        clips = json.loads(path.read_text())["clips"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"{path}: not a result bench/excamera.py saved ({exc})") from exc
    if clip is not None:
        clips = [c for c in clips if c["clip"] == clip]
    if not clips:
        raise SystemExit(f"{path}: no clip {clip!r}")
    chosen = max(clips, key=lambda c: c["width"] * c["height"])
    points = [p for p in chosen["points"] if p["n"] == 6 and p["cq"] == 20]
    if not points:
        raise SystemExit(f"{path}: {chosen['clip']} has no ExCamera[6,x] point at cq 20")
    times = points[0]["chunk_times"]
    return StageTimes(
        width=chosen["width"], height=chosen["height"], frames=6,
        encode=_mean(times["encode"]), state=_mean(times["state"]),
        stage4=_mean(times["first"]), link=_mean(times["rebase"]),
        link_write=_mean(times["finish"]),
        source=f"{path.name}: {chosen['clip']} {chosen['width']}x{chosen['height']} "
               f"{points[0]['config']} cq 20",
    )


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Scenario:
    frames_per_chunk: int = 6
    chunks_per_group: int = 16
    workers: int = 3600  # the encoder's concurrency (reserved)
    dispatch: str = "direct"  # or "sqs"
    prewarm_s: float = 0.0  # encoder warm-up before the first chunk is ready
    rebaser_lanes: int = REBASER_LANES
    hedge: bool = True
    ramp: bool = True  # False: every environment there and warm at t=0 (counterfactual)
    tail: bool = True  # False: no stragglers (counterfactual)
    seed: int = 0

    @property
    def config(self) -> str:
        return f"{self.frames_per_chunk}x{self.chunks_per_group}"


@dataclass(order=True)
class _Task:
    priority: tuple[int, int, int]
    kind: str = field(compare=False)
    chunk: int = field(compare=False)
    attempt: int = field(default=0, compare=False)


@dataclass
class _Function:
    """One Lambda function's environments: how many exist, which are idle and warm."""

    name: str
    limit: int
    memory_mb: int
    dispatch: str
    ramp: bool
    idle: int = 0
    busy: int = 0
    created: int = 0
    first_call: float | None = None
    queue: list[_Task] = field(default_factory=list)
    gb_s: float = 0.0
    requests: int = 0
    throttles: int = 0
    retry_at: float | None = None

    def allowed(self, now: float) -> int:
        if not self.ramp:
            return self.limit
        start = self.first_call if self.first_call is not None else now
        if self.dispatch == "sqs":
            return min(self.limit, ESM_MAX,
                       int(ESM_START + ESM_PER_MINUTE * (now - start) / 60.0))
        steps = 1 + int((now - start) // SCALE_STEP_S)
        return min(self.limit, SCALE_STEP_ENVS * steps)


@dataclass
class Result:
    scenario: Scenario
    latency_s: float
    chain_s: float
    usage: costs.Usage
    throttles: int
    cold_starts: int
    hedges: int

    @property
    def cost(self) -> dict[str, float]:
        return costs.estimate(self.usage)


class Simulation:
    """Events in time order; tasks wait in per-function priority queues for an environment."""

    def __init__(self, scenario: Scenario, times: StageTimes) -> None:
        self.s = scenario
        self.t = times
        self.rng = random.Random(scenario.seed)
        self.chunks = math.ceil(FRAMES / scenario.frames_per_chunk)
        self.x = scenario.chunks_per_group
        self.events: list[tuple[float, int, Callable[[], None]]] = []
        self.sequence = 0
        self.now = 0.0
        ramp = scenario.ramp
        limit = min(scenario.workers, ACCOUNT_CONCURRENCY - DECODER_CONCURRENCY)
        self.encoder = _Function("encoder", limit, ENCODER_MEMORY_MB, scenario.dispatch, ramp)
        self.decoder = _Function("decoder", DECODER_CONCURRENCY, DECODER_MEMORY_MB, "direct",
                                 ramp)
        self.done: dict[tuple[str, int], float] = {}
        self.lanes_free = scenario.rebaser_lanes
        self.lane_queue: list[tuple[int, int]] = []  # (group, next position) ready to run
        self.group_next: dict[int, int] = {}  # a group's next position to rebase
        self.on_lane: set[int] = set()  # groups whose chain holds a lane now
        self.chain_span: dict[int, tuple[float, float]] = {}  # (serial s, last link's end)
        self.usage = costs.Usage()
        self.cold_starts = 0
        self.hedges = 0
        frame_bytes = WIDTH * HEIGHT * 1.5  # a raw 4:2:0 frame; a state is about one
        self.source_mb = frame_bytes * scenario.frames_per_chunk / 1e6
        self.state_mb = frame_bytes / 1e6
        self.ivf_mb = BITRATE_BPS / 8 * scenario.frames_per_chunk / FPS / 1e6

    # -- plumbing
    def at(self, when: float, action: Callable[[], None]) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (when, self.sequence, action))

    def run(self) -> Result:
        if self.s.prewarm_s > 0 and self.s.ramp:
            self.prewarm()
        for chunk in self.head_first_order():
            self.submit("encode", chunk)
        while self.events:
            self.now, _, action = heapq.heappop(self.events)
            action()
        last_group = max(self.chain_span, key=lambda g: self.chain_span[g][1], default=None)
        # The serial part of the critical path: the last-finishing group's links, back to back.
        chain = 0.0 if last_group is None else self.chain_span[last_group][0]
        end = self.finish_time()
        self.account(end)
        return Result(self.s, end, chain, self.usage, self.encoder.throttles +
                      self.decoder.throttles, self.cold_starts, self.hedges)

    def head_first_order(self) -> list[int]:
        """Chain heads first (0, x, 2x, ...), then position 1 of every group, as mu did."""
        return sorted(range(self.chunks), key=lambda c: (c % self.x, c // self.x))

    def prewarm(self) -> None:
        """Warm-up invocations from job acceptance on: environments made before the chunks are
        ready (at t=0), at the function's scaling rate, left idle and warm."""
        start = -self.s.prewarm_s
        f = self.encoder
        f.first_call = start
        target = min(f.limit, self.chunks)
        steps = int(self.s.prewarm_s // SCALE_STEP_S) + 1
        f.created = f.idle = min(target, steps * SCALE_STEP_ENVS)
        f.requests += f.created
        cold = sum(self.cold_start() for _ in range(f.created))
        f.gb_s += costs.lambda_gb_seconds(f.memory_mb, cold)
        self.cold_starts += f.created

    # -- durations
    def cold_start(self) -> float:
        sigma = math.log(COLD_P99_S / COLD_P50_S) / 2.326
        return COLD_P50_S * math.exp(self.rng.gauss(0.0, sigma))

    def slowdown(self) -> float:
        if not self.s.tail:
            return 1.0
        factor = math.exp(self.rng.gauss(0.0, BODY_SIGMA))
        if self.rng.random() < TAIL_SHARE:
            factor *= self.rng.uniform(TAIL_MIN, TAIL_MAX)
        return factor

    def hedged(self, expected: float) -> tuple[float, float]:
        """(wall time, billed time) of a task expected to take `expected` seconds."""
        first = expected * self.slowdown()
        threshold = HEDGE_AFTER * expected
        if not self.s.hedge or first <= threshold:
            return first, first
        self.hedges += 1
        second = threshold + DISPATCH_S + expected * self.slowdown()
        wall = min(first, second)
        return wall, wall + (wall - threshold)

    def transfer(self, megabytes: float) -> float:
        return S3_FIRST_BYTE_S + megabytes / S3_MB_PER_S

    def work(self, kind: str) -> tuple[float, float]:
        """Wall and billed seconds of a task on a warm environment, I/O included."""
        t = self.t
        if kind == "encode":
            io = self.transfer(self.source_mb) + self.transfer(self.ivf_mb)
            wall, billed = self.hedged(t.encode)
        elif kind == "state":
            io = self.transfer(self.ivf_mb) + self.transfer(self.state_mb)
            wall, billed = self.hedged(t.state)
        else:  # stage 4
            io = self.transfer(self.source_mb) + self.transfer(self.state_mb) + \
                2 * self.transfer(self.ivf_mb)
            wall, billed = self.hedged(t.stage4)
        return wall + io, billed + io

    # -- Lambda dispatch
    def function_for(self, kind: str) -> _Function:
        return self.decoder if kind == "state" else self.encoder

    def submit(self, kind: str, chunk: int) -> None:
        position, group = chunk % self.x, chunk // self.x
        rank = {"state": 0, "stage4": 0, "encode": 1}[kind]
        task = _Task((rank, position, group), kind, chunk)
        f = self.function_for(kind)
        if f.first_call is None:
            f.first_call = self.now
        heapq.heappush(f.queue, task)
        self.at(self.now + DISPATCH_S, lambda: self.pump(f))

    def retry(self, f: _Function, task: _Task) -> None:
        """A refused call: the caller retries after exponential backoff with full jitter (one
        timer per function stands for every waiting caller)."""
        f.throttles += 1
        task.attempt += 1
        if f.retry_at is not None and f.retry_at > self.now:
            return
        backoff = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** min(task.attempt, 8))
        f.retry_at = self.now + self.rng.uniform(0.2 * backoff, backoff)
        self.at(f.retry_at, lambda: self.pump(f))

    def pump(self, f: _Function) -> None:
        """Start queued tasks while the function may run more; refused calls retry."""
        while f.queue:
            if f.busy >= f.allowed(self.now):
                if f.dispatch == "sqs":  # the mapping polls again as it scales
                    f.throttles += 1
                    if f.retry_at is None or f.retry_at <= self.now:
                        f.retry_at = self.now + 1.0
                        self.at(f.retry_at, lambda: self.pump(f))
                else:
                    self.retry(f, f.queue[0])
                return
            task = heapq.heappop(f.queue)
            startup = 0.0
            if f.idle > 0:
                f.idle -= 1
            else:
                burst = self.s.ramp and self.now - (f.first_call or 0.0) < SCALE_STEP_S
                if f.dispatch == "direct" and burst and \
                        self.rng.random() < BURST_THROTTLE_SHARE:
                    heapq.heappush(f.queue, task)
                    self.retry(f, task)
                    return
                f.created += 1
                if self.s.ramp:
                    startup = self.cold_start()
                    self.cold_starts += 1
            f.busy += 1
            f.requests += 1
            wall, billed = self.work(task.kind)
            f.gb_s += costs.lambda_gb_seconds(f.memory_mb, billed + startup)
            self.at(self.now + startup + wall, lambda task=task: self.finished(f, task))

    def finished(self, f: _Function, task: _Task) -> None:
        f.busy -= 1
        f.idle += 1
        self.done[(task.kind, task.chunk)] = self.now
        self.count_requests(task.kind)
        self.after(task.kind, task.chunk)
        self.pump(f)

    def count_requests(self, kind: str) -> None:
        """S3 and SQS requests of one task (its message: send, receive, delete)."""
        puts, gets = {"encode": (1, 1), "state": (1, 1), "stage4": (1, 3)}[kind]
        self.usage.s3_puts += puts
        self.usage.s3_gets += gets
        self.usage.sqs_requests += 3

    # -- the task graph
    def after(self, kind: str, chunk: int) -> None:
        position = chunk % self.x
        last_in_group = position == self.x - 1 or chunk == self.chunks - 1
        if kind == "encode":
            if not last_in_group:
                self.submit("state", chunk)
            if position >= 1 and ("state", chunk - 1) in self.done:
                self.submit("stage4", chunk)
        elif kind == "state":
            if ("encode", chunk + 1) in self.done:
                self.submit("stage4", chunk + 1)
        elif kind == "stage4":
            self.link_ready(chunk // self.x)

    def link_ready(self, group: int) -> None:
        """A group's next link runs when its stage 4 is done and the group holds no lane yet;
        positions 0 and 1 need no rebase (1 follows an exact state)."""
        nxt = self.group_next.setdefault(group, 2)
        chunk = group * self.x + nxt
        if chunk >= min(self.chunks, (group + 1) * self.x):
            return
        waiting = any(g == group for g, _ in self.lane_queue)
        if waiting or group in self.on_lane or ("stage4", chunk) not in self.done:
            return
        self.lane_queue.append((group, nxt))
        self.run_lanes()

    def run_lanes(self) -> None:
        while self.lanes_free and self.lane_queue:
            group, position = self.lane_queue.pop(0)
            self.lanes_free -= 1
            self.on_lane.add(group)
            self.run_chain(group, position)

    def run_chain(self, group: int, position: int) -> None:
        """The lane keeps the group's state: it runs links while their stage 4 is done."""
        chunk = group * self.x + position
        start = self.now
        wall, _ = self.hedged(self.t.link)
        serial, _ = self.chain_span.get(group, (0.0, 0.0))
        self.chain_span[group] = (serial + wall, start + wall)

        def done() -> None:
            self.done[("link", chunk)] = self.now
            self.usage.s3_gets += 1
            self.usage.s3_puts += 1
            self.usage.sqs_fifo_requests += 3
            nxt = position + 1
            self.group_next[group] = nxt
            following = group * self.x + nxt
            if following < min(self.chunks, (group + 1) * self.x) and \
                    ("stage4", following) in self.done:
                self.run_chain(group, nxt)
                return
            self.on_lane.discard(group)
            self.lanes_free += 1
            self.run_lanes()

        self.at(start + wall, done)

    def group_end(self, group: int) -> float:
        first, last = group * self.x, min(self.chunks, (group + 1) * self.x) - 1
        if last - first >= 2:
            return self.done[("link", last)] + self.t.link_write + self.transfer(self.ivf_mb)
        return max(self.done[("stage4", last)] if last > first else 0.0,
                   self.done[("encode", last)])

    def finish_time(self) -> float:
        """The streaming join: each group is a multipart part once it is final; the job ends
        with the last part and CompleteMultipartUpload."""
        groups = math.ceil(self.chunks / self.x)
        part_mb = self.ivf_mb * self.x
        last = max(self.group_end(g) for g in range(groups))
        self.usage.s3_puts += groups + 2
        return last + self.transfer(part_mb) + S3_FIRST_BYTE_S

    def account(self, end: float) -> None:
        u = self.usage
        u.lambda_gb_s_x86 = self.encoder.gb_s + self.decoder.gb_s
        u.lambda_requests = self.encoder.requests + self.decoder.requests
        # Intermediates (sources, states, frames) kept until the retention (1 h) deletes them.
        per_chunk_gb = (self.source_mb + self.state_mb + 3 * self.ivf_mb) / 1000
        u.s3_gb_hours = per_chunk_gb * self.chunks * 1.0
        # The rebaser fleet for the job's duration (it scales with the queue's depth).
        lanes = self.s.rebaser_lanes
        u.fargate_vcpu_hours = lanes * end / 3600
        u.fargate_gb_hours = lanes * REBASER_GB_PER_VCPU * end / 3600


def simulate(scenario: Scenario, times: StageTimes) -> Result:
    return Simulation(scenario, times.scaled(WIDTH, HEIGHT, scenario.frames_per_chunk,
                                             CPU_FACTOR[0])).run()


CPU_FACTOR = [1.0]  # set from --cpu-factor


# --------------------------------------------------------------------------- summaries


def summarize(scenario: Scenario, times: StageTimes, seeds: int) -> dict[str, Any]:
    """Median over seeds, with the counterfactual runs that give the shares."""
    def median(runs: list[Result], key: Callable[[Result], float]) -> float:
        return statistics.median(key(r) for r in runs)

    runs = [simulate(replace(scenario, seed=s), times) for s in range(seeds)]
    no_ramp = [simulate(replace(scenario, seed=s, ramp=False), times) for s in range(seeds)]
    no_tail = [simulate(replace(scenario, seed=s, tail=False), times) for s in range(seeds)]
    latency = median(runs, lambda r: r.latency_s)
    cost_items = {key: round(statistics.median(r.cost[key] for r in runs), 4)
                  for key in runs[0].cost}
    return {
        "config": scenario.config,
        "workers": scenario.workers,
        "dispatch": scenario.dispatch,
        "prewarm_s": scenario.prewarm_s,
        "latency_s": round(latency, 1),
        "latency_p90_s": round(sorted(r.latency_s for r in runs)[int(0.9 * (seeds - 1))], 1),
        "cost_usd": cost_items["total"],
        "cost_items_usd": cost_items,
        "shares": {
            "chain": round(median(runs, lambda r: r.chain_s) / latency, 3),
            "ramp_up": round(max(0.0, latency - median(no_ramp, lambda r: r.latency_s))
                             / latency, 3),
            "stragglers": round(max(0.0, latency - median(no_tail, lambda r: r.latency_s))
                                / latency, 3),
        },
        "chunks": math.ceil(FRAMES / scenario.frames_per_chunk),
        "cold_starts": int(median(runs, lambda r: r.cold_starts)),
        "throttled_calls": int(median(runs, lambda r: r.throttles)),
        "hedges": int(median(runs, lambda r: r.hedges)),
    }


WORKER_SWEEP = (1000, 1500, 2000, 2500, 3000, 3600, 4000)
N_SWEEP = (6, 12, 24)
X_SWEEP = (1, 2, 4, 8, 16)


def sweeps(base: Scenario, times: StageTimes, seeds: int) -> dict[str, list[dict[str, Any]]]:
    goal = replace(base, frames_per_chunk=6, chunks_per_group=16)
    workers = [summarize(replace(goal, workers=w), times, seeds) for w in WORKER_SWEEP]
    nx = [summarize(replace(base, frames_per_chunk=n, chunks_per_group=x), times, seeds)
          for n in N_SWEEP for x in X_SWEEP]
    return {"workers": workers, "nx": nx}


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    print(f"\n{title}\n")
    print("| config | workers | latency s (p90) | cost $ | chain | ramp-up | stragglers | "
          "cold starts | throttled |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        s = r["shares"]
        print(f"| [{r['config'].replace('x', ',')}] | {r['workers']} | {r['latency_s']:.1f} "
              f"({r['latency_p90_s']:.1f}) | {r['cost_usd']:.2f} | {s['chain']:.0%} | "
              f"{s['ramp_up']:.0%} | {s['stragglers']:.0%} | {r['cold_starts']} | "
              f"{r['throttled_calls']} |")


def plot(results: dict[str, list[dict[str, Any]]], directory: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SystemExit(f"bench/scale.py: the plots need matplotlib ({exc}): "
                         "pip install -e '.[bench]'") from exc

    directory.mkdir(parents=True, exist_ok=True)
    rows = results["workers"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["workers"] for r in rows], [r["latency_s"] for r in rows], "o-",
            label="ExCamera[6,16], projected")
    ax.axhline(60, color="grey", ls="--", label="goal: 60 s")
    ax.axhline(ORIGINAL_6X16_S, color="tab:red", ls=":", label="original (2017): 156.6 s")
    ax.set_xlabel("concurrent encoder workers (reserved concurrency)")
    ax.set_ylabel("wall time, s")
    ax.set_title("4K Sintel, 21,312 frames, on Lambda (simulated)")
    ax.set_ylim(0, None)
    ax.legend()
    fig.tight_layout()
    workers_png = directory / "scale-workers.png"
    fig.savefig(workers_png, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for n in N_SWEEP:
        series = [r for r in results["nx"] if r["config"].startswith(f"{n}x")]
        ax.plot([int(r["config"].split("x")[1]) for r in series],
                [r["latency_s"] for r in series], "o-", label=f"n = {n}")
    ax.axhline(60, color="grey", ls="--", label="goal: 60 s")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("x: chunks per group")
    ax.set_ylabel("wall time, s")
    ax.set_title(f"ExCamera[n,x] at {results['nx'][0]['workers']} workers (simulated)")
    ax.set_ylim(0, None)
    ax.legend()
    fig.tight_layout()
    nx_png = directory / "scale-nx.png"
    fig.savefig(nx_png, dpi=110)
    plt.close(fig)
    return [workers_png, nx_png]


def parse_config(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NxX, e.g. 6x16")
    return int(match.group(1)), int(match.group(2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=parse_config, default=(6, 16))
    parser.add_argument("--workers", type=int, default=3600)
    parser.add_argument("--dispatch", choices=("direct", "sqs"), default="direct")
    parser.add_argument("--prewarm", type=float, default=0.0, metavar="SECONDS",
                        help="encoder warm-up before the chunks are ready (e.g. the split)")
    parser.add_argument("--rebaser-lanes", type=int, default=REBASER_LANES)
    parser.add_argument("--cpu-factor", type=float, default=1.0,
                        help="a Lambda vCPU's time for this machine's second")
    parser.add_argument("--no-hedge", action="store_true")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--stage-times", type=Path, metavar="SAVED_JSON", default=STAGE_TIMES,
                        help="per-stage times: a result bench/excamera.py saved "
                             "(default: bench/stage-times.json)")
    parser.add_argument("--stage-clip", help="the clip in --stage-times (default: the largest)")
    parser.add_argument("--json", action="store_true", help="the configured job, as JSON")
    parser.add_argument("--sweep", action="store_true", help="with --json: the sweeps too")
    parser.add_argument("--plots", type=Path, nargs="?", const=ROOT / "bench" / "plots")
    args = parser.parse_args(argv)
    CPU_FACTOR[0] = args.cpu_factor
    times = read_saved(args.stage_times, args.stage_clip)
    n, x = args.config
    base = Scenario(frames_per_chunk=n, chunks_per_group=x, workers=args.workers,
                    dispatch=args.dispatch, prewarm_s=args.prewarm,
                    rebaser_lanes=args.rebaser_lanes, hedge=not args.no_hedge)
    scaled = times.scaled(WIDTH, HEIGHT, n, args.cpu_factor)
    headline = summarize(base, times, args.seeds)
    headline["stage_times_s"] = {
        "source": scaled.source, "encode": round(scaled.encode, 3),
        "state": round(scaled.state, 3), "stage4": round(scaled.stage4, 3),
        "link": round(scaled.link, 3),
    }
    headline["prices_date"] = costs.PRICES_DATE
    if args.json and not (args.sweep or args.plots):
        print(json.dumps(headline))
        return 0
    results = sweeps(base, times, args.seeds)
    if args.json:
        print(json.dumps({**headline, "sweeps": results}))
    else:
        print(f"4K Sintel ({FRAMES} frames, {WIDTH}x{HEIGHT}); stage times: {scaled.source}")
        print(f"per {n}-frame chunk: encode {scaled.encode:.2f} s, exit state "
              f"{scaled.state:.2f} s, encode given state {scaled.stage4:.2f} s, link "
              f"{scaled.link:.3f} s; dispatch {args.dispatch}, prewarm {args.prewarm:.0f} s; "
              f"prices of {costs.PRICES_DATE}")
        print_pixel_scaling(args.stage_times)
        print_table([headline], "The configured job (median of seeds)")
        print_table(results["workers"], "ExCamera[6,16] against the worker count")
        print_table(results["nx"], f"ExCamera[n,x] at {args.workers} workers")
    if args.plots:
        for path in plot(results, args.plots):
            print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
