"""The API's OpenAPI 3.1 document, served at /v1/openapi.json.

Request bodies quote the pipeline's own JSON Schemas (`shared.pipeline.messages`), the ones the
handlers validate with, so the document cannot drift from what the server accepts; OpenAPI 3.1
is JSON Schema 2020-12, so they go in unchanged. The tests fuzz the server against this
document (schemathesis): every answer must be one of the documented statuses and match its
schema, and nothing may answer 5xx.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from shared.pipeline.graph import STAGES
from shared.pipeline.messages import (
    CLIENT_ID_PATTERN,
    EVENT_SCHEMA,
    FORMATS,
    INGEST_SCHEMA,
    JOB_ID_PATTERN,
    JOB_OPTIONS_OBJECT_SCHEMA,
    JOB_REQUEST_SCHEMA,
    MAX_DEPTH,
    MAX_MESSAGE_BYTES,
    SCENE_CUTS,
    START_FRAMES,
)

from ..records import JOB_STATES
from .context import Limits
from .jobs import OUTPUT_TYPES
from .middleware import DETAIL_CODES, ERROR_CODES

__all__ = ["document"]

MAX_OFFSET = 10_000_000


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


def _object(properties: dict[str, Any], required: list[str] | None = None,
            **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties,
            "required": list(properties) if required is None else required, **extra}


TIME = {"type": "string", "format": "date-time"}
TIME_OR_NULL = _nullable("string", format="date-time")
JOB_ID = {"type": "string", "pattern": JOB_ID_PATTERN}
STATE = {"type": "string", "enum": list(JOB_STATES)}

# A stored request as the status shows it: what was accepted, normalised (ssim in dB, the
# input URL in its normal spelling), so without the request's own bounds.
STORED_REQUEST = _object({
    "input": {"type": "string", "description": "the input URL; for an upload, `upload:` and "
                                               "the first 32 hex digits of its SHA-256"},
    "frames_per_chunk": {"type": "integer"},
    "chunks_per_group": {"type": "integer"},
    "cq_level": {"type": "integer"},
    "ssim": {"type": "number"},
    "format": {"type": "string", "enum": list(FORMATS)},
    "scene_cuts": {"type": "string", "enum": list(SCENE_CUTS)},
    "start_frames": {"type": "string", "enum": list(START_FRAMES)},
    "budget_usd": {"type": "number"},
}, ["input", "frames_per_chunk", "chunks_per_group", "format"])

STAGE_PROGRESS = _object({
    "total": {"type": "integer"}, "done": {"type": "integer"},
    "queued": {"type": "integer"}, "running": {"type": "integer"},
    "overdue": {"type": "integer", "description": "running past their deadline"},
    "failed": {"type": "integer"}, "attempts": {"type": "integer"},
    "first_start": TIME_OR_NULL, "last_end": TIME_OR_NULL,
    "busy_seconds": {"type": "number", "description": "the stage's task times summed"},
})

TASK_ERROR = _object({
    "stage": _nullable("string"), "index": _nullable("integer"),
    "attempt": _nullable("integer"), "permanent": {"type": "boolean"},
    "reason": {"type": "string"}, "at": TIME,
})

OVERDUE = _object({
    "stage": {"type": "string"}, "index": {"type": "integer"},
    "worker": _nullable("string"), "attempt": {"type": "integer"},
    "started_at": TIME_OR_NULL, "deadline": TIME_OR_NULL,
})

TASK = _object({
    "stage": {"type": "string", "enum": list(STAGES)}, "index": {"type": "integer"},
    "state": {"type": "string"}, "attempts": {"type": "integer"},
    "worker": _nullable("string"), "queued_at": TIME_OR_NULL, "started_at": TIME_OR_NULL,
    "finished_at": TIME_OR_NULL, "seconds": _nullable("number"),
})

JOB_SUMMARY_PROPERTIES: dict[str, Any] = {
    "id": JOB_ID,
    "state": STATE,
    "request": _ref("StoredRequest"),
    "error": _nullable("string", description="why the job failed"),
    "output": _nullable("string", description="where the output is read once done: "
                        "/v1/jobs/{id}/output, or the URL an ingest job wrote it to"),
    "created_at": TIME,
    "started_at": TIME_OR_NULL,
    "finished_at": TIME_OR_NULL,
}

JOB = _object({
    **JOB_SUMMARY_PROPERTIES,
    "client_id": {"type": "string", "description": "the Idempotency-Key, or a random id"},
    "percent": {"type": "number", "minimum": 0, "maximum": 100,
                "description": "how far the job is: its tasks done of all it has (the split "
                               "adds all but itself at once); 100 only once done"},
    "progress": {"type": "object", "additionalProperties": _ref("StageProgress"),
                 "description": "per stage of the task graph"},
    "errors": {"type": "array", "items": _ref("TaskError")},
    "overdue": {"type": "array", "items": _ref("OverdueTask")},
    "plan": _nullable("object", description="the split's plan: frames, chunks, groups, ..."),
    "result": _nullable("object", description="bytes, bitrate, SSIM and PSNR of the output"),
    "cost": {"type": "object", "required": ["so_far", "projected"],
             "properties": {"so_far": _ref("Cost"), "projected": _ref("Cost")},
             "description": "what the job would cost on AWS, in US dollars: its tasks done "
                            "so far, and the whole job projected from them"},
    "output_link": _nullable("string", description="once done: the output's URL with a signed "
                             "expiry, readable without a token (for a browser's <video>)"),
    "expires_at": _nullable("string", format="date-time",
                            description="when the intermediates are deleted"),
    "cleaned_at": TIME_OR_NULL,
})

ERROR = _object({
    "error": {"type": "string", "description": "one line for people: what is wrong"},
    "code": {"type": "string", "enum": ERROR_CODES,
             "description": "for programs, stable across releases: the status's own code "
                            "(invalid_request, not_found, ...) or a finer one: "
                            + "; ".join(f"{code} ({meaning})"
                                        for code, meaning in DETAIL_CODES.items())},
}, additionalProperties=False)


def _page(item: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return _object({
        **(extra or {}),
        item: {"type": "array", "items": _ref("JobSummary" if item == "jobs" else "Task")},
        "limit": {"type": "integer"}, "offset": {"type": "integer"},
        "next_offset": _nullable("integer", description="the next page's offset, if any"),
    })


def _schemas() -> dict[str, Any]:
    return {
        "JobRequest": copy.deepcopy(JOB_REQUEST_SCHEMA),
        "JobOptions": copy.deepcopy(JOB_OPTIONS_OBJECT_SCHEMA),
        "IngestMessage": copy.deepcopy(INGEST_SCHEMA),
        "JobEvent": copy.deepcopy(EVENT_SCHEMA),
        "StoredRequest": STORED_REQUEST,
        "Accepted": _object({"id": JOB_ID, "state": STATE}),
        "JobSummary": _object(JOB_SUMMARY_PROPERTIES),
        "Job": JOB,
        "StageProgress": STAGE_PROGRESS,
        "TaskError": TASK_ERROR,
        "OverdueTask": OVERDUE,
        "Task": TASK,
        "JobList": _page("jobs"),
        "TaskList": _page("tasks", {"id": JOB_ID}),
        "Cost": {"type": "object", "required": ["total"],
                 "additionalProperties": {"type": "number"}},
        "Cancelled": _object({"id": JOB_ID, "state": {"const": "cancelled"}}),
        "Health": _object({
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "db": {"type": "string", "description": "ok, or what is wrong"},
            "broker": {"type": "string", "description": "ok, or what is wrong"},
            "error": {"type": "string"},
        }, ["status", "db", "broker"]),
        "Error": ERROR,
    }


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": _ref("Error")}}}


def _json(description: str, schema: str, headers: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description,
                              "content": {"application/json": {"schema": _ref(schema)}}}
    if headers:
        answer["headers"] = headers
    return answer


UNAUTHORIZED = _error("no bearer token, or not a valid one")
BAD_REQUEST = _error("a malformed request; the reason says what is wrong")
NOT_FOUND = _error("no such job, or not the caller's")
UNAVAILABLE = {
    **_error("the database is down; retry after a while"),
    "headers": {"Retry-After": {"description": "seconds to wait before retrying",
                                "schema": {"type": "integer", "minimum": 1}}},
}


def _parameters(limits: Limits) -> dict[str, Any]:
    return {
        "JobId": {"name": "id", "in": "path", "required": True, "schema": JOB_ID},
        "Limit": {"name": "limit", "in": "query", "required": False,
                  "schema": {"type": "integer", "minimum": 1, "maximum": limits.max_page,
                             "default": limits.default_page}},
        "Offset": {"name": "offset", "in": "query", "required": False,
                   "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET,
                              "default": 0}},
        "Stage": {"name": "stage", "in": "query", "required": False,
                  "schema": {"type": "string", "enum": list(STAGES)}},
        "State": {"name": "state", "in": "query", "required": False,
                  "description": "only the jobs in this state",
                  "schema": {"type": "string", "enum": list(JOB_STATES)}},
        "IdempotencyKey": {
            "name": "Idempotency-Key", "in": "header", "required": False,
            "description": "the same key (per token) makes the same job: a repeat answers "
                           "the first job's id; a different request with it is a 409",
            "schema": {"type": "string", "pattern": CLIENT_ID_PATTERN},
        },
    }


def _param(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/parameters/{name}"}


def _submit(limits: Limits) -> dict[str, Any]:
    return {
        "summary": "Submit a job: an input URL the operator allows, or an upload",
        "operationId": "createJob",
        "parameters": [_param("IdempotencyKey")],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": _ref("JobRequest")},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "video": {"type": "string",
                                  "contentMediaType": "application/octet-stream",
                                  "description": "a Y4M file or any video PyAV reads, at most "
                                                 f"{limits.max_upload_bytes} bytes"},
                        "options": _ref("JobOptions"),
                    },
                    "required": ["video"],
                    "additionalProperties": False,
                },
                "encoding": {"options": {"contentType": "application/json"}},
            },
        }},
        "responses": {
            "202": _json("accepted (or, for a repeated Idempotency-Key, found)", "Accepted",
                         {"Location": {"schema": {"type": "string"},
                                       "description": "the job's status URL"}}),
            "400": BAD_REQUEST, "401": UNAUTHORIZED,
            "408": _error(f"the body stopped arriving: nothing came for "
                          f"{limits.body_idle_seconds:g} s"),
            "409": _error("the Idempotency-Key was used with a different request"),
            "413": _error(f"a JSON body over {limits.max_json_bytes} bytes, or an upload over "
                          f"{limits.max_upload_bytes}"),
            "415": _error("neither application/json nor multipart/form-data"),
            "417": _error("an Expect header other than 100-continue"),
            "503": UNAVAILABLE,
        },
    }


def _output() -> dict[str, Any]:
    media = {kind: {"schema": {"type": "string", "format": "binary"}}
             for kind in OUTPUT_TYPES.values()}
    return {
        "summary": "The output video (Range requests give 206, so a browser can seek)",
        "operationId": "getOutput",
        "description": "With a bearer token, or as the job's signed `output_link` (its "
                       "`expires` and `signature` parameters) without one.",
        "security": [{"bearer": []}, {"link": []}],
        "parameters": [
            {"name": "expires", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 0, "maximum": 999_999_999_999},
             "description": "the signed link's expiry (Unix time)"},
            {"name": "signature", "in": "query", "required": False,
             "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
             "description": "the signed link's signature"},
        ],
        "responses": {
            "200": {"description": "the whole output", "content": media},
            "206": {"description": "the requested byte range", "content": media},
            "304": {"description": "not modified (If-None-Match, If-Modified-Since)"},
            "307": {"description": "an S3 store: a presigned URL of the output, which serves "
                                   "ranges itself",
                    "headers": {"Location": {"schema": {"type": "string"}}}},
            "400": BAD_REQUEST,
            "401": _error("no bearer token or not a valid one, or a signed link that is not "
                          "valid or has expired"),
            "404": NOT_FOUND,
            "409": _error("the job is not done (queued, running, failed or cancelled): "
                          "job_not_done; or it wrote its output outside this service's store: "
                          "output_elsewhere"),
            "410": _error("the output is no longer in the store"),
            "412": {"description": "a precondition failed (If-Match, If-Unmodified-Since); "
                                   "no body"},
            "416": _error("the range lies beyond the output's end"),
            "503": UNAVAILABLE,
        },
    }


def _paths(limits: Limits) -> dict[str, Any]:
    job_id = [_param("JobId")]
    return {
        "/v1/jobs": {
            "post": _submit(limits),
            "get": {
                "summary": "The caller's jobs, newest first",
                "operationId": "listJobs",
                "parameters": [_param("Limit"), _param("Offset"), _param("State")],
                "responses": {"200": _json("a page of jobs", "JobList"),
                              "400": BAD_REQUEST, "401": UNAUTHORIZED, "503": UNAVAILABLE},
            },
        },
        "/v1/jobs/{id}": {
            "parameters": job_id,
            "get": {
                "summary": "A job's state, per-stage progress and timings, errors, overdue "
                           "tasks, plan and result",
                "operationId": "getJob",
                "responses": {"200": _json("the job", "Job"), "400": BAD_REQUEST,
                              "401": UNAUTHORIZED, "404": NOT_FOUND, "503": UNAVAILABLE},
            },
            "delete": {
                "summary": "Cancel a job: queued tasks are dropped, running ones stop at their "
                           "next step, intermediates are deleted",
                "operationId": "cancelJob",
                "responses": {"200": _json("cancelled", "Cancelled"), "400": BAD_REQUEST,
                              "401": UNAUTHORIZED, "404": NOT_FOUND,
                              "409": _error("the job has already ended (its state is named)"),
                              "503": UNAVAILABLE},
            },
        },
        "/v1/jobs/{id}/tasks": {
            "parameters": job_id,
            "get": {
                "summary": "Per-task timings (state, attempts, worker, times), by stage and "
                           "index",
                "operationId": "listTasks",
                "parameters": [_param("Stage"), _param("Limit"), _param("Offset")],
                "responses": {"200": _json("a page of tasks", "TaskList"),
                              "400": BAD_REQUEST, "401": UNAUTHORIZED, "404": NOT_FOUND,
                              "503": UNAVAILABLE},
            },
        },
        "/v1/jobs/{id}/output": {
            "parameters": job_id,
            "get": _output(),
            "head": {**_output(), "operationId": "headOutput",
                     "summary": "The output's size and type, without the body"},
        },
        "/v1/health": {
            "get": {
                "summary": "Whether the database and the broker answer (no token needed)",
                "operationId": "health",
                "security": [],
                "responses": {"200": _json("healthy", "Health"), "400": BAD_REQUEST,
                              "503": _json("the database or the broker is down", "Health")},
            },
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics: requests, queue depths, jobs by state "
                           "(no token needed)",
                "operationId": "metrics",
                "security": [],
                "responses": {"200": {"description": "Prometheus text format",
                                      "content": {"text/plain": {"schema":
                                                                 {"type": "string"}}}},
                              "400": BAD_REQUEST},
            },
        },
        "/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1",
                                      "content": {"application/json":
                                                  {"schema": {"type": "object"}}}},
                              "400": BAD_REQUEST},
            },
        },
    }


@functools.lru_cache(maxsize=8)
def document(limits: Limits = Limits()) -> dict[str, Any]:  # noqa: B008 - frozen, hashable
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "excamera",
            "version": "1",
            "description": "ExCamera[n,x] VP8 encoding as a service. Every error is JSON "
                           '{"error": "one line", "code": "..."} (but for a request that '
                           "is not well-formed HTTP, which the HTTP server itself answers "
                           "with a plain-text 400). "
                           f"Bodies: JSON up to {MAX_MESSAGE_BYTES} bytes, nested at most "
                           f"{MAX_DEPTH} levels, finite numbers only; uploads as "
                           "multipart/form-data. "
                           "Jobs posted to the ingest queue follow the IngestMessage schema; "
                           "every job's end is posted to the events queue as a JobEvent.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": _paths(limits),
        "components": {
            "schemas": _schemas(),
            "parameters": _parameters(limits),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "link": {"type": "apiKey", "in": "query", "name": "signature",
                         "description": "a job's signed output link (with its expires)"},
            },
        },
    }
