"""One study's wall time with its trials one after another (one process, all cores) and side by
side (one process per core, one thread each), in one run.

    python benchmarks/side_by_side.py [--task cola] [--rows 2000] [--trials 4] [--space bitfit]

Each way runs ``bitfit.pipeline.run`` (the study alone: no baseline, no final evaluation) in a
fresh home on the same data, and the JSON gives both wall times, ``speedup`` (one after another
/ side by side) and each study's best value. The side-by-side time includes starting its
processes (each loads the model).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from _common import DATA_DIR, Run, emit, log

from bitfit import pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="cola")
    parser.add_argument("--rows", type=int, default=2000, help="training rows (a sample)")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--space", default="bitfit")
    args = parser.parse_args()
    run = Run()
    result: dict[str, object] = {}
    for label, processes in (("one_after_another", 1), ("side_by_side", None)):
        with tempfile.TemporaryDirectory() as home:
            config = pipeline.Config(task=args.task, data_dir=str(DATA_DIR), space=args.space,
                                     n_trials=args.trials, max_train_samples=args.rows,
                                     baseline=False, seeds=0, trial_processes=processes,
                                     home=home)
            log(f"{label}: {args.trials} trials")
            start = time.perf_counter()
            summary = pipeline.run(config, report=pipeline.Report())
            result[f"{label}_s"] = round(time.perf_counter() - start, 1)
            result[f"{label}_best"] = summary["best_value"]
    result["speedup"] = round(float(result["one_after_another_s"])  # type: ignore[arg-type]
                              / float(result["side_by_side_s"]), 3)  # type: ignore[arg-type]
    emit({**result, "task": args.task, "rows": args.rows, "trials": args.trials,
          "space": args.space, **run.info()})


if __name__ == "__main__":
    main()
