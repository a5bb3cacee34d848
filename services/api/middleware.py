"""What wraps every request: errors as one-line JSON, and the request metrics.

Every error answer is `{"error": "one line", "code": "snake_case"}` with its status: a 4xx
names what is wrong with the request; a broker or database that is down is a 503 with
Retry-After; anything unexpected is a 500 whose details go to the log, never to the caller (no
traceback leaves the process). `code` is for programs: one of ERROR_CODES, stable across
releases, where the one-line reason is for people and may be reworded.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from .. import metrics
from ..errors import TransientError

__all__ = ["ERROR_CODES", "ApiError", "HttpServerLog", "count_response", "error_middleware",
           "error_response", "metrics_middleware"]

log = logging.getLogger("excamera.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_REASON = 300

# A status's code where no finer one is given.
STATUS_CODES = {
    400: "invalid_request", 401: "unauthorized", 404: "not_found",
    405: "method_not_allowed", 408: "request_timeout", 409: "conflict", 410: "gone",
    413: "too_large", 415: "unsupported_media_type", 416: "range_not_satisfiable",
    417: "expectation_failed", 500: "internal", 503: "unavailable",
}  # the statuses this server answers with a JSON error; any other would be "http_error"
# The finer ones, where a client may act differently on the same status.
DETAIL_CODES = {
    "invalid_job": "400: the job (JSON body or options part) is not JSON, or a field is "
                   "missing, unknown, of the wrong type or out of range",
    "input_refused": "400: the input URL is not one this service may read, or names nothing",
    "not_a_video": "400: the upload is not a video this service can read",
    "malformed_body": "400: the body is cut off, undecodable or not the multipart it says",
    "idempotency_conflict": "409: the Idempotency-Key was used with a different request",
    "job_not_done": "409: the job has no output (yet): its state is in the reason",
    "job_ended": "409: the job has already ended, so it cannot be cancelled",
    "output_elsewhere": "409: the job wrote its output outside this service's store",
}
ERROR_CODES = sorted({*STATUS_CODES.values(), *DETAIL_CODES, "http_error"})


class ApiError(Exception):
    """An answer with an error status and a one-line reason; `close`: end the connection
    after it (what is left of the request cannot be read)."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None, *,
                 code: str | None = None, close: bool = False) -> None:
        super().__init__(reason)
        assert code is None or code in DETAIL_CODES, code
        self.status = status
        self.reason = reason
        self.headers = headers or {}
        self.code = code
        self.close = close


def one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= MAX_REASON else line[: MAX_REASON - 3] + "..."


def error_response(status: int, reason: str, headers: Any = None, code: str | None = None
                   ) -> web.Response:
    code = code or STATUS_CODES.get(status, "http_error")
    return web.json_response({"error": one_line(reason), "code": code}, status=status,
                             headers=headers)


# aiohttp's own refusals (no route, wrong method, body too big, ...) in our words.
def _http_exception(request: web.Request, exc: web.HTTPException) -> web.Response:
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    if exc.status == 404:
        reason = f"no such resource: {request.path}"
    elif exc.status == 405:
        reason = f"{request.method} is not allowed here (allowed: {headers.get('Allow', '')})"
    elif exc.status == 413:
        reason = "the request body is too large"
    else:
        reason = exc.text or exc.reason
        if reason.startswith(f"{exc.status}: "):
            reason = reason[len(f"{exc.status}: "):]
    return error_response(exc.status, reason, headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.reason, exc.headers, exc.code)
        if exc.close:
            response.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status < 400:  # a redirect or a success raised as an exception: pass it on
            raise
        return _http_exception(request, exc)
    except TransientError as exc:
        log.warning("%s %s: %s", request.method, request.path, exc)
        return error_response(503, f"temporarily unavailable: {exc}", {"Retry-After": "5"})
    except Exception:  # noqa: BLE001 - a bug: logged in full, answered without details
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal error (logged on the server)")


class HttpServerLog(logging.LoggerAdapter):
    """The HTTP server's own log (aiohttp's `handler_args` logger). A request that is not
    well-formed HTTP is the client's error: one INFO line with the reason, not the ERROR and
    traceback aiohttp logs for it (any scanner would fill the log with them). Anything else is
    logged as aiohttp logs it."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})

    def exception(self, msg: object, *args: object, exc_info: Any = True,
                  **kwargs: Any) -> None:
        error = sys.exc_info()[1] if exc_info is True else exc_info
        if isinstance(error, HttpProcessingError) and 400 <= (error.code or 0) < 500:
            self.info("%s: %s %s", str(msg) % args, error.code, one_line(error.message))
        else:
            self.error(msg, *args, exc_info=exc_info, **kwargs)


def route_label(request: web.Request) -> str:
    """The route's pattern (`/v1/jobs/{id}`), never the raw path: random paths (fuzzers,
    scanners) must not make a metric series each."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


_STARTED = web.RequestKey("excamera_started", float)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[_STARTED] = time.perf_counter()
    return await handler(request)


async def count_response(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """An `on_response_prepare` hook: counted when the headers go out, so the status is the
    one sent (a file's 206 is decided only then) and the time is the time to the headers."""
    began = request.get(_STARTED)
    if began is None or not isinstance(request, web.Request):
        return
    route = route_label(request)
    # Nor random methods: aiohttp's Python parser takes any token as a method (the C parser
    # any of llhttp's few dozen).
    method = request.method if request.method in hdrs.METH_ALL else "other"
    metrics.HTTP_REQUESTS.labels(method, route, str(response.status)).inc()
    metrics.HTTP_SECONDS.labels(method, route).observe(time.perf_counter() - began)
