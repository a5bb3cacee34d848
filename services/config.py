"""What every service is started with: where the broker, the store and the job records are,
what inputs and outputs the operator allows, and the reliability knobs.

Each setting comes from a command-line flag of `excamera service`/`excamera up`, else from an
environment variable (`EXCAMERA_<NAME>`, e.g. EXCAMERA_BROKER), else a default that works on one
machine with the local RabbitMQ and PostgreSQL.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["DEADLINES", "ServiceConfig"]

# The API closes a connection that completes no request's headers for this long (its
# `--idle-timeout`): idle keep-alives, and clients trickling headers to hold connections.
API_IDLE_SECONDS = 75.0

# How long a task of each stage may run before the job's status reports it as overdue (and a
# worker stops it); generous, since a 4K chunk's encode takes minutes. RabbitMQ's consumer
# timeout must stay above the longest (scripts set it to 3 hours; its default is 30 minutes).
DEADLINES: dict[str, float] = {
    "split": 3600.0,
    "encode": 3600.0,
    "state": 600.0,
    "first": 1800.0,
    "rebase": 600.0,
    "measure": 1200.0,
    "join": 1800.0,
}


def _default_store() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return (Path(base) / "excamera" / "store").as_uri()


def _split_list(text: str) -> tuple[str, ...]:
    return tuple(item for item in text.replace(",", " ").split() if item)


@dataclass(frozen=True)
class ServiceConfig:
    broker: str = "amqp://guest:guest@127.0.0.1:5672//"
    store: str = field(default_factory=_default_store)
    db: str = "postgresql://postgres@127.0.0.1:5432/excamera"
    queue_prefix: str = "excamera"
    # Inputs and outputs jobs may name (URL prefixes); the store's own uploads are always
    # readable. Nothing else is.
    allow_input: tuple[str, ...] = ()
    allow_output: tuple[str, ...] = ()
    # Let input URLs reach loopback and private addresses (a test rig or a trusted LAN only).
    allow_private_networks: bool = False
    max_input_bytes: int = 8 << 30
    # Intermediates of an ended job are deleted this long after it ends; outputs are kept.
    retention_seconds: float = 3600.0
    # Deliveries of one task (a crash or kill counts) before it is set aside with its reason.
    max_attempts: int = 5
    # Retries of a transient failure (storage, broker, database) within one delivery.
    retries: int = 6
    # Multiplies every stage's deadline (DEADLINES): raise it for very large pictures.
    deadline_scale: float = 1.0
    rebase_shards: int = 8
    held_states: int = 16
    # SQS: how long a received task stays hidden (default: twice the longest deadline; with
    # Lambda, AWS advises at least six times the function's timeout).
    sqs_visibility_timeout: int | None = None
    # n and x for requests that do not say.
    default_frames_per_chunk: int = 6
    default_chunks_per_group: int = 16
    # AWS: the encoder's Lambda function, invoked directly (in bursts) for each encode task,
    # on top of the queue; and how many of its environments to start when a job arrives.
    encoder_function: str | None = None
    warm_environments: int = 0
    # AWS: the functions' memory, which their GB-seconds are priced at (job cost, budgets).
    encoder_memory_mb: int = 1769
    decoder_memory_mb: int = 1769
    metrics_port: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.rebase_shards <= 256:
            raise ConfigError("rebase shards must be 1-256")
        if self.max_attempts < 1 or self.retries < 0:
            raise ConfigError("max attempts must be at least 1 and retries at least 0")
        if not 1 <= self.default_frames_per_chunk <= 240 or not (
                1 <= self.default_chunks_per_group <= 1024):
            raise ConfigError("default n must be 1-240 and default x 1-1024")
        if not 0 < self.deadline_scale < math.inf:
            raise ConfigError("the deadline scale must be a positive number")
        if not 0 <= self.retention_seconds < math.inf:
            raise ConfigError("retention must be a number of seconds, not negative")
        if self.held_states < 0:
            raise ConfigError("held states (EXCAMERA_HELD_STATES) must not be negative")
        if self.max_input_bytes < 1:
            raise ConfigError("the input size limit (EXCAMERA_MAX_INPUT_BYTES) must be positive")
        if self.warm_environments < 0:
            raise ConfigError("warm environments (EXCAMERA_WARM_ENVIRONMENTS) must not be "
                              "negative")
        if self.sqs_visibility_timeout is not None and not (
                0 <= self.sqs_visibility_timeout <= 43200):
            raise ConfigError("the SQS visibility timeout (EXCAMERA_SQS_VISIBILITY_TIMEOUT) "
                              "must be 0-43200 seconds (0: the default)")
        for name in ("encoder_memory_mb", "decoder_memory_mb"):
            if not 128 <= getattr(self, name) <= 10240:
                raise ConfigError(f"EXCAMERA_{name.upper()} must be 128-10240 (Lambda's range)")
        if self.metrics_port is not None and not 1 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics port {self.metrics_port} is not a port (1-65535)")
        for prefix in (*self.allow_input, *self.allow_output):
            if "://" not in prefix:
                raise ConfigError(f"allowed prefix {prefix!r} is not a URL (e.g. file:///srv/in/)")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> ServiceConfig:
        """Defaults, then EXCAMERA_* variables, then `overrides` (None values ignored)."""
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for item in fields(cls):
            text = environ.get(f"EXCAMERA_{item.name.upper()}")
            if text is not None and text != "":
                values[item.name] = _parse(item.name, item.type, text)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The EXCAMERA_* variables that give this configuration to a child process."""
        env = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value is None:
                continue
            if isinstance(value, tuple):
                value = " ".join(value)
            elif isinstance(value, bool):
                value = "1" if value else "0"
            env[f"EXCAMERA_{item.name.upper()}"] = str(value)
        return env

    def with_changes(self, **changes: Any) -> ServiceConfig:
        return replace(self, **changes)

    def request_defaults(self) -> dict[str, int]:
        """What a job request that leaves n or x out gets."""
        return {"frames_per_chunk": self.default_frames_per_chunk,
                "chunks_per_group": self.default_chunks_per_group}

    def deadline(self, stage: str) -> float:
        """Seconds a task of `stage` may run before it is reported overdue."""
        return DEADLINES.get(stage, 3600.0) * self.deadline_scale


# EXCAMERA_* variables read elsewhere than ServiceConfig (the API's tokens, the client's, the
# codec's and the build's switches); EXCAMERA_TEST_* are the tests' hooks.
OTHER_SETTINGS = frozenset({
    "EXCAMERA_API_TOKENS", "EXCAMERA_API_TOKENS_FILE", "EXCAMERA_API", "EXCAMERA_TOKEN",
    "EXCAMERA_SERVICE_NAME", "EXCAMERA_CHAIN_THREADS", "EXCAMERA_CODEC_TUNE",
    "EXCAMERA_PHASE1", "EXCAMERA_LIBVPX", "EXCAMERA_REBUILD", "EXCAMERA_CYTHON_BUILD_DIR",
    "EXCAMERA_SHARED", "EXCAMERA_VPXENC", "EXCAMERA_FUZZ_EXAMPLES",  # the tests' and benches'
})


def unknown_settings(environ: dict[str, str] | None = None) -> list[str]:
    """EXCAMERA_* variables nothing reads: a typo (EXCAMERA_RETENTION for
    EXCAMERA_RETENTION_SECONDS) would otherwise leave the default in force unsaid."""
    environ = dict(os.environ if environ is None else environ)
    known = {f"EXCAMERA_{item.name.upper()}" for item in fields(ServiceConfig)} | OTHER_SETTINGS
    return sorted(name for name in environ if name.startswith("EXCAMERA_")
                  and name not in known and not name.startswith("EXCAMERA_TEST_"))


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _parse(name: str, kind: Any, text: str) -> Any:
    kind = str(kind)
    try:
        if "tuple" in kind:
            return _split_list(text)
        if "bool" in kind:
            word = text.strip().lower()
            if word not in (*_TRUE, *_FALSE):
                raise ValueError(word)
            return word in _TRUE
        if "float" in kind:
            return float(text)
        if "int" in kind:
            return int(text)
    except ValueError:
        expected = ("1/true/yes/on or 0/false/no/off" if "bool" in kind else
                    "a number" if "float" in kind else "a whole number")
        raise ConfigError(f"EXCAMERA_{name.upper()}={text!r} is not valid: give {expected}"
                          ) from None
    return text
