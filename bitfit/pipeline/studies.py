"""The studies: how one is named, what data it searches on, and running it (here, side by side
in local processes, or read back after other workers ran it) to its summary."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bitfit.data import TaskData
from bitfit.models import BaseModel
from bitfit.pipeline.config import (NO_OWN_DATA, SIDE_BY_SIDE_MIN_WORK, Config, OwnData,
                                    resolve_task)
from bitfit.pipeline.summaries import STDERR, Report, StudySummary
from bitfit.services import mask_url


def default_study_name(task: str, space: str, samples: int | None, select_on: str,
                       own: OwnData = NO_OWN_DATA) -> str:
    """The default name of a study: task (with a digest of the user's files for a custom
    task, so a changed file never resumes another file's study), space, sample size and
    selection split."""
    return "-".join([task] + ([own.digest()] if own.given else []) + [space]
                    + ([f"n{samples}"] if samples else []) + (["dev"] if select_on == "dev"
                                                              else []))


def study_data(base: BaseModel, config: Config, space) -> TaskData:
    """The data a study searches on: the space's sample size unless the config gives one, and a
    held-out split carved from the whole training split first unless it selects on dev
    (``data.heldout_size`` rows: the final runs never train on them; the test file stays
    unseen)."""
    from bitfit.data import prepare

    own = config.own
    samples = config.max_train_samples or space.max_train_samples
    return prepare(resolve_task(config.task, own), base.tokenizer, data_dir=config.data_dir,
                   train_file=own.train_file, dev_file=own.dev_file,
                   max_length=config.max_length or space.max_length, max_train_samples=samples,
                   heldout_rows="auto" if config.select_on == "heldout" else None,
                   cache_dir=Path(str(config.home)) / "cache")


def search_study(base: BaseModel, data: TaskData, *, space: str, n_trials: int | None,
                 storage: str, tracking_uri: str, study_name: str, home: str,
                 run_params: dict[str, Any], experiment: str | None = None,
                 device: str = "auto", processes: int = 1,
                 report: Report = STDERR) -> StudySummary:
    """Run (or resume) a study, every trial recorded in MLflow; its summary.

    ``processes`` > 1 runs its trials side by side in that many local processes sharing the
    cores and the study (each its own trial, the storage deciding which trials remain); their
    trial lines go to stderr."""
    study = {"space": space, "storage": storage, "study_name": study_name, "home": home,
             "n_trials": n_trials, "tracking_uri": tracking_uri, "run_params": run_params,
             "experiment": experiment, "device": device}

    def here() -> Any:
        return _study_loop(base, data, study, log=report.line,
                           progress=lambda done, total: report.progress(
                               f"study {study_name}", done, total))

    if processes > 1:
        from bitfit.compare import in_processes

        before = trial_count(storage, study_name)
        report.line(f"study {study_name}: trials side by side in {processes} processes")
        others = [(_study_in_process, (study,))] * (processes - 1)
        for _ in in_processes(base, data, processes - 1, others, meanwhile=here):
            pass
        return read_study_summary(data, storage=storage, tracking_uri=tracking_uri,
                                  study_name=study_name, home=home, before=before)
    outcome = here()
    return study_summary(outcome.study, outcome.experiment_id, outcome.ran, data,
                         storage=storage, tracking_uri=tracking_uri, home=home)


def _study_loop(base: BaseModel, data: TaskData, study: dict[str, Any], *,
                log: Callable[[str], None],
                progress: Callable[[int, int], None] | None = None) -> Any:
    """``run_study`` on the study ``search_study`` describes (its keyword arguments)."""
    from bitfit.space import load_space
    from bitfit.study import run_study
    from bitfit.tracking import Tracker

    return run_study(base, data, load_space(study["space"]), storage=study["storage"],
                     study_name=study["study_name"], home=study["home"],
                     n_trials=study["n_trials"],
                     tracker=Tracker(study["tracking_uri"], home=study["home"]),
                     experiment=study["experiment"], run_params=study["run_params"],
                     device=study["device"], log=log, progress=progress)


def _study_in_process(study: dict[str, Any]) -> None:
    """In a process of ``search_study``: trials of the shared study until its budget is spent."""
    from bitfit.compare import worker_state

    _study_loop(*worker_state(), study, log=STDERR.line)


def trial_processes(config: Config, data: TaskData, budget: int) -> int:
    """How many processes run a study's trials side by side: ``config.trial_processes``, or by
    default one per core on a CPU (at most 4 and at most the budget) once the study is worth
    a process start (a few seconds each): ``budget`` x training rows >= 4,000, as in the quick
    preset."""
    from bitfit.compare import default_processes

    if config.trial_processes is not None:
        return config.trial_processes
    if budget * len(data.train) < SIDE_BY_SIDE_MIN_WORK:
        return 1
    return default_processes(config.device, budget)


def side_processes(config: Config) -> int:
    """How many side-by-side processes this run's phases will want at most (0: none), known
    before the data are read so that they can start ahead (``pool.prestart``): a local study's
    (one fewer than ``trial_processes``, as this process runs trials too; the training rows
    taken from the sample sizes, any size when unknown) and the final evaluation's."""
    from bitfit.compare import default_processes
    from bitfit.space import load_space

    config = config.resolved()
    wanted = [0]
    if config.workers <= 1:
        spaces = [config.space] + ([config.baseline_space] if config.baseline
                                   and not config.baseline_study else [])
        for name in spaces:
            space = load_space(name)
            budget = (config.n_trials if name == config.space else None) or space.n_trials
            rows = config.max_train_samples or space.max_train_samples
            processes = config.trial_processes or (
                default_processes(config.device, budget)
                if rows is None or budget * rows >= SIDE_BY_SIDE_MIN_WORK else 1)
            wanted.append(processes - 1)
    jobs = config.seeds * (1 + bool(config.baseline) + len(config.extra_methods))
    if jobs > 1:
        processes = config.eval_processes or default_processes(config.device, jobs)
        wanted.append(processes if processes > 1 else 0)  # one: they run in this process
    return max(wanted)


def trial_count(storage: str, study_name: str) -> int:
    """How many trials the study has (0 when it does not exist yet)."""
    import optuna

    try:
        return len(optuna.load_study(study_name=study_name, storage=storage).trials)
    except KeyError:
        return 0


def read_study_summary(data: TaskData, *, storage: str, tracking_uri: str, study_name: str,
                       home: str, before: int) -> StudySummary:
    """The summary of a study that other workers ran, read back from the storage and MLflow."""
    import optuna

    from bitfit.tracking import Tracker

    study = optuna.load_study(study_name=study_name, storage=storage)
    parent = study.user_attrs.get("mlflow_parent_run_id")
    experiment_id = (Tracker(tracking_uri, home=home).client.get_run(parent).info.experiment_id
                     if parent else None)
    return study_summary(study, experiment_id, len(study.trials) - before, data,
                         storage=storage, tracking_uri=tracking_uri, home=home)


def study_summary(study, experiment_id: str | None, ran: int, data: TaskData, *, storage: str,
                  tracking_uri: str, home: str) -> StudySummary:
    """What a study found."""
    from optuna.trial import TrialState

    from bitfit.report import pareto_front
    from bitfit.tracking import run_url, trade_off, ui_command

    best = study.best_trial if study.get_trials(states=[TrialState.COMPLETE]) else None
    points = trade_off(study)
    front = [{"trial": label, "trainable_params": int(cost), "value": value}
             for i, (label, cost, value) in enumerate(points)
             if i in pareto_front([(c, v) for _, c, v in points])]
    table = [{"trial": t.number, "state": t.state.name, data.task.main_metric: t.value,
              **t.params, "seconds": None if t.duration is None
              else round(t.duration.total_seconds(), 1)} for t in study.trials]
    return StudySummary(
        study_name=study.study_name, task=data.task.name, storage=mask_url(storage),
        tracking_uri=mask_url(tracking_uri), experiment_id=experiment_id,
        mlflow_parent_run_id=study.user_attrs.get("mlflow_parent_run_id"),
        trials_run=ran, trials=len(study.trials), selection_split=data.selection_split,
        metric=data.task.main_metric,
        best_value=None if best is None else best.value,
        best_params=None if best is None else best.params,
        best_trial=None if best is None else best.number,
        mlflow_ui=ui_command(tracking_uri, home),
        mlflow_runs=run_url(tracking_uri, experiment_id, None) if experiment_id else "",
        trial_table=table, pareto=sorted(front, key=lambda p: p["trainable_params"]))
