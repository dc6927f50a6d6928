"""A run that fails with our error: one line on the console, the traceback kept for the UI."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.console import HideUserErrors, error_names, hide_user_errors
from evergreen.errors import BadInputError, DataValidationError, EvergreenError
from tests.conftest import TINY_PARAMS, write_params

BIN = Path(sys.executable).parent


def record(name: str, msg: str, exc: BaseException | None = None,
           level: int = logging.ERROR) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord(name, level, __file__, 1, msg, (), exc_info)


def test_error_names_reach_subclasses_defined_anywhere():
    class LocalError(DataValidationError):
        pass

    assert {"EvergreenError", "BadInputError", "ConfigError", "LocalError"} <= error_names()


@pytest.mark.parametrize("rec, shown", [
    (record("prefect.flow_runs", "Encountered exception during execution: %r",
            BadInputError("x.csv: no label column")), False),
    (record("prefect.task_runs", "Task run failed with exception",
            DataValidationError("3 classes")), False),
    (record("prefect.task_runs", "Finished in state Failed(\"Task run encountered an exception "
            "BadInputError: x.csv: no label column\")"), False),
    (record("prefect.flow_runs", "Finished in state Failed('Flow run encountered an exception: "
            "DataValidationError: 3 classes')", level=logging.INFO), False),
    # not ours: a bug keeps its traceback, a failed state its line
    (record("prefect.flow_runs", "Encountered exception during execution: %r",
            ValueError("a bug")), True),
    (record("prefect.flow_runs", "Finished in state Failed('Flow run encountered an exception: "
            "ValueError: a bug')"), True),
    (record("prefect.flow_runs", "Finished in state Completed()", level=logging.INFO), True),
    (record("evergreen.train", "epoch 3: loss 0.12", level=logging.INFO), True),
])
def test_the_filter_drops_only_reports_of_our_errors(rec, shown):
    assert HideUserErrors().filter(rec) is shown


def test_only_the_console_handler_is_filtered():
    from prefect.logging.handlers import APILogHandler, PrefectConsoleHandler

    hide_user_errors()
    hide_user_errors()  # once, however often it is called
    handlers = logging.getLogger().handlers + logging.getLogger("prefect.flow_runs").handlers
    consoles = [h for h in handlers if isinstance(h, PrefectConsoleHandler)]
    assert consoles and all(sum(isinstance(f, HideUserErrors) for f in h.filters) == 1
                            for h in consoles)
    apis = [h for h in handlers if isinstance(h, APILogHandler)]
    assert apis and not any(isinstance(f, HideUserErrors) for h in apis for f in h.filters)


@pytest.mark.usefixtures("prefect_harness")
def test_the_ui_keeps_the_traceback():
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    @flow(name="fails-with-bad-input")
    def fails():
        raise BadInputError("x.csv: no label column")

    hide_user_errors()
    state = fails(return_state=True)
    assert isinstance(state.result(raise_on_failure=False), EvergreenError)
    APILogWorker.drain_all(timeout=10)
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    assert any("Encountered exception" in log.message and "Traceback" in log.message
               for log in logs)


def test_a_failed_run_prints_one_line_and_no_traceback(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    write_params(root, TINY_PARAMS)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run([str(BIN / "evergreen"), "--workspace", str(root), "run", "--data",
                           str(tmp_path / "missing")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("evergreen run: error: ") and str(tmp_path / "missing") in last
    assert "Traceback" not in done.stderr and "Encountered exception" not in done.stderr
    assert "Finished in state Failed" not in done.stderr
