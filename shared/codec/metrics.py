"""Picture quality: SSIM and PSNR (SSIM's window sums compiled in `ssim_windows`, the rest
numpy).

SSIM is libvpx's (`vpx_ssim2` / `vpx_calc_ssim` in vpx_dsp/ssim.c, the metric `vpxenc
--tune=ssim` optimises and ExCamera's results report): unweighted 8x8 windows whose corners lie
on a 4-pixel grid (so windows overlap and straddle block edges, which penalises blocking), the
constants C1 = (0.01 * 255)^2 and C2 = (0.03 * 255)^2 scaled to window sums exactly as libvpx
does in integers, and the plane's score the mean over its windows. Per picture, planes are
combined libvpx's way: 0.8 * Y + 0.1 * U + 0.1 * V. Results equal libvpx's up to the order of
floating-point summation. (Not the Gaussian 11x11 SSIM of Wang et al.; scores differ slightly.)

PSNR is 10 * log10(255^2 / MSE), capped at `MAX_PSNR` dB for identical pictures as libvpx caps
it; over several planes (or pictures) the squared errors and sample counts are pooled first.

`ssim(a, b)` and `psnr(a, b)` take two `Image`s (planes="all" or "y") or two 2-D uint8 arrays.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from .image import Image

__all__ = [
    "MAX_PSNR",
    "MAX_SSIM_DB",
    "plane_ssim",
    "psnr",
    "psnr_from_sse",
    "sse",
    "ssim",
    "ssim_db",
]

MAX_PSNR = 100.0  # libvpx's cap (MAX_PSNR in vpx_dsp/psnr.c)
MAX_SSIM_DB = 100.0  # the same cap for SSIM in dB, so a perfect score stays a finite number

# libvpx's constants for a 64-sample window: 64^2 * (0.01 * 255)^2 and 64^2 * (0.03 * 255)^2.
_CC1 = 26634
_CC2 = 239708
# libvpx's plane weights in vpx_calc_ssim.
_PLANE_WEIGHTS = (0.8, 0.1, 0.1)

Planes = Literal["all", "y"]
Picture = Image | np.ndarray


def _similarity(
    s: np.ndarray, r: np.ndarray, ss: np.ndarray, rr: np.ndarray, sr: np.ndarray, count: int
) -> np.ndarray:
    """libvpx's `similarity()` over arrays of window sums, in int64 as libvpx computes it."""
    c1 = (_CC1 * count * count) >> 12
    c2 = (_CC2 * count * count) >> 12
    numerator = (2 * s * r + c1) * (2 * count * sr - 2 * s * r + c2)
    denominator = (s * s + r * r + c1) * (count * ss - s * s + count * rr - r * r + c2)
    return numerator / denominator


def plane_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two same-shaped 2-D uint8 planes (libvpx's `vpx_ssim2`).

    A plane smaller than 8x8 has no window; it is scored as one window covering all of it.
    """
    _check_planes(a, b)
    if a.shape[0] >= 8 and a.shape[1] >= 8:
        from .ssim_windows import mean_window_similarity  # compiled; imported when first needed

        return mean_window_similarity(a, b)
    x = np.asarray(a, dtype=np.int64)
    y = np.asarray(b, dtype=np.int64)
    sums = [np.array([int(v.sum())], np.int64) for v in (x, y, x * x, y * y, x * y)]
    return float(_similarity(*sums, count=x.size)[0])


def sse(a: np.ndarray, b: np.ndarray) -> int:
    """Sum of squared differences of two same-shaped uint8 planes."""
    _check_planes(a, b)
    difference = np.asarray(a, dtype=np.int32) - np.asarray(b, dtype=np.int32)
    return int(np.einsum("ij,ij->", difference, difference, dtype=np.int64))


def psnr_from_sse(total_sse: int, samples: int) -> float:
    """PSNR in dB of `samples` 8-bit samples whose squared errors sum to `total_sse`."""
    if samples <= 0:
        raise ValueError("PSNR of no samples")
    if total_sse == 0:
        return MAX_PSNR
    return min(MAX_PSNR, 10 * math.log10(255.0 * 255.0 * samples / total_sse))


def ssim_db(value: float) -> float:
    """SSIM as decibels, -10 * log10(1 - ssim) (how ExCamera reports it), capped at 100."""
    if value >= 1.0:
        return MAX_SSIM_DB
    return min(MAX_SSIM_DB, -10 * math.log10(1.0 - value))


def ssim(a: Picture, b: Picture, planes: Planes = "all") -> float:
    """SSIM of two pictures: Images (planes "all": 0.8 Y + 0.1 U + 0.1 V; "y": luma only) or
    two 2-D uint8 arrays (one plane; `planes` is ignored)."""
    pairs = _plane_pairs(a, b, planes)
    if len(pairs) == 1:
        return plane_ssim(*pairs[0])
    return sum(
        weight * plane_ssim(x, y) for weight, (x, y) in zip(_PLANE_WEIGHTS, pairs, strict=True)
    )


def psnr(a: Picture, b: Picture, planes: Planes = "all") -> float:
    """PSNR in dB of two pictures (Images: all planes' samples pooled, or "y"; or two planes)."""
    pairs = _plane_pairs(a, b, planes)
    total = sum(sse(x, y) for x, y in pairs)
    samples = sum(x.size for x, _ in pairs)
    return psnr_from_sse(total, samples)


def _plane_pairs(a: Picture, b: Picture, planes: Planes) -> list[tuple[np.ndarray, np.ndarray]]:
    if isinstance(a, Image) and isinstance(b, Image):
        if a.size != b.size:
            raise ValueError(f"pictures differ in size: {a.width}x{a.height}, {b.width}x{b.height}")
        if planes == "y":
            return [(a.y, b.y)]
        if planes != "all":
            raise ValueError(f"planes must be 'all' or 'y', got {planes!r}")
        return list(zip(a.planes, b.planes, strict=True))
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return [(a, b)]
    raise TypeError("compare two Images or two 2-D uint8 arrays")


def _check_planes(a: np.ndarray, b: np.ndarray) -> None:
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"planes must be 2-D and the same shape, got {a.shape} and {b.shape}")
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise TypeError(f"planes must be uint8, got {a.dtype} and {b.dtype}")
    if a.size == 0:
        raise ValueError("planes must not be empty")
