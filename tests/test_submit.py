"""`excamera submit` against the real API over loopback (the `api` fixture: no workers, so a
new job stays queued; done jobs are recorded by `make_done_job`). The whole path with workers,
byte for byte against `excamera encode`, is in test_api.py's upload test."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_support import TOKENS, ApiServer

from shared.cli import main

pytestmark = pytest.mark.usefixtures("token")


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXCAMERA_TOKEN", TOKENS["alice"])


def submit(capsys: pytest.CaptureFixture[str], api: ApiServer, *args: Any,
           url: str | None = None) -> tuple[int, str, str]:
    code = main(["submit", "--api", url or api.url, *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_no_wait_sends_only_the_options_given(capsys: pytest.CaptureFixture[str],
                                              api: ApiServer, clip_y4m: Path) -> None:
    code, out, err = submit(capsys, api, clip_y4m, "--no-wait", "-n", 4, "--ssim", 0.98,
                            "--key", "submit-test-1")
    assert code == 0, err
    job = out.strip()
    record = api.records.get_job(job)
    assert record.state == "queued" and record.client_id == "submit-test-1"
    # The rest are the service's defaults, filled in by the API, not by the client.
    assert record.request["frames_per_chunk"] == 4 and record.request["chunks_per_group"] == 16
    assert record.request["ssim"] == pytest.approx(16.9897, abs=1e-3)  # 0.98 in dB
    stored = api.store.get(api.store.key_for(record.request["input"]))
    assert stored == clip_y4m.read_bytes()
    assert f"job {job} queued (Idempotency-Key submit-test-1)" in err
    # The same key again is the same job (a retry after a lost answer makes no second job).
    again = submit(capsys, api, clip_y4m, "--no-wait", "-n", 4, "--ssim", 0.98,
                   "--key", "submit-test-1")
    assert again[0] == 0 and again[1].strip() == job


def test_a_url_input_is_passed_on(capsys: pytest.CaptureFixture[str], api: ApiServer,
                                  clip_y4m: Path) -> None:
    source = api.inputs / "for-submit.y4m"
    source.write_bytes(clip_y4m.read_bytes())
    code, out, err = submit(capsys, api, source.as_uri(), "--no-wait", "-o", "x.ivf")
    assert code == 0, err
    request = api.records.get_job(out.strip()).request
    assert request["input"] == source.as_uri() and request["format"] == "ivf"


def test_a_done_job_is_downloaded(capsys: pytest.CaptureFixture[str], api: ApiServer,
                                  make_done_job: Any, tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # 2.3 MB: more than one read
    job = make_done_job(data, form="ivf")
    target = tmp_path / "out.ivf"
    code, out, err = submit(capsys, api, "--job", job, "-o", target, "--json")
    assert code == 0, err
    assert target.read_bytes() == data
    assert not (tmp_path / "out.ivf.partial").exists()
    status = json.loads(out)  # nothing else on stdout
    assert f"wrote {target}: {len(data):,} bytes" in err
    assert status["id"] == job and status["state"] == "done" and status["percent"] == 100


def test_a_download_that_breaks_off_goes_on(capsys: pytest.CaptureFixture[str],
                                            api: ApiServer, make_done_job: Any,
                                            tmp_path: Path) -> None:
    """Through a proxy that cuts the first download's connection after 1 MB: the client asks
    for the rest (Range, If-Range) and the file is whole."""
    data = hashlib.sha256(b"x").digest() * 100_000  # 3.2 MB
    job = make_done_job(data, form="ivf")
    with cutting_proxy(api.url, cut_after=1 << 20) as (url, cuts, requests):
        target = tmp_path / "out.ivf"
        code, _, err = submit(capsys, api, "--job", job, "-o", target, url=url)
    assert code == 0, err
    assert cuts == [1 << 20] and target.read_bytes() == data
    resumed = [r for r in requests if b"GET /v1/jobs/" + job.encode() + b"/output" in r]
    assert len(resumed) == 2 and b"range: bytes=" in resumed[1].lower()
    assert b"if-range: " in resumed[1].lower()


@pytest.mark.parametrize("args, env, message", [
    (["clip-that-is-not-here.mp4"], {}, "clip-that-is-not-here.mp4: no such file"),
    (["{clip}", "-o", "out.mp4"], {}, "out.mp4: the output must end in .ivf or .webm, not '.mp4'"),
    (["/"], {}, "/: not a regular file"),
    (["{clip}", "-o", "/no/such/dir/out.webm"], {},
     "/no/such/dir/out.webm: cannot write there (No such file or directory)"),
    (["{clip}", "-o", "out.ivf", "--format", "webm"], {}, "--format webm does not match"),
    (["{clip}"], {"EXCAMERA_TOKEN": ""}, "no API token: set EXCAMERA_TOKEN"),
    (["{clip}"], {"EXCAMERA_TOKEN": "wrong"}, "401 unauthorized: the bearer token is not valid"),
    (["{clip}", "-n", "100000"], {}, "400 invalid_job: options: frames_per_chunk: 100000"),
    (["{clip}", "--budget-usd", "nan"], {}, "budget_usd: not a finite number"),
    (["--job", "j-000000000000000000000000"], {}, "404 not_found"),
    (["--job", "j-../../x"], {}, "--job 'j-../../x' is not a job id"),
    (["{clip}"], {"EXCAMERA_TOKEN": "a\nb"}, "EXCAMERA_TOKEN holds white space, control"),
    (["{clip}"], {"EXCAMERA_TOKEN": "tök"}, "EXCAMERA_TOKEN holds white space, control"),
    ([], {}, "give either INPUT (a new job) or --job ID"),
])
def test_refusals_are_one_line(capsys: pytest.CaptureFixture[str], api: ApiServer,
                               clip_y4m: Path, monkeypatch: pytest.MonkeyPatch,
                               args: list[str], env: dict[str, str], message: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    before = len(api.records.list_jobs("alice", 1000))
    code, out, err = submit(capsys, api, *(a.format(clip=clip_y4m) for a in args))
    assert code == 1 and out == ""
    assert err.startswith("excamera submit: ") and message in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert len(api.records.list_jobs("alice", 1000)) == before  # no job made


def test_an_output_that_is_the_input_is_refused(capsys: pytest.CaptureFixture[str],
                                                api: ApiServer, clip_y4m: Path,
                                                tmp_path: Path) -> None:
    """As in `excamera encode`: the download would have replaced the input (a symlink counts
    as its target), after the upload."""
    source = tmp_path / "clip.webm"
    source.write_bytes(clip_y4m.read_bytes())
    (tmp_path / "link.webm").symlink_to(source)
    before = len(api.records.list_jobs("alice", 1000))
    for output in (source, tmp_path / "link.webm"):
        code, out, err = submit(capsys, api, str(source), "-o", str(output))
        assert code == 1 and out == "", err
        assert err == (f"excamera submit: {output}: writing it would replace {source}, which "
                       "this command also reads or writes; choose another path\n")
    assert source.read_bytes() == clip_y4m.read_bytes()
    assert len(api.records.list_jobs("alice", 1000)) == before


def test_an_api_that_is_not_there(capsys: pytest.CaptureFixture[str], api: ApiServer,
                                  clip_y4m: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, _, err = submit(capsys, api, clip_y4m, url=f"http://127.0.0.1:{port}")
    assert code == 1
    assert f"the API at http://127.0.0.1:{port} is unavailable" in err


def test_an_api_that_is_something_else(capsys: pytest.CaptureFixture[str], api: ApiServer,
                                       tmp_path: Path) -> None:
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    (tmp_path / "v1" / "jobs").mkdir(parents=True)
    (tmp_path / "v1" / "jobs" / "j-000000000000000000000000").write_text("<html>hello</html>")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        code, _, err = submit(capsys, api, "--job", "j-000000000000000000000000", url=url)
        # A page that is not the API's, for an error: its words, on one line.
        missing = submit(capsys, api, "--job", "j-111111111111111111111111", url=url)
        server.shutdown()
    assert code == 1
    assert f"the answer is not JSON (is {url} the excamera API?)" in err, err
    ours = missing[2].strip().splitlines()[-1]  # (the server logs to stderr too)
    assert missing[0] == 1 and ours.startswith("excamera submit: 404 error: <!DOCTYPE"), ours
    assert "Nothing matches the given URI" in ours


# --------------------------------------------------------------------------- a cutting proxy


@contextlib.contextmanager
def cutting_proxy(target: str, cut_after: int
                  ) -> Iterator[tuple[str, list[int], list[bytes]]]:
    """A TCP proxy to `target` that closes the first connection whose answer passes
    about `cut_after` bytes of body, right there; `cuts` lists where it cut, `requests` what
    the client sent, a read at a time."""
    host, port = target.removeprefix("http://").split(":")
    cuts: list[int] = []
    requests: list[bytes] = []
    writers: list[asyncio.StreamWriter] = []
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    address: list[int] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   cut: bool) -> None:
        sent, body_at = 0, None
        buffer = b""
        writers.append(writer)
        try:
            while data := await reader.read(65536):
                if not cut:
                    requests.append(data)
                if cut and not cuts:
                    buffer += data
                    if body_at is None and b"\r\n\r\n" in buffer:
                        body_at = buffer.index(b"\r\n\r\n") + 4
                    if body_at is not None and sent + len(data) - body_at >= cut_after:
                        writer.write(data[: body_at + cut_after - sent])
                        await writer.drain()
                        cuts.append(cut_after)
                        break
                sent += len(data)
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def serve(client_reader: asyncio.StreamReader,
                    client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(pipe(client_reader, upstream_writer, False),
                             pipe(upstream_reader, client_writer, True),
                             return_exceptions=True)

    async def start() -> asyncio.AbstractServer:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        address.append(server.sockets[0].getsockname()[1])
        ready.set()
        return server

    def run() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(start())
        loop.run_forever()
        for writer in writers:  # no connection to the API is left open
            writer.close()
        server.close()
        loop.run_until_complete(server.wait_closed())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield f"http://127.0.0.1:{address[0]}", cuts, requests
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_an_upload_over_the_limit(capsys: pytest.CaptureFixture[str], api: ApiServer,
                                  tmp_path: Path) -> None:
    from api_support import UPLOAD_LIMIT

    big = tmp_path / "big.y4m"
    big.write_bytes(b"\0" * (UPLOAD_LIMIT + (1 << 20)))
    with cutting_proxy(api.url, cut_after=1 << 40) as (url, _, requests):
        code, _, err = submit(capsys, api, big, url=url)
    assert code == 1 and "413 too_large" in err, err
    # It asked first (test_api.py: such a request is refused on its headers, before its body).
    assert b"\r\nexpect: 100-continue\r\n" in requests[0].lower()


def test_ctrl_c_leaves_the_job_running(api: ApiServer, clip_y4m: Path) -> None:
    """Interrupted while it follows a job (which stays queued: no workers here), the command
    says how to follow it again, exits 130, and the job is untouched."""
    import os
    import signal
    import subprocess
    import sys
    import time

    child = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "submit", str(clip_y4m), "--api", api.url],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "EXCAMERA_TOKEN": TOKENS["alice"]})
    assert child.stderr is not None
    first = child.stderr.readline()  # "... job j-... queued (Idempotency-Key ...)"
    job = first.split(" job ")[1].split()[0]
    time.sleep(0.5)
    child.send_signal(signal.SIGINT)
    rest = child.communicate(timeout=30)[1]
    assert child.returncode == 130, rest
    assert f"follow it again with `excamera submit --job {job}`" in rest
    assert rest.strip().endswith("excamera submit: interrupted")
    assert "Traceback" not in rest
    assert api.records.get_job(job).state == "queued"


def test_progress_bars_from_polled_counts() -> None:
    """`excamera submit` draws the API's per-stage counts with encode's bars (on a terminal)."""
    import io

    from shared.pipeline.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    progress = Progress(stream=screen)
    progress.update("encode", 3, 12)
    progress.update("rebase", 0, 12)
    progress.update("encode", 12, 12)  # a stage's last count is always drawn
    progress.update("empty", 0, 0)  # a stage with nothing to do is not
    progress.close()
    last = screen.getvalue().rsplit("\x1b[2F", 1)[-1]
    assert last == ("encode  [########################]  12/12\x1b[K\n"
                    "rebase  [........................]   0/12\x1b[K\n")


def test_an_api_whose_certificate_is_not_trusted(capsys: pytest.CaptureFixture[str],
                                                 api: ApiServer, tmp_path: Path) -> None:
    """TLS with a self-signed certificate: refused at once (no retries), in one line."""
    import ssl
    import subprocess
    import time
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with ThreadingHTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler) as server:
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"https://127.0.0.1:{server.server_address[1]}"
        began = time.monotonic()
        code, _, err = submit(capsys, api, "--job", "j-000000000000000000000000", url=url)
        took = time.monotonic() - began
        server.shutdown()
    assert code == 1 and f"the API at {url}: " in err and "certificate" in err, err
    assert took < 5  # not the 7.5 s of retries


@pytest.mark.parametrize("url", ["notaurl", "ftp://x", "http://[::1", "http://h:99999",
                                 "http://h:x", "http://:80"])
def test_a_bad_api_url_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    for given in (["--api", url], []):  # on the command line, or from EXCAMERA_API
        monkeypatch.setenv("EXCAMERA_API", url)
        with pytest.raises(SystemExit) as exited:
            main(["submit", *given, "--job", "j-000000000000000000000000"])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert "error: argument --api: " in err and "Traceback" not in err
