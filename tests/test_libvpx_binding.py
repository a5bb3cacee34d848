"""The in-process binding of libvpx's VP8 encoder (`shared.libvpx`) that runs ExCamera's phase 1.

The reference is `vpxenc` itself, run with `shared.pipeline.vpx.vpxenc_command` on the same Y4M:
the binding's frames must be its frames, byte for byte, when both link the same libvpx. (The
clips are 11 and 5 macroblocks wide: at widths of 16k or 16k+9 macroblocks vpxenc's own output
depends on a byte of its heap layout, see shared/libvpx/heap.c.) The binding's frames must not
depend on the state of the heap. They are also decoded by libvpx (vpxdec) and checked: one
shown picture per input picture, close to it, one key frame, hidden alt-ref frames where the
clip is long enough.

Tests skip when the binding was not built (no libvpx-dev when the project was installed), and
the comparisons with vpxenc skip when vpxenc links another libvpx version; under CI=true a
missing binding, tool or reference folder fails instead.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from decoder_support import require_tools, unavailable
from libvpx_oracle import VPXENC, vpxdec_frames

from shared import cli
from shared.codec.image import Image, chroma_size
from shared.codec.y4m import Y4mReader, Y4mWriter
from shared.pipeline import vpx
from shared.pipeline.errors import LibvpxError, ToolError
from shared.pipeline.mux import read_ivf_frames

try:
    from shared import libvpx
except ImportError as exc:
    unavailable(
        f"the libvpx binding shared.libvpx is not built ({exc}): install libvpx-dev "
        "(Debian/Ubuntu) and rebuild, e.g. `python setup.py build_ext --inplace`"
    )

LAG = vpx.MAX_LAG_IN_FRAMES
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- inputs


def synthetic_pictures(count: int, width: int, height: int, seed: int = 0) -> list[Image]:
    """A noisy texture panning diagonally, with a bright square crossing it."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (2 * height + 64, 3 * width + 64)).astype(np.float32)
    texture = (texture + np.roll(texture, 1, 0) + np.roll(texture, 1, 1)) / 3
    cw, ch = chroma_size(width, height)
    pictures = []
    for i in range(count):
        luma = texture[2 * i : 2 * i + height, 3 * i : 3 * i + width].copy()
        x0 = (5 * i) % max(1, width - 12)
        luma[height // 3 : height // 3 + 12, x0 : x0 + 12] = 235
        pictures.append(
            Image(
                np.clip(luma, 0, 255).astype(np.uint8),
                np.full((ch, cw), 110 + i % 20, np.uint8),
                np.full((ch, cw), 140 - i % 15, np.uint8),
            )
        )
    return pictures


def write_y4m(path: Path, pictures: list[Image], fps: tuple[int, int]) -> Path:
    with Y4mWriter(path, pictures[0].width, pictures[0].height, fps) as writer:
        for picture in pictures:
            writer.write(picture)
    return path


def read_y4m(path: Path) -> tuple[list[Image], tuple[int, int]]:
    with Y4mReader(path) as reader:
        return list(reader), reader.header.fps


@pytest.fixture(scope="module")
def carphone_y4m(video_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 30 frames of carphone (176x144, 30000/1001 fps) as Y4M."""
    import av

    path = tmp_path_factory.mktemp("carphone") / "carphone30.y4m"
    with av.open(str(video_dir / "clips" / "carphone_pristine.mp4")) as container:
        pictures = []
        for frame in container.decode(video=0):
            if len(pictures) == 30:
                break
            pictures.append(Image.from_i420(frame.to_ndarray(format="yuv420p").tobytes(),
                                            176, 144))
    return write_y4m(path, pictures, (30000, 1001))


@pytest.fixture(scope="module")
def wide_y4m(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic clip 64 macroblocks wide: there libvpx's stale read (heap.c) goes past the
    end of its heap block, not only into the block's unused tail."""
    return write_y4m(tmp_path_factory.mktemp("wide") / "wide.y4m",
                     synthetic_pictures(8, 1024, 48), (24, 1))


@pytest.fixture(scope="module")
def odd_y4m(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic clip of odd size (chroma planes rounded up) at an NTSC frame rate."""
    path = tmp_path_factory.mktemp("odd") / "odd.y4m"
    return write_y4m(path, synthetic_pictures(20, 67, 37), (30000, 1001))


def same_libvpx() -> None:
    """Skip unless vpxenc links the libvpx the binding links (else the bytes may differ)."""
    require_tools()
    theirs = vpx.vpxenc_version(shutil.which(VPXENC) or VPXENC)
    ours = libvpx.encoder_name()
    if theirs != ours:
        pytest.skip(f"vpxenc links {theirs!r}, the binding {ours!r}: their bytes may differ")


def vpxenc_frames(source: Path, cq_level: int, workdir: Path) -> bytes:
    return vpx.run_vpxenc(shutil.which(VPXENC) or VPXENC, cq_level, LAG, source, workdir)


def _args(source: Path) -> tuple[list[Image], int, int, tuple[int, int]]:
    """The positional arguments of `encode_two_pass` for a Y4M file."""
    pictures, fps = read_y4m(source)
    return pictures, pictures[0].width, pictures[0].height, fps


def binding_packets(source: Path, cq_level: int) -> list[libvpx.Packet]:
    return libvpx.encode_two_pass_packets(*_args(source), cq_level=cq_level, lag_in_frames=LAG)


def binding_frames(source: Path, cq_level: int) -> list[bytes]:
    return libvpx.encode_two_pass(*_args(source), cq_level=cq_level, lag_in_frames=LAG)


def first_mismatch(ours: list[bytes], theirs: list[bytes]) -> str | None:
    for index, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        if a != b:
            return f"frame {index}: {len(a)} bytes from the binding, {len(b)} from vpxenc"
    if len(ours) != len(theirs):
        return f"{len(ours)} frames from the binding, {len(theirs)} from vpxenc"
    return None


# --------------------------------------------------------------------------- vpxenc's bytes


@pytest.mark.parametrize("cq_level", [20, 40])
def test_carphone_frames_equal_vpxenc(carphone_y4m: Path, tmp_path: Path, cq_level: int) -> None:
    same_libvpx()
    theirs = read_ivf_frames(vpxenc_frames(carphone_y4m, cq_level, tmp_path))
    ours = libvpx.encode_two_pass(*_args(carphone_y4m), cq_level=cq_level, lag_in_frames=LAG)
    assert first_mismatch(ours, theirs) is None
    assert not all(map(vpx.is_shown, ours)), "30 frames with look-ahead make an alt-ref frame"


def test_odd_size_and_ntsc_rate_equal_vpxenc(odd_y4m: Path, tmp_path: Path) -> None:
    same_libvpx()
    theirs = read_ivf_frames(vpxenc_frames(odd_y4m, 30, tmp_path))
    ours = libvpx.encode_two_pass(*_args(odd_y4m), cq_level=30, lag_in_frames=LAG)
    assert first_mismatch(ours, theirs) is None


def _hash_in_subprocess(source: Path, cq_level: int, perturb: int) -> str:
    """The binding's frames for `source`, hashed, from a new process whose malloc fills every
    block it hands out with a byte other than zero (glibc's MALLOC_PERTURB_)."""
    script = (
        "import hashlib, sys\n"
        "from shared import libvpx\n"
        "from shared.codec.y4m import Y4mReader\n"
        "with Y4mReader(sys.argv[1]) as reader:\n"
        "    pictures, header = list(reader), reader.header\n"
        "frames = libvpx.encode_two_pass(pictures, header.width, header.height, header.fps,\n"
        "                                cq_level=int(sys.argv[2]), lag_in_frames=25)\n"
        "print(hashlib.sha256(b''.join(frames)).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "MALLOC_PERTURB_": str(perturb)}
    done = subprocess.run(
        [sys.executable, "-c", script, str(source), str(cq_level)],
        capture_output=True, text=True, env=env, check=True,
    )
    return done.stdout.strip()


@pytest.mark.parametrize("source", ["carphone", "wide"])
def test_output_does_not_depend_on_the_heap(
    source: str, request: pytest.FixtureRequest
) -> None:
    """libvpx reads heap bytes it never wrote (--tune=ssim, shared/libvpx/heap.c); with the
    binding's zeroed heap the frames are the same whatever malloc hands out. Without it, these
    perturbations changed carphone's frames at cq 40."""
    if not libvpx.ZEROED_HEAP:
        unavailable("shared.libvpx links libvpx dynamically, without its zeroed heap "
                    "(libvpx.a was not found when it was built)")
    y4m = request.getfixturevalue(f"{source}_y4m")
    expected = hashlib.sha256(b"".join(binding_frames(y4m, 40))).hexdigest()
    assert {_hash_in_subprocess(y4m, 40, perturb) for perturb in (85, 170)} == {expected}


def test_ivf_file_equals_vpxenc(carphone_y4m: Path, tmp_path: Path) -> None:
    """Phase 1's two paths (`vpx.encode_chunk`) write the same IVF file: header, frames, pts."""
    same_libvpx()
    settings = vpx.EncodeSettings(cq_level=30, vpxenc=shutil.which(VPXENC) or VPXENC)
    in_process = vpx.encode_chunk(replace(settings, encoder="libvpx"), 30, carphone_y4m, tmp_path)
    command = vpx.encode_chunk(replace(settings, encoder="vpxenc"), 30, carphone_y4m, tmp_path)
    assert in_process == command


# --------------------------------------------------------------------------- the stream itself


def test_one_key_frame_and_hidden_alt_refs(carphone_y4m: Path) -> None:
    packets = binding_packets(carphone_y4m, 20)
    frames = [packet.data for packet in packets]
    assert [i for i, frame in enumerate(frames) if vpx.is_key_frame(frame)] == [0]
    hidden = [i for i, frame in enumerate(frames) if not vpx.is_shown(frame)]
    assert hidden, "no hidden alt-ref frame in 30 frames with a look-ahead of 25"
    # libvpx's own flags say the same as the frame tags.
    assert [p.key for p in packets] == [vpx.is_key_frame(f) for f in frames]
    assert [p.shown for p in packets] == [vpx.is_shown(f) for f in frames]
    assert sum(map(vpx.is_shown, frames)) == 30


@pytest.mark.parametrize("source", ["carphone", "odd"])
def test_libvpx_decodes_one_picture_per_input(
    source: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    require_tools()
    y4m = request.getfixturevalue(f"{source}_y4m")
    pictures, _ = read_y4m(y4m)
    stream = tmp_path / "binding.ivf"
    stream.write_bytes(vpx.run_libvpx(20, LAG, y4m))
    decoded = vpxdec_frames(stream)
    assert len(decoded) == len(pictures)
    for index, (raw, picture) in enumerate(zip(decoded, pictures, strict=True)):
        assert (raw.width, raw.height) == picture.size
        error = np.mean((np.frombuffer(raw.data, np.uint8).astype(np.float64)
                         - np.frombuffer(picture.to_i420(), np.uint8)) ** 2)
        psnr = 10 * np.log10(255**2 / max(error, 1e-9))
        assert psnr > 30, f"picture {index}: PSNR {psnr:.1f} dB, the input was not what was coded"


def test_planes_as_arrays_and_strided_views(odd_y4m: Path) -> None:
    """(y, u, v) tuples and non-contiguous views encode exactly like Images."""
    pictures, fps = read_y4m(odd_y4m)
    width, height = pictures[0].size
    expected = libvpx.encode_two_pass(pictures, width, height, fps, cq_level=30, lag_in_frames=LAG)
    tuples = [tuple(np.array(p) for p in picture.planes) for picture in pictures]
    assert libvpx.encode_two_pass(tuples, width, height, fps, cq_level=30,
                                  lag_in_frames=LAG) == expected
    padded = []
    for picture in pictures:  # rows inside a wider buffer, and a column-reversed copy's reverse
        planes = []
        for plane in picture.planes:
            wide = np.zeros((plane.shape[0], plane.shape[1] + 13), np.uint8)
            wide[:, 5 : 5 + plane.shape[1]] = plane
            planes.append(wide[:, 5 : 5 + plane.shape[1]])
        planes[1] = np.ascontiguousarray(planes[1][:, ::-1])[:, ::-1]
        padded.append(tuple(planes))
    assert libvpx.encode_two_pass(padded, width, height, fps, cq_level=30,
                                  lag_in_frames=LAG) == expected


def test_threads_encode_at_once_and_agree(odd_y4m: Path) -> None:
    """Encodes in several threads at once (libvpx runs without the GIL) each get their bytes."""
    pictures, fps = read_y4m(odd_y4m)
    width, height = pictures[0].size

    def run(cq: int) -> list[bytes]:
        return libvpx.encode_two_pass(pictures, width, height, fps, cq_level=cq,
                                      lag_in_frames=LAG)

    alone = {cq: run(cq) for cq in (10, 30, 50)}
    with ThreadPoolExecutor(3) as pool:
        together = dict(zip((10, 30, 50), pool.map(run, (10, 30, 50)), strict=True))
    assert together == alone


def test_versions() -> None:
    assert libvpx.version().startswith("v")
    assert libvpx.version() in libvpx.encoder_name()
    assert "VP8 Encoder" in libvpx.encoder_name()


# --------------------------------------------------------------------------- bad input


def _call(pictures, width=32, height=16, fps=(30, 1), cq_level=20, lag_in_frames=LAG):  # noqa: ANN001, ANN202
    return libvpx.encode_two_pass(pictures, width, height, fps, cq_level=cq_level,
                                  lag_in_frames=lag_in_frames)


GOOD = synthetic_pictures(3, 32, 16)
Y, U, V = (np.array(plane) for plane in GOOD[0].planes)


@pytest.mark.parametrize(
    ("case", "call", "fragment"),
    [
        ("no pictures", lambda: _call([]), "no pictures"),
        ("zero width", lambda: _call(GOOD, width=0), "width must be in 1..16383"),
        ("negative height", lambda: _call(GOOD, height=-16), "height must be in 1..16383"),
        ("absurd width", lambda: _call(GOOD, width=100_000), "width must be in 1..16383"),
        ("huge int", lambda: _call(GOOD, width=1 << 70), "width must be in 1..16383"),
        ("float size", lambda: _call(GOOD, width=32.0), "width must be an int"),
        ("bool size", lambda: _call(GOOD, height=True), "height must be an int"),
        ("size not the pictures'", lambda: _call(GOOD, width=34), "plane y of picture 0"),
        ("luma a row short", lambda: _call([(Y[:15], U, V)]), "plane y of picture 0"),
        ("chroma too small", lambda: _call([(Y, U[:, :-1], V)]), "plane u of picture 0"),
        ("chroma too large", lambda: _call([(Y, U, np.zeros((9, 16), np.uint8))]), "plane v"),
        ("wrong dtype", lambda: _call([(Y.astype(np.int16), U, V)]), "int16"),
        ("3-D plane", lambda: _call([(Y[..., None], U, V)]), "plane y"),
        ("two planes", lambda: _call([(Y, U)]), "2 planes, not 3"),
        ("not a picture", lambda: _call([42]), "neither an Image nor"),
        ("second picture bad", lambda: _call([GOOD[0], (Y, V, U[:-1])]), "picture 1"),
        ("zero fps", lambda: _call(GOOD, fps=(0, 1)), "fps numerator must be in"),
        ("fps not a pair", lambda: _call(GOOD, fps=30), "fps must be (numerator, denominator)"),
        ("cq level", lambda: _call(GOOD, cq_level=64), "cq level must be in 0..63"),
        ("lag", lambda: _call(GOOD, lag_in_frames=26), "lag in frames must be in 0..25"),
    ],
)
def test_bad_input_raises_libvpx_error(case: str, call, fragment: str) -> None:  # noqa: ANN001
    with pytest.raises(LibvpxError) as raised:
        call()
    assert fragment in str(raised.value), case
    assert isinstance(raised.value, ToolError)
    assert raised.value.args == (str(raised.value),)  # one message argument: it pickles


def test_libvpx_refusal_carries_its_detail() -> None:
    """What only libvpx checks (validate_config: a time base of at most 10^9) comes back with
    libvpx's own words."""
    with pytest.raises(LibvpxError, match=r"first pass: .*g_timebase\.den out of range"):
        _call(GOOD, fps=(1_500_000_000, 1))


# --------------------------------------------------------------------------- phase 1 with it


def test_phase1_prefers_the_binding_and_keys_jobs_by_its_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(vpx.PHASE1_ENV, raising=False)
    settings = vpx.EncodeSettings()
    expected = "libvpx" if libvpx.ZEROED_HEAP else "vpxenc"
    assert vpx.resolve_encoder(settings).encoder == expected
    assert libvpx.version() in vpx.encoder_version(vpx.EncodeSettings(encoder="libvpx"))
    monkeypatch.setenv(vpx.PHASE1_ENV, "vpxenc")
    assert vpx.resolve_encoder(settings).encoder == "vpxenc"
    if shutil.which(VPXENC):
        assert vpx.encoder_version(settings) == vpx.vpxenc_version(VPXENC)
        assert vpx.encoder_version(settings) != vpx.encoder_version(
            vpx.EncodeSettings(encoder="libvpx")
        )
    monkeypatch.setenv(vpx.PHASE1_ENV, "nonsense")
    with pytest.raises(ToolError, match="EXCAMERA_PHASE1"):
        vpx.resolve_encoder(settings)


def test_encode_needs_no_vpxenc_with_the_binding(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`excamera encode` with no vpxenc on PATH: phase 1 runs in process."""
    monkeypatch.setenv(vpx.PHASE1_ENV, "libvpx")
    source = write_y4m(tmp_path / "in.y4m", synthetic_pictures(8, 48, 32), (25, 1))
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools-here"))
    code = cli.main(["encode", str(source), "-o", str(tmp_path / "out.ivf"), "-n", "4",
                     "-x", "1", "--workers", "1"])
    _, err = capsys.readouterr()
    assert code == 0, err
    frames = read_ivf_frames((tmp_path / "out.ivf").read_bytes())
    assert sum(map(vpx.is_shown, frames)) == 8
    assert [i for i, f in enumerate(frames) if vpx.is_key_frame(f)][0] == 0
