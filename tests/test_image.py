"""`shared.codec.image.Image`: validation, read-only planes, I420 layout, equality."""

from __future__ import annotations

import numpy as np
import pytest

from shared.codec.image import Image, chroma_size, i420_frame_size


def _random_image(width: int, height: int, seed: int = 0) -> Image:
    rng = np.random.default_rng(seed)
    cw, ch = chroma_size(width, height)
    return Image(
        rng.integers(0, 256, (height, width), np.uint8),
        rng.integers(0, 256, (ch, cw), np.uint8),
        rng.integers(0, 256, (ch, cw), np.uint8),
    )


@pytest.mark.parametrize(
    ("width", "height", "chroma"),
    [(176, 144, (88, 72)), (175, 143, (88, 72)), (1, 1, (1, 1)), (3, 2, (2, 1)), (2, 5, (1, 3))],
)
def test_chroma_rounds_up(width: int, height: int, chroma: tuple[int, int]) -> None:
    assert chroma_size(width, height) == chroma
    image = Image.blank(width, height)
    assert image.size == (width, height)
    assert image.u.shape == image.v.shape == (chroma[1], chroma[0])
    assert i420_frame_size(width, height) == width * height + 2 * chroma[0] * chroma[1]
    assert len(image.to_i420()) == i420_frame_size(width, height)


def test_properties() -> None:
    image = _random_image(175, 143)
    assert (image.width, image.height) == (175, 143)
    assert image.y.shape == (143, 175)
    assert image.planes == (image.y, image.u, image.v)
    assert repr(image) == "<Image 175x143 4:2:0>"


@pytest.mark.parametrize(
    ("y", "u", "v", "words"),
    [
        ((4, 4), (2, 2), (2, 3), "plane v of a 4x4 image must have shape (2, 2)"),
        ((4, 4), (3, 2), (2, 2), "plane u"),
        ((5, 5), (2, 2), (2, 2), "must have shape (3, 3)"),  # odd sizes round up, not down
        ((0, 4), (0, 2), (0, 2), "must not be empty"),
    ],
)
def test_bad_plane_shapes(y: tuple, u: tuple, v: tuple, words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        Image(np.zeros(y, np.uint8), np.zeros(u, np.uint8), np.zeros(v, np.uint8))


def test_bad_plane_types() -> None:
    ok = np.zeros((2, 2), np.uint8)
    with pytest.raises(TypeError, match="dtype uint8"):
        Image(np.zeros((4, 4), np.int16), ok, ok)
    with pytest.raises(TypeError, match="numpy array"):
        Image([[0] * 4] * 4, ok, ok)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2-D"):
        Image(np.zeros(16, np.uint8), ok, ok)


def test_planes_are_read_only_views() -> None:
    y = np.zeros((4, 4), np.uint8)
    u = np.zeros((2, 2), np.uint8)
    image = Image(y, u, u.copy())
    with pytest.raises(ValueError, match="read-only"):
        image.y[0, 0] = 1
    # The caller's own array stays writable; the image is a view of it, not a copy.
    y[0, 0] = 7
    assert image.y[0, 0] == 7
    detached = image.copy()
    y[0, 0] = 9
    assert detached.y[0, 0] == 7


def test_strided_planes() -> None:
    # Decoders hand out windows of bordered planes; to_i420 must pack them row by row.
    big = _random_image(64, 48, seed=3)
    y = big.y[5 : 5 + 21, 7 : 7 + 33]
    u = big.u[2 : 2 + 11, 3 : 3 + 17]
    v = big.v[1 : 1 + 11, 4 : 4 + 17]
    image = Image(y, u, v)
    assert not image.y.flags.c_contiguous
    packed = np.ascontiguousarray(y).tobytes() + u.tobytes() + v.tobytes()
    assert image.to_i420() == packed
    assert Image.from_i420(packed, 33, 21) == image


@pytest.mark.parametrize(("width", "height"), [(176, 144), (175, 143), (1, 1), (1432, 888)])
def test_i420_round_trip(width: int, height: int) -> None:
    image = _random_image(width, height, seed=width)
    data = image.to_i420()
    cw, ch = chroma_size(width, height)
    # Y rows, then U rows, then V rows, nothing between them.
    assert data[: width * height] == image.y.tobytes()
    assert data[width * height : width * height + cw * ch] == image.u.tobytes()
    assert data[width * height + cw * ch :] == image.v.tobytes()
    again = Image.from_i420(data, width, height)
    assert again == image
    assert not again.y.flags.writeable


def test_from_i420_errors() -> None:
    with pytest.raises(ValueError, match=r"175x143 image must be 37697 bytes, got 37698"):
        Image.from_i420(bytes(37698), 175, 143)
    with pytest.raises(ValueError, match="width must be positive"):
        Image.from_i420(b"", 0, 2)
    with pytest.raises(TypeError, match="height must be an int"):
        Image.from_i420(bytes(6), 2, 2.0)  # type: ignore[arg-type]


def test_equality() -> None:
    a = _random_image(9, 7, seed=1)
    b = Image(a.y.copy(), a.u.copy(), a.v.copy())
    assert a == b
    v = a.v.copy()
    v[-1, -1] ^= 1
    assert a != Image(a.y, a.u, v)
    assert a != _random_image(7, 9, seed=1)
    assert a != "not an image"
    with pytest.raises(TypeError):
        hash(a)


def test_blank() -> None:
    image = Image.blank(5, 3, y=16, u=1, v=2)
    assert (image.y == 16).all() and (image.u == 1).all() and (image.v == 2).all()
    assert Image.blank(5, 3) == Image.from_i420(bytes(15) + b"\x80" * 12, 5, 3)
