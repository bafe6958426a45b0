"""Per-trial overhead of a search: everything that is neither a training step nor an evaluation.

    python benchmarks/trial_overhead.py [--trials 6] [--samples 2000]

Runs a BitFit study (the ``quick`` space: 1 epoch per trial) on a CoLA sample with MLflow on
SQLite in a temporary run home, then, per trial, takes the time from the start of one trial to the
start of the next (the last trial: to its end) and subtracts its training steps and evaluations.
What is left is restoring the model, setting up the optimiser, Optuna, and MLflow logging with the
bias artifact. ``overhead_fraction`` is that over the trial's whole time (median over trials).
For contrast, ``reload_overhead_fraction`` adds a model reload (``load_base``, timed) per trial.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import optuna
from _common import DATA_DIR, Run, emit, log

from bitfit.data import prepare
from bitfit.models import load_base
from bitfit.space import load_space
from bitfit.study import run_study
from bitfit.tasks import load_task
from bitfit.tracking import Tracker

TARGET = 0.03


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--samples", type=int, default=2000, help="CoLA training examples")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run = Run()
    with tempfile.TemporaryDirectory() as home:
        base = load_base()
        data = prepare(load_task("cola"), base.tokenizer, data_dir=DATA_DIR,
                       max_train_samples=args.samples, validation_fraction=0.1,
                       cache_dir=f"{home}/cache")
        outcome = run_study(base, data, load_space("quick"), storage=f"sqlite:///{home}/o.db",
                            study_name="overhead", home=home, n_trials=args.trials,
                            tracker=Tracker(f"sqlite:///{home}/mlflow.db", home=home),
                            log=log)
        finished = time.time()
        trials = sorted(outcome.study.trials, key=lambda t: t.number)
        starts = [t.datetime_start.timestamp() for t in trials] + [finished]
        totals, overheads = [], []
        for trial, start, end in zip(trials, starts, starts[1:], strict=False):
            work = trial.user_attrs["train_time_s"] + trial.user_attrs["eval_time_s"]
            totals.append(end - start)
            overheads.append(end - start - work)
        loads = []
        for _ in range(3):
            tick = time.perf_counter()
            load_base()
            loads.append(time.perf_counter() - tick)
    reload_s = statistics.median(loads)
    fractions = [o / t for o, t in zip(overheads, totals, strict=True)]
    reload_fractions = [(o + reload_s) / (t + reload_s)
                        for o, t in zip(overheads, totals, strict=True)]
    emit({
        "overhead_fraction": round(statistics.median(fractions), 4),
        "reload_overhead_fraction": round(statistics.median(reload_fractions), 4),
        "target": f"<= {TARGET}",
        "meets_target": statistics.median(fractions) <= TARGET,
        "per_trial_overhead_s": [round(o, 3) for o in overheads],
        "per_trial_total_s": [round(t, 2) for t in totals],
        "model_load_s": round(reload_s, 2),
        "setup": {"task": "cola", "train_samples": len(data.train), "space": "quick",
                  "trials": args.trials, "tracking": "MLflow on SQLite, bias artifact per "
                  "trial", "storage": "Optuna on SQLite"},
        **run.info(),
    })


if __name__ == "__main__":
    main()
