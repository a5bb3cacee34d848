"""The installed command, as a new user gets it: a wheel built from this tree, installed into a
clean virtualenv (not editable), run from a directory that holds the project's uncompiled
sources (a fresh checkout), where `shared/` and `services/` folders sit in the current directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from libvpx_oracle import vpxdec_frames

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean virtualenv with the project's wheel installed; returns its bin directory."""
    root = tmp_path_factory.mktemp("install")
    wheels = root / "wheels"
    # The test virtualenv has the build requirements, so no isolated build environment.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(REPO)],
        check=True, cwd=REPO,
    )
    (wheel,) = wheels.glob("excamera-*.whl")
    venv.EnvBuilder(with_pip=True).create(root / "venv")
    bin_dir = root / "venv" / "bin"
    subprocess.run([bin_dir / "python", "-m", "pip", "install", "-q", str(wheel)], check=True)
    return bin_dir


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's tracked files, as a fresh clone has them (no compiled modules)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode().split("\0")
    root = tmp_path_factory.mktemp("checkout")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    assert (root / "shared" / "codec" / "decoder.pyx").is_file()
    assert not list((root / "shared").rglob("*.so"))
    return root


def clean_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.pop("VIRTUAL_ENV", None)
    return env


def test_installed_command_encodes_from_a_source_checkout(
    installed: Path, checkout: Path, tmp_path: Path
) -> None:
    source = checkout / "samples" / "bigbuckbunny-720p.mp4"
    output = tmp_path / "out.ivf"
    result = subprocess.run(
        [installed / "excamera", "encode", str(source), "-o", str(output), "-n", "3", "-x", "2",
         "--workers", "2"],
        cwd=checkout, env=clean_env(), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert output.is_file()
    assert len(vpxdec_frames(output)) == 132  # every frame decodes in libvpx


def test_a_broken_install_fails_in_one_line(installed: Path, checkout: Path) -> None:
    """A compiled module missing from the install: one line naming it, no traceback."""
    site = next((installed.parent / "lib").glob("python3*/site-packages"))
    (decoder,) = (site / "shared" / "codec").glob("decoder.*.so")
    moved = decoder.with_name(decoder.name + ".moved")
    decoder.rename(moved)
    try:
        result = subprocess.run(
            [installed / "excamera", "decode", str(checkout / "README.md"), "-o", "-"],
            cwd=checkout, env=clean_env(), capture_output=True, text=True, timeout=60,
        )
    finally:
        moved.rename(decoder)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "decoder" in lines[0], result.stderr
