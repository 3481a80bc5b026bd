"""voltrain's own exception types.

Errors a user can cause (a bad config, a missing dataset, an unreachable ``min_masked``)
are raised as a ``VoltrainError`` subclass whose message names the offending input. The CLI
catches them once and prints them as one line with exit code 2.
"""


class VoltrainError(Exception):
    """Base class for errors caused by user input."""


class ConfigError(VoltrainError):
    """A config file or config value is invalid (names the file and the key)."""


class PluginError(VoltrainError):
    """An installed plugin (an entry point of a registry) cannot be loaded or registered."""


class DataError(VoltrainError):
    """A dataset is missing, malformed or inconsistent (names the path)."""


class SamplingError(VoltrainError):
    """No training sample can satisfy the sampling constraints (e.g. ``min_masked``)."""


class CheckpointError(VoltrainError):
    """A checkpoint is missing, corrupt or does not fit the model."""


class NanLossError(VoltrainError):
    """The loss became non-finite and ``fail_on_nan_loss`` is set."""


def recover_voltrain_error(error: BaseException) -> VoltrainError | None:
    """The ``VoltrainError`` a wrapped error was raised for, rebuilt from its text.

    gunpowder re-raises errors from nodes as ``PipelineRequestError`` without chaining
    (``from None``), and torch's DataLoader re-raises a worker's error with the worker's
    traceback as its message. Both keep the original ``voltrain.errors.X: message`` line;
    this finds the last such line and rebuilds that error so it can be reported as one line.
    """
    import re

    texts = [str(error)]
    traceback_lines = getattr(error, "original_traceback", None)
    if traceback_lines:
        texts.append("".join(traceback_lines))
    pattern = re.compile(r"^voltrain\.errors\.(\w+): (.+)$", re.MULTILINE)
    matches = [m for text in texts for m in pattern.finditer(text)]
    if not matches:
        return None
    name, message = matches[-1].group(1), matches[-1].group(2).strip()
    cls = globals().get(name)
    if not (isinstance(cls, type) and issubclass(cls, VoltrainError)):
        cls = VoltrainError
    return cls(message)


class unwrap_voltrain_errors:  # noqa: N801  (used as a context manager, like contextlib's)
    """Re-raise a wrapped ``VoltrainError`` (see ``recover_voltrain_error``) as itself."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> bool:
        if exc_value is None or isinstance(exc_value, VoltrainError):
            return False
        if not isinstance(exc_value, Exception):
            return False
        # gunpowder chains errors raised in a node's setup() (PipelineSetupError from error)
        cause = exc_value.__cause__
        while cause is not None:
            if isinstance(cause, VoltrainError):
                raise cause from None
            cause = cause.__cause__
        recovered = recover_voltrain_error(exc_value)
        if recovered is None:
            return False
        raise recovered from None


class UnreadableChunkError(DataError):
    """A stored chunk of an array cannot be read or decoded (names the array and chunk)."""
