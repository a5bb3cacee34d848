"""A client of the HTTP API, for `excamera submit`: submit a job (a local file is uploaded, a
URL is passed on), follow it, and fetch its output.

Every call that reaches no server, or finds it unavailable (502, 503, 504), is tried again a
few times, after Retry-After where the API gives one. That is safe for submissions too: each
carries an Idempotency-Key, so a second attempt finds the job the first one made. A download
that breaks off continues where it stopped (a Range request, If-Range on the output's ETag,
so a changed output starts over), into OUT.partial, renamed to OUT once whole.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

__all__ = ["ApiCallError", "ApiClient", "open_client"]

RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)  # then give up: 7.5 s of waiting in all
MAX_RETRY_AFTER = 30.0
UNAVAILABLE = frozenset({502, 503, 504})
CHUNK = 1 << 20

T = TypeVar("T")


class ApiCallError(Exception):
    """The API refused a call (`status`, its error `code`), or could not be reached
    (`status` None)."""

    def __init__(self, reason: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code

    def __str__(self) -> str:
        if self.status is None:
            return super().__str__()
        return f"{self.status} {self.code or 'error'}: {super().__str__()}"


class _Unavailable(Exception):
    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.wait = wait


class _CountingReader(io.BufferedReader):
    """A file whose reads report how much of it has been read (aiohttp streams an upload
    from it, by its size)."""

    def __init__(self, path: Path, on_read: Callable[[int], None]) -> None:
        super().__init__(io.FileIO(path, "rb"), CHUNK)
        self._on_read = on_read

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self._on_read(self.tell())
        return data


@dataclass
class ApiClient:
    url: str
    token: str
    session: aiohttp.ClientSession
    retry_delays: tuple[float, ...] = RETRY_DELAYS

    async def submit(self, source: str, options: dict[str, Any], key: str,
                     on_upload: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Start a job: `source` a URL the service reads, or a local file to upload."""
        headers = {"Idempotency-Key": key}
        if "://" in source:
            body = {"input": source, **options}
            return await self._call("POST", "/v1/jobs", json=body, headers=headers)
        path = Path(source)

        async def upload() -> dict[str, Any]:
            with _CountingReader(path, on_upload or (lambda _: None)) as video:
                data = aiohttp.FormData()
                data.add_field("options", json.dumps(options), content_type="application/json")
                data.add_field("video", video, filename=path.name,
                               content_type="application/octet-stream")
                # Expect: 100-continue: a refused upload (a bad token, too large) is refused
                # on its headers, before it is sent.
                return await self._request("POST", "/v1/jobs", data=data, headers=headers,
                                           expect100=True)

        return await self._retried(upload)

    async def status(self, job: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/jobs/{job}")

    async def download(self, job: str, target: Path,
                       on_bytes: Callable[[int, int | None], None] | None = None) -> int:
        """The job's output into `target` (atomically); its size."""
        partial = target.with_name(target.name + ".partial")
        partial.unlink(missing_ok=True)
        etag: str | None = None

        async def attempt() -> int:
            nonlocal etag
            have = partial.stat().st_size if partial.exists() else 0
            headers = self._auth()
            if have and etag:
                headers.update({"Range": f"bytes={have}-", "If-Range": etag})
            async with self.session.get(self._at(f"/v1/jobs/{job}/output"),
                                        headers=headers) as response:
                await self._check(response)
                if response.status != 206:  # the whole output (again)
                    have = 0
                etag = response.headers.get("ETag")
                length = response.content_length
                total = None if length is None else have + length
                with partial.open("ab" if have else "wb") as file:
                    async for piece in response.content.iter_chunked(CHUNK):
                        file.write(piece)
                        if on_bytes:
                            on_bytes(file.tell(), total)
                    written = file.tell()
            if total is not None and written != total:
                raise _Unavailable(f"the output ended after {written} of {total} bytes")
            os.replace(partial, target)
            return written

        try:
            return await self._retried(attempt)
        finally:
            partial.unlink(missing_ok=True)

    # ------------------------------------------------------------------ one call, retried

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return await self._retried(lambda: self._request(method, path, **kwargs))

    async def _request(self, method: str, path: str, headers: dict[str, str] | None = None,
                       **kwargs: Any) -> dict[str, Any]:
        async with self.session.request(method, self._at(path),
                                        headers={**self._auth(), **(headers or {})},
                                        **kwargs) as response:
            await self._check(response)
            try:
                return await response.json(content_type=None)
            except ValueError:
                raise ApiCallError(f"{method} {path}: the answer is not JSON (is {self.url} "
                                   "the excamera API?)") from None

    async def _retried(self, call: Callable[[], Awaitable[T]]) -> T:
        for delay in (*self.retry_delays, None):
            try:
                return await call()
            except aiohttp.ClientSSLError as exc:  # a certificate does not get better
                raise ApiCallError(f"the API at {self.url}: {_describe(exc)}") from None
            except (_Unavailable, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError,
                    asyncio.TimeoutError) as exc:
                if delay is None:
                    raise ApiCallError(f"the API at {self.url} is unavailable: "
                                       f"{_describe(exc)}") from None
                wait = getattr(exc, "wait", None)
                await asyncio.sleep(min(wait, MAX_RETRY_AFTER) if wait else delay)
        raise AssertionError("unreachable")

    async def _check(self, response: aiohttp.ClientResponse) -> None:
        if response.status < 400:
            return
        try:
            error = await response.json(content_type=None)
            reason, code = str(error["error"]), error.get("code")
        except (ValueError, KeyError, TypeError, aiohttp.ClientError):
            # Not the API's JSON (a proxy's or another server's page): its first words.
            text = " ".join((await response.text(errors="replace"))[:2000].split())
            reason, code = text[:300], None
        if response.status in UNAVAILABLE:
            retry_after = response.headers.get("Retry-After", "")
            raise _Unavailable(f"{response.status}: {reason}",
                               float(retry_after) if retry_after.isdigit() else None)
        raise ApiCallError(reason or response.reason or "", response.status, code)

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def _at(self, path: str) -> str:
        return self.url.rstrip("/") + path


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


@asynccontextmanager
async def open_client(url: str, token: str, timeout: float = 60.0) -> AsyncIterator[ApiClient]:
    """A client with its own connection pool; `timeout`: per read or connect, not per call
    (an upload or download may take long)."""
    timeouts = aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout)
    async with aiohttp.ClientSession(timeout=timeouts, raise_for_status=False) as session:
        yield ApiClient(url, token, session)
