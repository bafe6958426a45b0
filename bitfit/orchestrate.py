"""What the Prefect flows share: a phase of the pipeline as a Prefect task, the run's report in
the Prefect UI (logs, progress, results as artifacts), and a study run as K runs of the
study-worker deployment on a work pool (``--workers K``)."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import re
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from bitfit import pipeline

if TYPE_CHECKING:
    from bitfit.data import TaskData

WORKER_DEPLOYMENT = "bitfit-study/worker"  # declared in infra/prefect.yaml


class Ahead:
    """What ``prefect_started`` starts once its block has checked the request: ``processes``
    side-by-side processes (``pipeline.side_processes``) besides the base model."""

    processes: int = 0


@contextlib.contextmanager
def prefect_started(model: str | None = None, pooling: str = "auto") -> Iterator[Ahead]:
    """Make sure the Prefect API answers (``services.check_prefect_api``: Prefect's temporary
    API is started, a server is asked) while the block runs (the flow's checks) and then this
    process loads the base model the flow will use (``pipeline.preload``), and the processes
    the block asked for start loading it too: the server starts in its own process, so the two
    take the time of the longer rather than of both. A mistake the block finds is raised once
    the server has answered (atexit stops it); a server that does not answer is raised after
    the block, and the processes started ahead are stopped."""
    from bitfit.services import check_prefect_api

    failed: list[BaseException] = []

    def start() -> None:
        try:
            check_prefect_api()
        except BaseException as err:  # noqa: BLE001 - raised in the caller's thread below
            failed.append(err)

    # in this thread's context: Prefect's settings (a profile, temporary_settings) live there
    starting = threading.Thread(target=contextvars.copy_context().run, args=(start,),
                                daemon=True, name="bitfit-prefect-start")
    starting.start()
    ahead = Ahead()
    try:
        yield ahead
        pipeline.preload(model, pooling, ahead.processes)
    finally:
        starting.join()
    if failed:
        from bitfit.pool import close_kept

        close_kept()
        raise failed[0]


def as_task(fn, *args, **kwargs):
    """Run one phase of the pipeline as a Prefect task of its own (inputs are models and
    tokenised data, so Prefect's input cache is off; the data cache is the library's)."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    return task(fn, cache_policy=NO_CACHE)(*args, **kwargs)


def flow_fields(flow: Any, config: Any) -> dict[str, Any]:
    """The fields of a config (a dataclass) that ``flow`` takes as parameters."""
    return {k: v for k, v in dataclasses.asdict(config).items()
            if k in flow.parameters.properties}


def artifact_key(text: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes) for ``text``."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:200] or "bitfit"


class PrefectReport(pipeline.Report):
    """The pipeline's report in the Prefect run as well: every progress line in the run's logs,
    a progress artifact per study and final evaluation, and when the run ends a Markdown
    artifact (each study's best trial, the comparison), a table artifact of each study's trials
    and link artifacts to the MLflow runs and the registered model."""

    _log = logging.getLogger("prefect.extra.bitfit")  # the run's logs in the API, not the console

    def __init__(self) -> None:
        self._progress: dict[str, Any] = {}  # artifact ids

    def line(self, text: str) -> None:
        super().line(text)
        self._log.info(text)

    def progress(self, what: str, done: int, total: int) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        percent = 100.0 * done / max(total, 1)
        description = f"{what}: {done} of {total}"
        if what in self._progress:
            update_progress_artifact(self._progress[what], percent, description=description)
        else:
            self._progress[what] = create_progress_artifact(percent, key=artifact_key(what),
                                                            description=description)

    def finished(self, summary: Any) -> None:
        from prefect.runtime import flow_run
        from prefect.settings import get_current_settings

        # where the Prefect UI shows this run (its artifacts and logs); None on the temporary
        # API, which has no UI and ends with the command (Prefect would print "None/flow-runs")
        prefect_run = {"id": str(flow_run.id), "name": flow_run.name,
                       "ui": flow_run.ui_url if get_current_settings().ui_url else None}
        if isinstance(summary, dict):  # a reproduction (bitfit.reproduce)
            summary["prefect_flow_run"] = prefect_run
            _reproduction_artifacts(summary)
            return
        summary.prefect_flow_run = prefect_run
        _summary_artifacts(summary)


def _reproduction_artifacts(summary: dict[str, Any]) -> None:
    """A reproduction's report, and a link to its MLflow run."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact

    from bitfit.tracking import run_url

    name = summary["name"]
    create_markdown_artifact(summary["markdown"], key=artifact_key(f"reproduce-{name}"),
                             description=f"the paper's claims checked on "
                             f"{summary['model']}: tables, verdicts")
    create_link_artifact(run_url(summary["tracking_uri"], summary["experiment_id"],
                                 summary["mlflow_run_id"]),
                         link_text=f"reproduction {name} in MLflow",
                         key=artifact_key(f"mlflow-reproduce-{name}"),
                         description="every run of it, and the report with its plots")


def _summary_artifacts(summary: pipeline.Summary) -> None:
    """A run's or an evaluation's report; each study's trials as a table and its MLflow run as
    a link; links to the evaluation's MLflow run and to the registered model."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    task = summary.task
    create_markdown_artifact(summary.markdown(), key=artifact_key(f"{task}-report"),
                             description=f"{task}: each study's best trial and the comparison")
    studies, evaluation = ((summary.studies, summary.evaluation)
                           if isinstance(summary, pipeline.RunSummary) else ([], summary))
    for study in studies:
        name = study.study_name
        create_table_artifact(study.trial_table, key=artifact_key(f"trials-{name}"),
                              description=f"the trials of study {name}")
        _link(study.tracking_uri, study.experiment_id, study.mlflow_parent_run_id,
              link_text=f"study {name} in MLflow", key=f"mlflow-{name}",
              description=f"the study's run and its trials; {study.mlflow_ui}")
    if evaluation and evaluation.evaluation_run_id:
        _link(evaluation.tracking_uri, evaluation.experiment_id, evaluation.evaluation_run_id,
              link_text="the final evaluation in MLflow", key=f"mlflow-{task}-evaluation",
              description="the evaluation run, its seed runs and the report")
    if evaluation and evaluation.registered_model:
        name = evaluation.registered_model.split("/")[1].split("@")[0]
        _link(evaluation.tracking_uri, None, None, f"/#/models/{name}",
              link_text=f"registered model {evaluation.registered_model}",
              key=f"mlflow-model-{name}", description="load it with mlflow.pyfunc.load_model")


def _link(tracking_uri: str, experiment_id: str | None, run_id: str | None, tail: str = "", *,
          link_text: str, key: str, description: str) -> None:
    """A link artifact to an MLflow page."""
    from prefect.artifacts import create_link_artifact

    from bitfit.tracking import run_url

    create_link_artifact(run_url(tracking_uri, experiment_id, run_id) + tail,
                         link_text=link_text, key=artifact_key(key), description=description)


def check_workers(workers: int, storage: str, tracking_uri: str) -> None:
    """Several workers need stores that all of them reach, and a Prefect server to run on."""
    from prefect.settings import get_current_settings

    pipeline.check_shared_stores(workers, storage, tracking_uri)
    if workers > 1 and not get_current_settings().api.url:
        raise ValueError(
            f"--workers {workers} runs the workers on a Prefect work pool, and no Prefect server "
            "is configured: set PREFECT_API_URL, deploy infra/prefect.yaml and start a worker "
            "(docs/servers.md)")


def run_workers(workers: int, parameters: dict[str, Any], *,
                deployment: str = WORKER_DEPLOYMENT, poll_s: float = 2.0) -> None:
    """Start ``workers`` runs of the study-worker deployment on its work pool, each told its
    index (the worker chooses its device where it runs: GPU i mod the GPUs it sees, for
    ``auto``); wait for all."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    try:
        runs: list[Any] = [
            run_deployment(deployment, timeout=0, parameters={**parameters, "worker": i},
                           flow_run_name=f"{parameters['study_name']}-worker-{i}")
            for i in range(workers)]
    except ObjectNotFound:
        raise ValueError(
            f"--workers {workers} runs the study through the deployment {deployment!r}, which "
            "the Prefect server does not have: run `prefect deploy --all --prefect-file "
            "infra/prefect.yaml` from the project root and start a worker on its pool "
            "(docs/servers.md)") from None
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


def on_workers(config: pipeline.Config, data: TaskData) -> pipeline.StudySummary:
    """The study ``config`` names, run by ``config.workers`` runs of the study-worker
    deployment; its summary read back from the stores."""
    assert config.storage and config.tracking_uri and config.study_name and config.home
    check_workers(config.workers, config.storage, config.tracking_uri)
    before = pipeline.trial_count(config.storage, config.study_name)
    worker = dataclasses.asdict(dataclasses.replace(config, workers=1))
    run_workers(config.workers, {k: v for k, v in worker.items() if k in WORKER_PARAMETERS})
    return as_task(pipeline.read_study_summary, data, storage=config.storage,
                   tracking_uri=config.tracking_uri, study_name=config.study_name,
                   home=config.home, before=before)


# the parameters of the study-worker flow (flows/search.py:study): a worker runs one study
WORKER_PARAMETERS = ("task", "data_dir", "train_file", "dev_file", "text_columns",
                     "label_column", "regression", "columns", "max_train_samples", "max_length",
                     "model", "pooling", "device", "threads", "space", "n_trials", "select_on",
                     "study_name", "storage", "tracking_uri", "home", "experiment")
