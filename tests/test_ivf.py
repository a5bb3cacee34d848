"""`shared.codec.ivf`: round trips, atomic writing, every malformed-file error, and the
conformance vectors checked against PyAV's independent IVF demuxer."""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
from pathlib import Path

import pytest

from shared.codec.container_io import OutputSink
from shared.codec.errors import CodecError, ContainerError
from shared.codec.ivf import IvfFrame, IvfHeader, IvfReader, IvfWriter


def _ivf(
    frames: list[bytes],
    *,
    signature: bytes = b"DKIF",
    version: int = 0,
    header_size: int = 32,
    fourcc: bytes = b"VP80",
    sizes: list[int] | None = None,
) -> bytes:
    """An IVF file built by hand (independently of IvfWriter), with optional lies in it."""
    out = [
        struct.pack(
            "<4sHH4sHHIIII", signature, version, header_size, fourcc, 64, 48, 30, 1, len(frames), 0
        )
    ]
    for i, frame in enumerate(frames):
        size = len(frame) if sizes is None else sizes[i]
        out.append(struct.pack("<IQ", size, 100 + i) + frame)
    return b"".join(out)


def _read_all(data: bytes) -> list[IvfFrame]:
    with IvfReader(io.BytesIO(data)) as reader:
        return list(reader)


class _Unseekable(io.RawIOBase):
    """A pipe-like stream: readable or writable, never seekable, size unknown."""

    def __init__(self, data: bytes = b"") -> None:
        self._data = io.BytesIO(data)
        self.written = bytearray()

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.written += data
        return len(data)


# --------------------------------------------------------------------------- round trips


def test_round_trip(tmp_path: Path) -> None:
    frames = [b"\x10\x02\x00" * 50, b"", b"\xff" * 7, bytes(range(256))]
    path = tmp_path / "out.ivf"
    with IvfWriter(path, 175, 143, timebase=(1001, 30000)) as writer:
        writer.write(frames[0])
        writer.write(frames[1])
        writer.write(frames[2], pts=10)
        writer.write(frames[3])
    with IvfReader(path) as reader:
        assert reader.header == IvfHeader(b"VP80", 175, 143, 30000, 1001, 4)
        assert reader.header.timebase == (1001, 30000)
        got = list(reader)
    assert [f.data for f in got] == frames  # the zero-length frame survives as it is
    assert [f.pts for f in got] == [0, 1, 10, 11]
    assert [f.index for f in got] == [0, 1, 2, 3]
    assert sorted(os.listdir(tmp_path)) == ["out.ivf"]  # no temporary file left behind


def test_header_layout_is_libvpx_s() -> None:
    header = IvfHeader(b"VP80", 320, 240, 30000, 1000, 29)
    packed = header.pack()
    assert packed == (
        b"DKIF\x00\x00\x20\x00VP80" + struct.pack("<HHIIII", 320, 240, 30000, 1000, 29, 0)
    )
    assert IvfHeader.unpack(packed) == header


def test_writer_to_streams() -> None:
    seekable = io.BytesIO()
    with IvfWriter(seekable, 16, 16) as writer:
        writer.write(b"abc")
        writer.write(b"de")
    assert not seekable.closed  # a caller's stream is the caller's to close
    assert IvfHeader.unpack(seekable.getvalue()[:32]).frame_count == 2  # patched by seeking
    assert [f.data for f in _read_all(seekable.getvalue())] == [b"abc", b"de"]

    pipe = _Unseekable()
    with IvfWriter(pipe, 16, 16) as writer:
        writer.write(b"abc")
    data = bytes(pipe.written)
    assert IvfHeader.unpack(data[:32]).frame_count == 0  # cannot seek back: left unset
    assert [f.data for f in _read_all(data)] == [b"abc"]


def test_writer_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "out.ivf"
    path.write_bytes(b"previous contents")
    with pytest.raises(RuntimeError), IvfWriter(path, 16, 16) as writer:
        writer.write(b"frame")
        assert path.read_bytes() == b"previous contents"  # not replaced before close
        raise RuntimeError("encoder failed")
    assert path.read_bytes() == b"previous contents"
    assert sorted(os.listdir(tmp_path)) == ["out.ivf"]

    writer = IvfWriter(tmp_path / "aborted.ivf", 16, 16)
    writer.write(b"x")
    writer.abort()
    assert sorted(os.listdir(tmp_path)) == ["out.ivf"]


def test_writer_to_special_file() -> None:
    # Renaming a temporary file over /dev/null would replace the device: write it directly.
    with IvfWriter(os.devnull, 16, 16) as writer:
        writer.write(b"x")
    assert Path(os.devnull).is_char_device()


def test_output_sink_failure_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        OutputSink(tmp_path / "missing-dir" / "out.ivf")
    assert os.listdir(tmp_path) == []


def test_writer_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="width"):
        IvfWriter(tmp_path / "a.ivf", 70000, 16)
    with pytest.raises(ValueError, match="timebase"):
        IvfWriter(tmp_path / "a.ivf", 16, 16, timebase=(0, 30))
    with pytest.raises(ValueError, match="fourcc"):
        IvfWriter(tmp_path / "a.ivf", 16, 16, fourcc=b"VP8")
    assert os.listdir(tmp_path) == []  # validated before any file is created
    with IvfWriter(io.BytesIO(), 16, 16) as writer, pytest.raises(ValueError, match="pts"):
        writer.write(b"", pts=-1)


# --------------------------------------------------------------------------- malformed files


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not an IVF file"),
        (b"RIFF" + bytes(40), "not an IVF file"),
        (b"DKIF\x00\x00", "IVF file header is truncated: 6 of 32 bytes"),
        (_ivf([], version=1), "unsupported IVF version 1"),
        (_ivf([], header_size=64), "IVF header length is 64, expected 32"),
        (_ivf([], fourcc=b"VP90"), "fourcc is 'VP90', expected 'VP80'"),
        (_ivf([], fourcc=b"\x00\x01\x02\x03"), r"fourcc is b'\\x00\\x01\\x02\\x03'"),
    ],
)
def test_bad_file_header(data: bytes, message: str) -> None:
    with pytest.raises(ContainerError, match=message):
        IvfReader(io.BytesIO(data))


@pytest.mark.filterwarnings("error")  # an unclosed file would raise ResourceWarning
def test_bad_header_from_path_closes_file(tmp_path: Path) -> None:
    path = tmp_path / "x.ivf"
    path.write_bytes(b"not an ivf at all, just some text")
    with pytest.raises(ContainerError, match="not an IVF file"):
        IvfReader(path)


def test_other_fourcc_when_asked() -> None:
    with IvfReader(io.BytesIO(_ivf([b"vp9"], fourcc=b"VP90")), fourcc=None) as reader:
        assert reader.header.fourcc == b"VP90"
        assert [f.data for f in reader] == [b"vp9"]


def test_truncated_frame_names_it() -> None:
    frames = [b"a" * 10, b"b" * 20, b"c" * 5000]
    data = _ivf(frames)[: -(5000 - 123)]
    with IvfReader(io.BytesIO(data)) as reader:
        assert next(reader).data == frames[0]
        assert next(reader).data == frames[1]
        with pytest.raises(
            ContainerError, match=r"^frame 2 is truncated: header says 5000 bytes, 123 remain$"
        ):
            next(reader)


def test_truncated_frame_on_unseekable_stream() -> None:
    data = _ivf([b"a" * 10, b"c" * 5000])[:-100]
    with IvfReader(io.BufferedReader(_Unseekable(data))) as reader:  # type: ignore[arg-type]
        next(reader)
        with pytest.raises(
            ContainerError, match="frame 1 is truncated: header says 5000 bytes, 4900 remain"
        ):
            next(reader)


def test_truncated_frame_header() -> None:
    data = _ivf([b"abc", b"def"])[:-8]  # 7 of the second frame's 12 header bytes
    with pytest.raises(ContainerError, match="frame 1 is truncated: its frame header has 7 of 12"):
        _read_all(data)


@pytest.mark.parametrize("seekable", [True, False])
def test_absurd_frame_size_allocates_nothing(seekable: bool) -> None:
    data = _ivf([b"tiny"], sizes=[0xFFFFFFFF])
    stream = io.BytesIO(data) if seekable else io.BufferedReader(_Unseekable(data))
    tracemalloc.start()
    try:
        # Unseekable, the bytes left are unknown: refused as past any frame's size instead.
        with pytest.raises(ContainerError, match="frame 0 (is truncated: header says|claims) "
                                                 "4294967295"):
            _read_all_from(stream)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def _read_all_from(stream: io.IOBase) -> list[IvfFrame]:
    with IvfReader(stream) as reader:  # type: ignore[arg-type]
        return list(reader)


def test_errors_are_codec_and_value_errors() -> None:
    with pytest.raises(CodecError):
        _read_all(b"junk")
    with pytest.raises(ValueError):
        _read_all(b"junk")


def test_header_count_is_not_trusted() -> None:
    data = bytearray(_ivf([b"a", b"b", b"c"]))
    struct.pack_into("<I", data, 24, 1000)
    assert len(_read_all(bytes(data))) == 3


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError):
        IvfReader("/nonexistent/x.ivf")


# --------------------------------------------------------------------------- real files


def _vectors(vectors_dir: Path) -> list[Path]:
    paths = sorted(vectors_dir.glob("*.ivf"))
    assert len(paths) == 61
    return paths


def test_conformance_vectors_match_pyav(vectors_dir: Path) -> None:
    av = pytest.importorskip("av")
    for path in _vectors(vectors_dir):
        with IvfReader(path) as reader:
            header = reader.header
            ours = list(reader)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "vp8"
            assert (stream.codec_context.width, stream.codec_context.height) == (
                header.width,
                header.height,
            ), path.name
            theirs = [p for p in container.demux(stream) if p.size]  # drop the flush packet
        assert len(ours) == len(theirs), path.name
        assert len(ours) == header.frame_count, path.name
        for frame, packet in zip(ours, theirs, strict=True):
            assert frame.pts == packet.pts, (path.name, frame.index)
            assert frame.data == bytes(packet), (path.name, frame.index)


def test_conformance_vectors_rewrite_identically(vectors_dir: Path, tmp_path: Path) -> None:
    for path in _vectors(vectors_dir):
        with IvfReader(path) as reader:
            header = reader.header
            out = tmp_path / path.name
            with IvfWriter(
                out, header.width, header.height, header.timebase, header.fourcc
            ) as writer:
                for frame in reader:
                    writer.write(frame.data, frame.pts)
        original = path.read_bytes()
        rewritten = out.read_bytes()
        # All but the unused trailing header field (a few vectors have junk in it).
        assert rewritten[:28] == original[:28], path.name
        assert rewritten[32:] == original[32:], path.name


def test_catalogue_facts(vectors_dir: Path) -> None:
    with IvfReader(vectors_dir / "vp80-00-comprehensive-006.ivf") as reader:
        assert (reader.header.width, reader.header.height) == (175, 143)
        assert reader.header.timebase == (1000, 24000)
        assert sum(1 for _ in reader) == 48
    with IvfReader(vectors_dir / "vp80-00-comprehensive-008.ivf") as reader:
        assert (reader.header.width, reader.header.height) == (1432, 888)
        assert sum(1 for _ in reader) == 2
