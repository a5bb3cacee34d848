"""`excamera decode`.

Two groups:

- The command's plumbing (frame ranges, state files, output formats, one-line errors, no partial
  output) against a toy codec with the real codec's API, so it runs without the compiled
  extension.
- The real decoder against `vpxdec --i420` on conformance vectors. These skip when
  `shared.codec.decoder` is not built, except in CI (CI=true), where they must run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from shared import cli
from shared.codec.errors import CorruptFrameError, MissingKeyFrameError, StateFormatError
from shared.codec.image import Image
from shared.codec.ivf import IvfWriter
from shared.codec.y4m import Y4mReader

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI") == "true"


def _decoder_importable() -> bool:
    try:
        import shared.codec.decoder  # noqa: F401
    except ImportError:
        return False
    return True


needs_decoder = pytest.mark.skipif(
    not IN_CI and not _decoder_importable(),
    reason="the compiled decoder is not built (shared.codec.decoder does not import)",
)
needs_vpxdec = pytest.mark.skipif(
    not IN_CI and shutil.which("vpxdec") is None, reason="vpxdec (vpx-tools) is not installed"
)


@dataclass
class Result:
    code: int
    stdout: bytes
    stderr: str


def _run(capsysbinary: pytest.CaptureFixture[bytes], *args: str | Path) -> Result:
    code = cli.main([str(arg) for arg in args])
    out, err = capsysbinary.readouterr()
    return Result(code, out, err.decode())


def _assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    assert result.stderr.startswith("excamera decode: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


# =========================================================================== toy codec


@dataclass(frozen=True)
class ToyState:
    """A state that matters: each interframe's picture depends on every frame before it."""

    size: tuple[int, int] | None
    level: int

    @classmethod
    def initial(cls) -> ToyState:
        return cls(None, 0)

    def to_bytes(self) -> bytes:
        return b"TOY1" + struct.pack("<HHB", *(self.size or (0, 0)), self.level)

    @classmethod
    def from_bytes(cls, data: bytes) -> ToyState:
        if len(data) != 9 or not data.startswith(b"TOY1"):
            raise StateFormatError("not a toy decoder state")
        width, height, level = struct.unpack("<HHB", data[4:])
        return cls((width, height) if width else None, level)

    def digest(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()[:12]

    @property
    def has_keyframe(self) -> bool:
        return self.size is not None

    @property
    def width(self) -> int:
        return self.size[0] if self.size else 0

    @property
    def height(self) -> int:
        return self.size[1] if self.size else 0


def toy_decode(state: ToyState, frame: bytes) -> tuple[ToyState, Image | None]:
    """b'K' w h level: key frame; b'I' d: shown interframe; b'H' d: hidden interframe."""
    if not frame:
        raise CorruptFrameError("empty frame")
    kind = frame[:1]
    if kind == b"K":
        width, height, level = struct.unpack("<HHB", frame[1:6])
        return ToyState((width, height), level), Image.blank(width, height, level)
    if kind not in (b"I", b"H"):
        raise CorruptFrameError(f"unknown frame type {kind!r}")
    if state.size is None:
        raise MissingKeyFrameError("no key frame has been decoded")
    new = ToyState(state.size, (state.level + frame[1]) % 256)
    return new, (Image.blank(*new.size, new.level) if kind == b"I" else None)


def toy_peek_frame_info(frame: bytes) -> SimpleNamespace:
    if not frame:
        raise CorruptFrameError("empty frame")
    if frame[:1] == b"K":
        width, height, _ = struct.unpack("<HHB", frame[1:6])
        return SimpleNamespace(key_frame=True, width=width, height=height)
    return SimpleNamespace(key_frame=False, width=None, height=None)


def _key(width: int, height: int, level: int) -> bytes:
    return b"K" + struct.pack("<HHB", width, height, level)


# Frames 0-6: key 16x8, two shown, one hidden, one shown, key 17x9 (odd size change), one shown.
TOY_FRAMES = [_key(16, 8, 10), b"I\x01", b"I\x02", b"H\x05", b"I\x01", _key(17, 9, 0), b"I\x03"]
TOY_SHOWN = [
    Image.blank(16, 8, 10),
    Image.blank(16, 8, 11),
    Image.blank(16, 8, 13),
    Image.blank(16, 8, 19),
    Image.blank(17, 9, 0),
    Image.blank(17, 9, 3),
]


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> None:
    codec = SimpleNamespace(DecoderState=ToyState, decode=toy_decode,
                            peek_frame_info=toy_peek_frame_info)
    monkeypatch.setattr(cli, "_load_codec", lambda: codec)


def _toy_ivf(path: Path, frames: list[bytes] = TOY_FRAMES) -> Path:
    with IvfWriter(path, 16, 8, timebase=(1, 24)) as writer:
        for frame in frames:
            writer.write(frame)
    return path


def _i420(images: list[Image]) -> bytes:
    return b"".join(image.to_i420() for image in images)


@pytest.mark.usefixtures("toy")
class TestPlumbing:
    def test_full_decode(self, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
        src = _toy_ivf(tmp_path / "in.ivf")
        result = _run(capsysbinary, "decode", src, "-o", tmp_path / "out.yuv")
        assert (result.code, result.stdout, result.stderr) == (0, b"", "")
        assert (tmp_path / "out.yuv").read_bytes() == _i420(TOY_SHOWN)
        assert sorted(os.listdir(tmp_path)) == ["in.ivf", "out.yuv"]

    def test_stdout(self, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
        src = _toy_ivf(tmp_path / "in.ivf")
        result = _run(capsysbinary, "decode", src, "-o", "-")
        assert (result.code, result.stdout) == (0, _i420(TOY_SHOWN))

    @pytest.mark.parametrize("split", range(len(TOY_FRAMES) + 1))
    def test_split_and_resume(
        self, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes], split: int
    ) -> None:
        src = _toy_ivf(tmp_path / "in.ivf")
        state = tmp_path / "state"
        first = _run(
            capsysbinary, "decode", src, "-o", "-", "--frames", f"0:{split}", "--state-out", state
        )
        second = _run(
            capsysbinary, "decode", src, "-o", "-", "--frames", f"{split}:", "--state-in", state
        )
        assert first.code == second.code == 0
        assert first.stdout + second.stdout == _i420(TOY_SHOWN)

    def test_three_pieces_and_state_chaining(
        self, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
    ) -> None:
        src = _toy_ivf(tmp_path / "in.ivf")
        out = b""
        state_in: list[str | Path] = []
        for i, piece in enumerate(("0:2", "2:4", "4:")):
            state = tmp_path / f"s{i}"
            result = _run(
                capsysbinary,
                "decode",
                src,
                "-o",
                "-",
                "--frames",
                piece,
                *state_in,
                "--state-out",
                state,
            )
            assert result.code == 0, result.stderr
            out += result.stdout
            state_in = ["--state-in", state]
        assert out == _i420(TOY_SHOWN)
        assert ToyState.from_bytes((tmp_path / "s2").read_bytes()) == ToyState((17, 9), 3)

    def test_frames_is_a_half_open_range_of_file_indices(
        self, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
    ) -> None:
        src = _toy_ivf(tmp_path / "in.ivf")
        # Frame 3 is hidden: :4 decodes four frames but shows three.
        assert _run(capsysbinary, "decode", src, "-o", "-", "--frames", ":4").stdout == _i420(
            TOY_SHOWN[:3]
        )
        # A key frame needs no state.
        assert _run(capsysbinary, "decode", src, "-o", "-", "--frames", "5:6").stdout == _i420(
            TOY_SHOWN[4:5]
        )
        # Past the end: nothing to decode, not an error.
        assert _run(capsysbinary, "decode", src, "-o", "-", "--frames", "50:").stdout == b""

    def test_missing_key_frame(
        self, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
    ) -> None:
        src = _toy_ivf(tmp_path / "in.ivf")
        out = tmp_path / "out.yuv"
        result = _run(capsysbinary, "decode", src, "-o", out, "--frames", "1:")
        _assert_one_line_error(
            result,
            f"excamera decode: {src}: frame 1: no key frame has been decoded",
            "--state-in",
        )
        assert not out.exists()

    def test_y4m_output(self, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
        src = _toy_ivf(tmp_path / "in.ivf")
        out = tmp_path / "out.Y4M"
        assert _run(capsysbinary, "decode", src, "-o", out, "--frames", ":5").code == 0
        with Y4mReader(out) as reader:
            assert (reader.header.width, reader.header.height, reader.header.fps) == (
                16,
                8,
                (24, 1),
            )
            assert list(reader) == TOY_SHOWN[:4]
        forced = _run(capsysbinary, "decode", src, "-o", "-", "--frames", "5:", "--format", "y4m")
        assert forced.stdout.startswith(b"YUV4MPEG2 W17 H9 F24:1 Ip A0:0 C420jpeg\nFRAME\n")

    def test_y4m_cannot_change_size(
        self, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
    ) -> None:
        src = _toy_ivf(tmp_path / "in.ivf")
        out = tmp_path / "out.y4m"
        out.write_bytes(b"previous")
        result = _run(capsysbinary, "decode", src, "-o", out)
        _assert_one_line_error(
            result, f"excamera decode: {out}: frame 5: Y4M cannot change frame size", ".yuv"
        )
        assert out.read_bytes() == b"previous"  # the failed run replaced nothing
        assert sorted(os.listdir(tmp_path)) == ["in.ivf", "out.y4m"]

    def test_corrupt_frame(
        self, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
    ) -> None:
        src = _toy_ivf(tmp_path / "in.ivf", [*TOY_FRAMES[:2], b"Zzz", *TOY_FRAMES[3:]])
        result = _run(capsysbinary, "decode", src, "-o", tmp_path / "out.yuv")
        _assert_one_line_error(result, f"{src}: frame 2: unknown frame type b'Z'")
        assert sorted(os.listdir(tmp_path)) == ["in.ivf"]

    def test_zero_length_frame_goes_to_the_decoder(
        self, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
    ) -> None:
        src = _toy_ivf(tmp_path / "in.ivf", [TOY_FRAMES[0], b""])
        _assert_one_line_error(
            _run(capsysbinary, "decode", src, "-o", "-"), f"{src}: frame 1: empty frame"
        )

    def test_truncated_ivf(
        self, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
    ) -> None:
        src = _toy_ivf(tmp_path / "in.ivf")
        src.write_bytes(src.read_bytes()[:-2])
        result = _run(capsysbinary, "decode", src, "-o", tmp_path / "out.yuv")
        _assert_one_line_error(
            result, f"excamera decode: {src}: frame 6 is truncated: header says 2 bytes, 0 remain"
        )
        assert sorted(os.listdir(tmp_path)) == ["in.ivf"]

    def test_not_an_ivf(self, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
        src = tmp_path / "in.ivf"
        src.write_bytes(b"YUV4MPEG2 W16 H8\n")
        result = _run(capsysbinary, "decode", src, "-o", tmp_path / "out.yuv")
        _assert_one_line_error(result, f"excamera decode: {src}: not an IVF file")
        assert sorted(os.listdir(tmp_path)) == ["in.ivf"]

    def test_missing_input(
        self, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
    ) -> None:
        result = _run(capsysbinary, "decode", tmp_path / "nope.ivf", "-o", tmp_path / "out.yuv")
        _assert_one_line_error(result, f"{tmp_path / 'nope.ivf'}: No such file or directory")
        assert os.listdir(tmp_path) == []

    def test_unwritable_output(
        self, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
    ) -> None:
        src = _toy_ivf(tmp_path / "in.ivf")
        out = tmp_path / "no-such-dir" / "out.yuv"
        _assert_one_line_error(
            _run(capsysbinary, "decode", src, "-o", out), f"{out}: No such file or directory"
        )

    @pytest.mark.parametrize("content", [b"", b"garbage", b"TOY1\x00"])
    def test_corrupt_state(
        self, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes], content: bytes
    ) -> None:
        src = _toy_ivf(tmp_path / "in.ivf")
        state = tmp_path / "state"
        state.write_bytes(content)
        result = _run(capsysbinary, "decode", src, "-o", tmp_path / "o.yuv", "--state-in", state)
        _assert_one_line_error(result, f"excamera decode: {state}: not a toy decoder state")
        assert sorted(os.listdir(tmp_path)) == ["in.ivf", "state"]

    def test_missing_state(
        self, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
    ) -> None:
        src = _toy_ivf(tmp_path / "in.ivf")
        result = _run(capsysbinary, "decode", src, "-o", "-", "--state-in", tmp_path / "nope")
        _assert_one_line_error(result, "nope: No such file or directory")

    def test_state_out_failure_discards_output(
        self, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
    ) -> None:
        src = _toy_ivf(tmp_path / "in.ivf")
        state = tmp_path / "no-such-dir" / "state"
        result = _run(capsysbinary, "decode", src, "-o", tmp_path / "o.yuv", "--state-out", state)
        _assert_one_line_error(result, f"{state}: No such file or directory")
        assert sorted(os.listdir(tmp_path)) == ["in.ivf"]

    def test_verbose(self, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
        src = _toy_ivf(tmp_path / "in.ivf")
        result = _run(capsysbinary, "decode", src, "-o", "-", "-v")
        assert result.code == 0
        assert result.stderr.startswith(
            f"excamera decode: {src}: 7 frames decoded (1 hidden, 6 shown)"
        )
        assert ToyState((17, 9), 3).digest() in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["decode", "in.ivf"],  # no -o
        ["decode", "in.ivf", "-o", "x", "--frames", "3"],
        ["decode", "in.ivf", "-o", "x", "--frames", "5:2"],
        ["decode", "in.ivf", "-o", "x", "--frames", "-1:"],
        ["decode", "in.ivf", "-o", "x", "--frames", "a:b"],
        ["frobnicate"],
        [],
    ],
)
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    assert exit_info.value.code == 2
    assert "usage: excamera" in capsys.readouterr().err


def test_frame_range_parsing() -> None:
    assert cli.frame_range("3:7") == (3, 7)
    assert cli.frame_range("3:") == (3, None)
    assert cli.frame_range(":7") == (0, 7)
    assert cli.frame_range(":") == (0, None)
    assert cli.frame_range("4:4") == (4, 4)


def _python_cli(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *map(str, args)],
        capture_output=True,
        env=env,
        cwd=REPO,
        timeout=600,
        check=False,
    )


def test_version_subprocess() -> None:
    done = _python_cli("--version")
    assert done.returncode == 0
    assert done.stdout.decode().startswith("excamera ")


# =========================================================================== real decoder

VECTORS = [
    "vp80-00-comprehensive-001",  # 176x144, the basics
    "vp80-00-comprehensive-006",  # 175x143: odd size
    "vp80-00-comprehensive-008",  # 1432x888
    "vp80-00-comprehensive-018",  # a hidden first key frame
    "vp80-03-segmentation-1425",  # size changes mid-stream, odd sizes
    "vp80-04-partitions-1405",  # token partitions
    "vp80-05-sharpness-1443",  # 1920x96
]


def _vpxdec(path: Path, tmp_path: Path) -> bytes:
    out = tmp_path / f"{path.stem}.vpxdec.yuv"
    subprocess.run(["vpxdec", "--i420", "-o", str(out), str(path)], check=True, timeout=600)
    return out.read_bytes()


@needs_decoder
@needs_vpxdec
@pytest.mark.parametrize("name", VECTORS)
def test_matches_vpxdec(
    name: str, vectors_dir: Path, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    src = vectors_dir / f"{name}.ivf"
    out = tmp_path / "out.yuv"
    result = _run(capsysbinary, "decode", src, "-o", out)
    assert result.code == 0, result.stderr
    ours = out.read_bytes()
    assert ours == _vpxdec(src, tmp_path)
    # And the suite's own record of the same bytes, independent of the installed vpxdec.
    sums = dict(
        reversed(line.split()) for line in (vectors_dir / "SHA1SUMS").read_text().splitlines()
    )
    assert hashlib.sha1(ours).hexdigest() == sums[f"{name}.ivf"]


@needs_decoder
@needs_vpxdec
def test_stdout_matches_vpxdec_subprocess(vectors_dir: Path) -> None:
    src = vectors_dir / "vp80-00-comprehensive-006.ivf"
    done = _python_cli("decode", src, "-o", "-")
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b""
    expected = subprocess.run(
        ["vpxdec", "--i420", "-o", "-", str(src)], capture_output=True, check=True, timeout=600
    ).stdout
    assert done.stdout == expected


@needs_decoder
@pytest.mark.parametrize(
    ("name", "splits"),
    [
        ("vp80-00-comprehensive-001", [1, 10, 28]),
        ("vp80-00-comprehensive-018", [1, 2, 15]),  # 1: right after the hidden key frame
        ("vp80-03-segmentation-1425", [3, 7, 12]),  # across the size changes
    ],
)
def test_split_and_resume(
    name: str,
    splits: list[int],
    vectors_dir: Path,
    tmp_path: Path,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    src = vectors_dir / f"{name}.ivf"
    whole = _run(capsysbinary, "decode", src, "-o", "-")
    assert whole.code == 0, whole.stderr
    for split in splits:
        state = tmp_path / f"state-{split}"
        first = _run(
            capsysbinary, "decode", src, "-o", "-", "--frames", f":{split}", "--state-out", state
        )
        second = _run(
            capsysbinary, "decode", src, "-o", "-", "--frames", f"{split}:", "--state-in", state
        )
        assert first.code == 0, first.stderr
        assert second.code == 0, second.stderr
        assert first.stdout + second.stdout == whole.stdout, f"split at {split}"


@needs_decoder
def test_frames_prefix_and_missing_key_frame(
    vectors_dir: Path, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    src = vectors_dir / "vp80-00-comprehensive-001.ivf"  # no hidden frames
    frame_bytes = 176 * 144 * 3 // 2
    whole = _run(capsysbinary, "decode", src, "-o", "-").stdout
    prefix = _run(capsysbinary, "decode", src, "-o", "-", "--frames", "0:5")
    assert prefix.stdout == whole[: 5 * frame_bytes]

    out = tmp_path / "out.yuv"
    result = _run(capsysbinary, "decode", src, "-o", out, "--frames", "3:")
    _assert_one_line_error(result, f"excamera decode: {src}: frame 3: ")
    assert not out.exists()

    # 018's frame 0 is a hidden key frame: decoding it alone shows nothing.
    hidden = _run(
        capsysbinary,
        "decode",
        vectors_dir / "vp80-00-comprehensive-018.ivf",
        "-o",
        "-",
        "--frames",
        "0:1",
    )
    assert (hidden.code, hidden.stdout) == (0, b"")


@needs_decoder
@needs_vpxdec
def test_y4m_output(
    vectors_dir: Path, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    src = vectors_dir / "vp80-00-comprehensive-006.ivf"
    out = tmp_path / "out.y4m"
    assert _run(capsysbinary, "decode", src, "-o", out).code == 0
    with Y4mReader(out) as reader:
        assert (reader.header.width, reader.header.height, reader.header.fps) == (175, 143, (24, 1))
        pixels = b"".join(image.to_i420() for image in reader)
    assert pixels == _vpxdec(src, tmp_path)

    changing = tmp_path / "changing.y4m"
    result = _run(
        capsysbinary, "decode", vectors_dir / "vp80-03-segmentation-1425.ivf", "-o", changing
    )
    _assert_one_line_error(result, f"{changing}: frame ", "Y4M cannot change frame size")
    assert not changing.exists()


@needs_decoder
def test_errors_real_decoder(
    vectors_dir: Path, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    src = vectors_dir / "vp80-00-comprehensive-001.ivf"
    out = tmp_path / "out.yuv"

    truncated = tmp_path / "truncated.ivf"
    truncated.write_bytes(src.read_bytes()[:-100])
    _assert_one_line_error(
        _run(capsysbinary, "decode", truncated, "-o", out), f"{truncated}: frame 28 is truncated"
    )

    not_ivf = tmp_path / "not.ivf"
    not_ivf.write_bytes(b"\x1a\x45\xdf\xa3 this is a WebM file")
    _assert_one_line_error(_run(capsysbinary, "decode", not_ivf, "-o", out), "not an IVF file")

    missing = tmp_path / "missing.ivf"
    _assert_one_line_error(
        _run(capsysbinary, "decode", missing, "-o", out), "No such file or directory"
    )

    good_state = tmp_path / "good.state"
    assert (
        _run(
            capsysbinary, "decode", src, "-o", "-", "--frames", ":5", "--state-out", good_state
        ).code
        == 0
    )
    data = good_state.read_bytes()
    for i, corrupt in enumerate([b"", b"garbage", data[: len(data) // 2], data[:-1] + b"\x00"]):
        if corrupt == data:
            continue
        state = tmp_path / f"corrupt-{i}.state"
        state.write_bytes(corrupt)
        result = _run(capsysbinary, "decode", src, "-o", out, "--frames", "5:", "--state-in", state)
        _assert_one_line_error(result, f"excamera decode: {state}: ")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".state")) == [
        "not.ivf",
        "truncated.ivf",
    ]


@needs_decoder
def test_state_of_another_stream_and_frames_past_the_end(
    vectors_dir: Path, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    small = vectors_dir / "vp80-00-comprehensive-001.ivf"  # 176x144, 29 frames
    large = vectors_dir / "vp80-00-comprehensive-010.ivf"  # 320x240
    state = tmp_path / "small.state"
    out = tmp_path / "out.yuv"
    assert _run(capsysbinary, "decode", small, "-o", tmp_path / "first.yuv", "--frames", ":5",
                "--state-out", state).code == 0
    result = _run(capsysbinary, "decode", large, "-o", out, "--frames", "5:", "--state-in", state)
    assert result.code == 1 and "Traceback" not in result.stderr
    note, error, _ = result.stderr.split("\n")
    expected = f"the state in {state} is 176x144, the stream 320x240"
    assert note.startswith("excamera decode: note: ") and expected in note
    assert error.startswith(f"excamera decode: {large}: frame ") and expected in error
    for frames, count in [("30:", 29), ("50:60", 29)]:
        result = _run(capsysbinary, "decode", small, "-o", out, "--frames", frames)
        _assert_one_line_error(result, f"starts at frame {frames.split(':')[0]}, but the "
                               f"stream has {count} frames")
    assert not out.exists()
    for frames in ("5:5", "29:"):  # empty, as the second half of a split at the end
        result = _run(capsysbinary, "decode", small, "-o", out, "--frames", frames)
        assert result.code == 0 and result.stderr == ""


@needs_decoder
def test_errors_subprocess(tmp_path: Path) -> None:
    not_ivf = tmp_path / "not.ivf"
    not_ivf.write_bytes(b"hello")
    out = tmp_path / "out.yuv"
    done = _python_cli("decode", not_ivf, "-o", out)
    assert done.returncode == 1
    stderr = done.stderr.decode()
    assert stderr == (
        f"excamera decode: {not_ivf}: not an IVF file: it does not start with the 'DKIF' "
        "signature\n"
    )
    assert not out.exists()


@needs_decoder
def test_verbose_real(vectors_dir: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    src = vectors_dir / "vp80-00-comprehensive-018.ivf"
    result = _run(capsysbinary, "decode", src, "-o", os.devnull, "-v")
    assert result.code == 0
    assert "29 frames decoded (1 hidden, 28 shown)" in result.stderr
