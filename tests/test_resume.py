"""Which folder the same final evaluation goes on in, and which of its seeds count as finished
(bitfit.resume); the whole resumed evaluation is tested in tests/test_compare.py."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys

from bitfit.artifacts import TENSORS
from bitfit.interrupts import _start_time
from bitfit.report import SeedRun
from bitfit.resume import (RECORD, SeedRecord, finish, finished_seeds, open_folder,
                           seed_file)
from bitfit.results import Evaluation
from bitfit.train import TrainConfig

SETTINGS = {"seeds": 2, "bitfit.learning_rate": 0.001}


def _open(home, settings=SETTINGS):
    lines: list[str] = []
    opened = open_folder(home, "e", settings, lines.append)
    return opened, lines


def test_the_same_unfinished_evaluation_goes_on_in_its_folder_and_run_key(tmp_path):
    first, _ = _open(tmp_path)
    again, lines = _open(tmp_path)

    assert not first.resumed and again.resumed
    assert again.folder == first.folder == tmp_path / "e" and again.run_key == first.run_key
    assert lines == []
    finish(again.folder)
    fresh, lines = _open(tmp_path)  # a finished evaluation is kept: the next starts anew
    assert not fresh.resumed and fresh.folder == tmp_path / "e-2" and lines == []
    assert fresh.run_key != first.run_key


def test_other_settings_start_a_new_folder_and_say_what_differs(tmp_path):
    first, _ = _open(tmp_path)
    changed, lines = _open(tmp_path, {**SETTINGS, "bitfit.learning_rate": 0.002})

    assert not changed.resumed and changed.folder == tmp_path / "e-2"
    assert lines == [f"evaluation e: {first.folder} was started with other settings "
                     "(bitfit.learning_rate 0.001 -> 0.002), so it is not resumed: starting "
                     f"{changed.folder}"]
    back, lines = _open(tmp_path)  # the first settings again: their folder, not the newest
    assert back.resumed and back.folder == first.folder and lines == []


def test_a_folder_that_a_live_process_runs_is_not_taken_and_a_dead_ones_is(tmp_path):
    first, _ = _open(tmp_path)
    record = json.loads((first.folder / RECORD).read_text())
    parent = os.getppid()  # alive for as long as this test runs
    live = f"{socket.gethostname()}:{parent}:{_start_time(parent)}"
    (first.folder / RECORD).write_text(json.dumps({**record, "owner": live}))

    other, lines = _open(tmp_path)
    assert not other.resumed and other.folder == tmp_path / "e-2"
    assert f"is being run by another process ({live})" in lines[0]

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    for folder in (first.folder, other.folder):
        record = json.loads((folder / RECORD).read_text())
        (folder / RECORD).write_text(json.dumps(
            {**record, "owner": f"{socket.gethostname()}:{gone}:1"}))
    taken, _ = _open(tmp_path)
    assert taken.resumed and taken.folder == other.folder  # the newest of the two


def _record(folder, config, *, artifact=True):
    out = folder / f"bitfit-seed{config.seed}"
    if artifact:
        out.mkdir(parents=True)
        (out / TENSORS).write_bytes(b"tensors")
    run = SeedRun("bitfit", config.seed, {"mcc": 0.25}, {}, [0.25], 10, 0.1, 40, 400, 1.0, 1.0,
                  run_id="r", artifact=str(out) if artifact else "")
    evaluation = Evaluation(step=5, epoch=1.0, metrics={"validation": {"mcc": 0.25}},
                            train_loss=0.6, main=0.25)
    SeedRecord(run, [evaluation], dataclasses.asdict(config)).save(folder)


def test_a_seed_counts_as_finished_only_with_its_config_and_its_artifact(tmp_path):
    jobs = [("bitfit", TrainConfig(seed=seed, epochs=1)) for seed in range(4)]
    _record(tmp_path, jobs[0][1])
    _record(tmp_path, dataclasses.replace(jobs[1][1], learning_rate=0.5))  # another config
    _record(tmp_path, jobs[2][1])
    (tmp_path / "bitfit-seed2" / TENSORS).unlink()  # its artifact is gone
    seed_file(tmp_path, "bitfit", 3).with_suffix(".tmp").write_text('{"run": {"meth')  # torn

    found = finished_seeds(tmp_path, jobs)

    assert list(found) == [("bitfit", 0)]
    record = found[("bitfit", 0)]
    assert record.run.metrics == {"mcc": 0.25} and record.run.run_id == "r"
    assert record.evaluations[0].metrics == {"validation": {"mcc": 0.25}}
    assert TrainConfig(**record.config) == jobs[0][1]
