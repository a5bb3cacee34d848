"""Bearer tokens: who is calling. The operator names each token's holder

    EXCAMERA_API_TOKENS="alice:s3cret,ci:t0ken"     or
    EXCAMERA_API_TOKENS='{"alice": "s3cret"}'       (a Secrets Manager key/value secret) or
    EXCAMERA_API_TOKENS_FILE=/etc/excamera/tokens   (the same `name:token` entries, one a
                                                     line or comma-separated; # comments)

and a job belongs to the name whose token made it. A name may hold several tokens (to rotate
one without downtime). A presented token is compared with every configured one, in constant
time and without stopping at a match, so neither the timing nor the position of a match says
anything about the tokens.

A job's status also gives a signed, expiring link to its output, for clients that cannot send
a header (a browser's <video> element): an HMAC of the job and the expiry under a key derived
from the tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.pipeline.messages import INGEST_OWNER, OWNER_PATTERN

from ..errors import ConfigError

__all__ = ["TOKENS_ENV", "TOKENS_FILE_ENV", "Tokens"]

TOKENS_ENV = "EXCAMERA_API_TOKENS"
TOKENS_FILE_ENV = "EXCAMERA_API_TOKENS_FILE"
_BEARER = re.compile(r"bearer[ \t]+(\S+)[ \t]*", re.IGNORECASE)


def _digest(token: str) -> bytes:
    # Comparing digests, not the tokens themselves, keeps the comparison's time independent of
    # the tokens' lengths too.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class Tokens:
    """The configured (token digest, name) pairs."""

    entries: tuple[tuple[bytes, str], ...] = ()

    @classmethod
    def parse(cls, text: str, where: str = TOKENS_ENV) -> Tokens:
        """Tokens from `name:token` entries separated by commas or new lines, or from a JSON
        object of names and tokens (how Secrets Manager holds key/value secrets)."""
        entries: list[tuple[bytes, str]] = []
        if text.lstrip().startswith("{"):
            entries += [_entry(name, token, where) for name, token in _json_pairs(text, where)]
            text = ""
        for line in text.splitlines():
            if line.lstrip().startswith("#"):  # whole-line comments only: a token may hold '#'
                continue
            for item in (part.strip() for part in line.split(",")):
                if item:
                    name, colon, token = item.partition(":")
                    if not colon or not token.strip():
                        raise ConfigError(f"{where}: entry {name.strip() or item!r} is not "
                                          "name:token")
                    entries.append(_entry(name.strip(), token.strip(), where))
        digests = [digest for digest, _ in entries]
        if len(set(digests)) != len(digests):
            raise ConfigError(f"{where}: the same token is given twice")
        return cls(tuple(entries))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Tokens:
        environ = os.environ if environ is None else environ
        text = environ.get(TOKENS_ENV, "")
        path = environ.get(TOKENS_FILE_ENV, "")
        if path:
            try:
                text += "\n" + Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"{TOKENS_FILE_ENV}={path}: {exc.strerror or exc}") from None
        return cls.parse(text, TOKENS_FILE_ENV if path else TOKENS_ENV)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def names(self) -> list[str]:
        return sorted({name for _, name in self.entries})

    def _link_key(self) -> bytes:
        # Derived from every configured token, so each API instance with the same tokens signs
        # alike without a secret of its own; changing the tokens invalidates old links.
        return hashlib.sha256(b"excamera output links\0" + b"".join(
            sorted(digest for digest, _ in self.entries))).digest()

    def sign_link(self, job: str, expires: int) -> str:
        """The signature of a link to `job`'s output valid until `expires` (Unix time)."""
        message = f"{job}\0{expires}".encode()
        return hmac.new(self._link_key(), message, hashlib.sha256).hexdigest()

    def check_link(self, job: str, expires: int, signature: str, now: float) -> bool:
        if not self.entries or expires < now:
            return False
        return hmac.compare_digest(self.sign_link(job, expires), signature)

    def owner(self, authorization: str | None) -> str | None:
        """The name whose token the Authorization header carries, or None."""
        if not authorization:
            return None
        match = _BEARER.fullmatch(authorization)
        if match is None:
            return None
        given = _digest(match[1])
        found = None
        for digest, name in self.entries:  # every entry, match or not: constant time
            if hmac.compare_digest(given, digest):
                found = name
        return found


def _json_pairs(text: str, where: str) -> list[tuple[str, str]]:
    try:
        pairs = json.loads(text)
    except (ValueError, RecursionError):
        raise ConfigError(f"{where}: starts with '{{' but is not a JSON object") from None
    if not isinstance(pairs, dict) or not all(isinstance(t, str) for t in pairs.values()):
        raise ConfigError(f"{where}: a JSON value must be an object of names and token strings")
    return list(pairs.items())


def _entry(name: str, token: str, where: str) -> tuple[bytes, str]:
    if not token:
        raise ConfigError(f"{where}: the token of {name!r} is empty")
    if re.fullmatch(OWNER_PATTERN, name) is None:
        raise ConfigError(f"{where}: token name {name!r} must be 1-64 letters, digits, "
                          "'.', '_' or '-', starting with a letter or digit")
    if name == INGEST_OWNER:
        # Jobs posted to the ingest queue without an owner are recorded under this name; a
        # token of that name would read all of them.
        raise ConfigError(f"{where}: the token name {INGEST_OWNER!r} is reserved")
    if any(c.isspace() for c in token):
        raise ConfigError(f"{where}: the token of {name!r} holds white space")
    return _digest(token), name
