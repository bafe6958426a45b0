"""Interruptions: SIGINT and SIGTERM end a run the same way, and a dead owner is recognised.

``catch_signals()`` makes SIGTERM (``kill``, ``docker stop``, ``timeout``, a cancelled CI job) and
SIGHUP raise ``Interrupted``, a ``KeyboardInterrupt``, as Ctrl-C does: the trial being run ends
FAIL with the reason ``interrupted``, its MLflow run ends KILLED, the servers this process started
stop with it, and the same command resumes. ``owner()`` names this process (host, pid and start
time, so a reused pid is not mistaken for it) and ``owner_alive`` says whether a recorded owner
still runs, so that a RUNNING trial left by a killed process is recovered on SQLite, which has no
heartbeats.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Iterator

INTERRUPTED = "interrupted"


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal; ``signal_name`` says which."""

    def __init__(self, signal_name: str = "SIGINT") -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


def signal_name(err: BaseException) -> str:
    """The signal behind an interruption (Prefect raises its own ``TerminationSignal``)."""
    if isinstance(err, Interrupted):
        return err.signal_name
    number = getattr(err, "signal", None)
    if number is not None:
        return signal.Signals(number).name
    return "SIGINT"


def is_interruption(err: BaseException) -> bool:
    """KeyboardInterrupt, SystemExit or Prefect's TerminationSignal: the process is stopping."""
    if isinstance(err, KeyboardInterrupt | SystemExit):
        return True
    return type(err).__name__ in ("TerminationSignal", "ExternalSignal")


def exit_code(err: BaseException) -> int:
    """The shell's convention: 128 + the signal number."""
    return 128 + getattr(signal, signal_name(err), signal.SIGINT)


# Signals received within the outermost catch_signals, in order. Raising from a signal handler
# is not enough: Python runs the handler wherever the main thread is, and an exception raised
# inside a __del__ or a garbage-collection callback is printed ("Exception ignored in") and
# dropped. The record is what cannot be lost: the work stops at its next safe point
# (stop_if_interrupted: every training step and evaluation batch, trial, seed and cell), and
# the command exits 128 + the signal's number whatever happened to the exception.
_received: list[str] = []
_chained: list[dict[int, object]] = []  # per catch_signals block: the handlers it replaced
_depth = 0


def received() -> str | None:
    """The first signal received within the current command (None: none)."""
    return _received[0] if _received else None


def stop_if_interrupted() -> None:
    """A safe point: raise ``Interrupted`` if a signal has been received, so that one whose
    exception was swallowed still stops the work here."""
    if _received:
        raise Interrupted(_received[0])


def _raise(signum: int, frame: object) -> None:
    name = signal.Signals(signum).name
    _received.append(name)
    previous = _chained[-1].get(signum) if _chained else None
    if callable(previous) and previous is not _raise and previous is not signal.default_int_handler:
        previous(signum, frame)  # a flow run's own handler (Prefect's TerminationSignal)
    raise Interrupted(name)


@contextlib.contextmanager
def catch_signals() -> Iterator[None]:
    """Within the block SIGTERM, SIGHUP and SIGINT are recorded and raise ``Interrupted`` (main
    thread only). Nested inside a Prefect flow run, the signal also goes to the handler the flow
    engine installed, which raises its own ``TerminationSignal`` and ends the flow run."""
    global _depth
    previous: dict[int, object] = {}
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            previous[sig] = signal.signal(sig, _raise)
    _chained.append(previous)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        _chained.pop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        if _depth == 0:
            _received.clear()


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' where /proc is not there)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            # the command name may hold spaces: the fields after its closing parenthesis
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner() -> str:
    """``host:pid:start``, naming this process uniquely on this machine."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def owner_alive(recorded: str) -> bool | None:
    """Whether the process named by ``owner()`` still runs; None when it ran on another host."""
    host, _, rest = recorded.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not start or _start_time(pid) == start
