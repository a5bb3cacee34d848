"""The messages' schemas (shared/pipeline/messages.py): what they accept, what they refuse and
how they say so; and a bounded fuzz of every parser: any document, any bytes, only ever a
MessageError with a one-line reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.pipeline.messages import (
    INGEST_SCHEMA,
    MAX_MESSAGE_BYTES,
    IngestMessage,
    JobRequest,
    MessageError,
    TaskMessage,
    job_id_for,
    load_json,
    parse_ingest,
    parse_job_options,
    parse_job_request,
    parse_task,
)


def test_option_values_are_the_pipelines() -> None:
    from shared.pipeline import messages, scenes, stages

    assert messages.SCENE_CUTS == scenes.SCENE_CUT_MODES
    assert messages.START_FRAMES == stages.START_FRAME_MODES


def test_a_job_request_with_defaults_and_conversions() -> None:
    request = parse_job_request({"input": "file:///x.y4m"})
    assert request == JobRequest("file:///x.y4m", 6, 16, 20, None, "webm", "auto", None)
    request = parse_job_request({"input": "u", "ssim": 0.98, "frames_per_chunk": 12.0},
                                defaults={"frames_per_chunk": 4, "chunks_per_group": 8})
    assert request.frames_per_chunk == 12 and isinstance(request.frames_per_chunk, int)
    assert request.chunks_per_group == 8  # the operator's default
    assert request.ssim == pytest.approx(16.9897, abs=1e-3)  # plain SSIM, as the CLI takes it
    assert request.settings().target_ssim_db == request.ssim
    assert "cq_level" not in request.to_json()
    options = parse_job_options({"cq_level": 30, "budget_usd": 2.5}, "s3://b/uploads/j/input")
    assert options.cq_level == 30 and options.budget_usd == 2.5
    off = parse_job_options({"scene_cuts": "off"}, "s3://b/uploads/j/input")
    assert off.scene_cuts == "off" and off.to_json()["scene_cuts"] == "off"
    revisit = parse_job_options({"start_frames": "revisit"}, "s3://b/uploads/j/input")
    assert revisit.start_frames == "revisit" and revisit.to_json()["start_frames"] == "revisit"
    anchor = parse_job_options({"start_frames": "anchor"}, "s3://b/uploads/j/input")
    assert anchor.start_frames == "anchor" and anchor.to_json()["start_frames"] == "anchor"
    assert parse_job_options({}, "s3://b/uploads/j/input").start_frames == "rebase"


@pytest.mark.parametrize(("document", "reason"), [
    ({}, "'input' is required"),
    ({"input": "u", "colour": 1}, "unknown field 'colour'"),
    ({"input": "u", "cq_level": 20, "ssim": 16}, "either cq_level or ssim"),
    ({"input": "u", "frames_per_chunk": 0}, "frames_per_chunk: 0 is less than the minimum"),
    ({"input": "u", "chunks_per_group": 2000}, "chunks_per_group: 2000 is greater than"),
    ({"input": "u", "cq_level": "high"}, "cq_level: 'high' is not of type 'integer'"),
    ({"input": "u", "ssim": 0}, "ssim: 0 is less than or equal to the minimum"),
    ({"input": "u", "ssim": 0.99999999999999}, "at most 100 dB"),
    ({"input": "u", "format": "mp4"}, "format: 'mp4' is not one of"),
    ({"input": "u", "scene_cuts": "on"}, "scene_cuts: 'on' is not one of"),
    ({"input": "u", "start_frames": "both"}, "start_frames: 'both' is not one of"),
    ({"input": "u", "budget_usd": -1}, "budget_usd: -1 is less than or equal"),
    ({"input": ""}, "input: '' should be non-empty"),
    (["input"], "is not of type 'object'"),
])
def test_job_requests_refused_with_a_reason(document: object, reason: str) -> None:
    with pytest.raises(MessageError) as refused:
        parse_job_request(document)
    assert reason in str(refused.value) and "\n" not in str(refused.value)


def test_ingest_and_task_messages_round_trip() -> None:
    message = IngestMessage("client-1", JobRequest("file:///in.mp4", cq_level=31),
                            output="file:///out/x.webm", owner="alice")
    assert parse_ingest(message.to_json()) == message
    assert parse_ingest(json.loads(json.dumps(message.to_json()))) == message
    task = TaskMessage(job_id_for("alice", "client-1"), "first", 7)
    assert parse_task(task.to_json()) == task
    stamped = task.stamped()
    assert parse_task(stamped.to_json()) == stamped and stamped.sent is not None
    # An integral float is an integer to JSON Schema; to the keys and records it is 7, not 7.0
    # (a chunk key of 7.0 raised ValueError, which failed the job).
    index = parse_task({**task.to_json(), "index": 7.0}).index
    assert index == 7 and type(index) is int
    assert job_id_for("alice", "c") == job_id_for("alice", "c") != job_id_for("bob", "c")
    assert job_id_for(None, "c") == job_id_for("ingest", "c")


@pytest.mark.parametrize("document", [
    {"version": 1, "job": "j-" + "0" * 24, "stage": "encode", "index": -1},
    {"version": 1, "job": "../../etc/passwd", "stage": "encode", "index": 0},
    {"version": 1, "job": "j-" + "0" * 24, "stage": "transcode", "index": 0},
    {"version": 2, "job": "j-" + "0" * 24, "stage": "encode", "index": 0},
    {"version": 1, "job": "j-" + "0" * 24, "stage": "encode"},
    {"version": 1, "job": "j-" + "0" * 24, "stage": "encode", "index": 0, "x": 1},
])
def test_task_messages_refused(document: dict) -> None:
    with pytest.raises(MessageError):
        parse_task(document)


def test_oversized_and_malformed_bodies() -> None:
    with pytest.raises(MessageError, match="not valid JSON"):
        load_json(b"\xff\xfe{", "m")
    with pytest.raises(MessageError, match="bytes is more than"):
        load_json(b"[" + b"1," * 100_000 + b"1]", "m")
    # A broker's serializer may hand over a decoded document of any size: its JSON size is
    # bounded too, counted no higher than json.dumps would write it.
    for huge in ({"job": "j", "stage": "x" * MAX_MESSAGE_BYTES, "index": 1},
                 {"job": "j", "stage": "encode", "index": 1, "pad": [0] * 40_000},
                 {"job": "j", "stage": "encode", "index": 1,
                  **{f"f{n}": n for n in range(10_000)}}):
        assert len(json.dumps(huge)) > MAX_MESSAGE_BYTES
        with pytest.raises(MessageError, match=f"more than {MAX_MESSAGE_BYTES} bytes as JSON"):
            parse_task(huge)
    # Whatever load_json takes, the check takes: documents of exactly the limit, compact.
    ones = (MAX_MESSAGE_BYTES - 1) // 2
    pad = b" " * (MAX_MESSAGE_BYTES - 2 * ones - 1)
    for text in (b'{"a":"' + b"x" * (MAX_MESSAGE_BYTES - 8) + b'"}',
                 b"[" + b"1," * (ones - 1) + b"1" + pad + b"]",
                 b"{" + b",".join(b'"%05d":0' % n for n in range(MAX_MESSAGE_BYTES // 10))
                 + b"}" + b" " * (MAX_MESSAGE_BYTES % 10 - 1)):
        assert len(text) == MAX_MESSAGE_BYTES, len(text)
        assert load_json(text, "m") is not None


def test_non_finite_numbers_and_deep_nesting_refused() -> None:
    # Python's JSON reads NaN, Infinity and 1e999 and nests as deep as its stack; no message
    # holds either, and PostgreSQL's JSON type refuses the numbers when a job is recorded.
    for text in (b'{"input": "file:///a.y4m", "budget_usd": NaN}',
                 b'{"input": "file:///a.y4m", "budget_usd": 1e999}',
                 b'{"input": "file:///a.y4m", "ssim": -Infinity}'):
        with pytest.raises(MessageError, match="not a finite number"):
            load_json(text, "m")
    with pytest.raises(MessageError, match="nested more than 32 levels"):
        load_json(b"[" * 5000 + b"]" * 5000, "m")
    with pytest.raises(MessageError, match="nested more than 32 levels"):
        load_json(b"[" * 40 + b"]" * 40, "m")
    # A broker's serializer may hand over the decoded document: the parsers check it too.
    with pytest.raises(MessageError, match="ingest message: request.budget_usd: not a finite"):
        parse_ingest({"version": 1, "id": "a", "request": {"input": "file:///a.y4m",
                                                           "budget_usd": float("inf")}})
    assert load_json(b"[" * 31 + b"]" * 31, "m") is not None
    for text in (b'{"input": "file:///a\\ud800.y4m"}', b'{"input": "file:///a.y4m", "\\udfff": 1}'):
        with pytest.raises(MessageError, match="lone surrogate"):
            parse_job_request(load_json(text, "m"))
    assert parse_job_request(load_json(b'{"input": "file:///\\u00e9t\\u00e9.y4m"}', "m"))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=20), children, max_size=6),
    max_leaves=20,
)
# Documents that look like ours: the schema's own field names, with any values.
near_misses = st.dictionaries(
    st.sampled_from(sorted(INGEST_SCHEMA["properties"]) + ["job", "stage", "index", "x"]),
    json_values, max_size=10)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(json_values, near_misses))
def test_fuzz_every_parser_refuses_cleanly(document: object) -> None:
    for parse in (parse_job_request, parse_ingest, parse_task,
                  lambda d: parse_job_options(d, "file:///x")):
        try:
            parsed = parse(document)
        except MessageError as exc:
            assert str(exc) and "\n" not in str(exc)
            continue
        request = getattr(parsed, "request", parsed)
        if isinstance(request, JobRequest):
            request.settings()  # what passes the schema is a job the pipeline can run


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_bodies(body: bytes) -> None:
    try:
        parse_ingest(load_json(body, "ingest message"))
    except MessageError as exc:
        assert "\n" not in str(exc)
