"""Processes side by side: a pool of spawned processes that each hold the base model and data.

A study's trials and a final evaluation's seeds are independent runs; on a CPU they train
faster as one-thread processes side by side than as threads in one process. ``in_processes``
runs calls in such processes, ``worker_state`` gives a call its process's model and data.

The processes run bitfit's own functions only, so they do not import the parent's ``__main__``
script again as ``multiprocessing`` otherwise does: a script needs no ``__main__`` guard, and a
flow's process does not load Prefect for nothing.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import multiprocessing
import os
import pickle
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from bitfit.data import TaskData
from bitfit.models import BaseModel, load_base
from bitfit.hardware import resolve_device, share_cores

__all__ = ["MAX_PROCESSES", "NOT_STARTED", "close_kept", "default_processes",
           "in_processes", "kept", "prestart", "worker_state"]

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
    has started: the cores are shared among the busy ones (threads each: cores / busy
    processes, this one's restored after). When one fails or this process is interrupted, the
    others are stopped at once. Raises ``RuntimeError(NOT_STARTED)`` if none could start.

    The processes are those ``prestart`` started, where they fit; inside ``kept()`` they stay
    for the next call instead of ending with this one.
    """
    cores = os.cpu_count() or 1
    threads = max(1, cores // (processes + (meanwhile is not None)))
    pool = _take_kept(base, processes, len(calls)) or _Pool(base, processes)
    working = _Working(pool.count, processes, len(calls), here=meanwhile is not None)
    with tempfile.TemporaryDirectory(prefix="bitfit-") as scratch:
        # the data reach the processes as a file: passed as an argument they would be written
        # into a pipe that a process which dies while starting never drains, and this one
        # would wait on it for ever
        data_file = Path(scratch) / "data.pickle"
        with data_file.open("wb") as out:
            pickle.dump(data, out, protocol=pickle.HIGHEST_PROTOCOL)
        futures: list[Any] = []
        try:
            with _main_not_imported():  # the processes start at these submits
                pool.start()
                futures = [pool.executor.submit(_call, (scratch, str(data_file)), threads,
                                                function, args) for function, args in calls]
            for future in futures:
                future.add_done_callback(working.call_done)
            pool.check_started()  # a process that cannot start is said now, before any work
            if meanwhile is not None:
                mine = torch.get_num_threads()
                torch.set_num_threads(threads)
                share_cores(working.count, cores)
                try:
                    meanwhile()
                finally:
                    share_cores(None)
                    working.here_done()
                    torch.set_num_threads(mine)
            for future in futures:
                yield future.result()
        except BaseException:
            # stop at once: waiting for the running jobs would hold an interrupted run for
            # minutes
            pool.close(now=True)
            raise
        finally:
            for future in futures:
                future.cancel()
    _keep_or_close(pool)


class _Pool:
    """Spawned processes holding one base model, for one ``in_processes`` call or, kept, for
    the calls of a whole command."""

    def __init__(self, base: BaseModel, processes: int) -> None:
        cores = os.cpu_count() or 1
        context = multiprocessing.get_context("spawn")  # fork is unsafe once torch has threads
        self.key = (base.model_id, base.pooling, base.weights_hash)
        self.processes = processes
        self.count = context.Value("i", 0)  # the busy processes (``_Working``)
        self.executor = ProcessPoolExecutor(
            processes, mp_context=context, initializer=_start_worker,
            initargs=(*self.key, max(1, cores // processes), self.count, cores))
        self.started: list[Any] = []

    def start(self) -> None:
        """Start every process now (each loads the model), not as work arrives."""
        if not self.started:
            with _main_not_imported():
                self.started = [self.executor.submit(_started) for _ in range(self.processes)]

    def check_started(self) -> None:
        try:
            for started in self.started:
                started.result()
        except BrokenProcessPool:
            raise RuntimeError(NOT_STARTED) from None

    def fits(self, key: tuple[str, str, str], processes: int, calls: int) -> bool:
        """Whether this pool runs such calls as a pool of its own would: the same model, and
        no more calls at once than ``processes``."""
        return key == self.key and (processes == self.processes
                                    or calls <= processes <= self.processes)

    def close(self, *, now: bool = False, wait: bool = False) -> None:
        """End the processes: when their work is done, or ``now``; ``wait`` for them to be
        gone (ended ``now``, that is quick: they leave nothing behind)."""
        if now:
            for process in list(getattr(self.executor, "_processes", {}).values()):
                process.terminate()
        self.executor.shutdown(wait=wait or not now, cancel_futures=True)


_KEPT: dict[str, Any] = {"pool": None, "depth": 0}


def prestart(base: BaseModel, processes: int) -> None:
    """Start ``processes`` processes holding ``base`` now, while this one does other work;
    the next ``in_processes`` on the same model takes them (``kept()`` closes them if none
    does)."""
    if processes < 1 or _KEPT["pool"] is not None:
        return
    pool = _Pool(base, processes)
    pool.start()
    _KEPT["pool"] = pool


@contextlib.contextmanager
def kept() -> Iterator[None]:
    """One pool for the whole block: ``in_processes`` leaves its processes for the next call
    (the model and the libraries stay loaded); they end with the block."""
    _KEPT["depth"] += 1
    try:
        yield
    finally:
        _KEPT["depth"] -= 1
        if not _KEPT["depth"]:
            close_kept()


def close_kept() -> None:
    """End the kept processes, if any."""
    pool, _KEPT["pool"] = _KEPT["pool"], None
    if pool is not None:
        pool.close(now=True, wait=True)  # idle, or still starting for nothing


def _take_kept(base: BaseModel, processes: int, calls: int) -> _Pool | None:
    pool = _KEPT["pool"]
    key = (base.model_id, base.pooling, base.weights_hash)
    if pool is None or not pool.fits(key, processes, calls):
        return None
    _KEPT["pool"] = None
    return pool


def _keep_or_close(pool: _Pool) -> None:
    if _KEPT["depth"] and _KEPT["pool"] is None:
        _KEPT["pool"] = pool
    else:
        pool.close()


NOT_STARTED = ("a process for running side by side stopped while starting (its error is above): "
               "free memory, or run one process (trial_processes=1, eval_processes=1; "
               "--trial-processes 1 --eval-processes 1)")


@contextlib.contextmanager
def _main_not_imported() -> Iterator[None]:
    """Processes spawned meanwhile do not import the parent's ``__main__`` script again.

    ``multiprocessing.spawn`` imports it in each new process, by path, unless ``__main__``'s
    spec names a module called ``__main__`` (as ``python -m package`` does), which it skips; the
    spec says so while the processes start."""
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    main.__spec__ = importlib.machinery.ModuleSpec("__main__", None)
    try:
        yield
    finally:
        main.__spec__ = spec



def _started() -> bool:
    _worker_base()
    return True


def _call(data: tuple[str, str], threads: int, function: Callable[..., Any],
          args: tuple[Any, ...]) -> Any:
    """In a process: ``function(*args)`` on the data file ``data`` names (read once)."""
    if _WORKER.get("data_key") != data:
        with open(data[1], "rb") as source:
            _WORKER["data"] = pickle.load(source)  # noqa: S301 - written by this run's parent
        _WORKER["data_key"] = data
    torch.set_num_threads(threads)
    return function(*args)


_WORKER: dict[str, Any] = {}


class _Working:
    """How many processes of ``in_processes`` are busy, shared with them for
    ``hardware.take_free_cores``: the calls not finished (at most one per process), and this
    process while ``meanwhile`` runs."""

    def __init__(self, count: Any, processes: int, calls: int, *, here: bool) -> None:
        self.processes, self.left, self.here = processes, calls, int(here)
        self.count = count  # the pool's shared value
        self.count.value = self._busy()
        self._lock = threading.Lock()

    def _busy(self) -> int:
        return min(self.processes, self.left) + self.here

    def call_done(self, _future: Any = None) -> None:
        with self._lock:
            self.left -= 1
            self.count.value = self._busy()

    def here_done(self) -> None:
        with self._lock:
            self.here = 0
            self.count.value = self._busy()


def _start_worker(model_id: str, pooling: str, weights_hash: str, threads: int, working: Any,
                  cores: int) -> None:
    # what may fail is left to the first job (_started): its error then reaches the parent
    from bitfit.settings import quiet_logging

    quiet_logging()  # the libraries' logs at WARNING, as in the commands' own process
    # tqdm's default lock is a multiprocessing semaphore, which a process ended at once would
    # leave registered (a warning at exit); these processes draw no bars
    tqdm.set_lock(threading.RLock())
    torch.set_num_threads(threads)
    share_cores(working, cores)  # and more threads once the others are done
    threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True).start()
    _WORKER.update(setup=(model_id, pooling, weights_hash))


def _exit_with(parent: int) -> None:
    """A process whose parent was killed (SIGKILL: no time to stop it) ends within a second
    instead of waiting for work for ever."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def worker_state() -> tuple[BaseModel, TaskData]:
    """In a process of ``in_processes``: its loaded base model and its call's data."""
    return _worker_base(), _WORKER["data"]


def _worker_base() -> BaseModel:
    if "base" not in _WORKER:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        model_id, pooling, weights_hash = _WORKER["setup"]
        base = load_base(model_id, pooling=pooling)
        if base.weights_hash != weights_hash:
            raise RuntimeError(f"model {model_id!r} loaded in a side-by-side process has other "
                               "weights than this one's: run one process (trial_processes=1, "
                               "eval_processes=1)")
        _WORKER["base"] = base
    return _WORKER["base"]
