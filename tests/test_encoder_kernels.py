"""The encoder's SIMD kernels (shared/codec/encode_dsp.h) against their portable definitions and
against the mathematics they implement: the forward DCT against a floating-point DCT, the
quantizer against what quantization must satisfy. Bit-exactness of the encoder's output with
libvpx is tested end to end in test_encoder.py; these pin down the kernels themselves."""

import numpy as np
import pytest
from decoder_support import require_decoder

require_decoder()

from shared.codec.tables import table  # noqa: E402

from shared.codec import encoder  # noqa: E402


def _dct_basis() -> np.ndarray:
    n = np.arange(4)
    basis = np.array([np.cos((2 * n + 1) * k * np.pi / 8) for k in range(4)])
    basis[0] *= 0.5
    basis[1:] *= np.sqrt(0.5)
    return basis  # orthonormal rows


def _residual_pairs(rng: np.random.Generator, count: int):
    for k in range(count):
        if k % 4 == 0:  # extremes: full-scale residuals of both signs
            src = rng.choice([0, 255], size=(4, 8)).astype(np.uint8)
            pred = (255 - src).astype(np.uint8)
        else:
            src = rng.integers(0, 256, (4, 8), dtype=np.uint8)
            spread = int(rng.choice([2, 16, 255]))
            noise = rng.integers(-spread, spread + 1, (4, 8))
            pred = np.clip(src.astype(int) + noise, 0, 255).astype(np.uint8)
        yield src, pred


def test_forward_dct_simd_equals_portable_and_is_twice_the_orthonormal_dct():
    rng = np.random.default_rng(1)
    basis = _dct_basis()
    worst = 0.0
    for src, pred in _residual_pairs(rng, 2000):
        out = encoder._kernel_fdct(src, pred)
        assert (out[0] == out[2]).all() and (out[1] == out[2]).all()
        residual = src.astype(float) - pred.astype(float)
        for block in range(2):
            exact = 2 * basis @ residual[:, 4 * block:4 * block + 4] @ basis.T
            worst = max(worst, float(np.abs(out[0, block].reshape(4, 4) - exact).max()))
    assert worst <= 1.0, f"largest error {worst:.3f} of a coefficient"


@pytest.mark.parametrize("q_pair", [(4, 4), (8, 8), (17, 23), (91, 157), (132, 284)])
def test_quantize_simd_equals_portable_and_quantizes(q_pair):
    rng = np.random.default_rng(q_pair[1])
    zigzag = table("zigzag")
    dc_q, ac_q = q_pair
    for k in range(500):
        coeffs = rng.integers(-2048, 2049, 16).astype(np.int16)
        if k % 3 == 0:
            coeffs[rng.random(16) < 0.7] = 0
        first, rounding = k % 2, int(rng.integers(0, 129))
        (levels, dequantized, eob), (c_levels, c_dequantized, c_eob) = encoder._kernel_quantize(
            coeffs, first, dc_q, ac_q, rounding, rounding
        )
        assert (levels == c_levels).all() and (dequantized == c_dequantized).all()
        assert eob == c_eob
        q = np.full(16, ac_q)
        q[0] = dc_q
        assert (dequantized == levels.astype(int) * q).all()
        kept = np.arange(16) >= first
        # Within one step of the coefficient, never of the opposite sign, saturated at 2047.
        assert (np.abs(dequantized[kept].astype(int) - coeffs[kept]) < q[kept]).all() | (
            np.abs(levels[kept]) == 2047
        ).any()
        assert (levels[kept].astype(int) * coeffs[kept] >= 0).all()
        assert not first or levels[0] == 0
        # Rounds to nearest when the rounding offset is half a step, down with offset 0.
        if rounding == 128:
            error = np.abs(np.abs(coeffs[kept]) - np.abs(dequantized[kept]))
            assert (error <= q[kept] // 2 + 1).all()
        if rounding == 0:
            assert (np.abs(dequantized[kept]) <= np.abs(coeffs[kept])).all()
        nonzero = [n + 1 for n in range(16) if levels[zigzag[n]] != 0]
        assert eob == max(nonzero + [first])


def _spec_idct_add(coeffs: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Section 14.3's inverse DCT in plain integers (no 16-bit wrapping), added and clamped."""
    def sin(x):
        return (x * 35468) >> 16

    def cos(x):
        return x + ((x * 20091) >> 16)

    x = coeffs.astype(np.int64).reshape(4, 4)
    tmp = np.zeros((4, 4), np.int64)
    for i in range(4):
        a1, b1 = x[0, i] + x[2, i], x[0, i] - x[2, i]
        c1, d1 = sin(x[1, i]) - cos(x[3, i]), cos(x[1, i]) + sin(x[3, i])
        tmp[:, i] = [a1 + d1, b1 + c1, b1 - c1, a1 - d1]
    out = np.zeros((4, 4), np.int64)
    for r in range(4):
        t = tmp[r]
        a1, b1 = t[0] + t[2], t[0] - t[2]
        c1, d1 = sin(t[1]) - cos(t[3]), cos(t[1]) + sin(t[3])
        out[r] = [(a1 + d1 + 4) >> 3, (b1 + c1 + 4) >> 3, (b1 - c1 + 4) >> 3, (a1 - d1 + 4) >> 3]
    return np.clip(pred.astype(np.int64).reshape(4, 4) + out, 0, 255).astype(np.uint8)


def test_inverse_dct_simd_equals_portable_and_the_spec():
    """The SIMD inverse DCT (decoder and encoder reconstruction) against its portable
    definition on any input, and against section 14.3's arithmetic on every block whose sums
    stay within 16 bits (all a valid stream's dequantized blocks)."""
    rng = np.random.default_rng(7)
    for k in range(3000):
        scale = [8, 64, 512, 2048, 32767][k % 5]
        coeffs = rng.integers(-scale, scale + 1, 16).astype(np.int16)
        coeffs[rng.random(16) < 0.5 * (k % 2)] = 0
        pred = rng.integers(0, 256, 16, dtype=np.uint8)
        simd, portable = encoder._kernel_idct(coeffs, pred)
        assert (simd == portable).all(), coeffs
        if scale <= 2048:
            assert (simd == _spec_idct_add(coeffs, pred)).all(), coeffs


def test_empty_block_bound_holds_for_every_residual():
    """Blocks whose coefficient bound is below a quantizer's zero limit skip the transform
    (encoder.transform_strip), so the bound must hold for every residual: no coefficient of
    the forward DCT exceeds it, and the DC computed from the residual's sum is the DCT's. The
    SIMD statistics equal the portable ones, and a block under the limit quantizes to zeros."""
    rng = np.random.default_rng(7)
    ratios = []
    for k in range(3000):
        src = rng.integers(0, 256, (4, 16), dtype=np.uint8)
        if k % 5 == 0:  # extremes: full-scale residuals of both signs, and lone peaks
            src = rng.choice([0, 255], size=(4, 16)).astype(np.uint8)
            pred = (255 - src).astype(np.uint8)
        else:
            spread = int(rng.choice([1, 3, 8, 40, 255]))
            noise = rng.integers(-spread, spread + 1, (4, 16))
            if k % 5 == 1:
                noise = noise * (rng.random((4, 16)) < 0.1)
            pred = np.clip(src.astype(int) + noise, 0, 255).astype(np.uint8)
        stats, bounds, dcs = encoder._kernel_block_stats(src, pred)
        assert (stats[0] == stats[2]).all()
        assert (stats[1, :, :2] == stats[2, :, :2]).all()
        residual = src.astype(int) - pred.astype(int)
        for block in range(4):
            part = residual[:, 4 * block:4 * block + 4]
            assert stats[2, 0, block] == np.abs(part).sum() and stats[2, 1, block] == part.sum()
        coefficients = np.concatenate(
            [encoder._kernel_fdct(src[:, 8 * h:8 * h + 8], pred[:, 8 * h:8 * h + 8])[2]
             for h in range(2)])  # fmt: skip
        largest = np.abs(coefficients).max(axis=1)
        assert (largest <= bounds).all(), (largest, bounds)
        assert (coefficients[:, 0] == dcs).all()
        ratios.extend((bounds[largest > 0] / largest[largest > 0]).tolist())
        for block in range(4):
            for q, rounding in ((8, 85), (60, 85), (157, 96)):
                if bounds[block] < q - (rounding * q >> 8):
                    (levels, _, eob), _ = encoder._kernel_quantize(
                        coefficients[block], 0, q, q, rounding, rounding)
                    assert eob == 0 and not levels.any()
    assert min(ratios) <= 1.25  # and it is tight for some residuals: not a vacuous bound


def test_sad_simd_equals_portable_and_numpy():
    rng = np.random.default_rng(11)
    for k in range(300):
        a = rng.integers(0, 256, (16, 16), dtype=np.uint8)
        b = (255 - a) if k % 10 == 0 else rng.integers(0, 256, (16, 16), dtype=np.uint8)
        (simd16, portable16), (simd8, portable8) = encoder._kernel_sad(a, b)
        difference = np.abs(a.astype(int) - b.astype(int))
        assert simd16 == portable16 == difference.sum()
        assert simd8 == portable8 == difference[:8, :8].sum()
