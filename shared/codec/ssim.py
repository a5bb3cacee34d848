"""SSIM and PSNR of 8-bit planes, as video codecs measure them.

SSIM uses 8x8 windows every 4 pixels with flat weights (the libvpx/x264 convention), averaged
over windows; for a picture, luma and chroma are combined 0.8 / 0.1 / 0.1 like libvpx's
`vpx_calc_ssim`. `ssim_db` is -10 log10(1 - SSIM), the scale the ExCamera paper reports.
"""

from __future__ import annotations

import math

import numpy as np

from .image import Image

_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2
_WINDOW = 8
_STEP = 4


def _window_sums(plane: np.ndarray) -> np.ndarray:
    """Sums over every 8x8 window whose corner lies on the 4-pixel grid."""
    table = np.zeros((plane.shape[0] + 1, plane.shape[1] + 1), np.float64)
    np.cumsum(np.cumsum(plane, axis=0), axis=1, out=table[1:, 1:])
    rows = np.arange(0, plane.shape[0] - _WINDOW + 1, _STEP)
    cols = np.arange(0, plane.shape[1] - _WINDOW + 1, _STEP)
    r0, c0 = np.meshgrid(rows, cols, indexing="ij")
    r1, c1 = r0 + _WINDOW, c0 + _WINDOW
    return table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0]


def plane_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two same-shaped 8-bit planes (1.0 when identical)."""
    if a.shape != b.shape:
        raise ValueError(f"planes differ in shape: {a.shape} vs {b.shape}")
    if a.shape[0] < _WINDOW or a.shape[1] < _WINDOW:
        # Too small for a window: fall back to one window over the whole plane.
        return _ssim_stats(a.astype(np.float64), b.astype(np.float64))
    x = a.astype(np.float64)
    y = b.astype(np.float64)
    n = _WINDOW * _WINDOW
    sx, sy = _window_sums(x), _window_sums(y)
    sxx, syy, sxy = _window_sums(x * x), _window_sums(y * y), _window_sums(x * y)
    mx, my = sx / n, sy / n
    vx = sxx / n - mx * mx
    vy = syy / n - my * my
    cov = sxy / n - mx * my
    ssim = ((2 * mx * my + _C1) * (2 * cov + _C2)) / ((mx * mx + my * my + _C1) * (vx + vy + _C2))
    return float(ssim.mean())


def _ssim_stats(x: np.ndarray, y: np.ndarray) -> float:
    mx, my = x.mean(), y.mean()
    vx, vy = x.var(), y.var()
    cov = ((x - mx) * (y - my)).mean()
    numerator = (2 * mx * my + _C1) * (2 * cov + _C2)
    return float(numerator / ((mx * mx + my * my + _C1) * (vx + vy + _C2)))


def ssim(a: Image, b: Image) -> float:
    """SSIM of two pictures: 0.8 x luma + 0.1 x each chroma plane."""
    return (0.8 * plane_ssim(a.y, b.y) + 0.1 * plane_ssim(a.u, b.u)
            + 0.1 * plane_ssim(a.v, b.v))


def ssim_db(value: float) -> float:
    """SSIM on the decibel scale: -10 log10(1 - SSIM); 100 dB for identical pictures."""
    return 100.0 if value >= 1.0 else -10.0 * math.log10(1.0 - value)


def mse(a: Image, b: Image) -> float:
    """Mean squared error over all samples of the three planes."""
    total = 0.0
    count = 0
    for pa, pb in zip(a.planes, b.planes, strict=True):
        d = pa.astype(np.float64) - pb.astype(np.float64)
        total += float(np.sum(d * d))
        count += d.size
    return total / count


def psnr(a: Image, b: Image) -> float:
    """PSNR over all three planes, capped at 100 dB for identical pictures."""
    error = mse(a, b)
    return 100.0 if error == 0 else 10.0 * math.log10(255.0 * 255.0 / error)
