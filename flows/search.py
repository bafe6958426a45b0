"""The whole pipeline as a Prefect flow: prepare -> BitFit study -> full fine-tuning baseline
study -> final multi-seed evaluation of both on GLUE dev -> comparison report, every run in MLflow.

    python flows/search.py --task cola --data-dir ../shared/data/glue
    python flows/search.py --task cola --data-dir ../shared/data/glue --quick   # about 6 minutes

Each phase of ``bitfit.pipeline.run`` is a Prefect task; with ``--workers K`` each study runs as K
runs of the ``bitfit-study/worker`` deployment on a work pool. By default the studies select on a
validation split carved from train (10%, seeded, stratified), keeping GLUE dev for the final
evaluation; ``--select-on dev`` follows the paper's protocol. It prints the best trials, the
comparison table and the ``mlflow ui`` command that shows it all (``--json``: one JSON object).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bitfit.entry import run_command
from bitfit.settings import quiet_environment

quiet_environment()  # before Prefect reads its settings
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling flows, however we are loaded

from prefect import flow  # noqa: E402

from bitfit import pipeline  # noqa: E402
from bitfit.commands import search_arguments, search_request  # noqa: E402
from prepare import as_task  # noqa: E402

WORKER_DEPLOYMENT = "bitfit-study/worker"  # declared in infra/prefect.yaml


def check_workers(workers: int, storage: str, tracking_uri: str) -> None:
    """Several workers need stores that all of them reach, and a Prefect server to run on."""
    from prefect.settings import get_current_settings

    pipeline.check_shared_stores(workers, storage, tracking_uri)
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
        import torch

        gpus = torch.cuda.device_count()
        runs = [run_deployment(deployment, timeout=0,
                               parameters={**parameters, "device": pipeline.worker_device(
                                   parameters.get("device", "auto"), i, gpus)},
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


def on_workers(workers: int, data, parameters: dict) -> dict:
    """A study run by K runs of the study-worker deployment; its summary read back."""
    check_workers(workers, parameters["storage"], parameters["tracking_uri"])
    before = pipeline.trial_count(parameters["storage"], parameters["study_name"])
    run_workers(workers, parameters)
    return as_task(pipeline.read_study_summary, data, storage=parameters["storage"],
                   tracking_uri=parameters["tracking_uri"],
                   study_name=parameters["study_name"], home=parameters["home"],
                   before=before)


@flow(name="bitfit-study")
def study(task: str = "cola", model: str | None = None, data_dir: str | None = None,
          space: str = "bitfit", n_trials: int | None = None, storage: str | None = None,
          tracking_uri: str | None = None, study_name: str | None = None,
          max_train_samples: int | None = None, select_on: str = "heldout",
          home: str | None = None, threads: int | None = None, device: str = "auto",
          train_file: str | None = None, dev_file: str | None = None,
          text_columns: str = "sentence", label_column: str = "label",
          regression: bool = False, columns: str | None = None) -> dict:
    """One worker of a study: load the model once, then run trials until the study's budget
    is spent, together with every other worker on the same storage. ``threads``: CPU threads
    for training (default: torch's, one per core)."""
    from bitfit.services import refuse_secrets

    refuse_secrets(storage=storage, tracking_uri=tracking_uri)
    return pipeline.run(task=task, model=model, data_dir=data_dir, space=space,
                        n_trials=n_trials, storage=storage, tracking_uri=tracking_uri,
                        study_name=study_name, max_train_samples=max_train_samples,
                        select_on=select_on, home=home, baseline=False, seeds=0,
                        threads=threads, train_file=train_file, dev_file=dev_file,
                        text_columns=text_columns, label_column=label_column,
                        regression=regression, columns=columns, device=device,
                        phase=as_task)


@flow(name="bitfit-search")
def search(task: str = "cola", model: str | None = None, data_dir: str | None = None,
           space: str = "bitfit", n_trials: int | None = None, storage: str | None = None,
           tracking_uri: str | None = None, study_name: str | None = None,
           max_train_samples: int | None = None, select_on: str = "heldout",
           home: str | None = None, baseline: bool = True, baseline_space: str = "full_ft",
           baseline_study: str | None = None, seeds: int = 5,
           extra_methods: tuple[str, ...] = (), workers: int = 1, quick: bool = False,
           threads: int | None = None, eval_processes: int | None = None,
           device: str = "auto", train_file: str | None = None, dev_file: str | None = None,
           text_columns: str = "sentence", label_column: str = "label",
           regression: bool = False, columns: str | None = None) -> dict:
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

    refuse_secrets(storage=storage, tracking_uri=tracking_uri)
    return pipeline.run(task=task, model=model, data_dir=data_dir, space=space,
                        n_trials=n_trials, storage=storage, tracking_uri=tracking_uri,
                        study_name=study_name, max_train_samples=max_train_samples,
                        select_on=select_on, home=home, baseline=baseline,
                        baseline_space=baseline_space, baseline_study=baseline_study,
                        seeds=seeds, extra_methods=tuple(extra_methods), workers=workers,
                        quick=quick, threads=threads, eval_processes=eval_processes,
                        train_file=train_file, dev_file=dev_file, text_columns=text_columns,
                        label_column=label_column, regression=regression, columns=columns,
                        device=device, phase=as_task, on_workers=on_workers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    search_arguments(parser)
    args = parser.parse_args(argv)
    request = search_request(args)

    def work() -> dict:
        from bitfit.services import check_prefect_api

        # Checked here, before Prefect starts: a mistake costs no server start, and the
        # passwords never reach the flow run's parameters.
        spaces = pipeline.QUICK if args.quick else {"space": args.space,
                                                    "baseline_space": args.baseline_space}
        storage, tracking_uri = pipeline.check_search(
            **{k: request[k] for k in ("task", "baseline", "baseline_study", "n_trials",
                                       "seeds", "workers", "threads", "eval_processes",
                                       "max_train_samples", "select_on", "storage",
                                       "tracking_uri", "home", "extra_methods")}, **spaces,
            own=pipeline.OwnData.from_request(request))
        check_workers(args.workers, storage, tracking_uri)
        check_prefect_api()
        return search(**{**request, "storage": storage, "tracking_uri": tracking_uri})

    return run_command(work, show=lambda s: print(json.dumps(s)) if args.json
                       else pipeline.print_summary(s))


if __name__ == "__main__":
    sys.exit(main())
