"""A failed run's console: the command's one-line error, not Prefect's report of it.

When a flow fails with one of our errors (EvergreenError), Prefect's engine logs
"Encountered exception during execution" with the whole traceback, and a "Finished in
state Failed" line per task and flow, before the command prints its one line. Those
records are dropped from the console handler only: the API handler still sends them, so
the Prefect UI keeps the traceback.
"""

from __future__ import annotations

import logging
import re

from evergreen.errors import EvergreenError

RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
# Prefect's failed state: "Task run encountered an exception BadInputError: ..." (tasks),
# "Flow run encountered an exception: BadInputError: ..." (flows)
FAILED_WITH = re.compile(r"encountered an exception:? (\w+): ")


def error_names(cls: type[Exception] = EvergreenError) -> set[str]:
    """The names of `cls` and of its subclasses, however deep (some live in tasks/)."""
    return {cls.__name__}.union(*(error_names(sub) for sub in cls.__subclasses__()))


class HideUserErrors(logging.Filter):
    """Drop records that report an EvergreenError: their traceback, or the failed state."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            return not isinstance(record.exc_info[1], EvergreenError)
        if record.name.startswith(RUN_LOGGERS) and record.levelno >= logging.INFO:
            found = FAILED_WITH.search(record.getMessage())
            return not (found and found.group(1) in error_names())
        return True


def hide_user_errors() -> None:
    """Add HideUserErrors to Prefect's console handler (on the root logger), once.

    For commands that print an EvergreenError themselves. Prefect configures logging once,
    when `prefect` is first imported whole; this does it now if that has not happened yet
    (a later configuration is incremental: it keeps the handlers, and so this filter).
    """
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(
                isinstance(f, HideUserErrors) for f in handler.filters):
            handler.addFilter(HideUserErrors())
