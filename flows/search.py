"""The whole pipeline: prepare -> BitFit study -> full fine-tuning baseline study -> final
multi-seed evaluation of both on GLUE dev -> comparison report, every run in MLflow.

    python flows/search.py --task cola --data-dir ../shared/data/glue
    python flows/search.py --task cola --data-dir ../shared/data/glue --quick   # about 5 minutes

By default the studies select on a validation split carved from train (10%, seeded, stratified),
keeping GLUE dev for the final evaluation; ``--select-on dev`` follows the paper's protocol. It
prints the best trials, the comparison table and the ``mlflow ui`` command that shows it all
(``--json``: one JSON object).
"""

from __future__ import annotations

import argparse
import json
import logging
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
from evaluate import print_report, run_evaluation  # noqa: E402
from prepare import load_model, prepare_data  # noqa: E402

QUICK = {"space": "quick", "baseline_space": "full_ft_quick", "seeds": 5}


@task(cache_policy=NO_CACHE)
def run_search(base, data, *, space: str, n_trials: int | None, storage: str,
               tracking_uri: str, study_name: str, home: str, run_params: dict) -> dict:
    """Run (or resume) the study and record it in MLflow; returns the summary."""
    import optuna

    from bitfit.space import load_space
    from bitfit.study import run_study
    from bitfit.tracking import Tracker, mask_url, ui_command

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    outcome = run_study(base, data, load_space(space), storage=storage, study_name=study_name,
                        home=home, n_trials=n_trials, tracker=Tracker(tracking_uri, home=home),
                        run_params=run_params, log=lambda line: print(line, file=sys.stderr))
    best = outcome.best
    return {
        "study_name": study_name, "storage": mask_url(storage),
        "tracking_uri": mask_url(tracking_uri), "experiment_id": outcome.experiment_id,
        "mlflow_parent_run_id": outcome.parent_run_id, "trials_run": outcome.ran,
        "trials": len(outcome.study.trials), "selection_split": data.selection_split,
        "metric": data.task.main_metric,
        "best_value": None if best is None else best.value,
        "best_params": None if best is None else best.params,
        "best_trial": None if best is None else best.number,
        "mlflow_ui": ui_command(tracking_uri, home),
    }


@flow(name="bitfit-search")
def search(task: str = "cola", model: str | None = None, data_dir: str | None = None,
           space: str = "bitfit", n_trials: int | None = None, storage: str | None = None,
           tracking_uri: str | None = None, study_name: str | None = None,
           max_train_samples: int | None = None, select_on: str = "heldout",
           home: str = "runs", baseline: bool = True, baseline_space: str = "full_ft",
           baseline_study: str | None = None, seeds: int = 5,
           extra_methods: tuple[str, ...] = ()) -> dict:
    """Prepare -> BitFit study -> full fine-tuning study -> final evaluation -> report.

    ``baseline=False`` skips full fine-tuning; ``baseline_study`` reuses an existing study (in
    the same storage) instead of running one; ``seeds=0`` stops after the studies.
    """
    from bitfit.space import load_space
    from bitfit.study import default_storage
    from bitfit.tracking import default_tracking_uri

    if select_on not in ("heldout", "dev"):
        raise ValueError(f"select_on must be 'heldout' or 'dev', got {select_on!r}")
    parsed = load_space(space)  # a bad file fails before any work
    samples = max_train_samples or parsed.max_train_samples
    storage = storage or default_storage(home)
    tracking_uri = tracking_uri or default_tracking_uri(home)
    study_name = study_name or "-".join(
        [task, parsed.name] + ([f"n{samples}"] if samples else []) +
        (["dev"] if select_on == "dev" else []))
    base = load_model(model)
    fraction = 0.1 if select_on == "heldout" else None
    data = prepare_data(base, task, data_dir=data_dir, max_length=parsed.max_length,
                        max_train_samples=samples, validation_fraction=fraction, home=home)
    run_params = {"model": base.model_id, "pooling": base.pooling, "data_source": data.source}
    summary = run_search(base, data, space=space, n_trials=n_trials, storage=storage,
                         tracking_uri=tracking_uri, study_name=study_name, home=home,
                         run_params={**run_params, "max_train_samples": samples,
                                     "train_examples": len(data.train)})
    full_study = None
    if baseline and baseline_study:
        full_study = baseline_study
    elif baseline:
        full_space = load_space(baseline_space)
        full_samples = max_train_samples or full_space.max_train_samples
        full_study = f"{study_name}-{full_space.name}"
        full_data = data if full_samples == samples else prepare_data(
            base, task, data_dir=data_dir, max_length=full_space.max_length,
            max_train_samples=full_samples, validation_fraction=fraction, home=home)
        summary["baseline"] = run_search(
            base, full_data, space=baseline_space, n_trials=None, storage=storage,
            tracking_uri=tracking_uri, study_name=full_study, home=home,
            run_params={**run_params, "max_train_samples": full_samples,
                        "train_examples": len(full_data.train)})
    if seeds > 0 and summary["best_value"] is not None:
        final_data = prepare_data(base, task, data_dir=data_dir, max_length=parsed.max_length,
                                  max_train_samples=max_train_samples,
                                  validation_fraction=None, home=home)
        summary["evaluation"] = run_evaluation(
            base, final_data, storage=storage, bitfit_study=study_name, full_study=full_study,
            seeds=seeds, extra_methods=tuple(extra_methods), tracking_uri=tracking_uri,
            home=home, name=f"{study_name}-vs-{full_study or 'none'}-s{seeds}")
    return summary


def _print(summary: dict) -> None:
    for study in (summary, summary.get("baseline")):
        if study is None:
            continue
        if study["best_value"] is None:
            print(f"study {study['study_name']}: no trial completed yet")
            continue
        params = ", ".join(f"{k}={v}" for k, v in study["best_params"].items())
        print(f"study {study['study_name']}: best {study['metric']} on "
              f"{study['selection_split']} {study['best_value']:.4f} "
              f"(trial {study['best_trial']}: {params}); {study['trials']} trials in "
              f"{study['storage']}")
    if "evaluation" in summary:
        print()
        print_report(summary["evaluation"])
        print()
    print(f"MLflow: search run {summary['mlflow_parent_run_id']}"
          + (f", evaluation run {summary['evaluation']['evaluation_run_id']}"
             if "evaluation" in summary else "") + f" in {summary['tracking_uri']}")
    print(f"see it: {summary['mlflow_ui']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="cola")
    parser.add_argument("--model", default=None, help="local folder or Hub id (default: the "
                        "bundled all-MiniLM-L6-v2)")
    parser.add_argument("--data-dir", default=None, help="GLUE folder (default: "
                        "$BITFIT_GLUE_DIR, else the Hub)")
    parser.add_argument("--space", default="bitfit", help="a search-space YAML, or a shipped "
                        "one: bitfit, full_ft, terms, quick")
    parser.add_argument("--n-trials", type=int, default=None, help="the study's total budget "
                        "(default: the space's)")
    parser.add_argument("--storage", default=None, help="Optuna storage URL (default: "
                        "sqlite:///<home>/optuna.db)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: "
                        "$MLFLOW_TRACKING_URI, else sqlite:///<home>/mlflow.db)")
    parser.add_argument("--study-name", default=None, help="the same name resumes the study")
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--select-on", default="heldout", choices=("heldout", "dev"))
    parser.add_argument("--home", default=str(home_dir()))
    parser.add_argument("--no-baseline", action="store_true", help="skip full fine-tuning")
    parser.add_argument("--baseline-space", default="full_ft", help="the baseline's space")
    parser.add_argument("--baseline-study", default=None, help="reuse this full fine-tuning "
                        "study (same storage) instead of running one")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per method in the final "
                        "evaluation (0: stop after the studies)")
    parser.add_argument("--extra-methods", nargs="*", default=[], choices=("frozen", "rand"),
                        help="also evaluate head-only and the random baseline")
    parser.add_argument("--quick", action="store_true", help="the quick preset: spaces quick "
                        "and full_ft_quick (searches on 2,000 examples, one epoch), 5 seeds")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.quick:
        args.space, args.baseline_space, args.seeds = (QUICK["space"], QUICK["baseline_space"],
                                                       QUICK["seeds"])
    for name in ("prefect", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        summary = search(task=args.task, model=args.model, data_dir=args.data_dir,
                         space=args.space, n_trials=args.n_trials, storage=args.storage,
                         tracking_uri=args.tracking_uri, study_name=args.study_name,
                         max_train_samples=args.max_train_samples, select_on=args.select_on,
                         home=args.home, baseline=not args.no_baseline,
                         baseline_space=args.baseline_space, baseline_study=args.baseline_study,
                         seeds=args.seeds, extra_methods=tuple(args.extra_methods))
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary))
    else:
        _print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
