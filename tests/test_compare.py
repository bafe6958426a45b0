from __future__ import annotations

import contextlib
import dataclasses
import io
import os
from pathlib import Path

import pytest
import torch

from bitfit.artifacts import TENSORS
from bitfit.compare import best_config, compare
from bitfit.space import load_space
from bitfit.study import run_study
from bitfit.tracking import Tracker
from bitfit.train import TrainConfig
from tests.conftest import TINY


@pytest.mark.slow
def test_final_runs_match_mlflow_and_the_recipe_predicts(base, cola_small, tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", home=tmp_path)
    configs = {"bitfit": TrainConfig(subset="qm2", epochs=2, learning_rate=5e-3),
               "full": TrainConfig(method="full", epochs=2, learning_rate=5e-5)}

    comparison = compare(base, cola_small, configs, seeds=2, home=tmp_path, name="t",
                         tracker=tracker, processes=2, log=lambda line: None)

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
    assert {"report.md", "comparison.csv", "comparison.parquet", "dev_per_seed.png"} <= parent
    evaluation = tracker.client.get_run(comparison.parent_run_id)
    assert evaluation.data.tags["mlflow.note.content"] == (comparison.folder / "report.md"
                                                           ).read_text()
    assert {i.dataset.name for i in evaluation.inputs.dataset_inputs} == {"cola-train",
                                                                          "cola-validation"}
    # the best BitFit seed, registered: its run holds the model
    best = max((r for r in comparison.runs if r.method == "bitfit"), key=lambda r: r.metrics["mcc"])
    assert comparison.registered_model == "models:/bitfit-cola@champion"
    version = tracker.client.get_model_version_by_alias("bitfit-cola", "champion")
    assert version.run_id == best.run_id
    mean = sum(r.metrics["mcc"] for r in comparison.runs if r.method == "bitfit") / 2
    assert f"| bitfit | 2 | {mean:.4f}" in comparison.markdown
    # the version keeps the evaluation's figures, measured on cola_small's dev rows
    tags = version.tags
    assert float(tags["metric_mean"]) == pytest.approx(mean) and tags["seeds"] == "2"
    assert (tags["metric"], tags["eval_split"], tags["dev_rows"], tags["selected_on"]) == (
        "mcc", "validation", "96", "given")
    assert tags["dev_fingerprint"] == cola_small.fingerprints["validation"]
    assert tags["evaluation_run_id"] == comparison.parent_run_id
    assert comparison.registration is not None and comparison.registration.won

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(comparison.recipe(), {})  # the recipe exactly as the report prints it
    assert set(eval(out.getvalue())) <= {"acceptable", "unacceptable"}


@pytest.mark.slow
def test_same_seeds_same_numbers(base, cola_small, tmp_path):
    configs = {"bitfit": TrainConfig(epochs=1, precision="fp32")}
    first = compare(base, cola_small, configs, seeds=2, home=tmp_path, name="a",
                    processes=1, log=lambda line: None)
    second = compare(base, cola_small, configs, seeds=2, home=tmp_path, name="b",
                     processes=1, log=lambda line: None)

    assert [r.metrics for r in first.runs] == [r.metrics for r in second.runs]


@pytest.mark.slow
def test_processes_change_only_the_wall_time(base, cola_small, tmp_path):
    configs = {"bitfit": TrainConfig(subset="qm2", epochs=1, learning_rate=5e-3),
               "full": TrainConfig(method="full", epochs=1, learning_rate=5e-5)}
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))  # what each of 2 processes gets
    try:
        alone = compare(base, cola_small, configs, seeds=2, home=tmp_path, name="one",
                        processes=1, log=lambda line: None)
    finally:
        torch.set_num_threads(threads)
    together = compare(base, cola_small, configs, seeds=2, home=tmp_path, name="two",
                       processes=2, log=lambda line: None)

    assert [(r.method, r.seed) for r in together.runs] == [(r.method, r.seed) for r in alone.runs]
    assert [r.metrics for r in together.runs] == [r.metrics for r in alone.runs]
    assert [r.curve for r in together.runs] == [r.curve for r in alone.runs]
    for a, b in zip(alone.runs, together.runs, strict=True):
        if a.artifact:
            assert (Path(a.artifact) / TENSORS).read_bytes() == \
                (Path(b.artifact) / TENSORS).read_bytes()
    with pytest.raises(ValueError, match="processes must be 1 or more, got 0"):
        compare(base, cola_small, configs, seeds=1, home=tmp_path, name="zero", processes=0)


def test_best_config_is_read_back_from_the_study(base, cola_small, tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    outcome = run_study(base, cola_small, load_space(TINY), storage=storage,
                        study_name="s", home=tmp_path, n_trials=2, log=lambda line: None)

    config = best_config(storage, "s")

    assert config.learning_rate == outcome.study.best_params["learning_rate"]
    assert config.subset == outcome.study.best_params["subset"]
    assert dataclasses.asdict(config)["epochs"] == 1
    with pytest.raises(ValueError, match="no study named 'nope'"):
        best_config(storage, "nope")


@pytest.mark.slow
def test_rand_and_frozen_baselines_take_the_bitfit_config(base, cola_small, tmp_path):
    bitfit = TrainConfig(subset="qm2", epochs=1)
    configs = {"bitfit": bitfit, "rand": dataclasses.replace(bitfit, method="rand"),
               "frozen": dataclasses.replace(bitfit, method="frozen")}

    comparison = compare(base, cola_small, configs, seeds=1, home=tmp_path, name="x",
                         processes=1, log=lambda line: None)

    params = {r.method: r.trainable_params for r in comparison.runs}
    head = 384 * 2 + 2
    assert params == {"bitfit": 6 * (384 + 1536) + head, "rand": 6 * (384 + 1536) + head,
                      "frozen": head}
    assert "| rand | 1 |" in comparison.markdown and "| frozen | 1 |" in comparison.markdown


def test_the_verdict_pairs_seeds_and_is_not_testable_below_the_majority_class():
    from scipy import stats

    from bitfit.compare import comparison_verdict
    from bitfit.report import SeedRun

    def runs(method, scores):
        return [SeedRun(method, seed, {"mcc": v}, {}, [v], 1, 0.1, 4, 400, 1.0, 1.0)
                for seed, v in enumerate(scores)]

    bitfit, full = [0.20, 0.18, 0.22], [0.21, 0.18, 0.22]
    verdict = comparison_verdict(runs("bitfit", bitfit) + runs("full", full), "mcc", 0.0)
    diffs = [b - f + 0.03 for b, f in zip(bitfit, full, strict=True)]  # MCC's margin: 0.03
    assert verdict.p_value == pytest.approx(
        stats.ttest_1samp(diffs, 0, alternative="greater").pvalue)
    assert verdict.verdict == "holds"
    flat = comparison_verdict(runs("bitfit", [0.0, 0.0, 0.0]) + runs("full", [0.0, 0.01, 0.0]),
                              "mcc", 0.0)
    assert flat.verdict == "not testable" and "majority class" in flat.note
    assert comparison_verdict(runs("bitfit", bitfit), "mcc", 0.0) is None
