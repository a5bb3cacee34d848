"""`excamera encode-frames` and `excamera rebase`: the codec's encoder and rebase on files.

Outputs are checked against libvpx (vpxdec) and the stream continuity they promise; failures
must be one line on stderr, exit status 1, and leave no output file behind.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from decoder_support import require_decoder

from shared import cli

codec = require_decoder()

from shared.codec.ivf import IvfReader, IvfWriter  # noqa: E402
from shared.codec.y4m import Y4mReader, Y4mWriter  # noqa: E402

if shutil.which("vpxdec") is None or shutil.which("vpxenc") is None:
    pytest.fail("vpxenc/vpxdec (vpx-tools) are required: bash scripts/test.sh installs them")


def _crop_y4m(source: Path, target: Path, frames: slice, width: int = 176,
              height: int = 96) -> list:
    """A small crop of a real clip, written as Y4M; returns the pictures."""
    pictures = []
    for image in list(Y4mReader(source))[frames]:
        y = np.ascontiguousarray(image.y[:height, :width])
        u = np.ascontiguousarray(image.u[: height // 2, : width // 2])
        v = np.ascontiguousarray(image.v[: height // 2, : width // 2])
        pictures.append(codec.Image(y, u, v))
    with Y4mWriter(target, width, height, fps=(24, 1)) as writer:
        for picture in pictures:
            writer.write(picture)
    return pictures


def _run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    code = cli.main([str(arg) for arg in args])
    return code, capsys.readouterr().err


def _vpxdec(path: Path) -> bytes:
    return subprocess.run(["vpxdec", "--i420", "-o", "-", str(path)], check=True,
                          capture_output=True).stdout


def _ours(path: Path, state=None) -> tuple[bytes, object]:
    state = state if state is not None else codec.DecoderState.initial()
    out = bytearray()
    for frame in IvfReader(path):
        state, image = codec.decode(state, frame.data)
        if image is not None:
            out += image.to_i420()
    return bytes(out), state


@pytest.fixture(scope="module")
def clips(video_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    sintel = video_dir / "sintel"
    return {
        "a": (_crop_y4m(sintel / "chunk1.y4m", root / "a.y4m", slice(0, 4)), root / "a.y4m"),
        "b": (_crop_y4m(sintel / "chunk2.y4m", root / "b.y4m", slice(0, 3)), root / "b.y4m"),
    }


def test_encode_frames_matches_libvpx_and_continues_from_state(
    clips: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "first.ivf", tmp_path / "second.ivf"
    state = tmp_path / "first.state"
    code, err = _run(capsys, "encode-frames", clips["a"][1], "-o", first, "--quantizer", "30",
                     "--state-out", state)
    assert code == 0, err
    ours, exit_state = _ours(first)
    assert ours == _vpxdec(first)
    assert codec.DecoderState.from_bytes(state.read_bytes()) == exit_state
    # Continuing from the stored state gives interframes only; the two files join into one
    # stream libvpx decodes exactly as we do.
    code, err = _run(capsys, "encode-frames", clips["b"][1], "-o", second, "--ssim", "0.9",
                     "--state-in", state)
    assert code == 0, err
    assert all(frame.data[0] & 1 for frame in IvfReader(second))
    joined = tmp_path / "joined.ivf"
    with IvfWriter(joined, 176, 96) as writer:
        for path in (first, second):
            for frame in IvfReader(path):
                writer.write(frame.data)
    assert _ours(joined)[0] == _vpxdec(joined)


def test_rebase_continues_another_stream(
    clips: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    head, chunk = tmp_path / "head.ivf", tmp_path / "chunk.ivf"
    head_state = tmp_path / "head.state"
    assert _run(capsys, "encode-frames", clips["a"][1], "-o", head, "--quantizer", "20",
                "--state-out", head_state)[0] == 0
    # A libvpx chunk of other content, starting with its own key frame.
    subprocess.run(["vpxenc", "--codec=vp8", "--good", "--cpu-used=4", "--end-usage=q",
                    "--cq-level=20", "--ivf", "-q", "-o", str(chunk), str(clips["b"][1])],
                   check=True, capture_output=True)
    rebased, rebased_state = tmp_path / "rebased.ivf", tmp_path / "rebased.state"
    code, err = _run(capsys, "rebase", chunk, "--source", clips["b"][1], "--state-in",
                     head_state, "-o", rebased, "--state-out", rebased_state)
    assert code == 0, err
    frames = [frame.data for frame in IvfReader(rebased)]
    assert len(frames) == len(list(IvfReader(chunk)))
    assert all(frame[0] & 1 for frame in frames), "a rebased chunk has no key frame"
    joined = tmp_path / "joined.ivf"
    with IvfWriter(joined, 176, 96) as writer:
        for path in (head, rebased):
            for frame in IvfReader(path):
                writer.write(frame.data)
    decoded, final_state = _ours(joined)
    assert decoded == _vpxdec(joined)
    assert codec.DecoderState.from_bytes(rebased_state.read_bytes()) == final_state


@pytest.mark.parametrize(
    ("command", "fragment"),
    [
        (["encode-frames", "{missing}", "-o", "{out}"], "No such file"),
        (["encode-frames", "{a}", "-o", "{out_webm}"], "this command writes IVF: name the "
                                                        "output .ivf"),
        (["rebase", "{chunk}", "--source", "{a}", "--state-in", "{state}", "-o", "{out_webm}"],
         "this command writes IVF"),
        (["encode-frames", "{a}", "-o", "{out}", "--state-in", "{bad_state}"],
         "not an excamera decoder state"),
        (["rebase", "{chunk}", "--source", "{a}", "--state-in", "{bad_state}", "-o", "{out}"],
         "not an excamera decoder state"),
        (["rebase", "{chunk}", "--source", "{b}", "--state-in", "{state}", "-o", "{out}"],
         "source images were given"),
        (["rebase", "{not_ivf}", "--source", "{a}", "--state-in", "{state}", "-o", "{out}"],
         "not an IVF file"),
        (["rebase", "{tail}", "--source", "{a}", "--state-in", "{state}", "-o", "{out}"],
         "without a preceding key frame (a stream that does not start with a key frame was "
         "made against another state: name it with --original-state)"),
    ],
)
def test_errors_are_one_line_and_leave_no_output(
    clips: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str],
    fragment: str,
) -> None:
    state = tmp_path / "s.state"
    head = tmp_path / "head.ivf"
    assert _run(capsys, "encode-frames", clips["a"][1], "-o", head, "--state-out", state)[0] == 0
    tail = tmp_path / "tail.ivf"  # interframes only, made against `state`
    assert _run(capsys, "encode-frames", clips["a"][1], "-o", tail, "--state-in", state)[0] == 0
    bad_state = tmp_path / "bad.state"
    bad_state.write_bytes(b"definitely not a state")
    not_ivf = tmp_path / "x.ivf"
    not_ivf.write_bytes(b"RIFF0000")
    out = tmp_path / "out.ivf"
    names = {"missing": tmp_path / "missing.y4m", "out": out, "a": clips["a"][1],
             "b": clips["b"][1], "state": state, "bad_state": bad_state, "chunk": head,
             "not_ivf": not_ivf, "tail": tail, "out_webm": tmp_path / "out.webm"}
    code, err = _run(capsys, *[part.format(**names) for part in command])
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], err
    assert "Traceback" not in err
    assert not out.exists() and not (tmp_path / "out.webm").exists()
