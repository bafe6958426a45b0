from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from bitfit.interrupts import (Interrupted, _start_time, catch_signals, exit_code, owner,
                               owner_alive)


# SIGTERM, SIGINT and SIGHUP take the same path; tests/test_faults.py runs SIGTERM and SIGKILL
# end to end through a search.
@pytest.mark.parametrize("sig, name, code", [(signal.SIGTERM, "SIGTERM", 143),
                                             (signal.SIGINT, "SIGINT", 130),
                                             (signal.SIGHUP, "SIGHUP", 129)])
def test_a_signal_inside_the_block_raises_an_interruption_and_the_handler_is_restored(
        sig, name, code):
    before = signal.getsignal(sig)
    with pytest.raises(Interrupted) as caught, catch_signals():
        os.kill(os.getpid(), sig)
        for _ in range(10_000_000):  # the handler runs between bytecodes
            pass
    assert caught.value.signal_name == name and exit_code(caught.value) == code
    assert signal.getsignal(sig) is before


def test_an_owner_is_alive_while_its_process_runs_and_not_after():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    me = owner()
    host, pid, start = me.split(":")
    theirs = f"{host}:{child.pid}:{_start_time(child.pid)}"

    assert owner_alive(me) is True and owner_alive(theirs) is True
    child.kill()
    child.wait()
    assert owner_alive(theirs) is False
    assert owner_alive(f"{host}:{pid}:1") is False  # the pid reused by another process
    assert owner_alive("another-host:1:1") is None  # cannot tell from here
