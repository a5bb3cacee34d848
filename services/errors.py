"""The services' exceptions: the pipeline's (`shared.pipeline.errors`), of which
`TransientError` is the one worth a retry, and the few only the services raise."""

from __future__ import annotations

from shared.pipeline.errors import PipelineError, TransientError

__all__ = ["ConfigError", "InputRejected", "PipelineError", "TransientError"]


class ConfigError(ValueError):
    """A service was started with settings that cannot work; the text says which."""


class InputRejected(PipelineError):
    """An input or output URL the operator's policy does not allow (or that cannot be fetched
    safely): the job fails at once with this reason."""
