"""deploy/package.sh: the Lambda artifact builds, stays within Lambda's limits, needs no glibc newer
than the runtime's, and runs from a clean directory.

The artifact is built for python3.13 (the template's runtime), which this machine (3.11) cannot
import; the same recipe built for 3.11 is what runs here: unzipped into an empty directory, with
only that directory on sys.path of an isolated interpreter (-I -S: no site-packages). It encodes
a real chunk with the artifact's libvpx and gives the same bytes as the development build, and,
where the encoder's Lambda handler exists, handles an SQS-shaped event.

Slow on a fresh machine (libvpx and the codec are compiled twice, wheels downloaded): build/lambda/
keeps what it can for the next run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUNTIME_GLIBC = (2, 34)  # Amazon Linux 2023 (python3.12, python3.13)
LAMBDA_UNZIPPED_LIMIT = 250 * 1000 * 1000

pytestmark = pytest.mark.slow


def build(out: Path, python_version: str) -> Path:
    env = {**os.environ, "PYTHON_VERSION": python_version, "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(REPO / "deploy" / "package.sh"), str(out)], env=env,
                            capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-4000:]
    return out / "encoder.zip"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("lambda313"), "3.13")


@pytest.fixture(scope="module")
def local_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same recipe for this machine's interpreter, unzipped into a clean directory."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    archive = build(tmp_path_factory.mktemp("lambda-local"), version)
    root = tmp_path_factory.mktemp("task")
    with zipfile.ZipFile(archive) as opened:
        opened.extractall(root)
    return root


def glibc_versions(library: Path) -> set[tuple[int, ...]]:
    """The GLIBC_x.y symbol versions an ELF object needs (objdump -T)."""
    dump = subprocess.run(["objdump", "-T", str(library)], capture_output=True, text=True,
                          check=True).stdout
    return {tuple(map(int, v.split("."))) for v in re.findall(r"GLIBC_(\d+(?:\.\d+)+)", dump)}


def test_artifact_within_lambda_limits_and_runtime(artifact: Path) -> None:
    manifest = json.loads((artifact.parent / "encoder.json").read_text())
    assert manifest["runtime"] == "python3.13"
    with zipfile.ZipFile(artifact) as opened:
        infos = opened.infolist()
    unzipped = sum(info.file_size for info in infos)
    assert unzipped == manifest["unzipped_bytes"] <= LAMBDA_UNZIPPED_LIMIT
    names = {info.filename for info in infos}
    for handler_package in ("services/encoder/__init__.py", "services/decoder/__init__.py"):
        assert handler_package in names
    # Every compiled module of ours is there, for the target's ABI.
    ours = sorted(n for n in names if n.startswith("shared/") and n.endswith(".so"))
    assert "shared/libvpx/encoder.cpython-313-x86_64-linux-gnu.so" in ours
    assert len(ours) == 15 and all(".cpython-313-x86_64-linux-gnu.so" in n for n in ours)
    # Third-party compiled code is for 3.13 (or the stable ABI) too.
    for name in names:
        match = re.search(r"\.cpython-(\d+)-", name)
        assert match is None or match.group(1) == "313", name


def test_no_shared_object_needs_a_newer_glibc(artifact: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(artifact) as opened:
        libraries = [n for n in opened.namelist() if re.search(r"\.so(\.\d+)*$", n)]
        opened.extractall(tmp_path, members=libraries)
    assert len(libraries) > 50
    newest = {name: max(glibc_versions(tmp_path / name), default=(0,)) for name in libraries}
    too_new = {name: v for name, v in newest.items() if v > RUNTIME_GLIBC}
    assert not too_new
    # libvpx is linked in, and hidden: the module exports its init function and nothing else.
    codec = tmp_path / "shared/libvpx/encoder.cpython-313-x86_64-linux-gnu.so"
    exported = subprocess.run(["objdump", "-T", str(codec)], capture_output=True, text=True,
                              check=True).stdout
    defined = [line.split()[-1] for line in exported.splitlines() if " .text" in line]
    assert defined == ["PyInit_encoder"]


def run_isolated(root: Path, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`code` in this machine's interpreter with nothing but `root` importable (as /var/task)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "TMPDIR": str(cwd)}
    bootstrap = f"import sys; sys.path[:0] = [{str(root)!r}]\n"
    return subprocess.run([sys.executable, "-I", "-S", "-c", bootstrap + code], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_artifact_encodes_a_chunk_like_the_development_build(
    local_artifact: Path, tmp_path: Path
) -> None:
    shared = REPO.parent / "shared" / "video" / "sintel" / "chunk1.y4m"
    if not shared.is_file():
        pytest.skip("../shared/video is absent")
    code = (
        "import hashlib, pathlib, shared.libvpx.encoder as e\n"
        "from shared.pipeline import vpx\n"
        "assert e.__file__.startswith(sys.path[0]) and e.ZEROED_HEAP\n"
        f"data = vpx.run_libvpx(20, 25, pathlib.Path({str(shared)!r}))\n"
        "print(hashlib.sha256(data).hexdigest())\n"
    )
    packaged = run_isolated(local_artifact, code, tmp_path)
    assert packaged.returncode == 0, packaged.stderr
    from shared.pipeline import vpx

    expected = __import__("hashlib").sha256(vpx.run_libvpx(20, 25, shared)).hexdigest()
    assert packaged.stdout.strip() == expected


def test_artifact_imports_every_service_dependency(local_artifact: Path, tmp_path: Path) -> None:
    code = (
        "import av, boto3, celery, kombu, numpy, psycopg, pycurl, jsonschema\n"
        "import services.adapter, shared.codec.decoder, shared.codec.encoder\n"
        "print(numpy.__file__)\n"
    )
    result = run_isolated(local_artifact, code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(str(local_artifact))
