"""MLflow: the record people browse. The only module that imports mlflow.

Layout: an experiment per task; a parent run per study (tag ``bitfit.study``), a nested child run
per trial with the resolved parameters, the metrics of every evaluation (with step), tags for the
trial number, state and method, and the bias artifact. The parent holds the best value and
parameters, Optuna's plots and a Parquet table of all trials. Runs are addressed by id through
``MlflowClient``, so nothing depends on a global active run.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bitfit.services import mask_url, store_lock
from bitfit.settings import default_tracking_uri
from bitfit.train import Evaluation, TrainConfig, TrainResult

__all__ = ["Tracker", "default_tracking_uri", "mask_url", "ui_command"]

STUDY_TAG = "bitfit.study"
# Runs are found by a digest of the user's name, never by a filter string holding the name:
# a quote in a study name must not find or join another study's runs.
STUDY_KEY_TAG = "bitfit.study_key"


def _key(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:32]


def _now_ms() -> int:
    return int(time.time() * 1000)


def ui_command(tracking_uri: str, home: str | os.PathLike[str]) -> str:
    """The command that shows this store in the MLflow UI."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {mask_url(tracking_uri)}"
    artifacts = (Path(home).resolve() / "mlartifacts").as_uri()
    return (f"mlflow ui --backend-store-uri {mask_url(tracking_uri)} "
            f"--default-artifact-root {artifacts} --host 127.0.0.1 --port 5000")


class Tracker:
    """Writes a study's runs to one MLflow tracking store."""

    def __init__(self, tracking_uri: str, *, home: str | os.PathLike[str]) -> None:
        self.tracking_uri = tracking_uri
        self._artifacts = (Path(home).resolve() / "mlartifacts").as_uri()
        with store_lock(tracking_uri):  # the first use of a SQLite store migrates its schema
            self.client = MlflowClient(tracking_uri=tracking_uri)
            self.client.search_experiments(max_results=1)

    def experiment(self, name: str) -> str:
        """The id of the named experiment, created (artifacts under the run home) if new."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None if self.tracking_uri.startswith("http") else self._artifacts
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException:  # another worker created it first
            again = self.client.get_experiment_by_name(name)
            if again is None:
                raise
            return again.experiment_id

    def study_run(self, experiment_id: str, study_name: str, params: dict[str, Any]) -> str:
        """The parent run of a study: the existing one when the study resumes, else a new one.

        Workers that start together may each create one; they then all keep the earliest and
        delete their own, so every worker's children end up under one parent.
        """
        query = f"tags.`{STUDY_KEY_TAG}` = '{_key(study_name)}'"

        def ours() -> list:
            runs = self.client.search_runs([experiment_id], filter_string=query,
                                           max_results=100)
            return sorted((r for r in runs if r.data.tags.get(STUDY_TAG) == study_name),
                          key=lambda r: (r.info.start_time, r.info.run_id))

        found = ours()
        if found:
            self.client.update_run(found[0].info.run_id, status="RUNNING")
            return found[0].info.run_id
        run = self.client.create_run(experiment_id, run_name=f"search {study_name}",
                                     tags={STUDY_TAG: study_name, STUDY_KEY_TAG: _key(study_name),
                                           "bitfit.kind": "search"})
        mine = run.info.run_id
        self.client.log_batch(mine, params=[Param(k, _short(v)) for k, v in params.items()])
        first = ours()[0].info.run_id
        if first != mine:
            self.client.delete_run(mine)
        return first

    def trial_run(self, experiment_id: str, parent_id: str, number: int,
                  config: TrainConfig, values: dict[str, Any], worker: str = "") -> str:
        """A child run for a trial, with its resolved parameters (``worker``: host:pid)."""
        run = self.client.create_run(
            experiment_id, run_name=f"trial {number}",
            tags={"mlflow.parentRunId": parent_id, "trial_number": str(number),
                  "method": config.method, "state": "RUNNING", "worker": worker})
        params = {**asdict(config), **{f"search.{k}": v for k, v in values.items()}}
        self.client.log_batch(run.info.run_id,
                              params=[Param(k, _short(v)) for k, v in params.items()])
        return run.info.run_id

    def log_evaluation(self, run_id: str, evaluation: Evaluation, timestamp_ms: int) -> None:
        metrics = [Metric(f"{split}_{name}", value, timestamp_ms, evaluation.step)
                   for split, values in evaluation.metrics.items()
                   for name, value in values.items()]
        metrics += [Metric("train_loss", evaluation.train_loss, timestamp_ms, evaluation.step),
                    Metric("epoch", evaluation.epoch, timestamp_ms, evaluation.step)]
        self.client.log_batch(run_id, metrics=metrics)

    def end_trial(self, run_id: str, state: str, *, result: TrainResult | None = None,
                  artifact_dir: str | os.PathLike[str] | None = None, reason: str = "",
                  status: str | None = None) -> None:
        """Close a trial's run: state tag (COMPLETE, PRUNED, FAIL), summary and artifact.

        ``status``: the MLflow run status (default FAILED for FAIL, else FINISHED; KILLED for
        an interrupted trial)."""
        tags = [RunTag("state", state)] + ([RunTag("fail_reason", reason[:5000])]
                                           if reason else [])
        metrics = []
        if result is not None:
            tags += [RunTag("trainable_params", str(result.trainable_params)),
                     RunTag("status", result.status)]
            summary = {"trainable_params": result.trainable_params,
                       "trainable_fraction": result.trainable_fraction,
                       "train_time_s": result.train_time_s,
                       "examples_per_second": result.examples_per_second,
                       "peak_memory_mb": result.peak_memory_mb,
                       **{f"train_{k}": v for k, v in result.train_metrics.items()}}
            if result.best is not None:
                summary["best_value"] = result.best.main
            metrics = [Metric(k, float(v), _now_ms(), 0) for k, v in summary.items()]
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        if artifact_dir is not None:
            self.client.log_artifacts(run_id, str(artifact_dir), artifact_path="bias_artifact")
        self.client.set_terminated(run_id, status=status or (
            "FAILED" if state == "FAIL" else "FINISHED"))

    def run_status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    def stop_run(self, run_id: str, status: str = "KILLED") -> None:
        """End a run that an interruption cut short (a study's or an evaluation's parent)."""
        self.client.set_terminated(run_id, status=status)

    def end_study(self, parent_id: str, study) -> None:
        """Best value and parameters, Optuna's plots and the trials table on the parent run."""
        import optuna

        complete = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
        if complete:
            best = study.best_trial
            self.client.log_batch(parent_id,
                                  metrics=[Metric("best_value", best.value, _now_ms(), 0)],
                                  tags=[RunTag("best_trial", str(best.number))] +
                                  [RunTag(f"best.{k}", _short(v)) for k, v in
                                   best.params.items()])
        with tempfile.TemporaryDirectory() as tmp:
            study.trials_dataframe().to_parquet(Path(tmp) / "trials.parquet")
            _plots(study, Path(tmp))
            self.client.log_artifacts(parent_id, tmp)
        self.client.set_terminated(parent_id, status="FINISHED")

    def evaluation_run(self, experiment_id: str, name: str, params: dict[str, Any]) -> str:
        """A parent run for a final evaluation."""
        run = self.client.create_run(experiment_id, run_name=f"evaluation {name}",
                                     tags={"bitfit.evaluation": name,
                                           "bitfit.kind": "evaluation"})
        self.client.log_batch(run.info.run_id, params=[Param(k, _short(v))
                                                       for k, v in params.items()])
        return run.info.run_id

    def seed_run(self, experiment_id: str, parent_id: str, label: str, seed: int,
                 config: TrainConfig) -> str:
        """A child run for one (method, seed) of a final evaluation."""
        run = self.client.create_run(
            experiment_id, run_name=f"{label} seed {seed}",
            tags={"mlflow.parentRunId": parent_id, "method": label, "seed": str(seed)})
        self.client.log_batch(run.info.run_id, params=[Param(k, _short(v)) for k, v in
                                                       asdict(config).items()])
        return run.info.run_id

    def end_seed_run(self, run_id: str, result: TrainResult, seed_run: Any,
                     artifact_dir: str | None) -> None:
        """Per-epoch dev metrics, the final ones, costs, and the artifact of a seed run."""
        now = int(time.time() * 1000)
        for evaluation in result.evaluations:
            self.log_evaluation(run_id, evaluation, now)
        final = {**{f"dev_{k}": v for k, v in seed_run.metrics.items()},
                 **{f"test_{k}": v for k, v in seed_run.test_metrics.items()},
                 **{f"train_{k}": v for k, v in seed_run.train_metrics.items()},
                 "trainable_params": seed_run.trainable_params,
                 "trainable_fraction": seed_run.trainable_fraction,
                 "artifact_bytes": seed_run.artifact_bytes,
                 "time_per_epoch_s": seed_run.time_per_epoch_s,
                 "peak_memory_mb": seed_run.peak_memory_mb}
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), _now_ms(), 0)
                                               for k, v in final.items()])
        if artifact_dir is not None:
            self.client.log_artifacts(run_id, artifact_dir, artifact_path="bias_artifact")
        self.client.set_terminated(run_id, status="FINISHED")

    def end_evaluation(self, parent_id: str, folder: Path, metrics: dict[str, float]) -> None:
        """The comparison table (Markdown, Parquet), plots and test on the parent run."""
        self.client.log_batch(parent_id, metrics=[Metric(k, float(v), _now_ms(), 0)
                                                  for k, v in metrics.items()
                                                  if v == v])  # NaN: no test possible
        for name in ("report.md", "comparison.parquet", "runs.json", "dev_per_seed.png",
                     "learning_curves.png"):
            self.client.log_artifact(parent_id, str(folder / name))
        self.client.set_terminated(parent_id, status="FINISHED")

    def child_runs(self, experiment_id: str, parent_id: str) -> list:
        return self.client.search_runs(
            [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
            max_results=10_000)


def _plots(study, folder: Path) -> None:
    import matplotlib
    import optuna

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # "no complete trials" is no news here
    try:
        _plot_all(study, folder, vis, plt)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _plot_all(study, folder: Path, vis, plt) -> None:
    for name, plot in (("optimization_history", vis.plot_optimization_history),
                       ("param_importances", vis.plot_param_importances),
                       ("slice", vis.plot_slice)):
        try:
            with warnings.catch_warnings():  # "experimental" and few-trials notices
                warnings.simplefilter("ignore")
                axes = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # too few finished trials or parameters for this plot yet
        figure: Any = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
        figure.savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")
        plt.close(figure)


def _short(value: Any) -> str:
    text = mask_url(str(value)) if "://" in str(value) else str(value)
    return text[:6000]
