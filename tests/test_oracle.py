"""The libvpx oracle and the generated streams, checked without our decoder.

vpxdec must reproduce the conformance suite's SHA1SUMS and per-frame MD5s, and vpxdec and PyAV's
libvpx decoder must agree frame for frame on every vector and every generated stream; only then
is "equal to libvpx" a meaningful test of our decoder. Each generated stream must also contain
what it claims to exercise (its header checks), or the coverage it promises is fictional.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from decoder_support import vector_names
from libvpx_oracle import (
    FrameHeader,
    join_ivf,
    peek_header,
    pyav_decode_each,
    pyav_frames,
    read_ivf,
    reference_slots,
    split_ivf,
    vpxdec_frames,
)
from vp8_streams import STREAMS, TEST_STREAMS, check_stream

VECTORS = vector_names()


def official_md5s(vectors_dir: Path, name: str) -> list[tuple[str, str]]:
    """(md5, frame file name) per shown frame, from the vector's `.md5` file."""
    lines = (vectors_dir / f"{name}.md5").read_text().splitlines()
    return [(line.split()[0], line.split()[1]) for line in lines if line.strip()]


def test_suite_is_complete(vectors_dir: Path) -> None:
    assert len(VECTORS) == 61
    for name in VECTORS:
        assert (vectors_dir / name).is_file() and (vectors_dir / f"{name}.md5").is_file(), name


@pytest.mark.parametrize("name", VECTORS)
def test_oracle_reproduces_vector(vectors_dir: Path, name: str) -> None:
    sums = dict(
        reversed(line.split()) for line in (vectors_dir / "SHA1SUMS").read_text().splitlines()
    )
    ours = vpxdec_frames(vectors_dir / name)
    assert hashlib.sha1(b"".join(f.data for f in ours)).hexdigest() == sums[name]
    md5s = official_md5s(vectors_dir, name)
    assert [hashlib.md5(f.data).hexdigest() for f in ours] == [md5 for md5, _ in md5s]
    for frame, (_, file) in zip(ours, md5s, strict=True):
        assert f"-{frame.width}x{frame.height}-" in file
    assert pyav_frames(read_ivf(vectors_dir / name).frames) == ours


@pytest.mark.parametrize("name", TEST_STREAMS)
def test_generated_stream(vp8_stream: Callable[[str], Path], name: str) -> None:
    path = vp8_stream(name)
    stream = read_ivf(path)
    assert check_stream(STREAMS[name], stream.frames) == []
    headers = [peek_header(f) for f in stream.frames]
    assert headers[0].key_frame
    expected = vpxdec_frames(path)
    assert pyav_frames(stream.frames) == expected
    # Shown frames have the size of the latest key frame: what the decoder must report.
    sizes = []
    for h in headers:
        if h.key_frame:
            size = (h.width, h.height)
        if h.show_frame:
            sizes.append(size)
    assert [(f.width, f.height) for f in expected] == sizes


def test_ivf_round_trip(vectors_dir: Path) -> None:
    data = (vectors_dir / "vp80-00-comprehensive-001.ivf").read_bytes()
    stream = split_ivf(data)
    assert (stream.fourcc, stream.width, stream.height) == (b"VP80", 176, 144)
    assert len(stream.frames) == 29
    again = split_ivf(join_ivf(stream.frames, stream.width, stream.height))
    assert again.frames == stream.frames
    with pytest.raises(ValueError):
        split_ivf(data[:-1])


def test_header_peek_on_known_vectors(vectors_dir: Path) -> None:
    def headers(name: str) -> list[FrameHeader]:
        return [peek_header(f) for f in read_ivf(vectors_dir / name).frames]

    # 018 starts with a hidden key frame; 1425 changes size with the scale bits set.
    first = headers("vp80-00-comprehensive-018.ivf")[0]
    assert first.key_frame and not first.show_frame
    keys = [h for h in headers("vp80-03-segmentation-1425.ivf") if h.key_frame]
    scaled = {(h.width, h.height, h.horiz_scale) for h in keys}
    assert scaled == {(176, 144, 3), (212, 173, 2), (282, 231, 1)}
    assert {h.token_partitions for h in headers("vp80-04-partitions-1406.ivf")} == {8}
    assert {h.version for h in headers("vp80-00-comprehensive-005.ivf")} == {3}


def test_reference_slots_follow_libvpx_copy_order() -> None:
    blank = FrameHeader(**dict.fromkeys(f.name for f in dataclasses.fields(FrameHeader)))

    def inter(**flags: bool | int) -> FrameHeader:
        return dataclasses.replace(blank, **{"key_frame": False, "refresh_last": True, **flags})

    key = inter(key_frame=True)
    frames = [
        key,
        inter(),  # last = 1
        inter(refresh_golden=True, refresh_last=False),  # golden = 2
        inter(copy_to_altref=1, copy_to_golden=2, refresh_last=False),
    ]
    # Frame 3 copies last (1) into altref first, so golden copies the *new* altref: 1, not 0.
    assert reference_slots(frames) == [(0, 0, 0), (1, 0, 0), (1, 2, 0), (1, 1, 1)]


def test_oracles_agree_on_damaged_frames(vectors_dir: Path, tmp_path: Path) -> None:
    """test_bad_input holds accepted damaged frames to PyAV's libvpx: vpxdec must agree."""
    frames = read_ivf(vectors_dir / "vp80-00-comprehensive-016.ivf").frames[:2]
    path = tmp_path / "cut.ivf"
    for cut in range(60, len(frames[1]) + 1, 7):
        damaged = [frames[0], frames[1][:cut]]
        path.write_bytes(join_ivf(damaged, 176, 144))
        try:
            shown = [f for f in pyav_decode_each(damaged) if f is not None]
        except Exception:  # noqa: BLE001 - libvpx rejected the cut frame: only the key frame shows
            shown = [f for f in pyav_decode_each(damaged[:1]) if f is not None]
        assert vpxdec_frames(path, damaged=True) == shown, f"cut at {cut}"
