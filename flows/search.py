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
import os
import sys
from pathlib import Path

from bitfit.entry import run_command
from bitfit.settings import quiet_environment

quiet_environment()  # before Prefect reads its settings
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling flows, however we are loaded

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from bitfit.settings import home_dir  # noqa: E402
from bitfit.pipeline import (QUICK, check_search, check_shared_stores,  # noqa: E402
                             evaluation_name, print_summary, read_study_summary,
                             search_study, study_data, trial_count)
from bitfit.pipeline import study_name as default_study_name  # noqa: E402
from evaluate import run_evaluation  # noqa: E402
from prepare import load_model, prepare_data  # noqa: E402

WORKER_DEPLOYMENT = "bitfit-study/worker"  # declared in infra/prefect.yaml


@task(cache_policy=NO_CACHE)
def run_search(base, data, *, space: str, n_trials: int | None, storage: str,
               tracking_uri: str, study_name: str, home: str, run_params: dict) -> dict:
    """Run (or resume) the study and record it in MLflow; returns the summary."""
    return search_study(base, data, space=space, n_trials=n_trials, storage=storage,
                        tracking_uri=tracking_uri, study_name=study_name, home=home,
                        run_params=run_params)


@task(cache_policy=NO_CACHE)
def make_study_data(base, task: str, space, *, data_dir: str | None,
                    max_train_samples: int | None, select_on: str, home: str):
    """The tokenised data a study searches on (from the cache when prepared before)."""
    return study_data(base, task, space, data_dir=data_dir,
                      max_train_samples=max_train_samples, select_on=select_on, home=home)


def check_workers(workers: int, storage: str, tracking_uri: str) -> None:
    """Several workers need stores that all of them reach, and a Prefect server to run on."""
    from prefect.settings import get_current_settings

    check_shared_stores(workers, storage, tracking_uri)
    if workers > 1 and not get_current_settings().api.url:
        raise ValueError(
            f"--workers {workers} runs the workers on a Prefect work pool, and no Prefect server "
            "is configured: set PREFECT_API_URL, deploy infra/prefect.yaml and start a worker "
            "(README: Deployments)")


def run_workers(workers: int, parameters: dict, *, deployment: str = WORKER_DEPLOYMENT,
                poll_s: float = 2.0) -> None:
    """Start ``workers`` runs of the study-worker deployment on its work pool; wait for all."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    try:
        runs = [run_deployment(deployment, parameters=parameters, timeout=0,
                               flow_run_name=f"{parameters['study_name']}-worker-{i}")
                for i in range(workers)]
    except ObjectNotFound:
        raise ValueError(
            f"--workers {workers} runs the study through the deployment {deployment!r}, which "
            "the Prefect server does not have: run `prefect deploy --all --prefect-file "
            "infra/prefect.yaml` from the project root and start a worker on its pool "
            "(README: Deployments)") from None
    print(f"study {parameters['study_name']}: {workers} worker runs on the pool "
          f"({', '.join(r.name for r in runs)})", file=sys.stderr)
    pending = {r.id for r in runs}
    failed = []
    with get_client(sync_client=True) as client:
        while pending:
            time.sleep(poll_s)
            for run_id in list(pending):
                run = client.read_flow_run(run_id)
                if run.state is not None and run.state.is_final():
                    pending.discard(run_id)
                    if not run.state.is_completed():
                        failed.append(f"{run.name} ended {run.state.name}")
    if failed:
        raise RuntimeError(
            f"worker runs did not complete ({'; '.join(failed)}): their logs are on the Prefect "
            "server; the study keeps every finished trial, and the same command resumes it")


@task(cache_policy=NO_CACHE)
def summarize_study(data, *, storage: str, tracking_uri: str, study_name: str, home: str,
                    before: int) -> dict:
    """The summary of a study that the workers ran, read back from the storage and MLflow."""
    return read_study_summary(data, storage=storage, tracking_uri=tracking_uri,
                              study_name=study_name, home=home, before=before)


def _study_stage(base, data, *, workers: int, space: str, n_trials: int | None, storage: str,
                 tracking_uri: str, study_name: str, home: str, run_params: dict,
                 worker_params: dict) -> dict:
    """Run one study here (one worker) or on the work pool (several)."""
    if workers == 1:
        return run_search(base, data, space=space, n_trials=n_trials, storage=storage,
                          tracking_uri=tracking_uri, study_name=study_name, home=home,
                          run_params=run_params)
    before = trial_count(storage, study_name)
    run_workers(workers, {**worker_params, "space": space, "n_trials": n_trials,
                          "storage": storage, "tracking_uri": tracking_uri,
                          "study_name": study_name, "home": home})
    return summarize_study(data, storage=storage, tracking_uri=tracking_uri,
                           study_name=study_name, home=home, before=before)


@flow(name="bitfit-study")
def study(task: str = "cola", model: str | None = None, data_dir: str | None = None,
          space: str = "bitfit", n_trials: int | None = None, storage: str | None = None,
          tracking_uri: str | None = None, study_name: str | None = None,
          max_train_samples: int | None = None, select_on: str = "heldout",
          home: str | None = None, threads: int | None = None) -> dict:
    """One worker of a study: load the model once, then run trials until the study's budget
    is spent, together with every other worker on the same storage. ``threads``: CPU threads
    for training (default: torch's, one per core)."""
    from bitfit.services import refuse_secrets
    from bitfit.space import load_space

    refuse_secrets(storage=storage, tracking_uri=tracking_uri)
    home = str(home_dir(home))  # $BITFIT_HOME, else ./runs
    storage, tracking_uri = check_search(
        task=task, space=space, baseline=False, baseline_space="", baseline_study=None,
        n_trials=n_trials, seeds=0, workers=1, threads=threads, eval_processes=None,
        max_train_samples=max_train_samples, select_on=select_on, storage=storage,
        tracking_uri=tracking_uri, home=home, extra_methods=())
    if threads:
        import torch

        torch.set_num_threads(threads)
    parsed = load_space(space)
    study_name = study_name or default_study_name(
        task, parsed.name, max_train_samples or parsed.max_train_samples, select_on)
    base = load_model(model)
    data = make_study_data(base, task, parsed, data_dir=data_dir,
                           max_train_samples=max_train_samples, select_on=select_on, home=home)
    return run_search(base, data, space=space, n_trials=n_trials, storage=storage,
                      tracking_uri=tracking_uri, study_name=study_name, home=home,
                      run_params={"model": base.model_id, "pooling": base.pooling,
                                  "data_source": data.source,
                                  "max_train_samples": max_train_samples
                                  or parsed.max_train_samples,
                                  "train_examples": len(data.train)})


@flow(name="bitfit-search")
def search(task: str = "cola", model: str | None = None, data_dir: str | None = None,
           space: str = "bitfit", n_trials: int | None = None, storage: str | None = None,
           tracking_uri: str | None = None, study_name: str | None = None,
           max_train_samples: int | None = None, select_on: str = "heldout",
           home: str | None = None, baseline: bool = True, baseline_space: str = "full_ft",
           baseline_study: str | None = None, seeds: int = 5,
           extra_methods: tuple[str, ...] = (), workers: int = 1, quick: bool = False,
           threads: int | None = None, eval_processes: int | None = None) -> dict:
    """Prepare -> BitFit study -> full fine-tuning study -> final evaluation -> report.

    ``baseline=False`` skips full fine-tuning; ``baseline_study`` reuses an existing study (in
    the same storage) instead of running one; ``seeds=0`` stops after the studies. With
    ``workers`` K > 1 each study runs as K runs of the ``bitfit-study/worker`` deployment on its
    work pool, sharing the study on a server storage (PostgreSQL) and an MLflow server.
    ``quick`` is the quick preset: spaces ``quick`` and ``full_ft_quick``. ``threads``: CPU
    threads per worker; by default this machine's cores shared among the K workers (give it when
    the workers have machines of their own). ``eval_processes``: final runs trained at once
    (default: one per core on a CPU, up to 4).
    """
    from bitfit.services import refuse_secrets
    from bitfit.space import load_space

    refuse_secrets(storage=storage, tracking_uri=tracking_uri)
    home = str(home_dir(home))  # $BITFIT_HOME, else ./runs
    if quick:
        space, baseline_space = QUICK["space"], QUICK["baseline_space"]
    storage, tracking_uri = check_search(
        task=task, space=space, baseline=baseline, baseline_space=baseline_space,
        baseline_study=baseline_study, n_trials=n_trials, seeds=seeds, workers=workers,
        threads=threads, eval_processes=eval_processes, max_train_samples=max_train_samples,
        select_on=select_on, storage=storage, tracking_uri=tracking_uri, home=home,
        extra_methods=tuple(extra_methods))
    parsed = load_space(space)  # a bad file failed above, before any work
    samples = max_train_samples or parsed.max_train_samples
    if threads:
        import torch

        torch.set_num_threads(threads)
    study_name = study_name or default_study_name(task, parsed.name, samples, select_on)
    base = load_model(model)
    data = make_study_data(base, task, parsed, data_dir=data_dir,
                           max_train_samples=max_train_samples, select_on=select_on, home=home)
    run_params = {"model": base.model_id, "pooling": base.pooling, "data_source": data.source}
    worker_params = {"task": task, "model": model, "data_dir": data_dir,
                     "max_train_samples": max_train_samples, "select_on": select_on,
                     "threads": threads or max(1, (os.cpu_count() or 1) // workers)}
    summary = _study_stage(base, data, workers=workers, space=space, n_trials=n_trials,
                           storage=storage, tracking_uri=tracking_uri, study_name=study_name,
                           home=home, worker_params=worker_params,
                           run_params={**run_params, "max_train_samples": samples,
                                       "train_examples": len(data.train)})
    full_study = None
    if baseline and baseline_study:
        full_study = baseline_study
    elif baseline:
        full_space = load_space(baseline_space)
        full_samples = max_train_samples or full_space.max_train_samples
        full_study = f"{study_name}-{full_space.name}"
        full_data = data if full_samples == samples else make_study_data(
            base, task, full_space, data_dir=data_dir, max_train_samples=max_train_samples,
            select_on=select_on, home=home)
        summary["baseline"] = _study_stage(
            base, full_data, workers=workers, space=baseline_space, n_trials=None,
            storage=storage, tracking_uri=tracking_uri, study_name=full_study, home=home,
            worker_params=worker_params,
            run_params={**run_params, "max_train_samples": full_samples,
                        "train_examples": len(full_data.train)})
    if seeds > 0 and summary["best_value"] is not None:
        final_data = prepare_data(base, task, data_dir=data_dir, max_length=parsed.max_length,
                                  max_train_samples=max_train_samples,
                                  validation_fraction=None, home=home)
        summary["evaluation"] = run_evaluation(
            base, final_data, storage=storage, bitfit_study=study_name, full_study=full_study,
            seeds=seeds, extra_methods=tuple(extra_methods), tracking_uri=tracking_uri,
            home=home, name=evaluation_name(study_name, full_study, seeds),
            processes=eval_processes)
    return summary


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
                        "and full_ft_quick (searches on 2,000 examples, one epoch)")
    parser.add_argument("--workers", type=int, default=1, help="run each study as this many "
                        "worker runs on the Prefect work pool (needs PostgreSQL storage, an "
                        "MLflow server and the deployments of infra/prefect.yaml)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per worker "
                        "(default: this machine's cores shared among the workers)")
    parser.add_argument("--eval-processes", type=int, default=None, help="final runs trained "
                        "at once (default: one per core on a CPU, up to 4; 1: one after another)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    request = dict(
        task=args.task, model=args.model, data_dir=args.data_dir, space=args.space,
        n_trials=args.n_trials, storage=args.storage, tracking_uri=args.tracking_uri,
        study_name=args.study_name, max_train_samples=args.max_train_samples,
        select_on=args.select_on, home=args.home, baseline=not args.no_baseline,
        baseline_space=args.baseline_space, baseline_study=args.baseline_study,
        seeds=args.seeds, extra_methods=tuple(args.extra_methods), workers=args.workers,
        quick=args.quick, threads=args.threads, eval_processes=args.eval_processes)

    def work() -> dict:
        from bitfit.services import check_prefect_api

        # Checked here, before Prefect starts: a mistake costs no server start, and the
        # passwords never reach the flow run's parameters.
        spaces = QUICK if args.quick else {"space": args.space,
                                           "baseline_space": args.baseline_space}
        storage, tracking_uri = check_search(
            **{k: request[k] for k in ("task", "baseline", "baseline_study", "n_trials",
                                       "seeds", "workers", "threads", "eval_processes",
                                       "max_train_samples", "select_on", "storage",
                                       "tracking_uri", "home", "extra_methods")}, **spaces)
        check_prefect_api()
        return search(**{**request, "storage": storage, "tracking_uri": tracking_uri})

    return run_command(work, show=lambda s: print(json.dumps(s)) if args.json
                       else print_summary(s))


if __name__ == "__main__":
    sys.exit(main())
