"""Claims of ready tasks in the job records (real PostgreSQL): a task is claimed once its
inputs are all done, exactly once however many finishers race for it, and a job of 3,552
chunks claims its encodes in one statement right after the split wrote its tasks."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator

import psycopg
import pytest
from services_support import drop_database, require_peers
from tcp_relay import TcpRelay

from services.records import SCHEMA_VERSION, JobOutput, JobRecords
from shared.pipeline import graph
from shared.pipeline.graph import TaskId
from shared.pipeline.stages import ChunkPlan


@pytest.fixture(scope="module")
def records() -> Iterator[JobRecords]:
    require_peers()
    name = f"excamera_records_{secrets.token_hex(4)}"
    opened = JobRecords(f"postgresql://postgres@127.0.0.1:5432/{name}")
    try:
        yield opened
    finally:
        opened.close()
        drop_database(name)


def planned_job(records: JobRecords, chunks: int) -> tuple[str, ChunkPlan]:
    job = f"j-{secrets.token_hex(12)}"
    plan = ChunkPlan(job, "in.y4m", 16, 16, (25, 1), 6, 16, (6,) * chunks)
    records.create_job(job, "owner", job, {}, None)
    records.set_plan(job, {}, graph.stage_sizes(plan), graph.tasks(plan))
    return job, plan


def claim_after(records: JobRecords, job: str, plan: ChunkPlan, done: TaskId) -> set[TaskId]:
    """What the adapter claims once `done` is recorded done."""
    records.finish_task(job, done, "w", 0.01)
    candidates = [(task, graph.dependencies(plan, task)) for task in graph.dependents(plan, done)]
    return records.claim_ready(job, candidates, graph.stage_sizes(plan))


def test_a_big_split_claims_every_encode_once(records: JobRecords) -> None:
    job, plan = planned_job(records, 3552)
    heads = [(task, graph.dependencies(plan, task)) for task in graph.tasks(plan)
             if not graph.dependencies(plan, task)]
    sizes = graph.stage_sizes(plan)
    claimed = records.claim_ready(job, heads, sizes)
    assert claimed == {TaskId("encode", i) for i in range(3552)}
    assert records.claim_ready(job, heads, sizes) == set()  # claimed: never again


def test_a_task_is_claimed_when_its_last_input_is_done(records: JobRecords) -> None:
    job, plan = planned_job(records, 20)  # groups of 16: chunk 1 follows chunk 0
    # chunk 1's exit state needs its encode only; its stage 4 also chunk 0's exit state
    assert claim_after(records, job, plan, TaskId("encode", 1)) == {TaskId("state", 1)}
    assert claim_after(records, job, plan, TaskId("encode", 0)) == {TaskId("state", 0)}
    # the group's head link needs its encode and its exit state
    assert claim_after(records, job, plan, TaskId("state", 0)) == {
        TaskId("first", 1), TaskId("rebase", 0)}
    assert claim_after(records, job, plan, TaskId("state", 0)) == set()  # a duplicate


def test_racing_finishers_claim_each_task_once(records: JobRecords) -> None:
    job, plan = planned_job(records, 64)
    encodes = [TaskId("encode", i) for i in range(64)]
    for task in encodes:
        records.finish_task(job, task, "w", 0.01)
    # Every finisher asks for every dependent of every encode at once, in opposite orders.
    candidates = [(task, graph.dependencies(plan, task))
                  for done in encodes for task in graph.dependents(plan, done)]
    results: list[set[TaskId]] = []

    def claim(order: list) -> None:
        results.append(records.claim_ready(job, order, graph.stage_sizes(plan)))

    threads = [threading.Thread(target=claim, args=(candidates[::step],))
               for step in (1, -1, 1, -1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    together = [task for result in results for task in result]
    assert len(together) == len(set(together))  # nobody claimed what another did
    # Only the exit states are ready: every chunk's but each group's last (groups of 16).
    assert set(together) == {TaskId("state", i) for i in range(64) if i % 16 != 15}


def test_opening_beside_a_live_writer_runs_no_ddl(records: JobRecords) -> None:
    """Every service process opens the records as it starts, while others write: with the
    schema current, opening must not wait for (or deadlock with) their row locks."""
    writer = psycopg.connect(records.url)
    try:
        writer.execute("LOCK TABLE excamera_progress, excamera_tasks IN ROW EXCLUSIVE MODE")
        opened: list[JobRecords] = []
        opener = threading.Thread(target=lambda: opened.append(JobRecords(records.url)),
                                  daemon=True)
        opener.start()
        opener.join(timeout=20)
        assert opened, "opening the records waited for a writer's row locks (DDL ran)"
        opened[0].close()
    finally:
        writer.rollback()
        writer.close()


def test_an_older_schema_is_upgraded_once() -> None:
    """A database made before the schema had versions (no excamera_schema, a later column
    missing) gets the columns and the version; opening again then finds it current."""
    require_peers()
    name = f"excamera_records_{secrets.token_hex(4)}"
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    JobRecords(url).close()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE excamera_schema")
            conn.execute("ALTER TABLE excamera_tasks DROP COLUMN hedged")
        JobRecords(url).close()
        with psycopg.connect(url, autocommit=True) as conn:
            hedged = conn.execute(
                "SELECT count(*) FROM information_schema.columns"
                " WHERE table_name = 'excamera_tasks' AND column_name = 'hedged'").fetchone()
            versions = conn.execute("SELECT version FROM excamera_schema").fetchall()
        assert hedged == (1,)
        assert versions == [(SCHEMA_VERSION,)]
    finally:
        drop_database(name)


def test_the_join_and_its_job_are_done_together(records: JobRecords) -> None:
    """The join is recorded done in the transaction that ends its job: no status can show a
    done job with its join still to do (as one did, between two statements), and a second
    delivery neither counts the join again nor ends the job again."""
    job, plan = planned_job(records, 2)
    join = TaskId("join", 0)
    assert join in set(graph.tasks(plan))
    output = JobOutput("outputs/x/output.ivf", {"bytes": 10})
    finished = records.finish_task(job, join, "w", 0.5, output=output, retention_seconds=60)
    assert finished == (True, "done", True)
    record = records.get_job(job)
    assert record is not None and record.state == "done" and record.result == {"bytes": 10}
    assert record.output == "outputs/x/output.ivf"
    assert records.progress(job)["join"]["done"] == records.progress(job)["join"]["total"] == 1
    again = records.finish_task(job, join, "w", 0.5, output=output, retention_seconds=60)
    assert again == (False, "done", False)
    assert records.progress(job)["join"]["done"] == 1
    # A job cancelled before its join finished stays cancelled.
    job, plan = planned_job(records, 2)
    assert records.cancel_job(job) == "cancelled"
    finished = records.finish_task(job, join, "w", 0.5, output=output, retention_seconds=60)
    assert finished.job_state == "cancelled" and not finished.ended
    assert records.get_job(job).state == "cancelled"


def test_a_health_check_of_a_database_gone_answers_at_once(records: JobRecords) -> None:
    # Before, each check waited out the pool's 30 s before saying so: longer than any load
    # balancer's health check waits.
    import time

    from services.errors import TransientError
    from services.records import PING_SECONDS

    proxy = TcpRelay(5432)
    through = JobRecords(records.url.replace(":5432/", f":{proxy.port}/"))
    try:
        through.ping()
        proxy.cut()
        began = time.monotonic()
        with pytest.raises(TransientError, match="job records unavailable"):
            through.ping()
        assert time.monotonic() - began < PING_SECONDS + 2
    finally:
        through.close()


def test_a_jobs_cost_is_priced_at_the_configured_memory(records: JobRecords) -> None:
    # The services priced every Lambda second at 1,769 MB, whatever the functions had.
    from services.config import ServiceConfig
    from services.estimate import job_estimate
    from shared.pipeline import costs

    job, _ = planned_job(records, 2)
    for task in (TaskId("encode", 0), TaskId("state", 0)):
        records.start_task(job, task, "w", 60.0)
        records.finish_task(job, task, "w", 100.0)
    base = job_estimate(records, job, ServiceConfig())["so_far"]["lambda_compute"]
    assert base == pytest.approx(2 * 100 * 1769 / 1024 * costs.LAMBDA_X86_USD_PER_GB_S,
                                 abs=1e-6)
    more = job_estimate(records, job, ServiceConfig(decoder_memory_mb=3538,
                                                    encoder_memory_mb=1024))
    assert more["so_far"]["lambda_compute"] == pytest.approx(
        100 * (3538 + 1024) / 1024 * costs.LAMBDA_X86_USD_PER_GB_S, abs=1e-6)
    assert (more["lambda_memory_mb"], more["decoder_memory_mb"]) == (1024, 3538)


def test_an_upgrade_keeps_the_ends_still_to_announce() -> None:
    """Opening a database of schema 3 upgrades it: the data step of version 2 (ends before
    events existed count as announced) ran again with every upgrade, and marked the ends still
    waiting for their post as announced, so they were never posted. Jobs of before the outbox
    count as posted."""
    require_peers()
    name = f"excamera_upgrade_{secrets.token_hex(4)}"
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    opened = JobRecords(url)
    try:
        for job, state in (("j-ended", "failed"), ("j-queued", "queued")):
            opened.create_job(job, "ingest", job, {"input": "file:///x"}, None)
            if state == "failed":
                opened.fail_job(job, "a reason")
        with psycopg.connect(url, autocommit=True) as db:  # as schema 3 left them
            db.execute("UPDATE excamera_schema SET version = 3")
            db.execute("UPDATE excamera_jobs SET posted_at = NULL, announced_at = NULL")
        opened.close()
        opened = JobRecords(url)
        assert opened.get_job("j-ended").announced_at is None  # still to be posted
        assert opened.unposted_jobs(0, 10) == []
    finally:
        opened.close()
        drop_database(name)


def test_only_the_apis_unposted_jobs_are_posted_again(records: JobRecords) -> None:
    # A job the splitter made from its ingest message (and died before claiming its split)
    # was posted again by the API's janitor, without its output.
    made = f"j-{secrets.token_hex(12)}"
    records.create_job(made, "ingest", made, {"input": "file:///x"}, "file:///out/x.ivf",
                       posted=True)
    api = f"j-{secrets.token_hex(12)}"
    records.create_job(api, "alice", api, {"input": "file:///x"}, None)
    unposted = {r.id for r in records.unposted_jobs(0, 100_000)}
    assert api in unposted and made not in unposted
    records.mark_posted(api)
    assert api not in {r.id for r in records.unposted_jobs(0, 100_000)}
