"""Trials per hour with one worker and with two workers (one thread each) on a PostgreSQL study.

    python benchmarks/scale.py [--trials 6] [--samples 1000]

Starts a throwaway PostgreSQL cluster (``infra/stack.py``), tokenises a CoLA sample once, then
runs the ``quick`` space's BitFit trials (no pruning) to the same budget twice: in one worker
process, then in two worker processes sharing one study. Each worker uses one thread and loads
the model once. The rate counts from the first trial's start to the last trial's end, as the
storage records them (start-up and model loading are left out). Key ``speedup_2_workers``,
target >= 1.7.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile

from _common import DATA_DIR, ROOT, Run, emit, log

TARGET = 1.7


def worker(args: argparse.Namespace) -> None:
    import optuna
    import torch

    from bitfit.data import prepare
    from bitfit.models import load_base
    from bitfit.space import load_space
    from bitfit.study import run_study
    from bitfit.tasks import load_task

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = load_base()
    data = prepare(load_task("cola"), base.tokenizer, data_dir=DATA_DIR,
                   max_train_samples=args.samples, validation_fraction=0.1,
                   cache_dir=f"{args.home}/cache")
    # No pruning: both phases then do the same work per trial.
    space = dataclasses.replace(load_space("quick"), pruner={"name": "none"})
    run_study(base, data, space, storage=args.storage, study_name=args.study,
              home=args.home, n_trials=args.trials, log=log)


def _rate(storage: str, study: str) -> tuple[float, int]:
    import optuna

    trials = optuna.load_study(study_name=study, storage=storage).trials
    done = [t for t in trials if t.datetime_complete is not None]
    span = (max(t.datetime_complete for t in done) -
            min(t.datetime_start for t in done)).total_seconds()
    return len(done) * 3600 / span, len(done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--samples", type=int, default=1000, help="CoLA training examples")
    parser.add_argument("--worker", action="store_true", help="internal: run one worker")
    parser.add_argument("--storage")
    parser.add_argument("--study")
    parser.add_argument("--home")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    sys.path.insert(0, str(ROOT / "infra"))
    from stack import Stack

    run = Run()
    with tempfile.TemporaryDirectory() as home, Stack(prefect=False, mlflow=False) as stack:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

        def launch(study: str) -> subprocess.Popen:
            return subprocess.Popen(
                [sys.executable, __file__, "--worker", "--storage", stack.optuna_storage,
                 "--study", study, "--home", home, "--trials", str(args.trials),
                 "--samples", str(args.samples)], env=env)

        rates = {}
        for workers in (1, 2):
            log(f"{workers} worker(s)")
            processes = [launch(f"w{workers}") for _ in range(workers)]
            if any(p.wait() != 0 for p in processes):
                raise RuntimeError(f"a worker failed in the {workers}-worker phase")
            rates[workers] = _rate(stack.optuna_storage, f"w{workers}")
    emit({
        "trials_per_hour_1_worker": round(rates[1][0], 1),
        "trials_per_hour_2_workers": round(rates[2][0], 1),
        "speedup_2_workers": round(rates[2][0] / rates[1][0], 3),
        "target": f">= {TARGET}", "meets_target": rates[2][0] / rates[1][0] >= TARGET,
        "trials": {"1_worker": rates[1][1], "2_workers": rates[2][1]},
        "setup": {"task": "cola", "train_samples": args.samples, "space": "quick",
                  "storage": f"{stack.binaries.describe()} (throwaway cluster)",
                  "threads_per_worker": 1},
        **run.info(),
    })


if __name__ == "__main__":
    main()
