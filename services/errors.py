"""The services' exceptions: the pipeline's (`shared.pipeline.errors`), of which
`TransientError` is the one worth a retry, and the few only the services raise."""

from __future__ import annotations

from shared.pipeline.errors import PipelineError, TransientError

__all__ = ["ConfigError", "Deferred", "InputRejected", "PipelineError", "TransientError"]


class ConfigError(ValueError):
    """A service was started with settings that cannot work; the text says which."""


class InputRejected(PipelineError):
    """An input or output URL the operator's policy does not allow (or that cannot be fetched
    safely): the job fails at once with this reason."""


class Deferred(TransientError):
    """A task message to hand back for `seconds`, not run now: another copy of the task is
    running within its deadline. Not a failure, and not an attempt."""

    def __init__(self, reason: str, seconds: float) -> None:
        super().__init__(reason)
        self.seconds = seconds
