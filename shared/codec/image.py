"""`Image`: one decoded or source picture, planar 8-bit 4:2:0 at its display size.

An `Image` is a value: its three planes are read-only numpy views, so the decoder can hand out
views of its reference frames without copying and nobody downstream can scribble on them.
Chroma planes cover odd sizes by rounding up, as libvpx and the Y4M/I420 file formats do.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Image", "chroma_size", "i420_frame_size"]


def chroma_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) of each chroma plane of a 4:2:0 picture: half the luma size, rounded up."""
    return (width + 1) // 2, (height + 1) // 2


def i420_frame_size(width: int, height: int) -> int:
    """Bytes of one raw I420 picture: Y, then U, then V, each tightly packed."""
    cw, ch = chroma_size(width, height)
    return width * height + 2 * cw * ch


def _check_dimensions(width: int, height: int) -> None:
    # bool is an int subclass; Image(True, ...) is a bug, not a 1-pixel picture.
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")


def _read_only_plane(plane: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(plane, np.ndarray):
        raise TypeError(f"plane {name} must be a numpy array, not {type(plane).__name__}")
    if plane.dtype != np.uint8:
        raise TypeError(f"plane {name} must have dtype uint8, not {plane.dtype}")
    if plane.ndim != 2:
        raise ValueError(f"plane {name} must be 2-D, got shape {plane.shape}")
    # A fresh view: marking it read-only leaves the caller's array as it was.
    view = plane.view()
    view.flags.writeable = False
    return view


class Image:
    """A picture in planar 8-bit 4:2:0: `y` is (height, width), `u` and `v` are
    ((height + 1) // 2, (width + 1) // 2).

    The planes are stored as read-only views, not copies: the caller must not modify the arrays
    it passed in afterwards.
    """

    __slots__ = ("_y", "_u", "_v")

    def __init__(self, y: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
        y = _read_only_plane(y, "y")
        u = _read_only_plane(u, "u")
        v = _read_only_plane(v, "v")
        height, width = y.shape
        if width == 0 or height == 0:
            raise ValueError(f"image must not be empty, got y plane of shape {y.shape}")
        cw, ch = chroma_size(width, height)
        for name, plane in (("u", u), ("v", v)):
            if plane.shape != (ch, cw):
                raise ValueError(
                    f"plane {name} of a {width}x{height} image must have shape {(ch, cw)}, "
                    f"got {plane.shape}"
                )
        self._y = y
        self._u = u
        self._v = v

    @classmethod
    def blank(cls, width: int, height: int, y: int = 0, u: int = 128, v: int = 128) -> Image:
        """A picture filled with one colour (black by default)."""
        _check_dimensions(width, height)
        cw, ch = chroma_size(width, height)
        return cls(
            np.full((height, width), y, np.uint8),
            np.full((ch, cw), u, np.uint8),
            np.full((ch, cw), v, np.uint8),
        )

    @classmethod
    def from_i420(cls, data: bytes | bytearray | memoryview, width: int, height: int) -> Image:
        """Wrap one raw I420 picture (the layout of `to_i420`). `bytes` input is not copied."""
        _check_dimensions(width, height)
        expected = i420_frame_size(width, height)
        if len(data) != expected:
            raise ValueError(
                f"I420 data for a {width}x{height} image must be {expected} bytes, got {len(data)}"
            )
        cw, ch = chroma_size(width, height)
        flat = np.frombuffer(data, np.uint8)
        luma = width * height
        chroma = cw * ch
        return cls(
            flat[:luma].reshape(height, width),
            flat[luma : luma + chroma].reshape(ch, cw),
            flat[luma + chroma :].reshape(ch, cw),
        )

    @property
    def width(self) -> int:
        return int(self._y.shape[1])

    @property
    def height(self) -> int:
        return int(self._y.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.width, self.height

    @property
    def y(self) -> np.ndarray:
        return self._y

    @property
    def u(self) -> np.ndarray:
        return self._u

    @property
    def v(self) -> np.ndarray:
        return self._v

    @property
    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._y, self._u, self._v

    def to_i420(self) -> bytes:
        """Y rows, then U rows, then V rows, no padding: one frame as `vpxdec --i420` writes it."""
        # tobytes() packs strided views (e.g. a decoder's bordered planes) row by row.
        return b"".join(plane.tobytes() for plane in self.planes)

    def copy(self) -> Image:
        """An Image owning compact copies of its planes (detached from any larger buffer)."""
        return Image(*(np.ascontiguousarray(plane).copy() for plane in self.planes))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Image):
            return NotImplemented
        return self.size == other.size and all(
            np.array_equal(a, b) for a, b in zip(self.planes, other.planes, strict=True)
        )

    # Equality is by pixels, which are too costly to hash on every dict lookup.
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Image {self.width}x{self.height} 4:2:0>"
