"""The final evaluation's wall time: runs one after another in one process (all cores) against
runs side by side in one process per core (one thread each), same runs, same run of this script.

    python benchmarks/final_eval.py [--samples 3000] [--seeds 2] [--epochs 1]

BitFit (qm2) and full fine-tuning, ``--seeds`` seeds each, on a CoLA sample; the parallel phase
counts its processes' start-up (imports, model load). Key ``speedup_processes``: how many times
as fast the default (``processes=None``) is as ``processes=1``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from _common import CACHE_DIR, DATA_DIR, Run, emit, log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3000, help="CoLA training examples")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()

    from bitfit.compare import compare, default_processes
    from bitfit.data import prepare
    from bitfit.models import load_base
    from bitfit.tasks import load_task
    from bitfit.train import TrainConfig

    run = Run()
    base = load_base()
    data = prepare(load_task("cola"), base.tokenizer, data_dir=DATA_DIR,
                   max_train_samples=args.samples, cache_dir=CACHE_DIR)
    configs = {"bitfit": TrainConfig(subset="qm2", learning_rate=5e-3, epochs=args.epochs),
               "full": TrainConfig(method="full", learning_rate=5e-5, epochs=args.epochs)}
    jobs = len(configs) * args.seeds
    processes = default_processes("auto", jobs)
    seconds = {}
    with tempfile.TemporaryDirectory() as home:
        for label, value in (("sequential", 1), ("parallel", None)):
            log(f"{label}: {jobs} runs")
            tick = time.perf_counter()
            compare(base, data, configs, seeds=args.seeds, home=home, name=label,
                    processes=value, log=log)
            seconds[label] = time.perf_counter() - tick
    emit({
        "sequential_s": round(seconds["sequential"], 1),
        "parallel_s": round(seconds["parallel"], 1),
        "speedup_processes": round(seconds["sequential"] / seconds["parallel"], 3),
        "processes": processes,
        "setup": {"task": "cola", "train_samples": len(data.train), "runs": jobs,
                  "epochs": args.epochs, "methods": list(configs)},
        **run.info(),
    })


if __name__ == "__main__":
    main()
