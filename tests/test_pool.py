"""Processes side by side share the cores by how many are still busy: when the others are done,
the last run takes the cores they left."""

from __future__ import annotations

import multiprocessing

import torch

from bitfit import hardware
from bitfit.pool import _Working


def test_the_busy_count_is_the_unfinished_calls_per_process_and_this_one_while_it_works():
    working = _Working(multiprocessing.get_context("spawn"), 2, 4, here=True)

    counts = [working.count.value]
    for _ in range(3):
        working.call_done()
        counts.append(working.count.value)
    working.here_done()
    counts.append(working.count.value)

    assert counts == [3, 3, 3, 2, 1]  # 2 processes + here, ..., the last call alone


def test_a_run_takes_the_cores_the_others_left_and_nothing_outside_a_group():
    mine = torch.get_num_threads()
    busy = multiprocessing.Value("i", 2)
    try:
        hardware.share_cores(busy, 2)
        hardware.take_free_cores()
        alone_of_two = torch.get_num_threads()
        busy.value = 1  # the other process is done
        hardware.take_free_cores()
        alone = torch.get_num_threads()
        hardware.share_cores(None)
        torch.set_num_threads(1)
        hardware.take_free_cores()
        outside = torch.get_num_threads()
    finally:
        hardware.share_cores(None)
        torch.set_num_threads(mine)

    assert (alone_of_two, alone, outside) == (1, 2, 1)


def test_a_side_process_ends_when_its_parent_is_killed(tmp_path):
    """A parent killed with SIGKILL cannot stop its side processes: they end on their own
    instead of waiting for work for ever."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(
        "import multiprocessing, os, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from bitfit import pool\n"
        "if __name__ == '__main__':\n"
        "    context = multiprocessing.get_context('spawn')\n"
        "    side = ProcessPoolExecutor(1, mp_context=context, initializer=pool._start_worker,\n"
        "        initargs=('m', 'auto', 'h', 'f', 1, context.Value('i', 1), 1))\n"
        "    print(side.submit(os.getpid).result(), flush=True)\n"
        "    time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(f"/proc/{child}"):
        time.sleep(0.2)
    gone = not os.path.exists(f"/proc/{child}")
    if not gone:
        os.kill(child, signal.SIGKILL)
    assert gone
