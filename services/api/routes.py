"""The handlers: parse and check the HTTP request, await the blocking work on an executor
(`ApiContext.control`/`files`), answer JSON. What each answers is in `openapi.py`, which is
served at /v1/openapi.json and fuzzed against these handlers by the tests.

Every job route first checks the caller's token, then the job id's form (anything else is a
404, so no id ever reaches a key or a path), then that the job is the caller's (another
token's job is a 404 too: its existence is not disclosed).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from aiohttp import hdrs, web

from shared.pipeline.graph import STAGES
from shared.pipeline.messages import (
    CLIENT_ID_PATTERN,
    JobRequest,
    MessageError,
    is_job_id,
    job_id_for,
    load_json,
    parse_job_options,
    parse_job_request,
)

from .. import adapter
from ..errors import InputRejected, TransientError
from ..inputs import normalize_url, not_a_file, shown_url
from ..records import JOB_STATES, JobRecord
from ..runtime import Runtime
from . import jobs
from .bodies import UNREADABLE, arriving, unreadable
from .context import CONTEXT, ApiContext
from .middleware import ApiError, error_response
from .uploads import receive, refuse_long_upload, sniff_video

__all__ = ["routes"]

routes = web.RouteTableDef()

MAX_OFFSET = 10_000_000
_DIGITS = re.compile(r"[0-9]{1,12}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
# "bytes=-0" asks for the last zero bytes: no range of it is satisfiable (RFC 9110 14.1.2),
# though aiohttp's parser reads it as "from byte 0".
_ZERO_SUFFIX = re.compile(r"bytes=-0+")
BODY_CODINGS = ("identity", "gzip", "deflate")  # what aiohttp decodes without extras


# --------------------------------------------------------------------------- helpers


def context_of(request: web.Request) -> ApiContext:
    """The app's context (runtime, tokens, limits, executors)."""
    return request.app[CONTEXT]


def authenticate(request: web.Request) -> str:
    """The caller's token name; 401 without a valid bearer token."""
    api = context_of(request)
    challenge = {"WWW-Authenticate": 'Bearer realm="excamera"'}
    header = request.headers.get(hdrs.AUTHORIZATION)
    if not api.tokens:
        raise ApiError(401, "no API tokens are configured on this server "
                            "(the operator sets EXCAMERA_API_TOKENS)", challenge)
    if not header:
        raise ApiError(401, "authentication required: send Authorization: Bearer TOKEN",
                       challenge)
    owner = api.tokens.owner(header)
    if owner is None:
        raise ApiError(401, "the bearer token is not valid",
                       {"WWW-Authenticate": 'Bearer realm="excamera", error="invalid_token"'})
    return owner


async def own_job(request: web.Request, owner: str) -> JobRecord:
    """The job the path names, if it is the caller's; 404 otherwise (also for a malformed id,
    which can name nothing)."""
    job = request.match_info["id"]
    missing = ApiError(404, f"no such job: {job if is_job_id(job) else '(not a job id)'}")
    if not is_job_id(job):
        raise missing
    api = context_of(request)
    record = await api.control(api.runtime.records.get_job, job)
    if record is None or record.owner != owner:
        raise missing
    return record


def query(request: web.Request, allowed: tuple[str, ...]) -> dict[str, str]:
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        raise ApiError(400, f"unknown query parameter{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(map(repr, unknown))}")
    for name in set(request.query):
        if len(request.query.getall(name)) > 1:
            raise ApiError(400, f"query parameter {name!r} is given more than once")
    return dict(request.query)


def int_param(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    if _DIGITS.fullmatch(text) is None or not low <= int(text) <= high:
        raise ApiError(400, f"{name} must be an integer from {low} to {high}")
    return int(text)


def page(request: web.Request, extra: tuple[str, ...] = ()) -> tuple[int, int, dict[str, str]]:
    limits = context_of(request).limits
    params = query(request, ("limit", "offset", *extra))
    limit = int_param(params, "limit", limits.default_page, 1, limits.max_page)
    offset = int_param(params, "offset", 0, 0, MAX_OFFSET)
    return limit, offset, params


def client_id(request: web.Request) -> str:
    """The Idempotency-Key (the same key makes the same job), else a fresh random one."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return uuid.uuid4().hex
    if re.fullmatch(CLIENT_ID_PATTERN, key) is None:
        raise ApiError(400, "Idempotency-Key must be 1-128 characters of letters, digits, "
                            "'.', '_', ':' or '-', starting with a letter or digit")
    return key


def refuse_long_body(length: int | None, limit: int) -> None:
    if length is not None and length > limit:
        raise ApiError(413, f"the request body is {length} bytes; at most {limit} are accepted")


async def read_body(request: web.Request, limit: int, idle: float) -> bytes:
    refuse_long_body(request.content_length, limit)
    body = bytearray()
    try:
        while chunk := await arriving(request.content.readany(), idle, "the request body"):
            body += chunk
            if len(body) > limit:
                raise ApiError(413, f"the request body is larger than {limit} bytes")
    except UNREADABLE as exc:
        raise unreadable(request, exc, "the request body") from None
    return bytes(body)


def _submit(api: ApiContext, owner: str, key: str, job_request: JobRequest) -> jobs.Submitted:
    return jobs.submit(api.runtime, owner, key, job_request, post=_queues_ready(api))


def _repeat(api: ApiContext, record: JobRecord, job_request: JobRequest) -> jobs.Submitted:
    return jobs.repeat(api.runtime, record, job_request, post=_queues_ready(api))


def _queues_ready(api: ApiContext) -> bool:
    """Whether the broker's queues are declared (a publish before would be dropped); False
    when it is down: the job is recorded all the same, and the janitor posts it later."""
    try:
        api.declare_queues()
    except TransientError:
        api.forget_queues()
        return False
    return True


def accepted(submitted: jobs.Submitted) -> web.Response:
    return web.json_response({"id": submitted.id, "state": submitted.state}, status=202,
                             headers={"Location": f"/v1/jobs/{submitted.id}"})


# --------------------------------------------------------------------------- submitting


def _submission(request: web.Request) -> tuple[str, str]:
    """What a job submission is checked for before its body is read: the caller's token, the
    Idempotency-Key, the query, the content type and the declared length; (owner, key)."""
    owner = authenticate(request)
    key = client_id(request)
    query(request, ())
    limits = context_of(request).limits
    if request.content_type == "application/json":
        refuse_long_body(request.content_length, limits.max_json_bytes)
    elif request.content_type == "multipart/form-data":
        refuse_long_upload(request.content_length, limits.max_upload_bytes)
    else:
        raise ApiError(415, "send the job as application/json or the video as "
                            "multipart/form-data (parts 'video' and optionally 'options')")
    coding = request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
    if coding not in BODY_CODINGS:  # aiohttp would read the coded bytes as they are
        raise ApiError(415, f"Content-Encoding {coding!r} is not supported (send the body "
                            f"as it is, or in one of: {', '.join(sorted(BODY_CODINGS))})")
    return owner, key


async def _expect_submission(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue` (curl sends it with a large upload): a submission that would be
    refused (no valid token, too large, ...) is refused before its body is sent, not after."""
    try:
        _submission(request)
    except ApiError as exc:
        refused = error_response(exc.status, exc.reason, exc.headers, exc.code)
        refused.force_close()  # whatever body follows is not read
        return refused
    return await expect_continue(request)


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """Every route's `Expect` handling: 100-continue is answered, anything else is a JSON
    417 (aiohttp's own is plain text)."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if expect.lower() != "100-continue":
        refused = error_response(417, f"Expect: {expect!r} is not supported (only "
                                      "100-continue)")
        refused.force_close()
        return refused
    if request.version >= (1, 1):  # an HTTP/1.0 client sends its body unasked
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the answer proper is still to come
    return None


@routes.post("/v1/jobs", expect_handler=_expect_submission)
async def create_job(request: web.Request) -> web.Response:
    owner, key = _submission(request)
    if request.content_type == "application/json":
        return await _create_from_json(request, owner, key)
    return await _create_from_upload(request, owner, key)


async def _create_from_json(request: web.Request, owner: str, key: str) -> web.Response:
    api = context_of(request)
    body = await read_body(request, api.limits.max_json_bytes, api.limits.body_idle_seconds)
    try:
        job_request = parse_job_request(load_json(body, "job request"),
                                        api.runtime.config.request_defaults())
    except MessageError as exc:
        raise ApiError(400, str(exc), code="invalid_job") from None
    existing = await api.control(api.runtime.records.get_job, job_id_for(owner, key))
    if existing is not None:
        # A repeat is answered from the job's record, as an upload's is: the input was checked
        # when the job was accepted, and a retry must find the job even if the file has gone
        # or the host no longer resolves since.
        try:
            url = normalize_url(job_request.input)
        except InputRejected as exc:
            raise ApiError(400, str(exc), code="input_refused") from None
        return accepted(await api.control(_repeat, api, existing,
                                          replace(job_request, input=url)))
    url = await api.files(checked_input, api.runtime, job_request.input)
    submitted = await api.control(_submit, api, owner, key, replace(job_request, input=url))
    return accepted(submitted)


def checked_input(runtime: Runtime, url: str) -> str:
    """The input URL in its normal spelling, if the operator's policy lets jobs read it
    (blocking: it resolves host names); ApiError(400) otherwise."""
    if runtime.policy.upload_key(url, runtime.store) is not None:
        # The store's uploads are readable by every job: an upload is named only by the API.
        raise ApiError(400, "the input URL points into the service's own store; upload the "
                            "file instead (multipart part 'video')", code="input_refused")
    try:
        normal = runtime.policy.check_input(url, runtime.store)
    except InputRejected as exc:
        raise ApiError(400, str(exc), code="input_refused") from None
    parts = urlsplit(normal)
    if parts.scheme == "file" and (problem := not_a_file(Path(unquote(parts.path)))):
        raise ApiError(400, f"input {shown_url(url)}: {problem}", code="input_refused")
    return normal


async def _create_from_upload(request: web.Request, owner: str, key: str) -> web.Response:
    api = context_of(request)
    directory = Path(await api.files(tempfile.mkdtemp, "", "excamera-upload-",
                                     api.limits.upload_dir))
    try:
        upload = await receive(request, directory, api.limits.max_upload_bytes,
                               api.limits.body_idle_seconds, api.files)
        job = job_id_for(owner, key)
        stored = jobs.upload_key(job, upload.sha256)
        try:
            job_request = parse_job_options(upload.options,
                                            api.runtime.store.url_for(stored),
                                            api.runtime.config.request_defaults())
        except MessageError as exc:
            raise ApiError(400, str(exc), code="invalid_job") from None
        existing = await api.control(api.runtime.records.get_job, job)
        if existing is not None:  # a repeat: stored again only if the first one's was undone
            jobs.check_same_request(existing, job_request.to_json())
            if existing.state == "queued" and not await api.files(api.runtime.store.exists,
                                                                  stored):
                await api.files(sniff_video, upload.path)
                await api.files(api.runtime.store.put_file, stored, upload.path)
            return accepted(await api.control(_repeat, api, existing, job_request))
        await api.files(sniff_video, upload.path)
        await api.files(api.runtime.store.put_file, stored, upload.path)
        submitted = await api.control(_submit, api, owner, key, job_request)
        return accepted(submitted)
    finally:
        await api.files(shutil.rmtree, directory, True)


# --------------------------------------------------------------------------- reading


@routes.get("/v1/jobs", allow_head=False, expect_handler=expect_continue)
async def list_jobs(request: web.Request) -> web.Response:
    owner = authenticate(request)
    limit, offset, params = page(request, ("state",))
    state = params.get("state")
    if state is not None and state not in JOB_STATES:
        raise ApiError(400, f"state must be one of {', '.join(JOB_STATES)}")
    api = context_of(request)
    # One more than asked for says whether there is a next page.
    found = await api.control(api.runtime.records.list_jobs, owner, limit + 1, offset, state)
    return web.json_response({
        "jobs": [jobs.job_summary(api.runtime, record) for record in found[:limit]],
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if len(found) > limit else None,
    })


@routes.get("/v1/jobs/{id}", allow_head=False, expect_handler=expect_continue)
async def get_job(request: web.Request) -> web.Response:
    owner = authenticate(request)
    query(request, ())
    record = await own_job(request, owner)
    api = context_of(request)
    document = await api.control(jobs.job_document, api.runtime, record)
    document["output_link"] = output_link(api, record)
    return web.json_response(document)


def output_link(api: ApiContext, record: JobRecord) -> str | None:
    """A link to the output that needs no token until it expires, for what cannot send one
    (a browser's <video src>); None until the job is done in the store."""
    if record.output_link != f"/v1/jobs/{record.id}/output":
        return None
    expires = int(time.time()) + api.limits.link_seconds
    signature = api.tokens.sign_link(record.id, expires)
    return f"/v1/jobs/{record.id}/output?expires={expires}&signature={signature}"


@routes.get("/v1/jobs/{id}/tasks", allow_head=False, expect_handler=expect_continue)
async def get_tasks(request: web.Request) -> web.Response:
    owner = authenticate(request)
    limit, offset, params = page(request, ("stage",))
    stage = params.get("stage")
    if stage is not None and stage not in STAGES:
        raise ApiError(400, f"stage must be one of {', '.join(STAGES)}")
    record = await own_job(request, owner)
    api = context_of(request)
    found = await api.control(api.runtime.records.tasks, record.id, stage, offset, limit + 1)
    return web.json_response({
        "id": record.id,
        "tasks": found[:limit],
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if len(found) > limit else None,
    })


@routes.get("/v1/jobs/{id}/output", expect_handler=expect_continue)
async def get_output(request: web.Request) -> web.StreamResponse:
    if "signature" in request.query or "expires" in request.query:
        record = await linked_job(request, query(request, ("expires", "signature")))
    else:  # the token first: a caller without one learns nothing of the query
        owner = authenticate(request)
        query(request, ("expires", "signature"))
        record = await own_job(request, owner)
    key = stored_output(record)
    api = context_of(request)
    presigned = await api.files(_presigned_url, api.runtime, key, api.limits.link_seconds)
    if presigned is not None:  # S3: it serves the ranges itself, and the bytes skip the API
        raise web.HTTPTemporaryRedirect(presigned)
    form = record.request.get("format", "webm")
    headers: dict[str, str] = {
        hdrs.CONTENT_TYPE: jobs.OUTPUT_TYPES.get(form, "application/octet-stream"),
        hdrs.CONTENT_DISPOSITION: f'inline; filename="{record.id}.{form}"',
        hdrs.CACHE_CONTROL: "private, max-age=3600",
    }
    path = await api.files(api.runtime.store.local_path, key)
    if path is None:
        return await _stream_output(request, api, key, headers)
    stat = await api.files(path.stat)
    if not _range_applies(request, stat):
        return _WholeFile(path, request, headers=headers)
    if _unsatisfiable(request, stat.st_mtime, stat.st_size):
        return error_response(416, f"the range is not satisfiable: the output is "
                                   f"{stat.st_size} bytes",
                              {hdrs.CONTENT_RANGE: f"bytes */{stat.st_size}"})
    # FileResponse serves Range and If-Range requests (206), so a browser can seek the WebM.
    return web.FileResponse(path, headers=headers)


class _WholeFile(web.FileResponse):
    """The whole file (200) whatever the request's Range: FileResponse reads the Range from
    the request it is prepared with, so it is prepared with a copy that has none."""

    def __init__(self, path: Path, request: web.Request, *, headers: dict[str, str]) -> None:
        super().__init__(path, headers=headers)
        self._without_range = request.clone(headers={
            k: v for k, v in request.headers.items() if k.lower() not in ("range", "if-range")})
        self._without_range.update(request)  # the middlewares' notes (its start, for metrics)

    async def prepare(self, request: web.BaseRequest) -> Any:
        if self.prepared:  # aiohttp prepares a returned response again: a no-op then
            return await web.StreamResponse.prepare(self, request)
        return await super().prepare(self._without_range)


def _range_applies(request: web.Request, stat: os.stat_result) -> bool:
    """Whether a Range header is one to serve (RFC 9110 §13.1.5, §14.2): not one of another
    unit, nor several ranges (served whole instead), nor one whose If-Range names another
    version of the file: an entity tag other than ours (aiohttp's FileResponse compares only
    dates, so a client resuming with our ETag got bytes of whatever the file had become)."""
    text = request.headers.get(hdrs.RANGE)
    if text is None:
        return True
    unit, _, ranges = text.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in ranges:
        return False
    condition = request.headers.get(hdrs.IF_RANGE)
    if condition is None:
        return True
    condition = condition.strip()
    if condition.startswith(('"', "W/")):  # an entity tag: a strong match only
        return condition == f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
    when = request.if_range
    return when is not None and stat.st_mtime <= when.timestamp()


async def linked_job(request: web.Request, params: dict[str, str]) -> JobRecord:
    """The job a signed output link names, if the link is valid and current; 401 if not."""
    api = context_of(request)
    job = request.match_info["id"]
    expires, signature = params.get("expires", ""), params.get("signature", "")
    if not (is_job_id(job) and _DIGITS.fullmatch(expires) and _HEX64.fullmatch(signature)
            and api.tokens.check_link(job, int(expires), signature, time.time())):
        raise ApiError(401, "the output link is not valid or has expired (the job's status "
                            "gives a fresh one)")
    record = await api.control(api.runtime.records.get_job, job)
    if record is None:
        raise ApiError(404, f"no such job: {job}")
    return record


def _presigned_url(runtime: Runtime, key: str, seconds: int) -> str | None:
    """A URL that reads the object without credentials, where the store makes them (S3),
    else None."""
    return runtime.store.presigned_url(key, seconds)


def stored_output(record: JobRecord) -> str:
    """The store key of a done job's output; 409 saying why there is none to read."""
    if record.state != "done":
        why = f" ({record.error})" if record.error else ""
        yet = " yet" if record.state in ("queued", "running") else ""
        raise ApiError(409, f"job {record.id} is {record.state}{why}: it has no output{yet}",
                       code="job_not_done")
    if record.output is None or "://" in record.output:
        raise ApiError(409, f"job {record.id} wrote its output to {record.output}, outside "
                            "this service's store", code="output_elsewhere")
    return record.output


def _unsatisfiable(request: web.Request, mtime: float, size: int) -> bool:
    """Whether FileResponse would answer 416 (checked first, to answer it in JSON)."""
    if hdrs.RANGE not in request.headers:
        return False
    if_range = request.if_range
    if if_range is not None and mtime > if_range.timestamp():
        return False  # a stale If-Range: the whole file is sent, the Range ignored
    try:
        start = request.http_range.start
    except ValueError:
        return True
    if _ZERO_SUFFIX.fullmatch(request.headers[hdrs.RANGE].strip()):
        return True
    if start is None or start < 0:
        return False
    return bool(start >= size)


async def _stream_output(request: web.Request, api: ApiContext, key: str,
                         headers: dict[str, str]) -> web.StreamResponse:
    """A store without local files (S3 later): the whole object, streamed (no ranges)."""
    store = api.runtime.store
    try:
        size = await api.files(store.size, key)
    except KeyError:
        raise ApiError(410, "the output is no longer in the store") from None
    response = web.StreamResponse(headers={**headers, hdrs.ACCEPT_RANGES: "none"})
    response.content_length = size
    await response.prepare(request)
    with store.open_read(key) as file:
        while block := await api.files(file.read, 1 << 20):
            await response.write(block)
    await response.write_eof()
    return response


# --------------------------------------------------------------------------- cancelling


@routes.delete("/v1/jobs/{id}", expect_handler=expect_continue)
async def cancel_job(request: web.Request) -> web.Response:
    owner = authenticate(request)
    query(request, ())
    record = await own_job(request, owner)
    api = context_of(request)
    if record.terminal:
        raise ApiError(409, f"job {record.id} has ended: it is {record.state}",
                       code="job_ended")
    # Queued tasks will be skipped, running ones delete what they write as they finish, and
    # what is stored now goes at once.
    state = await api.files(adapter.cancel_job, api.runtime, record.id)
    if state != "cancelled":  # it ended while we looked
        raise ApiError(409, f"job {record.id} has ended: it is {state}", code="job_ended")
    return web.json_response({"id": record.id, "state": "cancelled"})
