"""What a search and a final evaluation ask of a tracker, and a tracker that records nothing.

``bitfit.tracking.Tracker`` writes to MLflow; ``NoTracker`` stands in where nothing is to be
recorded, so that ``bitfit.study`` and ``bitfit.compare`` call a tracker without asking whether
there is one. Its run ids are None, and nothing is written for a run whose id is None.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bitfit.champion import Registration, Standing
from bitfit.results import Evaluation, TrainResult
from bitfit.trainconfig import TrainConfig

if TYPE_CHECKING:
    import optuna

__all__ = ["NoTracker", "TrackerProtocol", "experiment_name", "or_no_tracker"]


def experiment_name(task: str) -> str:
    """The MLflow experiment a task's runs go to by default: ``bitfit-<task>``, so that they
    share no experiment with another project's ``<task>`` on a shared tracking server."""
    return f"bitfit-{task}"


class TrackerProtocol(Protocol):
    """The tracker's calls that ``run_study`` and ``compare`` make (see ``tracking.Tracker``).

    Run ids are the tracker's own: a string from MLflow, None from ``NoTracker``.
    """

    def experiment(self, name: str) -> str | None: ...

    def task_experiment(self, task: str) -> str: ...

    def log_data(self, run_id: Any, data: Any, splits: dict[str, str]) -> None: ...

    def study_run(self, experiment_id: Any, study_name: str,
                  params: dict[str, Any]) -> str | None: ...

    def trial_run(self, experiment_id: Any, parent_id: Any, number: int, config: TrainConfig,
                  values: dict[str, Any], worker: str = "") -> str | None: ...

    def log_evaluation(self, run_id: Any, evaluation: Evaluation, timestamp_ms: int) -> None: ...

    def end_trial(self, run_id: Any, state: str, *, result: TrainResult | None = None,
                  artifact_dir: str | os.PathLike[str] | None = None, reason: str = "",
                  status: str | None = None) -> None: ...

    def run_status(self, run_id: Any) -> str | None: ...

    def stop_run(self, run_id: Any, status: str = "KILLED") -> None: ...

    def end_study(self, parent_id: Any, study: optuna.Study) -> None: ...

    def evaluation_run(self, experiment_id: Any, name: str, params: dict[str, Any], *,
                       key: str, resume: bool = False) -> str | None: ...

    def resume_seed_runs(self, experiment_id: Any, parent_id: Any) -> set[str]: ...

    def seed_run(self, experiment_id: Any, parent_id: Any, label: str, seed: int,
                 config: TrainConfig) -> str | None: ...

    def end_seed_run(self, run_id: Any, evaluations: list[Evaluation], seed_run: Any,
                     artifact_dir: str | None) -> None: ...

    def end_evaluation(self, parent_id: Any, folder: Path, metrics: dict[str, float],
                       tags: dict[str, str] | None = None) -> None: ...

    def register(self, run_id: Any, artifact_dir: str | os.PathLike[str], task: str, *,
                 standing: Standing, promote: bool = False,
                 description: str = "") -> Registration | None: ...


class NoTracker:
    """A tracker that records nothing: its run ids are None (like ``optuna.pruners.NopPruner``,
    the do-nothing choice of a collaborator)."""

    def experiment(self, name: str) -> None:
        return None

    def task_experiment(self, task: str) -> str:
        return experiment_name(task)

    def log_data(self, run_id: str | None, data: Any, splits: dict[str, str]) -> None:
        return None

    def study_run(self, experiment_id: str | None, study_name: str,
                  params: dict[str, Any]) -> None:
        return None

    def trial_run(self, experiment_id: str | None, parent_id: str | None, number: int,
                  config: TrainConfig, values: dict[str, Any], worker: str = "") -> None:
        return None

    def log_evaluation(self, run_id: str | None, evaluation: Evaluation,
                       timestamp_ms: int) -> None:
        return None

    def end_trial(self, run_id: str | None, state: str, *, result: TrainResult | None = None,
                  artifact_dir: str | os.PathLike[str] | None = None, reason: str = "",
                  status: str | None = None) -> None:
        return None

    def run_status(self, run_id: str | None) -> None:
        return None

    def stop_run(self, run_id: str | None, status: str = "KILLED") -> None:
        return None

    def end_study(self, parent_id: str | None, study: optuna.Study) -> None:
        return None

    def evaluation_run(self, experiment_id: str | None, name: str, params: dict[str, Any], *,
                       key: str, resume: bool = False) -> None:
        return None

    def resume_seed_runs(self, experiment_id: str | None, parent_id: str | None) -> set[str]:
        return set()

    def seed_run(self, experiment_id: str | None, parent_id: str | None, label: str, seed: int,
                 config: TrainConfig) -> None:
        return None

    def end_seed_run(self, run_id: str | None, evaluations: list[Evaluation], seed_run: Any,
                     artifact_dir: str | None) -> None:
        return None

    def end_evaluation(self, parent_id: str | None, folder: Path, metrics: dict[str, float],
                       tags: dict[str, str] | None = None) -> None:
        return None

    def register(self, run_id: str | None, artifact_dir: str | os.PathLike[str], task: str, *,
                 standing: Standing, promote: bool = False, description: str = "") -> None:
        return None


def or_no_tracker(tracker: TrackerProtocol | None) -> TrackerProtocol:
    """``tracker``, or a ``NoTracker`` where it is None (callers that record nothing pass None)."""
    return NoTracker() if tracker is None else tracker
