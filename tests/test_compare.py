from __future__ import annotations

import contextlib
import dataclasses
import io

import pytest

from bitfit.compare import best_config, compare
from bitfit.space import load_space
from bitfit.study import run_study
from bitfit.tracking import Tracker
from bitfit.train import TrainConfig


def test_final_runs_match_mlflow_and_the_recipe_predicts(base, cola_small, tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", home=tmp_path)
    configs = {"bitfit": TrainConfig(subset="qm2", epochs=2, learning_rate=5e-3),
               "full": TrainConfig(method="full", epochs=2, learning_rate=5e-5)}

    comparison = compare(base, cola_small, configs, seeds=2, home=tmp_path, name="t",
                         tracker=tracker, log=lambda line: None)

    assert len(comparison.runs) == 4
    for run in comparison.runs:
        logged = tracker.client.get_run(run.run_id)
        assert logged.data.tags["mlflow.parentRunId"] == comparison.parent_run_id
        assert logged.data.metrics["dev_mcc"] == run.metrics["mcc"]
        assert logged.data.metrics["dev_accuracy"] == run.metrics["accuracy"]
        history = tracker.client.get_metric_history(run.run_id, "validation_mcc")
        assert [m.value for m in history] == run.curve and len(run.curve) == 2
    for name in ("report.md", "comparison.parquet", "dev_per_seed.png", "learning_curves.png"):
        assert (comparison.folder / name).is_file()
    parent = {a.path for a in tracker.client.list_artifacts(comparison.parent_run_id)}
    assert {"report.md", "comparison.parquet", "dev_per_seed.png"} <= parent
    mean = sum(r.metrics["mcc"] for r in comparison.runs if r.method == "bitfit") / 2
    assert f"| bitfit | 2 | {mean:.4f}" in comparison.markdown

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(comparison.recipe(), {})  # the recipe exactly as the report prints it
    assert set(eval(out.getvalue())) <= {"acceptable", "unacceptable"}


def test_same_seeds_same_numbers(base, cola_small, tmp_path):
    configs = {"bitfit": TrainConfig(epochs=1, precision="fp32")}
    first = compare(base, cola_small, configs, seeds=2, home=tmp_path, name="a",
                    log=lambda line: None)
    second = compare(base, cola_small, configs, seeds=2, home=tmp_path, name="b",
                     log=lambda line: None)

    assert [r.metrics for r in first.runs] == [r.metrics for r in second.runs]


def test_best_config_is_read_back_from_the_study(base, cola_small, tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    outcome = run_study(base, cola_small, load_space("quick"), storage=storage,
                        study_name="s", home=tmp_path, n_trials=2, log=lambda line: None)

    config = best_config(storage, "s")

    assert config.learning_rate == outcome.study.best_params["learning_rate"]
    assert config.subset == outcome.study.best_params["subset"]
    assert dataclasses.asdict(config)["epochs"] == 1
    with pytest.raises(ValueError, match="no study named 'nope'"):
        best_config(storage, "nope")


def test_rand_and_frozen_baselines_take_the_bitfit_config(base, cola_small, tmp_path):
    bitfit = TrainConfig(subset="qm2", epochs=1)
    configs = {"bitfit": bitfit, "rand": dataclasses.replace(bitfit, method="rand"),
               "frozen": dataclasses.replace(bitfit, method="frozen")}

    comparison = compare(base, cola_small, configs, seeds=1, home=tmp_path, name="x",
                         log=lambda line: None)

    params = {r.method: r.trainable_params for r in comparison.runs}
    head = 384 * 2 + 2
    assert params == {"bitfit": 6 * (384 + 1536) + head, "rand": 6 * (384 + 1536) + head,
                      "frozen": head}
    assert "| rand | 1 |" in comparison.markdown and "| frozen | 1 |" in comparison.markdown
