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
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from bitfit.data import TaskData
from bitfit.interrupts import Interrupted, is_interruption, owner, owner_alive, signal_name
from bitfit.methods import TABLE
from bitfit.models import BaseModel
from bitfit.services import store_lock
from bitfit.settings import GRACE_ENV, STORAGE_ENV, default_storage
from bitfit.space import SearchSpace
from bitfit.studies import (FailReason, StudyMismatch, StudyOutcome, check_identity, describe,
                            optuna_quiet, reason_of, study_identity, trial_report,
                            trial_start)
from bitfit.studies import counted as _counted
from bitfit.tracker import TrackerProtocol, or_no_tracker
from bitfit.train import Evaluation, TrainResult, train

__all__ = ["STORAGE_ENV", "StudyFailed", "StudyMismatch", "StudyOutcome", "default_storage",
           "open_study", "run_study", "study_identity"]


class TrialFailed(RuntimeError):
    """A trial that ran but produced no usable value (its loss diverged)."""


class StudyFailed(RuntimeError):
    """Every trial a run made failed, and the study has no completed trial."""


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


def open_study(space: SearchSpace, *, storage: str, study_name: str,
               identity: dict[str, Any] | None = None) -> optuna.Study:
    """Create the study, or load it when it exists (resume).

    ``identity`` (see ``study_identity``) is recorded on a new study; resuming a study created
    with another identity raises ``StudyMismatch`` before anything is written.
    """
    if storage.startswith("sqlite:"):
        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        backend: str | optuna.storages.BaseStorage = storage
    else:  # a server: a worker that dies leaves a RUNNING trial, failed after the grace period
        backend = _rdb_storage(storage)
    with store_lock(storage):  # two processes on one new SQLite file race to create its tables
        try:
            existing = optuna.load_study(study_name=study_name, storage=backend)
        except KeyError:  # a new study
            existing = None
        if existing is not None and identity is not None:
            check_identity(existing, identity, storage)
        with optuna_quiet(optuna.logging.WARNING):  # not "A new study created": ours say it
            study = optuna.create_study(study_name=study_name, storage=backend,
                                        sampler=_TrialSeeded(space), pruner=space.make_pruner(),
                                        direction=space.direction,  # type: ignore[arg-type]
                                        load_if_exists=True)
        if identity is not None and "identity" not in study.user_attrs:
            study.set_user_attr("identity", identity)
    return study


class _TrialSeeded(optuna.samplers.BaseSampler):
    """The space's sampler, its seed moved on by each trial's number.

    Trial numbers are handed out by the storage, so processes that share a study (or start
    together on one home) never draw alike, a resumed study does not repeat its first draws, and
    a seeded search stays repeatable.
    """

    def __init__(self, space: SearchSpace) -> None:
        self._space = space
        self._inner = space.make_sampler()

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self._inner = self._space.make_sampler(resumed_trials=trial.number)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):  # type: ignore[no-untyped-def]
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):  # type: ignore[no-untyped-def]
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, name, distribution):  # type: ignore[no-untyped-def]
        return self._inner.sample_independent(study, trial, name, distribution)

    def after_trial(self, study, trial, state, values):  # type: ignore[no-untyped-def]
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()


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
    tracker: TrackerProtocol | None = None,
    experiment: str | None = None,
    run_params: dict[str, Any] | None = None,
    device: str = "auto",
    log: Callable[[str], None] = print,
    progress: Callable[[int, int], None] | None = None,
) -> StudyOutcome:
    """Run trials until the study has ``n_trials`` finished ones (the space's budget by default).

    Args:
        base: the loaded base model, shared by every trial.
        data: tokenised splits; trials select on ``data.selection_split`` and are evaluated on
            it only (dev stays untouched in the default protocol).
        space: the search space.
        storage: an Optuna storage URL.
        study_name: resumes the study when it exists (with the same identity only).
        home: the run home (artifacts are staged there before MLflow takes them).
        n_trials: the study's total budget; the space's ``n_trials`` when None.
        tracker: a ``tracking.Tracker`` to record runs in MLflow; None records nothing.
        experiment: MLflow experiment (default: ``tracker.task_experiment``: bitfit-<task>).
        run_params: extra parameters for the parent run (data settings, model).
        device: training device.
        log: where progress lines go.
        progress: called with (trials done, budget) after each trial.

    Raises:
        StudyMismatch: the study exists with another method, metric, space or data.
        StudyFailed: every trial of this call failed and none of the study completed.
        Interrupted: SIGINT or SIGTERM; the trial it hit is FAIL with reason ``interrupted``
            and runs again first when the study resumes.
    """
    budget = n_trials or space.n_trials
    if budget < 1:
        raise ValueError(f"n_trials must be 1 or more, got {budget}")
    data = dataclasses.replace(data, evals={data.selection_split: data.evals[data.selection_split]})
    metric = _objective_metric(space, data)
    study = _open(space, data, metric, storage=storage, study_name=study_name)
    tracker = or_no_tracker(tracker)
    experiment_id = tracker.experiment(experiment or tracker.task_experiment(data.task.name))
    parent_id = _study_run(tracker, experiment_id, study, space, data, metric=metric,
                           budget=budget, storage=storage, run_params=run_params)
    trial_run = _TrialRunner(base, data, space, metric=metric, budget=budget, study=study,
                             tracker=tracker, experiment_id=experiment_id, parent_id=parent_id,
                             home=home, device=device, log=log)
    before = len(study.trials)
    _optimize(study, trial_run, _reporter(metric, budget, log, progress), log=log)
    tracker.end_study(parent_id, study)
    _check_not_all_failed(study, study.trials[before:], trial_run.owner)
    return StudyOutcome(study, parent_id, experiment_id, len(study.trials) - before)


def _objective_metric(space: SearchSpace, data: TaskData) -> str:
    """The metric trials are judged on: the task's main one unless the space names another."""
    metric = data.task.main_metric if space.metric == "main" else space.metric
    if metric not in data.task.metrics:
        raise ValueError(f"objective metric {metric!r} is not a metric of task "
                         f"{data.task.name!r}: use one of {', '.join(data.task.metrics)}")
    return metric


def _open(space: SearchSpace, data: TaskData, metric: str, *, storage: str,
          study_name: str) -> optuna.Study:
    """Open the study, and record on it its metric's name and the split its trials are judged
    on (``studies.describe``)."""
    study = open_study(space, storage=storage, study_name=study_name,
                       identity=study_identity(space, data, metric))
    describe(study, data, metric)
    return study


def _study_run(tracker: TrackerProtocol, experiment_id: str | None, study: optuna.Study,
               space: SearchSpace, data: TaskData, *, metric: str, budget: int, storage: str,
               run_params: dict[str, Any] | None) -> str | None:
    """The study's parent run, with its settings and data, recorded on the study."""
    selection = data.selection_split
    parent_id = tracker.study_run(experiment_id, study.study_name, {
        "space": space.name, "method": space.method, "n_trials": budget,
        "metric": metric, "direction": space.direction, "selection_split": selection,
        "sampler": space.sampler["name"], "pruner": space.pruner["name"],
        "storage": storage, "study_name": study.study_name, "task": data.task.name,
        **(run_params or {})})
    tracker.log_data(parent_id, data, {"train": "training", selection: "selection"})
    if parent_id is not None:
        study.set_user_attr("mlflow_parent_run_id", parent_id)
    return parent_id


def _reporter(metric: str, budget: int, log: Callable[[str], None],
              progress: Callable[[int, int], None] | None
              ) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """The callback that logs each finished trial and the best so far, and reports progress."""

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done, line = trial_report(study, trial, metric=metric, budget=budget)
        log(line)
        if progress is not None:
            progress(min(done, budget), budget)

    return report


def _optimize(study: optuna.Study, trial_run: _TrialRunner,
              report: Callable[[optuna.Study, optuna.trial.FrozenTrial], None], *,
              log: Callable[[str], None]) -> None:
    """Run trials until the study's budget is spent; an interruption ends the parent run KILLED."""
    closed: set[int] = set()
    # One trial at a time, counting the other workers' running trials too, so that workers
    # sharing a study stop together at its budget (a trial past it is not run). A trial whose
    # worker died or was interrupted is failed and run again in its place. Failures are
    # reported by `report`.
    try:
        with optuna_quiet(optuna.logging.ERROR):
            while True:
                _recover(study, trial_run.tracker, closed, log)
                if len(_counted(study)) >= trial_run.budget:
                    break
                study.optimize(trial_run, n_trials=1, catch=(Exception,), callbacks=[report])
    except BaseException as err:
        if trial_run.parent_id is not None and is_interruption(err):
            trial_run.tracker.stop_run(trial_run.parent_id, "KILLED")
        raise


def _check_not_all_failed(study: optuna.Study, new: list[optuna.trial.FrozenTrial],
                          mine: str) -> None:
    """Raise ``StudyFailed`` when every trial this process ran failed and none completed."""
    ran = [t for t in new if t.user_attrs.get("owner") == mine]
    if ran and all(t.state == TrialState.FAIL for t in ran) and not study.get_trials(
            deepcopy=False, states=[TrialState.COMPLETE]):
        first = ran[0].user_attrs.get("fail_reason", "no reason recorded")
        raise StudyFailed(f"every trial of study {study.study_name!r} failed ({len(ran)} of them; "
                          f"the first: {first}): fix the cause and run the same command again")


class _TrialRunner:
    """The objective: one trial trained on the shared model, reported to Optuna and MLflow."""

    def __init__(self, base: BaseModel, data: TaskData, space: SearchSpace, *, metric: str,
                 budget: int, study: optuna.Study, tracker: TrackerProtocol,
                 experiment_id: str | None,
                 parent_id: str | None, home: str | os.PathLike[str], device: str,
                 log: Callable[[str], None] = print) -> None:
        self.base, self.data, self.space, self.metric = base, data, space, metric
        self.budget, self.study, self.tracker = budget, study, tracker
        self.experiment_id, self.parent_id = experiment_id, parent_id
        self.home, self.device, self.log = home, device, log
        self.owner = owner()

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("owner", self.owner)
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except BaseException as err:  # recorded as FAIL with its reason; the study goes on
            interrupted = is_interruption(err)
            reason = (f"{FailReason.INTERRUPTED.value} by {signal_name(err)}" if interrupted
                      else f"{type(err).__name__}: {err}")
            if "fail_reason" not in trial.user_attrs:
                trial.set_user_attr("fail_reason", reason)
            run_id = trial.user_attrs.get("mlflow_run_id")
            if run_id is not None:
                self.tracker.end_trial(run_id, "FAIL", reason=reason,
                                       status="KILLED" if interrupted else "FAILED")
            if interrupted:  # a KeyboardInterrupt, so that Optuna ends the trial FAIL
                raise Interrupted(signal_name(err)) from err
            raise

    def _run(self, trial: optuna.Trial) -> float:
        if sum(n < trial.number for n in _counted(self.study)) >= self.budget:
            # another worker took the last place first
            over = f"{FailReason.OVER_BUDGET.value} of {self.budget}"
            trial.set_user_attr("fail_reason", f"{over}: not run")
            raise TrialFailed(over)
        values = {name: _suggest(trial, name, d) for name, d in self.space.distributions.items()}
        self.log(trial_start(trial.number, values))
        # a trial is scored after its last epoch, as the final runs are: the best of several
        # epochs would favour runs whose score only fluctuates
        config = dataclasses.replace(self.space.config_for(values), select_best=False)
        tracker = self.tracker
        run_id = tracker.trial_run(self.experiment_id, self.parent_id, trial.number, config,
                                   values, worker=self.owner)
        tracker.log_data(run_id, self.data, {"train": "training",
                                             self.data.selection_split: "selection"})
        if run_id is not None:
            trial.set_user_attr("mlflow_run_id", run_id)
        trial.set_user_attr("worker", self.owner)
        trial.set_user_attr("method", config.method)
        trial.set_user_attr("config", dataclasses.asdict(config))
        seen = 0
        selection = self.data.selection_split

        def on_evaluation(evaluation: Evaluation) -> bool:
            nonlocal seen
            seen += 1
            tracker.log_evaluation(run_id, evaluation, int(time.time() * 1000))
            trial.report(evaluation.metrics[selection][self.metric], step=seen)
            return trial.should_prune()

        # no training-sample score: a trial is judged on its selection split, and the final
        # runs score the training split for the generalisation gap
        result = train(self.base, self.data, config, callback=on_evaluation,
                       device=self.device, progress=False, score_train=False)
        if result.status == "diverged":
            raise TrialFailed(result.message)
        state = "PRUNED" if result.status == "stopped" else "COMPLETE"
        value = _value(result, selection, self.metric)
        trial.set_user_attr("trainable_params", result.trainable_params)
        trial.set_user_attr("train_time_s", result.train_time_s)
        trial.set_user_attr("eval_time_s", result.eval_time_s)
        if run_id is not None:  # the artifact is made only for a run that records it
            _finish_tracked(tracker, run_id, state, result, self.base, self.data, config.method,
                            self.home)
        if state == "PRUNED":
            raise optuna.TrialPruned(f"pruned at evaluation {seen}")
        return value


def _recover(study: optuna.Study, tracker: TrackerProtocol, closed: set[int],
             log: Callable[[str], None]) -> None:
    """Fail the trials whose process is gone (stale heartbeat on a server; a dead pid on this
    host, which SQLite needs as it has no heartbeats), close their MLflow runs, and queue every
    interrupted trial's parameters to run again first."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    storage = study._storage
    for trial in study.get_trials(deepcopy=False, states=[TrialState.RUNNING]):
        recorded = trial.user_attrs.get("owner")
        if not recorded or owner_alive(recorded) is not False:
            continue
        reason = f"{FailReason.INTERRUPTED.value}: its process ({recorded}) is gone"
        try:
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another process recovered it first, or it just finished
        log(f"trial #{trial.number} was left RUNNING by a process that is gone: failed "
            "and queued to run again")
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            tracker.end_trial(run_id, "FAIL", reason=reason, status="KILLED")
    trials = study.get_trials(deepcopy=False)
    queued = {t.user_attrs.get("retry_of") for t in trials}
    for trial in trials:
        if (trial.state == TrialState.FAIL and trial.number not in queued
                and reason_of(trial) is FailReason.INTERRUPTED):
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    _close_stale_runs(study, tracker, closed)


def _close_stale_runs(study: optuna.Study, tracker: TrackerProtocol, closed: set[int]) -> None:
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


def _finish_tracked(tracker: TrackerProtocol, run_id: str, state: str, result: TrainResult,
                    base: BaseModel, data: TaskData, method: str,
                    home: str | os.PathLike[str]) -> None:
    if not TABLE[method].writes_artifact or result.status != "completed":
        # a whole checkpoint is not a bias artifact, and a pruned run is not a usable model
        tracker.end_trial(run_id, state, result=result)
        return
    Path(home).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home) as tmp:
        folder = result.save(base, data.task, Path(tmp) / "artifact",
                             extra={"data": {"max_length": data.max_length}})
        tracker.end_trial(run_id, state, result=result, artifact_dir=folder)
