"""Fixtures for the reference folder and for libvpx-generated streams.

- `shared_dir`: the reference folder beside the checkout (`../shared`), or $EXCAMERA_SHARED;
  `vectors_dir` (its `vectors/vp8-test-vectors`) and `video_dir` (its `video`). Missing: skip
  with the reason, or fail when CI=true.
- `stream_cache`: where generated streams are kept between runs: $EXCAMERA_TEST_CACHE, else
  `~/.cache/excamera-tests/`, else a pytest temporary directory. File names carry a hash of the
  generation recipe and the libvpx version, so a change of either regenerates.
- `vp8_stream(name)`: the IVF file of a stream from `vp8_streams.STREAMS`.

Measurements tests attach with `record_property` are echoed in the terminal summary, so they are
visible without `-s`.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# `pytest` (unlike `python -m pytest`) does not put the checkout on sys.path; fall back to the
# source tree when the package is not installed.
if importlib.util.find_spec("shared") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from decoder_support import VECTORS_SUBDIR, require_tools, shared_root, unavailable  # noqa: E402
from vp8_streams import STREAMS, MissingSource, build  # noqa: E402

# The HTTP API's fixtures (a server on loopback, a throwaway database and queues).
pytest_plugins = ["api_support"]


def _existing(path: Path, what: str) -> Path:
    if not path.is_dir():
        unavailable(f"{what} not found at {path} (set EXCAMERA_SHARED to the reference folder)")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _existing(shared_root(), "the reference folder")


@pytest.fixture(scope="session")
def vectors_dir(shared_dir: Path) -> Path:
    return _existing(shared_dir / VECTORS_SUBDIR, "the VP8 test vectors")


@pytest.fixture(scope="session")
def video_dir(shared_dir: Path) -> Path:
    return _existing(shared_dir / "video", "the reference videos")


@pytest.fixture(scope="session")
def stream_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("EXCAMERA_TEST_CACHE")
    path = Path(configured) if configured else Path.home() / ".cache" / "excamera-tests"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError:
        return tmp_path_factory.mktemp("streams")
    return path


@pytest.fixture(scope="session")
def vp8_stream(stream_cache: Path) -> Callable[[str], Path]:
    """Build (or find cached) a generated stream by name."""
    require_tools()

    def get(name: str) -> Path:
        video = shared_root() / "video"
        try:
            return build(STREAMS[name], video if video.is_dir() else None, stream_cache)
        except MissingSource as exc:
            unavailable(f"stream {name} {exc} (reference folder: {shared_root()})")

    return get


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = [
        f"{report.nodeid}: {key} = {value}"
        for report in terminalreporter.stats.get("passed", [])
        if report.when == "call"
        for key, value in report.user_properties
    ]
    if lines:
        terminalreporter.section("measurements")
        for line in lines:
            terminalreporter.write_line(line)
