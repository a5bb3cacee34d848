"""Job records in PostgreSQL: the one truth every API instance and every worker sees, which
survives restarts of either.

Why PostgreSQL and not the store: a job's record changes with every task (start, end, worker,
attempt: two writes per task, about 14,000 tasks for the original's 3,552-chunk Sintel job), and
status must answer in milliseconds while that goes on. Objects in a store (S3 in particular)
have no atomic update and no query: counting a job's progress would mean listing thousands of
keys per request. A database gives transactional state changes (a cancel racing a finish ends
one way), counters updated with each task, unique constraints for idempotency keys, and
indexed lookups of a caller's jobs.

Tables (created on first use, in the database the URL names, which is created if missing):

    excamera_jobs      one row per job: owner, state, the request, plan, result, times
    excamera_tasks     one row per task of the graph: state, attempts, worker, times, deadline
    excamera_progress  per job and stage: how many tasks there are, and how many are done
    excamera_errors    every failed attempt, with its reason

Every method is one statement (autocommit: a round trip each), or a short transaction where
several statements must change together. `TransientError` wraps a lost connection, so the
caller retries.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple
from urllib.parse import urlparse, urlunparse

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from shared.pipeline.graph import TaskId
from shared.pipeline.messages import ENDED_STATES

from .errors import TransientError

__all__ = ["JobRecord", "JobRecords", "TERMINAL_STATES"]

DEFAULT_DB_URL = "postgresql://postgres@127.0.0.1:5432/excamera"
TERMINAL_STATES = ENDED_STATES
JOB_STATES = ("queued", "running", *TERMINAL_STATES)
MAX_ERRORS_SHOWN = 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS excamera_jobs (
    id          text PRIMARY KEY,
    owner       text NOT NULL,
    client_id   text NOT NULL,
    state       text NOT NULL,
    request     jsonb NOT NULL,
    output      text,
    plan        jsonb,
    result      jsonb,
    error       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz,
    expires_at  timestamptz,
    cleaned_at  timestamptz,
    UNIQUE (owner, client_id)
);
CREATE INDEX IF NOT EXISTS excamera_jobs_by_owner ON excamera_jobs (owner, created_at DESC);
CREATE INDEX IF NOT EXISTS excamera_jobs_to_clean ON excamera_jobs (expires_at)
    WHERE cleaned_at IS NULL;
CREATE TABLE IF NOT EXISTS excamera_tasks (
    job         text NOT NULL REFERENCES excamera_jobs (id) ON DELETE CASCADE,
    stage       text NOT NULL,
    idx         integer NOT NULL,
    state       text NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    worker      text,
    queued_at   timestamptz,
    started_at  timestamptz,
    finished_at timestamptz,
    deadline    timestamptz,
    seconds     double precision,
    PRIMARY KEY (job, stage, idx)
);
CREATE INDEX IF NOT EXISTS excamera_tasks_running ON excamera_tasks (job)
    WHERE state = 'running';
CREATE TABLE IF NOT EXISTS excamera_progress (
    job   text NOT NULL REFERENCES excamera_jobs (id) ON DELETE CASCADE,
    stage text NOT NULL,
    total integer NOT NULL,
    done  integer NOT NULL DEFAULT 0,
    PRIMARY KEY (job, stage)
);
ALTER TABLE excamera_progress ADD COLUMN IF NOT EXISTS seconds double precision NOT NULL
    DEFAULT 0;
ALTER TABLE excamera_progress ADD COLUMN IF NOT EXISTS reads bigint NOT NULL DEFAULT 0;
ALTER TABLE excamera_progress ADD COLUMN IF NOT EXISTS writes bigint NOT NULL DEFAULT 0;
ALTER TABLE excamera_tasks ADD COLUMN IF NOT EXISTS hedged boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS excamera_jobs_running ON excamera_jobs (id) WHERE state = 'running';
CREATE TABLE IF NOT EXISTS excamera_errors (
    id        bigserial PRIMARY KEY,
    job       text NOT NULL REFERENCES excamera_jobs (id) ON DELETE CASCADE,
    stage     text,
    idx       integer,
    attempt   integer,
    permanent boolean NOT NULL,
    reason    text NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS excamera_errors_by_job ON excamera_errors (job, id);
ALTER TABLE excamera_jobs ADD COLUMN IF NOT EXISTS announced_at timestamptz;
CREATE INDEX IF NOT EXISTS excamera_jobs_to_announce ON excamera_jobs (finished_at)
    WHERE announced_at IS NULL AND finished_at IS NOT NULL;
ALTER TABLE excamera_jobs ADD COLUMN IF NOT EXISTS announce_claimed_until timestamptz;
-- When the API's ingest message for the job was taken by the broker (NULL: not yet, or not
-- the API's); the API's janitor posts what is still unposted (an outbox).
ALTER TABLE excamera_jobs ADD COLUMN IF NOT EXISTS posted_at timestamptz;
CREATE INDEX IF NOT EXISTS excamera_jobs_to_post ON excamera_jobs (created_at)
    WHERE posted_at IS NULL AND state = 'queued';
"""

# Data changes that go with a version, run once, by the upgrade from below it (run with every
# upgrade, the first marked the ends still to be announced as announced).
_UPGRADES = {
    # Jobs that ended before events existed are not announced now.
    2: "UPDATE excamera_jobs SET announced_at = finished_at "
       "WHERE announced_at IS NULL AND state IN ('done', 'failed', 'cancelled')",
    # Jobs submitted before the outbox were posted (or refused): not posted again.
    4: "UPDATE excamera_jobs SET posted_at = created_at WHERE posted_at IS NULL AND "
       "state = 'queued'",
}

# The schema's version, kept in excamera_schema: raise it with every change to _SCHEMA. A
# process finding it current runs no DDL. (`ALTER TABLE ... ADD COLUMN IF NOT EXISTS` takes
# an exclusive lock even when the column exists, and deadlocked against live writers when
# every process ran the DDL as it started.)
SCHEMA_VERSION = 4  # 2: announced_at (the events queue); 3: announce_claimed_until; 4: posted_at
_SCHEMA_LOCK = 0x65786361  # pg_advisory_xact_lock key: concurrent first uses create it once


@dataclass(frozen=True)
class JobRecord:
    id: str
    owner: str
    client_id: str
    state: str
    request: dict[str, Any]
    output: str | None
    plan: dict[str, Any] | None
    result: dict[str, Any] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None
    cleaned_at: datetime | None
    announced_at: datetime | None

    @property
    def output_link(self) -> str | None:
        """Where a done job's output is read: the URL it was written to (an ingest job's own
        output), else the API's, for an output in the store."""
        if self.state != "done" or self.output is None:
            return None
        if "://" in self.output:
            return self.output
        return f"/v1/jobs/{self.id}/output"

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


def _record(row: dict[str, Any]) -> JobRecord:
    return JobRecord(**{name: row[name] for name in JobRecord.__dataclass_fields__})


@contextlib.contextmanager
def _transient() -> Iterator[None]:
    """Database trouble that a retry can fix (the server restarting, a dropped connection)
    becomes TransientError; anything else is a bug and propagates as it is."""
    try:
        yield
    except (psycopg.OperationalError, psycopg.errors.ConnectionTimeout) as exc:
        raise TransientError(f"job records unavailable: {str(exc).strip()}") from exc
    except PoolTimeout as exc:
        raise TransientError(f"job records unavailable: {exc}") from exc


def ensure_database(url: str) -> None:
    """Create the database `url` names if it does not exist (connecting to `postgres`)."""
    try:
        psycopg.connect(url, connect_timeout=10).close()
        return
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise TransientError(f"job records unavailable: {str(exc).strip()}") from exc
    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = urlunparse(parsed._replace(path="/postgres"))
    with (
        _transient(),
        psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn,
        contextlib.suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation),
    ):
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _schema_version(cur: psycopg.Cursor[Any]) -> int:
    """The version excamera_schema records; 0 before there is one (a new database, or one
    made before versions were recorded). Reads only: no lock that writers wait for."""
    cur.execute("SELECT to_regclass('excamera_schema') IS NOT NULL AS present")
    row = cur.fetchone()
    if not row or not row["present"]:
        return 0
    cur.execute("SELECT max(version) AS version FROM excamera_schema")
    row = cur.fetchone()
    return int(row["version"]) if row and row["version"] is not None else 0


@dataclass(frozen=True)
class JobOutput:
    """What a job's join made: where the output is, and its figures."""

    location: str
    result: dict[str, Any]


class Finished(NamedTuple):
    """A task recorded done: whether for the first time, its job's state afterwards, and
    whether this ended the job (its join, with the output)."""

    first: bool
    job_state: str | None
    ended: bool


def _finish_task(cur: psycopg.Cursor[Any], job: str, task: TaskId, worker: str,
                 seconds: float, reads: int, writes: int) -> tuple[bool, str | None]:
    cur.execute(
        "WITH finished AS (UPDATE excamera_tasks SET state = 'done', "
        "finished_at = now(), seconds = %(seconds)s, worker = %(worker)s "
        "WHERE job = %(job)s AND stage = %(stage)s AND idx = %(idx)s "
        "AND state <> 'done' RETURNING stage), "
        "counted AS (UPDATE excamera_progress SET done = done + 1, "
        "seconds = seconds + %(seconds)s, reads = reads + %(reads)s, "
        "writes = writes + %(writes)s WHERE job = %(job)s "
        "AND stage IN (SELECT stage FROM finished) RETURNING 1) "
        "SELECT (SELECT count(*) FROM finished) AS first, (SELECT count(*) FROM "
        "counted) AS counted, (SELECT state FROM excamera_jobs WHERE id = %(job)s) "
        "AS job_state",
        {"job": job, "stage": task.stage, "idx": task.index, "worker": worker,
         "seconds": seconds, "reads": reads, "writes": writes},
    )
    row = cur.fetchone()
    assert row is not None
    return bool(row["first"]), row["job_state"]


def _finish_job(cur: psycopg.Cursor[Any], job: str, output: JobOutput,
                retention_seconds: float) -> bool:
    cur.execute(
        "UPDATE excamera_jobs SET state = 'done', output = %s, result = %s, "
        "finished_at = now(), expires_at = now() + make_interval(secs => %s) "
        "WHERE id = %s AND state NOT IN ('done', 'failed', 'cancelled') RETURNING id",
        (output.location, json.dumps(output.result), retention_seconds, job),
    )
    return cur.fetchone() is not None


PING_SECONDS = 3.0


class JobRecords:
    """Job and task records; thread-safe (a small pool of connections)."""

    def __init__(self, url: str = DEFAULT_DB_URL, *, pool_size: int = 4) -> None:
        self.url = url
        with _transient():
            ensure_database(url)
            self._pool = ConnectionPool(
                url, min_size=1, max_size=pool_size, open=True, timeout=30,
                kwargs={"row_factory": dict_row, "connect_timeout": 10, "autocommit": True},
                check=ConnectionPool.check_connection,
            )
        self._lock = threading.Lock()
        self._ensure_schema()

    def _ensure_schema(self) -> None:
        """Create or upgrade the tables unless the database already has this version's."""
        with self._tx() as cur:
            if _schema_version(cur) >= SCHEMA_VERSION:
                return
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            if (version := _schema_version(cur)) >= SCHEMA_VERSION:  # another process did it
                return
            cur.execute(_SCHEMA)
            for step, statement in sorted(_UPGRADES.items()):
                if version < step:
                    cur.execute(statement)
            cur.execute("CREATE TABLE IF NOT EXISTS excamera_schema (version integer NOT NULL)")
            cur.execute("DELETE FROM excamera_schema")
            cur.execute("INSERT INTO excamera_schema (version) VALUES (%s)", (SCHEMA_VERSION,))

    def close(self) -> None:
        self._pool.close()

    def __repr__(self) -> str:
        parsed = urlparse(self.url)
        return f"JobRecords({parsed.hostname}:{parsed.port or 5432}{parsed.path})"

    @contextlib.contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor[Any]]:
        """A transaction, for the few changes of several statements that must be atomic."""
        with (
            _transient(),
            self._pool.connection() as conn,
            conn.transaction(),
            conn.cursor() as cur,
        ):
            yield cur

    @contextlib.contextmanager
    def _one(self) -> Iterator[psycopg.Cursor[Any]]:
        """Statements each atomic on its own (autocommit: one round trip each, where a
        transaction block would add a BEGIN and a COMMIT: the per-task path is three)."""
        with _transient(), self._pool.connection() as conn, conn.cursor() as cur:
            yield cur

    def ping(self) -> None:
        """One round trip to the database (health checks); TransientError if it is down,
        within PING_SECONDS: a load balancer's check must not wait out the pool's timeout."""
        with (_transient(), self._pool.connection(timeout=PING_SECONDS) as conn,
              conn.cursor() as cur):
            cur.execute("SELECT 1")

    # ------------------------------------------------------------------ jobs

    def create_job(
        self, job: str, owner: str, client_id: str, request: dict[str, Any], output: str | None,
        *, posted: bool = False,
    ) -> tuple[JobRecord, bool]:
        """The job for (owner, client_id): made now (True), or the one made before (False).
        `posted`: made from its ingest message (the splitter's), so none is to be posted."""
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO excamera_jobs (id, owner, client_id, state, request, output, "
                "posted_at) VALUES (%s, %s, %s, 'queued', %s, %s, CASE WHEN %s THEN now() END) "
                "ON CONFLICT DO NOTHING RETURNING *",
                (job, owner, client_id, json.dumps(request), output, posted),
            )
            row = cur.fetchone()
            if row is not None:
                # The split is the one task that exists before the plan.
                cur.execute("INSERT INTO excamera_tasks (job, stage, idx, state) "
                            "VALUES (%s, 'split', 0, 'waiting')", (job,))
                cur.execute("INSERT INTO excamera_progress (job, stage, total) "
                            "VALUES (%s, 'split', 1)", (job,))
                return _record(row), True
            cur.execute("SELECT * FROM excamera_jobs WHERE owner = %s AND client_id = %s",
                        (owner, client_id))
            row = cur.fetchone()
            if row is None:  # the id exists under another owner: ids are owner-derived
                raise ValueError(f"job {job} exists for another owner")
            return _record(row), False

    def get_job(self, job: str) -> JobRecord | None:
        with self._one() as cur:
            cur.execute("SELECT * FROM excamera_jobs WHERE id = %s", (job,))
            row = cur.fetchone()
        return None if row is None else _record(row)

    def job_state(self, job: str) -> str | None:
        with self._one() as cur:
            cur.execute("SELECT state FROM excamera_jobs WHERE id = %s", (job,))
            row = cur.fetchone()
        return None if row is None else row["state"]

    def list_jobs(self, owner: str, limit: int = 100, offset: int = 0,
                  state: str | None = None) -> list[JobRecord]:
        """The owner's jobs, newest first; only those in `state`, if given."""
        with self._one() as cur:
            cur.execute(
                "SELECT * FROM excamera_jobs WHERE owner = %s AND (%s::text IS NULL OR "
                "state = %s) ORDER BY created_at DESC, id LIMIT %s OFFSET %s",
                (owner, state, state, limit, offset),
            )
            return [_record(row) for row in cur.fetchall()]

    def count_jobs_by_state(self) -> dict[str, int]:
        with self._one() as cur:
            cur.execute("SELECT state, count(*) AS n FROM excamera_jobs GROUP BY state")
            return {row["state"]: row["n"] for row in cur.fetchall()}

    def start_job(self, job: str) -> bool:
        """queued -> running; False if the job has ended (cancelled, say)."""
        with self._one() as cur:
            cur.execute(
                "UPDATE excamera_jobs SET state = 'running', started_at = coalesce(started_at, "
                "now()) WHERE id = %s AND state IN ('queued', 'running') RETURNING id", (job,),
            )
            return cur.fetchone() is not None

    def set_plan(
        self, job: str, plan: dict[str, Any], sizes: dict[str, int], tasks: Iterable[TaskId]
    ) -> None:
        """Record the split's plan and every task it implies (once; a repeat changes nothing)."""
        with self._tx() as cur:
            cur.execute("SELECT plan IS NOT NULL AS planned FROM excamera_jobs WHERE id = %s "
                        "FOR UPDATE", (job,))
            row = cur.fetchone()
            if row is None or row["planned"]:
                return
            cur.execute("UPDATE excamera_jobs SET plan = %s WHERE id = %s",
                        (json.dumps(plan), job))
            cur.executemany(
                "INSERT INTO excamera_progress (job, stage, total) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING", [(job, stage, total) for stage, total in sizes.items()],
            )
            with cur.copy("COPY excamera_tasks (job, stage, idx, state) FROM STDIN") as copy:
                for task in tasks:
                    copy.write_row((job, task.stage, task.index, "waiting"))

    def finish_job(
        self, job: str, output: str, result: dict[str, Any], retention_seconds: float
    ) -> bool:
        """running -> done, with the output's location and figures; intermediates expire
        after `retention_seconds`. False if the job had already ended."""
        with self._one() as cur:
            return _finish_job(cur, job, JobOutput(output, result), retention_seconds)

    def fail_job(self, job: str, reason: str, retention_seconds: float = 0.0) -> bool:
        """-> failed with `reason` (the first failure wins); False if it had already ended."""
        with self._one() as cur:
            cur.execute(
                "UPDATE excamera_jobs SET state = 'failed', error = %s, finished_at = now(), "
                "expires_at = now() + make_interval(secs => %s) "
                "WHERE id = %s AND state NOT IN ('done', 'failed', 'cancelled') RETURNING id",
                (reason, retention_seconds, job),
            )
            return cur.fetchone() is not None

    def cancel_job(self, job: str) -> str | None:
        """-> cancelled unless it has ended; its waiting and queued tasks will not run.
        Returns the job's state afterwards (None: no such job)."""
        with self._tx() as cur:
            cur.execute(
                "UPDATE excamera_jobs SET state = 'cancelled', finished_at = now(), "
                "expires_at = now() WHERE id = %s AND state IN ('queued', 'running') "
                "RETURNING state", (job,),
            )
            row = cur.fetchone()
            if row is not None:
                cur.execute("UPDATE excamera_tasks SET state = 'cancelled' WHERE job = %s AND "
                            "state IN ('waiting', 'queued')", (job,))
                return "cancelled"
            cur.execute("SELECT state FROM excamera_jobs WHERE id = %s", (job,))
            row = cur.fetchone()
            return None if row is None else row["state"]

    def claim_ends_to_announce(self, grace_seconds: float, claim_seconds: float,
                               limit: int = 50) -> list[str]:
        """Jobs that ended more than `grace_seconds` ago and whose end is not announced (the
        process that ended them could not reach the broker, or died first), claimed for
        `claim_seconds` in one statement: of several processes sweeping at once, each gets
        other jobs, and a claim whose holder died runs out."""
        with self._one() as cur:
            cur.execute(
                "UPDATE excamera_jobs SET announce_claimed_until = now() + make_interval("
                "secs => %(claim)s) WHERE id IN (SELECT id FROM excamera_jobs WHERE announced_at "
                "IS NULL AND finished_at IS NOT NULL AND finished_at < now() - make_interval("
                "secs => %(grace)s) AND (announce_claimed_until IS NULL OR "
                "announce_claimed_until < now()) ORDER BY finished_at LIMIT %(limit)s FOR UPDATE "
                "SKIP LOCKED) RETURNING id",
                {"claim": claim_seconds, "grace": grace_seconds, "limit": limit},
            )
            return [row["id"] for row in cur.fetchall()]

    def mark_announced(self, job: str) -> None:
        with self._one() as cur:
            cur.execute("UPDATE excamera_jobs SET announced_at = now() WHERE id = %s", (job,))

    def jobs_to_clean(self, limit: int = 50) -> list[str]:
        """Ended jobs whose intermediates are past their retention and not deleted yet."""
        with self._one() as cur:
            cur.execute(
                "SELECT id FROM excamera_jobs WHERE cleaned_at IS NULL AND expires_at <= now() "
                "ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED", (limit,),
            )
            return [row["id"] for row in cur.fetchall()]

    def postpone_cleaning(self, job: str, seconds: float) -> None:
        """Try `job`'s clean-up again `seconds` from now (it failed: the others go first)."""
        with self._one() as cur:
            cur.execute("UPDATE excamera_jobs SET expires_at = now() + make_interval(secs => %s) "
                        "WHERE id = %s AND cleaned_at IS NULL", (seconds, job))

    def mark_posted(self, job: str) -> None:
        """The job's ingest message was taken by the broker."""
        with self._one() as cur:
            cur.execute("UPDATE excamera_jobs SET posted_at = now() WHERE id = %s AND "
                        "posted_at IS NULL", (job,))

    def unposted_jobs(self, older_than_seconds: float, limit: int) -> list[JobRecord]:
        """Queued jobs whose ingest message the broker never took (it was down when they
        were submitted) and whose split nobody has claimed, oldest first."""
        with self._one() as cur:
            cur.execute(
                "SELECT j.* FROM excamera_jobs j JOIN excamera_tasks t ON t.job = j.id AND "
                "t.stage = 'split' AND t.idx = 0 WHERE j.posted_at IS NULL AND "
                "j.state = 'queued' AND t.state = 'waiting' AND j.created_at < now() - "
                "make_interval(secs => %s) ORDER BY j.created_at LIMIT %s",
                (older_than_seconds, limit),
            )
            return [_record(row) for row in cur.fetchall()]

    def mark_cleaned(self, job: str) -> None:
        with self._one() as cur:
            cur.execute("UPDATE excamera_jobs SET cleaned_at = now() WHERE id = %s", (job,))

    def delete_job(self, job: str) -> None:
        """Forget a job entirely (tests and operators; its rows go with it)."""
        with self._one() as cur:
            cur.execute("DELETE FROM excamera_jobs WHERE id = %s", (job,))

    # ------------------------------------------------------------------ tasks

    def start_task(self, job: str, task: TaskId, worker: str, deadline_seconds: float
                   ) -> tuple[str | None, int]:
        """Record that `worker` starts `task`, in one statement: returns the job's state
        (None: no such job) and which attempt this is (1 first; 0 when the task is done
        already, a duplicate delivery, or the job has ended; -1 when the job has no such task:
        nothing is recorded then)."""
        with self._one() as cur:
            cur.execute(
                "WITH job AS (SELECT state FROM excamera_jobs WHERE id = %(job)s), "
                "started AS (UPDATE excamera_tasks SET state = 'running', "
                "attempts = attempts + 1, worker = %(worker)s, started_at = now(), "
                "deadline = now() + make_interval(secs => %(deadline)s) "
                "WHERE job = %(job)s AND stage = %(stage)s AND idx = %(idx)s "
                "AND state <> 'done' AND (SELECT state FROM job) IN ('queued', 'running') "
                "RETURNING attempts) "
                "SELECT (SELECT state FROM job) AS job_state, "
                "(SELECT attempts FROM started) AS attempts, EXISTS (SELECT 1 FROM "
                "excamera_tasks WHERE job = %(job)s AND stage = %(stage)s AND idx = %(idx)s) "
                "AS known",
                {"job": job, "stage": task.stage, "idx": task.index, "worker": worker,
                 "deadline": deadline_seconds},
            )
            row = cur.fetchone()
        assert row is not None
        if row["attempts"] is not None:
            return row["job_state"], row["attempts"]
        return row["job_state"], 0 if row["known"] else -1

    def running_for(self, job: str, task: TaskId, longest: float) -> float:
        """Seconds until `task`, if it is running now, passes its deadline or has run
        `longest` seconds (what its runner can run at most), else 0."""
        with self._one() as cur:
            cur.execute(
                "SELECT extract(epoch FROM least(deadline, started_at + make_interval(secs "
                "=> %s)) - now()) AS left FROM excamera_tasks WHERE job = %s AND stage = %s "
                "AND idx = %s AND state = 'running'", (longest, job, task.stage, task.index),
            )
            row = cur.fetchone()
        return 0.0 if row is None else max(0.0, float(row["left"]))

    def abandon_task(self, job: str, task: TaskId) -> None:
        """-> cancelled, unless done: a delivery of `task` found its job ended (a retry of
        it, say), so it will never run and must not show as running for ever."""
        with self._one() as cur:
            cur.execute(
                "UPDATE excamera_tasks SET state = 'cancelled' WHERE job = %s AND stage = %s "
                "AND idx = %s AND state IN ('waiting', 'queued', 'running')",
                (job, task.stage, task.index),
            )

    def uncount_attempt(self, job: str, task: TaskId, worker: str | None = None) -> None:
        """Take back the attempt `start_task` counted, for one that ended in a transient
        failure and will be retried: `attempts` counts deliveries that never reported back
        (crashes, kills), against max_attempts; the retries have a bound of their own. With
        the `worker` that ran it, the task is queued again, not running: nobody runs it
        until the retry comes (a queued copy must not wait for it)."""
        with self._one() as cur:
            cur.execute(
                "UPDATE excamera_tasks SET attempts = attempts - 1, state = CASE WHEN "
                "state = 'running' AND worker = %(worker)s THEN 'queued' ELSE state END, "
                "deadline = CASE WHEN state = 'running' AND worker = %(worker)s THEN NULL "
                "ELSE deadline END WHERE job = %(job)s AND stage = %(stage)s AND "
                "idx = %(idx)s AND state <> 'done' AND attempts > 0",
                {"job": job, "stage": task.stage, "idx": task.index, "worker": worker},
            )

    def finish_task(self, job: str, task: TaskId, worker: str, seconds: float,
                    reads: int = 0, writes: int = 0, *, output: JobOutput | None = None,
                    retention_seconds: float = 0.0) -> Finished:
        """Record `task` as done (its output is stored), with the time and store requests it
        took: whether this was the first time, and the job's state now (a cancel may have come
        meanwhile). With the job's `output` (the join's), the job is done in the same
        transaction, so that no status shows a done job with a task still to do."""
        if output is None:
            with self._one() as cur:
                first, state = _finish_task(cur, job, task, worker, seconds, reads, writes)
            return Finished(first, state, ended=False)
        with self._tx() as cur:
            first, state = _finish_task(cur, job, task, worker, seconds, reads, writes)
            ended = state not in ENDED_STATES and _finish_job(cur, job, output,
                                                              retention_seconds)
        return Finished(first, "done" if ended else state, ended)

    def stage_use(self, job: str) -> dict[str, dict[str, float]]:
        """Per stage: tasks in all, done, and the summed seconds, store reads and writes of
        those done (what the job's cost is estimated from)."""
        with self._one() as cur:
            cur.execute("SELECT stage, total, done, seconds, reads, writes FROM "
                        "excamera_progress WHERE job = %s", (job,))
            return {row["stage"]: {key: row[key] for key in
                                   ("total", "done", "seconds", "reads", "writes")}
                    for row in cur.fetchall()}

    def claim_ready(self, job: str, candidates: list[tuple[TaskId, tuple[TaskId, ...]]],
                    stage_sizes: dict[str, int], *, recovering: bool = False) -> set[TaskId]:
        """Of `candidates` (each with the tasks it depends on), claim those whose dependencies
        are all done and that were never published (`recovering`: or that were published but
        never began), marking them queued; returns them. One statement for the usual few;
        where a candidate depends on every task of a stage (the join), the stage's counter
        answers, so its cost does not grow with the chunk count."""
        wanted = "('waiting', 'queued')" if recovering else "('waiting')"
        claimed: set[TaskId] = set()
        pairs: list[tuple[str, int, str, int]] = []
        fan_in: list[tuple[TaskId, str]] = []
        for task, deps in candidates:
            stages = {dep.stage for dep in deps}
            if len(stages) == 1 and len(deps) == stage_sizes.get(next(iter(stages))) > 16:
                fan_in.append((task, next(iter(stages))))
            elif not deps:
                pairs.append((task.stage, task.index, "", -1))
            else:
                pairs.extend((task.stage, task.index, d.stage, d.index) for d in deps)
        with self._one() as cur:
            if pairs:
                cur.execute(
                    "WITH want AS (SELECT * FROM unnest(%(cs)s::text[], %(ci)s::int[], "
                    "%(ds)s::text[], %(di)s::int[]) AS w(cstage, cidx, dstage, didx)), "
                    # Every lookup by primary key, one row at a time (a correlated subquery,
                    # a LATERAL one that locks): right after the split's COPY the planner's
                    # statistics say a job has a few dozen tasks, and a join it then picks
                    # scans all of the job's tasks per candidate (17 s for 3,552 chunks).
                    "met AS (SELECT w.cstage, w.cidx, w.didx < 0 OR coalesce((SELECT d.state "
                    "= 'done' FROM excamera_tasks d WHERE d.job = %(job)s AND d.stage = "
                    "w.dstage AND d.idx = w.didx), false) AS ok FROM want w), "
                    "ready AS (SELECT cstage, cidx FROM met GROUP BY cstage, cidx "
                    "HAVING bool_and(ok) ORDER BY cstage, cidx), "
                    # Rows locked in one order, and none another claim holds: two claims of
                    # overlapping tasks never deadlock (the other one publishes those).
                    "locked AS (SELECT l.stage, l.idx FROM ready CROSS JOIN LATERAL ("
                    "SELECT t.stage, t.idx FROM excamera_tasks t WHERE t.job = %(job)s AND "
                    f"t.stage = ready.cstage AND t.idx = ready.cidx AND t.state IN {wanted} "
                    "FOR UPDATE OF t SKIP LOCKED) l) "
                    "UPDATE excamera_tasks t SET state = 'queued', "
                    "queued_at = coalesce(t.queued_at, now()) FROM locked "
                    "WHERE t.job = %(job)s AND t.stage = locked.stage AND t.idx = locked.idx "
                    "RETURNING t.stage, t.idx",
                    {"job": job, "cs": [p[0] for p in pairs], "ci": [p[1] for p in pairs],
                     "ds": [p[2] for p in pairs], "di": [p[3] for p in pairs]},
                )
                claimed |= {TaskId(row["stage"], row["idx"]) for row in cur.fetchall()}
            for task, stage in fan_in:
                cur.execute(
                    "UPDATE excamera_tasks SET state = 'queued', queued_at = coalesce("
                    "queued_at, now()) WHERE job = %(job)s AND stage = %(stage)s AND "
                    f"idx = %(idx)s AND state IN {wanted} AND (SELECT done >= total FROM "
                    "excamera_progress WHERE job = %(job)s AND stage = %(dep)s) "
                    "RETURNING stage, idx",
                    {"job": job, "stage": task.stage, "idx": task.index, "dep": stage},
                )
                claimed |= {TaskId(row["stage"], row["idx"]) for row in cur.fetchall()}
        return claimed

    def running_jobs(self, limit: int = 1000) -> list[str]:
        with self._one() as cur:
            cur.execute("SELECT id FROM excamera_jobs WHERE state = 'running' LIMIT %s",
                        (limit,))
            return [row["id"] for row in cur.fetchall()]

    def stragglers(self, job: str, stages: tuple[str, ...], *, slowdown: float,
                   min_seconds: float, min_peers: int) -> list[TaskId]:
        """Running, unhedged tasks of `stages` that have run longer than `slowdown` times
        their stage's median (of at least `min_peers` finished ones) and `min_seconds`."""
        with self._one() as cur:
            cur.execute("SELECT 1 FROM excamera_tasks WHERE job = %s AND state = 'running' "
                        "AND started_at < now() - make_interval(secs => %s) LIMIT 1",
                        (job, min_seconds))
            if cur.fetchone() is None:  # the usual case, answered from the partial index
                return []
            cur.execute(
                "WITH peers AS (SELECT stage, percentile_cont(0.5) WITHIN GROUP "
                "(ORDER BY seconds) AS median, count(*) AS n FROM excamera_tasks "
                "WHERE job = %(job)s AND state = 'done' AND stage = ANY(%(stages)s) "
                "GROUP BY stage) "
                "SELECT t.stage, t.idx FROM excamera_tasks t "
                "JOIN peers ON peers.stage = t.stage "
                "WHERE t.job = %(job)s AND t.state = 'running' AND NOT t.hedged "
                "AND peers.n >= %(peers)s AND now() - t.started_at > make_interval(secs => "
                "greatest(%(min)s, %(slowdown)s * peers.median))",
                {"job": job, "stages": list(stages), "peers": min_peers, "min": min_seconds,
                 "slowdown": slowdown},
            )
            return [TaskId(row["stage"], row["idx"]) for row in cur.fetchall()]

    def claim_hedges(self, job: str, tasks: list[TaskId]) -> set[TaskId]:
        """Mark `tasks` hedged (once each, whoever asks first); returns those marked now."""
        return self._select_tasks(
            "UPDATE excamera_tasks t SET hedged = true FROM unnest(%s::text[], %s::int[]) "
            "AS want(stage, idx) WHERE t.job = %s AND t.stage = want.stage AND "
            "t.idx = want.idx AND t.state = 'running' AND NOT t.hedged "
            "RETURNING t.stage, t.idx", job, tasks)

    def record_error(self, job: str, reason: str) -> None:
        """A reason about the job as a whole (not one task), shown with its errors."""
        with self._one() as cur:
            cur.execute("INSERT INTO excamera_errors (job, permanent, reason) SELECT %s, true, "
                        "%s WHERE EXISTS (SELECT 1 FROM excamera_jobs WHERE id = %s)",
                        (job, reason, job))

    def fail_task(self, job: str, task: TaskId, reason: str, *, attempt: int,
                  permanent: bool) -> None:
        """Record a failed attempt; a permanent failure also marks the task failed."""
        with self._one() as cur:
            cur.execute(
                "INSERT INTO excamera_errors (job, stage, idx, attempt, permanent, reason) "
                "SELECT %s, %s, %s, %s, %s, %s WHERE EXISTS "
                "(SELECT 1 FROM excamera_jobs WHERE id = %s)",
                (job, task.stage, task.index, attempt, permanent, reason, job),
            )
            state = "failed" if permanent else "queued"
            cur.execute(
                "UPDATE excamera_tasks SET state = %s WHERE job = %s AND stage = %s AND idx = %s "
                "AND state <> 'done'", (state, job, task.stage, task.index),
            )

    def claim(self, job: str, tasks: Iterable[TaskId]) -> set[TaskId]:
        """Mark those of `tasks` never published yet as queued, atomically, and return them:
        of two racers, exactly one gets each task to publish."""
        return self._select_tasks(
            "UPDATE excamera_tasks t SET state = 'queued', queued_at = now() FROM "
            "unnest(%s::text[], %s::int[]) AS want(stage, idx) WHERE t.job = %s AND "
            "t.stage = want.stage AND t.idx = want.idx AND t.state = 'waiting' "
            "RETURNING t.stage, t.idx", job, tasks)

    def finished(self, job: str, tasks: Iterable[TaskId]) -> set[TaskId]:
        """Those of `tasks` that are done."""
        return self._select_tasks(
            "SELECT t.stage, t.idx FROM excamera_tasks t JOIN unnest(%s::text[], %s::int[]) "
            "AS want(stage, idx) ON t.stage = want.stage AND t.idx = want.idx "
            "WHERE t.job = %s AND t.state = 'done'", job, tasks)

    def unstarted(self, job: str, tasks: Iterable[TaskId]) -> set[TaskId]:
        """Those of `tasks` not started yet: never published, or published but not begun."""
        return self._select_tasks(
            "SELECT t.stage, t.idx FROM excamera_tasks t JOIN unnest(%s::text[], %s::int[]) "
            "AS want(stage, idx) ON t.stage = want.stage AND t.idx = want.idx "
            "WHERE t.job = %s AND t.state IN ('waiting', 'queued')", job, tasks)

    def _select_tasks(self, query: str, job: str, tasks: Iterable[TaskId]) -> set[TaskId]:
        tasks = list(tasks)
        if not tasks:
            return set()
        with self._one() as cur:
            cur.execute(query, ([t.stage for t in tasks], [t.index for t in tasks], job))
            return {TaskId(row["stage"], row["idx"]) for row in cur.fetchall()}

    def is_done(self, job: str, task: TaskId) -> bool:
        with self._one() as cur:
            cur.execute("SELECT state = 'done' AS ok FROM excamera_tasks WHERE job = %s AND "
                        "stage = %s AND idx = %s", (job, task.stage, task.index))
            row = cur.fetchone()
            return row is not None and row["ok"]

    # ------------------------------------------------------------------ status

    def progress(self, job: str) -> dict[str, dict[str, Any]]:
        """Per stage: tasks in all, done, running (and of those, past their deadline),
        failed, and the stage's first start, last end and summed task time."""
        with self._one() as cur:
            cur.execute("SELECT stage, total, done FROM excamera_progress WHERE job = %s",
                        (job,))
            totals = {row["stage"]: row for row in cur.fetchall()}
            cur.execute(
                "SELECT stage, count(*) FILTER (WHERE state = 'running') AS running, "
                "count(*) FILTER (WHERE state = 'running' AND deadline < now()) AS overdue, "
                "count(*) FILTER (WHERE state = 'failed') AS failed, "
                "count(*) FILTER (WHERE state = 'queued') AS queued, "
                "sum(attempts) AS attempts, min(started_at) AS first_start, "
                "max(finished_at) AS last_end, sum(seconds) AS busy "
                "FROM excamera_tasks WHERE job = %s GROUP BY stage", (job,),
            )
            counts = {row["stage"]: row for row in cur.fetchall()}
        progress = {}
        for stage, row in totals.items():
            extra = counts.get(stage, {})
            progress[stage] = {
                "total": row["total"],
                "done": row["done"],
                "queued": int(extra.get("queued") or 0),
                "running": int(extra.get("running") or 0),
                "overdue": int(extra.get("overdue") or 0),
                "failed": int(extra.get("failed") or 0),
                "attempts": int(extra.get("attempts") or 0),
                "first_start": _iso(extra.get("first_start")),
                "last_end": _iso(extra.get("last_end")),
                "busy_seconds": round(float(extra.get("busy") or 0.0), 3),
            }
        return progress

    def errors(self, job: str, limit: int = MAX_ERRORS_SHOWN) -> list[dict[str, Any]]:
        with self._one() as cur:
            cur.execute(
                "SELECT stage, idx, attempt, permanent, reason, at FROM excamera_errors "
                "WHERE job = %s ORDER BY id DESC LIMIT %s", (job, limit),
            )
            rows = cur.fetchall()
        return [
            {"stage": row["stage"], "index": row["idx"], "attempt": row["attempt"],
             "permanent": row["permanent"], "reason": row["reason"], "at": _iso(row["at"])}
            for row in reversed(rows)
        ]

    def overdue(self, job: str, limit: int = MAX_ERRORS_SHOWN) -> list[dict[str, Any]]:
        """Running tasks past their deadline: what a stuck job is waiting for."""
        with self._one() as cur:
            cur.execute(
                "SELECT stage, idx, worker, attempts, started_at, deadline FROM excamera_tasks "
                "WHERE job = %s AND state = 'running' AND deadline < now() "
                "ORDER BY deadline LIMIT %s", (job, limit),
            )
            rows = cur.fetchall()
        return [
            {"stage": row["stage"], "index": row["idx"], "worker": row["worker"],
             "attempt": row["attempts"], "started_at": _iso(row["started_at"]),
             "deadline": _iso(row["deadline"])}
            for row in rows
        ]

    def tasks(self, job: str, stage: str | None = None, offset: int = 0,
              limit: int = 1000) -> list[dict[str, Any]]:
        """Per-task timings: state, attempts, worker, start, end, seconds."""
        with self._one() as cur:
            cur.execute(
                "SELECT stage, idx, state, attempts, worker, queued_at, started_at, "
                "finished_at, seconds FROM excamera_tasks WHERE job = %s "
                "AND (%s::text IS NULL OR stage = %s) ORDER BY stage, idx OFFSET %s LIMIT %s",
                (job, stage, stage, offset, limit),
            )
            rows = cur.fetchall()
        return [
            {"stage": row["stage"], "index": row["idx"], "state": row["state"],
             "attempts": row["attempts"], "worker": row["worker"],
             "queued_at": _iso(row["queued_at"]), "started_at": _iso(row["started_at"]),
             "finished_at": _iso(row["finished_at"]), "seconds": row["seconds"]}
            for row in rows
        ]

    def active_task_count(self, job: str) -> int:
        """Tasks running now (a cancelled job's stragglers, say)."""
        with self._one() as cur:
            cur.execute("SELECT count(*) AS n FROM excamera_tasks WHERE job = %s AND "
                        "state = 'running'", (job,))
            row = cur.fetchone()
            return 0 if row is None else row["n"]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
