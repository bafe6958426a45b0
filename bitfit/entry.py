"""What every command line does around its work: one sentence per mistake, signals, exit codes.

    sys.exit(run_command(lambda: search(...), show=print_summary))

A user's mistake or an unreachable service prints ``error: <one sentence>`` and exits 2; a study
whose every trial failed exits 1; SIGINT, SIGTERM and SIGHUP end the run cleanly (the trial they hit
is failed as ``interrupted`` and runs again first on the same command) and exit 128 + the signal's
number. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from bitfit.interrupts import catch_signals, exit_code, is_interruption, signal_name
from bitfit.services import mask_url
from bitfit.settings import quiet_environment, quiet_logging

__all__ = ["at_least", "positive", "quiet_environment", "quiet_logging", "run_command",
           "user_error"]


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
    from bitfit.study import StudyFailed

    quiet_logging()
    try:
        with catch_signals():
            result = work()
    except SystemExit:
        raise
    except BaseException as err:
        if is_interruption(err):
            print(f"error: interrupted by {signal_name(err)}: finished trials and runs are "
                  "kept; run the same command to resume (an interrupted trial runs again first)",
                  file=sys.stderr)
            return exit_code(err)
        if not isinstance(err, Exception):
            raise
        message = user_error(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1 if isinstance(err, StudyFailed) else 2
    show(result)
    return 0


def at_least(least: int, **counts: int | None) -> None:
    """Refuse a count that is not a whole number of ``least`` or more (None: the default), in
    the same words for every command."""
    for name, value in counts.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < least):
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} must be a whole number of {least} or more, got {value!r}")


def positive(**counts: int | None) -> None:
    """Refuse a count below 1 (None means 'the default')."""
    at_least(1, **counts)
