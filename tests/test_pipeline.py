"""`excamera encode` and the pipeline under it (`shared.pipeline`).

Inputs are kept tiny (64x48 synthetic clips, carphone at 176x144, a few dozen frames) so the
whole file runs in seconds. Every output is checked against libvpx: it decodes without error,
shows exactly one frame per input frame, has key frames exactly at the first frame of each group
of n*x frames, and our decoder's pictures equal libvpx's.

Tests of ExCamera[n,x] with x > 1 need the codec's `rebase_chunk`; they skip while it does not
import, except under CI=true, where they run (and fail until it exists).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from decoder_support import first_difference, require_decoder, require_tools
from libvpx_oracle import peek_header, pyav_frames, read_ivf, vpxdec_frames

from shared import cli
from shared.codec.image import chroma_size
from shared.pipeline import runner, stages
from shared.pipeline.errors import PipelineError
from shared.pipeline.messages import MessageError, parse_job_request
from shared.pipeline.mux import read_ivf_frames
from shared.pipeline.progress import Progress
from shared.pipeline.store import LocalStore, check_key, open_store
from shared.pipeline.vpx import PHASE1_ENV, EncodeSettings, find_vpxenc, is_key_frame, is_shown

codec = require_decoder()
require_tools()


# --------------------------------------------------------------------------- inputs


def _pictures(count: int, width: int, height: int, seed: int = 0):
    """Raw I420 pictures: a pattern panning diagonally, a bright square moving across it."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (2 * height + 64, 2 * width + 64)).astype(np.float32)
    texture = (texture + np.roll(texture, 1, 0) + np.roll(texture, 1, 1)) / 3  # less noisy
    cw, ch = chroma_size(width, height)
    for i in range(count):
        luma = texture[2 * i : 2 * i + height, 3 * i : 3 * i + width].copy()
        x0 = (5 * i) % max(1, width - 12)
        luma[height // 3 : height // 3 + 12, x0 : x0 + 12] = 235
        u = np.full((ch, cw), 110 + i % 20, np.float32)
        v = np.full((ch, cw), 140 - i % 15, np.float32)
        yield b"".join(np.clip(p, 0, 255).astype(np.uint8).tobytes() for p in (luma, u, v))


def make_y4m(
    path: Path, count: int, width: int = 64, height: int = 48, colorspace: str = "420jpeg",
    interlace: str = "p",
) -> Path:
    with open(path, "wb") as file:
        file.write(f"YUV4MPEG2 W{width} H{height} F25:1 I{interlace} A0:0 C{colorspace}\n"
                   .encode())
        for picture in _pictures(count, width, height):
            file.write(b"FRAME\n" + picture)
    return path


def make_mkv_with_audio(path: Path, count: int, width: int = 64, height: int = 48) -> Path:
    """FFV1 4:4:4 video (lossless; converted by split) plus a PCM audio track."""
    import av

    with av.open(str(path), "w", format="matroska") as container:
        video = container.add_stream("ffv1", rate=25)
        video.width, video.height, video.pix_fmt = width, height, "yuv444p"
        audio = container.add_stream("pcm_s16le", rate=8000)
        audio.layout = "mono"
        for index, picture in enumerate(_pictures(count, width, height)):
            luma = np.frombuffer(picture[: width * height], np.uint8).reshape(height, width)
            frame = av.VideoFrame.from_ndarray(np.repeat(luma[None], 3, 0), format="yuv444p")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        sound = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.int16), "s16", "mono")
        sound.sample_rate, sound.pts = 8000, 0
        container.mux(audio.encode(sound))
        container.mux(audio.encode(None))
    return path


@pytest.fixture(scope="session")
def carphone_y4m(video_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 30 frames of carphone (176x144) as Y4M."""
    import av

    path = tmp_path_factory.mktemp("carphone") / "carphone30.y4m"
    clip = video_dir / "clips" / "carphone_pristine.mp4"
    with av.open(str(clip)) as container, open(path, "wb") as file:
        file.write(b"YUV4MPEG2 W176 H144 F30000:1001 Ip A0:0 C420jpeg\n")
        for index, frame in enumerate(container.decode(video=0)):
            if index == 30:
                break
            file.write(b"FRAME\n" + frame.to_ndarray(format="yuv420p").tobytes())
    return path


# --------------------------------------------------------------------------- running the CLI


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def encode(capsys: pytest.CaptureFixture[str], *args: str | Path) -> Result:
    code = cli.main(["encode", *map(str, args)])
    out, err = capsys.readouterr()
    return Result(code, out, err)


def encode_json(capsys: pytest.CaptureFixture[str], *args: str | Path) -> dict[str, Any]:
    result = encode(capsys, *args, "--json")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.code == 1, result
    assert result.stderr.startswith("excamera encode: "), result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def no_stray_files(directory: Path, allowed: set[str]) -> None:
    assert {p.name for p in directory.iterdir()} <= allowed, list(directory.iterdir())


# --------------------------------------------------------------------------- checking outputs


def stream_frames(path: Path) -> list[bytes]:
    """The output's VP8 frames in decode order: from IVF, or demuxed from WebM by PyAV."""
    if path.suffix == ".ivf":
        return read_ivf(path).frames
    import av

    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "vp8"
        return [bytes(p) for p in container.demux(video=0) if p.size]


def check_output(path: Path, frames: int, group_frames: int) -> list[bytes]:
    """What every output must satisfy; `group_frames` = n * x, frames per key frame."""
    packets = stream_frames(path)
    shown_before = 0
    key_frames_at = []
    for packet in packets:
        if is_key_frame(packet):
            assert is_shown(packet)
            key_frames_at.append(shown_before)
        shown_before += is_shown(packet)
    assert shown_before == frames
    assert key_frames_at == list(range(0, frames, group_frames))

    expected = vpxdec_frames(path) if path.suffix == ".ivf" else pyav_frames(packets)
    assert len(expected) == frames
    ours = [image for image in _decode_all(packets) if image is not None]
    assert first_difference(expected, ours) is None, first_difference(expected, ours)
    return packets


def _decode_all(packets: list[bytes]) -> list[Any]:
    state = codec.DecoderState.initial()
    images = []
    for packet in packets:
        state, image = codec.decode(state, packet)
        images.append(image)
    return images


def check_summary(summary: dict[str, Any], frames: int, n: int, x: int) -> None:
    assert summary["frames"] == frames
    assert summary["chunks"] == -(-frames // n)
    assert summary["groups"] == -(-summary["chunks"] // x)
    assert (summary["frames_per_chunk"], summary["chunks_per_group"]) == (n, x)
    assert summary["payload_bytes"] > 0 and summary["bytes"] > summary["payload_bytes"]
    assert summary["bitrate_kbps"] > 0
    assert 0 < summary["ssim"] <= 1 and summary["ssim_db"] > 5 and summary["psnr_db"] > 20
    assert "libvpx encode" in summary["stages"] and "join" in summary["stages"]


# --------------------------------------------------------------------------- ExCamera[n,1]


@pytest.mark.parametrize(("frames", "n"), [(13, 4), (12, 4), (5, 6), (1, 6)])
def test_independent_chunks_ivf(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, frames: int, n: int
) -> None:
    """[n,1]: any length, a multiple of n or not, down to one chunk and to one frame."""
    source = make_y4m(tmp_path / "in.y4m", frames)
    output = tmp_path / "out.ivf"
    summary = encode_json(capsys, source, "-o", output, "-n", n, "-x", 1, "--workers", 2)
    check_summary(summary, frames, n, 1)
    check_output(output, frames, n)
    assert summary["bytes"] == output.stat().st_size
    no_stray_files(tmp_path, {"in.y4m", "out.ivf"})


def test_webm_output(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import av

    source = make_y4m(tmp_path / "in.y4m", 10)
    output = tmp_path / "out.webm"
    summary = encode_json(capsys, source, "-o", output, "-n", 3, "-x", 1)
    check_summary(summary, 10, 3, 1)
    check_output(output, 10, 3)
    with av.open(str(output)) as container:
        assert container.format.name.startswith("matroska")  # WebM is read as matroska,webm
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (64, 48)
        times = [p.pts for p in container.demux(stream) if p.size]
        assert container.duration == pytest.approx(10 / 25 * 1_000_000, rel=0.01)
    assert times == sorted(set(times))  # strictly increasing: one block per frame


def test_carphone_mp4(capsys: pytest.CaptureFixture[str], video_dir: Path, tmp_path: Path) -> None:
    """Real video through PyAV: all 120 frames of carphone, ExCamera[6,1]."""
    source = video_dir / "clips" / "carphone_pristine.mp4"
    output = tmp_path / "carphone.ivf"
    summary = encode_json(capsys, source, "-o", output, "-n", 6, "-x", 1)
    check_summary(summary, 120, 6, 1)
    assert summary["fps"] == pytest.approx(30000 / 1001)
    assert (summary["width"], summary["height"]) == (176, 144)
    check_output(output, 120, 6)


def test_conversion_and_audio_notices(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    source = make_mkv_with_audio(tmp_path / "in.mkv", 7)
    output = tmp_path / "out.ivf"
    result = encode(capsys, source, "-o", output, "-n", 3, "-x", 1)
    assert result.code == 0, result.stderr
    assert "audio ignored" in result.stderr and "yuv444p" in result.stderr
    assert "wrote" in result.stdout and "7 frames" in result.stdout
    check_output(output, 7, 3)


def _make_timed_mkv(path: Path, times_ms: list[int], width: int = 64, height: int = 48) -> Path:
    """FFV1 video whose frames are shown at `times_ms` (a millisecond time base)."""
    import av

    with av.open(str(path), "w", format="matroska") as container:
        video = container.add_stream("ffv1", rate=25)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.time_base = Fraction(1, 1000)
        for picture, shown in zip(_pictures(len(times_ms), width, height), times_ms, strict=True):
            frame = av.VideoFrame(width, height, "yuv420p")
            offset = 0
            for plane in frame.planes:
                size = plane.width * plane.height
                rows = np.frombuffer(picture[offset:offset + size], np.uint8)
                plane.update(np.pad(rows.reshape(plane.height, plane.width),
                                    ((0, 0), (0, plane.line_size - plane.width))).tobytes())
                offset += size
            frame.pts, frame.time_base = shown, Fraction(1, 1000)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
    return path


@pytest.mark.parametrize(("tag", "order"), [("p", None), ("?", None), ("t", "top field first"),
                                          ("b", "bottom field first"), ("m", "mixed fields")])
def test_interlaced_notice(capsys: pytest.CaptureFixture[str], tmp_path: Path, tag: str,
                           order: str | None) -> None:
    source = make_y4m(tmp_path / "in.y4m", 4, interlace=tag)
    result = encode(capsys, source, "-o", tmp_path / "out.ivf", "-n", 4, "-x", 1)
    assert result.code == 0, result.stderr
    if order is None:
        assert "interlaced" not in result.stderr, result.stderr
    else:
        assert f"interlaced ({order}), encoded as progressive frames" in result.stderr


@pytest.mark.parametrize(("times", "noted"), [
    ([40 * i for i in range(8)], False),
    ([0, 40, 80, 200, 240, 280, 500, 540], True),  # two pauses: variable frame rate
])
def test_variable_frame_rate_notice(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                    times: list[int], noted: bool) -> None:
    source = _make_timed_mkv(tmp_path / "in.mkv", times)
    result = encode(capsys, source, "-o", tmp_path / "out.ivf", "-n", 4, "-x", 1)
    assert result.code == 0, result.stderr
    assert ("variable frame rate" in result.stderr) is noted, result.stderr
    if noted:
        assert "frame 3 is shown at 0.200 s, not 0.120 s" in result.stderr, result.stderr
        assert "shows every frame for 0.04 s, at 25 fps" in result.stderr, result.stderr
    check_output(tmp_path / "out.ivf", 8, 4)


def test_ssim_target_picks_levels_per_chunk(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source = make_y4m(tmp_path / "in.y4m", 8)
    target = 15.0
    summary = encode_json(capsys, source, "-o", tmp_path / "o.ivf", "-n", 4, "-x", 1, "--ssim", 15)
    # With x = 1 the output is libvpx's chunks, each at or above the target.
    assert summary["ssim_db"] >= target
    assert summary["quality"] == "ssim>=15dB"
    low, high = summary["cq_levels"]
    assert 0 <= low <= high <= 63
    stricter = encode_json(
        capsys, source, "-o", tmp_path / "p.ivf", "-n", 4, "-x", 1, "--ssim", 0.999
    )
    assert stricter["cq_levels"][1] <= low and stricter["ssim_db"] >= 30


def test_keep_work_resumes_without_redoing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source = make_y4m(tmp_path / "in.y4m", 9)
    work = tmp_path / "work"
    first = encode_json(
        capsys, source, "-o", tmp_path / "a.ivf", "-n", 3, "-x", 1, "--keep-work", work
    )
    encoded = sorted(work.glob("jobs/*/chunks/*/vpx.ivf"))
    assert len(encoded) == 3
    stamps = [p.stat().st_mtime_ns for p in encoded]
    second = encode_json(
        capsys, source, "-o", tmp_path / "b.ivf", "-n", 3, "-x", 1, "--keep-work", work
    )
    assert [p.stat().st_mtime_ns for p in encoded] == stamps
    assert first["job"] == second["job"]
    assert (tmp_path / "a.ivf").read_bytes() == (tmp_path / "b.ivf").read_bytes()


def test_a_damaged_kept_file_is_one_line(capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:
    """A file under --keep-work emptied since (a full disk, a hand): the rerun says so in one
    line and writes nothing (it was a 60-line traceback)."""
    source = make_y4m(tmp_path / "in.y4m", 8)
    work = tmp_path / "work"
    first = encode(capsys, source, "-o", tmp_path / "a.ivf", "-n", 2, "-x", 2, "--workers", 1,
                   "--keep-work", work)
    assert first.code == 0, first.stderr
    (final,) = work.glob("jobs/*/chunks/00001/final.ivf")
    final.write_bytes(b"")
    result = encode(capsys, source, "-o", tmp_path / "b.ivf", "-n", 2, "-x", 2, "--workers", 1,
                    "--keep-work", work)
    assert_one_line_error(result, "not an IVF file", f"a file under --keep-work {work} is "
                          "damaged: remove its jobs/ directory to start afresh")
    assert not (tmp_path / "b.ivf").exists()


def test_human_summary(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    source = make_y4m(tmp_path / "in.y4m", 6)
    result = encode(
        capsys, source, "-o", tmp_path / "o.ivf", "-n", 3, "-x", 1, "--cq-level", 30,
        "--workers", 2,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert result.stderr == ""  # no progress bars when stderr is not a terminal
    assert "6 frames, 64x48 at 25 fps, ExCamera[3,1]" in result.stdout
    assert "cq 30" in result.stdout and "kbit/s" in result.stdout and "SSIM" in result.stdout
    assert "with 2 workers; work per stage (s, overlapping): split " in result.stdout


# --------------------------------------------------------------------------- failures


def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, str]]:
    good = make_y4m(tmp / "good.y4m", 4)
    truncated = tmp / "truncated.y4m"
    truncated.write_bytes(good.read_bytes()[:-100])
    text = tmp / "notes.txt"
    text.write_text("not a video\n" * 50)
    random = tmp / "random.bin"
    random.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    empty = make_y4m(tmp / "empty.y4m", 0)
    # FFmpeg would open what these name: the video beside it, or (recursively) itself.
    concat = tmp / "list.ffconcat"
    concat.write_text("ffconcat version 1.0\nfile good.y4m\n")
    recursive = tmp / "self.ffconcat"
    recursive.write_text("ffconcat version 1.0\nfile self.ffconcat\n")
    return {
        "text file": (text, "not a video"),
        "random bytes": (random, "not a video"),
        "truncated Y4M": (truncated, "frame 3 is truncated"),
        "4:4:4 Y4M": (make_y4m(tmp / "c444.y4m", 2, colorspace="444"), "4:2:0"),
        "zero frames": (empty, "no video frames"),
        "missing": (tmp / "missing.y4m", "No such file"),
        "ffconcat script": (concat, "ffconcat scripts or playlists, are not accepted"),
        "recursive ffconcat": (recursive, "ffconcat scripts or playlists, are not accepted"),
        # Past what VP8 or this codec codes: refused at once, not by the check after libvpx
        # has encoded it all. (The frames would be 53 MB: the header is what is refused.)
        "too large for VP8": (_y4m_header(tmp / "big.y4m", 16383, 2180),
                              "16383x2180 is too large for VP8 here"),
        "too wide for VP8": (_y4m_header(tmp / "wide.y4m", 16384, 16),
                             "at most 16383 pixels a side"),
    }


def _y4m_header(path: Path, width: int, height: int) -> Path:
    path.write_bytes(f"YUV4MPEG2 W{width} H{height} F25:1 C420jpeg\nFRAME\n".encode()
                     + bytes(64))
    return path


@pytest.mark.parametrize(
    "case", ["text file", "random bytes", "truncated Y4M", "4:4:4 Y4M", "zero frames", "missing",
             "ffconcat script", "recursive ffconcat", "too large for VP8", "too wide for VP8"]
)
def test_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str) -> None:
    source, message = _bad_inputs(tmp_path)[case]
    files_before = {p.name for p in tmp_path.iterdir()}
    result = encode(capsys, source, "-o", tmp_path / "out.ivf", "-x", 1)
    assert_one_line_error(result, source.name, message)
    no_stray_files(tmp_path, files_before)


def test_truncated_container(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # An IVF cut inside a frame (an interrupted download) is refused at that frame, like a
    # truncated Y4M, instead of being encoded silently up to it.
    first = encode(capsys, make_y4m(tmp_path / "in.y4m", 8), "-o", tmp_path / "whole.ivf",
                   "-x", 1)
    assert first.code == 0, first.stderr
    data = (tmp_path / "whole.ivf").read_bytes()
    offset, frames = 32, []  # IVF: a 32-byte header, then 12-byte frame headers
    while offset < len(data):
        frames.append(offset)
        offset += 12 + int.from_bytes(data[offset:offset + 4], "little")
    assert len(frames) == 8
    cut = tmp_path / "cut.ivf"
    cut.write_bytes(data[:frames[5] + 12 + 3])  # three bytes into frame 5
    files_before = {p.name for p in tmp_path.iterdir()}
    result = encode(capsys, cut, "-o", tmp_path / "out.ivf", "-x", 1)
    # (IVF frame sizes are checked before FFmpeg reads the file; another container's cut is
    # refused by FFmpeg's mark, "truncated or corrupt".)
    assert_one_line_error(result, "cut.ivf", "frame 5 is truncated")
    no_stray_files(tmp_path, files_before)


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("missing-dir/out.ivf", "cannot write there"),
        ("out.mp4", "must end in .ivf or .webm"),
        (".", "must end in .ivf or .webm"),
        (".ivf", "the output needs a name before its suffix, e.g. out.ivf"),
        ("adir.ivf", "is a directory"),
    ],
)
def test_bad_output(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, output: str, message: str
) -> None:
    source = make_y4m(tmp_path / "in.y4m", 3)
    (tmp_path / "adir.ivf").mkdir()
    result = encode(capsys, source, "-o", tmp_path / output, "-x", 1)
    assert_one_line_error(result, message)
    no_stray_files(tmp_path, {"in.y4m", "adir.ivf"})


@pytest.mark.parametrize(("options", "message"), [
    (["--keep-work", "in.y4m"], "in.y4m: "),  # it is the input
    (["--keep-work", "afile"], "afile: not a directory (--keep-work names one"),
    (["--keep-work", ""], "--keep-work '': not a directory"),
    (["--lambda-memory", "1024"], "--lambda-memory only goes with --estimate-cost"),
])
def test_options_that_cannot_be_followed(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch, options: list[str],
                                         message: str) -> None:
    """Refused before any work, in one line (a file as --keep-work was 'File exists', '' was
    the current directory, and --lambda-memory alone was ignored)."""
    monkeypatch.chdir(tmp_path)
    source = make_y4m(tmp_path / "in.y4m", 3)
    (tmp_path / "afile").write_bytes(b"x")
    result = encode(capsys, source, "-o", tmp_path / "o.ivf", *options)
    assert_one_line_error(result, message)
    no_stray_files(tmp_path, {"in.y4m", "afile"})


@pytest.mark.parametrize("value", ["0", "127", "10241", "x"])
def test_lambda_memory_is_what_lambda_allows(capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path, value: str) -> None:
    with pytest.raises(SystemExit) as exited:
        encode(capsys, make_y4m(tmp_path / "in.y4m", 3), "-o", tmp_path / "o.ivf",
               "--estimate-cost", "--lambda-memory", value)
    assert exited.value.code == 2
    assert "--lambda-memory" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "9", "two", "-1"])
def test_bad_chain_threads(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    value: str,
) -> None:
    """A bad EXCAMERA_CHAIN_THREADS is refused before any work, in one line."""
    source = make_y4m(tmp_path / "in.y4m", 3)
    monkeypatch.setenv(stages.CHAIN_THREADS_ENV, value)
    result = encode(capsys, source, "-o", tmp_path / "o.ivf", "-n", 1)
    assert_one_line_error(result, "EXCAMERA_CHAIN_THREADS", "from 1 to 8")
    no_stray_files(tmp_path, {"in.y4m"})


def test_rebaser_service_refuses_bad_chain_threads(tmp_path: Path) -> None:
    """The rebaser service reads EXCAMERA_CHAIN_THREADS for every link: a bad value stops it
    at start-up, in one line, before it reaches the broker."""
    completed = subprocess.run(
        [sys.executable, "-m", "shared.cli", "service", "rebaser"],
        env={**os.environ, stages.CHAIN_THREADS_ENV: "zero",
             "EXCAMERA_BROKER": "amqp://guest:guest@127.0.0.1:1//",
             "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert completed.returncode != 0
    assert completed.stderr.strip() == (
        "excamera service: EXCAMERA_CHAIN_THREADS='zero': give a whole number of threads "
        "from 1 to 8"), completed.stderr


def test_chain_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(stages.CHAIN_THREADS_ENV, " 3 ")
    assert stages.chain_threads() == 3
    monkeypatch.delenv(stages.CHAIN_THREADS_ENV)
    assert stages.chain_threads() == 1


def test_unusable_work_dir(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    source = make_y4m(tmp_path / "in.y4m", 3)
    (tmp_path / "afile").write_text("")
    result = encode(
        capsys, source, "-o", tmp_path / "o.ivf", "-x", 1, "--keep-work", tmp_path / "afile/w"
    )
    assert_one_line_error(result, "cannot keep work there")
    no_stray_files(tmp_path, {"in.y4m", "afile"})


def test_vpxenc_missing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_y4m(tmp_path / "in.y4m", 3)
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools-here"))
    monkeypatch.setenv(PHASE1_ENV, "vpxenc")  # not the libvpx binding, which needs no tool
    result = encode(capsys, source, "-o", tmp_path / "out.ivf", "-x", 1)
    assert_one_line_error(result, "vpxenc not found", "vpx-tools")
    no_stray_files(tmp_path, {"in.y4m"})


def test_vpxenc_that_fails(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its last line is the reason; the temporary file it was given is not named.
    tools = tmp_path / "bin"
    tools.mkdir()
    fake = tools / "vpxenc"
    fake.write_text("#!/bin/sh\n"
                    "if [ \"$1\" = --help ]; then echo 'vp8 - WebM Project VP8 Encoder v9'; "
                    "exit 0; fi\n"
                    "echo 'Failed to initialize encoder: Invalid parameter' >&2\nexit 1\n")
    fake.chmod(0o755)
    source = make_y4m(tmp_path / "in.y4m", 3)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv(PHASE1_ENV, "vpxenc")
    result = encode(capsys, source, "-o", tmp_path / "out.ivf", "-x", 1)
    assert_one_line_error(result, "vpxenc failed to encode a chunk at cq ",
                          ": Failed to initialize encoder: Invalid parameter")
    assert ".y4m" not in result.stderr.replace(str(source), "")
    no_stray_files(tmp_path, {"in.y4m", "bin"})


@pytest.mark.parametrize("stage", ["split", "encode:1", "rebase", "measure", "join"])
def test_worker_that_dies(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stage: str,
) -> None:
    """A worker process exiting abruptly mid-stage fails the command cleanly, leaving no output
    (not even after join has written the stream, which is renamed into place last)."""
    source = make_y4m(tmp_path / "in.y4m", 7)
    monkeypatch.setenv(runner.DIE_ENV, stage)
    result = encode(capsys, source, "-o", tmp_path / "out.webm", "-n", 3, "-x", 1)
    assert_one_line_error(result, "worker process died", "no output was written")
    no_stray_files(tmp_path, {"in.y4m"})


def test_subprocess_exit_status_and_no_traceback(tmp_path: Path) -> None:
    """The installed-command path: a real process, its exit status and stderr."""
    source = make_y4m(tmp_path / "in.y4m", 3, colorspace="444")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    completed = subprocess.run(
        [sys.executable, "-m", "shared.cli", "encode", str(source), "-o", str(tmp_path / "o.ivf")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert completed.returncode == 1
    assert completed.stderr.count("\n") == 1 and "Traceback" not in completed.stderr


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for args in (
        ["-n", "0"],
        ["-x", "-1"],
        ["--cq-level", "64"],
        ["--ssim", "0"],
        ["--workers", "0"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["encode", "in.y4m", "-o", str(tmp_path / "o.ivf"), *args])
        assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        cli.main(["encode", "in.y4m", "-o", "o.ivf", "--cq-level", "3", "--ssim", "15"])
    capsys.readouterr()


def test_ssim_target_parsing() -> None:
    assert cli.ssim_target("16") == 16.0
    assert cli.ssim_target("0.99") == pytest.approx(20.0)
    # The CLI and a job request spell a target alike, so both run the same encode.
    assert cli.ssim_target("0.98") == parse_job_request(
        {"input": "file:///a.y4m", "ssim": 0.98}).ssim == 16.9897
    for text, reason in [("1", "ambiguous"), ("0", "not an SSIM target"), ("nan", "not an"),
                         ("1e-9", "rounds to 0 dB"), ("1e-300", "rounds to 0 dB"),
                         ("101", "at most 100 dB"), ("0.9999999999999", "0.9999999999999 is"),
                         ("x", "expected SSIM in dB")]:
        with pytest.raises(argparse.ArgumentTypeError, match=reason):
            cli.ssim_target(text)
        if text != "x":
            with pytest.raises(MessageError, match="ssim"):
                parse_job_request({"input": "file:///a.y4m", "ssim": float(text)})
    # The published schema (the OpenAPI document's) says so too, so a client that validates
    # against it is not surprised by a 400; and the reason is the command line's.
    import jsonschema

    from shared.pipeline.messages import JOB_REQUEST_SCHEMA

    validator = jsonschema.Draft202012Validator(JOB_REQUEST_SCHEMA)
    assert not validator.is_valid({"input": "file:///a.y4m", "ssim": 1})
    assert validator.is_valid({"input": "file:///a.y4m", "ssim": 0.999})
    with pytest.raises(MessageError, match="ssim: 1 is ambiguous"):
        parse_job_request({"input": "file:///a.y4m", "ssim": 1})


# --------------------------------------------------------------------------- the store


def test_local_store_round_trip(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    key = "jobs/j1/chunks/00003/source.y4m"
    assert not store.exists(key)
    with pytest.raises(KeyError):
        store.get(key)
    store.put(key, b"one")
    store.put(key, b"two")  # replaced atomically
    assert store.get(key) == b"two" and store.exists(key)
    assert store.path_for(key) == (tmp_path / "root" / key).resolve()
    store.copy(key, "jobs/j1/copy")
    assert store.get("jobs/j1/copy") == b"two"
    with store.local_file(key) as path:
        assert path.read_bytes() == b"two"
    leftovers = [p for p in (tmp_path / "root").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    assert isinstance(open_store(f"file://{tmp_path}/other"), LocalStore)
    from shared.pipeline.s3store import S3Store

    assert isinstance(open_store("s3://bucket/prefix"), S3Store)  # tests/test_aws.py: on moto
    for bad in ("ftp://host/x", "file://host/x"):
        with pytest.raises(ValueError):
            open_store(bad)


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", "a/./b", "sp ace", "a\\b", "é"])
def test_store_refuses_bad_keys(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError):
        check_key(key)
    with pytest.raises(ValueError):
        LocalStore(tmp_path).put(key, b"")


# --------------------------------------------------------------------------- stage plumbing


def test_stages_skip_work_whose_output_exists(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "work")
    source = make_y4m(tmp_path / "in.y4m", 7)
    plan = stages.split(store, "job", source, 3, chunks_per_group=2)
    assert plan.chunk_frames == (3, 3, 1) and plan.group_count == 2
    assert [plan.has_successor(i) for i in range(3)] == [True, False, False]
    assert stages.split(store, "job", tmp_path / "ignored.y4m", 3) == plan  # plan exists
    settings = EncodeSettings(vpxenc=find_vpxenc())
    first = stages.encode_chunk_vpx(store, "job", 0, settings)
    ivf = store.path_for(stages.chunk_key("job", 0, "vpx.ivf"))
    stamp = ivf.stat().st_mtime_ns
    assert stages.encode_chunk_vpx(store, "job", 0, settings) == first
    assert ivf.stat().st_mtime_ns == stamp
    stages.decode_exit_state(store, "job", 0)
    state = codec.DecoderState.from_bytes(store.get(stages.chunk_key("job", 0, "vpx.state")))
    assert state == _decode_state(read_ivf(ivf).frames)


def _decode_state(frames: list[bytes]) -> Any:
    state = codec.DecoderState.initial()
    for frame in frames:
        state, _ = codec.decode(state, frame)
    return state


def test_rebase_stages_pass_the_right_states(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dependency graph and stages 4 and 5 with a stand-in for the codec's rebase steps
    (identity on the frames), run on threads so the stand-in is seen: which state, frames and
    original state each call gets, and which outputs exist afterwards."""
    store = LocalStore(tmp_path / "work")
    source = make_y4m(tmp_path / "in.y4m", 10)
    plan = stages.split(store, "job", source, 2, chunks_per_group=3)  # groups [0 1 2] [3 4]
    calls: list[tuple[int, Any, Any]] = []

    def fake_parse(frames: list[bytes], original_state: Any) -> list[tuple[bytes, Any]]:
        return [(frame, original_state) for frame in frames]

    def fake_rebase(incoming: Any, parsed: list[tuple[bytes, Any]], sources: list,
                    **options: bool):
        frames = [frame for frame, _ in parsed]
        assert len(sources) == sum(map(is_shown, frames))
        calls.append((len(calls), incoming, parsed[0][1]))
        return frames, _decode_state_from(incoming, frames)

    fake = stages.Rebaser(fake_parse, fake_rebase, list)
    monkeypatch.setattr(stages, "load_rebase", lambda: fake)
    graph = runner.task_graph(store, plan, EncodeSettings(vpxenc=find_vpxenc()), tmp_path / "o.ivf")
    graph = {
        task_id: task for task_id, task in graph.items() if task_id[0] not in ("measure", "join")
    }
    with ThreadPoolExecutor(2) as pool:
        runner.Scheduler(pool, 2, Progress(False), None).run(graph)

    def state(index: int, name: str) -> Any:
        return codec.DecoderState.from_bytes(store.get(stages.chunk_key("job", index, name)))

    def exists(index: int, name: str) -> bool:
        return store.exists(stages.chunk_key("job", index, name))

    # Stage 4 for chunks 1, 2, 4 (against libvpx states); stage 5 only for chunk 2.
    firsts = [(incoming, original) for _, incoming, original in calls if original is None]
    serials = [(incoming, original) for _, incoming, original in calls if original is not None]
    assert len(firsts) == 3 and len(serials) == 1
    libvpx_states = [state(i, "vpx.state") for i in (0, 1, 3)]
    assert sorted(s.digest() for s, _ in firsts) == sorted(s.digest() for s in libvpx_states)
    assert serials[0][0] == state(1, "final.state")
    # For parsing chunk 2's provisional frames: chunk 1's libvpx state, its pictures left out
    # when no hidden frame needs decoding.
    original = serials[0][1]
    assert original.without_references() == state(1, "vpx.state").without_references()
    assert original.has_references == (not exists(2, "provisional.context"))
    assert [exists(i, "final.ivf") for i in range(5)] == [True] * 5
    assert [exists(i, "final.state") for i in range(5)] == [True, True, False, True, False]
    assert [exists(i, "vpx.state") for i in range(5)] == [True, True, False, True, False]
    assert store.get(stages.chunk_key("job", 0, "final.ivf")) == store.get(
        stages.chunk_key("job", 0, "vpx.ivf")
    )
    assert store.get(stages.chunk_key("job", 1, "final.ivf")) == store.get(
        stages.chunk_key("job", 1, "provisional.ivf")
    )


def _decode_state_from(state: Any, frames: list[bytes]) -> Any:
    for frame in frames:
        state, _ = codec.decode(state, frame)
    return state


# --------------------------------------------------------------------------- ExCamera[n,x], x > 1


@pytest.mark.parametrize(("frames", "n", "x"), [(25, 3, 4), (12, 3, 2), (9, 3, 16)])
def test_groups_synthetic(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, frames: int, n: int, x: int
) -> None:
    """One key frame per group of n*x frames (a short last group too); libvpx agrees."""
    source = make_y4m(tmp_path / "in.y4m", frames)
    output = tmp_path / "out.ivf"
    summary = encode_json(capsys, source, "-o", output, "-n", n, "-x", x)
    check_summary(summary, frames, n, x)
    check_output(output, frames, n * x)


def test_groups_carphone_webm_and_fewer_bits(
    capsys: pytest.CaptureFixture[str], carphone_y4m: Path, tmp_path: Path
) -> None:
    """ExCamera[6,5] on 30 frames of carphone: one key frame, and smaller than [6,1]."""
    grouped = encode_json(capsys, carphone_y4m, "-o", tmp_path / "g.webm", "-n", 6, "-x", 5)
    check_summary(grouped, 30, 6, 5)
    check_output(tmp_path / "g.webm", 30, 30)
    independent = encode_json(capsys, carphone_y4m, "-o", tmp_path / "i.ivf", "-n", 6, "-x", 1)
    assert grouped["payload_bytes"] < independent["payload_bytes"]


def test_revisited_start_frames_carphone(
    capsys: pytest.CaptureFixture[str], carphone_y4m: Path, tmp_path: Path
) -> None:
    """--start-frames revisit: libvpx-exact, one key frame; the group's first two chunks (the
    key frame's, and the one whose start was encoded against the exact state) are the same
    frames as without it, and every later chunk starts differently."""
    plain = encode_json(capsys, carphone_y4m, "-o", tmp_path / "r.ivf", "-n", 6, "-x", 5)
    revisited = encode_json(capsys, carphone_y4m, "-o", tmp_path / "v.ivf", "-n", 6, "-x", 5,
                            "--start-frames", "revisit")
    check_summary(revisited, 30, 6, 5)
    assert (plain["start_frames"], revisited["start_frames"]) == ("rebase", "revisit")
    frames = check_output(tmp_path / "v.ivf", 30, 30)
    reference = stream_frames(tmp_path / "r.ivf")
    assert frames[:12] == reference[:12]
    assert all(frames[k] != reference[k] for k in (12, 18, 24))
    human = encode(capsys, carphone_y4m, "-o", tmp_path / "h.ivf", "-n", 6, "-x", 5,
                   "--start-frames", "revisit")
    assert human.code == 0 and "chunk-start frames revisited" in human.stdout, human


def test_anchored_chunks_carphone(
    capsys: pytest.CaptureFixture[str], carphone_y4m: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--start-frames anchor: libvpx-exact, one key frame; the group's first chunk is the same
    frames as without it, and every later chunk starts with a hidden frame of its middle
    picture (an alt-ref: golden and alt-ref refreshed, last kept), boosted, then six shown
    frames. The plan and the summary say so. The chain on three threads (its revisits and
    rebases in a wavefront) writes the same frames."""
    encode_json(capsys, carphone_y4m, "-o", tmp_path / "r.ivf", "-n", 6, "-x", 5)
    anchored = encode_json(capsys, carphone_y4m, "-o", tmp_path / "a.ivf", "-n", 6, "-x", 5,
                           "--start-frames", "anchor")
    check_summary(anchored, 30, 6, 5)
    assert anchored["start_frames"] == "anchor"
    frames = check_output(tmp_path / "a.ivf", 30, 30)
    assert frames[:6] == stream_frames(tmp_path / "r.ivf")[:6]
    assert len(frames) == 34
    for start in (6, 13, 20, 27):
        anchor = peek_header(frames[start])
        assert not anchor.show_frame and not anchor.key_frame
        assert (anchor.refresh_last, anchor.refresh_golden, anchor.refresh_altref) == (0, 1, 1)
        assert anchor.q_index < min(peek_header(f).q_index for f in frames[start + 1:start + 7])
        assert all(peek_header(f).show_frame for f in frames[start + 1:start + 7])
    monkeypatch.setenv(stages.CHAIN_THREADS_ENV, "3")
    human = encode(capsys, carphone_y4m, "-o", tmp_path / "h.ivf", "-n", 6, "-x", 5,
                   "--start-frames", "anchor")
    assert human.code == 0 and "chunks anchored on hidden frames" in human.stdout, human
    assert stream_frames(tmp_path / "h.ivf") == frames


def test_summary_says_only_what_happened(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # One frame, one chunk per group: no chunk start to anchor, and "1 frame".
    result = encode(capsys, make_y4m(tmp_path / "one.y4m", 1), "-o", tmp_path / "o.ivf",
                    "-x", 1, "--start-frames", "anchor")
    assert result.code == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert ": 1 frame, 64x48" in first and "(1 chunk, 1 key frame)" in first, first
    assert "anchored" not in result.stdout


def test_short_chunks_are_not_anchored(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """With --start-frames anchor a chunk of fewer than ANCHOR_MIN_FRAMES pictures (here the
    video's last, of 4) starts as with revisit: a shown converted key frame, no anchor."""
    assert stages.ANCHOR_MIN_FRAMES == 5
    source = make_y4m(tmp_path / "in.y4m", 16)           # chunks of 6, 6 and 4
    summary = encode_json(capsys, source, "-o", tmp_path / "a.ivf", "-n", 6, "-x", 5,
                          "--start-frames", "anchor")
    check_summary(summary, 16, 6, 5)
    frames = check_output(tmp_path / "a.ivf", 16, 30)
    assert len(frames) == 17 and not peek_header(frames[6]).show_frame
    start = peek_header(frames[13])
    assert start.show_frame and not start.key_frame
    assert (start.refresh_last, start.refresh_golden, start.refresh_altref) == (1, 1, 1)
    plan = stages.split(LocalStore(tmp_path / "w"), "job", source, 6, 5, start_frames="anchor")
    assert [plan.anchored(i) for i in range(3)] == [False, True, False]


def test_anchor_and_lead_in_exclude_each_other(carphone_y4m: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lead-in or an anchor"):
        stages.split(LocalStore(tmp_path / "w"), "job", carphone_y4m, 6, 5, lead_in=True,
                     start_frames="anchor")


def test_serial_chain_holds_states_and_rebuilds_them_after_a_crash(
    carphone_y4m: Path, tmp_path: Path
) -> None:
    """Stage 5 hands each exit state to the next link in memory and stores none past position
    1; a process that does not hold the state (as after a crash) decodes it from the stored
    final frames instead, and makes exactly the same chunk without re-encoding any other."""
    store = LocalStore(tmp_path / "work", durable=False)
    plan = stages.split(store, "job", carphone_y4m, 6, chunks_per_group=5)  # one group of 5
    settings = EncodeSettings(vpxenc=find_vpxenc())
    for i in range(plan.chunk_count):
        stages.encode_chunk_vpx(store, "job", i, settings)
        stages.decode_exit_state(store, "job", i)
        if i:
            stages.rebase_first(store, "job", i)
    key = partial(stages.chunk_key, "job")
    stages.HELD_STATES.clear()
    for i in range(4):
        times = stages.rebase_serial(store, "job", i)
        # Positions 0 and 1 only copy (counted as serial); the others parse, rebase, write.
        assert times.critical > 0 and (times.prepare > 0, times.finish > 0) == (i >= 2,) * 2
    assert stages.rebase_serial(store, "job", 3) == stages.LinkTimes()  # done: nothing to do
    held = stages.HELD_STATES.take(store, key(3, "final.state"))  # what chunk 4 will start from
    stages.HELD_STATES.keep(store, key(3, "final.state"), held)
    stages.rebase_serial(store, "job", 4)
    assert [store.exists(key(i, "final.state")) for i in range(5)] == [True, True] + [False] * 3
    finals = [read_ivf_frames(store.get(key(i, "final.ivf"))) for i in range(5)]
    # The true state after each chunk is what decoding the joined output gives.
    state = codec.DecoderState.initial()
    for i in range(4):
        state = _decode_state_from(state, finals[i])
        assert stages.final_state(store, plan, i) == state
    assert held == state
    # A crash after chunk 3: a fresh process rebuilds chunk 3's state and redoes chunk 4 only.
    stages.HELD_STATES.clear()
    store.path_for(key(4, "final.ivf")).unlink()
    stamps = [store.path_for(key(i, "final.ivf")).stat().st_mtime_ns for i in range(4)]
    stages.rebase_serial(store, "job", 4)
    assert read_ivf_frames(store.get(key(4, "final.ivf"))) == finals[4]
    assert [store.path_for(key(i, "final.ivf")).stat().st_mtime_ns for i in range(4)] == stamps
    # Without the stored state it would start from, the chain says so.
    store.path_for(key(1, "final.state")).unlink()
    with pytest.raises(PipelineError, match="chunk 1: its final state is missing"):
        stages.final_state(store, plan, 3)


class _FailingStore(LocalStore):
    """A local store whose writes of final frames fail (a full disk, a lost bucket)."""

    def put(self, key: str, data: bytes) -> None:
        if key.endswith("final.ivf"):
            raise OSError(28, "No space left on device")
        super().put(key, data)


def test_a_link_whose_frames_are_lost_passes_no_state_on(
    carphone_y4m: Path, tmp_path: Path
) -> None:
    """A link hands its exit state on before writing its frames; when the write fails, the
    held state is withdrawn, so no later link can build on frames that were never stored."""
    store = LocalStore(tmp_path / "work", durable=False)
    plan = stages.split(store, "job", carphone_y4m, 6, chunks_per_group=5)  # one group of 5
    assert plan.has_successor(2)
    settings = EncodeSettings(vpxenc=find_vpxenc())
    for i in range(3):
        stages.encode_chunk_vpx(store, "job", i, settings)
        stages.decode_exit_state(store, "job", i)
        if i:
            stages.rebase_first(store, "job", i)
    stages.HELD_STATES.clear()
    for i in range(2):
        stages.rebase_serial(store, "job", i)
    failing = _FailingStore(tmp_path / "work", durable=False)
    with pytest.raises(OSError, match="No space left"):
        stages.rebase_serial(failing, "job", 2)
    assert not failing.exists(stages.chunk_key("job", 2, "final.ivf"))
    assert stages.HELD_STATES.take(failing, stages.chunk_key("job", 2, "final.state")) is None
    # The same link with a working store does hold it.
    stages.rebase_serial(store, "job", 2)
    assert stages.HELD_STATES.take(store, stages.chunk_key("job", 2, "final.state")) is not None


def test_held_states_are_bounded_and_keyed_by_store(tmp_path: Path) -> None:
    held = stages.HeldStates(limit=2)
    first, second = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    assert held.keep(first, "k1", "s1") == []
    assert held.keep(second, "k1", "other store") == []
    # Over the limit, the oldest goes, and is handed back for the caller to store.
    assert held.keep(first, "k2", "s2") == [(first, "k1", "s1")]
    assert held.take(first, "k1") is None
    assert held.take(second, "k1") == "other store"
    assert held.take(first, "k2") == "s2"
    assert held.take(first, "k2") is None  # taken once


def test_tasks_of_a_lane_run_in_one_process() -> None:
    """The embedded runner's lanes: a group's rebase chain runs in one process (which is what
    lets it hand states over in memory), other tasks anywhere, at most `workers` at once."""
    graph = {}
    for i in range(6):
        deps = (("rebase", i - 1),) if i else ()
        graph[("rebase", i)] = runner.Task(os.getpid, (), deps, (0, i, 0), lane=0)
        graph[("rebase", 10 + i)] = runner.Task(os.getpid, (), (), (0, i, 1), lane=1)
        graph[("encode", i)] = runner.Task(os.getpid, (), (), (1, i, 0))
    with runner.process_pool(2) as pool, runner.lane_pools(2) as lanes:
        pids = runner.Scheduler(pool, 2, Progress(False), None, lanes).run(graph)
    lane0 = {pids[("rebase", i)] for i in range(6)}
    lane1 = {pids[("rebase", 10 + i)] for i in range(6)}
    shared_pool = {pids[("encode", i)] for i in range(6)}
    assert len(lane0) == 1 and len(lane1) == 1 and lane0 != lane1
    assert not (lane0 | lane1) & shared_pool


def test_rebase_chains_are_scheduled_group_by_group(tmp_path: Path) -> None:
    """Among ready rebase tasks, a lane finishes one group's chain before the next group's, so
    it holds one exit state at a time (not one per group it serves)."""
    store = LocalStore(tmp_path / "work")
    plan = stages.split(store, "job", make_y4m(tmp_path / "in.y4m", 12), 1, chunks_per_group=3)
    graph = runner.task_graph(store, plan, EncodeSettings(vpxenc=find_vpxenc()), tmp_path / "o")
    rebases = sorted((task.priority, task_id[1]) for task_id, task in graph.items()
                     if task_id[0] == "rebase")
    assert [index for _, index in rebases] == list(range(12))
    assert {graph[("rebase", i)].lane for i in range(12)} == {0, 1, 2, 3}
    assert all(graph[("rebase", i)].lane == i // 3 for i in range(12))


def test_estimate_cost_prices_what_the_stages_measured(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--estimate-cost: an itemized AWS estimate from this run's own stage times and store
    requests, with the prices' date; the items add up, and more Lambda memory costs more."""
    from shared.pipeline import costs

    source = make_y4m(tmp_path / "in.y4m", 12)
    small = encode_json(capsys, source, "-o", tmp_path / "a.ivf", "-n", 3, "-x", 2,
                        "--estimate-cost")
    estimate = small["cost_estimate_usd"]
    items = estimate["items"]
    assert estimate["prices_date"] == costs.PRICES_DATE and estimate["lambda_memory_mb"] == 1769
    assert set(items) >= {"lambda_compute", "lambda_requests", "s3_requests", "sqs_requests",
                          "fargate", "total"}
    assert items["total"] == pytest.approx(sum(v for k, v in items.items() if k != "total"),
                                           abs=1e-3)
    # Requests follow the task counts: 4 encodes, 2 exit states, 2 stage-4 tasks, 2 checks.
    tasks = sum(small["stages"][label]["tasks"] for label in (
        "libvpx encode", "exit states", "encode given state", "verify + quality"))
    assert items["lambda_requests"] == pytest.approx(tasks * costs.LAMBDA_USD_PER_REQUEST,
                                                     abs=1e-4)
    writes = sum(t["requests"].get(op, 0) for t in small["stages"].values()
                 for op in ("put", "copy", "list"))
    assert writes > 0 and items["s3_requests"] >= writes * costs.S3_PUT_USD_PER_REQUEST - 1e-4
    big = encode_json(capsys, source, "-o", tmp_path / "b.ivf", "-n", 3, "-x", 2,
                      "--estimate-cost", "--lambda-memory", "10240")
    assert big["cost_estimate_usd"]["items"]["lambda_compute"] > items["lambda_compute"]


def test_the_same_job_makes_the_same_webm(capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    """A WebM holds no date and no random id: the same input and settings give the same file,
    run after run (every path through the services must reproduce the embedded bytes)."""
    source = make_y4m(tmp_path / "in.y4m", 6)
    encode_json(capsys, source, "-o", tmp_path / "a.webm", "-n", 3, "-x", 2)
    time.sleep(1.1)  # a header date would now differ
    encode_json(capsys, source, "-o", tmp_path / "b.webm", "-n", 3, "-x", 2)
    assert (tmp_path / "a.webm").read_bytes() == (tmp_path / "b.webm").read_bytes()
