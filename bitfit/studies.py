"""Reading a study back from its storage: its identity (checked when it resumes), why its trials
failed, the trials that spend its budget, the line that reports a trial, its best trial and that
trial's resolved training config.

``bitfit.study`` runs a study and ``bitfit.compare`` evaluates its best config; both read a stored
study through these functions.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from bitfit import interrupts
from bitfit.data import TaskData, splits_digest
from bitfit.methods import known
from bitfit.services import mask_url
from bitfit.space import SearchSpace
from bitfit.trainconfig import TrainConfig

__all__ = ["FINISHED", "IDENTITY_LABELS", "FailReason", "StudyMismatch", "StudyOutcome",
           "best_config", "check_identity", "counted", "describe", "reason_of",
           "study_identity", "trial_report"]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class FailReason(enum.StrEnum):
    """The failures a study acts on. Each value is how the ``fail_reason`` stored on such a trial
    starts, so the reasons of studies written before this type still read."""

    INTERRUPTED = interrupts.INTERRUPTED  # a signal, or its process is gone: run again first
    OVER_BUDGET = "over the study's budget"  # another worker took the last place: not run

    @classmethod
    def of(cls, text: object) -> FailReason | None:
        """The reason a stored ``fail_reason`` starts with; None for any other failure."""
        return next((reason for reason in cls if str(text).startswith(reason.value)), None)


class StudyMismatch(ValueError):
    """A study resumed with settings other than those it was created with."""


IDENTITY_LABELS = {
    "method": "method", "task": "task", "metric": "objective metric",
    "direction": "direction", "space": "search space (digest of its parameters and fixed "
    "settings)", "selection_split": "selection split",
    "train_examples": "number of training examples",
    "data": "training and selection data (digest)"}


def study_identity(space: SearchSpace, data: TaskData, metric: str) -> dict[str, Any]:
    """What defines a study: resuming it with any other value would mix incomparable trials."""
    spec = {"distributions": {k: optuna.distributions.distribution_to_json(d)
                              for k, d in sorted(space.distributions.items())},
            "fixed": space.fixed, "max_length": space.max_length}
    selection = data.selection_split
    return {"method": space.method, "task": data.task.name, "metric": metric,
            "direction": space.direction,
            "space": _digest(json.dumps(spec, sort_keys=True, default=str).encode()),
            "data": splits_digest(data.train, data.evals[selection]),
            "train_examples": len(data.train), "selection_split": selection}


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()[:16]


def check_identity(study: optuna.Study, identity: dict[str, Any], storage: str) -> None:
    """Raise ``StudyMismatch`` when the identity stored on ``study`` differs from ``identity``."""
    stored = dict(study.user_attrs.get("identity") or {})
    stored.setdefault("direction", study.direction.name.lower())
    for key, label in IDENTITY_LABELS.items():
        if key in stored and stored[key] != identity[key]:
            raise StudyMismatch(
                f"study {study.study_name!r} in {mask_url(storage)} was created with {label} "
                f"{stored[key]!r}, and this run asks for {identity[key]!r}: give another "
                "--study-name for the new settings, or the original settings to resume it")


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


def counted(study: optuna.Study) -> list[int]:
    """Numbers of the trials that spend the budget: finished or running, less the trials that
    were interrupted or whose worker died (their retry counts instead) and those not run."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs.get("failed_trial") for t in trials}
    return [t.number for t in trials
            if t.state in (*FINISHED, TrialState.RUNNING)
            and not (t.state == TrialState.FAIL and (
                t.number in retried or reason_of(t) is FailReason.INTERRUPTED))
            and reason_of(t) is not FailReason.OVER_BUDGET]


def reason_of(trial: optuna.trial.FrozenTrial) -> FailReason | None:
    """The ``FailReason`` of a trial's stored ``fail_reason``; None when it has another."""
    return FailReason.of(trial.user_attrs.get("fail_reason", ""))


def trial_report(study: optuna.Study, trial: optuna.trial.FrozenTrial, *, metric: str,
                 budget: int) -> tuple[int, str]:
    """Trials finished so far, and the line that reports ``trial`` and the study's best."""
    # finished ones: with workers side by side, others' running trials are counted too
    done = len(counted(study)) - len(study.get_trials(deepcopy=False,
                                                      states=[TrialState.RUNNING]))
    value = "" if trial.value is None else f" {metric} {trial.value:.4f}"
    reason = (f" ({trial.user_attrs['fail_reason']})"
              if trial.state == TrialState.FAIL and "fail_reason" in trial.user_attrs else "")
    best = ""
    if study.get_trials(deepcopy=False, states=[TrialState.COMPLETE]):
        best = (f"; best {study.best_value:.4f} (trial {study.best_trial.number}: "
                f"{_params_text(study.best_trial.params)})")
    return done, (f"trial {done} of {budget}: #{trial.number} {trial.state.name}{value}{reason} "
                  f"({_params_text(trial.params)}){best}")


def describe(study: optuna.Study, data: TaskData, metric: str) -> None:
    """Record on a study what its values are: the objective metric's name (Optuna's plots and
    trials table and optuna-dashboard show it instead of "value"; a study from before it gets
    it when it resumes) and the split its trials are judged on, with its size."""
    with warnings.catch_warnings():  # set_metric_names is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([metric])
    study.set_user_attr("selection_split", data.selection_split)
    study.set_user_attr("selection_examples", len(data.evals[data.selection_split]))


def best_config(storage: str, study_name: str, *, method: str | None = None,
                task: str | None = None) -> TrainConfig:
    """The resolved training config of a study's best trial.

    Args:
        storage: the Optuna storage URL.
        study_name: the study.
        method: when given, the study must have searched this method (``bitfit``, ``full``).
        task: when given, the study must have searched this task.

    Raises:
        ValueError: no such study, another method or task, or no completed trial in it.
    """
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise ValueError(f"no study named {study_name!r} in the storage: run the search first "
                         f"or name an existing study") from None
    identity = study.user_attrs.get("identity") or {}
    for key, wanted in (("method", method), ("task", task)):
        if wanted is not None and identity.get(key, wanted) != wanted:
            raise ValueError(f"study {study_name!r} searched {key} {identity[key]!r}, not "
                             f"{wanted!r}: name a study of {key} {wanted!r}")
    done = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    if not done:
        raise ValueError(f"study {study_name!r} has no completed trial to evaluate: run more "
                         "trials (the same search command resumes it)")
    return TrainConfig(**study.best_trial.user_attrs["config"])


@contextlib.contextmanager
def optuna_quiet(level: int) -> Iterator[None]:
    """Optuna's own log lines below ``level`` are left out while the block runs (the trial
    lines say it), and its verbosity is as it was after."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(level)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def trial_start(number: int, params: dict[str, Any]) -> str:
    """The line that says a trial has started and what it tries."""
    return f"trial #{number} started ({_params_text(params)})"


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


def study_plots(study) -> list[tuple[str, Any]]:
    """Optuna's plots that the study's trials allow, as matplotlib figures."""
    import matplotlib
    import optuna

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as vis

    figures = []
    with optuna_quiet(optuna.logging.ERROR):  # "no complete trials" is no news here
        for name, plot in (("optimization_history", vis.plot_optimization_history),
                           ("intermediate_values", vis.plot_intermediate_values),
                           ("timeline", vis.plot_timeline),
                           ("param_importances", vis.plot_param_importances),
                           ("slice", vis.plot_slice)):
            try:
                with warnings.catch_warnings():  # "experimental" and few-trials notices
                    warnings.simplefilter("ignore")
                    axes = plot(study)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue  # too few finished trials or parameters for this plot yet
            figures.append((name, (axes.flat[0] if hasattr(axes, "flat") else axes
                                   ).get_figure()))
    points = trade_off(study)
    if len(points) >= 2:
        from bitfit.report import plot_pareto

        figures.append(("pareto", plot_pareto(
            points, ylabel="held-out score (last evaluation)",
            title="score against trainable parameters; the Pareto front in red")))
    return figures


def trade_off(study) -> list[tuple[str, float, float]]:
    """The completed trials as (label, trainable parameters, value): the label names the trial
    and what it trained (its subset)."""
    import optuna

    points = []
    for t in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE]):
        if "trainable_params" not in t.user_attrs or t.value is None:
            continue
        config = t.user_attrs.get("config") or {}
        record = known(config.get("method"))
        what = (config.get("subset", "") if record is not None and record.takes_subset
                else config.get("method", ""))
        points.append((f"#{t.number} {what}", float(t.user_attrs["trainable_params"]),
                       float(t.value)))
    return points
