"""The 61 standard VP8 test vectors, bit-exact.

Per vector: the MD5 of each shown frame against the official `.md5` file (so a failure names the
first bad frame, and then libvpx's frame says which plane and how many pixels), the frame size
against the one in the `.md5` file's frame names, and the SHA-1 of all shown frames' I420
against `SHA1SUMS` (what `vpxdec --i420 -o - VECTOR | sha1sum` prints).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from decoder_support import decode_all, picture_difference, require_decoder, vector_names
from libvpx_oracle import read_ivf, vpxdec_frames

codec = require_decoder()

VECTORS = vector_names()
_FRAME_NAME = re.compile(r"-(\d+)x(\d+)-\d+\.i420$")


def expected_frames(vectors_dir: Path, name: str) -> list[tuple[str, tuple[int, int]]]:
    """(md5, (width, height)) per shown frame from the official `.md5` file."""
    out = []
    for line in (vectors_dir / f"{name}.md5").read_text().splitlines():
        if line.strip():
            md5, file = line.split()
            match = _FRAME_NAME.search(file)
            assert match, f"unexpected frame name {file!r} in {name}.md5"
            out.append((md5, (int(match[1]), int(match[2]))))
    return out


@pytest.mark.parametrize("name", VECTORS)
def test_vector(vectors_dir: Path, name: str) -> None:
    frames = read_ivf(vectors_dir / name).frames
    shown = decode_all(codec, frames).shown
    expected = expected_frames(vectors_dir, name)
    assert len(shown) == len(expected), f"{len(shown)} shown frames, expected {len(expected)}"

    for index, (image, (md5, size)) in enumerate(zip(shown, expected, strict=True)):
        assert (image.width, image.height) == size, f"shown frame {index}: wrong size"
        if hashlib.md5(image.to_i420()).hexdigest() != md5:
            detail = picture_difference(vpxdec_frames(vectors_dir / name)[index], image)
            pytest.fail(f"{name}: shown frame {index} differs from libvpx: {detail}")

    sums = dict(
        reversed(line.split()) for line in (vectors_dir / "SHA1SUMS").read_text().splitlines()
    )
    digest = hashlib.sha1(b"".join(image.to_i420() for image in shown)).hexdigest()
    assert digest == sums[name]
