"""The HTTP API over real HTTP on loopback, against the real PostgreSQL and RabbitMQ (fixtures
in api_support.py): every bad input of issue 9 §2 answered with a 4xx and a one-line JSON
reason, idempotency, ownership, listing, output with Range requests, cancel, the janitor,
health, metrics, and the ingest message the API publishes.

No worker runs here: a finished job is made by writing its output to the store and recording
it done, as the rebaser's join would.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from api_support import BLOCKED_HOSTS, TEST_LIMITS, TOKENS, UPLOAD_LIMIT, ApiServer, y4m_bytes
from bad_media import PNG, titled_video

from services.api import openapi
from services.api.auth import Tokens
from services.api.middleware import ApiError
from services.api.uploads import sniff_video
from services.errors import ConfigError
from shared.pipeline.graph import TaskId
from shared.pipeline.messages import INGEST_SCHEMA, JobRequest, job_id_for, parse_ingest

GOOD = {"frames_per_chunk": 6, "chunks_per_group": 16, "cq_level": 20, "format": "webm"}


# Each status's own code, as the API documents it to clients (not read from the server's code).
STATUS_CODES = {400: "invalid_request", 401: "unauthorized", 404: "not_found",
                405: "method_not_allowed", 408: "request_timeout", 409: "conflict", 410: "gone",
                413: "too_large", 415: "unsupported_media_type",
                416: "range_not_satisfiable", 417: "expectation_failed", 500: "internal",
                503: "unavailable"}


def error_of(response: Any, status: int, code: str | None = None) -> str:
    """The one-line reason of an error answer with `status` and `code` (by default the
    status's own)."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json")
    document = response.json()
    assert set(document) == {"error", "code"}, document
    assert document["code"] == (code or STATUS_CODES[status]), document
    reason = document["error"]
    assert isinstance(reason, str) and reason and "\n" not in reason
    assert "Traceback" not in reason
    return reason


def submit_json(api: ApiServer, document: Any, token: str = "alice", key: str | None = None,
                ) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    return api.request("POST", "/v1/jobs", token, json=document, headers=headers)


def submit_upload(api: ApiServer, data: bytes, options: Any = None, token: str = "alice",
                  key: str | None = None, **kwargs: Any) -> Any:
    files: dict[str, Any] = {"video": ("clip", data, "application/octet-stream")}
    if options is not None:
        text = options if isinstance(options, str) else json.dumps(options)
        files["options"] = (None, text, "application/json")
    headers = {"Idempotency-Key": key} if key else {}
    return api.request("POST", "/v1/jobs", token, files=files, headers=headers, **kwargs)


@pytest.fixture
def input_file(api: ApiServer, clip_y4m: Path) -> Path:
    path = api.inputs / f"clip-{secrets.token_hex(4)}.y4m"
    path.write_bytes(clip_y4m.read_bytes())
    return path


def raw_http(api: ApiServer, head: bytes, body: bytes) -> bytes:
    """Send a request by hand (`head` without the blank line), then close the sending side;
    whatever came back."""
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(head + b"\r\n\r\n" + body)
        time.sleep(0.2)
        connection.shutdown(socket.SHUT_WR)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := connection.recv(65536):
                answer += chunk
    return answer


# --------------------------------------------------------------------------- tokens

ROUTES = [("POST", "/v1/jobs"), ("GET", "/v1/jobs"), ("GET", "/v1/jobs/j-000000000000000000000000"),
          ("GET", "/v1/jobs/j-000000000000000000000000/tasks"),
          ("GET", "/v1/jobs/j-000000000000000000000000/output"),
          ("DELETE", "/v1/jobs/j-000000000000000000000000")]


@pytest.mark.parametrize("extra", ["", "?foo=1"])  # the token is checked before the query
@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_no_token(api: ApiServer, method: str, path: str, extra: str) -> None:
    response = api.request(method, path + extra, token=None)
    assert "authentication required" in error_of(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer wrong-token", "Bearer ", "Basic YWxpY2U6eA==",
                                    f"Bearer {TOKENS['alice']}x", TOKENS["alice"]])
@pytest.mark.parametrize(("method", "path"), ROUTES[:3])
def test_wrong_token(api: ApiServer, method: str, path: str, header: str) -> None:
    response = api.request(method, path, token=None, headers={"Authorization": header})
    error_of(response, 401)


def test_tokens_configuration(tmp_path: Path) -> None:
    tokens = Tokens.parse("alice:one, alice:two,\nbob:three")
    assert tokens.owner("Bearer one") == tokens.owner("bearer  two") == "alice"
    assert tokens.owner("Bearer three") == "bob"
    assert tokens.owner("Bearer four") is None and tokens.owner(None) is None
    path = tmp_path / "tokens"
    path.write_text("# operators\ncarol:c4r0l#1\n")
    from_file = Tokens.from_env({"EXCAMERA_API_TOKENS_FILE": str(path)})
    assert from_file.owner("Bearer c4r0l#1") == "carol"
    for bad in ("alice", "alice:", ":x", "../x:y", "ingest:x", "a:same,b:same", "a:two words"):
        with pytest.raises(ConfigError):
            Tokens.parse(bad)
    # A Secrets Manager key/value secret, as deploy/excamera.yaml generates one.
    secret = Tokens.parse(' {"operator": "s3cret", "ci": "t0ken"}')
    assert secret.owner("Bearer s3cret") == "operator" and secret.owner("Bearer t0ken") == "ci"
    for bad, said in (('{"a": 1}', "object of names and token strings"),
                      ('["a:b"]', "token name"), ('{"a": "b"', "is not a JSON object"),
                      ('{"a": ' + "[" * 100_000, "is not a JSON object"),
                      ('{"a": ""}', "token of 'a' is empty"), ('{"../x": "y"}', "token name"),
                      ('{"a": "two words"}', "white space"), ('{"a": "x", "b": "x"}', "twice")):
        with pytest.raises(ConfigError, match=re.escape(said)):
            Tokens.parse(bad)
    with pytest.raises(ConfigError):
        Tokens.from_env({"EXCAMERA_API_TOKENS_FILE": str(tmp_path / "missing")})


# --------------------------------------------------------------------------- JSON bodies

BAD_REQUESTS = {
    "not an object": ([1, 2], "not of type 'object'"),
    "unknown field": ({"input": "x", "colour": "red"}, "unknown field 'colour'"),
    "missing input": ({"frames_per_chunk": 6}, "'input' is required"),
    "n a string": ({"input": "x", "frames_per_chunk": "6"}, "frames_per_chunk"),
    "n fractional": ({"input": "x", "frames_per_chunk": 6.5}, "frames_per_chunk"),
    "x boolean": ({"input": "x", "chunks_per_group": True}, "chunks_per_group"),
    "input a number": ({"input": 5}, "input"),
    "format unknown": ({"input": "x", "format": "mp4"}, "format"),
    "scene cuts unknown": ({"input": "x", "scene_cuts": "on"}, "scene_cuts"),
    "start frames unknown": ({"input": "x", "start_frames": "redo"}, "start_frames"),
    "n zero": ({"input": "x", "frames_per_chunk": 0}, "frames_per_chunk"),
    "n too big": ({"input": "x", "frames_per_chunk": 241}, "frames_per_chunk"),
    "x zero": ({"input": "x", "chunks_per_group": 0}, "chunks_per_group"),
    "x too big": ({"input": "x", "chunks_per_group": 1025}, "chunks_per_group"),
    "cq negative": ({"input": "x", "cq_level": -1}, "cq_level"),
    "cq too big": ({"input": "x", "cq_level": 64}, "cq_level"),
    "ssim zero": ({"input": "x", "ssim": 0}, "ssim"),
    "ssim too big": ({"input": "x", "ssim": 101}, "ssim"),
    "both qualities": ({"input": "x", "cq_level": 20, "ssim": 16.0}, "not both"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_fields(api: ApiServer, case: str) -> None:
    document, expected = BAD_REQUESTS[case]
    assert expected in error_of(submit_json(api, document), 400, "invalid_job")


@pytest.mark.parametrize("body", [b'{"input": ', b"{'input': 'x'}", b"\xff\xfe", b"",
                                  b'{"input": "x"} trailing', b"NaN"])
def test_malformed_json(api: ApiServer, body: bytes) -> None:
    response = api.request("POST", "/v1/jobs", data=body,
                           headers={"Content-Type": "application/json"})
    reason = error_of(response, 400, "invalid_job")
    assert "JSON" in reason or "not of type" in reason


def test_json_too_large(api: ApiServer) -> None:
    document = {"input": "https://media.example.com/" + "a" * 70_000}
    assert "at most 65536" in error_of(submit_json(api, document), 413)


def test_json_body_cut_off(api: ApiServer, caplog: pytest.LogCaptureFixture) -> None:
    key = f"cut-{secrets.token_hex(4)}"
    head = (f"POST /v1/jobs HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {TOKENS['alice']}"
            f"\r\nContent-Type: application/json\r\nIdempotency-Key: {key}\r\n"
            "Content-Length: 1000").encode()
    raw_http(api, head, b'{"input": "https://media.example.com/a.mp4"')
    time.sleep(0.2)
    assert api.records.get_job(job_id_for("alice", key)) is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "application/xml"])
def test_wrong_content_type(api: ApiServer, content_type: str) -> None:
    response = api.request("POST", "/v1/jobs", data=b"input=x",
                           headers={"Content-Type": content_type})
    error_of(response, 415)


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize("field", ["budget_usd", "ssim", "cq_level"])
def test_non_finite_numbers(api: ApiServer, input_file: Path, field: str, number: str) -> None:
    # Python's JSON parser takes NaN and Infinity (which are not JSON); a NaN budget passed
    # the schema and made PostgreSQL refuse the record: a 500.
    body = f'{{"input": "{input_file.as_uri()}", "{field}": {number}}}'.encode()
    response = api.request("POST", "/v1/jobs", data=body,
                           headers={"Content-Type": "application/json"})
    assert f"{field}: not a finite number" in error_of(response, 400, "invalid_job")
    options = submit_upload(api, y4m_bytes(), f'{{"{field}": {number}}}')
    assert f"{field}: not a finite number" in error_of(options, 400, "invalid_job")


@pytest.mark.parametrize("depth", [40, 990, 20_000])
def test_deeply_nested_json(api: ApiServer, input_file: Path, depth: int) -> None:
    # Within the 64 KiB cap, deep enough to exhaust the parser's or the schema validator's
    # recursion: a 500 before.
    nested = "[" * depth + "]" * depth
    body = f'{{"input": "{input_file.as_uri()}", "budget_usd": {nested}}}'.encode()
    response = api.request("POST", "/v1/jobs", data=body,
                           headers={"Content-Type": "application/json"})
    assert "nested more than 32 levels" in error_of(response, 400, "invalid_job")
    assert "nested more than 32 levels" in error_of(
        submit_upload(api, y4m_bytes(), f'{{"budget_usd": {nested}}}'), 400, "invalid_job")


@pytest.mark.parametrize("content_type", ["application/json", "multipart/form-data; boundary=b"])
def test_body_that_does_not_decode(api: ApiServer, caplog: pytest.LogCaptureFixture,
                                   content_type: str) -> None:
    response = api.request("POST", "/v1/jobs", data=b"this is not gzip",
                           headers={"Content-Type": content_type, "Content-Encoding": "gzip"})
    assert "Can not decode content-encoding: gzip" in error_of(response, 400, "malformed_body")
    time.sleep(0.2)  # aiohttp used to read on after the answer, and log the failure again
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("head, reason", [
    (b"GET /v1/health HTTP/1.1\r\nHost test", "Invalid header token"),
    (b"POST /v1/jobs HTTP/1.1\r\nHost: test\r\nContent-Length: x", "Content-Length"),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: test", "Got more than 8190 bytes"),
    (b"GET /v1/health HTTP/1.1\r\nHost: test\r\nX-Big: " + b"b" * 9000, "8190 bytes"),
])
def test_request_that_is_not_http(api: ApiServer, caplog: pytest.LogCaptureFixture,
                                  head: bytes, reason: str) -> None:
    # aiohttp answers these itself, before any middleware; it used to log each at ERROR
    # with a traceback, so a scanner could fill the server's log.
    caplog.set_level(logging.INFO)
    answer = raw_http(api, head, b"")
    assert answer.startswith(b"HTTP/1.0 400 ") or answer.startswith(b"HTTP/1.1 400 "), answer
    assert reason.encode() in answer
    time.sleep(0.1)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    lines = [r.getMessage() for r in caplog.records if r.name == "excamera.api"]
    assert any(reason in line and "400" in line for line in lines), lines
    assert api.request("GET", "/v1/health", token=None).status_code == 200


def _expecting(api: ApiServer, headers: dict[str, str], body: bytes | None = None) -> bytes:
    """POST /v1/jobs with `Expect: 100-continue`, sending no body until the server asks;
    what it answers within 5 s, then (if it asked and `body` is given) after the body."""
    host, port = api.url.removeprefix("http://").split(":")
    head = "POST /v1/jobs HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(head.encode())
        answer = connection.recv(65536)
        if body is not None and answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"):
            connection.sendall(body)
            while b"\r\n\r\n" not in answer[25:] or not answer.rstrip().endswith(b"}"):
                if not (more := connection.recv(65536)):
                    break
                answer += more
    return answer


def _json_answer(answer: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize("headers, status, code", [
    ({"Authorization": "Bearer wrong", "Content-Type": "multipart/form-data; boundary=b",
      "Content-Length": str(10 << 30)}, 401, "unauthorized"),
    ({"Content-Type": "multipart/form-data; boundary=b", "Content-Length": "100"}, 401,
     "unauthorized"),
    ({"Authorization": f"Bearer {TOKENS['alice']}", "Content-Length": str(10 << 30),
      "Content-Type": "multipart/form-data; boundary=b"}, 413, "too_large"),
    ({"Authorization": f"Bearer {TOKENS['alice']}", "Content-Length": "70000",
      "Content-Type": "application/json"}, 413, "too_large"),
    ({"Authorization": f"Bearer {TOKENS['alice']}", "Content-Length": "10",
      "Content-Type": "text/plain"}, 415, "unsupported_media_type"),
    # a coding aiohttp does not know it would not decode: it read the coded bytes as JSON
    ({"Authorization": f"Bearer {TOKENS['alice']}", "Content-Length": "10",
      "Content-Type": "application/json", "Content-Encoding": "foo"}, 415,
     "unsupported_media_type"),
    ({"Authorization": f"Bearer {TOKENS['alice']}", "Idempotency-Key": "-bad",
      "Content-Length": "10", "Content-Type": "application/json"}, 400, "invalid_request"),
])
def test_a_refused_submission_is_refused_before_its_body(
        api: ApiServer, headers: dict[str, str], status: int, code: str) -> None:
    # Answered at once: the client never sends the 10 GiB it announced.
    answered, document = _json_answer(_expecting(api, headers))
    assert (answered, document["code"]) == (status, code), document


def test_an_expected_submission_goes_on(api: ApiServer, clip_y4m: Path) -> None:
    from urllib3 import encode_multipart_formdata

    body, content_type = encode_multipart_formdata(
        {"video": ("clip.y4m", clip_y4m.read_bytes()),
         "options": (None, json.dumps({"frames_per_chunk": 4}), "application/json")})
    answer = _expecting(api, {"Authorization": f"Bearer {TOKENS['alice']}",
                              "Content-Type": content_type,
                              "Content-Length": str(len(body))}, body)
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 "), answer[:200]
    status, document = _json_answer(answer[len(b"HTTP/1.1 100 Continue\r\n\r\n"):])
    assert status == 202
    assert api.records.get_job(document["id"]).request["frames_per_chunk"] == 4


def test_an_unknown_expectation(api: ApiServer) -> None:
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: test\r\nExpect: 200-ok\r\n"
                           b"Authorization: Bearer " + TOKENS["alice"].encode() +
                           b"\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n")
        status, document = _json_answer(connection.recv(65536))
    assert status == 417 and document["code"] == "expectation_failed"
    assert "'200-ok' is not supported" in document["error"]


@pytest.mark.parametrize("request_line", [
    "GET /v1/jobs", "GET /v1/health", "DELETE /v1/jobs/j-000000000000000000000000",
    "GET /v1/jobs/j-000000000000000000000000/output"])
def test_an_unknown_expectation_on_any_route(api: ApiServer, request_line: str) -> None:
    # Every route but POST /v1/jobs answered aiohttp's plain-text 417.
    answer = raw_http(api, f"{request_line} HTTP/1.1\r\nHost: test\r\nExpect: foo\r\n"
                           f"Authorization: Bearer {TOKENS['alice']}".encode(), b"")
    status, document = _json_answer(answer)
    assert status == 417 and document["code"] == "expectation_failed", document
    fine = raw_http(api, b"GET /v1/health HTTP/1.1\r\nHost: test\r\nExpect: 100-continue",
                    b"")
    assert fine.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200"), fine[:100]


def _stalled(url: str, head: bytes, first_chunk: bytes) -> bytes:
    """A chunked body whose second chunk-size line is malformed: aiohttp neither fails nor
    ends the body, so a handler reading it waits; what the server answers within 10 s."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(head + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        time.sleep(0.1)
        connection.sendall(b"%x\r\n%s\r\n" % (len(first_chunk), first_chunk))
        time.sleep(0.1)
        connection.sendall(b"zz\r\n")
        try:
            return connection.recv(65536)
        except TimeoutError:
            return b"(no answer)"


def test_body_that_stops_arriving(api: ApiServer) -> None:
    from api_support import _ServerThread

    from services.api.app import create_app

    tokens = Tokens.parse(f"alice:{TOKENS['alice']}")
    limits = replace(TEST_LIMITS, body_idle_seconds=0.5)
    server = _ServerThread(create_app(api.config, tokens, limits))
    url = f"http://127.0.0.1:{server.start()}"
    try:
        auth = f"Authorization: Bearer {TOKENS['alice']}".encode()
        for content_type, chunk in (
                (b"application/json", b'{"input": '),
                (b"multipart/form-data; boundary=b",
                 b'--b\r\nContent-Disposition: form-data; name="video"\r\n\r\nYUV4MPEG2 ')):
            began = time.monotonic()
            answer = _stalled(url, b"POST /v1/jobs HTTP/1.1\r\nHost: test\r\n" + auth
                              + b"\r\nContent-Type: " + content_type, chunk)
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert b"stopped arriving" in answer and time.monotonic() - began < 5
    finally:
        server.stop()


def test_connections_that_send_no_whole_request_are_closed(api: ApiServer) -> None:
    """Slow clients cannot hold connections open: one that trickles its headers, one that
    sends nothing, and one idle after its answer are all closed after
    `connection_idle_seconds`, while a prompt request on a fresh connection is answered."""
    import requests
    from api_support import _ServerThread

    from services.api.app import create_app

    limits = replace(TEST_LIMITS, connection_idle_seconds=1.0)
    server = _ServerThread(create_app(api.config, Tokens.parse(f"alice:{TOKENS['alice']}"),
                                      limits))
    port = server.start()
    try:
        def closed_after(first: bytes, trickle: bytes) -> float:
            """Seconds until the server closes a connection that sends `first`, then
            `trickle` each 0.25 s (for at most 10 s)."""
            began = time.monotonic()
            answer = b""
            with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
                connection.sendall(first)
                connection.settimeout(0.25)
                while time.monotonic() - began < 10:
                    try:
                        data = connection.recv(65536)
                    except TimeoutError:
                        connection.sendall(trickle)
                        continue
                    if not data:
                        assert answer == b"" or answer.startswith(b"HTTP/1.1 200 "), answer
                        return time.monotonic() - began
                    answer += data
            return float("inf")

        trickled = closed_after(b"GET /v1/health HTTP/1.1\r\nHost: test\r\nX-Slow: ", b"a")
        silent = closed_after(b"", b"")
        idle = closed_after(b"GET /v1/health HTTP/1.1\r\nHost: test\r\n\r\n", b"")
        for seconds in (trickled, silent, idle):
            assert 0.9 < seconds < 4, (trickled, silent, idle)
        assert requests.get(f"http://127.0.0.1:{port}/v1/health", timeout=10).status_code == 200
    finally:
        server.stop()


def test_integral_floats_are_integers(api: ApiServer, input_file: Path) -> None:
    response = submit_json(api, {"input": input_file.as_uri(), "frames_per_chunk": 6.0})
    assert response.status_code == 202, response.text
    record = api.records.get_job(response.json()["id"])
    assert record.request["frames_per_chunk"] == 6
    assert isinstance(record.request["frames_per_chunk"], int)


# --------------------------------------------------------------------------- input URLs


def test_url_outside_the_allowed_prefixes(api: ApiServer, input_file: Path) -> None:
    for url in ("file:///etc/passwd", "https://evil.example.com/a.mp4",
                "https://media.example.com.evil.org/a.mp4", "ftp://media.example.com/a.mp4",
                "s3://bucket/a.mp4", "/etc/passwd", "etc/passwd"):
        reason = error_of(submit_json(api, {"input": url}), 400, "input_refused")
        assert "not under a prefix" in reason or "scheme" in reason, (url, reason)


def test_url_path_traversal(api: ApiServer, input_file: Path) -> None:
    base = api.inputs.as_uri()
    for url in (f"{base}/../../../etc/passwd", f"{base}/%2e%2e/%2e%2e/etc/passwd",
                f"{base}/./{input_file.name}", f"{base}/x\\..\\..\\etc"):
        reason = error_of(submit_json(api, {"input": url}), 400, "input_refused")
        assert "'.' or '..'" in reason or "backslash" in reason, (url, reason)


def test_url_symlink_out_of_the_prefix(api: ApiServer) -> None:
    link = api.inputs / f"link-{secrets.token_hex(4)}.y4m"
    link.symlink_to("/etc/passwd")
    reason = error_of(submit_json(api, {"input": link.as_uri()}), 400, "input_refused")
    assert "symbolic link" in reason


def test_url_missing_local_file(api: ApiServer) -> None:
    url = (api.inputs / "missing.y4m").as_uri()
    assert "no such file" in error_of(submit_json(api, {"input": url}), 400, "input_refused")


def test_url_of_a_directory_or_fifo(api: ApiServer) -> None:
    directory = api.inputs / f"dir-{secrets.token_hex(4)}.y4m"
    directory.mkdir()
    fifo = api.inputs / f"fifo-{secrets.token_hex(4)}.y4m"
    os.mkfifo(fifo)
    for path, kind in ((directory, "a directory"), (fifo, "not a regular file")):
        reason = error_of(submit_json(api, {"input": path.as_uri()}), 400, "input_refused")
        assert reason.endswith(f"{kind}, not a video file"), reason


@pytest.mark.parametrize("host", BLOCKED_HOSTS)
def test_url_to_private_addresses(api: ApiServer, host: str) -> None:
    # Each host is under an allowed prefix: only its address (resolved first) refuses it.
    response = submit_json(api, {"input": f"http://{host}/latest/meta-data"})
    reason = error_of(response, 400, "input_refused")
    assert "loopback, private, link-local" in reason, reason


def test_url_with_credentials_or_fragment(api: ApiServer) -> None:
    for url in ("https://user:pw@media.example.com/a.mp4", "https://media.example.com/a#b"):
        error_of(submit_json(api, {"input": url}), 400, "input_refused")


def test_url_into_the_store(api: ApiServer) -> None:
    # The store's uploads are readable by any job: a request must not name another's upload.
    url = api.store.url_for("uploads/j-000000000000000000000000/input-0")
    assert "own store" in error_of(submit_json(api, {"input": url}), 400, "input_refused")


@pytest.mark.parametrize("name", ["my clip.y4m", "a#b.y4m", "p%41.y4m", "q?x.y4m"])
def test_url_spellings_name_the_file_they_encode(api: ApiServer, clip_y4m: Path,
                                                 name: str) -> None:
    # The stored URL was decoded once and never encoded again: a space made the splitter set
    # the job aside (queued for ever), '%23' became a fragment, '%25' was decoded twice.
    from urllib.parse import unquote, urlsplit

    from services.inputs import UrlPolicy, normalize_url

    path = api.inputs / f"{secrets.token_hex(3)}-{name}"
    path.write_bytes(clip_y4m.read_bytes()[:4096])
    response = submit_json(api, {"input": path.as_uri(), **GOOD})
    assert response.status_code == 202, response.text
    stored = api.records.get_job(response.json()["id"]).request["input"]
    assert normalize_url(stored) == stored
    assert unquote(urlsplit(stored).path) == str(path)
    # What the splitter checks again before it reads the file.
    assert UrlPolicy(allow_input=api.config.allow_input).check_input(stored) == stored


def test_url_naming_a_file_too_long_for_the_file_system(api: ApiServer) -> None:
    url = f"{api.inputs.as_uri()}/{'a' * 4000}"
    assert "no such file" in error_of(submit_json(api, {"input": url}), 400, "input_refused")


def test_no_spelling_of_a_url_reads_from_the_store(tmp_path: Path) -> None:
    # When the operator's input prefix holds the store, the store's own files must still be
    # refused: another job's upload, intermediates or output, through a link or a query.
    from services.errors import InputRejected
    from services.inputs import UrlPolicy
    from shared.pipeline.store import LocalStore

    store = LocalStore(tmp_path / "store")
    store.put("uploads/j-bob/input-0", b"bob's video")
    store.put("outputs/j-bob/output.webm", b"bob's output")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "link").symlink_to(tmp_path / "store")
    policy = UrlPolicy(allow_input=(tmp_path.as_uri() + "/",))
    upload = store.url_for("uploads/j-bob/input-0")
    assert policy.check_input(upload, store) == upload  # as the API names an upload
    for url in (upload + "?x=1", upload.replace("input-0", "input%2D0"),
                f"{tmp_path.as_uri()}/in/link/uploads/j-bob/input-0",
                store.url_for("outputs/j-bob/output.webm")):
        with pytest.raises(InputRejected, match="own store"):
            policy.check_input(url, store)
    (tmp_path / "in" / "mine.y4m").write_bytes(b"mine")
    mine = f"{tmp_path.as_uri()}/in/mine.y4m"
    assert policy.check_input(mine, store) == mine
    # And when the input is read: a link may have been turned into the store since.
    from services.inputs import fetch_input

    (tmp_path / "in" / "later.y4m").symlink_to(tmp_path / "in" / "mine.y4m")
    later = f"{tmp_path.as_uri()}/in/later.y4m"
    assert policy.check_input(later, store) == later
    (tmp_path / "in" / "later.y4m").unlink()
    (tmp_path / "in" / "later.y4m").symlink_to(store.path_for("uploads/j-bob/input-0"))
    with pytest.raises(InputRejected, match="own store"), fetch_input(later, policy, store,
                                                                       1 << 20):
        pass


def test_bucket_and_scheme_prefixes() -> None:
    # s3://media allowed s3://media-private/...; the stack's 'https://' (any host) made every
    # https input 'the URL names no host'.
    from services.errors import InputRejected
    from services.inputs import UrlPolicy

    policy = UrlPolicy(allow_input=("s3://media", "https://"))
    assert policy.check_input("s3://media/in/a.y4m") == "s3://media/in/a.y4m"
    for refused in ("s3://media-private/a.y4m", "http://93.184.215.14/a.y4m"):
        with pytest.raises(InputRejected, match="not under a prefix"):
            policy.check_input(refused)
    # Any https host passes the prefix; its addresses are still checked.
    with pytest.raises(InputRejected, match="loopback, private"):
        policy.check_input("https://127.0.0.1/a.y4m")
    assert policy.check_input("https://93.184.215.14/a.y4m") == "https://93.184.215.14/a.y4m"


def test_a_resolver_in_trouble_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    # EAI_AGAIN (no answer from the resolver, for now) is no verdict on the name: the
    # splitter failed the job for good on it. (The one error path here no real resolver
    # gives on demand.)
    import socket

    from services.errors import InputRejected, TransientError
    from services.inputs import UrlPolicy

    def lookup(code: int) -> Any:
        def fail(*_: Any, **__: Any) -> Any:
            raise socket.gaierror(code, "lookup failed")
        return fail

    policy = UrlPolicy(allow_input=("https://",))
    monkeypatch.setattr(socket, "getaddrinfo", lookup(socket.EAI_AGAIN))
    with pytest.raises(TransientError, match="for now"):
        policy.check_input("https://media.example.com/a.mp4")
    monkeypatch.setattr(socket, "getaddrinfo", lookup(socket.EAI_NONAME))
    with pytest.raises(InputRejected, match="does not resolve"):
        policy.check_input("https://media.example.com/a.mp4")


def test_a_file_prefix_is_a_directory(tmp_path: Path) -> None:
    # 'file:///srv/in' also allowed /srv/inside/... before.
    from services.errors import InputRejected
    from services.inputs import UrlPolicy

    for name in ("in/a.y4m", "inside/a.y4m", "in.y4m"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    for prefix in (f"{tmp_path.as_uri()}/in", f"{tmp_path.as_uri()}/in/"):
        policy = UrlPolicy(allow_input=(prefix,))
        assert policy.check_input(f"{tmp_path.as_uri()}/in/a.y4m")
        for outside in ("inside/a.y4m", "in.y4m"):
            with pytest.raises(InputRejected, match="not under a prefix"):
                policy.check_input(f"{tmp_path.as_uri()}/{outside}")
    single = UrlPolicy(allow_input=(f"{tmp_path.as_uri()}/in.y4m",))
    assert single.check_input(f"{tmp_path.as_uri()}/in.y4m")


def test_good_url(api: ApiServer, input_file: Path) -> None:
    response = submit_json(api, {"input": input_file.as_uri(), **GOOD})
    assert response.status_code == 202, response.text
    job = response.json()["id"]
    assert response.headers["Location"] == f"/v1/jobs/{job}"
    status = api.request("GET", f"/v1/jobs/{job}").json()
    assert status["state"] == "queued" and status["id"] == job
    # The request as the job runs it: what was asked, with the defaults filled in.
    assert status["request"] == {"input": input_file.as_uri(), **GOOD, "scene_cuts": "auto",
                                 "start_frames": "rebase"}
    assert status["progress"]["split"]["total"] == 1 and status["percent"] == 0
    assert status["errors"] == [] and status["overdue"] == []
    assert status["cost"]["so_far"]["total"] == 0 and "total" in status["cost"]["projected"]


# --------------------------------------------------------------------------- uploads


def test_upload_y4m(api: ApiServer, clip_y4m: Path) -> None:
    data = clip_y4m.read_bytes()
    response = submit_upload(api, data, {"frames_per_chunk": 4, "ssim": 16.0, "format": "ivf",
                                         "budget_usd": 0.5})
    assert response.status_code == 202, response.text
    job = response.json()["id"]
    request = api.records.get_job(job).request
    assert request["frames_per_chunk"] == 4 and request["ssim"] == 16.0
    assert request["format"] == "ivf" and "cq_level" not in request
    assert request["budget_usd"] == 0.5
    key = api.store.key_for(request["input"])
    assert key.startswith(f"uploads/{job}/") and api.store.get(key) == data
    # Its owner sees the upload by its hash, not where the service keeps it.
    shown = api.request("GET", f"/v1/jobs/{job}").json()
    digest = hashlib.sha256(data).hexdigest()[:32]
    assert shown["request"] == {**request, "input": f"upload:{digest}"}
    listed = api.request("GET", "/v1/jobs?limit=1000").json()["jobs"]
    assert [j["request"] for j in listed if j["id"] == job] == [shown["request"]]


def test_upload_file_name_is_ignored(api: ApiServer, clip_y4m: Path) -> None:
    # The part's file name never reaches a key or a path: the store names uploads itself.
    files = {"video": ("../../../../tmp/evil.y4m", clip_y4m.read_bytes())}
    response = api.request("POST", "/v1/jobs", files=files)
    assert response.status_code == 202, response.text
    job = response.json()["id"]
    key = api.store.key_for(api.records.get_job(job).request["input"])
    assert key.startswith(f"uploads/{job}/input-") and "evil" not in key
    assert not Path("/tmp/evil.y4m").exists()


def test_upload_mp4(api: ApiServer, clip_mp4: Path) -> None:
    response = submit_upload(api, clip_mp4.read_bytes())
    assert response.status_code == 202, response.text


def test_upload_ivf_with_a_frame_size_past_any_frame(api: ApiServer) -> None:
    import struct

    from shared.codec.limits import MAX_COMPRESSED_FRAME

    header = struct.pack("<4sHH4sHHIII4s", b"DKIF", 0, 32, b"VP80", 64, 48, 30, 1, 1, bytes(4))
    data = header + struct.pack("<IQ", MAX_COMPRESSED_FRAME + 1, 0) + bytes(64)
    reason = error_of(submit_upload(api, data), 400, "not_a_video")
    assert reason.startswith("not a usable IVF file: frame 0 is truncated"), reason


def test_upload_with_a_title_that_is_not_utf8(api: ApiServer, tmp_path: Path) -> None:
    response = submit_upload(api, titled_video(tmp_path / "titled.mkv").read_bytes())
    assert response.status_code == 202, response.text


NOT_VIDEOS = {
    "text": (b"hello, this is not a video\n" * 100, "not a video"),
    "random": (os.urandom(50_000), "not a video"),
    "png": (PNG, "image"),
    "y4m header only": (b"YUV4MPEG2 W64 H48 F30:1\n", "no frames"),
    "y4m bad header": (b"YUV4MPEG2 W0 H48\nFRAME\n", "Y4M"),
    "y4m truncated": (y4m_bytes()[:-100], "truncated"),
    "y4m 4:4:4": (b"YUV4MPEG2 W4 H4 C444\nFRAME\n" + bytes(48), "4:2:0"),
}


@pytest.mark.parametrize("case", list(NOT_VIDEOS))
def test_upload_not_a_video(api: ApiServer, case: str) -> None:
    data, expected = NOT_VIDEOS[case]
    key = f"nv-{secrets.token_hex(4)}"
    assert expected in error_of(submit_upload(api, data, key=key), 400, "not_a_video")
    assert not (Path(api.store.root) / "uploads" / job_id_for("alice", key)).exists()
    assert api.records.get_job(job_id_for("alice", key)) is None


def test_upload_oversize(api: ApiServer) -> None:
    # Refused by its Content-Length before any of it is read, or (a byte over the cap, within
    # the allowance for the multipart framing) as the stream passes the cap.
    far_over = b"YUV4MPEG2 W64 H48\n" + bytes(UPLOAD_LIMIT + 200_000)
    assert "at most" in error_of(submit_upload(api, far_over), 413)
    just_over = bytes(UPLOAD_LIMIT + 1)
    assert "larger than" in error_of(submit_upload(api, just_over), 413)
    exact = y4m_bytes(64, 48, 1)
    exact += b"\0" * (UPLOAD_LIMIT - len(exact))  # at the cap: not refused for its size
    assert "not a usable Y4M" in error_of(submit_upload(api, exact), 400, "not_a_video")


def test_upload_oversize_without_length(api: ApiServer) -> None:
    # Chunked: no Content-Length to refuse it by, so the cap stops the stream itself.
    boundary = "b0undary"

    def body() -> Any:
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; "
               'filename="v"\r\n\r\n').encode()
        for _ in range(UPLOAD_LIMIT // (1 << 20) + 2):
            yield bytes(1 << 20)
        yield f"\r\n--{boundary}--\r\n".encode()

    response = api.request("POST", "/v1/jobs", data=body(),
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert "larger than" in error_of(response, 413)


def test_upload_cut_off(api: ApiServer, clip_y4m: Path, caplog: pytest.LogCaptureFixture,
                        tmp_path: Path) -> None:
    """Content-Length promises more than is sent, then the client goes away."""
    key = f"cut-{secrets.token_hex(4)}"
    part = (b'--b\r\nContent-Disposition: form-data; name="video"; filename="v"\r\n\r\n'
            + clip_y4m.read_bytes()[:20_000])
    head = (f"POST /v1/jobs HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {TOKENS['alice']}"
            f"\r\nIdempotency-Key: {key}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {len(part) + 50_000}").encode()
    raw_http(api, head, part)
    job = job_id_for("alice", key)
    time.sleep(0.3)
    assert api.records.get_job(job) is None
    assert not (Path(api.store.root) / "uploads" / job).exists()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not list(Path(api.store.root).parent.glob("excamera-upload-*"))  # temp file gone
    assert api.request("GET", "/v1/health", token=None).status_code == 200


def test_upload_multipart_without_its_end(api: ApiServer, clip_y4m: Path) -> None:
    body = (b'--b\r\nContent-Disposition: form-data; name="video"; filename="v"\r\n\r\n'
            + clip_y4m.read_bytes())
    response = api.request("POST", "/v1/jobs", data=body,
                           headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert "truncated" in error_of(response, 400, "malformed_body")


def test_upload_parts(api: ApiServer, clip_y4m: Path) -> None:
    data = clip_y4m.read_bytes()
    options_only = {"options": (None, "{}", "application/json")}
    assert "no part named 'video'" in error_of(
        api.request("POST", "/v1/jobs", files=options_only), 400)
    extra = {"video": ("v", data), "thumbnail": ("t", b"x")}
    assert "unknown part 'thumbnail'" in error_of(api.request("POST", "/v1/jobs", files=extra),
                                                  400)
    twice = [("video", ("v", data)), ("video", ("w", data))]
    assert "twice" in error_of(api.request("POST", "/v1/jobs", files=twice), 400)
    assert "empty" in error_of(submit_upload(api, b""), 400)


@pytest.mark.parametrize("options", ["null", "[]", "0", "false", '""'])
def test_upload_options_not_an_object(api: ApiServer, options: str) -> None:
    # Each was taken as no options at all (a 202) before.
    response = submit_upload(api, y4m_bytes(), options)
    assert "is not of type 'object'" in error_of(response, 400, "invalid_job")


def test_upload_part_without_a_name(api: ApiServer) -> None:
    body = b"--b\r\nContent-Disposition: form-data\r\n\r\n" + y4m_bytes() + b"\r\n--b--\r\n"
    response = api.request("POST", "/v1/jobs", data=body,
                           headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert "a part has no name" in error_of(response, 400)


def test_upload_that_names_other_files(api: ApiServer, tmp_path: Path, clip_mp4: Path) -> None:
    # An ffconcat script naming itself made FFmpeg open it again and again, until the API
    # process ran out of file descriptors (and kept hundreds of MB each time).
    began = time.monotonic()
    reason = error_of(submit_upload(api, b"ffconcat version 1.0\nfile video\n"), 400, "not_a_video")
    assert "name other files" in reason and "open files" not in reason
    assert time.monotonic() - began < 5
    # A script naming a real video beside it is not that video (nor is a playlist).
    (tmp_path / "clip.mp4").write_bytes(clip_mp4.read_bytes())
    script = tmp_path / "script"
    script.write_bytes(b"ffconcat version 1.0\nfile clip.mp4\n")
    with pytest.raises(ApiError, match="name other files"):
        sniff_video(script)
    assert sniff_video(tmp_path / "clip.mp4").startswith("mov,mp4")


def test_y4m_check_of_many_tiny_frames(tmp_path: Path) -> None:
    # Bare FRAME lines that fill the file exactly: counted from its size and a sample of the
    # lines. Anything else (a FRAME line with parameters, a damaged one, a cut-off end) is
    # walked frame by frame and refused where it goes wrong.
    header, picture = b"YUV4MPEG2 W2 H2 F25:1\n", bytes(6)
    count = 2_000_000
    tiny = tmp_path / "tiny.y4m"
    tiny.write_bytes(header + (b"FRAME\n" + picture) * count)
    assert sniff_video(tiny) == f"Y4M 2x2, {count} frames"
    frames = [b"FRAME\n" + picture] * 1000
    frames[500] = b"FRAME Ixx\n" + picture
    with_parameters = tmp_path / "parameters.y4m"
    with_parameters.write_bytes(header + b"".join(frames))
    assert sniff_video(with_parameters) == "Y4M 2x2, 1000 frames"
    frames[500] = b"FRAMX\n" + picture  # the same length: only the walk sees it, if unsampled
    damaged = tmp_path / "damaged.y4m"
    damaged.write_bytes(header + b"".join(frames[:999]) + b"FRAMX\n" + picture)
    with pytest.raises(ApiError, match=f"no FRAME line at byte {len(header) + 500 * 12}"):
        sniff_video(damaged)
    cut = tmp_path / "cut.y4m"
    cut.write_bytes(header + (b"FRAME\n" + picture) * 10 + b"FRAME\n" + picture[:3])
    with pytest.raises(ApiError, match="frame 10 is cut off"):
        sniff_video(cut)


def test_upload_bad_options(api: ApiServer, clip_y4m: Path) -> None:
    data = clip_y4m.read_bytes()
    assert "unknown field 'input'" in error_of(
        submit_upload(api, data, {"input": "file:///etc/passwd"}), 400, "invalid_job")
    assert "not valid JSON" in error_of(submit_upload(api, data, "{frames"), 400, "invalid_job")
    for options, expected in (({"frames_per_chunk": 0}, "frames_per_chunk"),
                              ({"cq_level": 1, "ssim": 1.0}, "not both"),
                              ({"scene_cuts": True}, "scene_cuts"),
                              ({"start_frames": 1}, "start_frames")):
        assert expected in error_of(submit_upload(api, data, options), 400, "invalid_job")


# --------------------------------------------------------------------------- idempotency


def test_idempotency_key_json(api: ApiServer, input_file: Path) -> None:
    key = f"key-{secrets.token_hex(4)}"
    document = {"input": input_file.as_uri(), **GOOD}
    first = submit_json(api, document, key=key)
    again = submit_json(api, document, key=key)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"] == job_id_for("alice", key)
    # The same request spelled differently (defaults left out) is the same request.
    assert submit_json(api, {"input": input_file.as_uri()}, key=key).status_code == 202
    response = submit_json(api, {**document, "cq_level": 30}, key=key)
    reason = error_of(response, 409, "idempotency_conflict")
    assert key in reason
    # Keys are per token: bob's same key is bob's own job.
    other = submit_json(api, document, token="bob", key=key)
    assert other.status_code == 202 and other.json()["id"] != first.json()["id"]


def test_idempotency_key_upload(api: ApiServer, clip_y4m: Path) -> None:
    key = f"up-{secrets.token_hex(4)}"
    data = clip_y4m.read_bytes()
    first = submit_upload(api, data, {"frames_per_chunk": 4}, key=key)
    again = submit_upload(api, data, {"frames_per_chunk": 4}, key=key)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    for video, options in ((data, {"frames_per_chunk": 5}),
                           (y4m_bytes(frames=3), {"frames_per_chunk": 4})):
        error_of(submit_upload(api, video, options, key=key), 409, "idempotency_conflict")


def test_idempotent_repeat_after_the_input_is_gone(api: ApiServer, input_file: Path) -> None:
    # A client retrying an accepted job (it never saw the 202) must find it, even if the input
    # has been moved since; it got a 400 "no such file" before.
    key = f"gone-{secrets.token_hex(4)}"
    document = {"input": input_file.as_uri(), **GOOD}
    first = submit_json(api, document, key=key)
    assert first.status_code == 202, first.text
    input_file.unlink()
    again = submit_json(api, document, key=key)
    assert again.status_code == 202, again.text
    assert again.json() == first.json()
    assert "with a different request" in error_of(
        submit_json(api, {**document, "cq_level": 30}, key=key), 409, "idempotency_conflict")
    assert "no such file" in error_of(submit_json(api, document), 400, "input_refused")  # a new job


@pytest.mark.parametrize("key", ["../../etc/passwd", "a" * 129, "with space", "-lead", "é"])
def test_idempotency_key_malformed(api: ApiServer, input_file: Path, key: str) -> None:
    headers = {"Idempotency-Key": key.encode("utf-8")}
    response = api.request("POST", "/v1/jobs", json={"input": input_file.as_uri()},
                           headers=headers)
    assert "Idempotency-Key" in error_of(response, 400)


# --------------------------------------------------------------------------- ids, owners


@pytest.mark.parametrize("path", [
    "/v1/jobs/j-000000000000000000000000", "/v1/jobs/nope", "/v1/jobs/J-000000000000000000000000",
    "/v1/jobs/..%2F..%2Fetc%2Fpasswd", "/v1/jobs/j-..%2F..%2Fsecret/output",
    "/v1/jobs/%2e%2e/tasks", "/v1/jobs/j-000000000000000000000000%00/output",
    "/v1/jobs/j-000000000000000000000000/../../../etc/passwd",
])
def test_unknown_or_malformed_job(api: ApiServer, path: str) -> None:
    error_of(api.request("GET", path), 404)


def test_another_tokens_job(api: ApiServer, input_file: Path, make_done_job: Any) -> None:
    job = submit_json(api, {"input": input_file.as_uri()}).json()["id"]
    done = make_done_job(b"output", owner="alice")
    for target in (job, done):
        for method, suffix in (("GET", ""), ("GET", "/tasks"), ("GET", "/output"),
                               ("DELETE", "")):
            response = api.request(method, f"/v1/jobs/{target}{suffix}", token="bob")
            assert error_of(response, 404) == f"no such job: {target}"
    listed = api.request("GET", "/v1/jobs?limit=1000", token="bob").json()["jobs"]
    assert not {job, done} & {item["id"] for item in listed}
    assert api.request("GET", f"/v1/jobs/{job}").status_code == 200


def test_listing(api: ApiServer, input_file: Path) -> None:
    made = [submit_json(api, {"input": input_file.as_uri()}, token="bob").json()["id"]
            for _ in range(3)]
    listed = api.request("GET", "/v1/jobs", token="bob").json()
    ids = [item["id"] for item in listed["jobs"]]
    assert set(made) <= set(ids)
    assert all(api.records.get_job(job).owner == "bob" for job in ids)
    first = api.request("GET", "/v1/jobs?limit=2", token="bob").json()
    assert len(first["jobs"]) == 2 and first["next_offset"] == 2
    rest = api.request("GET", "/v1/jobs?limit=1000&offset=2", token="bob").json()
    assert rest["next_offset"] is None
    assert [j["id"] for j in first["jobs"] + rest["jobs"]] == ids
    for query in ("limit=0", "limit=1001", "limit=x", "offset=-1", "limit=1&limit=2", "state=x",
                  "state=done&state=failed", "colour=red"):
        error_of(api.request("GET", f"/v1/jobs?{query}", token="bob"), 400)
    # By state: bob's three are queued; one cancelled is listed under its new state alone.
    assert api.request("DELETE", f"/v1/jobs/{made[0]}", token="bob").status_code == 200
    by_state = {state: [j["id"] for j in api.request(
        "GET", f"/v1/jobs?state={state}&limit=1000", token="bob").json()["jobs"]]
        for state in ("queued", "cancelled", "done")}
    assert made[0] in by_state["cancelled"] and made[0] not in by_state["queued"]
    assert set(made[1:]) <= set(by_state["queued"])
    assert all(api.records.get_job(job).state == state
               for state, jobs in by_state.items() for job in jobs)


def test_tasks(api: ApiServer, input_file: Path) -> None:
    job = submit_json(api, {"input": input_file.as_uri()}).json()["id"]
    tasks = api.request("GET", f"/v1/jobs/{job}/tasks").json()
    assert tasks["id"] == job and [t["stage"] for t in tasks["tasks"]] == ["split"]
    assert tasks["tasks"][0]["state"] in ("waiting", "queued")  # until a splitter claims it
    assert api.request("GET", f"/v1/jobs/{job}/tasks?stage=encode").json()["tasks"] == []
    assert "stage must be one of" in error_of(
        api.request("GET", f"/v1/jobs/{job}/tasks?stage=nope"), 400)


# --------------------------------------------------------------------------- output


def test_output_and_ranges(api: ApiServer, make_done_job: Any) -> None:
    data = bytes(range(256)) * 40
    job = make_done_job(data)
    status = api.request("GET", f"/v1/jobs/{job}").json()
    assert status["state"] == "done" and status["output"] == f"/v1/jobs/{job}/output"
    whole = api.request("GET", f"/v1/jobs/{job}/output")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["Content-Type"] == "video/webm"
    assert whole.headers["Accept-Ranges"] == "bytes"
    for header, expected, content_range in (
        ("bytes=0-9", data[:10], f"bytes 0-9/{len(data)}"),
        ("bytes=100-", data[100:], f"bytes 100-{len(data) - 1}/{len(data)}"),
        ("bytes=-16", data[-16:], f"bytes {len(data) - 16}-{len(data) - 1}/{len(data)}"),
        (f"bytes=10-{len(data) * 2}", data[10:], f"bytes 10-{len(data) - 1}/{len(data)}"),
    ):
        part = api.request("GET", f"/v1/jobs/{job}/output", headers={"Range": header})
        assert part.status_code == 206, (header, part.status_code)
        assert part.content == expected and part.headers["Content-Range"] == content_range
    for header in (f"bytes={len(data)}-", "bytes=9-2", "bytes=a-b", "bytes=-0", "bytes=-000"):
        beyond = api.request("GET", f"/v1/jobs/{job}/output", headers={"Range": header})
        assert "range" in error_of(beyond, 416)
        assert beyond.headers["Content-Range"] == f"bytes */{len(data)}"
    # Another unit must be ignored, and several ranges may be: the whole file (RFC 9110).
    for header in ("items=0-1", "bytes=0-1,4-5"):
        served = api.request("GET", f"/v1/jobs/{job}/output", headers={"Range": header})
        assert (served.status_code, served.content) == (200, data), header
    # If-Range: our ETag serves the range; another version's (or a weak one) the whole file.
    etag = whole.headers["ETag"]
    for condition, status in ((etag, 206), ('"other"', 200), (f"W/{etag}", 200),
                              (whole.headers["Last-Modified"], 206),
                              ("Mon, 01 Jan 2001 00:00:00 GMT", 200)):
        served = api.request("GET", f"/v1/jobs/{job}/output",
                             headers={"Range": "bytes=0-9", "If-Range": condition})
        assert served.status_code == status, condition
        assert served.content == (data[:10] if status == 206 else data), condition
    stale = api.request("GET", f"/v1/jobs/{job}/output",
                        headers={"Range": f"bytes={len(data)}-", "If-Range": '"other"'})
    assert (stale.status_code, stale.content) == (200, data)
    # Served whole on a kept-alive connection, the next request on it is answered too (the
    # whole file was prepared twice, which failed after the body and closed the connection).
    token = TOKENS["alice"]
    answer = raw_http(api, f"GET /v1/jobs/{job}/output HTTP/1.1\r\nHost: x\r\n"
                           f"Authorization: Bearer {token}\r\nRange: bytes=0-1,4-5\r\n\r\n"
                           f"GET /v1/health HTTP/1.1\r\nHost: x".encode(), b"")
    first, _, rest = answer.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200") and rest.startswith(data), first
    assert rest[len(data):].startswith(b"HTTP/1.1 200"), rest[len(data):][:200]
    head = api.request("HEAD", f"/v1/jobs/{job}/output")
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(data)
    ivf = make_done_job(b"DKIF....", form="ivf")
    assert api.request("GET", f"/v1/jobs/{ivf}/output").headers["Content-Type"] == "video/x-ivf"


def test_output_link(api: ApiServer, make_done_job: Any, input_file: Path) -> None:
    """The status's signed link reads the output without a token (a <video src>), until it
    expires; it opens nothing else."""
    data = bytes(range(256)) * 8
    job = make_done_job(data)
    link = api.request("GET", f"/v1/jobs/{job}").json()["output_link"]
    assert link.startswith(f"/v1/jobs/{job}/output?expires=")
    assert api.request("GET", link, token=None).content == data
    part = api.request("GET", link, token=None, headers={"Range": "bytes=8-15"})
    assert part.status_code == 206 and part.content == data[8:16]
    expires = link.split("expires=")[1].split("&")[0]
    other = make_done_job(b"another's")
    tokens = Tokens.parse(",".join(f"{name}:{token}" for name, token in TOKENS.items()))
    past = int(time.time()) - 1
    for bad in (link[:-1] + ("0" if link[-1] != "0" else "1"),  # tampered
                link.replace(job, other),  # another job's
                f"/v1/jobs/{job}/output?expires={past}&signature={tokens.sign_link(job, past)}",
                f"/v1/jobs/{job}/output?expires={expires}",  # no signature
                f"/v1/jobs/{job}/output?expires=x&signature=y"):
        assert "not valid or has expired" in error_of(api.request("GET", bad, token=None),
                                                      401), bad
    queued = submit_json(api, {"input": input_file.as_uri()}).json()["id"]
    assert api.request("GET", f"/v1/jobs/{queued}").json()["output_link"] is None


def test_output_not_ready(api: ApiServer, input_file: Path) -> None:
    job = submit_json(api, {"input": input_file.as_uri()}).json()["id"]
    assert "queued" in error_of(api.request("GET", f"/v1/jobs/{job}/output"), 409, "job_not_done")
    api.records.fail_job(job, "chunk 3 is corrupt")
    reason = error_of(api.request("GET", f"/v1/jobs/{job}/output"), 409, "job_not_done")
    assert "failed" in reason and "chunk 3 is corrupt" in reason


def test_output_gone(api: ApiServer, make_done_job: Any) -> None:
    job = make_done_job(b"x" * 100)
    os.unlink(api.store.local_path(f"outputs/{job}/output.webm"))
    assert "no longer" in error_of(api.request("GET", f"/v1/jobs/{job}/output"), 410)


# --------------------------------------------------------------------------- cancel, janitor


def test_cancel(api: ApiServer, input_file: Path, make_done_job: Any) -> None:
    job = submit_json(api, {"input": input_file.as_uri()}).json()["id"]
    api.store.put(f"jobs/{job}/chunks/00000/source.y4m", b"intermediate")
    response = api.request("DELETE", f"/v1/jobs/{job}")
    assert response.status_code == 200 and response.json() == {"id": job, "state": "cancelled"}
    assert api.request("GET", f"/v1/jobs/{job}").json()["state"] == "cancelled"
    assert not api.store.exists(f"jobs/{job}/chunks/00000/source.y4m")
    assert [t["state"] for t in api.request("GET", f"/v1/jobs/{job}/tasks").json()["tasks"]] \
        == ["cancelled"]
    assert "cancelled" in error_of(api.request("DELETE", f"/v1/jobs/{job}"), 409, "job_ended")
    done = make_done_job(b"output")
    assert "done" in error_of(api.request("DELETE", f"/v1/jobs/{done}"), 409, "job_ended")
    assert api.request("GET", f"/v1/jobs/{done}/output").content == b"output"


_EVENTS: list[dict[str, Any]] = []  # taken from the events queue, for whichever test's job


def events_for(api: ApiServer, job: str) -> list[dict[str, Any]]:
    """The events posted for `job` on the API's events queue."""
    import kombu
    from api_support import BROKER
    from services_support import events_for as wait_for_events

    def take() -> list[dict[str, Any]]:
        taken = []
        with kombu.Connection(BROKER) as connection:
            channel = connection.channel()
            while (message := channel.basic_get(f"{api.config.queue_prefix}.events",
                                                no_ack=True)) is not None:
                taken.append(json.loads(message.body))
        return taken

    return wait_for_events(job, take, _EVENTS, timeout=10.0)


def test_a_cancel_is_announced(api: ApiServer, input_file: Path) -> None:
    job = submit_json(api, {"input": input_file.as_uri()}, key="announced-cancel").json()["id"]
    assert api.request("DELETE", f"/v1/jobs/{job}").status_code == 200
    (event,) = events_for(api, job)
    record = api.records.get_job(job)
    assert event == {"version": 1, "event": "job.ended", "job": job, "id": "announced-cancel",
                     "owner": "alice", "state": "cancelled", "output": None, "result": None,
                     "error": None, "finished_at": record.finished_at.isoformat()}
    assert record.announced_at is not None


def test_an_end_not_announced_is_announced_by_the_janitor(api: ApiServer,
                                                         make_done_job: Any) -> None:
    # make_done_job ends the job in its record alone, as a process that died before it could
    # announce the end (or found the broker down) leaves it.
    job = make_done_job(b"output")
    assert api.records.get_job(job).announced_at is None
    (event,) = events_for(api, job)
    assert (event["state"], event["output"]) == ("done", f"/v1/jobs/{job}/output")
    assert event["result"] == api.records.get_job(job).result
    assert api.records.get_job(job).announced_at is not None
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(
        api.request("GET", "/metrics", token=None).text)}
    late = [s.value for s in families["excamera_job_events"].samples
            if s.labels == {"state": "done", "when": "late"} and s.name.endswith("_total")]
    assert late and late[0] >= 1


def test_janitor_deletes_intermediates_after_retention(api: ApiServer,
                                                       make_done_job: Any) -> None:
    job = make_done_job(b"kept")
    api.store.put(f"jobs/{job}/states/00000.state", b"intermediate")
    with api.records._tx() as cur:  # retention over: as if the job ended an hour ago
        cur.execute("UPDATE excamera_jobs SET expires_at = now() WHERE id = %s", (job,))
    cleaned_by_the_janitor(api, job)
    assert api.request("GET", f"/v1/jobs/{job}/output").content == b"kept"


def cleaned_by_the_janitor(api: ApiServer, job: str) -> None:
    """Wait (at most 10 s) for the janitor to clean `job`, whose intermediate it deletes."""
    deadline = time.monotonic() + 10
    while api.records.get_job(job).cleaned_at is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert api.records.get_job(job).cleaned_at is not None
    assert not api.store.exists(f"jobs/{job}/states/00000.state")


def test_a_job_the_janitor_cannot_clean_holds_up_no_other(
        api: ApiServer, make_done_job: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job whose intermediates cannot be deleted (S3 AccessDenied, say: not transient) is
    tried again an hour later, and the jobs behind it are cleaned meanwhile (it came first in
    every pass, whose failure ended the pass: no job was cleaned again)."""
    from services.api import app
    from shared.pipeline.errors import PipelineError

    stuck, other = make_done_job(b"one"), make_done_job(b"two")
    real_purge = app.purge_job

    def purge(runtime: Any, job: str) -> None:
        if job == stuck:
            raise PipelineError("S3: AccessDenied")
        real_purge(runtime, job)

    monkeypatch.setattr(app, "purge_job", purge)
    api.store.put(f"jobs/{other}/states/00000.state", b"intermediate")
    with api.records._tx() as cur:  # both past their retention, the stuck one the longer
        cur.execute("UPDATE excamera_jobs SET expires_at = now() - interval '1 hour' "
                    "WHERE id = %s", (stuck,))
        cur.execute("UPDATE excamera_jobs SET expires_at = now() WHERE id = %s", (other,))
    cleaned_by_the_janitor(api, other)
    record = api.records.get_job(stuck)
    assert record.cleaned_at is None
    assert record.expires_at.timestamp() > time.time() + 3000  # again in about an hour


# --------------------------------------------------------------------------- operations


def test_health(api: ApiServer) -> None:
    response = api.request("GET", "/v1/health", token=None)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "db": "ok", "broker": "ok"}


def test_a_submission_as_the_broker_goes_away_is_answered_at_once(
        api: ApiServer, input_file: Path) -> None:
    """The broker goes away after the API declared its queues: the next submission is
    recorded for the janitor to post, and answered within seconds, not after the half
    minute of retries a worker's publish may wait (a client would time out, unsure)."""
    import requests
    from api_support import _ServerThread
    from tcp_relay import TcpRelay

    from services.api.app import create_app

    relay = TcpRelay(5672)
    config = api.config.with_changes(broker=f"amqp://guest:guest@127.0.0.1:{relay.port}//")
    server = _ServerThread(create_app(config, Tokens.parse("alice:x")))
    port = server.start()
    try:
        def submit(key: str) -> requests.Response:
            return requests.post(f"http://127.0.0.1:{port}/v1/jobs", timeout=60,
                                 headers={"Authorization": "Bearer x", "Idempotency-Key": key},
                                 json={"input": input_file.as_uri()})

        first = submit(before := f"before-{secrets.token_hex(4)}")
        assert first.status_code == 202, first.text
        unposted = {r.client_id for r in api.records.unposted_jobs(0, 10_000)}
        assert before not in unposted  # posted: the queues are declared
        relay.cut()
        began = time.monotonic()
        second = submit(key := f"after-{secrets.token_hex(4)}")
        assert time.monotonic() - began < 5
        assert second.status_code == 202, second.text
        assert second.json()["id"] == job_id_for("alice", key)
        assert key in {r.client_id for r in api.records.unposted_jobs(0, 10_000)}
    finally:
        server.stop()
        relay.cut()


def test_health_with_the_broker_down(api: ApiServer, input_file: Path) -> None:
    from api_support import _ServerThread

    from services.api.app import create_app

    config = api.config.with_changes(broker="amqp://guest:guest@127.0.0.1:1//")
    server = _ServerThread(create_app(config, Tokens.parse("alice:x")))
    port = server.start()
    try:
        import requests

        began = time.monotonic()
        response = requests.get(f"http://127.0.0.1:{port}/v1/health", timeout=30)
        assert time.monotonic() - began < 15
        assert response.status_code == 503
        document = response.json()
        assert document["status"] == "unavailable" and document["db"] == "ok"
        assert document["broker"] != "ok" and "broker" in document["error"]
        key = f"down-{secrets.token_hex(4)}"
        submitted = requests.post(f"http://127.0.0.1:{port}/v1/jobs", timeout=30,
                                  headers={"Authorization": "Bearer x", "Idempotency-Key": key},
                                  json={"input": input_file.as_uri()})
        # The job is recorded all the same (202, queued), and posted once the broker is back.
        # Before, it was a 503 whose record and upload were deleted, while a post that did
        # arrive unconfirmed made the job anyway.
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()["id"]
        assert job == job_id_for("alice", key) and api.records.get_job(job).state == "queued"
        assert job in {r.id for r in api.records.unposted_jobs(0, 10_000)}
        began = time.monotonic()
        scraped = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=60)
        assert scraped.status_code == 200 and time.monotonic() - began < 15
        # The depths kept from before are said to be stale.
        from prometheus_client.parser import text_string_to_metric_families

        up = {s.labels["dependency"]: s.value for f in text_string_to_metric_families(
            scraped.text) if f.name == "excamera_dependency_up" for s in f.samples}
        assert up == {"broker": 0, "db": 1}, up
    finally:
        server.stop()
    _the_janitor_posts(api, job, key)


def test_the_janitor_posts_every_job_recorded_while_the_broker_was_down(
        api: ApiServer) -> None:
    # One batch of 50 a pass drained a long outage's submissions over hours. (A database of
    # its own: the test server's janitor, every 0.2 s, would post them too.)
    import psycopg
    from services_support import drop_database

    from services.api.app import POST_BATCH, _post_unposted
    from services.api.context import ApiContext
    from services.records import JobRecords

    name = f"excamera_outbox_{secrets.token_hex(4)}"
    config = api.config.with_changes(db=f"postgresql://postgres@127.0.0.1:5432/{name}")
    records = JobRecords(config.db)
    try:
        jobs = set()
        for n in range(POST_BATCH + 7):  # the last with an output of its own, which goes too
            jobs.add(job := job_id_for("alice", f"outbox-{n}"))
            records.create_job(job, "alice", f"outbox-{n}", {"input": "file:///x.y4m"},
                               "file:///out/x.ivf" if n == POST_BATCH + 6 else None)
        # A record this version cannot read fails alone, and is kept to be read.
        unreadable = job_id_for("alice", "outbox-unreadable")
        records.create_job(unreadable, "alice", "outbox-unreadable", {"input": 5}, None)
        with psycopg.connect(config.db, autocommit=True) as db:
            db.execute("UPDATE excamera_jobs SET created_at = now() - interval '1 minute'")
        context = ApiContext(config, Tokens.parse("alice:x"), TEST_LIMITS)
        try:
            assert _post_unposted(context) == len(jobs)
        finally:
            context.close()
        assert records.unposted_jobs(0, 100_000) == []
        failed = records.get_job(unreadable)
        assert failed.state == "failed" and "cannot be posted" in failed.error, failed.error
        assert (failed.expires_at - failed.finished_at).total_seconds() == (
            config.retention_seconds)
    finally:
        records.close()
        drop_database(name)
    documents = {job_id_for(d.get("owner"), d["id"]): d for d in _ingest_documents(api, 2.0)}
    assert jobs <= set(documents)
    assert documents[job_id_for("alice", f"outbox-{POST_BATCH + 6}")]["output"] == (
        "file:///out/x.ivf")


def _the_janitor_posts(api: ApiServer, job: str, key: str) -> None:
    """What the API's janitor does each pass, with the broker back: the job's ingest message
    goes out, as the API would have posted it."""

    from services.api.jobs import post_unposted
    from services.runtime import Runtime

    runtime = Runtime(api.config)
    try:
        assert post_unposted(runtime, 0, limit=10_000) >= 1
    finally:
        runtime.close()
    assert job not in {r.id for r in api.records.unposted_jobs(0, 10_000)}
    (document,) = [d for d in _ingest_documents(api, 2.0)
                   if job_id_for(d.get("owner"), d["id"]) == job]
    jsonschema.validate(document, INGEST_SCHEMA)
    assert (document["id"], document["owner"]) == (key, "alice")


def test_documented_answers(api: ApiServer, input_file: Path, make_done_job: Any) -> None:
    """Answers the fuzzer does not provoke are in the OpenAPI document all the same."""
    paths = openapi.document(TEST_LIMITS)["paths"]
    for path in ("/v1/health", "/metrics", "/v1/openapi.json"):
        response = api.request("GET", f"{path}?verbose=1", token=None)
        assert "unknown query parameter" in error_of(response, 400)
        assert "400" in paths[path]["get"]["responses"], path
    assert "408" in paths["/v1/jobs"]["post"]["responses"]
    job = make_done_job(b"output")
    output = paths["/v1/jobs/{id}/output"]["get"]["responses"]
    for headers, status in (({"If-None-Match": "*"}, 304), ({"If-Match": '"other"'}, 412)):
        assert api.request("GET", f"/v1/jobs/{job}/output", headers=headers).status_code \
            == status
        assert str(status) in output
    stored = openapi.document(TEST_LIMITS)["components"]["schemas"]["StoredRequest"]
    queued = submit_json(api, {"input": input_file.as_uri()}).json()["id"]
    request = api.request("GET", f"/v1/jobs/{queued}").json()["request"]
    jsonschema.validate(request, {**stored, "additionalProperties": False})


def test_wrong_method(api: ApiServer) -> None:
    response = api.request("PUT", "/v1/jobs")
    assert "not allowed" in error_of(response, 405)
    assert set(response.headers["Allow"].split(",")) == {"GET", "POST"}
    assert "no such resource" in error_of(api.request("GET", "/v2/jobs"), 404)


def test_metrics(api: ApiServer, input_file: Path, make_done_job: Any) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    job = submit_json(api, {"input": input_file.as_uri()}).json()["id"]
    api.request("GET", f"/v1/jobs/{job}")
    api.request("GET", "/v1/jobs/unknown")
    api.request("GET", "/no/such/path/" + secrets.token_hex(4))
    done = make_done_job(b"0123456789")
    api.request("GET", f"/v1/jobs/{done}/output", headers={"Range": "bytes=2-3"})
    response = api.request("GET", "/metrics", token=None)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith(
        "text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    requests_ = families["excamera_http_requests"].samples
    routes = {(s.labels["method"], s.labels["route"], s.labels["status"]) for s in requests_}
    assert ("GET", "/v1/jobs/{id}", "200") in routes
    assert ("GET", "/v1/jobs/{id}", "404") in routes
    assert ("POST", "/v1/jobs", "202") in routes
    assert ("GET", "/v1/jobs/{id}/output", "206") in routes
    assert ("GET", "unmatched", "404") in routes  # never a series per random path
    assert not any("/no/such/path" in route for _, route, _ in routes)
    # nor per random method (aiohttp's Python parser takes any token; the C parser, these)
    raw_http(api, b"PROPFIND /v1/jobs HTTP/1.1\r\nHost: test", b"")
    families = {f.name: f for f in text_string_to_metric_families(
        api.request("GET", "/metrics", token=None).text)}
    methods = {s.labels["method"] for s in families["excamera_http_requests"].samples}
    assert "PROPFIND" not in methods and "other" in methods
    assert "excamera_http_request_seconds" in families
    depths = {s.labels["queue"]: s.value for s in families["excamera_queue_depth"].samples}
    assert f"{api.config.queue_prefix}.ingest" in depths
    up = {s.labels["dependency"]: s.value for s in families["excamera_dependency_up"].samples}
    assert up == {"broker": 1, "db": 1}, up
    jobs = {s.labels["state"]: s.value for s in families["excamera_jobs"].samples}
    assert set(jobs) >= {"queued", "running", "done", "failed", "cancelled"}
    assert jobs["queued"] >= 1


def test_ingest_message(api: ApiServer, input_file: Path, clip_y4m: Path) -> None:
    """What the API publishes is a valid ingest message, which the splitter accepts."""
    import kombu

    key = f"ingest-{secrets.token_hex(4)}"
    job = submit_json(api, {"input": input_file.as_uri(), **GOOD}, key=key).json()["id"]
    upload = submit_upload(api, clip_y4m.read_bytes(), {"cq_level": 30}).json()["id"]
    found: dict[str, Any] = {}
    with kombu.Connection(api.config.broker) as connection:
        channel = connection.channel()
        deadline = time.monotonic() + 10
        while not {job, upload} <= set(found) and time.monotonic() < deadline:
            message = channel.basic_get(f"{api.config.queue_prefix}.ingest", no_ack=True)
            if message is None:
                time.sleep(0.05)
                continue
            assert message.properties["content_type"] == "application/json"
            document = json.loads(message.body)
            jsonschema.validate(document, INGEST_SCHEMA)
            found[job_id_for(document["owner"], document["id"])] = document
    assert found[job] == {"version": 1, "id": key, "owner": "alice",
                          "input": input_file.as_uri(), **GOOD, "scene_cuts": "auto",
                                 "start_frames": "rebase"}
    uploaded = parse_ingest(found[upload])
    assert uploaded.request.cq_level == 30 and uploaded.output is None
    from services.runtime import Runtime

    runtime = Runtime(api.config)  # as the splitter checks it, and reads the file
    assert runtime.policy.check_input(uploaded.request.input, runtime.store)
    assert runtime.store.get(runtime.store.key_for(uploaded.request.input)) \
        == clip_y4m.read_bytes()


def _ingest_documents(api: ApiServer, seconds: float = 3.0) -> list[dict[str, Any]]:
    """The ingest messages that arrive within `seconds`, taken off the queue (nothing else
    consumes this test server's ingest queue)."""
    import kombu

    documents = []
    with kombu.Connection(api.config.broker) as connection:
        channel = connection.channel()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = channel.basic_get(f"{api.config.queue_prefix}.ingest", no_ack=True)
            if message is None:
                time.sleep(0.05)
                continue
            documents.append(json.loads(message.body))
    return documents


def _ingest_posts(api: ApiServer, job: str, seconds: float = 3.0) -> int:
    """How many ingest messages for `job` arrive within `seconds`."""
    return sum(job_id_for(d.get("owner"), d["id"]) == job for d in _ingest_documents(api, seconds))


def test_repeat_of_a_queued_job_posts_it_again(api: ApiServer, input_file: Path,
                                               clip_y4m: Path) -> None:
    """A repeat may be answered 202 while the first request's post fails and that request undoes
    the job (its record, its upload). So a repeat of a queued job posts it again (the ingest
    makes or finds the job, and splits it once) and stores an upload that is gone again."""
    key = f"again-{secrets.token_hex(4)}"
    job = submit_json(api, {"input": input_file.as_uri()}, key=key).json()["id"]
    assert _ingest_posts(api, job) == 1
    assert submit_json(api, {"input": input_file.as_uri()}, key=key).status_code == 202
    assert _ingest_posts(api, job) == 1

    upload_key = f"again-up-{secrets.token_hex(4)}"
    data = clip_y4m.read_bytes()
    uploaded = submit_upload(api, data, key=upload_key).json()["id"]
    assert _ingest_posts(api, uploaded) == 1
    api.store.delete_prefix(f"uploads/{uploaded}/")  # as the first request's undo does
    assert submit_upload(api, data, key=upload_key).status_code == 202
    assert _ingest_posts(api, uploaded) == 1
    from services.api.jobs import upload_key as stored_upload

    assert api.store.get(stored_upload(uploaded, hashlib.sha256(data).hexdigest())) == data

    # Once the job has started, a repeat is only answered.
    assert api.records.start_job(job)
    repeated = submit_json(api, {"input": input_file.as_uri()}, key=key)
    assert repeated.status_code == 202 and repeated.json()["state"] == "running"
    assert _ingest_posts(api, job, 1.0) == 0


def test_status_latency_with_a_big_job(api: ApiServer, record_property: Any) -> None:
    """The status of a job of 3,552 chunks (14,000 tasks) answers in milliseconds."""
    client = secrets.token_hex(8)
    job = job_id_for("alice", client)
    request = JobRequest("https://media.example.com/sintel-4k.mp4").to_json()
    api.records.create_job(job, "alice", client, request, None)
    chunks = 3552
    stages = ("encode", "state", "first", "rebase")
    tasks = [TaskId(stage, index) for index in range(chunks) for stage in stages]
    api.records.set_plan(job, {"chunks": chunks}, {stage: chunks for stage in stages}, tasks)
    for index in range(0, chunks, 3):
        api.records.start_task(job, TaskId("encode", index), "w", 60.0)
    import requests

    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {TOKENS['alice']}"
        times = []
        for _ in range(40):
            began = time.perf_counter()
            response = session.get(f"{api.url}/v1/jobs/{job}", timeout=30)
            times.append(time.perf_counter() - began)
            assert response.status_code == 200
    assert response.json()["progress"]["encode"]["running"] == len(range(0, chunks, 3))
    assert response.json()["percent"] == 0
    for index in range(0, 1000):  # 1,000 of the split's one and the plan's 14,208 tasks
        api.records.finish_task(job, TaskId("encode", index), "w", 1.0)
    assert api.request("GET", f"/v1/jobs/{job}").json()["percent"] == 7.0
    times.sort()
    record_property("status_ms_p50", round(statistics.median(times) * 1000, 1))
    record_property("status_ms_max", round(times[-1] * 1000, 1))
    assert statistics.median(times) < 0.25


def test_the_api_imports_no_compiled_codec() -> None:
    code = ("import sys, services.api.app, services.api.uploads\n"
            "print([m for m, v in sys.modules.items() if m.startswith('shared.codec')"
            " and (getattr(v, '__file__', '') or '').endswith(('.so', '.pyd'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[1]).stdout.strip()
    assert out == "[]"


# --------------------------------------------------------------------------- S3


def test_with_an_s3_store(api: ApiServer, clip_y4m: Path) -> None:
    """With the store on S3 (moto here) uploads go there, and the output is a redirect to a
    presigned URL, which serves ranges itself."""
    pytest.importorskip("moto")
    import boto3
    import requests
    from api_support import TEST_LIMITS, _ServerThread
    from aws_support import moto_server

    from services.api.app import create_app
    from services.rebaser.join import output_key
    from shared.pipeline.store import open_store

    with moto_server():
        bucket = f"excamera-api-{secrets.token_hex(4)}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        config = api.config.with_changes(store=f"s3://{bucket}/store")
        tokens = Tokens.parse(f"alice:{TOKENS['alice']}")
        server = _ServerThread(create_app(config, tokens, TEST_LIMITS))
        url = f"http://127.0.0.1:{server.start()}"
        store = open_store(config.store)
        try:
            auth = {"Authorization": f"Bearer {TOKENS['alice']}"}
            files = {"video": ("clip", clip_y4m.read_bytes())}
            job = requests.post(f"{url}/v1/jobs", files=files, headers=auth, timeout=30)
            assert job.status_code == 202, job.text
            request = api.records.get_job(job.json()["id"]).request
            assert request["input"].startswith(f"s3://{bucket}/store/uploads/")
            assert store.get(store.key_for(request["input"])) == clip_y4m.read_bytes()

            client = secrets.token_hex(8)
            done = job_id_for("alice", client)
            api.records.create_job(done, "alice", client, request, None)
            data = bytes(range(256)) * 4
            store.put(output_key(done, "webm"), data)
            api.records.finish_job(done, output_key(done, "webm"), {}, 3600.0)
            answer = requests.get(f"{url}/v1/jobs/{done}/output", headers=auth, timeout=30,
                                  allow_redirects=False)
            assert answer.status_code == 307
            presigned = answer.headers["Location"]
            assert presigned.startswith("http://127.0.0.1") and "Signature" in presigned
            assert requests.get(presigned, timeout=30).content == data
            ranged = requests.get(presigned, headers={"Range": "bytes=4-7"}, timeout=30)
            assert ranged.status_code == 206 and ranged.content == data[4:8]
        finally:
            server.stop()


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_an_upload_over_http_matches_the_embedded_encode(tmp_path: Path) -> None:
    """The real worker services (as processes) behind the API: an uploaded clip's output,
    read back in ranges as a browser would, is byte-identical to `excamera encode`'s."""
    from api_support import TEST_LIMITS, _ServerThread
    from services_support import cluster_at, embedded_output

    from services.api.app import create_app
    from services.config import ServiceConfig

    source = tmp_path / "clip.y4m"
    source.write_bytes(y4m_bytes(96, 64, 30))
    reference = embedded_output(source, tmp_path / "reference.ivf", n=5, x=3, cq=20)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    with cluster_at(tmp_path / "cluster", inputs) as cluster:
        cluster.start({"encoder": 2})
        config = ServiceConfig.from_env(
            {k: v for k, v in cluster.env().items() if k.startswith("EXCAMERA_")})
        tokens = Tokens.parse(f"alice:{TOKENS['alice']}")
        server = _ServerThread(create_app(config, tokens, TEST_LIMITS))
        api = ApiServer(f"http://127.0.0.1:{server.start()}", config, None, inputs, None)
        try:
            options = {"frames_per_chunk": 5, "chunks_per_group": 3, "cq_level": 20,
                       "format": "ivf"}
            response = submit_upload(api, source.read_bytes(), options)
            assert response.status_code == 202, response.text
            job = response.json()["id"]
            deadline = time.monotonic() + 120
            while (status := api.request("GET", f"/v1/jobs/{job}").json())["state"] in (
                    "queued", "running") and time.monotonic() < deadline:
                time.sleep(0.1)
            assert status["state"] == "done", status
            assert all(p["done"] == p["total"] for p in status["progress"].values())
            assert status["percent"] == 100
            assert status["plan"]["source"] == "the upload"
            digest = hashlib.sha256(source.read_bytes()).hexdigest()[:32]
            assert status["request"]["input"] == f"upload:{digest}"
            assert "uploads/" not in json.dumps(status)  # nowhere the store's own names
            # The same through `excamera submit`, run as a user runs it: the same bytes.
            submitted = tmp_path / "submitted.ivf"
            run = subprocess.run(
                [sys.executable, "-m", "shared.cli", "submit", str(source), "-o",
                 str(submitted), "-n", "5", "-x", "3", "--cq-level", "20", "--api", api.url],
                capture_output=True, text=True, timeout=180,
                env={**os.environ, "EXCAMERA_TOKEN": TOKENS["alice"]})
            assert run.returncode == 0, run.stderr
            assert submitted.read_bytes() == reference
            assert run.stdout.startswith(f"wrote {submitted}: {len(reference):,} bytes (job j-")
            assert status["plan"]["chunks"] == 6 and status["result"]["bytes"] == len(reference)
            tasks = api.request("GET", f"/v1/jobs/{job}/tasks?limit=1000").json()["tasks"]
            assert tasks and all(t["state"] == "done" and t["worker"] for t in tasks)
            pieces, step = [], 1000
            for start in range(0, len(reference), step):
                part = api.request("GET", f"/v1/jobs/{job}/output",
                                   headers={"Range": f"bytes={start}-{start + step - 1}"})
                assert part.status_code == 206
                pieces.append(part.content)
            assert b"".join(pieces) == reference
        finally:
            server.stop()
