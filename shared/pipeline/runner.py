"""The embedded runner: every stage of ExCamera[n,x] on a local process pool, local storage.

`run_job(input, output)` splits the input, then runs the rest as the dependency graph of
`graph.py` (the same one the services follow), each task submitted as soon as its inputs exist
(a chunk's exit state as soon as its libvpx encode is done, not after every encode), at most
`workers` at a time, the most urgent first (`graph.urgency`: the serial rebase chain first, and
within a stage chain heads before tails).

A group's rebase tasks all run in one process (its lane, a single-process pool beside the
shared one), which hands each link's exit state to the next in memory, as the rebaser service
does; the count of tasks running at once stays at most `workers` across all pools.

Everything goes through the same stage functions the services will call (`stages.py`); the
store is a temporary directory, or `work_dir` (kept, and reused: an interrupted job resumes).
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import json
import multiprocessing
import os
import re
import select
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import graph, stages
from .errors import InputError, OutputError, PipelineError, WorkerDiedError
from .graph import STAGES, TaskId
from .mux import check_output
from .progress import Progress
from .stages import ChunkPlan
from .store import CountingStore, LocalStore, Store
from .vpx import EncodeSettings, encoder_version, prepare

__all__ = ["DIE_ENV", "StageTime", "Summary", "run_job"]

# Test hook: "STAGE" or "STAGE:INDEX" makes the worker running that task exit abruptly, as a
# killed or crashed worker would. Read in the parent and passed to workers explicitly, since
# forkserver workers do not see later changes to the parent's environment.
DIE_ENV = "EXCAMERA_TEST_WORKER_EXIT"
_DIE_STATUS = 70

_JOB_FORMAT = 3  # bump when stage outputs change meaning, so old work dirs are not reused



@dataclass(frozen=True)
class Task:
    function: Callable[..., Any]
    args: tuple[Any, ...]
    deps: tuple[TaskId, ...]
    priority: tuple[int, int, int]
    lane: int | None = None  # tasks of one lane run in one process, one after another


@dataclass
class StageTime:
    """`wall`: first task start to last task end; `busy`: summed task time; `tasks`: count;
    `requests`: store requests by operation (put, get, head, copy, list)."""

    wall: float = 0.0
    busy: float = 0.0
    tasks: int = 0
    requests: dict[str, int] = field(default_factory=dict)


@dataclass
class Summary:
    input: str
    output: str
    job: str
    width: int
    height: int
    fps: float
    frames: int
    chunks: int
    groups: int
    frames_per_chunk: int
    chunks_per_group: int
    quality: str
    cq_levels: tuple[int, int]  # lowest and highest chunk cq level
    bytes: int  # output file
    payload_bytes: int  # VP8 frames only (what the bitrate counts)
    bitrate_kbps: float
    ssim: float  # mean per-picture SSIM, libvpx's (0.8 Y + 0.1 U + 0.1 V)
    ssim_db: float
    psnr_db: float  # from the squared error pooled over all planes and pictures
    workers: int
    seconds: float
    stages: dict[str, StageTime] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    scene_cuts: list[int] = field(default_factory=list)  # frames where a cut starts a group
    start_frames: str = "rebase"  # how the chain coded chunk-start frames (stages.split)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


# --------------------------------------------------------------------------- entry point


def run_job(
    input_path: str | Path,
    output_path: str | Path,
    n: int = 6,
    x: int = 16,
    quality: EncodeSettings | int | None = None,
    workers: int | None = None,
    progress: bool = True,
    work_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    *,
    scene_cuts: str = "auto",
    start_frames: str = "rebase",
) -> Summary:
    """Encode `input_path` into `output_path` (.ivf or .webm) with ExCamera[n,x].

    `quality`: an int is a cq level (0-63); `EncodeSettings(target_ssim_db=S)` targets an SSIM
    instead; the default is cq level 20. `log` receives notices about the input (audio ignored,
    pixels converted). `scene_cuts`: "auto" starts a group at every confident scene cut (the
    chunks around it vary in length), "off" cuts every n frames (stages.split).
    `start_frames`: "revisit" has the rebase chain decide each chunk's first frame again
    against the true state (fewer bits, a slower chain), "rebase" keeps stage 4's, "anchor"
    starts each chunk from a hidden boosted frame of its middle picture, decided again with
    the first frame in the chain (the fewest bits; stages.START_FRAME_MODES). Raises a
    `PipelineError` subclass, with a one-line message, on any failure; the output is then left
    untouched.
    """
    began = time.time()
    if isinstance(quality, int):
        settings = EncodeSettings(cq_level=quality)
    else:
        settings = quality or EncodeSettings()
    workers = workers or os.cpu_count() or 1
    if n < 1 or x < 1 or workers < 1:
        raise ValueError("n, x and workers must be at least 1")
    settings = _preflight(input_path, output_path, x, settings)
    job = _job_id(Path(input_path), n, x, settings, scene_cuts, start_frames)
    # join writes here; renamed to the output (a symlink's target) only once every group has
    # been verified.
    final = Path(os.path.realpath(output_path))
    partial = _partial_path(final)
    try:
        with (
            _work_store(work_dir) as local,
            process_pool(workers) as pool,
            lane_pools(workers) as lanes,
        ):
            store = CountingStore(local)
            scheduler = Scheduler(pool, workers, Progress(progress), _die_at(), lanes)
            split = functools.partial(stages.split, scene_cuts=scene_cuts,
                                      start_frames=start_frames)
            split_task = Task(split, (store, job, str(input_path), n, x), (), (0, 0, 0))
            plan = scheduler.run({("split", 0): split_task})[("split", 0)]
            if log is not None:
                for notice in plan.notices:
                    log(notice)
            results = scheduler.run(task_graph(store, plan, settings, partial))
        summary = _summary(plan, settings, results, scheduler, input_path, output_path, workers)
        os.replace(partial, final)
    except OSError as exc:  # the work directory or the output's file system (full, gone, ...)
        where = exc.filename or output_path
        raise PipelineError(f"{where}: {exc.strerror or exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    summary.seconds = round(time.time() - began, 3)
    return summary


def _partial_path(output: Path) -> Path:
    """A hidden name beside the output, with its suffix (which picks the container)."""
    return output.with_name(f".{output.stem}.{os.getpid()}.partial{output.suffix}")


# --------------------------------------------------------------------------- preflight


def _preflight(
    input_path: str | Path, output_path: str | Path, x: int, settings: EncodeSettings
) -> EncodeSettings:
    """Fail fast, before any work, on everything that can be checked up front."""
    try:
        if not Path(input_path).is_file():
            os.stat(input_path)  # raises the precise error (missing, no permission, ...)
            raise InputError(f"{input_path}: not a regular file")
    except OSError as exc:
        raise InputError(f"{input_path}: {exc.strerror or exc}") from exc
    check_output(Path(output_path))
    if x > 1:
        stages.load_rebase()
        stages.chain_threads()
    # Workers get the encoder decided (the libvpx binding or vpxenc) and vpxenc's absolute path.
    return prepare(settings)


def _job_id(
    input_path: Path, n: int, x: int, settings: EncodeSettings, scene_cuts: str,
    start_frames: str = "rebase",
) -> str:
    """A name for the job's keys, the same exactly when the same work would be done."""
    info = input_path.stat()
    identity = {
        "format": _JOB_FORMAT,
        "input": [str(input_path.resolve()), info.st_size, info.st_mtime_ns],
        "n": n,
        "x": x,
        "settings": [settings.cq_level, settings.target_ssim_db, settings.lag_in_frames],
        "scene_cuts": scene_cuts,
        "start_frames": start_frames,
        "vpxenc": encoder_version(settings),
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", input_path.stem)[:40].strip("._") or "input"
    return f"{stem}-{settings.describe().replace('>=', '')}-{n}x{x}-{digest}"


def _die_at() -> TaskId | tuple[str, None] | None:
    spec = os.environ.get(DIE_ENV)
    if not spec:
        return None
    stage, _, index = spec.partition(":")
    return (stage, int(index)) if index else (stage, None)


@contextmanager
def _work_store(work_dir: str | Path | None) -> Iterator[LocalStore]:
    if work_dir is not None:
        try:
            store = LocalStore(work_dir)
        except OSError as exc:
            raise OutputError(
                f"{work_dir}: cannot keep work there ({exc.strerror or exc})"
            ) from exc
        yield store
        return
    with tempfile.TemporaryDirectory(prefix="excamera-work-") as directory:
        yield LocalStore(directory, durable=False)


def _process_context() -> Any:
    # forkserver: workers fork from a clean server process (not from a parent that may hold
    # threads or open files), with the stage modules already imported.
    # Each worker is one thread on one core: keep numpy's BLAS from starting threads of its
    # own that would spin on the cores the other workers use. (Read when the forkserver
    # starts, which is why the parent's environment is set.)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # The forkserver starts as `python -c ...`, which puts the current directory first on
    # sys.path (and Python 3.11's forkserver ignores the parent's sys.path): run from a
    # directory holding a `shared/` folder, such as the source tree of an installed copy, it
    # would import that folder's uncompiled modules instead of the installed package.
    # PYTHONSAFEPATH (3.11+) keeps the directory off the path; before 3.11, spawn, which
    # takes the parent's sys.path, is the safe method.
    methods = multiprocessing.get_all_start_methods()
    if sys.version_info >= (3, 11) and "forkserver" in methods:
        os.environ["PYTHONSAFEPATH"] = "1"
        context = multiprocessing.get_context("forkserver")
        # The compiled codec too, so no task pays for importing it (missing: skipped).
        context.set_forkserver_preload(["shared.pipeline.runner", "shared.codec.chunk_rebase"])
        return context
    return multiprocessing.get_context("spawn")


def worker_setup(parent: int) -> None:
    """A pool worker's initializer: `quiet_interrupts`, and `exit_with(parent)`."""
    quiet_interrupts()
    exit_with(parent)
    _set_up.set()


# After the SIGTERM that ends a task (its temporary files removed as it unwinds), how long the
# worker has before it is ended outright: the pool would only wait for its next task.
ORPHAN_GRACE_SECONDS = 3.0


def exit_with(parent: int) -> None:
    """End this worker when process `parent` (the command) ends, however it ends: killed with
    SIGKILL, the pool cannot tell its workers, which would sit under the forkserver waiting for
    tasks forever. A pidfd becomes readable when its process exits."""
    watched: int | None
    try:
        watched = os.pidfd_open(parent)
    except ProcessLookupError:
        watched = None  # gone already
    except (AttributeError, OSError):
        return  # no pidfds (not Linux 5.3+): nothing to watch with

    def watch() -> None:
        if watched is not None:
            select.select([watched], [], [])
        if not _stopping.is_set():  # else a signal already ends the task: let it clean up
            os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(ORPHAN_GRACE_SECONDS)
        os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def quiet_interrupts() -> None:
    """In a pool worker: Ctrl-C, which the terminal sends to every process of the command,
    ends the task as an exit, not a KeyboardInterrupt, so the task's temporary files are
    removed and an idle worker exits without a traceback; the parent reports the interrupt,
    once. (Where the parent ignores SIGINT, as in a background job, so do its workers.)
    SIGTERM, which the pool sends its other workers once one has gone, does the same."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _exit_on_interrupt)
    signal.signal(signal.SIGTERM, _exit_on_interrupt)


# Set once the worker's initializer is done, and once a signal has begun ending its task.
_set_up = threading.Event()
_stopping = threading.Event()
_STOPPED_STATUS = 128 + signal.SIGTERM


def _exit_on_interrupt(signum: int, frame: Any) -> None:
    # In the initializer there is no task to clean up after, and the pool would print the
    # exit's traceback ("Exception in initializer"): end at once.
    if not _set_up.is_set():
        os._exit(128 + signum)
    # Once only: a second signal (Ctrl-C reaches the whole group, then the pool sends SIGTERM
    # to its other workers) would interrupt the task's own clean-up and leave its temporary
    # files behind. It ends the process a grace period later instead, cleaned up or not: the
    # pool that sent it waits for the process to end.
    if _stopping.is_set():
        _end_later(128 + signum)
        return
    _stopping.set()
    raise SystemExit(128 + signum)


_ending = threading.Lock()


def _end_later(code: int) -> None:
    if _ending.acquire(blocking=False):
        timer = threading.Timer(ORPHAN_GRACE_SECONDS, os._exit, args=(code,))
        timer.daemon = True
        timer.start()


@contextmanager
def process_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """The pool the parallel stages run on."""
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_process_context(),
                               initializer=worker_setup, initargs=(os.getpid(),))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class Lanes:
    """Single-process executors, each started on first use. Tasks given the same lane run one
    after another in the same process: a group's rebase chain, whose links hand the exit state
    over in memory (`stages.HELD_STATES`) instead of through the store."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._executors: dict[int, ProcessPoolExecutor] = {}

    def executor(self, lane: int) -> ProcessPoolExecutor:
        slot = lane % self.count
        if slot not in self._executors:
            self._executors[slot] = ProcessPoolExecutor(
                1, mp_context=_process_context(), initializer=worker_setup,
                initargs=(os.getpid(),))
        return self._executors[slot]

    def shutdown(self) -> None:
        for executor in self._executors.values():
            executor.shutdown(wait=True, cancel_futures=True)


@contextmanager
def lane_pools(count: int) -> Iterator[Lanes]:
    lanes = Lanes(max(1, count))
    try:
        yield lanes
    finally:
        lanes.shutdown()


# --------------------------------------------------------------------------- the task graph


def task_graph(
    store: Store,
    plan: ChunkPlan,
    settings: EncodeSettings,
    output: Path,
    *,
    verify: bool = True,
) -> dict[TaskId, Task]:
    """Stages 2-6 of `graph` as tasks for the scheduler (also timed by bench/excamera.py);
    `verify` adds the per-group check of the output."""
    return {
        task: Task(
            graph.run_task,
            (store, plan, settings, task, str(output)),
            graph.dependencies(plan, task, verify=verify),
            graph.urgency(plan, task),
            graph.lane(plan, task),
        )
        for task in graph.tasks(plan, verify=verify)
    }


def _run_task(
    task_id: TaskId, function: Callable[..., Any], args: tuple, die_at: Any
) -> tuple[Any, float, float, dict[str, int]]:
    """In a worker: run one stage function; returns (result, start, end) wall-clock times and
    the store requests it made (its store arrives with fresh counts)."""
    if die_at is not None and die_at[0] == task_id[0] and die_at[1] in (None, task_id[1]):
        os._exit(_DIE_STATUS)
    if _stopping.is_set():
        # A signal ended this worker's last task (the pool catches that exit and would hand
        # it the next queued task, whose temporary files the grace's hard exit would leave).
        os._exit(_STOPPED_STATUS)
    start = time.time()
    try:
        result = function(*args)
    except ImportError as exc:  # an incomplete install: say so in one line
        raise PipelineError(f"a worker process could not load {exc.name or exc}: {exc}") from None
    counts = args[0].counts if args and isinstance(args[0], CountingStore) else {}
    return result, start, time.time(), dict(counts)


class Scheduler:
    """Submits ready tasks, most urgent first, keeping at most `workers` in flight: to `pool`,
    or for a task with a lane, to that lane's process when `lanes` are given."""

    def __init__(
        self,
        pool: Executor,
        workers: int,
        progress: Progress,
        die_at: Any,
        lanes: Lanes | None = None,
    ) -> None:
        self.pool = pool
        self.lanes = lanes
        self.workers = workers
        self.progress = progress
        self.die_at = die_at
        self.times: dict[str, list[float]] = {}  # stage -> [first start, last end, busy, count]
        self.task_seconds: dict[TaskId, float] = {}  # each task's own run time
        self.requests: dict[str, Counter[str]] = {}  # stage -> store requests by operation

    def run(self, graph: dict[TaskId, Task]) -> dict[TaskId, Any]:
        waiting = {task_id: set(task.deps) for task_id, task in graph.items()}
        dependents: dict[TaskId, list[TaskId]] = defaultdict(list)
        for task_id, task in graph.items():
            for dep in task.deps:
                dependents[dep].append(task_id)
        ready = [(task.priority, task_id) for task_id, task in graph.items() if not task.deps]
        heapq.heapify(ready)
        self._add_bars(graph)
        running: dict[Future[Any], TaskId] = {}
        results: dict[TaskId, Any] = {}
        try:
            while ready or running:
                while ready and len(running) < self.workers:
                    _, task_id = heapq.heappop(ready)
                    task = graph[task_id]
                    executor = self.pool
                    if task.lane is not None and self.lanes is not None:
                        executor = self.lanes.executor(task.lane)
                    future = executor.submit(
                        _run_task, task_id, task.function, task.args, self.die_at
                    )
                    running[future] = task_id
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    task_id = running.pop(future)
                    results[task_id] = self._collect(future, task_id, running)
                    for dependent in dependents[task_id]:
                        waiting[dependent].discard(task_id)
                        if not waiting[dependent]:
                            heapq.heappush(ready, (graph[dependent].priority, dependent))
        finally:
            self.progress.close()
        return results

    def _add_bars(self, graph: dict[TaskId, Task]) -> None:
        counts: dict[str, int] = defaultdict(int)
        for stage, _ in graph:
            counts[stage] += 1
        for stage in sorted(counts, key=lambda s: list(STAGES).index(s)):
            self.progress.add_stage(STAGES[stage][0], counts[stage])

    def _collect(self, future: Future[Any], task_id: TaskId, running: dict) -> Any:
        try:
            result, start, end, requests = future.result()
        except BrokenProcessPool:
            busy = sorted({STAGES[stage][0] for stage, _ in [task_id, *running.values()]})
            raise WorkerDiedError(
                "a worker process died unexpectedly (killed, out of memory or crashed) during: "
                f"{', '.join(busy)}; the job was abandoned and no output was written"
            ) from None
        self.task_seconds[task_id] = end - start
        stage = task_id[0]
        self.requests.setdefault(stage, Counter()).update(requests)
        record = self.times.setdefault(stage, [start, end, 0.0, 0])
        record[0], record[1] = min(record[0], start), max(record[1], end)
        record[2] += end - start
        record[3] += 1
        self.progress.advance(STAGES[stage][0])
        return result

    def stage_times(self) -> dict[str, StageTime]:
        ordered = sorted(self.times, key=lambda s: list(STAGES).index(s))
        return {
            STAGES[s][0]: StageTime(
                wall=round(self.times[s][1] - self.times[s][0], 3),
                busy=round(self.times[s][2], 3),
                tasks=int(self.times[s][3]),
                requests=dict(sorted(self.requests.get(s, {}).items())),
            )
            for s in ordered
        }


# --------------------------------------------------------------------------- summary


def _summary(
    plan: ChunkPlan,
    settings: EncodeSettings,
    results: dict[TaskId, Any],
    scheduler: Scheduler,
    input_path: str | Path,
    output_path: str | Path,
    workers: int,
) -> Summary:
    quality = stages.output_quality(
        plan,
        [results[("encode", i)] for i in range(plan.chunk_count)],
        [results[("measure", g)] for g in range(plan.group_count)],
    )
    return Summary(
        input=str(input_path),
        output=str(output_path),
        job=plan.job,
        width=plan.width,
        height=plan.height,
        fps=round(plan.fps[0] / plan.fps[1], 6),
        frames=quality.frames,
        chunks=plan.chunk_count,
        groups=plan.group_count,
        frames_per_chunk=plan.frames_per_chunk,
        chunks_per_group=plan.chunks_per_group,
        quality=settings.describe(),
        cq_levels=quality.cq_levels,
        bytes=results[("join", 0)].file_bytes,
        payload_bytes=quality.payload_bytes,
        bitrate_kbps=quality.bitrate_kbps,
        ssim=quality.ssim,
        ssim_db=quality.ssim_db,
        psnr_db=quality.psnr_db,
        workers=workers,
        seconds=0.0,  # set by run_job once the output is in place
        stages=scheduler.stage_times(),
        notices=list(plan.notices),
        scene_cuts=list(plan.scene_cuts),
        start_frames=plan.start_frames,
    )
