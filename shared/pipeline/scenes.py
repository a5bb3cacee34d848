"""Where the split cuts the input: scene-cut detection and the chunk layout around the cuts.

A hard cut is where one shot ends and an unrelated one begins. Inside a chunk it is expensive:
libvpx codes the new shot's first picture as an interframe of mostly intra macroblocks, and
the rebase chain carries the old shot's references into it. So the split starts a new group,
with a real key frame, at every cut it is confident of, as a single-stream encoder starts a
key frame there (libvpx does, at both cuts of bench/excamera.py's scene-cut clip).

`CutDetector` compares each picture with the one before on a thumbnail (8x8 block means of
luma): a cut changes both the picture (mean block difference) and its brightness histogram,
much more than the motion around it does, and the picture after it does not return to the one
before (that would be a flash, not a cut). It costs about a millisecond per 720p picture and
needs one picture of look-ahead.

`Chunker` lays chunks out: without cuts exactly as before (every `n` pictures, the rest in a
last chunk); a cut closes the chunk being filled and starts a group, and chunks stay between
`min_chunk_frames(n)` and n pictures. The split streams pictures through both, holding at most
n + min_chunk_frames(n) + 1 of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from shared.codec.image import Image

__all__ = ["SCENE_CUT_MODES", "Chunk", "Chunker", "CutDetector", "min_chunk_frames"]

SCENE_CUT_MODES = ("auto", "off")

# Thresholds, from the real clips in ../shared/video: at the cuts of bench/excamera.py's
# scene-cut clip (BBB, Sintel, BBB) the thumbnails differ by 62 and 65 levels on average and
# their histograms by 0.28 and 0.25; elsewhere in it, and in all of BBB's 132 frames, Sintel
# and carphone, by at most 7.6 levels and 0.035 (fast motion, pans, a fade). A confident cut
# must clear both minimums by a wide margin and stand out from the motion just before it.
CUT_MIN_DIFFERENCE = 20.0  # mean absolute difference of the thumbnails, in 8-bit levels
CUT_MIN_HISTOGRAM = 0.12  # half the L1 distance of the thumbnails' normalised histograms
CUT_CONTRAST = 3.0  # times the previous picture's difference (and a flash's return)
THUMBNAIL_BLOCK = 8
HISTOGRAM_BINS = 32


def min_chunk_frames(n: int) -> int:
    """The floor on chunk length where cuts are placed: half of n, rounded up.

    Each chunk costs fixed work whatever its length (a task per stage, a lead-in picture in
    phase 1, an exit-state decode, a link of the chain), so chunks of at least n/2 keep that
    overhead per picture at most twice the nominal chunk's. A chunk filled past n when a cut
    comes is split into two of at least n/2, so no chunk is longer than n and the slowest
    phase-1 encode (the parallel path) is not lengthened. A cut closer than this to the group's
    start (a flash, a strobe, a montage of very short shots) starts no group: a key frame per
    shot would cost more than the few pictures it saves.
    """
    return (n + 1) // 2


def thumbnail(image: Image) -> np.ndarray:
    """The luma plane as the means of its 8x8 blocks (the partial blocks at the right and
    bottom edges left out), float32."""
    y = np.asarray(image.y, dtype=np.float32)
    rows = max(1, y.shape[0] // THUMBNAIL_BLOCK)
    cols = max(1, y.shape[1] // THUMBNAIL_BLOCK)
    block_h, block_w = min(THUMBNAIL_BLOCK, y.shape[0]), min(THUMBNAIL_BLOCK, y.shape[1])
    y = y[: rows * block_h, : cols * block_w]
    return y.reshape(rows, block_h, cols, block_w).mean(axis=(1, 3))


def _histogram(thumb: np.ndarray) -> np.ndarray:
    counts, _ = np.histogram(thumb, bins=HISTOGRAM_BINS, range=(0.0, 256.0))
    return counts / max(1, thumb.size)


def _difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def _histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    return 0.5 * float(np.abs(a - b).sum())


@dataclass
class _Seen:
    image: Image
    thumb: np.ndarray
    histogram: np.ndarray
    difference: float = 0.0  # from the picture before
    histogram_distance: float = 0.0


class CutDetector:
    """Decides, picture by picture, whether a confident scene cut starts at it.

    `push(image)` returns the (image, is_cut) pairs now decided, in input order (one picture
    of look-ahead, for the flash check); `finish()` returns the rest.
    """

    def __init__(self) -> None:
        self._before: _Seen | None = None  # decided already; the reference for the next
        self._waiting: _Seen | None = None  # its cut decision waits for the next picture

    def push(self, image: Image) -> list[tuple[Image, bool]]:
        thumb = thumbnail(image)
        seen = _Seen(image, thumb, _histogram(thumb))
        reference = self._waiting or self._before
        if reference is not None:
            seen.difference = _difference(thumb, reference.thumb)
            seen.histogram_distance = _histogram_distance(seen.histogram, reference.histogram)
        decided = []
        if self._waiting is not None:
            decided.append((self._waiting.image, self._is_cut(self._waiting, seen)))
            self._before = self._waiting
        self._waiting = seen
        return decided

    def finish(self) -> list[tuple[Image, bool]]:
        if self._waiting is None:
            return []
        decided = [(self._waiting.image, self._is_cut(self._waiting, None))]
        self._before, self._waiting = self._waiting, None
        return decided

    def _is_cut(self, candidate: _Seen, after: _Seen | None) -> bool:
        before = self._before
        if before is None:
            return False  # the first picture starts a group anyway
        if candidate.difference < CUT_MIN_DIFFERENCE:
            return False
        if candidate.histogram_distance < CUT_MIN_HISTOGRAM:
            return False
        if candidate.difference < CUT_CONTRAST * before.difference:
            return False  # part of fast motion, not a cut out of it
        if after is not None:
            returns_to = _difference(after.thumb, before.thumb)
            if returns_to * CUT_CONTRAST < candidate.difference:
                return False  # a flash: the next picture is the scene before again
        return True


@dataclass
class Chunk:
    """A chunk's pictures, whether it starts a group at a scene cut, and where it starts."""

    images: list[Image]
    first_frame: int
    at_cut: bool = False


@dataclass
class Chunker:
    """Lays out chunks of about `n` pictures from (image, is_cut) pairs (see the module).

    Pictures are held until their chunk's end is certain: a chunk of n is closed only once
    `floor` more pictures have come without a cut (else a cut among them would leave a chunk
    shorter than the floor).
    """

    n: int
    floor: int
    cuts: list[int] = field(default_factory=list)  # frame numbers of the cuts that start groups
    ignored_cuts: list[int] = field(default_factory=list)  # closer than floor to a group start
    _pending: list[Image] = field(default_factory=list)
    _first: int = 0  # frame number of _pending[0]
    _pending_at_cut: bool = False

    def push(self, image: Image, is_cut: bool) -> list[Chunk]:
        done: list[Chunk] = []
        if is_cut and len(self._pending) >= self.floor:
            done = self._close_at_cut()
            self.cuts.append(self._first)
            self._pending_at_cut = True
        elif is_cut:
            self.ignored_cuts.append(self._first + len(self._pending))
        self._pending.append(image)
        if len(self._pending) == self.n + self.floor:
            done.append(self._take(self.n))
        return done

    def finish(self) -> list[Chunk]:
        """The last chunks: as without cuts, n pictures and then the rest."""
        done = []
        if len(self._pending) > self.n:
            done.append(self._take(self.n))
        if self._pending:
            done.append(self._take(len(self._pending)))
        return done

    def _close_at_cut(self) -> list[Chunk]:
        count = len(self._pending)
        if count <= self.n:
            return [self._take(count)]
        # Between n and n + floor: two chunks of at least the floor, neither longer than n.
        first = (count + 1) // 2
        return [self._take(first), self._take(count - first)]

    def _take(self, count: int) -> Chunk:
        chunk = Chunk(self._pending[:count], self._first, self._pending_at_cut)
        del self._pending[:count]
        self._first += count
        self._pending_at_cut = False
        return chunk


def chunks_of(
    images: Iterable[Image], n: int, *, detect_cuts: bool
) -> tuple[Iterator[Chunk], Chunker]:
    """The chunks of `images` (a generator), and the Chunker, whose `cuts` are complete once
    the generator is exhausted."""
    chunker = Chunker(n, min_chunk_frames(n))

    def generate() -> Iterator[Chunk]:
        detector = CutDetector() if detect_cuts else None
        for image in images:
            decided = detector.push(image) if detector else [(image, False)]
            for picture, is_cut in decided:
                yield from chunker.push(picture, is_cut)
        for picture, is_cut in detector.finish() if detector else []:
            yield from chunker.push(picture, is_cut)
        yield from chunker.finish()

    return generate(), chunker
