"""Processes side by side: a pool of spawned processes that each hold the base model and data.

A study's trials and a final evaluation's seeds are independent runs; on a CPU they train
faster as one-thread processes side by side than as threads in one process. ``in_processes``
runs calls in such processes, ``worker_state`` gives a call its process's model and data.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import torch

from bitfit.data import TaskData
from bitfit.models import BaseModel, load_base
from bitfit.hardware import resolve_device

__all__ = ["MAX_PROCESSES", "NOT_STARTED", "check_not_starting", "default_processes",
           "in_processes", "worker_state"]

MAX_PROCESSES = 4


def default_processes(device: str, runs: int) -> int:
    """On a CPU, as many processes as cores (at most 4 and at most ``runs``), one thread each:
    small transformer layers use a second thread poorly, a second process well (on 2 cores, 2
    one-thread processes train 1.8 times as fast as one, 2 threads in one process 1.5 times).
    On a GPU, one."""
    if resolve_device(device).type != "cpu":
        return 1
    return max(1, min(runs, os.cpu_count() or 1, MAX_PROCESSES))


def in_processes(base: BaseModel, data: TaskData, processes: int,
                 calls: list[tuple[Callable[..., Any], tuple[Any, ...]]],
                 meanwhile: Callable[[], Any] | None = None) -> Iterator[Any]:
    """Each ``function(*args)`` of ``calls`` run in one of ``processes`` spawned processes, which
    have ``base`` loaded and ``data`` (``worker_state()`` gives them); the results in the calls'
    order. ``meanwhile()`` runs here while they run, as one more process, once a first process
    has started: the cores are shared among all of them (threads each: cores / processes, this
    one's restored after). When one fails or this process is interrupted, the others are
    stopped at once.

    Raises:
        RuntimeError: no process could start (the one-sentence reason; typically a script that
            calls bitfit outside ``if __name__ == "__main__":``).
    """
    share = processes + (meanwhile is not None)
    threads = max(1, (os.cpu_count() or 1) // share)
    context = multiprocessing.get_context("spawn")  # fork is unsafe once torch has threads
    with tempfile.TemporaryDirectory(prefix="bitfit-") as scratch:
        # the data reach the processes as a file: passed as an argument they would be written
        # into a pipe that a process which dies while starting never drains, and this one
        # would wait on it for ever
        data_file = Path(scratch) / "data.pickle"
        with data_file.open("wb") as out:
            pickle.dump(data, out, protocol=pickle.HIGHEST_PROTOCOL)
        with ProcessPoolExecutor(processes, mp_context=context, initializer=_start_worker,
                                 initargs=(base.model_id, base.pooling, base.weights_hash,
                                           str(data_file), threads)) as pool:
            futures: list[Any] = []
            try:
                try:
                    pool.submit(_started).result()
                except BrokenProcessPool:
                    raise RuntimeError(NOT_STARTED) from None
                futures = [pool.submit(function, *args) for function, args in calls]
                if meanwhile is not None:
                    mine = torch.get_num_threads()
                    torch.set_num_threads(threads)
                    try:
                        meanwhile()
                    finally:
                        torch.set_num_threads(mine)
                for future in futures:
                    yield future.result()
            except BaseException:
                # stop at once: waiting for the running jobs would hold an interrupted run for
                # minutes
                for process in list(getattr(pool, "_processes", {}).values()):
                    process.terminate()
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            finally:
                for future in futures:
                    future.cancel()


NOT_STARTED = ("a process for running side by side stopped while starting (its error is above): "
               "a script that calls bitfit must do so under `if __name__ == \"__main__\":`, "
               "since each process imports the script again, or run one process "
               "(trial_processes=1, eval_processes=1; --trial-processes 1 --eval-processes 1)")


def check_not_starting() -> None:
    """Raise ``RuntimeError(NOT_STARTED)`` in a process of ``in_processes`` that is still
    importing the parent's script: a script without a ``__main__`` guard would start a whole
    pipeline (studies, MLflow runs) in each process before failing."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(NOT_STARTED)


def _started() -> bool:
    worker_state()
    return True


_WORKER: dict[str, Any] = {}


def _start_worker(model_id: str, pooling: str, weights_hash: str, data_file: str,
                  threads: int) -> None:
    # what may fail is left to the first job (worker_state): its error then reaches the parent
    torch.set_num_threads(threads)
    _WORKER.update(setup=(model_id, pooling, weights_hash, data_file))


def worker_state() -> tuple[BaseModel, TaskData]:
    """In a process of ``in_processes``: its loaded base model and its data."""
    if "base" not in _WORKER:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        model_id, pooling, weights_hash, data_file = _WORKER["setup"]
        base = load_base(model_id, pooling=pooling)
        if base.weights_hash != weights_hash:
            raise RuntimeError(f"model {model_id!r} loaded in a side-by-side process has other "
                               "weights than this one's: run one process (trial_processes=1, "
                               "eval_processes=1)")
        with open(data_file, "rb") as source:
            data = pickle.load(source)  # noqa: S301 - written by this run's parent process
        _WORKER.update(base=base, data=data)
    return _WORKER["base"], _WORKER["data"]

