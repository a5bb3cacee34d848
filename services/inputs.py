"""Which input and output URLs a job may name, and fetching an input safely.

The operator names what is allowed, as URL prefixes (`--allow-input`, `--allow-output`):
`file:///srv/video/`, `https://media.example.com/`, `s3://bucket/in/`. Nothing else is. A URL
is checked after normalising it (scheme and host in lower case, default ports dropped, no
`.`/`..` segments, no credentials), so no spelling of a URL slips past its prefix:

- `file://` paths are resolved (symbolic links followed) and must still be under the prefix;
- `http(s)://` hosts are resolved, and every address must be public (not loopback, private,
  link-local, multicast or reserved) unless the operator allows private networks; the fetch
  then connects only to the addresses that were checked (so a second DNS answer cannot point
  it elsewhere) and follows no redirects;
- the store's own `uploads/` (what the API stored) are always readable.

Every refusal is an `InputRejected` with a one-line reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from aiohttp.abc import AbstractResolver

from shared.pipeline.store import Store

from .errors import InputRejected, TransientError

__all__ = ["UrlPolicy", "fetch_input", "input_name", "names_store", "not_a_file", "shown_url",
           "normalize_url", "write_output"]

UPLOADS_PREFIX = "uploads/"
FETCH_TIMEOUT = 600.0
_DEFAULT_PORTS = {"http": 80, "https": 443}
SCHEMES = ("file", "http", "https", "s3")
_PATH_SAFE = "!$&'()*+,;=:@~"  # RFC 3986's sub-delims, ':' and '@': left as they are


def normalize_url(url: str) -> str:
    """`url` in one canonical spelling, or InputRejected saying what is wrong with it."""
    if not isinstance(url, str) or not url or len(url) > 4096:
        raise InputRejected("a URL must be a non-empty string of at most 4096 characters")
    if any(ord(c) < 0x21 or c in "\\" for c in url):
        raise InputRejected("the URL holds spaces, control characters or backslashes")
    try:
        url.encode("utf-8")
    except UnicodeEncodeError:  # JSON's "\ud800": no path or host name can hold it
        raise InputRejected("the URL holds a lone surrogate (not valid Unicode text)") from None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InputRejected(f"not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise InputRejected(f"unsupported URL scheme {parts.scheme!r} (use one of "
                            f"{', '.join(s + '://' for s in SCHEMES)})")
    if parts.username is not None or parts.password is not None:
        raise InputRejected("URLs with credentials are not accepted")
    if parts.fragment:
        raise InputRejected("URLs with a fragment (#...) are not accepted")
    host = (parts.hostname or "").lower()
    if scheme == "file":
        if host not in ("", "localhost"):
            raise InputRejected("a file URL must name no host (file:///path)")
        host = ""
    elif not host:
        raise InputRejected("the URL names no host")
    # Each segment decoded once, checked, and encoded again in one spelling: the URL names
    # the same resource, and normalising it again changes nothing (an encoded '/', '#', '?'
    # or '%' stays encoded).
    segments = [unquote(segment) for segment in parts.path.split("/")]
    if any("\0" in segment for segment in segments):
        raise InputRejected("the URL's path holds a NUL character")
    if any(part in (".", "..") for segment in segments for part in segment.split("/")):
        raise InputRejected("the URL's path holds '.' or '..' segments")
    path = "/".join(quote(segment, safe=_PATH_SAFE) for segment in segments)
    if scheme in ("file", "http", "https") and not path.startswith("/"):
        path = "/" + path
    netloc = host
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        netloc = f"{host}:{port}"
    if ":" in host and not host.startswith("["):  # an IPv6 literal keeps its brackets
        netloc = f"[{host}]" + netloc[len(host):]
    return urlunsplit((scheme, netloc, path, parts.query, ""))


@dataclass(frozen=True)
class UrlPolicy:
    allow_input: tuple[str, ...] = ()
    allow_output: tuple[str, ...] = ()
    allow_private_networks: bool = False

    def check_input(self, url: str, store: Store | None = None) -> str:
        """The normalised URL if a job may read it; InputRejected otherwise. With the
        service's `store`: an upload as the API names it is readable, anything else in the
        store is not (another job's upload, intermediates or output, by any spelling)."""
        if store is not None and self.upload_key(url, store) is not None:
            return url
        normal = self._check(url, self.allow_input, "input")
        if store is not None and names_store(normal, store):
            raise InputRejected(f"input URL {shown_url(url)} points into the service's own store")
        if normal.startswith(("http://", "https://")):
            self.public_addresses(urlsplit(normal).hostname or "", urlsplit(normal).port)
        return normal

    def check_output(self, url: str) -> str:
        normal = self._check(url, self.allow_output, "output")
        if not normal.startswith(("file://", "s3://")):
            raise InputRejected("outputs are written to file:// or s3:// URLs")
        if normal.endswith("/"):
            raise InputRejected("the output URL names a directory, not a file")
        return normal

    def _check(self, url: str, allowed: tuple[str, ...], what: str) -> str:
        normal = normalize_url(url)
        prefixes = [_normal_prefix(prefix) for prefix in allowed]
        if not any(_under(normal, prefix) for prefix in prefixes):
            raise InputRejected(
                f"{what} URL {shown_url(url)} is not under a prefix the operator allows"
                + ("" if prefixes else f" (none are: the operator names them with "
                                       f"--allow-{what})")
            )
        if normal.startswith("file://"):
            real = Path(os.path.realpath(unquote(urlsplit(normal).path)))
            real_url = normalize_url(real.as_uri() + ("/" if normal.endswith("/") else ""))
            if not any(_under(real_url, prefix) for prefix in prefixes):
                raise InputRejected(f"{what} URL {shown_url(url)} leads outside the allowed "
                                    "prefixes (through a symbolic link)")
        return normal

    def upload_key(self, url: str, store: Store) -> str | None:
        key = store.key_for(url)
        return key if key is not None and key.startswith(UPLOADS_PREFIX) else None

    def public_addresses(self, host: str, port: int | None) -> list[str]:
        """The host's addresses, all of which must be public unless private networks are
        allowed; InputRejected otherwise (or when the name does not resolve)."""
        try:
            infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            if exc.errno == socket.EAI_AGAIN:  # the resolver's trouble, not the name's
                raise TransientError(f"host {host!r}: name lookup failed for now "
                                     f"({exc.strerror})") from None
            raise InputRejected(f"host {host!r} does not resolve ({exc.strerror})") from None
        addresses = sorted({info[4][0] for info in infos})
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if not self.allow_private_networks and (not ip.is_global or ip.is_multicast):
                raise InputRejected(
                    f"host {host!r} resolves to {address}, a loopback, private, link-local "
                    "or reserved address: inputs are fetched from public addresses only"
                )
        if not addresses:
            raise InputRejected(f"host {host!r} has no address")
        return addresses


WHOLE_SCHEMES = ("http://", "https://", "s3://")  # a prefix of the scheme alone: any host


def _normal_prefix(prefix: str) -> str:
    """An allowed prefix in the normal spelling of the URLs it is compared with."""
    if prefix.lower() in WHOLE_SCHEMES:  # every host (inputs' addresses are still checked)
        return prefix.lower()
    return normalize_url(prefix)


def _under(normal: str, prefix: str) -> bool:
    """Whether `normal` is under `prefix`. A file:// or s3:// prefix is a directory (or one
    object), whether or not it ends in '/': file:///srv/in allows /srv/in/a, not
    /srv/inside/a, and s3://media not s3://media-private."""
    if prefix.startswith(("file://", "s3://")) and not prefix.endswith(("/", "://")):
        return normal == prefix or normal.startswith(prefix + "/")
    return normal.startswith(prefix)


def not_a_file(path: Path) -> str | None:
    """Why `path` is no input file ("no such file", "a directory", ...); None if it is one.
    A name the file system refuses (too long) is no such file."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return "no such file"
    if stat.S_ISREG(mode):
        return None
    kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
    return f"{kind}, not a video file"


def names_store(normal: str, store: Store) -> bool:
    """Whether the normalised URL `normal` reads from inside `store`, however it is spelt: a
    query, a symbolic link, the bucket by another route."""
    from shared.pipeline.s3store import S3Store
    from shared.pipeline.store import LocalStore

    parts = urlsplit(normal)
    path = unquote(parts.path)
    if isinstance(store, LocalStore) and parts.scheme == "file":
        real = Path(os.path.realpath(path))
        return real == store.root or store.root in real.parents
    if isinstance(store, S3Store) and parts.scheme == "s3":
        return parts.netloc == store.bucket and path.lstrip("/").startswith(store.prefix)
    return store.key_for(urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))) is not None


def shown_url(url: str) -> str:
    return repr(url if len(url) <= 120 else url[:117] + "...")


def input_name(url: str, policy: UrlPolicy, store: Store) -> str:
    """What a job's notices and errors call its input: "the upload", or the URL without its
    query (a presigned URL's signature) and at most 120 characters; never the temporary file
    it was fetched to, nor the service's own store."""
    if policy.upload_key(url, store) is not None:
        return "the upload"
    parts = urlsplit(url)
    shown = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return shown if len(shown) <= 120 else shown[:117] + "..."


@contextlib.contextmanager
def fetch_input(
    url: str, policy: UrlPolicy, store: Store, max_bytes: int
) -> Iterator[Path]:
    """A local file holding the input `url` names (checked against `policy` first), for as
    long as the context lasts."""
    upload = policy.upload_key(url, store)
    if upload is not None:
        try:
            with store.local_file(upload) as path:
                yield path
        except KeyError:
            raise InputRejected("the uploaded input is no longer in the store") from None
        return
    normal = policy.check_input(url, store)  # again: a link may have changed since
    scheme = urlsplit(normal).scheme
    if scheme == "file":
        path = Path(os.path.realpath(unquote(urlsplit(normal).path)))
        if problem := not_a_file(path):
            raise InputRejected(f"input {shown_url(url)}: {problem}")
        yield path
        return
    if scheme == "s3":
        with _s3_object(normal).local_file(_s3_key(normal)) as path:
            yield path
        return
    with tempfile.TemporaryDirectory(prefix="excamera-fetch-") as directory:
        target = Path(directory) / "input"
        asyncio.run(_download(url, policy, target, max_bytes))
        yield target


def _s3_object(url: str) -> Store:
    from shared.pipeline.s3store import S3Store

    return S3Store(f"s3://{urlsplit(url).netloc}")


def _s3_key(url: str) -> str:
    key = unquote(urlsplit(url).path).lstrip("/")
    if not key or key.endswith("/"):
        raise InputRejected("an s3:// URL must name an object")
    return key


def write_output(url: str, policy: UrlPolicy, local: Path) -> None:
    """Copy a finished output to `url` (checked again: the policy may have changed since the
    job was accepted), atomically: a file renamed into place, or one S3 put."""
    normal = policy.check_output(url)
    parts = urlsplit(normal)
    if parts.scheme == "s3":
        _s3_object(normal).put_file(_s3_key(normal), local)
        return
    target = Path(unquote(parts.path))
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with open(local, "rb") as source, open(temp, "wb") as sink:
            while block := source.read(1 << 20):
                sink.write(block)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


async def _download(url: str, policy: UrlPolicy, target: Path, max_bytes: int) -> None:
    import aiohttp

    parts = urlsplit(url)
    resolver = _VettedResolver(policy)
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT, sock_connect=15)
    try:
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver),
                                  timeout=timeout) as session,
            session.get(url, allow_redirects=False) as response,
        ):
            if 300 <= response.status < 400:
                raise InputRejected(f"input {shown_url(url)} redirects (HTTP {response.status}); "
                                    "redirects are not followed: give the final URL")
            if response.status >= 500:
                raise TransientError(f"input {shown_url(url)}: HTTP {response.status}")
            if response.status != 200:
                raise InputRejected(f"input {shown_url(url)}: HTTP {response.status}")
            if response.content_length is not None and response.content_length > max_bytes:
                raise InputRejected(f"input {shown_url(url)} is {response.content_length} bytes, "
                                    f"more than the limit of {max_bytes}")
            size = 0
            with open(target, "wb") as file:
                async for block in response.content.iter_chunked(1 << 20):
                    size += len(block)
                    if size > max_bytes:
                        raise InputRejected(f"input {shown_url(url)} is larger than the limit "
                                            f"of {max_bytes} bytes")
                    file.write(block)
    except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
        raise TransientError(f"input {parts.hostname}: {exc or type(exc).__name__}") from exc
    except aiohttp.ClientError as exc:
        raise InputRejected(f"input {shown_url(url)}: {exc}") from exc


class _VettedResolver(AbstractResolver):
    """An aiohttp resolver that answers only with addresses the policy accepts."""

    def __init__(self, policy: UrlPolicy) -> None:
        self.policy = policy

    async def resolve(  # type: ignore[override]
        self, host: str, port: int = 0, family: int = socket.AF_INET
    ) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        addresses = await loop.run_in_executor(None, self.policy.public_addresses, host, port)
        return [
            {"hostname": host, "host": address, "port": port,
             "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
             "proto": 0, "flags": socket.AI_NUMERICHOST}
            for address in addresses
        ]

    async def close(self) -> None:
        return None
