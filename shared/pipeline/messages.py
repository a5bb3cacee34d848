"""The messages between the parts of the system: small versioned JSON documents, each type
defined once here, with the JSON Schema it is validated against on receipt (and that the HTTP
API's OpenAPI document quotes).

- `JobRequest`: what to encode and how (the body of `POST /v1/jobs`).
- `IngestMessage`: a `JobRequest` posted to the ingest queue by an upstream system, with the
  client's own job id (which makes the post idempotent) and where to write the output.
- `TaskMessage`: one task of the graph (`graph.TaskId`) of one job: keys, never pictures or
  states. It is a task's only argument, in a Celery worker and in a Lambda handler alike.
- `DeadLetter`: a message that could not be processed, with the reason.

`parse_*` raise `MessageError` with a one-line reason naming the field.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import jsonschema

from .graph import STAGES
from .vpx import AMBIGUOUS_SSIM, DEFAULT_CQ_LEVEL, MAX_CQ_LEVEL, EncodeSettings, ssim_decibels

__all__ = [
    "DeadLetter",
    "EVENT_SCHEMA",
    "IngestMessage",
    "JobEvent",
    "JobRequest",
    "MessageError",
    "TaskMessage",
    "VERSION",
    "job_id_for",
    "parse_ingest",
    "parse_job_request",
    "parse_task",
    "stored_job_request",
]

VERSION = 1
MAX_FRAMES_PER_CHUNK = 240
MAX_CHUNKS_PER_GROUP = 1024
MAX_URL_LENGTH = 4096
FORMATS = ("webm", "ivf")
SCENE_CUTS = ("auto", "off")
START_FRAMES = ("rebase", "revisit", "anchor")  # stages.START_FRAME_MODES
JOB_ID_PATTERN = r"^j-[0-9a-f]{24}$"
CLIENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
OWNER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAX_MESSAGE_BYTES = 64 * 1024  # every message is a few hundred bytes; refuse anything absurd
MAX_DEPTH = 32  # a message nests two levels; see _check_plain


class MessageError(ValueError):
    """A message or request that does not follow its schema; the text says what is wrong."""


# --------------------------------------------------------------------------- schemas

JOB_OPTIONS_SCHEMA: dict[str, Any] = {
    "frames_per_chunk": {
        "type": "integer", "minimum": 1, "maximum": MAX_FRAMES_PER_CHUNK, "default": 6,
        "description": "n: frames per chunk",
    },
    "chunks_per_group": {
        "type": "integer", "minimum": 1, "maximum": MAX_CHUNKS_PER_GROUP, "default": 16,
        "description": "x: chunks per group, i.e. per key frame (1: independent chunks)",
    },
    "cq_level": {
        "type": "integer", "minimum": 0, "maximum": MAX_CQ_LEVEL,
        "description": f"libvpx's constant quality, 0 (best) to 63; default {DEFAULT_CQ_LEVEL}",
    },
    "ssim": {
        "type": "number", "exclusiveMinimum": 0, "maximum": 100,
        "not": {"const": 1},  # an SSIM of 1 (lossless), or 1 dB? Neither is meant
        "description": "instead of cq_level: each chunk gets the highest cq level whose libvpx "
                       "encode reaches this SSIM, in dB (e.g. 16), or below 1 as plain SSIM; "
                       "not 1, which could mean either",
    },
    "format": {"type": "string", "enum": list(FORMATS), "default": "webm"},
    "scene_cuts": {
        "type": "string", "enum": list(SCENE_CUTS), "default": "auto",
        "description": "auto: a group (with a key frame) starts at each confident scene cut; "
                       "off: chunks of n frames throughout",
    },
    "start_frames": {
        "type": "string", "enum": list(START_FRAMES), "default": "rebase",
        "description": "how a chunk that continues its group starts. rebase: the chain "
                       "keeps the parallel stage's decisions for its first frame; revisit: it "
                       "decides that frame again against the true state (3-6 % fewer bits at "
                       "equal SSIM, a serial chain about 3x as long); anchor: the chunk "
                       "predicts from a boosted hidden frame of its middle picture, which the "
                       "chain decides again with the first frame (the fewest bits: within +3 % "
                       "of one libvpx stream at equal SSIM on every clip measured; a serial "
                       "chain about 4x as long)",
    },
    "budget_usd": {
        "type": "number", "exclusiveMinimum": 0, "maximum": 1_000_000,
        "description": "cancel the job as soon as its projected AWS cost passes this",
    },
}

_ONE_QUALITY = {"not": {"required": ["cq_level", "ssim"]}}

JOB_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "JobRequest",
    "properties": {
        "input": {
            "type": "string", "minLength": 1, "maxLength": MAX_URL_LENGTH,
            "description": "the video to encode: a URL under a prefix the operator allows",
        },
        **JOB_OPTIONS_SCHEMA,
    },
    "required": ["input"],
    "additionalProperties": False,
    **_ONE_QUALITY,
}

# The options part of a multipart upload: a JobRequest without its input.
JOB_OPTIONS_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "JobOptions",
    "properties": dict(JOB_OPTIONS_SCHEMA),
    "additionalProperties": False,
    **_ONE_QUALITY,
}

INGEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "IngestMessage",
    "properties": {
        "version": {"const": VERSION},
        "id": {
            "type": "string", "pattern": CLIENT_ID_PATTERN,
            "description": "the client's job id: posting the same id again makes no new job",
        },
        "owner": {
            "type": "string", "pattern": OWNER_PATTERN,
            "description": "the API token name whose caller may read the job (default: none)",
        },
        "output": {
            "type": "string", "minLength": 1, "maxLength": MAX_URL_LENGTH,
            "description": "where to write the output, under a prefix the operator allows "
                           "(default: the store, readable through the API)",
        },
        **JOB_REQUEST_SCHEMA["properties"],
    },
    "required": ["version", "id", "input"],
    "additionalProperties": False,
    **_ONE_QUALITY,
}

TASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "TaskMessage",
    "properties": {
        "version": {"const": VERSION},
        "job": {"type": "string", "pattern": JOB_ID_PATTERN},
        "stage": {"type": "string", "enum": list(STAGES)},
        "index": {"type": "integer", "minimum": 0, "maximum": 10_000_000},
        "sent": {"type": "number", "minimum": 0,
                 "description": "when it was published (Unix time): for queue latency"},
        "fallback": {"type": "boolean",
                     "description": "the queued copy of a directly invoked task: it waits "
                                    "while that invocation runs, instead of running twice"},
    },
    "required": ["version", "job", "stage", "index"],
    "additionalProperties": False,
}


def _validate(document: Any, schema: dict[str, Any], what: str) -> dict[str, Any]:
    _check_plain(document, what)
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is not None:
        where = ".".join(str(part) for part in error.absolute_path)
        raise MessageError(f"{what}: {where + ': ' if where else ''}{_short(error)}")
    return document


def _short(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return f"unknown field{'s' if len(extra) > 1 else ''} {', '.join(map(repr, extra))}"
    if error.validator == "not" and error.validator_value == {"const": 1}:
        return AMBIGUOUS_SSIM  # the command line's own words for it
    if error.validator == "not":
        return "give either cq_level or ssim, not both"
    if error.validator == "required":
        return error.message.replace(" is a required property", " is required")
    if error.validator == "const":
        return f"unsupported version {error.instance!r} (this service speaks {VERSION})"
    text = error.message
    return text if len(text) <= 200 else text[:197] + "..."


def _check_plain(document: Any, what: str) -> None:
    """Refuse what Python's JSON lets through and no message holds: NaN and infinities (not
    JSON at all; PostgreSQL's JSON type refuses them when a job is recorded), lone surrogates
    in strings (which PostgreSQL refuses too), and nesting past
    MAX_DEPTH (a message nests two levels; deep nesting exhausts the schema validator's
    recursion), and documents whose JSON would be over MAX_MESSAGE_BYTES. Checked on the decoded
    document, since a broker's serializer may decode it."""
    # (value, where it is, the least its key and separator take in JSON)
    pending: list[tuple[Any, tuple[str, ...], int]] = [(document, (), 0)]
    size = 0  # a lower bound of the document's JSON size, so whatever load_json took passes
    while pending:
        value, path, framing = pending.pop()
        size += framing + (len(value) + 2 if isinstance(value, str) else 1)
        if size > MAX_MESSAGE_BYTES:
            raise MessageError(f"{what}: more than {MAX_MESSAGE_BYTES} bytes as JSON")
        where = ".".join(path) + ": " if path else ""
        if isinstance(value, float) and not math.isfinite(value):
            raise MessageError(f"{what}: {where}not a finite number (JSON has no NaN or "
                               "Infinity, and numbers beyond 1.8e308 are refused)")
        if isinstance(value, str) and not _is_unicode(value):
            raise MessageError(f"{what}: {where}holds a lone surrogate (not valid Unicode text)")
        if isinstance(value, (dict, list)):
            if len(path) >= MAX_DEPTH:
                raise MessageError(f"{what}: nested more than {MAX_DEPTH} levels deep")
            if isinstance(value, dict) and not all(_is_unicode(key) for key in value):
                raise MessageError(f"{what}: {where}a field name holds a lone surrogate (not "
                                   "valid Unicode text)")
            if isinstance(value, dict):  # "key": and a comma
                pending.extend((item, (*path, _shown_key(key)), len(str(key)) + 4)
                               for key, item in value.items())
            else:
                pending.extend((item, (*path, str(index)), 1) for index, item in enumerate(value))


def _is_unicode(text: object) -> bool:
    """False for a string with a lone surrogate ("\\ud800" is valid JSON, not valid text: no
    encoder, URL parser or PostgreSQL takes it)."""
    if not isinstance(text, str):
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown_key(key: object) -> str:
    """A field name or list index as a message may quote it: on one line, and short."""
    text = str(key)
    if re.fullmatch(r"[\w-]{1,64}", text):
        return text
    text = repr(text)
    return text if len(text) <= 40 else text[:37] + "..."


def load_json(data: bytes | str, what: str) -> Any:
    """JSON from a message body, refusing oversized, malformed or absurdly nested documents."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageError(f"{what}: {len(data)} bytes is more than {MAX_MESSAGE_BYTES}")
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageError(f"{what}: not valid JSON ({exc})") from None
    except RecursionError:
        raise MessageError(f"{what}: nested more than {MAX_DEPTH} levels deep") from None
    _check_plain(document, what)
    return document


# --------------------------------------------------------------------------- job requests


@dataclass(frozen=True)
class JobRequest:
    """What to encode and how; `ssim` in dB, or None for `cq_level`."""

    input: str
    frames_per_chunk: int = 6
    chunks_per_group: int = 16
    cq_level: int = DEFAULT_CQ_LEVEL
    ssim: float | None = None
    format: str = "webm"
    scene_cuts: str = "auto"
    budget_usd: float | None = None
    start_frames: str = "rebase"

    def settings(self) -> EncodeSettings:
        return EncodeSettings(cq_level=self.cq_level, target_ssim_db=self.ssim)

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        if self.ssim is None:
            del document["ssim"]
        else:
            del document["cq_level"]
        if self.budget_usd is None:
            del document["budget_usd"]
        return document


def _ssim_db(value: float) -> float:
    try:
        return ssim_decibels(value)
    except ValueError as exc:
        raise MessageError(f"ssim: {exc}") from None


def _job_request(document: dict[str, Any], defaults: dict[str, Any] | None = None
                 ) -> JobRequest:
    known = {f.name for f in fields(JobRequest)}
    values = {**(defaults or {}),
              **{key: value for key, value in document.items() if key in known}}
    for key in ("frames_per_chunk", "chunks_per_group", "cq_level"):
        # JSON Schema's integers include 6.0; the pipeline wants 6.
        if isinstance(values.get(key), float):
            values[key] = int(values[key])
    if values.get("ssim") is not None:
        values["ssim"] = _ssim_db(values["ssim"])
    return JobRequest(**values)


def stored_job_request(document: dict[str, Any]) -> JobRequest:
    """A request as `JobRequest.to_json` stored it (already validated when it came in)."""
    return _job_request(document)


def parse_job_request(document: Any, defaults: dict[str, Any] | None = None) -> JobRequest:
    """A validated request; `defaults` (the operator's n and x, say) fill what it leaves out."""
    return _job_request(_validate(document, JOB_REQUEST_SCHEMA, "job request"), defaults)


def parse_job_options(document: Any, input_url: str,
                      defaults: dict[str, Any] | None = None) -> JobRequest:
    """The `options` part of an upload, for the uploaded `input_url`."""
    options = _validate(document, JOB_OPTIONS_OBJECT_SCHEMA, "options")
    return _job_request({**options, "input": input_url}, defaults)


@dataclass(frozen=True)
class IngestMessage:
    id: str
    request: JobRequest
    output: str | None = None
    owner: str | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"version": VERSION, "id": self.id, **self.request.to_json()}
        if self.output is not None:
            document["output"] = self.output
        if self.owner is not None:
            document["owner"] = self.owner
        return document


def parse_ingest(document: Any, defaults: dict[str, Any] | None = None) -> IngestMessage:
    _validate(document, INGEST_SCHEMA, "ingest message")
    return IngestMessage(
        id=document["id"],
        request=_job_request(document, defaults),
        output=document.get("output"),
        owner=document.get("owner"),
    )


INGEST_OWNER = "ingest"  # whose jobs upstream posts without an owner are


def job_id_for(owner: str | None, client_id: str) -> str:
    """The job a client's id names: the same owner and id always give the same job."""
    digest = hashlib.sha256(f"{owner or INGEST_OWNER}\0{client_id}".encode()).hexdigest()
    return f"j-{digest[:24]}"


def is_job_id(text: str) -> bool:
    return re.fullmatch(JOB_ID_PATTERN, text) is not None


# --------------------------------------------------------------------------- events

ENDED_STATES = ("done", "failed", "cancelled")

EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "JobEvent",
    "description": "A job has ended: posted to the events queue once it has (at least once: "
                   "a consumer keeps the first of each job)",
    "properties": {
        "version": {"const": VERSION},
        "event": {"const": "job.ended"},
        "job": {"type": "string", "pattern": JOB_ID_PATTERN},
        "id": {"type": "string", "pattern": CLIENT_ID_PATTERN,
               "description": "the client's job id (the ingest message's id, or the API's "
                              "Idempotency-Key)"},
        "owner": {"type": "string", "pattern": OWNER_PATTERN},
        "state": {"type": "string", "enum": list(ENDED_STATES)},
        "output": {"type": ["string", "null"],
                   "description": "once done: the URL the output was written to, or the "
                                  "API's /v1/jobs/{job}/output"},
        "result": {"type": ["object", "null"],
                   "description": "once done: bytes, bitrate, SSIM, PSNR, ..."},
        "error": {"type": ["string", "null"], "description": "why the job failed"},
        "finished_at": {"type": "string", "format": "date-time"},
    },
    "required": ["version", "event", "job", "id", "owner", "state", "output", "result",
                 "error", "finished_at"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class JobEvent:
    job: str
    client_id: str
    owner: str
    state: str
    output: str | None
    result: dict[str, Any] | None
    error: str | None
    finished_at: str

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, "event": "job.ended", "job": self.job, "id": self.client_id,
                "owner": self.owner, "state": self.state, "output": self.output,
                "result": self.result, "error": self.error, "finished_at": self.finished_at}


# --------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class TaskMessage:
    job: str
    stage: str
    index: int
    sent: float | None = None  # Unix time of publishing, when the publisher says
    fallback: bool = False  # the queued copy of a direct invocation (services/invoker.py)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"version": VERSION, "job": self.job, "stage": self.stage,
                                    "index": self.index}
        if self.sent is not None:
            document["sent"] = self.sent
        if self.fallback:
            document["fallback"] = True
        return document

    def stamped(self) -> TaskMessage:
        """The message as it is published now."""
        return replace(self, sent=round(time.time(), 6))

    def __str__(self) -> str:
        return f"{self.job} {self.stage}[{self.index}]"


def parse_task(document: Any) -> TaskMessage:
    _validate(document, TASK_SCHEMA, "task message")
    # JSON Schema's integers include 3.0; keys and records want 3.
    return TaskMessage(document["job"], document["stage"], int(document["index"]),
                       document.get("sent"), bool(document.get("fallback", False)))


@dataclass(frozen=True)
class DeadLetter:
    """A message set aside: what it was (as received), from where, and why."""

    reason: str
    source: str  # the queue it came from
    message: Any  # the document, or the raw text when it was not JSON

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, "reason": self.reason, "source": self.source,
                "message": self.message}
