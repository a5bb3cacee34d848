"""`shared.codec.metrics`: libvpx's SSIM and PSNR.

The SSIM is checked against a direct transcription of libvpx's `vpx_ssim2` (one 8x8 window at
a time, in Python integers), so the compiled window sums (`ssim_windows`) are known to cover
the same windows with the same constants and integer arithmetic.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from shared.codec import metrics
from shared.codec.image import Image, chroma_size


def _libvpx_ssim2(a: np.ndarray, b: np.ndarray) -> float:
    """libvpx's vpx_ssim2 window by window: 8x8 windows at every 4th row and column."""
    c1 = (26634 * 64 * 64) >> 12
    c2 = (239708 * 64 * 64) >> 12
    total, windows = 0.0, 0
    for i in range(0, a.shape[0] - 7, 4):
        for j in range(0, a.shape[1] - 7, 4):
            s = [int(v) for v in a[i : i + 8, j : j + 8].ravel()]
            r = [int(v) for v in b[i : i + 8, j : j + 8].ravel()]
            sum_s, sum_r = sum(s), sum(r)
            sum_ss = sum(v * v for v in s)
            sum_rr = sum(v * v for v in r)
            sum_sr = sum(p * q for p, q in zip(s, r, strict=True))
            numerator = (2 * sum_s * sum_r + c1) * (2 * 64 * sum_sr - 2 * sum_s * sum_r + c2)
            denominator = (sum_s * sum_s + sum_r * sum_r + c1) * (
                64 * sum_ss - sum_s * sum_s + 64 * sum_rr - sum_r * sum_r + c2
            )
            total += numerator / denominator
            windows += 1
    return total / windows


def _noisy_pair(shape: tuple[int, int], seed: int, noise: int = 25) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    a = ((rows * 7 + cols * 3) % 256).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-noise, noise + 1, shape), 0, 255).astype(np.uint8)
    return a, b


def _image(seed: int, width: int = 40, height: int = 24) -> Image:
    rng = np.random.default_rng(seed)
    cw, ch = chroma_size(width, height)
    planes = [
        rng.integers(0, 256, shape, np.uint8) for shape in ((height, width), (ch, cw), (ch, cw))
    ]
    return Image(*planes)


@pytest.mark.parametrize(
    "shape", [(8, 8), (16, 16), (17, 23), (144, 176), (37, 9), (72, 88), (11, 70), (31, 8)]
)
def test_ssim_equals_libvpx_window_by_window(shape: tuple[int, int]) -> None:
    a, b = _noisy_pair(shape, seed=sum(shape))
    assert metrics.plane_ssim(a, b) == pytest.approx(_libvpx_ssim2(a, b), rel=1e-12, abs=1e-12)


def test_ssim_of_identical_planes_is_one_and_symmetric() -> None:
    a, b = _noisy_pair((48, 64), seed=1)
    assert metrics.plane_ssim(a, a) == pytest.approx(1.0)
    assert metrics.plane_ssim(a, b) == pytest.approx(metrics.plane_ssim(b, a))
    assert metrics.plane_ssim(a, b) < 1.0


def test_ssim_falls_as_noise_grows() -> None:
    scores = [metrics.plane_ssim(*_noisy_pair((64, 64), seed=3, noise=k)) for k in (2, 10, 40)]
    assert scores[0] > scores[1] > scores[2]


def test_plane_smaller_than_a_window_is_one_window() -> None:
    a, b = _noisy_pair((4, 6), seed=5)
    value = metrics.plane_ssim(a, b)
    assert 0 < value < 1
    assert metrics.plane_ssim(a, a) == pytest.approx(1.0)


def test_image_ssim_weights_planes_as_libvpx() -> None:
    a, b = _image(1), _image(2)
    expected = (
        0.8 * metrics.plane_ssim(a.y, b.y)
        + 0.1 * metrics.plane_ssim(a.u, b.u)
        + 0.1 * metrics.plane_ssim(a.v, b.v)
    )
    assert metrics.ssim(a, b) == pytest.approx(expected)
    assert metrics.ssim(a, b, planes="y") == pytest.approx(metrics.plane_ssim(a.y, b.y))
    assert metrics.ssim(a, a) == pytest.approx(1.0)


def test_psnr_known_values() -> None:
    a = np.full((10, 10), 100, np.uint8)
    b = a + np.uint8(1)  # every sample off by one: MSE 1
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(255**2))
    assert metrics.psnr(a, a) == metrics.MAX_PSNR
    assert metrics.sse(a, b) == 100


def test_image_psnr_pools_all_planes() -> None:
    a, b = _image(3), _image(4)
    total = sum(metrics.sse(x, y) for x, y in zip(a.planes, b.planes, strict=True))
    samples = sum(plane.size for plane in a.planes)
    assert metrics.psnr(a, b) == pytest.approx(metrics.psnr_from_sse(total, samples))
    assert metrics.psnr(a, b, planes="y") == pytest.approx(metrics.psnr(a.y, b.y))


def test_ssim_db() -> None:
    assert metrics.ssim_db(0.99) == pytest.approx(20.0)
    assert metrics.ssim_db(0.9) == pytest.approx(10.0)
    assert metrics.ssim_db(1.0) == metrics.MAX_SSIM_DB


@pytest.mark.parametrize(
    ("a", "b", "error"),
    [
        (np.zeros((8, 8), np.uint8), np.zeros((8, 9), np.uint8), ValueError),
        (np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.int16), TypeError),
        (np.zeros((8, 8, 1), np.uint8), np.zeros((8, 8, 1), np.uint8), ValueError),
    ],
)
def test_bad_planes_are_refused(a: np.ndarray, b: np.ndarray, error: type[Exception]) -> None:
    with pytest.raises(error):
        metrics.ssim(a, b)
    with pytest.raises(error):
        metrics.psnr(a, b)


def test_images_of_different_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in size"):
        metrics.ssim(_image(1, 40, 24), _image(1, 32, 24))


def test_fast_enough_for_720p(record_property: pytest.RecordProperty) -> None:
    a, b = _image(5, 1280, 720), _image(6, 1280, 720)
    metrics.ssim(a, b)  # warm up
    began = time.perf_counter()
    for _ in range(5):
        metrics.ssim(a, b)
        metrics.psnr(a, b)
    per_frame = (time.perf_counter() - began) / 5
    record_property("ssim+psnr per 720p frame (ms)", round(per_frame * 1000, 1))
    assert per_frame < 0.5
