"""The operators' routes: health (for load balancers and `excamera up`), Prometheus metrics
(what the services are scaled on) and the OpenAPI document. None needs a token."""

from __future__ import annotations

from typing import Any

from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST

from .. import metrics
from ..errors import TransientError
from ..records import JOB_STATES
from . import openapi
from .context import ApiContext
from .routes import context_of, expect_continue, query

__all__ = ["operations"]

operations = web.RouteTableDef()


@operations.get("/v1/health", allow_head=False, expect_handler=expect_continue)
async def health(request: web.Request) -> web.Response:
    api = context_of(request)
    query(request, ())
    checks = {"db": api.runtime.records.ping, "broker": _broker_check(api)}
    status: dict[str, str] = {}
    for name, check in checks.items():
        try:
            await api.control(check)
            status[name] = "ok"
        except TransientError as exc:
            status[name] = str(exc)
    healthy = all(value == "ok" for value in status.values())
    document: dict[str, Any] = {"status": "ok" if healthy else "unavailable", **status}
    if not healthy:
        document["error"] = "; ".join(f"{k}: {v}" for k, v in status.items() if v != "ok")
    return web.json_response(document, status=200 if healthy else 503)


def _broker_check(api: ApiContext) -> Any:
    def check() -> None:
        api.declare_queues()
        try:
            api.check_broker()
        except TransientError:
            api.forget_queues()  # someone deleted them: declare again before publishing
            raise

    return check


@operations.get("/metrics", allow_head=False, expect_handler=expect_continue)
async def metrics_text(request: web.Request) -> web.Response:
    api = context_of(request)
    query(request, ())
    try:
        depths = await api.control(api.runtime.dispatcher.queue_depths)
        for queue, depth in depths.items():
            metrics.QUEUE_DEPTH.labels(queue).set(depth)
        metrics.REACHABLE.labels("broker").set(1)
    except TransientError:  # the depths keep their last values, which this says are stale
        metrics.REACHABLE.labels("broker").set(0)
    try:
        counts = await api.control(api.runtime.records.count_jobs_by_state)
        for state in JOB_STATES:
            metrics.JOBS.labels(state).set(counts.get(state, 0))
        metrics.REACHABLE.labels("db").set(1)
    except TransientError:
        metrics.REACHABLE.labels("db").set(0)
    return web.Response(body=metrics.render(), headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST})


@operations.get("/v1/openapi.json", allow_head=False, expect_handler=expect_continue)
async def openapi_document(request: web.Request) -> web.Response:
    query(request, ())
    return web.json_response(openapi.document(context_of(request).limits))
