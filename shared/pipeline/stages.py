"""The stages of ExCamera[n,x] (DESIGN.md section 2) as plain functions over a `Store`.

Each stage reads its inputs from the store and writes its outputs there, and skips its work when
its outputs already exist (outputs are written atomically and deterministically, so a retried or
duplicated task is harmless). The embedded runner calls them on a local process pool; queue
workers and a Lambda handler will call the same functions.

Keys, for job J and chunk i (5 digits):

    jobs/J/plan.json                      the ChunkPlan (split's completion marker)
    jobs/J/chunks/i/source.y4m            the chunk's source pictures            (split)
    jobs/J/chunks/i/vpx.ivf, vpx.json     libvpx's encode, its cq level          (encode_chunk_vpx)
    jobs/J/chunks/i/vpx.state             decoder state after vpx.ivf            (decode_exit_state)
    jobs/J/chunks/i/provisional.ivf/.state  first frame re-encoded onto chunk i-1's libvpx
                                          state, the rest rebased                (rebase_first)
    jobs/J/chunks/i/provisional.context   chunk i-1's libvpx state without its pictures: what
                                          parsing provisional.ivf needs (when it has no hidden
                                          frames; else stage 5 reads vpx.state)  (rebase_first)
    jobs/J/chunks/i/final.ivf             the chunk as it goes into the output   (rebase_serial)
    jobs/J/chunks/i/final.state           the true decoder state after it: stored for positions
                                          0 and 1 only, later ones are held in memory by the
                                          process running the chain (or decoded again)
    jobs/J/groups/g/quality.json          group g's output checked and measured  (measure_group)

Chunks form groups of x (`chunks_per_group`); each group starts with one real key frame and
groups are independent. Within a group, position 0 keeps libvpx's output, position 1's
provisional frames are already final (its incoming state is exact), and positions >= 2 are
rebased serially onto the true state of the chunk before. Exit states are only made for chunks
that have a successor in their group: nothing else reads them.
"""

from __future__ import annotations

import bisect
import io
import json
import mmap
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shared.codec import metrics
from shared.codec.errors import CodecError
from shared.codec.image import Image
from shared.codec.y4m import BufferFile, Y4mReader, Y4mWriter

from .errors import InputError, OutputError, PipelineError, RebaseUnavailableError
from .mux import ivf_bytes, read_ivf_frames, write_output
from .scenes import SCENE_CUT_MODES, chunks_of
from .sources import open_source
from .store import Store
from .vpx import MAX_CQ_LEVEL, EncodeSettings, encode_chunk, is_key_frame, is_shown

# The most frames one job takes (over 9 hours at 30 fps): its plan, task records and split stay
# bounded whatever the input holds (a tiny picture makes millions of frames of a small file).
MAX_FRAMES = 1_000_000
# How a chunk that continues its group starts. Stage 4 encodes its start against an
# approximate state; "rebase" keeps those decisions in the serial chain, "revisit" decides the
# first frame again against the true state. "anchor" has phase 1 encode the chunk after a key
# frame of its middle picture, which becomes a boosted hidden frame (an alt-ref) that the
# chunk predicts from, and the chain decides that frame and the first one again
# (chunk_rebase; slower chains, fewer bits: bench/REPORT.md).
START_FRAME_MODES = ("rebase", "revisit", "anchor")
# An anchor is a boosted frame that pays for itself only over enough frames predicting from
# it: a shorter chunk (before a scene cut, or the video's last) starts as with "revisit"
# (the cut clip at equal SSIM: +3.5 % anchoring every chunk, +2.8 % from 3 pictures, +2.2 %
# from 5; bench/REPORT.md).
ANCHOR_MIN_FRAMES = 5

__all__ = [
    "ChunkEncode",
    "ChunkPlan",
    "GroupQuality",
    "JoinResult",
    "OutputQuality",
    "LinkTimes",
    "Rebaser",
    "chunk_key",
    "decode_exit_state",
    "encode_chunk_vpx",
    "join",
    "load_plan",
    "load_rebase",
    "measure_group",
    "output_quality",
    "stored_output_quality",
    "plan_key",
    "chain_threads",
    "final_state",
    "rebase_first",
    "rebase_serial",
    "split",
]


# The serial chain's rebases and revisits may code macroblock rows on several threads (a
# wavefront; the same bytes for any number). One by default: two threads take a quarter to a
# third off a 720p link only where the process has the cores to itself, and on busy cores a
# descheduled thread stalls the wavefront, doubling a link (bench/REPORT.md).
# CHAIN_THREADS_ENV sets 1-8, for rebasers that run few chains on dedicated cores.
CHAIN_THREADS_ENV = "EXCAMERA_CHAIN_THREADS"
MAX_CHAIN_THREADS = 8


def chain_threads() -> int:
    """Threads for a link of the serial chain: CHAIN_THREADS_ENV, else 1."""
    text = os.environ.get(CHAIN_THREADS_ENV, "").strip()
    if not text:
        return 1
    if not text.isdigit() or not 1 <= int(text) <= MAX_CHAIN_THREADS:
        raise PipelineError(
            f"{CHAIN_THREADS_ENV}={text!r}: give a whole number of threads from 1 to "
            f"{MAX_CHAIN_THREADS}")
    return int(text)


# Decoder states between stages are stored uncompressed: on local storage the time deflate would
# take sits on the serial rebase chain, and states are deleted with the job.
STATE_COMPRESSION = False


# --------------------------------------------------------------------------- keys and the plan


def plan_key(job: str) -> str:
    return f"jobs/{job}/plan.json"


def chunk_key(job: str, index: int, name: str) -> str:
    return f"jobs/{job}/chunks/{index:05d}/{name}"


def group_key(job: str, group: int, name: str) -> str:
    return f"jobs/{job}/groups/{group:05d}/{name}"


@dataclass(frozen=True)
class ChunkPlan:
    """How a job's input was cut: chunk i holds `chunk_frames[i]` pictures; groups are runs of
    consecutive chunks, each starting with a real key frame.

    Without scene cuts every chunk but the last holds `frames_per_chunk` pictures and a group
    is `chunks_per_group` chunks. With them (`scene_cuts`: the frame numbers where a detected
    cut starts a group), chunks vary in length around `frames_per_chunk` and `group_starts`
    lists the first chunk of every group; empty means every `chunks_per_group`-th chunk.

    `lead_in`: phase 1 encodes each chunk that does not start a group after a lead-in, the
    previous chunk's last picture as its key frame, which stage 4 drops (has_lead_in).
    `start_frames`: START_FRAME_MODES, how a chunk that continues its group starts; with
    "anchor", phase 1 encodes such a chunk after a key frame of its anchor picture
    (`anchored`).
    """

    job: str
    source: str
    width: int
    height: int
    fps: tuple[int, int]
    frames_per_chunk: int
    chunks_per_group: int
    chunk_frames: tuple[int, ...]
    notices: tuple[str, ...] = field(default=())
    group_starts: tuple[int, ...] = field(default=())
    scene_cuts: tuple[int, ...] = field(default=())
    lead_in: bool = False
    start_frames: str = "rebase"

    @property
    def chunk_count(self) -> int:
        return len(self.chunk_frames)

    @property
    def frame_count(self) -> int:
        return sum(self.chunk_frames)

    @property
    def group_count(self) -> int:
        return len(self._starts())

    def _starts(self) -> Sequence[int]:
        """The first chunk of every group, ascending."""
        return self.group_starts or range(0, self.chunk_count, self.chunks_per_group)

    def group_of(self, index: int) -> int:
        return bisect.bisect_right(self._starts(), index) - 1

    def position(self, index: int) -> int:
        """The chunk's place in its group: 0 starts the group with a key frame."""
        return index - self._starts()[self.group_of(index)]

    def group_chunks(self, group: int) -> range:
        starts = self._starts()
        end = starts[group + 1] if group + 1 < len(starts) else self.chunk_count
        return range(starts[group], end)

    def has_successor(self, index: int) -> bool:
        """Whether the next chunk continues this chunk's group (and so needs its state)."""
        return index + 1 < self.chunk_count and self.position(index + 1) != 0

    def has_lead_in(self, index: int) -> bool:
        """Whether phase 1 encodes the chunk after a lead-in picture (see the class)."""
        return self.lead_in and self.position(index) != 0

    def anchored(self, index: int) -> bool:
        """Whether the chunk starts with a hidden anchor frame (START_FRAME_MODES): with
        "anchor", every chunk that continues its group and has ANCHOR_MIN_FRAMES pictures."""
        return (self.start_frames == "anchor" and self.position(index) != 0
                and self.chunk_frames[index] >= ANCHOR_MIN_FRAMES)

    def first_frame(self, index: int) -> int:
        """The number of the chunk's first picture in the input."""
        return sum(self.chunk_frames[:index])

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ChunkPlan:
        fields = json.loads(data)
        for name in ("fps", "chunk_frames", "notices", "group_starts", "scene_cuts"):
            if name in fields:
                fields[name] = tuple(fields[name])
        return cls(**fields)


def load_plan(store: Store, job: str) -> ChunkPlan:
    return ChunkPlan.from_json(store.get(plan_key(job)))


# --------------------------------------------------------------------------- stage 1: split


def split(
    store: Store,
    job: str,
    input_path: str | Path,
    frames_per_chunk: int,
    chunks_per_group: int = 1,
    *,
    scene_cuts: str = "auto",
    lead_in: bool = False,
    start_frames: str = "rebase",
    input_name: str | None = None,
) -> ChunkPlan:
    """Cut the input into chunks of about `frames_per_chunk` pictures, each stored as Y4M.

    Reads Y4M directly and anything else through PyAV (converted to 8-bit 4:2:0, audio
    ignored with a notice in `ChunkPlan.notices`). With `scene_cuts="auto"` a group (with its
    key frame) starts at every confident scene cut, and chunks there vary in length
    (`scenes.Chunker`); "off" cuts every `frames_per_chunk` pictures. With `lead_in`, every
    chunk that does not start a group also gets its lead-in picture stored (`ChunkPlan`).
    `start_frames` is recorded in the plan for stage 5 (START_FRAME_MODES). `input_name`:
    what the plan, its notices and errors call the input (default: its path).
    """
    if frames_per_chunk < 1 or chunks_per_group < 1:
        raise ValueError("frames_per_chunk and chunks_per_group must be at least 1")
    if scene_cuts not in SCENE_CUT_MODES:
        raise ValueError(f"scene_cuts must be one of {', '.join(SCENE_CUT_MODES)}")
    if start_frames not in START_FRAME_MODES:
        raise ValueError(f"start_frames must be one of {', '.join(START_FRAME_MODES)}")
    if lead_in and start_frames == "anchor":
        raise ValueError("a chunk has either a lead-in or an anchor, not both")
    if store.exists(plan_key(job)):
        return load_plan(store, job)
    with open_source(input_path, input_name) as source:
        layout = _write_chunks(
            store, job, source, frames_per_chunk, chunks_per_group,
            detect_cuts=scene_cuts == "auto", lead_in=lead_in,
        )  # fmt: skip
        if not layout.chunk_frames:
            raise InputError(f"{source.name}: the input has no video frames")
        regular = not layout.cuts
        plan = ChunkPlan(
            job=job,
            source=source.name,
            width=source.width,
            height=source.height,
            fps=source.fps,
            frames_per_chunk=frames_per_chunk,
            chunks_per_group=chunks_per_group,
            chunk_frames=tuple(layout.chunk_frames),
            notices=tuple(source.notices),
            group_starts=() if regular else tuple(layout.group_starts),
            scene_cuts=tuple(layout.cuts),
            lead_in=lead_in,
            start_frames=start_frames,
        )
    store.put(plan_key(job), plan.to_json())
    return plan


@dataclass
class _Layout:
    chunk_frames: list[int] = field(default_factory=list)
    group_starts: list[int] = field(default_factory=list)
    cuts: list[int] = field(default_factory=list)


def _write_chunks(
    store: Store,
    job: str,
    source: Any,
    frames_per_chunk: int,
    chunks_per_group: int,
    *,
    detect_cuts: bool,
    lead_in: bool,
) -> _Layout:
    """Store every chunk's pictures (and lead-in picture) as the chunks are laid out."""
    layout = _Layout()
    chunks, chunker = chunks_of(source.images, frames_per_chunk, detect_cuts=detect_cuts)
    previous: Image | None = None
    frames = 0
    for chunk in chunks:
        frames += len(chunk.images)
        if frames > MAX_FRAMES:
            raise InputError(f"{source.name}: more than {MAX_FRAMES} frames, the most one job "
                             "takes: split the video into several jobs")
        index = len(layout.chunk_frames)
        starts_group = index == 0 or chunk.at_cut or (
            index - layout.group_starts[-1] == chunks_per_group
        )
        if starts_group:
            layout.group_starts.append(index)
        elif lead_in and previous is not None:
            store.put(chunk_key(job, index, "leadin.y4m"), _y4m_bytes([previous], source.fps))
        store.put(chunk_key(job, index, "source.y4m"), _y4m_bytes(chunk.images, source.fps))
        layout.chunk_frames.append(len(chunk.images))
        previous = chunk.images[-1]
    layout.cuts = list(chunker.cuts)
    return layout


def _y4m_bytes(images: list[Image], fps: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    writer = Y4mWriter(buffer, images[0].width, images[0].height, fps)
    for image in images:
        writer.write(image)
    writer.close()
    return buffer.getvalue()


def _source_images(store: Store, job: str, index: int) -> list[Image]:
    """The chunk's pictures, as read-only views of the file mapped into memory (no copy: they
    are read once per frame by the encoder, on the serial chain among other places)."""
    with store.local_file(chunk_key(job, index, "source.y4m")) as path:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size == 0 or not hasattr(mmap, "MAP_SHARED"):
                buffer: Any = file.read()
            else:
                populate = getattr(mmap, "MAP_POPULATE", 0)  # map every page now, in one call
                buffer = mmap.mmap(file.fileno(), size, flags=mmap.MAP_SHARED | populate,
                                   prot=mmap.PROT_READ)
        with Y4mReader(BufferFile(buffer)) as reader:
            return list(reader)


# --------------------------------------------------------------------------- stage 2: libvpx


@dataclass(frozen=True)
class ChunkEncode:
    """What phase 1 made of a chunk: its cq level, size, and frames (hidden included; with a
    lead-in, its key frame too)."""

    index: int
    cq_level: int
    bytes: int
    frames: int
    hidden: int
    lead_in: int = 0  # frames of the lead-in, which stage 4 drops (0 or 1)


def encode_chunk_vpx(store: Store, job: str, index: int, settings: EncodeSettings) -> ChunkEncode:
    """Phase 1: libvpx encodes chunk `index` on its own (key frame first, then interframes),
    in process or by vpxenc (`vpx.encode_chunk`); after its lead-in or anchor picture if it
    has one."""
    output, meta = chunk_key(job, index, "vpx.ivf"), chunk_key(job, index, "vpx.json")
    if store.exists(output) and store.exists(meta):
        return ChunkEncode(**json.loads(store.get(meta)))
    plan = load_plan(store, job)
    lead_in = int(plan.has_lead_in(index) or plan.anchored(index))
    with tempfile.TemporaryDirectory(prefix="excamera-vpxenc-") as workdir:
        source = _phase1_source(store, plan, index, Path(workdir))
        expected = _count_y4m_frames(source)
        if settings.target_ssim_db is None:
            cq_level = settings.cq_level
            data = _encode_checked(settings, cq_level, source, Path(workdir), expected)
        else:
            cq_level, data = _encode_for_ssim(settings, source, Path(workdir), expected, lead_in)
    frames = read_ivf_frames(data)
    result = ChunkEncode(
        index=index,
        cq_level=cq_level,
        bytes=sum(map(len, frames)),
        frames=len(frames),
        hidden=sum(not is_shown(frame) for frame in frames),
        lead_in=lead_in,
    )
    store.put(output, data)
    store.put(meta, json.dumps(asdict(result)).encode())
    return result


def _phase1_source(store: Store, plan: ChunkPlan, index: int, workdir: Path) -> Path:
    """The Y4M file phase 1 encodes: the chunk's pictures, after its lead-in picture if any
    (both files come from one writer, so the lead-in's header serves for the whole), or after
    its anchor picture."""
    path = workdir / "phase1.y4m"
    chunk = store.get(chunk_key(plan.job, index, "source.y4m"))
    if plan.has_lead_in(index):
        _, _, pictures = chunk.partition(b"\n")
        chunk = store.get(chunk_key(plan.job, index, "leadin.y4m")) + pictures
    elif plan.anchored(index):
        images = _source_images(store, plan.job, index)
        chunk = _y4m_bytes([_anchor_picture(images), *images], plan.fps)
    path.write_bytes(chunk)
    return path


def _anchor_picture(images: list[Image]) -> Image:
    from shared.codec.chunk_rebase import anchor_index

    return images[anchor_index(len(images))]


def _count_y4m_frames(path: Path) -> int:
    with Y4mReader(path) as reader:
        return sum(1 for _ in reader)


def _encode_checked(
    settings: EncodeSettings, cq_level: int, source: Path, workdir: Path, expected: int
) -> bytes:
    data = encode_chunk(settings, cq_level, source, workdir)
    frames = read_ivf_frames(data)
    shown = sum(map(is_shown, frames))
    keys = [k for k, frame in enumerate(frames) if is_key_frame(frame)]
    if shown != expected or keys != [0]:
        raise PipelineError(
            f"libvpx made an unusable chunk of {source.name}: {shown} shown frames for "
            f"{expected} pictures, key frames at {keys} (expected exactly one, at 0)"
        )
    return data


def _encode_for_ssim(
    settings: EncodeSettings, source: Path, workdir: Path, expected: int, lead_in: int
) -> tuple[int, bytes]:
    """The largest cq level whose encode reaches the target SSIM (0 if none does), measured
    on the chunk's own pictures (not on its lead-in).

    Bisection assumes SSIM falls as the cq level rises, which holds for libvpx in practice.
    """
    assert settings.target_ssim_db is not None
    with Y4mReader(source) as reader:
        pictures = list(reader)
    cache: dict[int, tuple[bytes, float]] = {}

    def probe(level: int) -> tuple[bytes, float]:
        if level not in cache:
            data = _encode_checked(settings, level, source, workdir, expected)
            cache[level] = data, _stream_ssim_db(read_ivf_frames(data), pictures, lead_in)
        return cache[level]

    low, high, best = 0, MAX_CQ_LEVEL, 0
    while low <= high:
        middle = (low + high) // 2
        if probe(middle)[1] >= settings.target_ssim_db:
            best, low = middle, middle + 1
        else:
            high = middle - 1
    return best, probe(best)[0]


def _stream_ssim_db(frames: list[bytes], pictures: list[Image], skip: int = 0) -> float:
    """Mean SSIM (dB) of the decoded stream's shown pictures after the first `skip`."""
    from shared.codec import DecoderState, decode

    state = DecoderState.initial()
    scores = []
    shown = 0
    for frame in frames:
        state, image = decode(state, frame)
        if image is not None:
            if shown >= skip:
                scores.append(metrics.ssim(image, pictures[shown]))
            shown += 1
    return metrics.ssim_db(sum(scores) / len(scores))


# --------------------------------------------------------------------------- stage 3: exit state


def decode_exit_state(store: Store, job: str, index: int) -> None:
    """Decode chunk `index`'s libvpx stream from the initial state; store the state after it."""
    output = chunk_key(job, index, "vpx.state")
    if store.exists(output):
        return
    from shared.codec import DecoderState

    frames = read_ivf_frames(store.get(chunk_key(job, index, "vpx.ivf")))
    state = _decode_frames(DecoderState.initial(), frames, f"chunk {index} (libvpx)")
    store.put(output, state.to_bytes(compress=STATE_COMPRESSION))


def _decode_frames(state: Any, frames: list[bytes], what: str) -> Any:
    from shared.codec import decode

    for number, frame in enumerate(frames):
        try:
            state, _ = decode(state, frame)
        except CodecError as exc:
            raise PipelineError(f"{what}: frame {number} does not decode: {exc}") from exc
    return state


# --------------------------------------------------------------------------- stages 4 and 5


@dataclass(frozen=True)
class Rebaser:
    """The codec's rebase of a chunk (shared.codec.chunk_rebase) in its three steps: `parse`
    the chunk's frames given the state they were made against, `rebase` the parsed frames onto
    an incoming state (giving coded frames and the exit state), `write` the coded frames."""

    parse: Callable[[list[bytes], Any], list[Any]]
    # (incoming state, parsed frames, source images, *, revisit_start=, trellis=, threads=)
    rebase: Callable[..., tuple[list[Any], Any]]
    write: Callable[[list[Any]], list[bytes]]
    # Parsed frames without their lead-in key frame, the next frame taking over what that key
    # frame did to the references (chunk_rebase.drop_lead_in).
    drop_lead_in: Callable[[list[Any]], list[Any]] = field(default=lambda records: records[1:])
    # (state, parsed frames of an anchored chunk, source images, *, trellis=) -> (coded, state)
    anchor: Callable[..., tuple[list[Any], Any]] | None = None


def load_rebase() -> Rebaser:
    """The codec's rebase steps (one place to look them up, so tests can substitute them), or
    RebaseUnavailableError when the compiled codec cannot be loaded."""
    try:
        from shared.codec import chunk_rebase
    except ImportError as exc:
        raise RebaseUnavailableError(f"the compiled codec is not available: {exc}") from exc
    return Rebaser(
        chunk_rebase.parse_chunk,
        chunk_rebase.rebase_records,
        chunk_rebase.write_frames,
        chunk_rebase.drop_lead_in,
        chunk_rebase.anchor_chunk,
    )


def _load_state(store: Store, key: str) -> Any:
    from shared.codec import DecoderState

    return DecoderState.from_bytes(store.get(key))


class HeldStates:
    """The exit states a rebaser process keeps in memory (DESIGN.md section 3): the next link
    of a chain starts from the state the previous one left, without any storage.

    A state is held under the name of the chunk it follows; a process asked for a state it
    does not hold (another process ran the previous link, the process restarted after a
    crash) gets None, and the caller rebuilds it from the store. At most `limit` states are
    held; `keep` returns the ones it evicts (oldest first), which the caller writes to the
    store, so a chain whose state was evicted (a process serving more groups at once than it
    holds states for) reads it back instead of decoding the group again.
    """

    def __init__(self, limit: int = 8) -> None:
        self.limit = limit
        self._states: dict[tuple[str, str], tuple[Store, Any]] = {}

    def take(self, store: Store, key: str) -> Any:
        """The state held under `key` (and then no longer held), or None."""
        held = self._states.pop((repr(store), key), None)
        return None if held is None else held[1]

    def keep(self, store: Store, key: str, state: Any) -> list[tuple[Store, str, Any]]:
        self._states[(repr(store), key)] = (store, state)
        evicted = []
        while len(self._states) > self.limit:
            (_, old_key), (old_store, old_state) = next(iter(self._states.items()))
            del self._states[(repr(old_store), old_key)]
            evicted.append((old_store, old_key, old_state))
        return evicted

    def clear(self) -> None:
        self._states.clear()


# One per process: the rebase chain's consecutive links run in the same process (the embedded
# runner's lanes; one rebaser per group in the services).
HELD_STATES = HeldStates()


def _put_chunk(
    store: Store, plan: ChunkPlan, index: int, name: str, frames: list[bytes], state: Any
) -> None:
    """Store a chunk's frames as `<name>.ivf`, and its exit state as `<name>.state` when the
    next chunk needs it. The IVF is written last: it marks the stage as done."""
    if plan.has_successor(index):
        store.put(chunk_key(plan.job, index, f"{name}.state"),
                  state.to_bytes(compress=STATE_COMPRESSION))
    store.put(chunk_key(plan.job, index, f"{name}.ivf"), ivf_bytes(frames, *_geometry(plan)))


def _geometry(plan: ChunkPlan) -> tuple[int, int, tuple[int, int]]:
    return plan.width, plan.height, plan.fps


def rebase_first(store: Store, job: str, index: int) -> None:
    """Stage 4 (parallel): chunk `index` made to continue from the libvpx exit state of chunk
    index-1. With a lead-in, its key frame (the lead-in picture) is dropped and every frame
    after it is rebased; anchored, the key frame becomes the hidden anchor, the first picture
    is encoded and the rest rebased (chunk_rebase.anchor_chunk); otherwise the chunk's key
    frame becomes an interframe and the rest of the chunk is rebased onto it."""
    plan = load_plan(store, job)
    if plan.position(index) == 0:
        raise ValueError(f"chunk {index} starts its group: it keeps its key frame")
    if store.exists(chunk_key(job, index, "provisional.ivf")):
        return
    rebaser = load_rebase()
    incoming = _load_state(store, chunk_key(job, index - 1, "vpx.state"))
    records = rebaser.parse(read_ivf_frames(store.get(chunk_key(job, index, "vpx.ivf"))), None)
    if plan.has_lead_in(index):
        records = rebaser.drop_lead_in(records)
    # A start the chain will revisit (position 1's is final as it is) needs no trellis.
    revisited = plan.start_frames != "rebase" and plan.position(index) >= 2
    sources = _source_images(store, job, index)
    if plan.anchored(index):
        if rebaser.anchor is None:
            raise RebaseUnavailableError("this rebase cannot code anchored chunks")
        coded, exit_state = rebaser.anchor(incoming, records, sources, trellis=not revisited)
    else:
        coded, exit_state = rebaser.rebase(incoming, records, sources, trellis=not revisited)
    new_frames = rebaser.write(coded)
    if all(is_shown(frame) for frame in new_frames):
        # Stage 5 parses these frames; with no hidden frame to decode, this is all it needs.
        store.put(chunk_key(job, index, "provisional.context"),
                  incoming.without_references().to_bytes(compress=False))
    _put_chunk(store, plan, index, "provisional", new_frames, exit_state)


@dataclass(frozen=True)
class LinkTimes:
    """Where a link of the rebase chain (stage 5) spends its time, in seconds.

    Only `critical` is serial: from having the incoming state to handing the exit state on.
    `prepare` (reading and parsing the chunk's provisional frames) needs only stage 4's output,
    and `finish` (writing the final frames) only the link's own coded frames, so with one
    worker per chunk they overlap the links before and after (bench/excamera.py projects so).
    """

    prepare: float = 0.0
    critical: float = 0.0
    finish: float = 0.0


def rebase_serial(store: Store, job: str, index: int, *, keep_state: bool = False) -> LinkTimes:
    """Stage 5 (serial within a group, in chunk order): make chunk `index`'s final frames.

    Needs the true exit state of chunk index-1, so call it for a group's chunks in order. The
    final frames are the chain's durable record; its states are not stored but held in memory
    by the process running the chain (`HELD_STATES`), which hands each to the next link. A
    process that does not hold the state (after a crash, or when links of one group run in
    different processes) rebuilds it by decoding the group's final frames from the last state
    that is stored (position 1's, or position 0's), so no finished chunk is ever re-encoded.

    The link parses its chunk before it takes the incoming state, and passes the exit state on
    before it writes its frames (`LinkTimes`). `keep_state` also stores the exit state, after
    the frames (off the serial path): for a queue that does not send a group's links to one
    process (an SQS FIFO queue), so whichever process gets the next link reads the state
    instead of decoding the group again.
    """
    started = time.perf_counter()
    plan = load_plan(store, job)
    if store.exists(chunk_key(job, index, "final.ivf")):
        return LinkTimes()
    position = plan.position(index)
    if position <= 1:
        # Position 0 keeps libvpx's stream; position 1 was encoded against the exact state.
        earlier = "vpx" if position == 0 else "provisional"
        for suffix in (".state", ".ivf") if plan.has_successor(index) else (".ivf",):
            store.copy(
                chunk_key(job, index, earlier + suffix), chunk_key(job, index, "final" + suffix)
            )
        return LinkTimes(critical=time.perf_counter() - started)
    rebaser = load_rebase()
    context = chunk_key(job, index, "provisional.context")
    original = _load_state(
        store, context if store.exists(context) else chunk_key(job, index - 1, "vpx.state")
    )
    records = rebaser.parse(
        read_ivf_frames(store.get(chunk_key(job, index, "provisional.ivf"))), original
    )
    sources = _source_images(store, job, index)
    prepared = time.perf_counter()

    incoming = HELD_STATES.take(store, chunk_key(job, index - 1, "final.state"))
    if incoming is None:
        incoming = final_state(store, plan, index - 1)
    coded, exit_state = rebaser.rebase(
        incoming, records, sources, revisit_start=plan.start_frames != "rebase",
        anchor_image=_anchor_picture(sources) if plan.anchored(index) else None,
        threads=chain_threads())
    held = chunk_key(job, index, "final.state")
    evicted = HELD_STATES.keep(store, held, exit_state) if plan.has_successor(index) else []
    handed_on = time.perf_counter()

    try:
        frames = rebaser.write(coded)
        store.put(chunk_key(job, index, "final.ivf"), ivf_bytes(frames, *_geometry(plan)))
        if keep_state and plan.has_successor(index):
            store.put(held, exit_state.to_bytes(compress=STATE_COMPRESSION))
        for other_store, key, state in evicted:  # after this link's frames: off its path
            other_store.put(key, state.to_bytes(compress=STATE_COMPRESSION))
    except BaseException:
        HELD_STATES.take(store, held)  # no state may outlive a link whose frames are lost
        raise
    return LinkTimes(prepared - started, handed_on - prepared, time.perf_counter() - handed_on)


def final_state(store: Store, plan: ChunkPlan, index: int) -> Any:
    """The true decoder state after chunk `index` of the output: stored for a group's first
    two chunks; for later ones, decoded from the nearest stored one through the final frames
    in between (which stage 5 has already made)."""
    first = index
    while not store.exists(chunk_key(plan.job, first, "final.state")):
        if plan.position(first) <= 1:
            raise PipelineError(f"chunk {first}: its final state is missing from the store")
        first -= 1
    state = _load_state(store, chunk_key(plan.job, first, "final.state"))
    for later in range(first + 1, index + 1):
        frames = read_ivf_frames(store.get(chunk_key(plan.job, later, "final.ivf")))
        state = _decode_frames(state, frames, f"chunk {later} (final)")
    return state


# --------------------------------------------------------------------------- checking a group


@dataclass(frozen=True)
class GroupQuality:
    """A group's output decoded by our decoder and compared with its source pictures."""

    group: int
    frames: int  # shown
    packets: int  # shown and hidden
    payload_bytes: int
    ssim_sum: float  # of per-picture SSIM (all planes, libvpx weights)
    sse: int  # squared error over all planes and pictures
    samples: int  # luma and chroma samples compared


def measure_group(store: Store, job: str, group: int) -> GroupQuality:
    """Decode a group's final frames from the initial state, as a player would, and check what
    the output must satisfy: one key frame, first; one shown picture per source picture; the
    decoded state after each chunk equal to the stored true exit state. Returns the quality
    (also stored, for whoever joins the job)."""
    from shared.codec import DecoderState

    output = group_key(job, group, "quality.json")
    if store.exists(output):
        return GroupQuality(**json.loads(store.get(output)))
    plan = load_plan(store, job)
    state = DecoderState.initial()
    totals = {
        "frames": 0,
        "packets": 0,
        "payload_bytes": 0,
        "ssim_sum": 0.0,
        "sse": 0,
        "samples": 0,
    }
    for index in plan.group_chunks(group):
        frames = read_ivf_frames(store.get(chunk_key(job, index, "final.ivf")))
        _check_key_frames(frames, index, plan.position(index) == 0)
        state = _measure_chunk(state, frames, _source_images(store, job, index), index, totals)
        stored = chunk_key(job, index, "final.state")
        if store.exists(stored) and _load_state(store, stored) != state:
            raise PipelineError(
                f"chunk {index}: the stored exit state differs from the decoded one"
            )
    quality = GroupQuality(group=group, **totals)
    store.put(output, json.dumps(asdict(quality)).encode())
    return quality


@dataclass(frozen=True)
class OutputQuality:
    """A job's output as a whole: what `excamera encode` and a job's status report."""

    frames: int
    payload_bytes: int  # VP8 frames only (what the bitrate counts)
    bitrate_kbps: float
    ssim: float  # mean per-picture SSIM, libvpx's (0.8 Y + 0.1 U + 0.1 V)
    ssim_db: float
    psnr_db: float  # from the squared error pooled over all planes and pictures
    cq_levels: tuple[int, int]  # lowest and highest chunk cq level


def output_quality(
    plan: ChunkPlan, encodes: list[ChunkEncode], groups: list[GroupQuality]
) -> OutputQuality:
    """Pool every group's measurement; a PipelineError if the output lost or gained frames."""
    frames = sum(g.frames for g in groups)
    if frames != plan.frame_count:
        raise PipelineError(f"the output has {frames} frames, the input {plan.frame_count}")
    fps = plan.fps[0] / plan.fps[1]
    payload = sum(g.payload_bytes for g in groups)
    mean_ssim = sum(g.ssim_sum for g in groups) / frames
    levels = [encode.cq_level for encode in encodes]
    return OutputQuality(
        frames=frames,
        payload_bytes=payload,
        bitrate_kbps=round(payload * 8 * fps / frames / 1000, 3),
        ssim=round(mean_ssim, 6),
        ssim_db=round(metrics.ssim_db(mean_ssim), 3),
        psnr_db=round(metrics.psnr_from_sse(sum(g.sse for g in groups),
                                            sum(g.samples for g in groups)), 3),
        cq_levels=(min(levels), max(levels)),
    )


def stored_output_quality(store: Store, plan: ChunkPlan) -> OutputQuality:
    """`output_quality` from what the stages stored (a worker that ran none of them)."""
    encodes = [ChunkEncode(**json.loads(store.get(chunk_key(plan.job, i, "vpx.json"))))
               for i in range(plan.chunk_count)]
    groups = [measure_group(store, plan.job, g) for g in range(plan.group_count)]
    return output_quality(plan, encodes, groups)


def _check_key_frames(frames: list[bytes], index: int, group_start: bool) -> None:
    keys = [number for number, frame in enumerate(frames) if is_key_frame(frame)]
    if keys != ([0] if group_start else []):
        where = "its first frame only" if group_start else "none"
        raise PipelineError(f"chunk {index}: key frames at {keys}, expected {where}")


def _measure_chunk(
    state: Any, frames: list[bytes], pictures: list[Image], index: int, totals: dict[str, Any]
) -> Any:
    from shared.codec import decode

    shown = 0
    for number, frame in enumerate(frames):
        try:
            state, image = decode(state, frame)
        except CodecError as exc:
            raise PipelineError(f"chunk {index}: frame {number} does not decode: {exc}") from exc
        if image is None:
            continue
        if shown >= len(pictures):
            raise PipelineError(f"chunk {index}: more shown frames than its {len(pictures)}")
        picture = pictures[shown]
        totals["ssim_sum"] += metrics.ssim(image, picture)
        totals["sse"] += sum(
            metrics.sse(a, b) for a, b in zip(image.planes, picture.planes, strict=True)
        )
        totals["samples"] += sum(plane.size for plane in picture.planes)
        shown += 1
    if shown != len(pictures):
        raise PipelineError(f"chunk {index}: {shown} shown frames for {len(pictures)} pictures")
    totals["frames"] += shown
    totals["packets"] += len(frames)
    totals["payload_bytes"] += sum(map(len, frames))
    return state


# --------------------------------------------------------------------------- stage 6: join


@dataclass(frozen=True)
class JoinResult:
    path: str
    file_bytes: int
    packets: int


def join(store: Store, job: str, plan: ChunkPlan, output_path: str | Path) -> JoinResult:
    """Concatenate every chunk's final frames into `output_path` (.ivf, or .webm muxed without
    re-encoding), written atomically."""
    packets = 0

    def frames() -> Any:
        nonlocal packets
        for index in range(plan.chunk_count):
            for frame in read_ivf_frames(store.get(chunk_key(job, index, "final.ivf"))):
                packets += 1
                yield frame

    try:
        write_output(output_path, frames(), *_geometry(plan))
        size = Path(output_path).stat().st_size
    except OSError as exc:
        raise OutputError(f"{output_path}: {exc.strerror or exc}") from exc
    return JoinResult(str(output_path), size, packets)
