"""User-facing errors, each class with its exit code (app/cli.py maps them, nothing else does).

Exit codes: 0 done; 1 failed (EvergreenError, or the disk/permissions); 2 bad input, nothing
changed (BadInputError); 75 the workspace is busy (WorkspaceBusyError); 128 + N stopped by
signal N (130 Ctrl-C, 143 SIGTERM; app/signals.py).
"""


class EvergreenError(Exception):
    """An error the user can act on; the message names the file, field and expectation."""

    exit_code = 1
    transient = False  # worth a retry (the stages' Prefect retries): the same call may pass


class TrainingCrashedError(EvergreenError):
    """A training process died (a rank killed, out of memory); a retry resumes from the last
    epoch checkpoint."""

    transient = True


class BadInputError(EvergreenError):
    """Bad input: malformed data, config or arguments. Nothing was changed."""

    exit_code = 2


class ConfigError(BadInputError):
    """params.yaml or a --set override is invalid."""


class DataValidationError(BadInputError):
    """The dataset failed its validation suite; the run stopped before training."""


class WorkspaceBusyError(EvergreenError):
    """Another run holds the workspace lock."""

    exit_code = 75
