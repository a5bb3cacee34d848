"""The services end to end, as separate real processes on the real RabbitMQ and PostgreSQL:
jobs posted to the ingest queue complete with output byte-identical to `excamera encode`,
through kill -9 of any worker, a broker restart, duplicate deliveries and concurrent jobs."""

from __future__ import annotations

import contextlib
import random
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from procfs import alive, children
from scene_clip import CUTS, joined_clip
from services_support import Cluster, cluster_at, embedded_output

from services.adapter import cancel_job

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "samples" / "bigbuckbunny-720p.mp4"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, video_dir: Path) -> Path:
    """The clips jobs read, in a directory the cluster allows."""
    directory = tmp_path_factory.mktemp("inputs")
    shutil.copy(video_dir / "clips" / "carphone_pristine.mp4", directory / "carphone.mp4")
    for k in range(1, 5):
        shutil.copy(video_dir / "sintel" / f"chunk{k}.y4m", directory / f"sintel{k}.y4m")
    return directory


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, inputs: Path) -> Iterator[Cluster]:
    with cluster_at(tmp_path_factory.mktemp("cluster"), inputs) as running:
        yield running.start()


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory, inputs: Path) -> dict[Any, bytes]:
    """Embedded encodes, made once per (clip, n, x) a test needs."""
    made: dict[Any, bytes] = {}
    directory = tmp_path_factory.mktemp("references")

    def reference(source: Path, n: int = 6, x: int = 16) -> bytes:
        key = (source, n, x)
        if key not in made:
            made[key] = embedded_output(source, directory / f"{source.stem}-{n}x{x}.ivf", n, x)
        return made[key]

    return reference  # type: ignore[return-value]


def unique(name: str) -> str:
    return f"{name}-{random.getrandbits(40):010x}"


def finished(cluster: Cluster, job: str, output: Path, expected: bytes, **wait: Any) -> Any:
    record = cluster.wait(job, **wait)
    assert record.state == "done", (record.state, record.error)
    assert output.read_bytes() == expected
    return record


def test_ingest_job_matches_the_embedded_encode(cluster: Cluster, inputs: Path,
                                                references: Any) -> None:
    source = inputs / "carphone.mp4"
    output = cluster.outputs / unique("carphone") / "out.ivf"
    job = cluster.submit(unique("carphone"), source, output)
    record = finished(cluster, job, output, references(source))
    with cluster.records() as records:
        progress = records.progress(job)
        assert {stage: (p["done"], p["total"]) for stage, p in progress.items()} == {
            "split": (1, 1), "encode": (20, 20), "state": (18, 18), "first": (18, 18),
            "rebase": (20, 20), "measure": (2, 2), "join": (1, 1)}
        assert all(p["failed"] == 0 for p in progress.values())
        assert records.errors(job) == []
        # Every task ran once, with its times and worker recorded.
        tasks = records.tasks(job)
        assert len(tasks) == 80 and all(t["attempts"] == 1 for t in tasks), [
            (t["stage"], t["index"], t["attempts"]) for t in tasks if t["attempts"] != 1]
        assert all(t["started_at"] and t["finished_at"] and t["worker"] for t in tasks)
    assert record.result["frames"] == 120 and record.result["bytes"] == output.stat().st_size
    assert record.output == output.as_uri()
    assert record.plan["source"] == record.request["input"]  # the URL, not a fetched copy
    # Its end, on the events queue, once: what an upstream system waits for.
    (event,) = cluster.events_of(job)
    assert event == {"version": 1, "event": "job.ended", "job": job, "id": record.client_id,
                     "owner": "ingest", "state": "done", "output": output.as_uri(),
                     "result": record.result, "error": None,
                     "finished_at": record.finished_at.isoformat()}


@pytest.mark.parametrize("scene_cuts", ["auto", "off"])
def test_scene_cuts_reach_the_split(cluster: Cluster, inputs: Path, video_dir: Path,
                                    tmp_path: Path, scene_cuts: str) -> None:
    """A clip with two hard cuts: with scene cuts on, groups start at them, and either way the
    output is the embedded encode's with the same setting."""
    source = inputs / "joined.y4m"
    if not source.exists():
        joined_clip(video_dir, source)
    expected = embedded_output(source, tmp_path / "reference.ivf", scene_cuts=scene_cuts)
    output = cluster.outputs / unique("scenes") / "out.ivf"
    job = cluster.submit(unique("scenes"), source, output, scene_cuts=scene_cuts)
    record = finished(cluster, job, output, expected)
    assert record.plan["scene_cuts"] == (list(CUTS) if scene_cuts == "auto" else [])


@pytest.mark.parametrize("mode", ["revisit", "anchor"])
def test_start_frames_through_the_services(cluster: Cluster, inputs: Path, tmp_path: Path,
                                           mode: str) -> None:
    """start_frames reaches the plan, phase 1 and the rebaser: the output is the embedded
    encode's with the same option, and differs from the one without it."""
    source = inputs / "sintel4.y4m"
    expected = embedded_output(source, tmp_path / "reference.ivf", 2, 4, start_frames=mode)
    assert expected != embedded_output(source, tmp_path / "plain.ivf", 2, 4)
    output = cluster.outputs / unique(mode) / "out.ivf"
    job = cluster.submit(unique(mode), source, output, frames_per_chunk=2,
                         chunks_per_group=4, start_frames=mode)
    record = finished(cluster, job, output, expected)
    assert record.plan["start_frames"] == mode


def test_workers_serve_metrics(cluster: Cluster, inputs: Path, references: Any) -> None:
    """Each worker service serves Prometheus metrics for all its processes: tasks by stage
    and outcome, their durations, queue latency."""
    from prometheus_client.parser import text_string_to_metric_families

    source = inputs / "sintel4.y4m"
    output = cluster.outputs / unique("metrics") / "out.ivf"
    finished(cluster, cluster.submit(unique("metrics"), source, output, frames_per_chunk=2,
                                     chunks_per_group=3), output, references(source, 2, 3))
    samples: dict[str, dict[tuple, float]] = {}
    for service in ("encoder", "decoder", "rebaser"):
        text = urllib.request.urlopen(
            f"http://127.0.0.1:{cluster.metrics_ports[service]}/metrics", timeout=10
        ).read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = tuple(sorted(sample.labels.items()))
                samples.setdefault(sample.name, {})[key] = sample.value
    done = samples["excamera_tasks_total"]
    # At least this job's tasks (the module's other tests add theirs).
    assert done[(("outcome", "done"), ("service", "encoder"), ("stage", "encode"))] >= 3
    assert done[(("outcome", "done"), ("service", "encoder"), ("stage", "first"))] >= 2
    assert done[(("outcome", "done"), ("service", "decoder"), ("stage", "measure"))] >= 1
    assert done[(("outcome", "done"), ("service", "rebaser"), ("stage", "join"))] >= 1
    counts = samples["excamera_task_seconds_count"]
    assert counts[(("service", "encoder"), ("stage", "encode"))] >= 3
    assert samples["excamera_queue_latency_seconds_count"][(("service", "decoder"),)] >= 2


def test_a_repeated_post_makes_one_job(cluster: Cluster, inputs: Path, references: Any) -> None:
    """The client's id makes a post idempotent: the same message twice, one job, one run."""
    source, client = inputs / "sintel1.y4m", unique("twice")
    output = cluster.outputs / client / "out.ivf"
    job = cluster.submit(client, source, output, frames_per_chunk=2, chunks_per_group=3)
    assert cluster.submit(client, source, output, frames_per_chunk=2, chunks_per_group=3) == job
    finished(cluster, job, output, references(source, 2, 3))
    cluster.submit(client, source, output, frames_per_chunk=2, chunks_per_group=3)
    time.sleep(1.0)
    with cluster.records() as records:
        assert all(t["attempts"] == 1 for t in records.tasks(job))


def test_every_task_delivered_twice_changes_nothing(
    tmp_path: Path, inputs: Path, references: Any
) -> None:
    """With every task message published twice (as an at-least-once broker may deliver),
    the output is the same bytes and no task is redone once it is done."""
    with cluster_at(tmp_path, inputs) as twice:
        env = {"EXCAMERA_TEST_DUPLICATE_TASKS": "1"}
        for name in ("splitter", "encoder", "decoder", "rebaser"):
            service = twice.service(name, "--concurrency=1")
            service.env.update(env)
            twice.services[name] = service.start()
        twice.wait_ready()
        source = inputs / "carphone.mp4"
        output = twice.outputs / "out.ivf"
        job = twice.submit("dup", source, output, frames_per_chunk=6, chunks_per_group=4)
        finished(twice, job, output, references(source, 6, 4))
        time.sleep(1.0)  # the duplicates drain
        with twice.records() as records:
            tasks = records.tasks(job)
            assert all(t["state"] == "done" for t in tasks)
            assert records.errors(job) == []
            # A duplicate of a finished task only looks at its output: the stage functions
            # skip work that is done, so no output file was written twice.
            progress = records.progress(job)
            assert all(p["done"] == p["total"] for p in progress.values())
        assert output.read_bytes() == references(source, 6, 4)


STAGE_OF_SERVICE = {"splitter": "split", "encoder": "encode", "decoder": "state",
                    "rebaser": "rebase"}


@pytest.mark.parametrize("victim", ["splitter", "encoder", "decoder", "rebaser"])
def test_kill_9_a_worker_mid_job(cluster: Cluster, inputs: Path, references: Any,
                                 victim: str) -> None:
    """kill -9 the service (its whole process group) at a random point of its stage, start
    it again: the job completes, byte-identical, and no finished task was done again."""
    source = inputs / "carphone.mp4"
    client = unique(f"kill-{victim}")
    output = cluster.outputs / client / "out.ivf"
    stage = STAGE_OF_SERVICE[victim]
    # The reference first: made while the job ran, it could outlast the job, and the kill with it.
    expected = references(source, 3, 8)
    job = cluster.submit(client, source, output, frames_per_chunk=3, chunks_per_group=8)
    total = {"split": 1, "encode": 40, "state": 35, "rebase": 40}[stage]
    # The split takes a fraction of a second: kill its service at a random moment of the
    # job's first half second instead (before, during or after the split).
    when = random.uniform(0.0, 0.5) if stage == "split" else random.randrange(1, total - 1)
    began = time.monotonic()
    killed: list[int] = []

    def kill_at_the_moment(records: Any) -> None:
        if killed:
            return
        progress = records.progress(job).get(stage)
        if stage == "split":
            due = time.monotonic() - began >= when
        else:
            due = progress is not None and progress["done"] >= when
        if due:
            cluster.services[victim].kill9()
            killed.append(progress["done"] if progress else 0)
            cluster.services[victim].start()

    finished(cluster, job, output, expected, during=kill_at_the_moment, timeout=180)
    assert killed, f"the job ended before {victim} was killed"
    with cluster.records() as records:
        tasks = records.tasks(job)
        # Only what was running when the worker died ran twice; everything else once.
        again = [t for t in tasks if t["attempts"] > 1]
        assert len(again) <= 4, again
        assert all(t["attempts"] <= 2 for t in tasks)


def test_broker_restart_mid_job(cluster: Cluster, inputs: Path, references: Any) -> None:
    """`rabbitmqctl stop_app` / `start_app` in the middle of a job: nothing is lost, every
    service reconnects, and the job completes byte-identical."""
    source = inputs / "carphone.mp4"
    client = unique("restart")
    output = cluster.outputs / client / "out.ivf"
    expected = references(source, 3, 8)  # before the job, as for the kills above
    job = cluster.submit(client, source, output, frames_per_chunk=3, chunks_per_group=8)
    restarted: list[bool] = []

    def restart_broker(records: Any) -> None:
        if restarted:
            return
        encode = records.progress(job).get("encode")
        if encode and encode["done"] >= 10:
            subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True)
            time.sleep(2.0)
            subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True)
            restarted.append(True)

    finished(cluster, job, output, expected, during=restart_broker, timeout=240)
    assert restarted
    cluster.wait_ready()


def test_broker_blips_use_up_no_attempt(tmp_path: Path, inputs: Path,
                                        references: Any) -> None:
    """Celery stops a running task when its broker connection is lost (it could no longer
    acknowledge it), and the broker delivers it again: not a crash, so no attempt is spent.
    Here a job may take 2 attempts a task, and the broker restarts three times while its
    first encode runs, held 10 s on its first attempt: each time it comes back as the first
    attempt again (a second would not be held, and would end the restarts). The job ends
    byte-identical."""
    source = inputs / "carphone.mp4"
    with cluster_at(tmp_path, inputs, settings={"max_attempts": 2}) as blips:
        for name in ("splitter", "encoder", "decoder"):  # no rebaser (its hedger) yet
            service = blips.service(name)
            service.env["EXCAMERA_TEST_SLOW_TASK"] = "encode:0:10"
            blips.services[name] = service.start()
        blips.wait_ready()
        output = blips.outputs / "blips.ivf"
        job = blips.submit("blips", source, output, frames_per_chunk=15, chunks_per_group=4)
        restarts = 0
        with blips.records() as records:
            started = None
            for _ in range(3):
                deadline = time.monotonic() + 120
                while True:
                    task = {t["index"]: t for t in records.tasks(job, stage="encode")}.get(
                        0, {"state": "not split yet"})
                    if task["state"] == "done" or (
                            task["state"] == "running" and task["started_at"] != started):
                        break
                    assert time.monotonic() < deadline, task
                    time.sleep(0.1)
                if task["state"] == "done":
                    break
                started = task["started_at"]
                time.sleep(1.0)
                subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True)
                time.sleep(1.0)
                subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True)
                restarts += 1
        blips.services["rebaser"] = blips.service("rebaser").start()
        blips.wait_ready()
        finished(blips, job, output, references(source, 15, 4), timeout=180)
    assert restarts == 3


def test_twenty_concurrent_jobs(cluster: Cluster, inputs: Path, references: Any) -> None:
    """20 jobs at once, on four clips and settings of their own: each is correct."""
    jobs = []
    for number in range(20):
        source = inputs / f"sintel{number % 4 + 1}.y4m"
        n, x = (2, 3) if number % 2 else (3, 2)
        client = unique(f"many{number}")
        output = cluster.outputs / client / "out.ivf"
        jobs.append((cluster.submit(client, source, output, frames_per_chunk=n,
                                    chunks_per_group=x), output, references(source, n, x)))
    for job, output, expected in jobs:
        finished(cluster, job, output, expected, timeout=300)


def test_cancel_mid_job_leaves_nothing_behind(cluster: Cluster, inputs: Path) -> None:
    """Cancelled mid-job: the state says so, queued tasks are skipped, running ones stop at
    their next step, and once they have, nothing of the job is left in the store."""
    source = inputs / "carphone.mp4"
    client = unique("cancel")
    job = cluster.submit(client, source, cluster.outputs / client / "out.ivf",
                         frames_per_chunk=3, chunks_per_group=8)
    with cluster.runtime() as runtime:
        records = runtime.records
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            encode = records.progress(job).get("encode")
            if encode and encode["done"] >= 5:
                break
            time.sleep(0.02)
        assert cancel_job(runtime, job) == "cancelled"
        assert cancel_job(runtime, job) == "cancelled"  # again: nothing changes
        (event,) = cluster.events_of(job)  # announced once
        assert (event["state"], event["output"], event["result"]) == ("cancelled", None, None)
        deadline = time.monotonic() + 30
        while records.active_task_count(job) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert records.get_job(job).state == "cancelled"
        progress = records.progress(job)
        assert progress["encode"]["done"] < progress["encode"]["total"]
    assert not (cluster.root / "store" / "jobs" / job).exists()
    assert not (cluster.outputs / client).exists()


def test_a_job_cancelled_while_it_joins_writes_no_output(
        cluster: Cluster, inputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled while its chunks are being joined (after the join has read them all): the
    join writes nothing, neither the caller's file nor the store's copy. The job here ran to
    its end first; it is put back to running to replay its join in this process."""
    import psycopg

    from services.rebaser import join
    from shared.pipeline.messages import TaskMessage

    client = unique("cancel-join")
    output = cluster.outputs / client / "out.ivf"
    job = cluster.submit(client, inputs / "sintel1.y4m", output, frames_per_chunk=2,
                         chunks_per_group=3)
    assert cluster.wait(job).state == "done"
    output.unlink()
    with psycopg.connect(cluster.db_url, autocommit=True) as db:
        db.execute("UPDATE excamera_jobs SET state = 'running', output = NULL, "
                   "finished_at = NULL WHERE id = %s", (job,))
    with cluster.runtime() as runtime:
        real_join = join.stages.join

        def join_then_cancel(*args: Any) -> Any:
            joined = real_join(*args)
            assert cancel_job(runtime, job) == "cancelled"
            return joined

        monkeypatch.setattr(join.stages, "join", join_then_cancel)
        assert join.join_step(runtime, TaskMessage(job, "join", 0)) is None
        assert runtime.records.get_job(job).state == "cancelled"
    assert not output.exists()
    assert not (cluster.root / "store" / "outputs" / job).exists()


def test_a_failed_job_is_announced(cluster: Cluster, inputs: Path) -> None:
    client = unique("missing")
    job = cluster.submit(client, inputs / "not-here.y4m", cluster.outputs / client / "o.ivf")
    record = cluster.wait(job)
    assert record.state == "failed" and "no such file" in record.error
    (event,) = cluster.events_of(job)
    assert (event["state"], event["error"], event["output"]) == ("failed", record.error, None)
    assert event["id"] == client


def test_a_rebaser_posts_an_end_that_was_missed(cluster: Cluster) -> None:
    """A job that ended an hour ago without its end posted (its process died first): a
    rebaser's sweep posts it, with no API running."""
    from shared.pipeline.messages import JobRequest, job_id_for

    client = unique("missed")
    job = job_id_for(None, client)
    with cluster.records() as records:
        records.create_job(job, "ingest", client, JobRequest("file:///a.mp4").to_json(), None)
        records.fail_job(job, "split[0]: gone")
        with records._tx() as cur:
            cur.execute("UPDATE excamera_jobs SET finished_at = now() - interval '1 hour' "
                        "WHERE id = %s", (job,))
    (event,) = cluster.events_of(job, timeout=30)  # a sweep every 10 s
    assert (event["state"], event["error"]) == ("failed", "split[0]: gone")


BAD_INGEST = [
    (b"{not json", "not valid JSON"),
    (b'["a list"]', "is not of type 'object'"),
    ({"version": 1, "id": "bad-1", "input": "x", "colour": "red"}, "unknown field 'colour'"),
    ({"version": 2, "id": "bad-2", "input": "x"}, "unsupported version 2"),
    ({"version": 1, "input": "file:///x.y4m"}, "'id' is required"),
    ({"version": 1, "id": "bad-3", "input": "file:///x.y4m", "frames_per_chunk": "six"},
     "frames_per_chunk: 'six' is not of type 'integer'"),
    ({"version": 1, "id": "bad-4", "input": "file:///x.y4m", "chunks_per_group": 0},
     "chunks_per_group: 0 is less than the minimum of 1"),
    ({"version": 1, "id": "bad-5", "input": "file:///x.y4m", "cq_level": 64},
     "cq_level: 64 is greater than the maximum of 63"),
    ({"version": 1, "id": "bad-6", "input": "file:///x.y4m", "cq_level": 20, "ssim": 16},
     "either cq_level or ssim"),
    ({"version": 1, "id": "bad-7", "input": "file:///etc/passwd"}, "not under a prefix"),
    ({"version": 1, "id": "../../etc", "input": "file:///x.y4m"}, "id: '../../etc' does not"),
    ({"version": 1, "id": "bad-8", "input": "http://127.0.0.1/x.mp4"}, "not under a prefix"),
]


def test_bad_ingest_messages_are_set_aside_with_their_reason(
    cluster: Cluster, inputs: Path, references: Any
) -> None:
    """Each bad message goes to the ingest dead-letter queue with a one-line reason, and a good
    job posted among them completes as if they were not there."""
    cluster.queue_messages("ingest.dead")  # start empty
    for body, _ in BAD_INGEST[:6]:
        cluster.post(body)
    source = inputs / "sintel2.y4m"
    client = unique("among-bad")
    output = cluster.outputs / client / "out.ivf"
    job = cluster.submit(client, source, output, frames_per_chunk=2, chunks_per_group=3)
    for body, _ in BAD_INGEST[6:]:
        cluster.post(body)
    traversal = {"version": 1, "id": "bad-9", "input": (inputs / ".." / "x.y4m").as_uri()}
    cluster.post(traversal)
    finished(cluster, job, output, references(source, 2, 3))
    deadline = time.monotonic() + 10
    letters: list[Any] = []
    while len(letters) < len(BAD_INGEST) + 1 and time.monotonic() < deadline:
        letters += cluster.queue_messages("ingest.dead")
        time.sleep(0.1)
    assert len(letters) == len(BAD_INGEST) + 1
    reasons = [letter["reason"] for letter in letters]
    for (_, expected), reason in zip(BAD_INGEST, reasons, strict=False):
        assert expected in reason and "\n" not in reason, (expected, reason)
    assert "'.' or '..'" in reasons[-1] or "not under" in reasons[-1]
    assert all(letter["source"] == f"{cluster.prefix}.ingest" for letter in letters)


def test_a_task_past_its_deadline_is_reported(tmp_path: Path, inputs: Path) -> None:
    """With deadlines scaled down to microseconds, a running libvpx encode is overdue at
    once: the job's record lists it (stage, chunk, worker), and the job still completes."""
    with cluster_at(tmp_path, inputs) as strict:
        for name in ("splitter", "encoder", "decoder", "rebaser"):
            service = strict.service(name, "--concurrency=1")
            service.env["EXCAMERA_DEADLINE_SCALE"] = "0.000001"
            strict.services[name] = service.start()
        strict.wait_ready()
        job = strict.submit("late", inputs / "sintel3.y4m", strict.outputs / "late.ivf",
                            frames_per_chunk=6, chunks_per_group=1)
        seen: list[Any] = []

        def look(records: Any) -> None:
            seen.extend(records.overdue(job))

        assert strict.wait(job, during=look).state == "done"
    assert seen, "no overdue task was reported"
    assert {"stage", "index", "worker", "deadline", "started_at"} <= set(seen[0])
    assert seen[0]["stage"] in ("split", "encode", "state", "first", "rebase", "measure")


def test_a_budget_cap_cancels_the_job(cluster: Cluster, inputs: Path) -> None:
    """A job whose projected AWS cost passes its budget is cancelled, with the reason; its
    records carry the estimate the reason quotes."""
    from services.config import ServiceConfig
    from services.estimate import job_estimate

    client = unique("budget")
    job = cluster.submit(client, inputs / "carphone.mp4", cluster.outputs / client / "o.ivf",
                         frames_per_chunk=3, chunks_per_group=8, budget_usd=0.0001)
    record = cluster.wait(job)
    assert record.state == "cancelled"
    assert [e["state"] for e in cluster.events_of(job)] == ["cancelled"]
    with cluster.records() as records:
        reasons = [e["reason"] for e in records.errors(job)]
        estimate = job_estimate(records, job, ServiceConfig())
    assert any("passes the budget $0.0001" in r for r in reasons), reasons
    assert estimate["projected"]["total"] > 0.0001
    assert estimate["so_far"]["total"] <= estimate["projected"]["total"]


@pytest.mark.parametrize(("stage", "n", "x"), [("first", 3, 8), ("encode", 15, 4)])
def test_a_straggler_on_the_chain_is_hedged(tmp_path: Path, inputs: Path, references: Any,
                                            stage: str, n: int, x: int) -> None:
    """One task stalls for a minute on its first attempt (as on a sick machine): a stage-4
    task, or a libvpx encode among a stage of only 8, which the chain waits for through the
    stage-4 task it feeds. The hedger publishes it again once it runs far longer than its
    peers; the copy finishes first, and the job ends long before the straggler would."""
    source = inputs / "carphone.mp4"
    with cluster_at(tmp_path, inputs) as slow:
        for name, count in (("splitter", 1), ("encoder", 2), ("decoder", 1), ("rebaser", 1)):
            service = slow.service(name, f"--concurrency={count}")
            service.env["EXCAMERA_TEST_SLOW_TASK"] = f"{stage}:5:60"
            slow.services[name] = service.start()
        slow.wait_ready()
        output = slow.outputs / "hedged.ivf"
        began = time.monotonic()
        job = slow.submit("hedged", source, output, frames_per_chunk=n, chunks_per_group=x)
        finished(slow, job, output, references(source, n, x), timeout=120)
        elapsed = time.monotonic() - began
        with slow.records() as records:
            (straggler,) = [t for t in records.tasks(job, stage=stage) if t["index"] == 5]
    assert elapsed < 50, elapsed
    assert straggler["attempts"] == 2 and straggler["state"] == "done"


def test_excamera_up_runs_the_whole_system(tmp_path: Path, inputs: Path,
                                           references: Any) -> None:
    """`excamera up`: the API and one of each worker; the token and curl example it prints
    work; an upload comes back byte-identical to `excamera encode`; Ctrl-C (SIGTERM) stops
    every service it started."""
    import json as json_module
    import re

    from services_support import excamera_up, http_json, wait_done

    source = inputs / "sintel1.y4m"
    metrics = _free_ports(4)
    with cluster_at(tmp_path, inputs) as names:
        env = {k: v for k, v in names.env().items() if k != "EXCAMERA_API_TOKENS"}
        with excamera_up(env, f"--store={names.store_url}", f"--db={names.db_url}",
                         f"--queue-prefix={names.prefix}", f"--metrics-port={metrics}"
                         ) as (url, banner):
            token = re.search(r"EXCAMERA_TOKEN=(\S+)", banner).group(1)  # type: ignore[union-attr]
            assert url in banner and "curl" in banner
            boundary = "x" * 20
            options = json_module.dumps({"frames_per_chunk": 2, "chunks_per_group": 3,
                                         "format": "ivf"})
            body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; "
                    f"filename=\"in.y4m\"\r\n\r\n").encode() + source.read_bytes() + (
                    f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"options\"\r\n"
                    f"\r\n{options}\r\n--{boundary}--\r\n").encode()
            job = http_json(f"{url}/v1/jobs", token, body,
                            f"multipart/form-data; boundary={boundary}")["id"]
            assert wait_done(url, token, job)["state"] == "done"
            output = urllib.request.urlopen(urllib.request.Request(
                f"{url}/v1/jobs/{job}/output", headers={"Authorization": f"Bearer {token}"}),
                timeout=30).read()
            assert output == references(source, 2, 3)
            assert f"posted to the queue {names.prefix}.events" in banner
            assert [e["state"] for e in names.events_of(job)] == ["done"]
            # --metrics-port P: a port each, in the banner (one port for all was the second
            # worker's failure to start, which stopped `up`).
            assert f"port {metrics} (splitter), port {metrics + 1} (encoder)" in banner
            for offset, (service, stage) in enumerate([("splitter", "split"),
                                                       ("encoder", "encode"),
                                                       ("decoder", "measure"),
                                                       ("rebaser", "join")]):
                text = urllib.request.urlopen(f"http://127.0.0.1:{metrics + offset}/metrics",
                                              timeout=10).read().decode()
                assert (f'excamera_tasks_total{{outcome="done",service="{service}",'
                        f'stage="{stage}"}}') in text, (service, text[-2000:])
        time.sleep(1.0)
        assert names.consumer_counts()[f"{names.prefix}.encode"] == 0  # every worker stopped


def _free_ports(count: int) -> int:
    """The first of `count` consecutive ports that nothing listens on now."""
    import socket

    for _ in range(100):
        first = random.randrange(20000, 60000)
        sockets = [socket.socket() for _ in range(count)]
        try:
            for offset, held in enumerate(sockets):
                held.bind(("127.0.0.1", first + offset))
            return first
        except OSError:
            continue
        finally:
            for held in sockets:
                held.close()
    raise AssertionError("no free ports")


def test_no_service_outlives_a_killed_excamera_up(tmp_path: Path, inputs: Path) -> None:
    """SIGKILL leaves `excamera up` no chance to stop what it started: each service gets SIGTERM
    from the kernel instead (before, all five ran on, holding the port and the queues)."""
    import os
    import signal
    import sys

    from services_support import CHILD, free_port, up_banner

    if not Path("/proc/self/task").exists():
        pytest.skip("needs Linux's /proc")
    with cluster_at(tmp_path, inputs) as names:
        port = free_port()
        up = subprocess.Popen(
            [sys.executable, "-c", *CHILD, "up", f"--port={port}", f"--store={names.store_url}",
             f"--db={names.db_url}", f"--queue-prefix={names.prefix}"],
            env=names.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        services: list[int] = []
        try:
            up_banner(up)
            services += children(up.pid)
            assert len(services) == 5, services
            up.kill()
            up.wait(10)
            deadline = time.monotonic() + 40
            while any(map(alive, services)) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not any(map(alive, services)), [p for p in services if alive(p)]
            assert all(count == 0 for count in names.consumer_counts().values())
        finally:
            for group in (up.pid, *services):  # each service leads a process group
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
            up.wait(10)
