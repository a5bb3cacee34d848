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


def test_artifact_runs_the_encoder_handler_on_an_sqs_event(
    local_artifact: Path, tmp_path: Path, video_dir: Path
) -> None:
    """From the unzipped artifact alone: the encoder's handler takes an SQS event made of the
    message the real producer (the dispatcher, through kombu's SQS transport) put on moto's
    encode queue, encodes the chunk into moto's S3, records the task done, and publishes what
    it made ready; the chunk is the development build's bytes."""
    import secrets

    import boto3
    from aws_support import moto_server, sqs_event
    from services_support import drop_database, require_peers

    from services.config import ServiceConfig
    from services.runtime import JobFacts, Runtime, job_key
    from shared.pipeline import graph, stages
    from shared.pipeline.messages import JobRequest, TaskMessage
    from shared.pipeline.store import LocalStore

    require_peers()
    source = video_dir / "sintel" / "chunk1.y4m"
    tag = secrets.token_hex(4)
    with moto_server():
        boto3.client("s3").create_bucket(Bucket=f"b{tag}")
        config = ServiceConfig(
            broker="sqs://", store=f"s3://b{tag}/store", queue_prefix=f"p{tag}",
            db=f"postgresql://postgres@127.0.0.1:5432/excamera_pkg_{tag}")
        runtime = Runtime(config, service="test")
        try:
            runtime.topology.declare(None)  # type: ignore[arg-type]
            job = "j-" + tag * 3
            request = JobRequest(input=source.as_uri(), frames_per_chunk=3, chunks_per_group=2)
            runtime.records.create_job(job, "test", tag, request.to_json(), None)
            runtime.store.put(job_key(job), JobFacts(request, None).to_json())
            plan = stages.split(runtime.store, job, source, 3, 2)
            runtime.records.set_plan(job, {}, graph.stage_sizes(plan), graph.tasks(plan))
            runtime.dispatcher.publish_task(TaskMessage(job, "encode", 0), ordering_key=job,
                                            position=0)
            queue = runtime.dispatcher.sqs.url(runtime.topology.encode)  # type: ignore[union-attr]
            received = boto3.client("sqs").receive_message(
                QueueUrl=queue, MaxNumberOfMessages=1, AttributeNames=["All"])["Messages"]
            event = sqs_event(queue, received)
            env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path),
                   **config.to_env(), **{k: v for k, v in os.environ.items()
                                        if k.startswith("AWS_")}}
            code = ("import json, sys\n"
                    "from services.encoder.lambda_handler import handler\n"
                    "import services\n"
                    "assert services.__file__.startswith(sys.path[0])\n"
                    "print(json.dumps(handler(json.load(sys.stdin), None)))\n")
            bootstrap = f"import sys; sys.path[:0] = [{str(local_artifact)!r}]\n"
            result = subprocess.run([sys.executable, "-I", "-S", "-c", bootstrap + code],
                                    input=json.dumps(event), cwd=tmp_path, env=env,
                                    capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, result.stderr[-3000:]
            answer = json.loads(result.stdout.strip().splitlines()[-1])
            assert answer == {"batchItemFailures": []}
            assert runtime.records.is_done(job, graph.TaskId("encode", 0))
            # The development build makes the same chunk.
            local = LocalStore(tmp_path / "local")
            stages.split(local, job, source, 3, 2)
            stages.encode_chunk_vpx(local, job, 0, request.settings())
            key = stages.chunk_key(job, 0, "vpx.ivf")
            assert runtime.store.get(key) == local.get(key)
        finally:
            runtime.topology.delete(None)  # type: ignore[arg-type]
            runtime.close()
            drop_database(f"excamera_pkg_{tag}")
