"""The MLflow layout: which experiment a task's runs go to, and the links the printout gives."""

from __future__ import annotations

import dataclasses

import pytest

from bitfit.tracking import STUDY_TAG, Tracker


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> str:
    """One store for the module (a new SQLite store takes seconds to migrate): each test uses
    task names of its own."""
    return str(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def tracker(home) -> Tracker:
    return Tracker(f"sqlite:///{home}/mlflow.db", home=home)


def _run_in(tracker: Tracker, experiment: str, tags: dict[str, str]) -> None:
    tracker.client.create_run(tracker.experiment(experiment), tags=tags)


def test_a_fresh_store_puts_a_tasks_runs_in_bitfit_task(tracker):
    assert tracker.task_experiment("cola") == "bitfit-cola"


@pytest.mark.parametrize(("task", "tags", "expected"), [
    ("sst2", {STUDY_TAG: "sst2-bitfit"}, "sst2"),  # a study's parent run from before
    ("rte", {"bitfit.evaluation": "x-vs-y-s5"}, "rte"),  # an evaluation's parent from before
    ("mrpc", {"owner": "another project"}, "bitfit-mrpc"),  # another project's experiment
])
def test_an_old_stores_task_experiment_is_kept_only_where_it_holds_bitfit_runs(tracker, task,
                                                                               tags, expected):
    _run_in(tracker, task, tags)

    assert tracker.task_experiment(task) == expected


def test_once_bitfit_task_exists_it_is_used_even_beside_an_old_experiment(tracker):
    _run_in(tracker, "qnli", {STUDY_TAG: "qnli-bitfit"})
    tracker.experiment("bitfit-qnli")

    assert tracker.task_experiment("qnli") == "bitfit-qnli"


def test_the_pipeline_names_the_experiment_once_and_says_when_it_keeps_an_old_one(tracker,
                                                                                   home):
    from bitfit.pipeline import Config, named_experiment

    said: list[str] = []
    config = Config(task="stsb", tracking_uri=tracker.tracking_uri, home=home)

    assert named_experiment(config, said.append).experiment == "bitfit-stsb" and not said
    _run_in(tracker, "wnli", {STUDY_TAG: "wnli-bitfit"})
    old = named_experiment(Config(task="wnli", tracking_uri=tracker.tracking_uri, home=home),
                           said.append)
    assert old.experiment == "wnli"
    assert len(said) == 1 and "experiment 'wnli'" in said[0] and "--experiment" in said[0]
    chosen = dataclasses.replace(config, experiment="mine")
    assert named_experiment(chosen, said.append).experiment == "mine" and len(said) == 1


@pytest.mark.parametrize(("uri", "served"), [
    ("sqlite:///runs/mlflow.db", "http://127.0.0.1:5000"),  # where `mlflow ui ...` serves it
    ("https://me:secret@mlflow.example.org/", "https://me:***@mlflow.example.org"),
])
def test_the_printout_links_the_experiments_runs_page_after_the_ui_command(tmp_path, uri,
                                                                           served):
    from types import SimpleNamespace

    import optuna

    from bitfit.pipeline import RunSummary, study_summary

    data = SimpleNamespace(task=SimpleNamespace(name="cola", main_metric="mcc"),
                           selection_split="heldout")
    summary = study_summary(optuna.create_study(), "7", 0, data, storage="sqlite://",
                            tracking_uri=uri, home=str(tmp_path))
    lines = RunSummary(summary).lines()
    see = next(i for i, line in enumerate(lines) if line.startswith("see it: "))

    assert lines[see + 1] == f"its runs: {served}/#/experiments/7/runs"
    assert "secret" not in "\n".join(lines)
