"""The events queue on its own (services/events.py), against the real RabbitMQ and PostgreSQL:
the README's consumer reads what `announce_end` posts, and the janitor's catch-up posts only
the ends that have waited their grace. The events of whole jobs through real workers are in
test_services.py, test_aws_services.py and test_api.py."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kombu
import pytest
from services_support import BROKER, Cluster, cluster_at

from services.events import announce_end, announce_missed
from shared.pipeline.messages import JobRequest, job_id_for

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    from services.broker import Topology

    with cluster_at(tmp_path, tmp_path) as made:
        with kombu.Connection(BROKER) as connection:
            Topology(made.prefix, 4).declare(connection)
        yield made


@pytest.fixture
def runtime(cluster: Cluster) -> Iterator[Any]:
    with cluster.runtime() as made:
        yield made


def ended_job(runtime: Any, reason: str = "input: no such file") -> str:
    client = secrets.token_hex(6)
    job = job_id_for(None, client)
    runtime.records.create_job(job, "ingest", client,
                               JobRequest("file:///srv/in/a.mp4").to_json(), None)
    assert runtime.records.fail_job(job, reason)
    return job


def readme_consumer() -> str:
    """The README's example consumer of the events queue, as written there."""
    text = README.read_text()
    section = text[text.index("**The events queue**"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_the_readme_consumer_reads_an_announced_end(cluster: Cluster, runtime: Any) -> None:
    job = ended_job(runtime)
    assert announce_end(runtime, job)
    assert runtime.records.get_job(job).announced_at is not None
    assert announce_end(runtime, job)  # once announced, not again
    code = readme_consumer().replace('"excamera.events"', f'"{cluster.prefix}.events"')
    scope: dict[str, Any] = {}
    exec(code, scope)  # noqa: S102 - the documented example, run as a user would
    event = scope["event"]
    record = runtime.records.get_job(job)
    assert event == {"version": 1, "event": "job.ended", "job": job, "id": record.client_id,
                     "owner": "ingest", "state": "failed", "output": None, "result": None,
                     "error": "input: no such file",
                     "finished_at": record.finished_at.isoformat()}
    assert cluster.queue_messages("events") == []  # one post: the consumer took it


def test_the_catch_up_waits_out_the_grace(cluster: Cluster, runtime: Any) -> None:
    job = ended_job(runtime)
    assert announce_missed(runtime, grace_seconds=3600) == 0  # still within its grace
    assert runtime.records.get_job(job).announced_at is None
    assert announce_missed(runtime, grace_seconds=0) == 1
    assert announce_missed(runtime, grace_seconds=0) == 0
    (event,) = cluster.queue_messages("events")
    assert (event["job"], event["state"]) == (job, "failed")


def test_sweepers_at_once_post_each_end_once(cluster: Cluster, runtime: Any) -> None:
    """Two processes' sweeps at the same moment (each its own connections): every missed end
    is posted, none twice, as each claims what it posts."""
    import threading

    jobs = {ended_job(runtime) for _ in range(40)}
    counts: list[int] = []
    start = threading.Barrier(2)

    def sweep() -> None:
        with cluster.runtime() as own:
            start.wait()
            counts.append(announce_missed(own, grace_seconds=0))

    sweepers = [threading.Thread(target=sweep) for _ in range(2)]
    for sweeper in sweepers:
        sweeper.start()
    for sweeper in sweepers:
        sweeper.join(60)
    posted = [event["job"] for event in cluster.queue_messages("events")]
    assert sorted(posted) == sorted(jobs) and sum(counts) == len(jobs)


def test_a_claim_runs_out(cluster: Cluster, runtime: Any) -> None:
    """A sweeper that claimed an end and died: once its claim runs out, another posts it."""
    import time

    job = ended_job(runtime)
    assert runtime.records.claim_ends_to_announce(0, claim_seconds=1.0) == [job]
    assert announce_missed(runtime, grace_seconds=0) == 0  # claimed
    time.sleep(1.2)
    assert announce_missed(runtime, grace_seconds=0) == 1
    assert [e["job"] for e in cluster.queue_messages("events")] == [job]
