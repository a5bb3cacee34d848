"""`shared.codec.y4m`: header parsing, the 4:2:0-only rule, odd sizes, truncation, atomic
writing, raw I420, and the real Sintel clips checked against PyAV's decoding of the same files."""

from __future__ import annotations

import io
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from shared.codec.errors import ContainerError
from shared.codec.image import Image, chroma_size
from shared.codec.y4m import (
    MAX_LINE,
    BufferFile,
    Y4mHeader,
    Y4mReader,
    Y4mWriter,
    read_raw_i420,
    write_raw_i420,
)


def _image(width: int, height: int, seed: int) -> Image:
    rng = np.random.default_rng(seed)
    cw, ch = chroma_size(width, height)
    return Image(
        rng.integers(0, 256, (height, width), np.uint8),
        rng.integers(0, 256, (ch, cw), np.uint8),
        rng.integers(0, 256, (ch, cw), np.uint8),
    )


def _y4m(header: bytes, images: list[Image], frame_line: bytes = b"FRAME\n") -> bytes:
    """A Y4M stream built by hand, independently of Y4mWriter."""
    return header + b"".join(frame_line + image.to_i420() for image in images)


def _read(data: bytes) -> list[Image]:
    with Y4mReader(io.BytesIO(data)) as reader:
        return list(reader)


def _expect(data: bytes, message: str) -> None:
    with pytest.raises(ContainerError, match=message):
        _read(data)


# --------------------------------------------------------------------------- header


def test_header_fields() -> None:
    header = Y4mHeader.parse(b"YUV4MPEG2 W1024 H436 F24000:1001 It A128:117 C420mpeg2 XYSCSS=420\n")
    assert header == Y4mHeader(
        1024, 436, (24000, 1001), "t", (128, 117), "420mpeg2", ("XYSCSS=420",)
    )
    assert header.frame_size == 1024 * 436 * 3 // 2


def test_header_defaults() -> None:
    header = Y4mHeader.parse(b"YUV4MPEG2 W3 H5\n")
    assert header == Y4mHeader(3, 5, (25, 1), "p", (0, 0), "420jpeg", ())
    assert header.frame_size == 15 + 2 * 2 * 3


def test_header_pack_round_trip() -> None:
    header = Y4mHeader(175, 143, (30, 1), "p", (1, 1), "420jpeg", ("XCOLORRANGE=FULL",))
    packed = header.pack()
    assert packed == b"YUV4MPEG2 W175 H143 F30:1 Ip A1:1 C420jpeg XCOLORRANGE=FULL\n"
    assert Y4mHeader.parse(packed) == header


@pytest.mark.parametrize("colorspace", ["420jpeg", "420paldv", "420mpeg2", "420"])
def test_supported_colorspaces(colorspace: str) -> None:
    image = _image(5, 3, seed=1)
    header = f"YUV4MPEG2 W5 H3 F30:1 C{colorspace}\n".encode()
    assert _read(_y4m(header, [image])) == [image]


@pytest.mark.parametrize(
    "colorspace", ["444", "422", "411", "420p10", "420p12", "mono", "444alpha", "444p16", "x"]
)
def test_unsupported_colorspaces(colorspace: str) -> None:
    _expect(
        f"YUV4MPEG2 W4 H4 F30:1 C{colorspace}\n".encode() + b"FRAME\n" + bytes(96),
        f"^Y4M colorspace 'C{colorspace}' is not supported: only 8-bit 4:2:0 \\(C420\\*\\) "
        "input is accepted$",
    )


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"", "not a Y4M file"),
        (b"YUV4MPEG W4 H4\n", "not a Y4M file"),
        (b"DKIF\x00\x00 \x00VP80", "not a Y4M file"),
        (b"YUV4MPEG2\n", "not a Y4M file"),
        (b"YUV4MPEG2 W4 H4", "Y4M header is truncated"),
        (b"YUV4MPEG2 W4 H4 " + b"X" * MAX_LINE + b"\n", f"longer than {MAX_LINE} bytes"),
        (b"YUV4MPEG2 H4 F30:1\n", r"no W tag \(width\)"),
        (b"YUV4MPEG2 W4 F30:1\n", r"no H tag \(height\)"),
        (b"YUV4MPEG2 W0 H4\n", "bad W tag 'W0': expected a positive number"),
        (b"YUV4MPEG2 W4 H-4\n", "bad H tag 'H-4'"),
        (b"YUV4MPEG2 W4 Habc\n", "bad H tag 'Habc'"),
        (b"YUV4MPEG2 W4 H1234567890\n", "bad H tag"),
        (b"YUV4MPEG2 W4 H4 W8\n", "more than one W tag"),
        (b"YUV4MPEG2 W4 H4 F30\n", "bad F tag 'F30': expected N:D"),
        (b"YUV4MPEG2 W4 H4 F30:0\n", "frame rate F30:0 is not a valid rate"),
        (b"YUV4MPEG2 W4 H4 Ax\n", "bad A tag"),
        (
            b"YUV4MPEG2 W16385 H16385\n",
            r"Y4M frame size 16385x16385 is too large: at most 268435456 pixels",
        ),
        (b"YUV4MPEG2 W1 H268435457\n", "too large"),
        (b"YUV4MPEG2 W4 H4 F30:1 C420jpeg\r\n", "ends in CR LF"),
    ],
)
def test_bad_headers(header: bytes, message: str) -> None:
    _expect(header, message)


def test_largest_accepted_size_allocates_nothing_up_front() -> None:
    # 16384 x 16384 is accepted; its frames need 402 MB, the file has 10 bytes.
    data = b"YUV4MPEG2 W16384 H16384\nFRAME\n0123456789"
    tracemalloc.start()
    try:
        _expect(data, r"^Y4M frame 0 is truncated: 10 of 402653184 bytes present$")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


# --------------------------------------------------------------------------- frames


@pytest.mark.parametrize(("width", "height"), [(175, 143), (1, 1), (3, 2), (2, 3), (64, 48)])
def test_round_trip_odd_sizes(tmp_path: Path, width: int, height: int) -> None:
    images = [_image(width, height, seed) for seed in range(3)]
    path = tmp_path / "x.y4m"
    with Y4mWriter(path, width, height, fps=(30000, 1001)) as writer:
        for image in images:
            writer.write(image)
    assert writer.frame_count == 3
    data = path.read_bytes()
    assert data.startswith(f"YUV4MPEG2 W{width} H{height} F30000:1001 Ip A0:0 C420jpeg\n".encode())
    assert data == _y4m(writer.header.pack(), images)
    with Y4mReader(path) as reader:
        assert reader.header.fps == (30000, 1001)
        assert list(reader) == images
        assert reader.frame_index == 3
    assert os.listdir(tmp_path) == ["x.y4m"]


def test_frame_parameters_are_ignored() -> None:
    images = [_image(6, 4, seed) for seed in range(2)]
    data = _y4m(b"YUV4MPEG2 W6 H4\n", images, frame_line=b"FRAME Ip XFOO=1\n")
    assert _read(data) == images


def test_missing_frame_marker() -> None:
    images = [_image(6, 4, seed) for seed in range(3)]
    data = bytearray(_y4m(b"YUV4MPEG2 W6 H4\n", images))
    second = data.index(b"FRAME", 20)
    data[second : second + 5] = b"FRAMX"
    _expect(bytes(data), r"^Y4M frame 1 does not start with 'FRAME'$")
    _expect(b"YUV4MPEG2 W6 H4\nFRAMES\n" + bytes(36), "Y4M frame 0 does not start with 'FRAME'")


@pytest.mark.parametrize("cut", [1, 35, 36, 37, 40])
def test_truncated_final_frame(cut: int) -> None:
    # Cut anywhere inside the fourth frame: its marker line or its pixel data.
    images = [_image(6, 4, seed) for seed in range(4)]
    data = _y4m(b"YUV4MPEG2 W6 H4\n", images)[:-cut]
    with Y4mReader(io.BytesIO(data)) as reader:
        assert [next(reader) for _ in range(3)] == images[:3]
        with pytest.raises(ContainerError, match="^Y4M frame 3 is truncated"):
            next(reader)


def test_truncated_frame_on_unseekable_stream() -> None:
    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
            chunk = self._data.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    images = [_image(6, 4, seed) for seed in range(2)]
    data = _y4m(b"YUV4MPEG2 W6 H4\n", images)[:-5]
    with Y4mReader(io.BufferedReader(Pipe(data))) as reader:  # type: ignore[arg-type]
        assert next(reader) == images[0]
        with pytest.raises(ContainerError, match="Y4M frame 1 is truncated: 31 of 36 bytes"):
            next(reader)


def test_overlong_frame_line() -> None:
    _expect(
        b"YUV4MPEG2 W6 H4\nFRAME " + b"X" * MAX_LINE, f"frame 0 header is longer than {MAX_LINE}"
    )


def test_empty_stream() -> None:
    assert _read(b"YUV4MPEG2 W6 H4 F24:1\n") == []


# --------------------------------------------------------------------------- writer


def test_writer_refuses_size_change(tmp_path: Path) -> None:
    path = tmp_path / "x.y4m"
    with (
        pytest.raises(ContainerError, match="cannot change frame size"),
        Y4mWriter(path, 6, 4) as writer,
    ):
        writer.write(_image(6, 4, 0))
        writer.write(_image(8, 4, 0))
    assert os.listdir(tmp_path) == []  # the failed stream was discarded, not left half-written


def test_writer_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "x.y4m"
    path.write_bytes(b"old")
    writer = Y4mWriter(path, 6, 4)
    writer.write(_image(6, 4, 0))
    assert path.read_bytes() == b"old"
    writer.close()
    assert _read(path.read_bytes()) == [_image(6, 4, 0)]
    assert os.listdir(tmp_path) == ["x.y4m"]


def test_writer_to_stream_and_fps_reduction() -> None:
    stream = io.BytesIO()
    with Y4mWriter(stream, 6, 4, fps=(30000, 1000)) as writer:
        writer.write(_image(6, 4, 1))
    assert stream.getvalue().startswith(b"YUV4MPEG2 W6 H4 F30:1 Ip A0:0 C420jpeg\nFRAME\n")
    with pytest.raises(ValueError, match="frame rate"):
        Y4mWriter(io.BytesIO(), 6, 4, fps=(0, 1))


# --------------------------------------------------------------------------- raw I420


def test_raw_i420_round_trip(tmp_path: Path) -> None:
    images = [_image(175, 143, seed) for seed in range(3)]
    path = tmp_path / "x.yuv"
    assert write_raw_i420(path, images) == 3
    assert path.read_bytes() == b"".join(image.to_i420() for image in images)
    assert list(read_raw_i420(path, 175, 143)) == images
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ContainerError, match="I420 frame 2 is truncated"):
        list(read_raw_i420(path, 175, 143))


# --------------------------------------------------------------------------- real files


def _pyav_images(path: Path) -> list[Image]:
    av = pytest.importorskip("av")
    images = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            assert frame.format.name == "yuv420p"
            planes = []
            for plane in frame.planes:
                rows = np.frombuffer(bytes(plane), np.uint8).reshape(-1, plane.line_size)
                planes.append(rows[: plane.height, : plane.width])
            images.append(Image(*planes))
    return images


def _real_y4m_files(video_dir: Path) -> list[Path]:
    paths = sorted((video_dir / "sintel").glob("*.y4m")) + sorted(
        (video_dir / "stills").glob("*.y4m")
    )
    assert len(paths) == 7
    return paths


def test_real_files_match_pyav(video_dir: Path) -> None:
    for path in _real_y4m_files(video_dir):
        with Y4mReader(path) as reader:
            ours = list(reader)
        assert ours == _pyav_images(path), path.name
        if path.parent.name == "sintel":
            assert reader.header == Y4mHeader(1024, 436, (24, 1), "p", (0, 0), "420jpeg", ())
            assert len(ours) == 6


def test_real_files_rewrite_identically(video_dir: Path, tmp_path: Path) -> None:
    # The clips carry exactly the header our writer produces, so a copy is byte-identical.
    for path in _real_y4m_files(video_dir):
        with Y4mReader(path) as reader:
            out = tmp_path / path.name
            header = reader.header
            with Y4mWriter(out, header.width, header.height, header.fps) as writer:
                for image in reader:
                    writer.write(image)
        assert out.read_bytes() == path.read_bytes(), path.name


@pytest.mark.parametrize("cut", [0, 1, 36, 44])
def test_buffer_file_reads_the_same_pictures_without_copying(cut: int) -> None:
    """Y4mReader over a BufferFile (how the pipeline reads memory-mapped chunks): the same
    pictures and the same errors as over a file, as read-only views of the buffer."""
    images = [_image(6, 4, seed) for seed in range(4)]
    data = _y4m(b"YUV4MPEG2 W6 H4 F25:1\n", images)
    data = data[: len(data) - cut]
    try:
        expected: list[Image] | str = _read(data)
    except ContainerError as exc:
        expected = str(exc)
    try:
        with Y4mReader(BufferFile(data)) as reader:
            got: list[Image] | str = list(reader)
    except ContainerError as exc:
        got = str(exc)
    assert got == expected
    if cut == 0:
        assert got == images
        assert all(not plane.flags.writeable and plane.base is not None
                   for image in got for plane in image.planes)
