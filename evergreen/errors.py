"""User-facing errors, mapped to exit codes in one place (app/cli.py)."""


class EvergreenError(Exception):
    """An error the user can act on; the message names the file, field and expectation."""

    exit_code = 1


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
