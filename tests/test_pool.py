"""Processes side by side share the cores by how many are still busy: when the others are done,
the last run takes the cores they left."""

from __future__ import annotations

import multiprocessing

import torch

from bitfit import hardware
from bitfit.pool import _Working


def test_the_busy_count_is_the_unfinished_calls_per_process_and_this_one_while_it_works():
    working = _Working(multiprocessing.get_context("spawn").Value("i", 0), 2, 4, here=True)

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
        "        initargs=('m', 'auto', 'h', 1, context.Value('i', 1), 1))\n"
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


def _pid_and_rows() -> tuple[int, int]:
    import os

    from bitfit.pool import worker_state

    return os.getpid(), len(worker_state()[1].train)


def test_a_run_keeps_one_pool_started_ahead_for_all_its_phases(base, cola_small, sst2_small):
    """The processes started ahead (``prestart``) serve every phase of a ``kept()`` block, each
    call with its own data, and end with the block."""
    import time

    from bitfit import pool

    with pool.kept():
        pool.prestart(base, 2)
        ahead = pool._KEPT["pool"]
        started = set(ahead.executor._processes)
        study = list(pool.in_processes(base, cola_small, 1, [(_pid_and_rows, ())]))
        final = list(pool.in_processes(base, sst2_small, 2, [(_pid_and_rows, ())] * 4))
        still = pool._KEPT["pool"]
        processes = list(ahead.executor._processes.values())

    assert still is ahead and pool._KEPT["pool"] is None
    assert {pid for pid, _ in study + final} <= started and len(started) == 2
    assert study[0][1] == len(cola_small.train)
    assert {rows for _, rows in final} == {len(sst2_small.train)}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(p.is_alive() for p in processes):
        time.sleep(0.1)
    assert not [p for p in processes if p.is_alive()]


def test_a_kept_pool_is_taken_only_where_it_runs_the_calls_as_a_pool_of_their_own(base):
    """The same model, and no more calls at once than the caller asked for."""
    from bitfit import pool

    kept = pool._Pool(base, 2)  # no process starts before work is submitted
    same = (base.model_id, base.pooling, base.weights_hash)
    other = (base.model_id, base.pooling, "another hash")
    try:
        fits = [kept.fits(same, 2, 10), kept.fits(same, 1, 1), kept.fits(same, 2, 1),
                kept.fits(same, 1, 4), kept.fits(same, 3, 3), kept.fits(other, 2, 2)]
    finally:
        kept.close()

    assert fits == [True, True, True, False, False, False]


def test_the_processes_a_run_starts_ahead_are_those_its_phases_will_take():
    from bitfit import pipeline
    from bitfit.pool import default_processes

    quick = pipeline.Config(task="cola", n_trials=3, max_train_samples=2000, baseline=False,
                            seeds=0)  # 6,000 trial rows: side by side
    tiny = pipeline.Config(task="cola", n_trials=2, max_train_samples=200, seeds=1)
    one = pipeline.Config(task="cola", trial_processes=1, eval_processes=1)
    elsewhere = pipeline.Config(task="cola", workers=2, seeds=0)

    study = default_processes("auto", 3) - 1  # this process runs trials too
    assert pipeline.side_processes(quick) == (study if study > 0 else 0)
    # the studies' 400 rows run here; the 2 final runs (BitFit, full) side by side
    final = default_processes("auto", 2)
    assert pipeline.side_processes(tiny) == (final if final > 1 else 0)
    assert pipeline.side_processes(one) == 0
    assert pipeline.side_processes(elsewhere) == 0
