"""The pipeline's exceptions: each carries one line that is shown to the user as it is.

They take a single message argument so that they pickle, which they must: stages raise them in
worker processes and the runner re-raises them in the parent.
"""

from __future__ import annotations

__all__ = [
    "InputError",
    "LibvpxError",
    "OutputError",
    "PipelineError",
    "RebaseUnavailableError",
    "ToolError",
    "TransientError",
    "WorkerDiedError",
]


class PipelineError(Exception):
    """Base class: a failure reported to the user as one line, without a traceback."""


class InputError(PipelineError):
    """The input video is unreadable, malformed or unsupported."""


class OutputError(PipelineError):
    """The output cannot be written (bad suffix, missing directory, no permission, ...)."""


class ToolError(PipelineError):
    """An external tool (vpxenc) or library (libvpx) is missing or failed."""


class LibvpxError(ToolError):
    """libvpx's encoder, called in process (`shared.libvpx`), refused its input or failed; the
    message carries libvpx's own error detail."""


class RebaseUnavailableError(PipelineError):
    """ExCamera[n,x] with x > 1 needs `shared.codec.rebase`, which is not there yet."""


class WorkerDiedError(PipelineError):
    """A worker process died (killed, out of memory, crashed) while running a stage."""


class TransientError(PipelineError):
    """Storage, broker or database trouble that a retry may cure (a connection lost, a server
    restarting, a throttled request): the services retry these with backoff, and fail the job
    only when the retries run out. Everything else fails the job at once."""
