"""MLflow: the record people browse. The only module that imports mlflow.

Layout: an experiment per task, ``bitfit-<task>`` (a store whose bare ``<task>`` experiment
already holds bitfit's runs keeps using that one: ``Tracker.task_experiment``); a parent run per
study (tag ``bitfit.study``), a nested child run per trial with the resolved parameters, the
metrics of every evaluation (with step), tags for the trial number, state and method, and the
bias artifact. The parent holds the best value and parameters (also as its description), Optuna's
plots and the table of all trials (CSV, which the UI shows, and Parquet). Every run carries the
user, source and git-commit tags and its data as inputs (with the digest of the tokenised split).
A final evaluation's parent has the report as its description, and its best BitFit seed is
registered as a version of the model ``bitfit-<task>``, which becomes ``champion`` where it beats
the champion (``bitfit.registry``). Runs are addressed by id through ``MlflowClient``, so nothing
depends on a global active run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bitfit.champion import Registration, Standing
from bitfit.services import mask_url, store_lock
from bitfit.settings import default_tracking_uri
from bitfit.studies import study_plots, trade_off
from bitfit.tracker import NoTracker, TrackerProtocol, experiment_name
from bitfit.train import Evaluation, TrainConfig, TrainResult

__all__ = ["NoTracker", "Tracker", "TrackerProtocol", "default_tracking_uri", "experiment_name",
           "mask_url", "run_url", "trade_off", "ui_command"]

NOTE_TAG = "mlflow.note.content"  # a run's description in the UI
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"  # runs, not GenAI traces
UI_PORT = 5000  # where ``ui_command`` serves a local store

NOTE_LIMIT = 8000  # MLflow stores a tag's value up to this many characters
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


def run_url(tracking_uri: str, experiment_id: str | None, run_id: str | None) -> str:
    """The run's page in the MLflow UI: on the tracking server, or where ``ui_command`` serves a
    local store."""
    base = (mask_url(tracking_uri).rstrip("/") if tracking_uri.startswith(("http://", "https://"))
            else f"http://127.0.0.1:{UI_PORT}")
    if experiment_id is None:
        return base
    return f"{base}/#/experiments/{experiment_id}/runs" + (f"/{run_id}" if run_id else "")


def context_tags() -> dict[str, str]:
    """Who ran it, from what, at which commit: MLflow's own context tags (user, source) and the
    git commit, branch and remote of the bitfit checkout when it is one."""
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils import git_utils

    tags = dict(resolve_tags())
    here = str(Path(__file__).resolve().parent)
    commit = git_utils.get_git_commit(here)
    if commit:
        tags["mlflow.source.git.commit"] = commit
        for tag, get in (("mlflow.source.git.branch", git_utils.get_git_branch),
                         ("mlflow.source.git.repoURL", git_utils.get_git_repo_url)):
            value = get(here)
            if value:
                tags[tag] = mask_url(value)
    try:
        from importlib.metadata import version

        tags["bitfit.version"] = version("bitfit")
    except Exception:  # noqa: BLE001 - run from a plain checkout
        pass
    return tags


def _shared(write: Callable[..., Any], *args: Any, attempts: int = 4, **kwargs: Any) -> Any:
    """``write(*args, **kwargs)`` to a run that other workers write to as well, tried again
    when the store refuses it: two first inserts of one row (a tag, a latest metric, a dataset)
    at the same moment collide, and the second attempt finds the row and updates it."""
    for attempt in range(attempts):
        try:
            return write(*args, **kwargs)
        except MlflowException:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    return None


class Tracker:
    """Writes a study's runs to one MLflow tracking store."""

    def __init__(self, tracking_uri: str, *, home: str | os.PathLike[str]) -> None:
        self.tracking_uri = tracking_uri
        self._artifacts = (Path(home).resolve() / "mlartifacts").as_uri()
        self._context = context_tags()
        self.root: str | None = None  # a run every new top-level run goes under (reproduce)
        self.study_plots = True  # Optuna's plots on a study's run (a grid of two needs none)
        with store_lock(tracking_uri):  # the first use of a SQLite store migrates its schema
            self.client = MlflowClient(tracking_uri=tracking_uri)
            self.client.search_experiments(max_results=1)

    def _run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
        if self.root is not None and "mlflow.parentRunId" not in tags:
            tags = {**tags, "mlflow.parentRunId": self.root}
        return self.client.create_run(experiment_id, run_name=run_name,
                                      tags={**self._context, **tags}).info.run_id

    def log_data(self, run_id: str, data: Any, splits: dict[str, str]) -> None:
        """The tokenised splits as the run's inputs: ``splits`` maps each split of ``data``
        (a ``TaskData``) to its role (``training``, ``selection``, ``evaluation``)."""
        inputs = []
        for split, role in splits.items():
            encoded = data.train if split == "train" else data.evals[split]
            source = json.dumps({"uri": mask_url(str(data.source))})
            inputs.append(DatasetInput(
                Dataset(name=f"{data.task.name}-{split}", digest=encoded.digest(),
                        source_type="hub" if data.source == "nyu-mll/glue" else "local",
                        source=source, profile=json.dumps({"num_rows": len(encoded)})),
                tags=[InputTag("mlflow.data.context", role)]))
        # Workers sharing a study log the same dataset at once, and the store refuses the
        # second insert of it; the dataset then exists, and a retry links it.
        _shared(self.client.log_inputs, run_id, datasets=inputs)

    def experiment(self, name: str) -> str:
        """The id of the named experiment, created (artifacts under the run home) if new; the
        UI opens it on its runs (not on the empty GenAI traces page)."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.tags.get(KIND_TAG) != KIND:
                self.client.set_experiment_tag(found.experiment_id, KIND_TAG, KIND)
            return found.experiment_id
        location = None if self.tracking_uri.startswith("http") else self._artifacts
        try:
            return self.client.create_experiment(name, artifact_location=location,
                                                 tags={KIND_TAG: KIND})
        except MlflowException:  # another worker created it first
            again = self.client.get_experiment_by_name(name)
            if again is None:
                raise
            return again.experiment_id

    def task_experiment(self, task: str) -> str:
        """The name of the experiment a task's runs go to: ``bitfit-<task>``, except in a store
        from before that name, whose experiment ``<task>`` holds bitfit's runs (a study's or an
        evaluation's parent) while ``bitfit-<task>`` does not exist: its runs stay together
        there, so a study resumes under its parent run."""
        name = experiment_name(task)
        if self.client.get_experiment_by_name(name) is not None:
            return name
        old = self.client.get_experiment_by_name(task)
        if old is None or old.lifecycle_stage != "active":
            return name
        ours = any(self.client.search_runs([old.experiment_id], max_results=1,
                                           filter_string=f"tags.`{tag}` LIKE '%'")
                   for tag in (STUDY_TAG, "bitfit.evaluation"))
        return task if ours else name

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
        mine = self._run(experiment_id, f"search {study_name}",
                         {STUDY_TAG: study_name, STUDY_KEY_TAG: _key(study_name),
                          "bitfit.kind": "search"})
        self.client.log_batch(mine, params=[Param(k, _short(v)) for k, v in params.items()])
        first = ours()[0].info.run_id
        if first != mine:
            self.client.delete_run(mine)
        return first

    def trial_run(self, experiment_id: str, parent_id: str, number: int,
                  config: TrainConfig, values: dict[str, Any], worker: str = "") -> str:
        """A child run for a trial, with its resolved parameters (``worker``: host:pid)."""
        run_id = self._run(experiment_id, f"trial {number}",
                           {"mlflow.parentRunId": parent_id, "trial_number": str(number),
                            "method": config.method, "state": "RUNNING", "worker": worker})
        # the searched values under the config's own names (one axis each in the UI's
        # parallel coordinates); a searched value that is not a config field keeps its name
        resolved = asdict(config)
        params = {**resolved, **{f"search.{k}": v for k, v in values.items()
                                 if k not in resolved or resolved[k] != v}}
        self.client.log_batch(run_id, params=[Param(k, _short(v)) for k, v in params.items()])
        return run_id

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

        # Every worker of a shared study ends its parent run, often at the same moment: the
        # store then refuses the second insert of a tag or metric row, and a retry updates it.
        complete = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
        note = (f"**Study `{study.study_name}`**: {len(study.trials)} trials, none complete "
                "yet.")
        if complete:
            best = study.best_trial
            _shared(self.client.log_batch, parent_id,
                    metrics=[Metric("best_value", best.value, _now_ms(), 0)],
                    tags=[RunTag("best_trial", str(best.number)),
                          *[RunTag(f"best.{k}", _short(v)) for k, v in best.params.items()]])
            params = ", ".join(f"`{k}` = {v}" for k, v in best.params.items())
            note = (f"**Study `{study.study_name}`**: best value **{best.value:.4f}** "
                    f"(trial {best.number}: {params}) of {len(study.trials)} trials; the "
                    "trials are the child runs, `trials.csv` lists them all.")
        _shared(self.client.set_tag, parent_id, NOTE_TAG, note)
        with tempfile.TemporaryDirectory() as tmp:
            table = study.trials_dataframe()
            table.to_parquet(Path(tmp) / "trials.parquet")
            table.to_csv(Path(tmp) / "trials.csv", index=False)
            _shared(self.client.log_artifacts, parent_id, tmp)
        import matplotlib.pyplot as plt

        for name, figure in study_plots(study) if self.study_plots else []:
            _shared(self.client.log_figure, parent_id, figure, f"plots/{name}.png")
            plt.close(figure)
        _shared(self.client.set_terminated, parent_id, status="FINISHED")

    def evaluation_run(self, experiment_id: str, name: str, params: dict[str, Any], *,
                       key: str, resume: bool = False) -> str:
        """The parent run of a final evaluation: with ``resume``, the one of that ``key``
        (running again) when there is one, else a new one with the settings as parameters."""
        return self._parent(experiment_id, f"evaluation {name}", "evaluation", (
            "bitfit.evaluation_key", key), params, {"bitfit.evaluation": name}, resume=resume)

    def seed_run(self, experiment_id: str, parent_id: str, label: str, seed: int,
                 config: TrainConfig) -> str:
        """A child run for one (method, seed) of a final evaluation."""
        run_id = self._run(experiment_id, f"{label} seed {seed}",
                           {"mlflow.parentRunId": parent_id, "method": label, "seed": str(seed)})
        self.client.log_batch(run_id, params=[Param(k, _short(v)) for k, v in
                                              asdict(config).items()])
        return run_id

    def end_seed_run(self, run_id: str, evaluations: list[Evaluation], seed_run: Any,
                     artifact_dir: str | None) -> None:
        """Per-epoch dev metrics, the final ones, costs, and the artifact of a seed run."""
        now = int(time.time() * 1000)
        for evaluation in evaluations:
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

    def end_evaluation(self, parent_id: str, folder: Path, metrics: dict[str, float],
                       tags: dict[str, str] | None = None) -> None:
        """The report as the run's description; the comparison table (CSV, Parquet), plots,
        the test's figures and its verdict (a tag) on the parent run."""
        self.client.log_batch(parent_id, metrics=[Metric(k, float(v), _now_ms(), 0)
                                                  for k, v in metrics.items()
                                                  if v == v],  # NaN: no test possible
                              tags=[RunTag(k, v) for k, v in (tags or {}).items()])
        self.end_report(parent_id, folder, [
            name for name in ("report.md", "comparison.csv", "comparison.parquet", "runs.json",
                              "dev_per_seed.png", "learning_curves.png")
            if (folder / name).is_file()])  # the plots are left out where not drawn

    def register(self, run_id: str, artifact_dir: str | os.PathLike[str], task: str, *,
                 standing: Standing, promote: bool = False,
                 description: str = "") -> Registration:
        """Log a BitFit artifact as an MLflow model on ``run_id``, register it as a version of
        ``bitfit-<task>`` and judge it against the champion (``registry.register_best``)."""
        from bitfit.registry import register_best

        registration = register_best(self.client, run_id, artifact_dir, task,
                                     standing=standing, promote=promote,
                                     description=description)
        self.client.set_tag(run_id, "bitfit.registered_model",
                            f"{registration.model} version {registration.version}")
        return registration

    def reproduce_run(self, experiment_id: str, name: str, params: dict[str, Any]) -> str:
        """The parent run of a reproduction: the one of that name when it resumes (running
        again), else a new one with the settings as parameters."""
        return self._parent(experiment_id, f"reproduce {name}", "reproduce",
                            ("bitfit.reproduce", name), params)

    def _parent(self, experiment_id: str, run_name: str, kind: str, key: tuple[str, str],
                params: dict[str, Any], tags: dict[str, str] | None = None, *,
                resume: bool = True) -> str:
        """A parent run found by ``key`` (a tag, and the name whose digest it holds): with
        ``resume`` the earliest one, running again, when there is one; else a new one."""
        tag, value = key[0], _key(key[1])
        found = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{tag}` = '{value}'", max_results=1,
            order_by=["attributes.start_time ASC"]) if resume else []
        if found:
            self.client.update_run(found[0].info.run_id, status="RUNNING")
            return found[0].info.run_id
        run_id = self._run(experiment_id, run_name,
                           {tag: value, "bitfit.kind": kind, **(tags or {})})
        self.client.log_batch(run_id, params=[Param(k, _short(v)) for k, v in params.items()])
        return run_id

    def end_report(self, run_id: str, folder: Path, files: list[str]) -> None:
        """End a run that holds a report: ``folder/report.md`` as its description (up to the
        store's 8,000 characters, then a pointer to the artifact), ``files`` of the folder as
        artifacts."""
        report = (folder / "report.md").read_text()
        cut = "\n\n(the rest is in the artifact report.md)"
        self.client.set_tag(run_id, NOTE_TAG, report if len(report) <= NOTE_LIMIT
                            else report[:NOTE_LIMIT - len(cut)] + cut)
        for name in files:
            self.client.log_artifact(run_id, str(folder / name))
        self.client.set_terminated(run_id, status="FINISHED")

    def resume_seed_runs(self, experiment_id: str, parent_id: str) -> set[str]:
        """The ids of a resumed final evaluation's finished child runs; those its stopped
        process left RUNNING (a SIGKILL, a crash) end KILLED."""
        children = self.child_runs(experiment_id, parent_id)
        for run in children:
            if run.info.status == "RUNNING":
                self.client.set_terminated(run.info.run_id, status="KILLED")
        return {r.info.run_id for r in children if r.info.status == "FINISHED"}

    def child_runs(self, experiment_id: str, parent_id: str) -> list:
        return self.client.search_runs(
            [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
            max_results=10_000)


def _short(value: Any) -> str:
    text = mask_url(str(value)) if "://" in str(value) else str(value)
    return text[:6000]
