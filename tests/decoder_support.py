"""Helpers shared by the decoder tests: the reference folder, skip-or-fail, the decoder import,
whole-stream decoding and readable descriptions of where two pictures differ.

A missing prerequisite (reference folder, compiled decoder, vpxenc) skips with its reason on a
development machine, but fails when CI=true: CI must never pass by skipping.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import numpy as np
import pytest
from libvpx_oracle import VPXDEC, VPXENC, RawFrame

IN_CI = os.environ.get("CI") == "true"
REPO = Path(__file__).resolve().parents[1]
VECTORS_SUBDIR = Path("vectors/vp8-test-vectors")


def unavailable(reason: str) -> NoReturn:
    """Skip (locally) or fail (CI) the current test or, at import time, the whole module."""
    if IN_CI:
        pytest.fail(f"{reason} [CI=true, so this fails instead of skipping]", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def shared_root() -> Path:
    """The reference folder beside the checkout, or $EXCAMERA_SHARED."""
    return Path(os.environ.get("EXCAMERA_SHARED") or REPO.parent / "shared")


def vector_names() -> list[str]:
    """Conformance vectors listed in SHA1SUMS, for parametrizing at collection time.

    Without the reference folder this returns a placeholder, so the test still runs and the
    `vectors_dir` fixture skips (or in CI fails) it with the reason; an empty parameter set
    would be skipped silently even in CI.
    """
    sums = shared_root() / VECTORS_SUBDIR / "SHA1SUMS"
    if not sums.is_file():
        return ["<vectors missing>"]
    return [line.split()[1] for line in sums.read_text().splitlines() if line.strip()]


def require_tools() -> None:
    for tool in (VPXENC, VPXDEC):
        if not shutil.which(tool):
            unavailable(f"{tool} is not installed (Debian package vpx-tools)")


def require_decoder() -> ModuleType:
    """`shared.codec` with its compiled decoder loaded; call at module level in decoder tests."""
    try:
        import shared.codec.decoder  # noqa: F401 - the compiled extension itself

        import shared.codec as codec

        # Resolve the lazily imported names now, so a half-built package is reported here.
        codec.DecoderState, codec.Image, codec.decode  # noqa: B018
    except ImportError as exc:
        unavailable(
            f"the compiled decoder is not available ({exc}); build the extensions in place "
            "first (e.g. `python setup.py build_ext --inplace`)"
        )
    return codec


# --- decoding whole streams --------------------------------------------------------------------


@dataclass
class Decoded:
    """A straight decode: the state after each frame, and each frame's image (None: hidden)."""

    states: list[Any]
    images: list[Any]

    @property
    def shown(self) -> list[Any]:
        return [image for image in self.images if image is not None]


def decode_all(codec: ModuleType, frames: Iterable[bytes], state: Any = None) -> Decoded:
    state = codec.DecoderState.initial() if state is None else state
    out = Decoded([], [])
    for index, frame in enumerate(frames):
        try:
            state, image = codec.decode(state, frame)
        except Exception as exc:  # a valid stream: any error is a test failure naming the frame
            raise AssertionError(f"decoding frame {index} raised {exc!r}") from exc
        out.states.append(state)
        out.images.append(image)
    return out


# --- describing differences ---------------------------------------------------------------------


def picture_difference(expected: RawFrame, image: Any) -> str | None:
    """None if `image` equals libvpx's frame, else which plane differs and by how much."""
    if (image.width, image.height) != (expected.width, expected.height):
        return f"size {image.width}x{image.height}, libvpx has {expected.width}x{expected.height}"
    for name, want in zip("yuv", expected.planes(), strict=True):
        got = np.asarray(getattr(image, name))
        if got.shape != want.shape:
            return f"plane {name} has shape {got.shape}, expected {want.shape}"
        wrong = got != want
        if wrong.any():
            row, col = np.argwhere(wrong)[0]
            return (
                f"plane {name}: {int(wrong.sum())} of {wrong.size} pixels differ, first at "
                f"row {row} col {col} (ours {got[row, col]}, libvpx {want[row, col]})"
            )
    if image.to_i420() != expected.data:
        return "planes equal but to_i420() differs from libvpx's I420 bytes"
    return None


def first_difference(expected: Sequence[RawFrame], shown: Sequence[Any]) -> str | None:
    """Describe the first shown frame (0-based, counting shown frames) that differs."""
    for index, (want, image) in enumerate(zip(expected, shown, strict=False)):
        problem = picture_difference(want, image)
        if problem:
            return f"shown frame {index}: {problem}"
    if len(expected) != len(shown):
        return f"{len(shown)} shown frames, libvpx shows {len(expected)}"
    return None
