"""`excamera service NAME` runs one service; `excamera up` runs them all, for a quick start.

    excamera service api       [--port 8080] [--host 127.0.0.1] [--idle-timeout S]  the HTTP API
    excamera service splitter  [--concurrency N]   ingest queue -> chunks, encode tasks
    excamera service encoder   [--concurrency N]   phase 1 (libvpx) and stage 4
    excamera service decoder   [--concurrency N]   exit states; each group's check
    excamera service rebaser   [--concurrency N]   stage 5 in order per group; the join
    excamera up [--port 8080]                      the API and one of each worker

Every service takes --broker, --store, --db and the operator's --allow-input/--allow-output
prefixes (or their EXCAMERA_* variables; see services/config.py). Scale a service by running
more of it, on any machine that reaches the broker, the store and the database.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import logging
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from shared.cli import positive_int

from .config import API_IDLE_SECONDS

SERVICES = ("api", "splitter", "encoder", "decoder", "rebaser")
WORKERS = ("splitter", "encoder", "decoder", "rebaser")
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"

log = logging.getLogger("excamera.services")

# How a child of `excamera up` runs the command: `-c` with the current directory dropped from
# sys.path, so a shared/ folder there is never imported instead of the installed package.
_CHILD = ("import sys; del sys.path[0]; from shared.console import main; sys.exit(main())",)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"{text} must be more than 0 and at most 86400 seconds")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (1-65535)")
    return value


def add_common_arguments(parser: argparse.ArgumentParser,
                         metrics_help: str = "serve Prometheus metrics on this port (workers; "
                                             "the API serves /metrics itself)") -> None:
    parser.add_argument("--broker", help="broker URL (amqp://...; default: local RabbitMQ, "
                                         "or EXCAMERA_BROKER)")
    parser.add_argument("--store", help="store URL (file:///dir; default "
                                        "~/.local/share/excamera/store, or EXCAMERA_STORE)")
    parser.add_argument("--db", help="job records, a PostgreSQL URL (default: local, database "
                                     "excamera; or EXCAMERA_DB)")
    parser.add_argument("--queue-prefix", help="names of the queues (default excamera)")
    parser.add_argument("--allow-input", action="append", metavar="PREFIX",
                        help="a URL prefix jobs may read inputs from (repeatable), e.g. "
                             "file:///srv/video/ or https://media.example.com/")
    parser.add_argument("--allow-output", action="append", metavar="PREFIX",
                        help="a URL prefix ingest jobs may write outputs to (repeatable)")
    parser.add_argument("--allow-private-networks", action="store_true", default=None,
                        help="let input URLs reach loopback and private addresses (test rigs, "
                             "trusted networks only)")
    parser.add_argument("--retention", type=float, metavar="SECONDS",
                        help="delete an ended job's intermediates this long after it ends "
                             "(default 3600; outputs are kept)")
    parser.add_argument("--metrics-port", type=_port, metavar="PORT", help=metrics_help)
    parser.add_argument("-v", "--verbose", action="store_true", help="log each task")


def add_service_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "service", help="run one of the services (api, splitter, encoder, decoder, rebaser)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", choices=SERVICES)
    add_common_arguments(parser)
    parser.add_argument("--concurrency", type=positive_int, default=None, metavar="N",
                        help="worker processes (default: the number of cores; rebaser: 1)")
    parser.add_argument("--port", type=_port, default=None, help="the API's port (default 8080)")
    parser.add_argument("--host", default=None, help="the API's address (default 127.0.0.1)")
    parser.add_argument("--idle-timeout", type=_seconds, default=None, metavar="S",
                        help="the API closes a connection that completes no request's headers "
                             f"for S seconds (default {API_IDLE_SECONDS:g}); behind a load "
                             "balancer, more than the balancer's own idle timeout")
    parser.set_defaults(run=run_service)


def add_up_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "up", help="run the API and one of each worker on this machine (a quick start)",
        description="Start the API and one process of each worker service, print the API's "
                    "URL and an example, and stop them all on Ctrl-C (or when this "
                    "process ends in any way).",
    )
    add_common_arguments(parser, metrics_help="serve the workers' Prometheus metrics on "
                                              "PORT (splitter) to PORT+3 (encoder, decoder, "
                                              "rebaser); the API serves /metrics itself")
    parser.add_argument("--port", type=_port, default=8080, help="the API's port (default 8080)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--concurrency", type=positive_int, default=None, metavar="N",
                        help="processes of the encoder (default: the number of cores)")
    parser.set_defaults(run=run_up)


def config_from(args: argparse.Namespace) -> Any:
    from .config import ServiceConfig

    allow_input = tuple(args.allow_input) if args.allow_input else None
    allow_output = tuple(args.allow_output) if args.allow_output else None
    return ServiceConfig.from_env(
        broker=args.broker, store=args.store, db=args.db, queue_prefix=args.queue_prefix,
        allow_input=allow_input, allow_output=allow_output,
        allow_private_networks=args.allow_private_networks,
        retention_seconds=args.retention, metrics_port=args.metrics_port,
    )


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # The pool's own reconnection attempts: two lines each, several a second while the
    # database is down, where the services say it once per failed use.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


def run_service(args: argparse.Namespace) -> int:
    from .config import unknown_settings

    _check_flags_apply(args)
    config = config_from(args)
    _logging(args.verbose)
    for name in unknown_settings():
        log.warning("%s is not a setting of excamera (a typo?): ignored", name)
    os.environ.update(config.to_env())  # what forked and spawned workers read
    os.environ["EXCAMERA_SERVICE_NAME"] = args.name
    made = None
    if args.name != "api" and not os.environ.get(METRICS_ENV):
        # Before services.metrics is imported anywhere: one directory for all this
        # service's processes, gone with the service.
        remove_stale_metrics_directories()
        made = os.environ[METRICS_ENV] = tempfile.mkdtemp(
            prefix=f"{METRICS_DIRECTORY_PREFIX}{os.getpid()}@{socket.gethostname()}-")
    try:
        return _run_service(config, args)
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


METRICS_DIRECTORY_PREFIX = "excamera-metrics-"


def remove_stale_metrics_directories() -> None:
    """Delete the metrics directories of services that died without removing theirs (kill
    -9): each is named after its service's process and host (containers sharing a /tmp see
    other process numbers), and left alone while that one runs."""
    root = Path(tempfile.gettempdir())
    for directory in root.glob(f"{METRICS_DIRECTORY_PREFIX}*@{socket.gethostname()}-*"):
        owner = directory.name.removeprefix(METRICS_DIRECTORY_PREFIX).split("@", 1)[0]
        if owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(directory, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def _run_service(config: Any, args: argparse.Namespace) -> int:
    _check_chain_threads()
    _check_connections(config, args.name)
    if args.name == "api":
        from .api.app import serve

        serve(config, host=args.host or "127.0.0.1", port=args.port or 8080,
              idle_seconds=args.idle_timeout)
        return 0
    if config.metrics_port is not None:
        from . import metrics

        metrics.serve(config.metrics_port)
    if args.name == "rebaser":
        return _run_rebasers(config, args.concurrency or 1, args.verbose)
    return _run_celery_worker(config, args.name, args.concurrency, args.verbose)


API_FLAGS = ("port", "host", "idle_timeout")


def _check_flags_apply(args: argparse.Namespace) -> None:
    """A flag another service takes is refused, not ignored (the operator meant something)."""
    from .errors import ConfigError

    if args.name == "api":
        given = [f for f in ("concurrency", "metrics_port") if getattr(args, f) is not None]
        why = "the API is one process (run more for more), and serves /metrics on its port"
    else:
        given = [f for f in API_FLAGS if getattr(args, f) is not None]
        why = "they are the API's"
    if given:
        shown = ", ".join("--" + f.replace("_", "-") for f in given)
        raise ConfigError(f"{shown}: not for the {args.name} service ({why})")


def _check_chain_threads() -> None:
    """EXCAMERA_CHAIN_THREADS, which the rebasers' links read, is refused at start-up."""
    from shared.pipeline.errors import PipelineError
    from shared.pipeline.stages import chain_threads

    from .errors import ConfigError

    try:
        chain_threads()
    except PipelineError as exc:
        raise ConfigError(str(exc)) from None


def _check_connections(config: Any, name: str) -> None:
    """Fail at once, in one line, when the broker, the store or the database is out of reach
    (a service would otherwise retry quietly for ever)."""
    import psycopg

    from shared.pipeline.errors import PipelineError
    from shared.pipeline.store import open_store

    from .errors import ConfigError, TransientError
    from .records import JobRecords

    try:
        open_store(config.store).check()
    except (OSError, ValueError, NotImplementedError, PipelineError, TransientError) as exc:
        raise ConfigError(f"store {config.store}: {_first_line(exc)}") from None
    try:
        JobRecords(config.db, pool_size=1).close()
    except (TransientError, psycopg.Error) as exc:  # psycopg.Error: not a database URL
        shown = _redact(config.db)
        text = _first_line(exc).replace(config.db, shown)  # psycopg may quote the URL
        raise ConfigError(f"job records ({shown}): {text}") from None
    import kombu

    from .broker import Topology

    try:
        topology = Topology.for_config(config)
        if topology.on_sqs:
            topology.declare(None)  # type: ignore[arg-type]
            return
        with kombu.Connection(config.broker, connect_timeout=10) as connection:
            connection.ensure_connection(max_retries=2)
            topology.declare(connection)
    except Exception as exc:  # noqa: BLE001 - any failure to reach the broker, in one line
        raise ConfigError(f"broker {_redact(config.broker)}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    """An error's text on one line (psycopg's, say, adds a hint on a second)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _redact(url: str) -> str:
    import re
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a bad port or host raises here
    except ValueError:
        return re.sub(r"//[^@/]*@", "//***@", url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def _run_celery_worker(config: Any, service: str, concurrency: int | None,
                       verbose: bool) -> int:
    from .broker import make_celery
    from .celery_tasks import IngestConsumer, register

    app = make_celery(config)
    register(app, service)
    app.conf.worker_consumer = "services.celery_tasks:TaskConsumer"
    if service == "splitter":
        app.steps["consumer"].add(IngestConsumer)
    queue = app.excamera_topology.queue_of_service(service)  # type: ignore[attr-defined]
    _note_privileges(app, service)
    # Celery's banner only when verbose: `excamera up` starts four workers in one terminal.
    argv = [] if verbose else ["--quiet"]
    argv += [
        "worker", f"--loglevel={'INFO' if verbose else 'WARNING'}", "-Q", queue,
        f"--concurrency={concurrency or os.cpu_count() or 1}", "--pool=prefork",
        "-n", f"{service}-{os.getpid()}@%h", "--without-gossip", "--without-mingle",
        "--without-heartbeat",
    ]
    app.worker_main(argv)
    return 0


def _note_privileges(app: Any, service: str) -> None:
    """Celery warns in seven lines, once per worker, when it runs as root or in group sudo or
    wheel: say so in one line instead (four workers share a terminal under `excamera up`)."""
    from celery.platforms import SecurityWarning, check_privileges

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SecurityWarning)
        check_privileges(app.conf.accept_content)
    if any(issubclass(w.category, SecurityWarning) for w in caught):
        print(f"excamera service {service}: note: running as root (or in group sudo or "
              "wheel); run the services as an unprivileged user, as deploy/'s image does",
              file=sys.stderr, flush=True)
    warnings.filterwarnings("ignore", category=SecurityWarning)  # the worker's own check


def _run_rebasers(config: Any, count: int, verbose: bool = False) -> int:
    """`count` rebaser processes (each owns its share of the shards), restarted if one dies
    until this process is told to stop; each logs as this one does."""
    context = multiprocessing.get_context("spawn")
    children: list[Any] = []
    stopping = _stop_on_signals()
    if count == 1:
        _rebaser_class(config)(config).run()
        return 0
    try:
        while not stopping.is_set():
            for child in children:
                if not child.is_alive() and not stopping.is_set():
                    log.warning("rebaser process %d ended (exit code %s); starting another",
                                child.pid, child.exitcode)
            children = [c for c in children if c.is_alive()]
            while len(children) < count:
                child = context.Process(target=_rebaser_main, args=(config, verbose),
                                        daemon=True)
                child.start()
                children.append(child)
            time.sleep(0.5)
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.join(10)
    return 0


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (Ctrl-C): the loop watching it ends cleanly."""
    stopping = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stopping.set())
    return stopping


def _rebaser_class(config: Any) -> Any:
    """The rebaser for the broker: shards with leases on RabbitMQ, the FIFO queue on SQS."""
    from .broker import transport_of

    if transport_of(config.broker) == "sqs":
        from .rebaser.sqs_rebaser import SqsRebaserProcess

        return SqsRebaserProcess
    from .rebaser.service import RebaserProcess

    return RebaserProcess


def _rebaser_main(config: Any, verbose: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _logging(verbose)  # a spawned process starts with none
    _rebaser_class(config)(config).run()


def run_up(args: argparse.Namespace) -> int:
    """The API and one of each worker as child processes; Ctrl-C (or SIGTERM) stops them."""
    config = config_from(args)
    env = {**os.environ, **config.to_env()}
    env.pop("EXCAMERA_METRICS_PORT", None)  # each worker gets a port of its own, below
    metrics_ports = _metrics_ports(config.metrics_port)
    token = None
    if not env.get("EXCAMERA_API_TOKENS") and not env.get("EXCAMERA_API_TOKENS_FILE"):
        # A quick start needs a caller: one token for this run, shown in the banner.
        token = secrets.token_urlsafe(18)
        env["EXCAMERA_API_TOKENS"] = f"local:{token}"
    common = [f"--{name.replace('_', '-')}={value}" for name, value in (
        ("broker", config.broker), ("store", config.store), ("db", config.db),
        ("queue_prefix", config.queue_prefix),
    )]
    common += [f"--allow-input={p}" for p in config.allow_input]
    common += [f"--allow-output={p}" for p in config.allow_output]
    if config.allow_private_networks:
        common.append("--allow-private-networks")
    if args.verbose:
        common.append("-v")
    commands = {
        "api": ["api", f"--port={args.port}", f"--host={args.host}"],
        "splitter": ["splitter", "--concurrency=1"],
        "encoder": ["encoder", f"--concurrency={args.concurrency or os.cpu_count() or 1}"],
        "decoder": ["decoder", "--concurrency=1"],
        "rebaser": ["rebaser", "--concurrency=1"],
    }
    for name, port in metrics_ports.items():
        commands[name].append(f"--metrics-port={port}")
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = _stop_on_signals()
    try:
        for name, command in commands.items():
            children[name] = subprocess.Popen(
                [sys.executable, "-c", *_CHILD, "service", *command, *common], env=env,
                preexec_fn=functools.partial(_tie_to_parent, os.getpid()))
        url = f"http://{args.host}:{args.port}"
        _wait_for_api(url, children["api"])
        print(_banner(url, config, token, metrics_ports), flush=True)
        while not stopping.is_set():
            for name, child in children.items():
                if child.poll() is not None:
                    print(f"excamera up: the {name} service exited (status "
                          f"{child.returncode}); stopping", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children.values():
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                child.kill()


_PR_SET_PDEATHSIG = 1  # prctl(2) option: the signal this process gets when its parent dies


def _tie_to_parent(parent: int) -> None:
    """In a child of `excamera up`, between fork and exec: a process group of its own, so
    Ctrl-C reaches `up` alone, which stops each service once; and SIGTERM when `up` ends,
    even by SIGKILL, so that no service outlives it (Linux; elsewhere only the first)."""
    os.setpgid(0, 0)
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except AttributeError:
        return
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # `up` died before the tie was made
        os._exit(1)


def _wait_for_api(url: str, api: subprocess.Popen[bytes]) -> None:
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise SystemExit(f"excamera up: the API exited (status {api.returncode})")
        try:
            with urllib.request.urlopen(f"{url}/v1/health", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"excamera up: the API did not answer at {url} within 60 s")


def _metrics_ports(first: int | None) -> dict[str, int]:
    """`excamera up --metrics-port P`: the workers' metrics on P, P+1, ... (one port each: a
    port serves one process's metrics; the API serves its own at /metrics)."""
    if first is None:
        return {}
    workers = list(WORKERS)
    if first + len(workers) - 1 > 65535:
        raise SystemExit(f"excamera up: --metrics-port {first} leaves no room for the "
                         f"{len(workers)} workers' ports (at most {65536 - len(workers)})")
    return {name: first + offset for offset, name in enumerate(workers)}


def _banner(url: str, config: Any, token: str | None,
            metrics_ports: dict[str, int] | None = None) -> str:
    if token is not None:
        auth = f"a token for this run: export EXCAMERA_TOKEN={token}"
    else:
        auth = "tokens from EXCAMERA_API_TOKENS (name:token,...): export EXCAMERA_TOKEN=..."
    header = "-H \"Authorization: Bearer $EXCAMERA_TOKEN\""
    return "\n".join([
        f"excamera is up: API at {url} (store {config.store})",
        f"  {auth}",
        "  submit a clip, follow it and fetch the output, with excamera itself:",
        f"    excamera submit clip.mp4 -o out.webm --api {url}",
        "  or with curl:",
        f"    curl {header} -F video=@clip.mp4 {url}/v1/jobs",
        f"    curl {header} {url}/v1/jobs/ID",
        f"    curl {header} -o out.webm {url}/v1/jobs/ID/output",
        f"  every job's end is also posted to the queue {config.queue_prefix}.events",
        *([f"  Prometheus metrics: {url}/metrics (the API), " + ", ".join(
            f"port {port} ({name})" for name, port in metrics_ports.items())]
          if metrics_ports else []),
        "  Ctrl-C stops every service.",
    ])
