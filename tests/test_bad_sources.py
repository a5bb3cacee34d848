"""Inputs that lie or are broken, as `excamera encode`, `excamera decode` and the split meet
them: each is refused in one line that names the file, without reading or allocating what a
corrupt field claims, and nothing corrupt is encoded as if whole. References: the conformance
vectors, and vpxdec where it has a verdict."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bad_media import PNG, noisy_clip, rawvideo, titled_video
from libvpx_oracle import join_ivf, read_ivf

from shared.codec.ivf import IvfReader
from shared.codec.limits import MAX_COMPRESSED_FRAME, MAX_STATE_BYTES
from shared.pipeline import stages
from shared.pipeline.errors import InputError
from shared.pipeline.sources import open_source
from shared.pipeline.store import LocalStore

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
VECTOR = "vp80-00-comprehensive-001.ivf"  # 176x144, 30 frames


def excamera(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shared.cli", *map(str, args)],
                          capture_output=True, text=True, env=ENV, cwd=REPO, timeout=timeout)


def refused(done: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 1 and one line of error (notes aside), holding every needle."""
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if ": note: " not in line]
    assert len(lines) == 1, done.stderr
    for needle in needles:
        assert needle in lines[0], done.stderr


@pytest.fixture
def frames(vectors_dir: Path) -> list[bytes]:
    return read_ivf(vectors_dir / VECTOR).frames[:8]


def sparse_ivf(path: Path, frame_size: int, total: int) -> Path:
    """An IVF file of `total` bytes, nearly all a hole, whose first frame claims `frame_size`."""
    with open(path, "wb") as file:
        file.write(struct.pack("<4sHH4sHHIII4s", b"DKIF", 0, 32, b"VP80", 64, 48, 30, 1, 1,
                               bytes(4)) + struct.pack("<IQ", frame_size, 0))
        file.truncate(total)
    return path


def test_a_huge_frame_size_is_refused_unread(tmp_path: Path) -> None:
    # 4 GiB claimed in an 8 GiB file: FFmpeg's demuxer would read it all (minutes), the
    # decoder's reader would hold it in memory.
    path = sparse_ivf(tmp_path / "huge.ivf", 0xFFFF_FFFF, 8 << 30)
    needle = f"frame 0 claims {0xFFFF_FFFF} bytes, more than any frame can have"
    began = time.monotonic()
    refused(excamera("decode", path, "-o", tmp_path / "out.yuv"), "huge.ivf", needle)
    refused(excamera("encode", path, "-o", tmp_path / "out.ivf"), "huge.ivf", needle)
    with pytest.raises(InputError, match=needle):  # what the splitter opens
        open_source(path, "s3://bucket/huge.ivf")
    assert time.monotonic() - began < 60
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.ivf"]


def test_a_frame_size_within_the_file_but_past_any_frame(tmp_path: Path) -> None:
    path = sparse_ivf(tmp_path / "big.ivf", MAX_COMPRESSED_FRAME + 1, MAX_COMPRESSED_FRAME + 64)
    with pytest.raises(Exception, match="more than any frame can have"), IvfReader(path) as r:
        r.read_frame()


@pytest.mark.parametrize("kind", ["sparse file", "/dev/zero"])
def test_a_state_is_read_no_further_than_a_state_can_be(tmp_path: Path, kind: str) -> None:
    vector = tmp_path / "in.ivf"
    vector.write_bytes(join_ivf([], 176, 144))
    if kind == "sparse file":
        state = tmp_path / "huge.state"
        with open(state, "wb") as file:
            file.truncate(16 << 30)
    else:
        state = Path("/dev/zero")
    probe = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:], "
             "capture_output=True, text=True); sys.stderr.write(done.stderr); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
             "sys.exit(done.returncode)")
    done = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "shared.cli",
                           "decode", str(vector), "--state-in", str(state), "-o",
                           str(tmp_path / "out.yuv")], capture_output=True, text=True, env=ENV,
                          cwd=REPO, timeout=120)
    refused(done, state.name, f"larger than any state can be ({MAX_STATE_BYTES} bytes)")
    peak_mib = int(done.stdout) / 1024
    # /dev/zero is read up to the limit once; a big file is refused by its size.
    assert peak_mib < (500 if kind == "/dev/zero" else 200), peak_mib


def test_a_corrupt_frame_is_refused_not_concealed(tmp_path: Path, frames: list[bytes]) -> None:
    """FFmpeg's frame-threaded decoding conceals a frame that does not decode and says
    nothing; vpxdec calls the stream corrupt, and so must the split, at the right frame."""
    damaged = list(frames)
    damaged[3] = damaged[3][:3] + b"\xff" * (len(damaged[3]) - 3)
    path = tmp_path / "corrupt.ivf"
    path.write_bytes(join_ivf(damaged, 176, 144))
    vpxdec = subprocess.run(["vpxdec", "--i420", "-o", os.devnull, str(path)],
                            capture_output=True, text=True, timeout=60)
    assert vpxdec.returncode != 0 and "corrupt" in vpxdec.stderr, vpxdec.stderr
    refused(excamera("encode", path, "-o", tmp_path / "out.ivf"), "corrupt.ivf",
            "frame 3: cannot decode")
    assert not (tmp_path / "out.ivf").exists()


def test_the_pictures_size_is_the_decoded_one_not_the_headers(
        tmp_path: Path, frames: list[bytes]) -> None:
    """An IVF header that claims 64x48 for 176x144 frames: the plan, the size limit and the
    output follow the frames (vpxdec's view), not the header."""
    path = tmp_path / "lying.ivf"
    path.write_bytes(join_ivf(frames, 64, 48))
    with open_source(path) as source:
        assert (source.width, source.height) == (176, 144)
        assert sum(1 for _ in source.images) == len(frames)
    output = tmp_path / "out.ivf"
    done = excamera("encode", path, "-o", output, "-n", "4", "-x", "2")
    assert done.returncode == 0, done.stderr
    with IvfReader(output) as reader:
        assert (reader.header.width, reader.header.height) == (176, 144)


def test_a_pixel_format_that_cannot_be_converted_is_the_inputs_fault(tmp_path: Path) -> None:
    path = rawvideo(tmp_path / "rgb4.nut", "rgb4")
    refused(excamera("encode", path, "-o", tmp_path / "out.ivf"), "rgb4.nut",
            "frame 0: cannot convert rgb4 to 8-bit 4:2:0")
    with open_source(path, "s3://bucket/rgb4.nut") as source, pytest.raises(
            InputError, match="s3://bucket/rgb4.nut: frame 0: cannot convert"):
        list(source.images)  # an InputError fails the job; an OSError would be retried


def test_a_title_that_is_not_utf8_does_not_make_the_video_unreadable(tmp_path: Path) -> None:
    path = titled_video(tmp_path / "titled.mkv")
    with open_source(path) as source:
        assert sum(1 for _ in source.images) == 3


@pytest.mark.parametrize("container_format", ["matroska", "webm"])
def test_a_file_cut_between_frames_is_refused(tmp_path: Path, container_format: str) -> None:
    """Matroska and WebM cut between two frames (an interrupted copy) demux without an error
    or a packet marked corrupt: the frames' end is held against the length the header
    states, well past a last frame's duration."""
    path = noisy_clip(tmp_path / "clip", container_format, 90)  # 3 s
    with open_source(path) as source:
        assert sum(1 for _ in source.images) == 90  # whole, it passes
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    refused(excamera("encode", path, "-o", tmp_path / "out.ivf"), "clip",
            "but the file says the video lasts until 3.00 s: is the file cut short?")


def test_a_still_image_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "still.mp4"  # whatever its name says
    path.write_bytes(PNG)
    refused(excamera("encode", path, "-o", tmp_path / "out.ivf"), "still.mp4",
            "a still image (png), not a video")


def test_concatenated_pictures_are_a_video(tmp_path: Path) -> None:
    # FFmpeg's image pipes read one picture or more: three PPMs in a row are three frames.
    path = tmp_path / "frames.ppm"
    path.write_bytes((b"P6\n16 16\n255\n" + bytes(range(256)) * 3) * 3)
    with open_source(path) as source:
        assert sum(1 for _ in source.images) == 3


@pytest.mark.parametrize("tag", ["F1:1000000000", "F1000000000:1", "F1001:1"])
def test_a_y4m_rate_libvpx_takes_but_cannot_use(tmp_path: Path, tag: str) -> None:
    # Within libvpx's range, but its rate control ruins it (about 12 dB instead of 36).
    path = tmp_path / "rate.y4m"
    path.write_bytes(f"YUV4MPEG2 W16 H16 {tag}\nFRAME\n".encode() + bytes(384))
    refused(excamera("encode", path, "-o", tmp_path / "out.ivf"), "rate.y4m", tag,
            "outside 1/1000 to 1000 frames a second")


def test_a_job_takes_at_most_max_frames(tmp_path: Path, frames: list[bytes],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # A 2x2 picture is 6 bytes: an upload of a few GB would hold a billion frames.
    path = tmp_path / "many.ivf"
    path.write_bytes(join_ivf(frames, 176, 144))
    monkeypatch.setattr(stages, "MAX_FRAMES", len(frames) - 1)
    with pytest.raises(InputError, match=f"more than {len(frames) - 1} frames, the most one "
                                         "job takes"):
        stages.split(LocalStore(tmp_path / "store"), "j", path, 3, 2)
    monkeypatch.setattr(stages, "MAX_FRAMES", len(frames))
    plan = stages.split(LocalStore(tmp_path / "store"), "k", path, 3, 2)
    assert sum(plan.chunk_frames) == len(frames)
