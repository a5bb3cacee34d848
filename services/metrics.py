"""Prometheus metrics for operators: what the services do, and what waits for them.

Workers count every task by stage and outcome, time it, and count retries; the API counts
requests and reports queue depths and jobs by state when scraped. A service with several
processes (Celery's prefork pool) writes its metrics through prometheus-client's multiprocess
mode, into the directory PROMETHEUS_MULTIPROC_DIR names, which the service's launcher
(`services.cli`) creates before this module is imported, and serves with `serve(port)`.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client import multiprocess as _multiprocess

from .errors import ConfigError

__all__ = [
    "HTTP_REQUESTS",
    "HTTP_SECONDS",
    "TASKS",
    "TASK_RETRIES",
    "TASK_SECONDS",
    "render",
    "serve",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_TASK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)

TASKS = Counter(
    "excamera_tasks_total", "Tasks handled, by stage and outcome "
    "(done, skipped: its job had ended, failed: permanently, early: buffered by a rebaser)",
    ["service", "stage", "outcome"],
)
TASK_SECONDS = Histogram(
    "excamera_task_seconds", "Time a task's stage function took", ["service", "stage"],
    buckets=_TASK_BUCKETS,
)
TASK_RETRIES = Counter(
    "excamera_task_retries_total", "Transient failures retried (storage, broker, database)",
    ["service", "stage"],
)
QUEUE_LATENCY = Histogram(
    "excamera_queue_latency_seconds", "From publishing a task to a worker starting it",
    ["service"], buckets=(0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.02, 0.05,
                          0.1, 0.25, 1, 5, 30, 300),
)
STORE_REQUESTS = Counter(
    "excamera_store_requests_total", "Requests to the store, by operation (what S3 bills)",
    ["service", "operation"],
)
JOB_EVENTS = Counter(
    "excamera_job_events_total", "Job ends posted to the events queue, by state, and when: "
    "at_end (by whoever ended the job) or late (by a sweep, the API's janitor or a "
    "rebaser's, after a failed post)",
    ["state", "when"],
)
HTTP_REQUESTS = Counter(
    "excamera_http_requests_total", "API requests", ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "excamera_http_request_seconds", "API request handling time", ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
QUEUE_DEPTH = Gauge(
    "excamera_queue_depth", "Messages waiting in each queue (at the last scrape)", ["queue"],
    multiprocess_mode="liveall",
)
REACHABLE = Gauge(
    "excamera_dependency_up", "1 if the last scrape read the dependency (broker: the queue "
    "depths; db: the jobs by state), 0 if it was out of reach (the figures are then stale)",
    ["dependency"], multiprocess_mode="liveall",
)
JOBS = Gauge(
    "excamera_jobs", "Jobs by state (at the last scrape)", ["state"],
    multiprocess_mode="liveall",
)


def _registry() -> CollectorRegistry:
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)
        return registry
    from prometheus_client import REGISTRY

    return REGISTRY


def render() -> bytes:
    """The metrics in Prometheus' text format."""
    return generate_latest(_registry())


def serve(port: int) -> None:
    """Serve /metrics on `port` (every address) from a background thread; ConfigError if the
    port cannot be had (another program holds it, say)."""
    try:
        start_http_server(port, registry=_registry())
    except OSError as exc:
        raise ConfigError(f"the metrics port {port} cannot be listened on: "
                          f"{exc.strerror or exc}") from None
