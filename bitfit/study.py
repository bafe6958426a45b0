"""Optuna: the objective, sampler, pruner, storage, resuming and failed-trial handling.

Every trial trains on the one loaded base model (``train`` restores it; nothing is reloaded) and
reports each evaluation to Optuna, which may prune it. The study's storage (SQLite in the run home
by default, any Optuna RDB URL otherwise) is the source of truth: the same study name resumes,
finished trials are kept and not rerun, and ``n_trials`` is the study's total budget.
"""

from __future__ import annotations

import dataclasses
import math
import os
import secrets
import socket
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from bitfit.artifacts import save_artifact
from bitfit.data import TaskData
from bitfit.models import BaseModel
from bitfit.space import SearchSpace
from bitfit.train import Evaluation, TrainResult, train

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class TrialFailed(RuntimeError):
    """A trial that ran but produced no usable value (its loss diverged)."""


STORAGE_ENV = "BITFIT_OPTUNA_STORAGE"
GRACE_ENV = "BITFIT_HEARTBEAT_GRACE_S"
OVER_BUDGET = "over the study's budget"


def heartbeat_grace() -> int:
    """Seconds without a heartbeat after which a server study's RUNNING trial is failed and
    retried (its worker died or was stopped): ``$BITFIT_HEARTBEAT_GRACE_S``, default 120."""
    raw = os.environ.get(GRACE_ENV, "120")
    try:
        grace = int(raw)
    except ValueError:
        grace = 0
    if grace < 2:
        raise ValueError(f"{GRACE_ENV}={raw!r} is not a whole number of seconds >= 2: "
                         f"unset it or give e.g. 120")
    return grace


def default_storage(home: str | os.PathLike[str]) -> str:
    """``$BITFIT_OPTUNA_STORAGE``, else a SQLite file in the run home."""
    return os.environ.get(STORAGE_ENV) or f"sqlite:///{Path(home).resolve()}/optuna.db"


def open_study(space: SearchSpace, *, storage: str, study_name: str) -> optuna.Study:
    """Create the study, or load it when it exists (resume)."""
    if storage.startswith("sqlite:"):
        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        backend: str | optuna.storages.BaseStorage = storage
    else:  # a server: a worker that dies leaves a RUNNING trial, failed after the grace period
        backend = _rdb_storage(storage)
    try:
        resumed = len(optuna.load_study(study_name=study_name, storage=backend).trials)
    except KeyError:  # a new study
        resumed = 0
    if not storage.startswith("sqlite:"):
        # Workers sharing a server study open it together with the same trial count: a random
        # part keeps their samplers from drawing the same values (at the cost of repeatability).
        resumed += secrets.randbelow(2**20)
    return optuna.create_study(study_name=study_name, storage=backend,
                               sampler=space.make_sampler(resumed_trials=resumed),
                               pruner=space.make_pruner(),
                               direction=space.direction,  # type: ignore[arg-type]
                               load_if_exists=True)


def _rdb_storage(url: str, attempts: int = 5) -> optuna.storages.RDBStorage:
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(attempts):
        try:
            grace = heartbeat_grace()
            with warnings.catch_warnings():  # heartbeats are marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, heartbeat_interval=max(1, min(30, grace // 4)), grace_period=grace,
                    heartbeat_stale_trial_callback=(
                        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)))
        except SQLAlchemyError:
            # Workers starting together on a new database race to create Optuna's tables;
            # the loser finds them created when it tries again.
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


@dataclass
class StudyOutcome:
    study: optuna.Study
    parent_run_id: str | None
    experiment_id: str | None
    ran: int  # trials this call ran

    @property
    def best(self) -> optuna.trial.FrozenTrial | None:
        done = self.study.get_trials(deepcopy=False, states=[TrialState.COMPLETE])
        return self.study.best_trial if done else None


def _suggest(trial: optuna.Trial, name: str, dist: optuna.distributions.BaseDistribution) -> Any:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, optuna.distributions.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    assert isinstance(dist, optuna.distributions.FloatDistribution)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def run_study(
    base: BaseModel,
    data: TaskData,
    space: SearchSpace,
    *,
    storage: str,
    study_name: str,
    home: str | os.PathLike[str],
    n_trials: int | None = None,
    tracker=None,
    experiment: str | None = None,
    run_params: dict[str, Any] | None = None,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> StudyOutcome:
    """Run trials until the study has ``n_trials`` finished ones (the space's budget by default).

    Args:
        base: the loaded base model, shared by every trial.
        data: tokenised splits; trials select on ``data.selection_split`` and are evaluated on
            it only (dev stays untouched in the default protocol).
        space: the search space.
        storage: an Optuna storage URL.
        study_name: resumes the study when it exists.
        home: the run home (artifacts are staged there before MLflow takes them).
        n_trials: the study's total budget; the space's ``n_trials`` when None.
        tracker: a ``tracking.Tracker`` to record runs in MLflow, or None.
        experiment: MLflow experiment name (default: the task's name).
        run_params: extra parameters for the parent run (data settings, model).
        device: training device.
        log: where progress lines go.
    """
    budget = n_trials or space.n_trials
    selection = data.selection_split
    data = dataclasses.replace(data, evals={selection: data.evals[selection]})
    metric = data.task.main_metric if space.metric == "main" else space.metric
    if metric not in data.task.metrics:
        raise ValueError(f"objective metric {metric!r} is not a metric of task "
                         f"{data.task.name!r}: use one of {', '.join(data.task.metrics)}")
    study = open_study(space, storage=storage, study_name=study_name)
    study.set_user_attr("selection_split", selection)
    experiment_id = parent_id = None
    if tracker is not None:
        experiment_id = tracker.experiment(experiment or data.task.name)
        parent_id = tracker.study_run(experiment_id, study_name, {
            "space": space.name, "method": space.method, "n_trials": budget,
            "metric": metric, "direction": space.direction, "selection_split": selection,
            "sampler": space.sampler["name"], "pruner": space.pruner["name"],
            "storage": storage, "study_name": study_name, "task": data.task.name,
            **(run_params or {})})
        study.set_user_attr("mlflow_parent_run_id", parent_id)

    def objective(trial: optuna.Trial) -> float:
        if sum(n < trial.number for n in _counted(study)) >= budget:
            # another worker took the last place first
            trial.set_user_attr("fail_reason", f"{OVER_BUDGET} of {budget}: not run")
            raise TrialFailed(f"{OVER_BUDGET} of {budget}")
        values = {name: _suggest(trial, name, d) for name, d in space.distributions.items()}
        config = space.config_for(values)
        worker = f"{socket.gethostname()}:{os.getpid()}"
        run_id = (tracker.trial_run(experiment_id, parent_id, trial.number, config, values,
                                    worker=worker) if tracker is not None else None)
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("method", config.method)
        trial.set_user_attr("config", dataclasses.asdict(config))
        if run_id:
            trial.set_user_attr("mlflow_run_id", run_id)
        seen = 0

        def on_evaluation(evaluation: Evaluation) -> bool:
            nonlocal seen
            seen += 1
            if tracker is not None:
                tracker.log_evaluation(run_id, evaluation, int(time.time() * 1000))
            trial.report(evaluation.metrics[selection][metric], step=seen)
            return trial.should_prune()

        try:
            result = train(base, data, config, callback=on_evaluation, device=device,
                           progress=False)
            if result.status == "diverged":
                raise TrialFailed(result.message)
        except Exception as err:  # recorded as FAIL with its reason; the study goes on
            reason = f"{type(err).__name__}: {err}"
            trial.set_user_attr("fail_reason", reason)
            if tracker is not None:
                tracker.end_trial(run_id, "FAIL", reason=reason)
            raise
        state = "PRUNED" if result.status == "stopped" else "COMPLETE"
        value = _value(result, selection, metric)
        trial.set_user_attr("trainable_params", result.trainable_params)
        trial.set_user_attr("train_time_s", result.train_time_s)
        trial.set_user_attr("eval_time_s", result.eval_time_s)
        if tracker is not None and run_id is not None:
            _finish_tracked(tracker, run_id, state, result, base, data, config.method, home)
        if state == "PRUNED":
            raise optuna.TrialPruned(f"pruned at evaluation {seen}")
        return value

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = len(study.get_trials(deepcopy=False, states=FINISHED))
        value = "" if trial.value is None else f" {metric} {trial.value:.4f}"
        best = ""
        if study.get_trials(deepcopy=False, states=[TrialState.COMPLETE]):
            best = (f"; best {study.best_value:.4f} (trial {study.best_trial.number}: "
                    f"{_params_text(study.best_trial.params)})")
        log(f"trial {done} of {budget}: #{trial.number} {trial.state.name}{value} "
            f"({_params_text(trial.params)}){best}")

    before = len(study.trials)
    closed: set[int] = set()
    # One trial at a time, counting the other workers' running trials too, so that workers
    # sharing a study stop together at its budget (a trial past it is not run). A trial whose
    # worker died is failed once its heartbeat is stale, and run again in its place.
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        if tracker is not None:
            _close_stale_runs(study, tracker, closed)
        if len(_counted(study)) >= budget:
            break
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[report])
    if tracker is not None:
        tracker.end_study(parent_id, study)
    return StudyOutcome(study, parent_id, experiment_id, len(study.trials) - before)


def _counted(study: optuna.Study) -> list[int]:
    """Numbers of the trials that spend the budget: finished or running, less the trials that
    were failed for a stale heartbeat and retried (the retry counts) and those not run."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs.get("failed_trial") for t in trials}
    return [t.number for t in trials
            if t.state in (*FINISHED, TrialState.RUNNING)
            and not (t.state == TrialState.FAIL and t.number in retried)
            and not str(t.user_attrs.get("fail_reason", "")).startswith(OVER_BUDGET)]


def _close_stale_runs(study: optuna.Study, tracker, closed: set[int]) -> None:
    """A trial failed for a stale heartbeat left its MLflow run RUNNING: mark it FAILED."""
    trials = study.get_trials(deepcopy=False)
    retries = {t.system_attrs.get("failed_trial"): t.number for t in trials}
    for trial in trials:
        run_id = trial.user_attrs.get("mlflow_run_id")
        if (trial.state != TrialState.FAIL or not run_id or trial.number in closed
                or "fail_reason" in trial.user_attrs):
            continue
        closed.add(trial.number)
        if tracker.run_status(run_id) == "RUNNING":
            again = retries.get(trial.number)
            tracker.end_trial(run_id, "FAIL", reason=(
                "its worker stopped mid-trial (no heartbeat for "
                f"{heartbeat_grace()} s)" + (f"; run again as trial {again}"
                                              if again is not None else "")))


def _value(result: TrainResult, split: str, metric: str) -> float:
    if result.best is None:
        return math.nan
    return result.best.metrics[split][metric]


def _finish_tracked(tracker, run_id: str, state: str, result: TrainResult, base: BaseModel,
                    data: TaskData, method: str, home: str | os.PathLike[str]) -> None:
    if method == "full":  # a whole checkpoint, not a bias artifact: metrics only
        tracker.end_trial(run_id, state, result=result)
        return
    Path(home).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home) as tmp:
        folder = save_artifact(result, base, data.task, Path(tmp) / "artifact")
        tracker.end_trial(run_id, state, result=result, artifact_dir=folder)


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())
