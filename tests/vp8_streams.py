"""VP8 streams made with libvpx for the decoder tests, cached between runs.

Each `Stream` names its source pictures, how libvpx encodes them (vpxenc arguments, PyAV's
`libvpx` encoder options, or a concatenation of other streams), what it exercises, and checks
on the frame headers proving the encoder really produced that (`check_stream`). Sources are
real video from the reference folder (`<shared>/video`: Sintel, the mp4 clips, the stills) or
numpy-generated content, which needs nothing and so also runs on a fresh machine.

Streams (source; what each exercises; `*` marks what `check_stream` verifies in the headers):

- sintel-good-cpu0 (Sintel 176x144): full RD mode search: SPLITMV, B_PRED in interframes,
  NEWMV; profile 0*.
- sintel-best (Sintel): `--best`, the most thorough mode decisions.
- sintel-rt-cpu16 (Sintel): `--rt --cpu-used=16`, the fastest real-time decisions.
- carphone (carphone mp4): real camera video.
- still-pan (a still, panned): global motion, long MVs, content entering at the edges.
- profile1/2/3 (synthetic 96x64): bitstream versions 1*, 2*, 3*: bilinear and full-pixel
  prediction; the simple loop filter* (1, 3) and the normal one* (2). libvpx takes the filter
  type from the header bit, not from the version.
- partitions-2/4/8 (Sintel): 2*, 4*, 8* token partitions (9 MB rows: row r uses r % n).
- altref-2pass (Sintel, 24 frames, 2 passes): a hidden alt-ref frame*, altref sign bias*, the
  three references all different*.
- cbr-rt-segmentation (Sintel): cyclic refresh: segmentation* with map and q/lf data updates*.
- error-resilient (synthetic 128x96): segmentation*, probabilities never persisted
  (refresh_entropy_probs=0 everywhere*), `--static-thresh`.
- denoiser (Sintel): `--noise-sensitivity=4`, the temporal denoiser; segmentation*.
- temporal-layers (Sintel, PyAV encoder, 3 layers): frames refreshing no reference*,
  golden-only refreshes*, segmentation switched off and on again*.
- keyframes-every-3 (synthetic 64x48): at least 3 key frames* (state reset mid-stream).
- q-min / q-max (Sintel): quantizer index 0* / 127* in every frame.
- noise-q0 (random noise 64x48, q 0*): the largest coefficients (DCT_CAT6 tokens).
- odd-175x143 (Sintel crop), odd-33x17, tiny-1x1* (synthetic): partial macroblocks, chroma
  (w+1)/2.
- size-change (64x48, 80x64 and odd-33x17 concatenated): 3 key frame sizes*.
- spatial-resampling (Sintel, starved CBR with `--resize-allowed=1`): key frames at 4/5, 3/5,
  1/2 size with the scale bits set*; the output size is the coded size.
- sharpness-3, sharpness-7 (synthetic 96x64): loop-filter sharpness 3*, 7*.
- sintel-1024x436, bbb-720p (3 frames, `--good`, q 10-30): full-size frames; the state-size
  measurement.

What libvpx's VP8 encoder (1.12) does and does not produce, found while building these:
- segmentation comes only from its cyclic refresh, which it enables in error-resilient mode or
  one-pass CBR (`vp8_change_config`); it switches it off on upper temporal layers, under forced
  max-q and (screen-content mode 2) on golden refreshes. Whenever it (re-)enables segmentation
  it re-sends the map and the data, so "enabled without a map update" never comes from it: the
  vectors 002, 010, 013 and 015 cover that (010 switches segmentation on that way mid-stream).
- versions 2 and 3 always get loop_filter_level 0 (as do vectors 004 and 005), so no stream
  exercises a loop filter under those versions.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from libvpx_oracle import VPXENC, FrameHeader, join_ivf, libvpx_version, peek_header, read_ivf
from libvpx_oracle import reference_slots as _slots

Planes = tuple[np.ndarray, np.ndarray, np.ndarray]

# Bump when a generator changes the bytes it would produce, so caches built before are ignored.
GENERATOR_REVISION = 1


class MissingSource(Exception):
    """A stream needs `<shared>/video`, which is not available."""


# --- sources ---------------------------------------------------------------------------------


def _crop(planes: Planes, width: int, height: int, x: int, y: int) -> Planes:
    """Crop at an even offset, so chroma stays aligned; chroma is (w+1)//2 x (h+1)//2."""
    if x % 2 or y % 2:
        raise ValueError("crop offsets must be even")
    py, pu, pv = planes
    cw, ch = (width + 1) // 2, (height + 1) // 2
    out = (
        py[y : y + height, x : x + width],
        pu[y // 2 : y // 2 + ch, x // 2 : x // 2 + cw],
        pv[y // 2 : y // 2 + ch, x // 2 : x // 2 + cw],
    )
    if out[0].shape != (height, width) or out[1].shape != (ch, cw):
        raise ValueError(f"crop {width}x{height}+{x}+{y} leaves the source picture")
    y, u, v = (np.ascontiguousarray(p) for p in out)
    return y, u, v


def _shrink(plane: np.ndarray, factor: int) -> np.ndarray:
    """Area-average downscale by an integer factor (drops the ragged edge)."""
    if factor == 1:
        return plane
    h, w = plane.shape[0] // factor * factor, plane.shape[1] // factor * factor
    blocks = plane[:h, :w].reshape(h // factor, factor, w // factor, factor)
    return (blocks.mean(axis=(1, 3)) + 0.5).astype(np.uint8)


def _shrink_planes(planes: Planes, factor: int) -> Planes:
    y, u, v = (_shrink(p, factor) for p in planes)
    return y, u, v


def _read_y4m(path: Path, limit: int) -> list[Planes]:
    """Just enough Y4M for the 4:2:0 reference files (the codec's own reader is tested apart)."""
    data = path.read_bytes()
    end = data.index(b"\n")
    params = {tok[0]: tok[1:] for tok in data[:end].decode().split()[1:]}
    width, height = int(params["W"]), int(params["H"])
    cw, ch = (width + 1) // 2, (height + 1) // 2
    size = width * height + 2 * cw * ch
    frames: list[Planes] = []
    pos = end + 1
    while pos < len(data) and len(frames) < limit:
        pos = data.index(b"\n", pos) + 1  # "FRAME" plus optional parameters
        flat = np.frombuffer(data, np.uint8, size, pos)
        pos += size
        y = flat[: width * height].reshape(height, width)
        u = flat[width * height : width * height + cw * ch].reshape(ch, cw)
        v = flat[width * height + cw * ch :].reshape(ch, cw)
        frames.append((y, u, v))
    return frames


def write_y4m(path: Path, frames: Sequence[Planes], fps: int = 30) -> None:
    height, width = frames[0][0].shape
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for planes in frames:
            out.write(b"FRAME\n")
            for plane in planes:
                out.write(np.ascontiguousarray(plane, np.uint8).tobytes())


@dataclass(frozen=True)
class Synthetic:
    """Smooth patterns moving by fractional pixels, shapes crossing the edges, light noise."""

    width: int
    height: int
    frames: int
    noise: float = 3.0
    seed: int = 0

    def render(self, video_dir: Path | None) -> list[Planes]:
        rng = np.random.default_rng(self.seed)
        cw, ch = (self.width + 1) // 2, (self.height + 1) // 2
        yy, xx = np.mgrid[0 : self.height, 0 : self.width].astype(np.float64)
        cy, cx = np.mgrid[0:ch, 0:cw].astype(np.float64)
        out: list[Planes] = []
        for t in range(self.frames):
            luma = 110 + 50 * np.sin((xx + 1.7 * t) / 6.0) * np.cos((yy - 0.6 * t) / 5.0)
            luma += (xx * 0.8 + yy * 0.5 + 2.5 * t) % 64  # a ramp with sharp wrap edges
            # A bright box moving right and a dark disc moving diagonally, both leaving the frame.
            bx = (t * 5) % (self.width + 24) - 12
            band = (yy >= self.height * 0.2) & (yy < self.height * 0.5)
            luma[(xx >= bx) & (xx < bx + 12) & band] = 235
            dx, dy = self.width * 0.7 - 3.5 * t, self.height * 0.6 + 2.25 * t
            luma[(xx - dx) ** 2 + (yy - dy) ** 2 < 40] = 20
            luma += rng.normal(0, self.noise, luma.shape)
            u = 128 + 60 * np.sin((cx * 2 + 3 * t) / 11.0)
            v = 128 + 60 * np.cos((cy * 2 - 2 * t) / 9.0) + rng.normal(0, self.noise, (ch, cw))
            y8, u8, v8 = (np.clip(p + 0.5, 0, 255).astype(np.uint8) for p in (luma, u, v))
            out.append((y8, u8, v8))
        return out


@dataclass(frozen=True)
class Noise:
    """Uniform random pictures: the worst case for prediction, so the largest residuals."""

    width: int
    height: int
    frames: int
    seed: int = 1

    def render(self, video_dir: Path | None) -> list[Planes]:
        rng = np.random.default_rng(self.seed)
        cw, ch = (self.width + 1) // 2, (self.height + 1) // 2
        planes = (self.height, self.width), (ch, cw), (ch, cw)
        out: list[Planes] = []
        for _ in range(self.frames):
            y, u, v = (rng.integers(0, 256, shape, dtype=np.uint8) for shape in planes)
            out.append((y, u, v))
        return out


def _need(video_dir: Path | None, relative: str) -> Path:
    if video_dir is None or not (video_dir / relative).exists():
        raise MissingSource(f"needs {relative} from the reference folder's video/")
    return video_dir / relative


@dataclass(frozen=True)
class Sintel:
    """The 24 Sintel frames (chunks 1-4), shrunk by `shrink`, cropped at (x, y)."""

    width: int
    height: int
    frames: int
    shrink: int = 2
    x: int = 160
    y: int = 30

    def render(self, video_dir: Path | None) -> list[Planes]:
        pictures: list[Planes] = []
        for chunk in range(1, 5):
            path = _need(video_dir, f"sintel/chunk{chunk}.y4m")
            pictures += _read_y4m(path, self.frames - len(pictures))
            if len(pictures) == self.frames:
                break
        shrunk = (_shrink_planes(planes, self.shrink) for planes in pictures)
        return [_crop(planes, self.width, self.height, self.x, self.y) for planes in shrunk]


@dataclass(frozen=True)
class Clip:
    """The first frames of an mp4 clip decoded with PyAV, shrunk, cropped at (x, y)."""

    name: str
    width: int
    height: int
    frames: int
    shrink: int = 1
    x: int = 0
    y: int = 0

    def render(self, video_dir: Path | None) -> list[Planes]:
        import av

        path = _need(video_dir, f"clips/{self.name}.mp4")
        pictures: list[Planes] = []
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                i420 = frame.to_ndarray(format="yuv420p")
                h, w = frame.height, frame.width
                y = i420[:h]
                chroma = i420[h:].reshape(2, h // 2, w // 2)
                shrunk = _shrink_planes((y, chroma[0], chroma[1]), self.shrink)
                pictures.append(_crop(shrunk, self.width, self.height, self.x, self.y))
                if len(pictures) == self.frames:
                    break
        return pictures


@dataclass(frozen=True)
class StillPan:
    """A window panning over a still picture by (dx, dy) per frame."""

    name: str
    width: int
    height: int
    frames: int
    dx: int = 6
    dy: int = 2
    x: int = 400
    y: int = 300

    def render(self, video_dir: Path | None) -> list[Planes]:
        still = _read_y4m(_need(video_dir, f"stills/{self.name}.y4m"), 1)[0]
        return [
            _crop(still, self.width, self.height, self.x + t * self.dx, self.y + t * self.dy)
            for t in range(self.frames)
        ]


Source = Synthetic | Noise | Sintel | Clip | StillPan


# --- header checks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    what: str
    test: Callable[[Sequence[FrameHeader]], bool]


def every(what: str, pred: Callable[[FrameHeader], bool]) -> Check:
    return Check(f"every frame: {what}", lambda hs: all(pred(h) for h in hs))


def some(what: str, pred: Callable[[FrameHeader], bool]) -> Check:
    return Check(f"some frame: {what}", lambda hs: any(pred(h) for h in hs))


def _toggles_segmentation(hs: Sequence[FrameHeader]) -> bool:
    flags = "".join("1" if h.segmentation_enabled else "0" for h in hs)
    return re.search("10+1", flags) is not None


def _three_references(hs: Sequence[FrameHeader]) -> bool:
    return any(len(set(slots)) == 3 for slots in _slots(hs))


def _key_sizes(hs: Sequence[FrameHeader]) -> set[tuple[int | None, int | None]]:
    return {(h.width, h.height) for h in hs if h.key_frame}


HIDDEN = some("show_frame=0 (hidden)", lambda h: not h.show_frame)
SEGMENTED = some(
    "interframe with segmentation, map and data updated",
    lambda h: (
        not h.key_frame
        and h.segmentation_enabled
        and h.update_mb_segmentation_map
        and h.update_segment_feature_data
    ),
)


def version(v: int) -> Check:
    return every(f"version {v}", lambda h: h.version == v)


# --- streams ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    name: str
    covers: str
    source: Source | None = None
    vpxenc: tuple[str, ...] = ()
    pyav: tuple[tuple[str, str], ...] = ()  # libvpx options through PyAV instead of vpxenc
    pyav_bitrate: int = 0
    parts: tuple[str, ...] = ()  # concatenate these streams instead of encoding
    checks: tuple[Check, ...] = field(default=(), compare=False)


SINTEL176 = Sintel(176, 144, 12)
GOOD = ("--good", "--cpu-used=4")
CBR = ("--end-usage=cbr", "--target-bitrate=150")
# Constant quality at a level a real encode would use, so the measured state size is typical.
REALISTIC = ("--good", "--cpu-used=8", "--min-q=10", "--max-q=30")

_ALL = [
    Stream(
        "sintel-good-cpu0",
        "full RD mode search",
        SINTEL176,
        ("--good", "--cpu-used=0"),
        checks=(version(0),),
    ),
    Stream("sintel-best", "--best mode decisions", Sintel(176, 144, 6), ("--best",)),
    Stream("sintel-rt-cpu16", "fastest real-time decisions", SINTEL176, ("--rt", "--cpu-used=16")),
    Stream(
        "carphone",
        "real camera video",
        Clip("carphone_pristine", 176, 144, 10),
        ("--good", "--cpu-used=2"),
    ),
    Stream(
        "still-pan",
        "global motion, content entering at the edges",
        StillPan("a4db99689a06fbc3ae0b3b84c50efcd870f1c9cd", 160, 96, 8),
        ("--good", "--cpu-used=1"),
    ),
    *(
        Stream(
            f"profile{p}",
            f"bitstream version {p}",
            Synthetic(96, 64, 10),
            (*GOOD, f"--profile={p}"),
            checks=(
                version(p),
                every(f"filter type {p % 2}", lambda h, p=p: h.filter_type == p % 2),
            ),
        )
        for p in (1, 2, 3)
    ),
    *(
        Stream(
            f"partitions-{1 << n}",
            f"{1 << n} token partitions",
            Sintel(176, 144, 6),
            (*GOOD, f"--token-parts={n}"),
            checks=(every(f"{1 << n} partitions", lambda h, n=n: h.token_partitions == 1 << n),),
        )
        for n in (1, 2, 3)
    ),
    Stream(
        "altref-2pass",
        "hidden alt-ref frame, three distinct references",
        Sintel(176, 144, 24),
        ("--good", "--cpu-used=4", "--passes=2", "--auto-alt-ref=1", "--lag-in-frames=16"),
        checks=(
            HIDDEN,
            some("altref sign bias", lambda h: h.sign_bias_altref),
            Check("last, golden, altref all different at some frame", _three_references),
        ),
    ),
    Stream(
        "cbr-rt-segmentation",
        "cyclic refresh segmentation",
        SINTEL176,
        ("--rt", "--cpu-used=-6", *CBR),
        checks=(SEGMENTED,),
    ),
    Stream(
        "error-resilient",
        "segmentation, probabilities never persisted",
        Synthetic(128, 96, 10, seed=2),
        ("--rt", "--error-resilient=1", *CBR, "--static-thresh=500"),
        checks=(SEGMENTED, every("refresh_entropy_probs=0", lambda h: not h.refresh_entropy_probs)),
    ),
    Stream(
        "denoiser",
        "temporal denoiser",
        SINTEL176,
        ("--rt", *CBR, "--noise-sensitivity=4", "--static-thresh=100"),
        checks=(SEGMENTED,),
    ),
    Stream(
        "temporal-layers",
        "non-reference frames, segmentation toggled",
        Sintel(176, 144, 16),
        pyav=(
            ("deadline", "realtime"),
            ("cpu-used", "8"),
            ("minrate", "200k"),
            ("maxrate", "200k"),
            ("bufsize", "200k"),
            (
                "ts-parameters",
                "ts_number_layers=3:ts_target_bitrate=100,150,200:"
                "ts_rate_decimator=4,2,1:ts_periodicity=4:ts_layer_id=0,2,1,2:"
                "ts_layering_mode=3",
            ),
        ),
        pyav_bitrate=200_000,
        checks=(
            some(
                "refreshes no reference",
                lambda h: (
                    not (
                        h.refresh_last
                        or h.refresh_golden
                        or h.refresh_altref
                        or h.copy_to_golden
                        or h.copy_to_altref
                    )
                ),
            ),
            some(
                "refreshes only golden",
                lambda h: not h.key_frame and h.refresh_golden and not h.refresh_last,
            ),
            Check("segmentation on, off, on again", _toggles_segmentation),
        ),
    ),
    Stream(
        "keyframes-every-3",
        "key frames mid-stream",
        Synthetic(64, 48, 10, seed=3),
        (*GOOD, "--kf-max-dist=3"),
        checks=(Check("at least 3 key frames", lambda hs: sum(h.key_frame for h in hs) >= 3),),
    ),
    Stream(
        "q-min",
        "quantizer index 0",
        Sintel(176, 144, 4),
        (*GOOD, "--end-usage=q", "--cq-level=0", "--min-q=0", "--max-q=0"),
        checks=(every("q_index 0", lambda h: h.q_index == 0),),
    ),
    Stream(
        "q-max",
        "quantizer index 127",
        Sintel(176, 144, 6),
        (*GOOD, "--min-q=63", "--max-q=63"),
        checks=(every("q_index 127", lambda h: h.q_index == 127),),
    ),
    Stream(
        "noise-q0",
        "largest coefficients",
        Noise(64, 48, 3),
        (*GOOD, "--end-usage=q", "--cq-level=0", "--min-q=0", "--max-q=0"),
        checks=(every("q_index 0", lambda h: h.q_index == 0),),
    ),
    Stream(
        "odd-175x143",
        "odd size",
        Sintel(175, 143, 8),
        GOOD,
        checks=(every("175x143", lambda h: not h.key_frame or (h.width, h.height) == (175, 143)),),
    ),
    Stream("odd-33x17", "odd size below 3x2 MBs", Synthetic(33, 17, 10, seed=4), GOOD),
    Stream(
        "tiny-1x1",
        "1x1 frames",
        Synthetic(1, 1, 4, seed=5),
        GOOD,
        checks=(some("1x1", lambda h: (h.width, h.height) == (1, 1)),),
    ),
    Stream("size-change-a", "first part of size-change", Synthetic(64, 48, 4, seed=6), GOOD),
    Stream("size-change-b", "second part of size-change", Synthetic(80, 64, 4, seed=7), GOOD),
    Stream(
        "size-change",
        "key frames changing the size mid-stream",
        parts=("size-change-a", "size-change-b", "odd-33x17"),
        checks=(Check("3 key frame sizes", lambda hs: len(_key_sizes(hs)) == 3),),
    ),
    Stream(
        "spatial-resampling",
        "encoder-side resizing with scale bits",
        Sintel(176, 144, 6),
        (
            "--rt",
            "--end-usage=cbr",
            "--target-bitrate=10",
            "--resize-allowed=1",
            "--resize-down=100",
            "--kf-max-dist=1",
        ),
        checks=(
            some("key frame with scale bits", lambda h: bool(h.horiz_scale)),
            Check("several key frame sizes", lambda hs: len(_key_sizes(hs)) > 1),
        ),
    ),
    *(
        Stream(
            f"sharpness-{s}",
            f"loop-filter sharpness {s}",
            Synthetic(96, 64, 8, seed=8),
            (*GOOD, f"--sharpness={s}"),
            checks=(some(f"sharpness {s}", lambda h, s=s: h.sharpness == s),),
        )
        for s in (3, 7)
    ),
    Stream(
        "sintel-1024x436",
        "full-size frames",
        Sintel(1024, 436, 3, shrink=1, x=0, y=0),
        REALISTIC,
    ),
    Stream("bbb-720p", "1280x720 frames", Clip("bigbuckbunny", 1280, 720, 3), REALISTIC),
]

STREAMS: dict[str, Stream] = {s.name: s for s in _ALL}
# The parts of a concatenation are not streams of interest on their own.
TEST_STREAMS = [name for name in STREAMS if not name.startswith("size-change-")]


def check_stream(stream: Stream, frames: Sequence[bytes]) -> list[str]:
    """The checks the stream's frame headers fail (empty when it exercises what it claims)."""
    headers = [peek_header(f) for f in frames]
    return [c.what for c in stream.checks if not c.test(headers)]


# --- generation and cache ----------------------------------------------------------------------


def _pyav_identity() -> str:
    import av

    return f"av {av.__version__} {sorted(av.library_versions.items())}"


def cache_key(stream: Stream) -> str:
    """Hash of everything that determines the stream's bytes."""
    recipe: dict[str, object] = {
        "revision": GENERATOR_REVISION,
        "source": None
        if stream.source is None
        else [type(stream.source).__name__, asdict(stream.source)],
        "vpxenc": stream.vpxenc,
        "pyav": stream.pyav,
        "pyav_bitrate": stream.pyav_bitrate,
        "parts": [cache_key(STREAMS[p]) for p in stream.parts],
        "libvpx": libvpx_version(),
    }
    if stream.pyav or isinstance(stream.source, Clip):
        recipe["av"] = _pyav_identity()
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def build(stream: Stream | str, video_dir: Path | None, cache_dir: Path) -> Path:
    """The stream's IVF file in `cache_dir`, encoding it first if it is not there yet.

    Raises MissingSource if the stream needs `video_dir` and it is absent.
    """
    if isinstance(stream, str):
        stream = STREAMS[stream]
    path = cache_dir / f"{stream.name}-{cache_key(stream)}.ivf"
    if path.exists():
        return path
    if stream.parts:
        data = _concatenate([build(p, video_dir, cache_dir) for p in stream.parts])
    else:
        assert stream.source is not None
        pictures = stream.source.render(video_dir)
        data = _encode_pyav(stream, pictures) if stream.pyav else _encode_vpxenc(stream, pictures)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Write then rename, so a concurrent run (pytest-xdist) never sees a partial file.
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".part")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)
    return path


def _encode_vpxenc(stream: Stream, pictures: list[Planes]) -> bytes:
    with tempfile.TemporaryDirectory(prefix="vpxenc-") as tmp:
        source, target = Path(tmp) / "in.y4m", Path(tmp) / "out.ivf"
        write_y4m(source, pictures)
        command = [VPXENC, "--codec=vp8", "--ivf", "-q", "--disable-warning-prompt"]
        command += ["--threads=1", *stream.vpxenc, f"--fpf={tmp}/stats", "-o", str(target)]
        done = subprocess.run([*command, str(source)], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"vpxenc failed for {stream.name}: {done.stderr.strip()}")
        return target.read_bytes()


def _encode_pyav(stream: Stream, pictures: list[Planes]) -> bytes:
    import av

    height, width = pictures[0][0].shape
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = Fraction(1, 30)
    codec.framerate = 30
    codec.bit_rate = stream.pyav_bitrate
    codec.thread_count = 1
    codec.options = dict(stream.pyav)
    packets: list[bytes] = []
    for pts, planes in enumerate(pictures):
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane, pixels in zip(frame.planes, planes, strict=True):
            rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
            rows[:, : plane.width] = pixels
        frame.pts = pts
        packets += [bytes(p) for p in codec.encode(frame)]
    packets += [bytes(p) for p in codec.encode(None)]
    return join_ivf(packets, width, height)


def _concatenate(paths: Sequence[Path]) -> bytes:
    streams = [read_ivf(p) for p in paths]
    frames = [f for s in streams for f in s.frames]
    return join_ivf(frames, streams[0].width, streams[0].height)
