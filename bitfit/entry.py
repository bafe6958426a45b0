"""What every command line does around its work: one sentence per mistake, signals, exit codes.

    sys.exit(run_command(lambda: search(...), show=print_summary))

A user's mistake or an unreachable service prints ``error: <one sentence>`` and exits 2; a study
whose every trial failed exits 1; SIGINT, SIGTERM and SIGHUP end the run cleanly (the trial they hit
is failed as ``interrupted`` and runs again first on the same command) and exit 128 + the signal's
number, even where the signal's exception was swallowed on its way (``bitfit.interrupts``).
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from bitfit.checks import at_least, positive, writable_folder
from bitfit.interrupts import (Interrupted, catch_signals, exit_code, is_interruption, received,
                               signal_name)
from bitfit.services import mask_url
from bitfit.settings import quiet_environment, quiet_logging

__all__ = ["at_least", "exit_now", "positive", "quiet_environment", "quiet_logging", "run_command",
           "user_error", "writable_folder"]


def user_error(err: BaseException) -> str | None:
    """The one sentence for an error that is the user's to fix (or a service's), else None."""
    from bitfit.study import StudyFailed

    if isinstance(err, StudyFailed):
        return _one_line(err)
    if isinstance(err, ValueError | OSError):
        return _one_line(err)
    kind = type(err).__module__.split(".")[0]
    if kind in ("sqlalchemy", "optuna"):
        return f"a database failed ({_one_line(err)}): check --storage and --tracking-uri"
    if kind == "mlflow":
        return f"MLflow failed ({_one_line(err)}): check the tracking URI and its server"
    return None


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    if isinstance(err, KeyError) and len(err.args) == 1:
        text = str(err.args[0])
    line = " ".join(text.split()) if text else type(err).__name__
    return mask_url(line) if "://" in line else line


def run_command(work: Callable[[], Any], *, show: Callable[[Any], None]) -> int:
    """Run ``work`` as a command: show its result, or say what went wrong; the exit code."""
    quiet_logging()
    seen: str | None = None  # a signal received while the work ran, whatever became of it
    try:
        with catch_signals():
            try:
                result = work()
            finally:
                seen = received()
            if seen:  # its exception was swallowed somewhere (a __del__, a GC callback)
                raise Interrupted(seen)
    except SystemExit:
        raise
    except BaseException as err:
        if is_interruption(err) or seen:
            name = seen or signal_name(err)
            print(f"error: interrupted by {name}: finished trials and runs are "
                  "kept; run the same command to resume (an interrupted trial runs again first)",
                  file=sys.stderr)
            return exit_code(Interrupted(name))
        if not isinstance(err, Exception):
            raise
        message = user_error(err)
        if message is None:
            raise
        from bitfit.study import StudyFailed

        print(f"error: {message}", file=sys.stderr)
        return 1 if isinstance(err, StudyFailed) else 2
    show(result)
    return 0


def exit_now(code: int) -> None:
    """End a finished command's process with ``code``: Python's own exit steps (wait for the
    threads that are not daemons, then the ``atexit`` handlers: logs flushed, Prefect's and
    MLflow's queues drained, Prefect's server stopped), without the teardown of every module
    after them, which took 2.7 s of a 3-trial search's 40 s here once torch, transformers and
    Prefect were loaded (``benchmarks/cold_start.py``)."""
    sys.stdout.flush()
    sys.stderr.flush()
    getattr(threading, "_shutdown", lambda: None)()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
