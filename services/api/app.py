"""The HTTP API's application: `create_app(config)` builds it, `serve(config, host, port)` runs
it (`excamera service api`).

Startup and shutdown are one cleanup context each (aiohttp runs the part before `yield` at
startup and the rest at cleanup, in reverse order): the context with the runtime and
executors, then the janitor, a periodic task that deletes the intermediates of ended jobs once
their retention has passed (outputs are kept), and announces the ends that were not announced
when they happened (services/events.py). Every API instance runs one; two cleaning the same
job is harmless, since deleting is idempotent, and two announcing it at once post it twice,
which the events' consumers allow for.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from aiohttp import web

from ..adapter import describe_failure, purge_job
from ..config import ServiceConfig
from ..errors import ConfigError, TransientError
from ..events import announce_missed
from .auth import TOKENS_ENV, Tokens
from .context import CONTEXT, ApiContext, Limits
from .jobs import post_unposted
from .middleware import HttpServerLog, count_response, error_middleware, metrics_middleware
from .operations import operations
from .routes import routes

__all__ = ["create_app", "serve"]

log = logging.getLogger("excamera.api")

CLEAN_BATCH = 50
CLEAN_RETRY_SECONDS = 3600.0  # a job whose purge failed is tried again this much later
_CANNOT_LISTEN = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)


def create_app(config: ServiceConfig, tokens: Tokens | None = None,
               limits: Limits | None = None) -> web.Application:
    """The API for `config`; tokens default to the environment's (EXCAMERA_API_TOKENS[_FILE]),
    limits to the defaults with the configuration's input size cap."""
    tokens = Tokens.from_env() if tokens is None else tokens
    limits = limits or Limits(max_upload_bytes=config.max_input_bytes)
    # Bodies are read by the handlers under their own caps (JSON, uploads); this one only
    # bounds anything that would read a body whole.
    app = web.Application(middlewares=[metrics_middleware, error_middleware],
                          client_max_size=limits.max_json_bytes,
                          handler_args={"keepalive_timeout": limits.connection_idle_seconds,
                                        "logger": HttpServerLog(log)})
    app.add_routes(routes)
    app.add_routes(operations)
    app.on_response_prepare.append(count_response)
    app.cleanup_ctx.append(_context(config, tokens, limits))
    app.cleanup_ctx.append(_janitor)
    return app


def _context(config: ServiceConfig, tokens: Tokens, limits: Limits
             ) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        if not tokens:
            log.warning("no API tokens are configured (%s): every request that needs one is "
                        "refused", TOKENS_ENV)
        api = ApiContext(config, tokens, limits)
        app[CONTEXT] = api
        try:
            # Fail fast on a database that is out of reach; the broker may come later
            # (publishing declares the queues first, and health reports it meanwhile).
            await api.control(lambda: api.runtime.records)
            with contextlib.suppress(TransientError):
                await api.control(api.declare_queues)
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, api.close)

    return context


async def _janitor(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_clean_periodically(app[CONTEXT]))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _clean_periodically(api: ApiContext) -> None:
    sweeps = {
        "cleaning": lambda: clean_ended_jobs(api),
        "announcing": lambda: api.control(announce_missed, api.runtime,
                                          api.limits.announce_grace_seconds),
        "posting": lambda: api.control(_post_unposted, api),
    }
    while True:
        for doing, sweep in sweeps.items():  # each on its own: S3 down must not stop posting
            try:
                await sweep()
            except TransientError as exc:
                log.warning("janitor: %s: %s; trying again later", doing, exc)
            except Exception:  # noqa: BLE001 - keep the janitor going whatever one sweep did
                log.exception("janitor: %s failed", doing)
        await asyncio.sleep(api.limits.janitor_seconds)


POST_GRACE_SECONDS = 10.0  # a submission younger than this may still be posting its own
POST_BATCH = 200


def _post_unposted(api: ApiContext) -> int:
    """The outbox: jobs recorded while the broker was down are posted once it is back."""
    if not api.runtime.records.unposted_jobs(POST_GRACE_SECONDS, 1):
        return 0
    api.declare_queues()
    posted = 0
    while batch := post_unposted(api.runtime, POST_GRACE_SECONDS, POST_BATCH):
        posted += batch
        if batch < POST_BATCH:
            break
    if posted:
        log.info("janitor: posted %d job(s) recorded while the broker was down", posted)
    return posted


async def clean_ended_jobs(api: ApiContext) -> int:
    """Delete the intermediates of ended jobs past their retention; how many jobs."""
    records = api.runtime.records
    cleaned = 0
    while jobs := await api.control(records.jobs_to_clean, CLEAN_BATCH):
        for job in jobs:
            try:
                await api.files(purge_job, api.runtime, job)
            except TransientError:
                raise  # the store is down: the whole pass waits
            except Exception as exc:  # noqa: BLE001 - this job's alone: the others go on
                # (it came first in every pass and stopped each, so no job was cleaned)
                log.error("janitor: cannot delete %s's intermediates (%s); again in %g s",
                          job, describe_failure(exc), CLEAN_RETRY_SECONDS)
                await api.control(records.postpone_cleaning, job, CLEAN_RETRY_SECONDS)
                continue
            await api.control(records.mark_cleaned, job)
            cleaned += 1
        if len(jobs) < CLEAN_BATCH:
            break
    return cleaned


def serve(config: ServiceConfig, host: str = "127.0.0.1", port: int = 8080,
          idle_seconds: float | None = None) -> None:
    """Run the API until interrupted; `idle_seconds`: Limits.connection_idle_seconds."""
    limits = Limits(max_upload_bytes=config.max_input_bytes)
    if idle_seconds is not None:
        limits = replace(limits, connection_idle_seconds=idle_seconds)
    app = create_app(config, limits=limits)
    try:
        web.run_app(app, host=host, port=port, access_log=log,
                    print=lambda _: print(f"excamera API on http://{host}:{port}", flush=True))
    except OSError as exc:  # binding: the port is taken, the host is not this machine's, ...
        if not isinstance(exc, socket.gaierror) and exc.errno not in _CANNOT_LISTEN:
            raise
        raise ConfigError(f"the API cannot listen on {host}:{port}: "
                          f"{exc.strerror or exc}") from None
