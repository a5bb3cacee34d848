"""What a service process works with: its configuration, the store, the job records, the
Celery app and the dispatcher, made once per process (never shared across a fork: database
and broker connections are per process), plus the job facts every task reads (plans,
requests), cached because they never change once written.
"""

from __future__ import annotations

import json
import os
import socket
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from celery import Celery

from shared.pipeline import graph, stages
from shared.pipeline.messages import JobRequest, _job_request
from shared.pipeline.stages import ChunkPlan
from shared.pipeline.store import CountingStore, open_store

from .broker import Dispatcher, Topology, make_celery
from .config import ServiceConfig
from .inputs import UrlPolicy
from .records import JobRecords

__all__ = ["JobFacts", "Runtime", "job_key"]

_CACHED_JOBS = 256
SERVICE_ENV = "EXCAMERA_SERVICE_NAME"  # which service this process is (metrics labels)


def job_key(job: str) -> str:
    """Where a job's request and output location are stored, for workers to read."""
    return f"jobs/{job}/job.json"


@dataclass(frozen=True)
class JobFacts:
    """What a job was asked for, as its workers need it."""

    request: JobRequest
    output: str | None  # a URL the operator allows, or None for the store

    def to_json(self) -> bytes:
        return json.dumps({"request": self.request.to_json(), "output": self.output}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> JobFacts:
        document = json.loads(data)
        return cls(_job_request(document["request"]), document["output"])


class Runtime:
    """One per process: `Runtime.current(config)`."""

    _instance: Runtime | None = None

    def __init__(self, config: ServiceConfig, service: str | None = None) -> None:
        self.config = config
        self.service = service or os.environ.get(SERVICE_ENV, "excamera")
        self.pid = os.getpid()
        self.worker = f"{socket.gethostname()}:{self.pid}"
        self.topology = Topology.for_config(config)
        self.policy = UrlPolicy(config.allow_input, config.allow_output,
                                config.allow_private_networks)
        self._plans: OrderedDict[str, ChunkPlan] = OrderedDict()
        self._facts: OrderedDict[str, JobFacts] = OrderedDict()
        self._sizes: OrderedDict[str, dict[str, int]] = OrderedDict()
        stages.HELD_STATES.limit = config.held_states

    @classmethod
    def current(cls, config: ServiceConfig | None = None) -> Runtime:
        """This process's runtime (made on first use; a forked child makes its own)."""
        instance = cls._instance
        if instance is None or instance.pid != os.getpid():
            if config is None:
                config = ServiceConfig.from_env()
            instance = cls._instance = cls(config)
        return instance

    @cached_property
    def store(self) -> CountingStore:
        from . import metrics

        def count(operation: str) -> None:
            metrics.STORE_REQUESTS.labels(self.service, operation).inc()

        return CountingStore(open_store(self.config.store), count)

    @cached_property
    def records(self) -> JobRecords:
        return JobRecords(self.config.db)

    @cached_property
    def celery(self) -> Celery:
        return make_celery(self.config, self.topology)

    @cached_property
    def dispatcher(self) -> Dispatcher:
        return Dispatcher(self.celery, self.config.encoder_function)

    def plan(self, job: str) -> ChunkPlan:
        if job not in self._plans:
            self._remember(self._plans, job, stages.load_plan(self.store, job))
        return self._plans[job]

    def facts(self, job: str) -> JobFacts:
        if job not in self._facts:
            self._remember(self._facts, job, JobFacts.from_json(self.store.get(job_key(job))))
        return self._facts[job]

    def stage_sizes(self, job: str) -> dict[str, int]:
        if job not in self._sizes:
            self._remember(self._sizes, job, graph.stage_sizes(self.plan(job)))
        return self._sizes[job]

    @staticmethod
    def _remember(cache: OrderedDict[str, Any], key: str, value: Any) -> None:
        cache[key] = value
        while len(cache) > _CACHED_JOBS:
            cache.popitem(last=False)

    def close(self) -> None:
        if "records" in self.__dict__:
            self.records.close()
