"""Fixtures for the HTTP API's tests (a pytest plugin: tests/conftest.py names it).

The real application, served over real HTTP on loopback from a thread of its own, against the
real PostgreSQL and RabbitMQ: a throwaway database `excamera_test_<random>` and a queue prefix
of its own per test session, both removed afterwards, and a temporary store.

- `api`: the running server (`ApiServer`: its URL, config, a `JobRecords` of its database and a
  `request` helper that authenticates as a named token);
- `clip_y4m`, `clip_mp4`: small real videos;
- `make_done_job`: a job recorded as done with an output in the store (no workers needed).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

TOKENS = {"alice": "alice-token-0123456789", "bob": "bob-token-9876543210"}
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
BROKER = "amqp://guest:guest@127.0.0.1:5672//"
UPLOAD_LIMIT = 4 << 20
# Prefixes the tests' operator allows: a directory of inputs, and hosts whose addresses the
# SSRF check must refuse all the same (loopback, private, link-local).
BLOCKED_HOSTS = ("127.0.0.1", "localhost", "10.1.2.3", "192.168.1.10", "169.254.169.254",
                 "[::1]", "0.0.0.0")


def _limits() -> Any:
    from services.api.context import Limits

    return Limits(max_upload_bytes=UPLOAD_LIMIT, janitor_seconds=0.2,
                  announce_grace_seconds=0.3)


TEST_LIMITS = _limits()


def _services_available() -> str | None:
    import socket

    for port, what in ((5432, "PostgreSQL"), (5672, "RabbitMQ")):
        with socket.socket() as probe:
            probe.settimeout(1)
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return f"{what} is not running on 127.0.0.1:{port}"
    return None


@dataclass
class ApiServer:
    url: str
    config: Any  # ServiceConfig
    records: Any  # JobRecords of the session's database
    inputs: Path  # a directory the operator allows inputs from
    store: Any  # the store the API writes

    def request(self, method: str, path: str, token: str | None = "alice",
                **kwargs: Any) -> Any:
        import requests

        headers = dict(kwargs.pop("headers", None) or {})
        if token is not None:
            headers.setdefault("Authorization", f"Bearer {TOKENS.get(token, token)}")
        return requests.request(method, self.url + path, headers=headers, timeout=30,
                                **kwargs)


class _ServerThread:
    """An aiohttp AppRunner on its own event loop, in a daemon thread."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="api-server", daemon=True)

    def start(self) -> int:
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None:
            raise self._error
        return self.port

    def _run(self) -> None:
        from aiohttp import web

        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(self.app, access_log=None)
        try:
            self.loop.run_until_complete(self.runner.setup())
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.port = self.runner.addresses[0][1]
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())
        # As web.run_app ends: the cleanup cancels handlers it gave up on (a client that
        # never finished its body) without waiting for them, so let them end before closing.
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(60)


@contextlib.contextmanager
def _throwaway_database() -> Iterator[str]:
    import psycopg
    from psycopg import sql

    name = f"excamera_test_{secrets.token_hex(6)}"
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


@contextlib.contextmanager
def _throwaway_queues(prefix: str) -> Iterator[None]:
    import kombu

    from services.broker import Topology

    try:
        yield
    finally:
        with kombu.Connection(BROKER) as connection:
            Topology(prefix).delete(connection)


@pytest.fixture(scope="session")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    reason = _services_available()
    if reason is not None:
        pytest.skip(reason)
    from services.api.app import create_app
    from services.api.auth import Tokens
    from services.config import ServiceConfig
    from services.records import JobRecords

    root = tmp_path_factory.mktemp("api")
    inputs = root / "inputs"
    inputs.mkdir()
    prefix = f"excamera_test_{secrets.token_hex(4)}"
    allowed = (inputs.as_uri() + "/", "https://media.example.com/",
               *(f"http://{host}/" for host in BLOCKED_HOSTS))
    with _throwaway_database() as db, _throwaway_queues(prefix):
        config = ServiceConfig(broker=BROKER, store=(root / "store").as_uri(), db=db,
                               queue_prefix=prefix, allow_input=allowed,
                               retention_seconds=3600.0)
        tokens = Tokens.parse(",".join(f"{name}:{token}" for name, token in TOKENS.items()))
        limits = replace(TEST_LIMITS, upload_dir=root)
        server = _ServerThread(create_app(config, tokens, limits))
        port = server.start()
        records = JobRecords(db, pool_size=2)
        from shared.pipeline.store import open_store

        try:
            yield ApiServer(f"http://127.0.0.1:{port}", config, records, inputs,
                            open_store(config.store))
        finally:
            records.close()
            server.stop()


# --------------------------------------------------------------------------- videos


def y4m_bytes(width: int = 64, height: int = 48, frames: int = 8) -> bytes:
    """A tiny Y4M clip: a gradient moving one pixel a frame."""
    header = f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\n".encode()
    body = bytearray(header)
    chroma = (width // 2) * (height // 2)
    for index in range(frames):
        body += b"FRAME\n"
        body += bytes((x + y + index) % 256 for y in range(height) for x in range(width))
        body += bytes([128]) * (2 * chroma)
    return bytes(body)


@pytest.fixture(scope="session")
def clip_y4m(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "clip.y4m"
    path.write_bytes(y4m_bytes())
    return path


@pytest.fixture(scope="session")
def clip_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MPEG-4 clip, made with PyAV (what a user would upload)."""
    import av
    import numpy as np

    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(8):
            picture = np.full((48, 64, 3), index * 20, np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# --------------------------------------------------------------------------- jobs


@pytest.fixture
def make_done_job(api: ApiServer) -> Callable[..., str]:
    """A job of `owner`, recorded as done, with `data` as its output in the store."""
    from services.rebaser.join import output_key
    from shared.pipeline.messages import JobRequest, job_id_for

    def make(data: bytes, owner: str = "alice", form: str = "webm") -> str:
        client = secrets.token_hex(8)
        job = job_id_for(owner, client)
        request = JobRequest("https://media.example.com/x.mp4", cq_level=32,
                             format=form).to_json()
        api.records.create_job(job, owner, client, request, None)
        api.records.start_job(job)
        key = output_key(job, form)
        api.store.put(key, data)
        api.records.finish_job(job, key, {"bytes": len(data), "format": form}, 3600.0)
        return job

    return make
