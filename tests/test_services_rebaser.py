"""The rebaser's ordering: links arriving out of order are held back and run in chunk order;
two rebasers share the shards; when the one that owns a group is killed mid-group, the other
takes the group over, and no link is done twice or lost."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kombu
import pytest
from services_support import (
    BROKER,
    Cluster,
    ServiceProcess,
    carphone_inputs,
    cluster_at,
    embedded_output,
)

pytestmark = pytest.mark.slow

N, X = 3, 8  # carphone's 120 frames: 40 chunks in 5 groups of 8


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, video_dir: Path) -> Path:
    return carphone_inputs(tmp_path_factory.mktemp("inputs"), video_dir)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, inputs: Path) -> bytes:
    return embedded_output(inputs / "carphone.mp4",
                           tmp_path_factory.mktemp("reference") / "out.ivf", N, X)


@pytest.fixture
def cluster(tmp_path: Path, inputs: Path) -> Iterator[Cluster]:
    """Every service but the rebaser, which each test starts as it needs."""
    with cluster_at(tmp_path, inputs) as running:
        yield running.start({"rebaser": 0})


def rebaser(cluster: Cluster, **env: str) -> ServiceProcess:
    service = cluster.service("rebaser", "--concurrency=1")
    service.env.update(env)
    cluster.extra.append(service)
    return service.start()


def wait_for_stage(cluster: Cluster, job: str, stage: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    with cluster.records() as records:
        while time.monotonic() < deadline:
            progress = records.progress(job).get(stage)
            if progress and progress["done"] == progress["total"]:
                return
            time.sleep(0.05)
    raise AssertionError(f"{stage} of {job} not done within {timeout} s")


def shard_messages(cluster: Cluster) -> list[Any]:
    """Take every message from the rebase shard queues."""
    taken = []
    with kombu.Connection(BROKER) as connection:
        channel = connection.channel()
        for shard in range(4):
            while (message := channel.basic_get(f"{cluster.prefix}.rebase.{shard}",
                                                no_ack=True)) is not None:
                taken.append(json.loads(message.body))
    return taken


def publish_rebase(cluster: Cluster, job: str, index: int) -> None:
    with kombu.Connection(BROKER) as connection:
        channel = connection.default_channel
        body = json.dumps({"version": 1, "job": job, "stage": "rebase", "index": index})
        channel.basic_publish(channel.prepare_message(body.encode(),
                                                      content_type="application/json"),
                              exchange=f"{cluster.prefix}.rebase",
                              routing_key=f"{job}:{index // X}")


def finished_once(cluster: Cluster, job: str, output: Path, reference: bytes,
                  allowed_repeats: int = 0) -> list[dict[str, Any]]:
    record = cluster.wait(job, timeout=180)
    assert record.state == "done", (record.state, record.error)
    assert output.read_bytes() == reference
    with cluster.records() as records:
        links = records.tasks(job, stage="rebase")
    assert len(links) == 40 and all(link["state"] == "done" for link in links)
    repeated = [link for link in links if link["attempts"] != 1]
    assert len(repeated) <= allowed_repeats, repeated
    return links


def test_links_arriving_out_of_order_run_in_order(cluster: Cluster, inputs: Path,
                                                  reference: bytes) -> None:
    """Every link of the job published in reverse order (plus the ones the pipeline
    published): the rebaser holds back each that comes before its predecessor is final, runs
    every link exactly once, in order, and the output is the embedded encode's."""
    output = cluster.outputs / "reversed.ivf"
    job = cluster.submit("reversed", inputs / "carphone.mp4", output,
                         frames_per_chunk=N, chunks_per_group=X)
    wait_for_stage(cluster, job, "first")
    published = shard_messages(cluster)  # what the pipeline published: the heads
    assert {m["index"] % X for m in published} <= {0, 1}
    for index in reversed(range(40)):
        publish_rebase(cluster, job, index)
    rebaser(cluster)
    links = finished_once(cluster, job, output, reference)
    # Within each group, the chain (positions 1 on; position 0 needs no rebase) finished in
    # chunk order.
    end = {link["index"]: link["finished_at"] for link in links}
    for group in range(5):
        chain = [end[group * X + position] for position in range(1, X)]
        assert chain == sorted(chain), group


def test_the_owner_of_a_group_killed_mid_group(cluster: Cluster, inputs: Path,
                                               reference: bytes) -> None:
    """Two rebasers share the shards; the one running a group is killed after a few of its
    links; the other takes the group over (decoding the exit state from the final chunks),
    and no finished link is done again."""
    slow = {"EXCAMERA_TEST_LINK_DELAY": "0.15"}
    first, second = rebaser(cluster, **slow), rebaser(cluster, **slow)
    output = cluster.outputs / "failover.ivf"
    job = cluster.submit("failover", inputs / "carphone.mp4", output,
                         frames_per_chunk=N, chunks_per_group=X)
    victim: list[ServiceProcess] = []

    def kill_the_owner(records: Any) -> None:
        if victim:
            return
        links = records.tasks(job, stage="rebase")
        done = [link for link in links if link["state"] == "done" and link["index"] % X >= 2]
        if len(done) < 3:
            return
        owner = int(done[-1]["worker"].rsplit(":", 1)[1])
        chosen = first if first.process and first.process.pid == owner else second
        assert chosen.process and chosen.process.pid == owner, (owner, done[-1])
        chosen.kill9()
        victim.append(chosen)

    cluster.wait(job, timeout=180, during=kill_the_owner)
    assert victim, "the job ended before a rebaser was killed"
    links = finished_once(cluster, job, output, reference, allowed_repeats=1)
    survivor = second if victim[0] is first else first
    survivor_pid = str(survivor.process.pid)  # type: ignore[union-attr]
    assert survivor.alive
    late = [link for link in links if link["worker"].endswith(":" + survivor_pid)]
    assert late, "the surviving rebaser ran no link"


def test_a_link_longer_than_the_heartbeats_keeps_its_shards(cluster: Cluster, inputs: Path,
                                                             tmp_path: Path) -> None:
    """A link (or a big job's join) that outlasts two AMQP heartbeats: the rebaser keeps its
    connection, and so its shards' leases, while the link runs (before, nothing was read or
    sent meanwhile: 'Too many heartbeats missed', the connection and every lease lost, and the
    broker handed the link to the next owner while it still ran). Heartbeats of 1 s here
    against links of 3.5 s; 30 s in service, against a join of thousands of chunks."""
    from shared.codec.y4m import Y4mWriter
    from shared.pipeline.sources import open_source

    short = inputs / "carphone-12.y4m"
    with open_source(inputs / "carphone.mp4") as video, short.open("wb") as file:
        writer = Y4mWriter(file, video.width, video.height, video.fps)
        for image in itertools.islice(video.images, 12):
            writer.write(image)
        writer.close()
    reference = embedded_output(short, tmp_path / "reference.ivf", 3, 4)
    service = rebaser(cluster, EXCAMERA_TEST_HEARTBEAT="1", EXCAMERA_TEST_LINK_DELAY="3.5")
    output = cluster.outputs / "slow-links.ivf"
    job = cluster.submit("slow-links", short, output, frames_per_chunk=3, chunks_per_group=4)
    try:
        record = cluster.wait(job, timeout=60)
    except AssertionError:
        print("the rebaser's log:\n" + service.log()[-6000:])
        raise
    assert record.state == "done", (record.state, record.error)
    assert output.read_bytes() == reference
    with cluster.records() as records:
        links = records.tasks(job, stage="rebase") + records.tasks(job, stage="join")
    assert len(links) == 5 and all(link["attempts"] == 1 for link in links), links
    assert "connection lost" not in service.log(), service.log()[-3000:]
