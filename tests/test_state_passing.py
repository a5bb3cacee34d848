"""The decoder is a pure function of (state, frame), and states survive serialization.

- purity: decoding the same (state, frame) twice gives equal states and images and leaves the
  input state untouched, even when the caller scribbles on a returned image;
- resumability: for every split point k, the state after frame k-1, serialized and restored,
  decodes the rest of the stream exactly as the straight decode did (streams with hidden frames,
  segmentation, non-reference frames, size changes, three distinct references);
- serialization: round trips, a stable digest, and StateFormatError for anything that is not a
  state this build wrote; the serialized size at 1024x436 and 1280x720 is recorded.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from decoder_support import Decoded, decode_all, require_decoder
from libvpx_oracle import peek_header, read_ivf, reference_slots

codec = require_decoder()
DecoderState = codec.DecoderState
StateFormatError = codec.StateFormatError

# Conformance vectors with something to carry across a split point.
SPLIT_VECTORS = [
    "vp80-00-comprehensive-018.ivf",  # hidden first key frame
    "vp80-00-comprehensive-010.ivf",  # segmentation enabled mid-stream without a map update
    "vp80-03-segmentation-1437.ivf",  # segment map persisting across frames
    "vp80-03-segmentation-1436.ivf",  # size change with segmentation
    "vp80-03-segmentation-1425.ivf",  # key frames with scale bits, three sizes
    "vp80-05-sharpness-1439.ivf",  # a hidden frame mid-stream
]
SPLIT_GENERATED = [
    "altref-2pass",  # hidden alt-ref frame, three distinct references
    "temporal-layers",  # non-reference frames, segmentation toggled
    "cbr-rt-segmentation",
    "error-resilient",  # probabilities that must *not* persist
    "keyframes-every-3",
    "size-change",
    "spatial-resampling",
]
# Split tests are quadratic in the stream length; 30 frames keep 010's segmentation switch-on.
MAX_FRAMES = 30
STREAMS = [f"vector:{n}" for n in SPLIT_VECTORS] + [f"generated:{n}" for n in SPLIT_GENERATED]


@pytest.fixture
def load(request: pytest.FixtureRequest) -> Callable[[str], list[bytes]]:
    """Frames of "vector:NAME" or "generated:NAME"."""

    def frames(spec: str) -> list[bytes]:
        kind, name = spec.split(":", 1)
        if kind == "vector":
            path = request.getfixturevalue("vectors_dir") / name
        else:
            path = request.getfixturevalue("vp8_stream")(name)
        return read_ivf(path).frames[:MAX_FRAMES]

    return frames


def i420(image: Any) -> bytes | None:
    return None if image is None else image.to_i420()


def assert_continues_like(straight: Decoded, frames: list[bytes], k: int, state: Any) -> None:
    """Decoding frames[k:] from `state` must reproduce the straight decode exactly."""
    for index in range(k, len(frames)):
        state, image = codec.decode(state, frames[index])
        assert i420(image) == i420(straight.images[index]), f"resumed at {k}: frame {index} differs"
        assert state == straight.states[index], f"resumed at {k}: state after {index} differs"


# --- purity --------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", STREAMS)
def test_decode_is_pure(load: Callable[[str], list[bytes]], spec: str) -> None:
    frames = load(spec)
    straight = decode_all(codec, frames)
    again = decode_all(codec, frames)
    assert again.states == straight.states  # deterministic across runs

    for k, frame in enumerate(frames):
        before = straight.states[k - 1] if k else DecoderState.initial()
        serialized, digest = before.to_bytes(), before.digest()
        state1, image1 = codec.decode(before, frame)
        state2, image2 = codec.decode(before, frame)
        assert state1 == state2 == straight.states[k]
        assert state1.digest() == state2.digest()
        assert i420(image1) == i420(image2) == i420(straight.images[k])
        assert before.to_bytes() == serialized and before.digest() == digest, f"frame {k}"


def test_images_are_independent_of_later_decoding(load: Callable[[str], list[bytes]]) -> None:
    frames = load("generated:altref-2pass")
    straight = decode_all(codec, frames)
    bytes_then = [i420(image) for image in straight.images]
    # Scribble on every image we can write to; neither earlier images nor states may change.
    for image in straight.shown:
        for plane in (image.y, image.u, image.v):
            with contextlib.suppress(ValueError):  # read-only planes are the better design
                plane[0, 0] ^= 0xFF
    fresh = decode_all(codec, frames)
    assert [i420(image) for image in fresh.images] == bytes_then
    assert_continues_like(fresh, frames, 1, straight.states[0])


# --- split points --------------------------------------------------------------------------


@pytest.mark.parametrize("spec", STREAMS)
def test_resume_at_every_split_point(load: Callable[[str], list[bytes]], spec: str) -> None:
    frames = load(spec)
    straight = decode_all(codec, frames)
    for k in range(1, len(frames)):
        kept = straight.states[k - 1]
        restored = DecoderState.from_bytes(kept.to_bytes())
        assert restored == kept and restored.digest() == kept.digest(), f"split {k}"
        assert restored.to_bytes() == kept.to_bytes()
        assert_continues_like(straight, frames, k, restored)


def test_all_three_references_survive(load: Callable[[str], list[bytes]]) -> None:
    frames = load("generated:altref-2pass")
    slots = reference_slots(peek_header(f) for f in frames)
    # Split points whose incoming state holds three different references; the frames after
    # them predict from the alt-ref (its sign bias is set), so a lost reference shows.
    splits = [k + 1 for k, s in enumerate(slots[:-1]) if len(set(s)) == 3]
    assert splits, "stream has no point where the three references differ"
    straight = decode_all(codec, frames)
    for k in splits[:3]:
        restored = DecoderState.from_bytes(straight.states[k - 1].to_bytes())
        assert_continues_like(straight, frames, k, restored)


# --- serialization -------------------------------------------------------------------------


def test_initial_state_round_trip(vectors_dir: Path) -> None:
    initial = DecoderState.initial()
    restored = DecoderState.from_bytes(initial.to_bytes())
    assert restored == initial and restored.digest() == initial.digest()
    key = read_ivf(vectors_dir / "vp80-00-comprehensive-001.ivf").frames[0]
    assert i420(codec.decode(restored, key)[1]) == i420(codec.decode(initial, key)[1])


def test_digest_is_stable_and_discriminating(vectors_dir: Path) -> None:
    frames = read_ivf(vectors_dir / "vp80-00-comprehensive-001.ivf").frames[:4]
    first, second = decode_all(codec, frames), decode_all(codec, frames)
    digests = [s.digest() for s in first.states]
    assert digests == [s.digest() for s in second.states]
    assert digests == [s.digest() for s in first.states]
    assert len(set(digests)) == len(digests), "different states share a digest"
    assert DecoderState.initial().digest() not in digests
    assert all(isinstance(d, str) and d for d in digests)


@pytest.fixture(scope="module")
def a_state(vectors_dir: Path) -> Any:
    frames = read_ivf(vectors_dir / "vp80-03-segmentation-1437.ivf").frames[:3]
    return decode_all(codec, frames).states[-1]


def _corruptions(data: bytes) -> dict[str, bytes]:
    n = len(data)
    spots = {0, 3, 4, 5, 6, 7, 8, 11, 12, 13, n // 3, n // 2, n - 2, n - 1}
    out = {f"flip byte {i}": data[:i] + bytes([data[i] ^ 0x5A]) + data[i + 1 :] for i in spots}
    out |= {f"truncated to {m}": data[:m] for m in sorted({0, 1, 4, 11, 12, 13, n // 2, n - 1})}
    out["wrong magic"] = b"XXXX" + data[4:]
    out["trailing byte"] = data + b"\0"
    out["doubled"] = data + data
    out["text"] = b"not a decoder state at all"
    out["an IVF header"] = b"DKIF" + bytes(28)
    return out


def test_corrupt_states_are_rejected(a_state: Any) -> None:
    problems = []
    for what, bad in _corruptions(a_state.to_bytes()).items():
        try:
            DecoderState.from_bytes(bad)
        except StateFormatError:
            continue
        except Exception as exc:  # noqa: BLE001 - reporting exactly this is the point
            problems.append(f"{what}: raised {exc!r}")
        else:
            problems.append(f"{what}: accepted")
    assert not problems, "\n".join(problems)


def test_future_version_is_rejected(a_state: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    module = sys.modules[type(a_state).__module__]
    if not isinstance(getattr(module, "FORMAT_VERSION", None), int):
        pytest.fail(f"{module.__name__} must expose FORMAT_VERSION (read when serializing)")
    current = a_state.to_bytes()
    monkeypatch.setattr(module, "FORMAT_VERSION", module.FORMAT_VERSION + 1)
    future = a_state.to_bytes()
    monkeypatch.undo()
    assert future != current, "patching FORMAT_VERSION did not change the serialized state"
    with pytest.raises(StateFormatError):
        DecoderState.from_bytes(future)


@pytest.mark.parametrize("name", ["sintel-1024x436", "bbb-720p"])
def test_serialized_size(
    vp8_stream: Callable[[str], Path], name: str, record_property: Callable[[str, object], None]
) -> None:
    stream = read_ivf(vp8_stream(name))
    state = decode_all(codec, stream.frames).states[-1]
    started = time.perf_counter()
    data = state.to_bytes()
    middle = time.perf_counter()
    assert DecoderState.from_bytes(data) == state
    ended = time.perf_counter()
    size = f"{stream.width}x{stream.height}"
    record_property(f"state_bytes_{size}", len(data))
    timing = (
        f"to_bytes {(middle - started) * 1e3:.1f} ms, from_bytes {(ended - middle) * 1e3:.1f} ms"
    )
    record_property(f"state_time_{size}", timing)
    print(f"serialized state at {size}: {len(data)} bytes")
    # Loose sanity bound: less than three uncompressed 4:2:0 pictures.
    assert len(data) < 3 * stream.width * stream.height * 3 // 2
