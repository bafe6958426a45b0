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

from bitfit.entry import positive, quiet_environment, run_command

quiet_environment()  # before Prefect reads its settings
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling flows, however we are loaded

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from bitfit.cli import home_dir  # noqa: E402
from evaluate import EXTRA_METHODS, print_report, run_evaluation  # noqa: E402
from prepare import load_model, prepare_data  # noqa: E402

QUICK = {"space": "quick", "baseline_space": "full_ft_quick"}
WORKER_DEPLOYMENT = "bitfit-study/worker"  # declared in infra/prefect.yaml


@task(cache_policy=NO_CACHE)
def run_search(base, data, *, space: str, n_trials: int | None, storage: str,
               tracking_uri: str, study_name: str, home: str, run_params: dict) -> dict:
    """Run (or resume) the study and record it in MLflow; returns the summary."""
    from bitfit.space import load_space
    from bitfit.study import run_study
    from bitfit.tracking import Tracker

    outcome = run_study(base, data, load_space(space), storage=storage, study_name=study_name,
                        home=home, n_trials=n_trials, tracker=Tracker(tracking_uri, home=home),
                        run_params=run_params, log=lambda line: print(line, file=sys.stderr))
    return _summary(outcome.study, outcome.experiment_id, outcome.ran, data, storage=storage,
                    tracking_uri=tracking_uri, home=home)


def _summary(study, experiment_id: str | None, ran: int, data, *, storage: str,
             tracking_uri: str, home: str) -> dict:
    from optuna.trial import TrialState

    from bitfit.tracking import mask_url, ui_command

    best = study.best_trial if study.get_trials(states=[TrialState.COMPLETE]) else None
    return {
        "study_name": study.study_name, "storage": mask_url(storage),
        "tracking_uri": mask_url(tracking_uri), "experiment_id": experiment_id,
        "mlflow_parent_run_id": study.user_attrs.get("mlflow_parent_run_id"),
        "trials_run": ran, "trials": len(study.trials), "selection_split": data.selection_split,
        "metric": data.task.main_metric,
        "best_value": None if best is None else best.value,
        "best_params": None if best is None else best.params,
        "best_trial": None if best is None else best.number,
        "mlflow_ui": ui_command(tracking_uri, home),
    }


def check_workers(workers: int, storage: str, tracking_uri: str) -> None:
    """Several workers need stores that all of them reach, and a Prefect server to run on."""
    from prefect.settings import get_current_settings

    from bitfit.tracking import mask_url

    if workers < 1:
        raise ValueError(f"--workers must be a whole number of 1 or more, got {workers}")
    if workers == 1:
        return
    if storage.startswith("sqlite:"):
        raise ValueError(
            f"--workers {workers} needs an Optuna storage that every worker can reach and write "
            f"to at once, and {mask_url(storage)} is a SQLite file: use PostgreSQL "
            "(--storage postgresql://USER@HOST/DB or $BITFIT_OPTUNA_STORAGE; "
            "python infra/stack.py starts one), or run with --workers 1")
    if not tracking_uri.startswith(("http://", "https://", "databricks")):
        raise ValueError(
            f"--workers {workers} needs an MLflow tracking server that every worker logs to, "
            f"and {mask_url(tracking_uri)} is local to this machine: set --tracking-uri or "
            "$MLFLOW_TRACKING_URI to http://HOST:PORT (python infra/stack.py starts one)")
    if not get_current_settings().api.url:
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


def check_request(*, task: str, space: str, baseline: bool, baseline_space: str,
                  baseline_study: str | None, n_trials: int | None, seeds: int, workers: int,
                  threads: int | None, eval_processes: int | None,
                  max_train_samples: int | None, select_on: str, storage: str | None,
                  tracking_uri: str | None, home: str,
                  extra_methods: tuple[str, ...]) -> tuple[str, str]:
    """Everything about a request that can be checked before any model or data is loaded:
    counts, the task, the spaces and their objective, the home, and the stores (each must
    answer within seconds). Returns the storage URL and tracking URI to use, without secrets."""
    from bitfit.services import (check_storage, check_tracking, move_secrets,
                                 secrets_from_environment)
    from bitfit.space import check_metric, load_space
    from bitfit.study import default_storage
    from bitfit.tasks import load_task
    from bitfit.tracking import default_tracking_uri

    positive(n_trials=n_trials, workers=workers, threads=threads,
             eval_processes=eval_processes, max_train_samples=max_train_samples)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 0:
        raise ValueError(f"--seeds must be a whole number, 0 (stop after the studies) or more, "
                         f"got {seeds!r}")
    if select_on not in ("heldout", "dev"):
        raise ValueError(f"--select-on must be heldout or dev, got {select_on!r}")
    for method in extra_methods:
        if method not in EXTRA_METHODS:
            raise ValueError(f"extra method {method!r} is not one of "
                             f"{', '.join(EXTRA_METHODS)}")
    glue_task = load_task(task)
    parsed = load_space(space)
    check_metric(parsed, glue_task)
    if seeds > 0 and parsed.method != "bitfit":
        raise ValueError(f"--space {space} searches method {parsed.method!r}, and the final "
                         "evaluation compares the first study as BitFit: give a BitFit space, "
                         "or --seeds 0 to run the study alone")
    if baseline and not baseline_study:
        full = load_space(baseline_space)
        check_metric(full, glue_task)
        if full.method != "full":
            raise ValueError(f"--baseline-space {baseline_space} searches method "
                             f"{full.method!r}, not full fine-tuning: give a space with "
                             "'method: full' (the shipped full_ft), or --no-baseline")
    try:
        Path(home).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot use --home {str(home)!r} ({err.strerror}): choose a folder "
                      "you can write to") from None
    secrets_from_environment()
    storage, tracking_uri = move_secrets(storage or default_storage(home),
                                         tracking_uri or default_tracking_uri(home))
    assert storage is not None and tracking_uri is not None
    check_workers(workers, storage, tracking_uri)
    check_storage(storage)
    check_tracking(tracking_uri)
    if baseline and baseline_study and seeds > 0:
        from bitfit.compare import best_config

        best_config(storage, baseline_study, method="full", task=glue_task.name)
    return storage, tracking_uri


@task(cache_policy=NO_CACHE)
def summarize_study(data, *, storage: str, tracking_uri: str, study_name: str, home: str,
                    before: int) -> dict:
    """The summary of a study that the workers ran, read back from the storage and MLflow."""
    import optuna

    from bitfit.tracking import Tracker

    study = optuna.load_study(study_name=study_name, storage=storage)
    parent = study.user_attrs.get("mlflow_parent_run_id")
    experiment_id = (Tracker(tracking_uri, home=home).client.get_run(parent).info.experiment_id
                     if parent else None)
    return _summary(study, experiment_id, len(study.trials) - before, data, storage=storage,
                    tracking_uri=tracking_uri, home=home)


def _trials(storage: str, study_name: str) -> int:
    import optuna

    try:
        return len(optuna.load_study(study_name=study_name, storage=storage).trials)
    except KeyError:
        return 0


def _study_stage(base, data, *, workers: int, space: str, n_trials: int | None, storage: str,
                 tracking_uri: str, study_name: str, home: str, run_params: dict,
                 worker_params: dict) -> dict:
    """Run one study here (one worker) or on the work pool (several)."""
    if workers == 1:
        return run_search(base, data, space=space, n_trials=n_trials, storage=storage,
                          tracking_uri=tracking_uri, study_name=study_name, home=home,
                          run_params=run_params)
    before = _trials(storage, study_name)
    run_workers(workers, {**worker_params, "space": space, "n_trials": n_trials,
                          "storage": storage, "tracking_uri": tracking_uri,
                          "study_name": study_name, "home": home})
    return summarize_study(data, storage=storage, tracking_uri=tracking_uri,
                           study_name=study_name, home=home, before=before)


def _study_data(base, task: str, space, *, data_dir: str | None, max_train_samples: int | None,
                select_on: str, home: str):
    samples = max_train_samples or space.max_train_samples
    fraction = 0.1 if select_on == "heldout" else None
    return prepare_data(base, task, data_dir=data_dir, max_length=space.max_length,
                        max_train_samples=samples, validation_fraction=fraction, home=home)


@flow(name="bitfit-study")
def study(task: str = "cola", model: str | None = None, data_dir: str | None = None,
          space: str = "bitfit", n_trials: int | None = None, storage: str | None = None,
          tracking_uri: str | None = None, study_name: str | None = None,
          max_train_samples: int | None = None, select_on: str = "heldout",
          home: str = "runs", threads: int | None = None) -> dict:
    """One worker of a study: load the model once, then run trials until the study's budget
    is spent, together with every other worker on the same storage. ``threads``: CPU threads
    for training (default: torch's, one per core)."""
    from bitfit.services import refuse_secrets
    from bitfit.space import load_space

    refuse_secrets(storage=storage, tracking_uri=tracking_uri)
    storage, tracking_uri = check_request(
        task=task, space=space, baseline=False, baseline_space="", baseline_study=None,
        n_trials=n_trials, seeds=0, workers=1, threads=threads, eval_processes=None,
        max_train_samples=max_train_samples, select_on=select_on, storage=storage,
        tracking_uri=tracking_uri, home=home, extra_methods=())
    if threads:
        import torch

        torch.set_num_threads(threads)
    parsed = load_space(space)
    study_name = study_name or _study_name(task, parsed.name, max_train_samples
                                           or parsed.max_train_samples, select_on)
    base = load_model(model)
    data = _study_data(base, task, parsed, data_dir=data_dir,
                       max_train_samples=max_train_samples, select_on=select_on, home=home)
    return run_search(base, data, space=space, n_trials=n_trials, storage=storage,
                      tracking_uri=tracking_uri, study_name=study_name, home=home,
                      run_params={"model": base.model_id, "pooling": base.pooling,
                                  "data_source": data.source,
                                  "max_train_samples": max_train_samples
                                  or parsed.max_train_samples,
                                  "train_examples": len(data.train)})


def _study_name(task: str, space: str, samples: int | None, select_on: str) -> str:
    return "-".join([task, space] + ([f"n{samples}"] if samples else []) +
                    (["dev"] if select_on == "dev" else []))


@flow(name="bitfit-search")
def search(task: str = "cola", model: str | None = None, data_dir: str | None = None,
           space: str = "bitfit", n_trials: int | None = None, storage: str | None = None,
           tracking_uri: str | None = None, study_name: str | None = None,
           max_train_samples: int | None = None, select_on: str = "heldout",
           home: str = "runs", baseline: bool = True, baseline_space: str = "full_ft",
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
    if quick:
        space, baseline_space = QUICK["space"], QUICK["baseline_space"]
    storage, tracking_uri = check_request(
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
    study_name = study_name or _study_name(task, parsed.name, samples, select_on)
    base = load_model(model)
    data = _study_data(base, task, parsed, data_dir=data_dir,
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
        full_data = data if full_samples == samples else _study_data(
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
            home=home, name=f"{study_name}-vs-{full_study or 'none'}-s{seeds}",
            processes=eval_processes)
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
        storage, tracking_uri = check_request(
            **{k: request[k] for k in ("task", "baseline", "baseline_study", "n_trials",
                                       "seeds", "workers", "threads", "eval_processes",
                                       "max_train_samples", "select_on", "storage",
                                       "tracking_uri", "home", "extra_methods")}, **spaces)
        check_prefect_api()
        return search(**{**request, "storage": storage, "tracking_uri": tracking_uri})

    return run_command(work, show=lambda s: print(json.dumps(s)) if args.json else _print(s))


if __name__ == "__main__":
    sys.exit(main())
