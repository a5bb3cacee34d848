"""Request bodies as the handlers read them: the ways a body can fail to arrive whole. (Its
JSON is read as every message is, by `messages.load_json`.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .middleware import ApiError

__all__ = ["CUT_OFF", "UNREADABLE", "arriving", "unreadable"]

T = TypeVar("T")

# How a body that ends early shows: the client closed the connection ("Connection lost"), or
# the HTTP parser found fewer bytes than Content-Length or a broken chunked encoding (or, in a
# multipart body, a part header too long). Nobody may be left to read the answer, but nothing
# is stored and nothing is logged as a failure.
CUT_OFF = (ConnectionResetError, HttpProcessingError)
# What else reading a body raises: a Content-Encoding (gzip, deflate, ...) that does not decode
# (aiohttp's payload error, with the decoder's error as its cause).
UNREADABLE = (*CUT_OFF, web.RequestPayloadError)


def unreadable(request: web.Request, exc: BaseException, what: str) -> ApiError:
    """The 400 for `what` (the request body, the upload) that could not be read to its end.

    When the body itself failed (it does not decode, or it ended early), nothing more of it can
    be read: it is marked ended, so that aiohttp does not read on after the answer (and log the
    same failure again as an unhandled exception), and the connection closes after the answer.
    """
    failed = request.content.exception() is not None
    if failed:
        request.content.feed_eof()
    if isinstance(exc, ConnectionResetError):
        return ApiError(400, f"{what} was cut off before its end ({exc})",
                        code="malformed_body", close=True)
    cause = exc.__cause__ if isinstance(exc, web.RequestPayloadError) else exc
    detail = cause.message if isinstance(cause, HttpProcessingError) else str(exc)
    return ApiError(400, f"{what} is truncated or malformed ({detail or type(exc).__name__})",
                    code="malformed_body", close=failed)


async def arriving(read: Awaitable[T], seconds: float, what: str) -> T:
    """`read` (of the next bytes of a body), unless nothing arrives for `seconds`: then 408.

    A client may stall, and so may aiohttp: a chunked body whose chunk-size line is malformed
    after the first chunk is never failed nor ended, only answered (with a 400) after the
    handler returns, which without this it never would.
    """
    try:
        return await asyncio.wait_for(read, seconds)
    except asyncio.TimeoutError:
        raise ApiError(408, f"{what} stopped arriving: nothing came for {seconds:g} s",
                       close=True) from None
