from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from optuna.trial import TrialState

from bitfit.artifacts import apply_artifact
from bitfit.space import load_space
from bitfit.study import run_study
from bitfit.tracking import Tracker, mask_url
from tests.conftest import TINY


@pytest.fixture(scope="module")
def cola_search(base, glue_dir, cache_dir):
    from bitfit.data import prepare
    from bitfit.tasks import load_task

    return prepare(load_task("cola"), base.tokenizer, data_dir=glue_dir, max_length=64,
                   max_train_samples=200, validation_fraction=0.25, cache_dir=cache_dir)


def _run(base, data, space, home, name, n, **kwargs):
    tracker = Tracker(f"sqlite:///{home}/mlflow.db", home=home)
    outcome = run_study(base, data, space, storage=f"sqlite:///{home}/optuna.db",
                        study_name=name, home=home, n_trials=n, tracker=tracker,
                        log=lambda line: None, **kwargs)
    return outcome, tracker


@pytest.mark.slow
def test_a_study_records_each_trial_as_a_child_run_with_a_bias_artifact(base, cola_search,
                                                                         tmp_path):
    outcome, tracker = _run(base, cola_search, load_space(TINY), tmp_path, "s", 3)

    children = tracker.child_runs(outcome.experiment_id, outcome.parent_run_id)
    assert len(children) == 3 and len(outcome.study.trials) == 3
    by_number = {int(r.data.tags["trial_number"]): r for r in children}
    for trial in outcome.study.trials:
        run = by_number[trial.number]
        assert run.data.tags["state"] == "COMPLETE" and run.data.tags["method"] == "bitfit"
        assert run.data.params["subset"] == trial.params["subset"]
        history = tracker.client.get_metric_history(run.info.run_id, "heldout_mcc")
        assert [m.step for m in history] == [5]  # one epoch of 150 examples, batch 32
        assert history[0].value == trial.value
        folder = tracker.client.download_artifacts(run.info.run_id, "bias_artifact",
                                                   str(tmp_path / f"dl{trial.number}"))
        model = apply_artifact(base, folder)
        assert model.head.out_features == 2
    parent = tracker.client.get_run(outcome.parent_run_id)
    assert parent.data.metrics["best_value"] == outcome.study.best_value
    assert parent.data.tags["best_trial"] == str(outcome.study.best_trial.number)
    artifacts = {a.path for a in tracker.client.list_artifacts(outcome.parent_run_id)}
    assert {"trials.parquet", "trials.csv", "plots"} <= artifacts
    plots = {a.path for a in tracker.client.list_artifacts(outcome.parent_run_id, "plots")}
    assert "plots/optimization_history.png" in plots
    assert "plots/intermediate_values.png" in plots and "plots/timeline.png" in plots
    assert "plots/pareto.png" in plots  # held-out score against trainable parameters


@pytest.mark.slow
def test_every_run_says_who_ran_it_on_what_data_and_when(base, cola_search, tmp_path):
    import subprocess
    import time

    seen: list = []
    outcome, tracker = _run(base, cola_search, load_space(TINY), tmp_path, "who", 2,
                            progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 2), (2, 2)]
    seen.clear()
    outcome, tracker = _run(base, cola_search, load_space(TINY), tmp_path, "who", 3,
                            progress=lambda done, total: seen.append((done, total)))

    assert seen == [(3, 3)]  # the third trial of three
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    parent = tracker.client.get_run(outcome.parent_run_id)
    assert "best value" in parent.data.tags["mlflow.note.content"]
    runs = [parent, *tracker.child_runs(outcome.experiment_id, outcome.parent_run_id)]
    for run in runs:
        assert run.data.tags["mlflow.user"] and run.data.tags["mlflow.source.name"]
        assert run.data.tags["mlflow.source.git.commit"] == commit
        inputs = {i.dataset.name: (i.dataset.digest, {t.key: t.value for t in i.tags})
                  for i in run.inputs.dataset_inputs}
        assert inputs == {
            "cola-train": (cola_search.train.digest(), {"mlflow.data.context": "training"}),
            "cola-heldout": (cola_search.evals["heldout"].digest(),
                             {"mlflow.data.context": "selection"})}
        for key in run.data.metrics:
            stamp = tracker.client.get_metric_history(run.info.run_id, key)[-1].timestamp
            assert abs(stamp / 1000 - time.time()) < 3600, (key, stamp)


@pytest.mark.slow
def test_resuming_adds_trials_without_rerunning_finished_ones(base, cola_search, tmp_path):
    first, _ = _run(base, cola_search, load_space(TINY), tmp_path, "resume", 2)
    first_params = [t.params for t in first.study.trials]
    again, tracker = _run(base, cola_search, load_space(TINY), tmp_path, "resume", 2)
    more, tracker = _run(base, cola_search, load_space(TINY), tmp_path, "resume", 3)

    assert (first.ran, again.ran, more.ran) == (2, 0, 1)
    assert [t.number for t in more.study.trials] == [0, 1, 2]
    assert [t.params for t in more.study.trials[:2]] == first_params
    assert more.study.trials[2].params not in first_params  # a resumed sampler draws anew
    assert first.parent_run_id == more.parent_run_id
    assert len(tracker.child_runs(more.experiment_id, more.parent_run_id)) == 3
    assert tracker.client.get_experiment(more.experiment_id).name == "bitfit-cola"  # a new home
    assert more.study.metric_names == ["mcc"]  # Optuna's plots and its dashboard name it


@pytest.mark.slow
def test_a_study_of_a_home_from_before_bitfit_task_resumes_in_its_old_experiment(
        base, cola_search, tmp_path):
    # the home as bitfit left it when a task's experiment was the bare task's name
    first, _ = _run(base, cola_search, load_space(TINY), tmp_path, "old", 1, experiment="cola")
    more, tracker = _run(base, cola_search, load_space(TINY), tmp_path, "old", 2)

    assert more.ran == 1 and more.parent_run_id == first.parent_run_id
    assert tracker.client.get_experiment(more.experiment_id).name == "cola"
    assert len(tracker.child_runs(more.experiment_id, more.parent_run_id)) == 2
    assert tracker.client.get_experiment_by_name("bitfit-cola") is None


@pytest.mark.slow
def test_a_pruned_trial_is_pruned_in_optuna_and_in_mlflow(base, cola_search, tmp_path):
    space = dataclasses.replace(load_space(TINY), pruner={"name": "threshold", "lower": 2.0})
    outcome, tracker = _run(base, cola_search, space, tmp_path, "prune", 1)

    assert outcome.study.trials[0].state == TrialState.PRUNED
    (run,) = tracker.child_runs(outcome.experiment_id, outcome.parent_run_id)
    assert run.data.tags["state"] == "PRUNED"


@pytest.mark.slow
def test_a_failed_trial_keeps_its_reason_and_the_study_goes_on(base, cola_search, tmp_path):
    space = load_space(TINY)
    # the bundled model's pooler is unused and removed: asking for its bias fails the trial
    failing = dataclasses.replace(space, distributions={
        **space.distributions,
        "subset": type(space.distributions["subset"])(["q+pooler", "qm2"])})
    outcome, tracker = _run(base, cola_search, failing, tmp_path, "fail", 4)

    states = [t.state for t in outcome.study.trials]
    assert len(states) == 4 and TrialState.FAIL in states and TrialState.COMPLETE in states
    failed = next(t for t in outcome.study.trials if t.state == TrialState.FAIL)
    assert "pooler" in failed.user_attrs["fail_reason"]
    runs = {int(r.data.tags["trial_number"]): r for r in
            tracker.child_runs(outcome.experiment_id, outcome.parent_run_id)}
    assert runs[failed.number].data.tags["state"] == "FAIL"
    assert "pooler" in runs[failed.number].data.tags["fail_reason"]


def test_a_study_from_before_metric_names_gets_its_metrics_name_and_keeps_its_trials(tmp_path):
    import optuna

    from bitfit.studies import describe

    storage = f"sqlite:///{tmp_path}/optuna.db"
    old = optuna.create_study(study_name="old", storage=storage, direction="maximize")
    old.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    selection = dataclasses.make_dataclass("Data", ["selection_split", "evals"])
    describe(old, selection("heldout", {"heldout": range(100)}), "mcc")
    again = optuna.load_study(study_name="old", storage=storage)  # as the next run reads it

    assert again.metric_names == ["mcc"] and again.best_value == old.best_value
    assert "value_mcc" in again.trials_dataframe().columns and len(again.trials) == 2
    assert again.user_attrs["selection_examples"] == 100


def test_passwords_in_urls_are_masked():
    assert mask_url("postgresql://bob:s3cret@db:5432/optuna") == \
        "postgresql://bob:***@db:5432/optuna"
    assert mask_url("sqlite:///runs/optuna.db") == "sqlite:///runs/optuna.db"


@pytest.mark.parametrize(("stored", "reason"), [
    ("interrupted by SIGTERM", "INTERRUPTED"),
    ("interrupted: its process (host:12:3.5) is gone", "INTERRUPTED"),
    ("over the study's budget of 4: not run", "OVER_BUDGET"),
    ("RuntimeError: the loss diverged", None),
    ("", None)])
def test_a_stored_fail_reason_reads_back_as_its_type(stored, reason):
    from bitfit.studies import FailReason

    # the values are the prefixes studies already store, so old studies still read
    assert [r.value for r in FailReason] == ["interrupted", "over the study's budget"]
    assert FailReason.of(stored) is (None if reason is None else FailReason[reason])


@pytest.mark.parametrize("name", ["full_ft", "full_ft_quick"])
def test_a_grid_study_tries_every_point_once_in_its_first_trials(name):
    # The sampler is made anew per trial with its seed moved on; a grid shuffled by a moved
    # seed gave the full fine-tuning grid 3e-5 three times and never 1e-5 or 5e-5.
    import optuna

    from bitfit.study import _TrialSeeded

    space = load_space(name)
    choices = list(space.distributions["learning_rate"].choices)
    study = optuna.create_study(sampler=_TrialSeeded(space))
    study.optimize(lambda t: t.suggest_categorical("learning_rate", choices),
                   n_trials=len(choices))
    assert sorted(t.params["learning_rate"] for t in study.trials) == sorted(choices)


@pytest.mark.slow
def test_a_trial_is_scored_after_its_last_evaluation_not_its_best(base, cola_search, tmp_path):
    # as the final runs are: a trial's best epoch would favour a score that only fluctuates
    space = dataclasses.replace(load_space(TINY), fixed={"epochs": 3, "batch_size": 32},
                                pruner={"name": "none"})
    outcome, tracker = _run(base, cola_search, space, tmp_path, "last", 2)
    for trial in outcome.study.trials:
        steps = sorted(trial.intermediate_values)
        assert len(steps) == 3
        assert trial.value == trial.intermediate_values[steps[-1]]
        assert trial.user_attrs["config"]["select_best"] is False
