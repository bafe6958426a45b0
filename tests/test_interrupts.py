from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from bitfit.interrupts import (Interrupted, _start_time, catch_signals, exit_code, owner,
                               owner_alive)


def test_sigterm_inside_the_block_raises_an_interruption_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as caught, catch_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000_000):  # the handler runs between bytecodes
            pass
    assert caught.value.signal_name == "SIGTERM" and exit_code(caught.value) == 143
    assert signal.getsignal(signal.SIGTERM) is before


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
