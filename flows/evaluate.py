"""Final evaluation flow: the best configuration of a BitFit study and of a full fine-tuning
study, each trained with several seeds on the whole training split and compared on GLUE dev.

    python flows/evaluate.py --task cola --data-dir ../shared/data/glue \\
        --bitfit-study cola-bitfit --full-study cola-bitfit-full --seeds 5
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # stdout is ours
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling flows, however we are loaded

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from bitfit.cli import home_dir  # noqa: E402
from prepare import load_model, prepare_data  # noqa: E402

EXTRA_METHODS = ("frozen", "rand")


@task(cache_policy=NO_CACHE)
def run_evaluation(base, data, *, storage: str, bitfit_study: str, full_study: str | None,
                   seeds: int, extra_methods: tuple[str, ...], tracking_uri: str,
                   home: str, name: str, processes: int | None = None) -> dict:
    """Train each method's best configuration with each seed; the comparison report."""
    from bitfit.compare import best_config, compare
    from bitfit.tracking import Tracker

    configs = {"bitfit": best_config(storage, bitfit_study)}
    if full_study:
        configs["full"] = best_config(storage, full_study)
    for method in extra_methods:
        if method not in EXTRA_METHODS:
            raise ValueError(f"extra method {method!r} is not one of {', '.join(EXTRA_METHODS)}")
        configs[method] = dataclasses.replace(configs["bitfit"], method=method)
    comparison = compare(base, data, configs, seeds=seeds, home=home, name=name,
                         tracker=Tracker(tracking_uri, home=home), processes=processes,
                         log=lambda line: print(line, file=sys.stderr))
    return {"table": comparison.markdown, "p_value": comparison.p_value,
            "t_statistic": comparison.t_statistic, "report": str(comparison.folder),
            "evaluation_run_id": comparison.parent_run_id,
            "best_artifact": comparison.best_artifact, "recipe": comparison.recipe(),
            "runs": {f"{r.method}-seed{r.seed}": r.metrics for r in comparison.runs}}


@flow(name="bitfit-evaluate")
def evaluate(task: str = "cola", bitfit_study: str = "cola-bitfit", full_study: str | None = None,
             storage: str | None = None, seeds: int = 5, extra_methods: tuple[str, ...] = (),
             model: str | None = None, data_dir: str | None = None,
             max_train_samples: int | None = None, max_length: int = 128,
             tracking_uri: str | None = None, home: str = "runs",
             processes: int | None = None) -> dict:
    """Best configs -> S seeds each on the whole training split -> comparison on dev.

    ``processes``: runs trained at once (default: one per core on a CPU, up to 4; 1: one after
    another)."""
    from bitfit.study import default_storage
    from bitfit.tracking import default_tracking_uri

    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    base = load_model(model)
    data = prepare_data(base, task, data_dir=data_dir, max_length=max_length,
                        max_train_samples=max_train_samples, validation_fraction=None,
                        home=home)
    return run_evaluation(base, data, storage=storage or default_storage(home),
                          bitfit_study=bitfit_study, full_study=full_study, seeds=seeds,
                          extra_methods=tuple(extra_methods),
                          tracking_uri=tracking_uri or default_tracking_uri(home), home=home,
                          name=f"{bitfit_study}-vs-{full_study or 'none'}-s{seeds}",
                          processes=processes)


def print_report(summary: dict) -> None:
    print(summary["table"])
    if summary["p_value"] == summary["p_value"]:  # not NaN
        print(f"Welch's t-test, bitfit vs full: t = {summary['t_statistic']:.3f}, "
              f"p = {summary['p_value']:.4f}")
    print(f"report, table and plots: {summary['report']}")
    if summary["best_artifact"]:
        print(f"best BitFit seed's artifact: {summary['best_artifact']}; use it with:")
        print(summary["recipe"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="cola")
    parser.add_argument("--bitfit-study", required=True)
    parser.add_argument("--full-study", default=None)
    parser.add_argument("--storage", default=None)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--extra-methods", nargs="*", default=[], choices=EXTRA_METHODS)
    parser.add_argument("--model", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--home", default=str(home_dir()))
    parser.add_argument("--processes", type=int, default=None, help="runs trained at once "
                        "(default: one per core on a CPU, up to 4)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = evaluate(task=args.task, bitfit_study=args.bitfit_study, full_study=args.full_study,
                      storage=args.storage, seeds=args.seeds,
                      extra_methods=tuple(args.extra_methods), model=args.model,
                      data_dir=args.data_dir, max_train_samples=args.max_train_samples,
                      tracking_uri=args.tracking_uri, home=args.home,
                      processes=args.processes)
    if args.json:
        print(json.dumps(result))
    else:
        print_report(result)
