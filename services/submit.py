"""`excamera submit`: a job for the HTTP API from the command line. It uploads a local file
(or passes a URL on), follows the job with a bar per stage (on a terminal; a line per state
otherwise), and writes the output where `-o` says.

    excamera submit clip.mp4 -o clip.webm           upload, wait, download
    excamera submit https://media.example.com/a.mp4 --no-wait   print the job's id
    excamera submit --job j-... -o clip.webm        follow a job already submitted

The API's URL is --api or EXCAMERA_API (default http://127.0.0.1:8080, where `excamera up`
serves it); the token is EXCAMERA_TOKEN, never an argument (arguments show in `ps`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.cli import CommandError, add_job_options, refuse_overwriting
from shared.pipeline.errors import OutputError
from shared.pipeline.messages import is_job_id
from shared.pipeline.mux import check_output
from shared.pipeline.progress import Progress

from .client import ApiCallError, ApiClient, open_client

__all__ = ["add_submit_parser", "run_submit"]

API_ENV, TOKEN_ENV = "EXCAMERA_API", "EXCAMERA_TOKEN"
DEFAULT_API = "http://127.0.0.1:8080"
FORMATS = {".webm": "webm", ".ivf": "ivf"}
ENDED = ("done", "failed", "cancelled")
MIB = 1 << 20


def add_submit_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "submit", help="submit a job to the HTTP API, follow it and fetch its output",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", metavar="INPUT", nargs="?",
                        help="a local video (uploaded) or a URL the service may read")
    parser.add_argument("-o", "--output", metavar="OUTPUT",
                        help="where to write the output, .webm or .ivf (without it, the job's "
                             "status is printed once it ends)")
    parser.add_argument("--job", metavar="ID", help="follow this job instead of submitting one")
    parser.add_argument("--api", default=os.environ.get(API_ENV, DEFAULT_API), metavar="URL",
                        type=_api_url, help=f"the API (default {API_ENV}, else {DEFAULT_API})")
    parser.add_argument("--format", choices=sorted(set(FORMATS.values())),
                        help="the output's container (default: by OUTPUT's suffix, else the "
                             "service's)")
    parser.add_argument("--budget-usd", type=float, metavar="USD",
                        help="cancel the job once its projected AWS cost passes this")
    parser.add_argument("--key", metavar="KEY",
                        help="the Idempotency-Key: the same key finds the same job (default: "
                             "a new one, printed)")
    parser.add_argument("--no-wait", action="store_true",
                        help="print the job's id once it is accepted, and stop there")
    parser.add_argument("--json", action="store_true",
                        help="print the job's final status document as JSON")
    add_job_options(parser, service=True)
    parser.set_defaults(run=run_submit)


def _api_url(text: str) -> str:
    """An http(s) URL with a host (argparse applies it to the default from API_ENV too)."""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http:// or https:// URL with a "
                                         "host")
    return text


def run_submit(args: argparse.Namespace) -> int:
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        raise CommandError(None, f"no API token: set {TOKEN_ENV} (`excamera up` prints one)")
    if not all(33 <= ord(c) <= 126 for c in token):  # what a header may carry
        raise CommandError(None, f"{TOKEN_ENV} holds white space, control or non-ASCII "
                                 "characters: a bearer token is printable ASCII")
    if (args.input is None) == (args.job is None):
        raise CommandError(None, "give either INPUT (a new job) or --job ID")
    if args.job is not None and not is_job_id(args.job):
        raise CommandError(None, f"--job {args.job!r} is not a job id (j- and 24 hex digits)")
    if args.input is not None and "://" not in args.input and not Path(args.input).is_file():
        what = "not a regular file" if Path(args.input).exists() else "no such file (or give a URL)"
        raise CommandError(args.input, what)
    if args.input is not None and "://" not in args.input:
        refuse_overwriting([args.output], [args.input])  # as `excamera encode` does
    options = _options(args)
    output = Path(args.output) if args.output else None
    accepted: list[str] = []  # the job, once there is one
    try:
        return asyncio.run(_submit_and_follow(args, token, options, output, accepted))
    except KeyboardInterrupt:
        if accepted:
            print(f"excamera submit: the job goes on; follow it again with "
                  f"`excamera submit --job {accepted[0]}`", file=sys.stderr)
        raise


def _options(args: argparse.Namespace) -> dict[str, Any]:
    form = args.format
    if args.output is not None:
        try:  # as `excamera encode` checks it, before any work
            suffix = check_output(Path(args.output))
        except OutputError as exc:
            raise CommandError(None, str(exc)) from None
        if form is not None and form != FORMATS[suffix]:
            raise CommandError(None, f"--format {form} does not match {args.output}")
        form = FORMATS[suffix]
    given = {
        "frames_per_chunk": args.frames_per_chunk, "chunks_per_group": args.chunks_per_group,
        "cq_level": args.cq_level, "ssim": args.ssim, "format": form,
        "scene_cuts": args.scene_cuts, "start_frames": args.start_frames,
        "budget_usd": args.budget_usd,
    }
    return {name: value for name, value in given.items() if value is not None}


async def _submit_and_follow(args: argparse.Namespace, token: str, options: dict[str, Any],
                             output: Path | None, accepted: list[str]) -> int:
    async with open_client(args.api, token) as client:
        try:
            job = args.job or await _submit(client, args.input, options, args.key)
            if args.no_wait:
                print(job)
                return 0
            accepted.append(job)
            status = await _follow(client, job)
            if status["state"] == "done" and output is not None:
                try:
                    size = await _download(client, job, output)
                except OSError as exc:  # the disk filled up, say
                    raise CommandError(str(output), f"cannot write the output "
                                                    f"({exc.strerror or exc})") from None
                print(f"wrote {output}: {size:,} bytes ({_result_line(status)})",
                      file=sys.stderr if args.json else sys.stdout)  # --json: stdout is JSON
        except ApiCallError as exc:
            raise CommandError(None, str(exc)) from None
    if args.json:
        print(json.dumps(status, indent=2))
    elif output is None or status["state"] != "done":
        print(f"{job}: {status['state']}" + (f" ({_result_line(status)})"
                                              if status["state"] == "done" else ""))
    if status["state"] != "done":
        print(f"excamera submit: job {job} {status['state']}: {status.get('error') or ''}",
              file=sys.stderr)
        return 1
    return 0


async def _submit(client: ApiClient, source: str, options: dict[str, Any],
                  key: str | None) -> str:
    key = key or secrets.token_hex(12)
    progress = Progress()
    size = 0 if "://" in source else Path(source).stat().st_size

    def on_upload(sent: int) -> None:
        progress.update("upload (MiB)", -(-sent // MIB), max(1, -(-size // MIB)))

    accepted = await client.submit(source, options, key, on_upload)
    progress.close()
    print(f"excamera submit: job {accepted['id']} {accepted['state']} (Idempotency-Key {key})",
          file=sys.stderr)
    return str(accepted["id"])


async def _follow(client: ApiClient, job: str, interval: float = 1.0) -> dict[str, Any]:
    """Poll the job until it ends; its last status."""
    progress = Progress()
    state = None
    while True:
        status = await client.status(job)
        if status["state"] != state and not progress.enabled:
            state = status["state"]
            print(f"excamera submit: {job} {state} ({status.get('percent', 0):g} %)",
                  file=sys.stderr, flush=True)
        for stage, counts in status.get("progress", {}).items():
            progress.update(stage, counts["done"], counts["total"])
        if status["state"] in ENDED:
            progress.close()
            return status
        await asyncio.sleep(interval)


async def _download(client: ApiClient, job: str, output: Path) -> int:
    progress = Progress()

    def on_bytes(have: int, total: int | None) -> None:
        if total:
            progress.update("download (MiB)", -(-have // MIB), max(1, -(-total // MIB)))

    size = await client.download(job, output, on_bytes)
    progress.close()
    return size


def _result_line(status: dict[str, Any]) -> str:
    result = status.get("result") or {}
    parts = [f"job {status['id']}"]
    if "bitrate_kbps" in result:
        parts.append(f"{result['bitrate_kbps']:.1f} kbit/s")
    if "ssim_db" in result:
        parts.append(f"SSIM {result['ssim_db']} dB")
    if "psnr_db" in result:
        parts.append(f"PSNR {result['psnr_db']} dB")
    return ", ".join(parts)
