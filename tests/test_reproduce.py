"""``bitfit reproduce`` on a tiny budget: the MLflow runs, the report's tables against them, the
heatmap's shape, the claims' verdicts against the numbers, and a second call that resumes. Its
second task is a custom one: STS-B's sentence pairs from files of the user's own."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bitfit import reproduce
from bitfit.report import SeedRun
from bitfit.reproduce import Cell, ReproduceConfig
from tests.conftest import ROOT

TASKS = ("sst2", "pairs")  # pairs: a custom regression task (STS-B's rows in CSV files)
METRIC = {"sst2": "accuracy", "pairs": "pearson"}


FLAGS = ["--tasks", ",".join(TASKS), "--seeds", "2", "--max-train-samples", "32",
         "--max-eval-samples", "32", "--epochs", "1", "--grid-points", "1",
         "--curve-task", "sst2", "--curve-sizes", "8,16,32", "--curve-seeds", "1",
         "--processes", "1", "--device", "cpu", "--name", "tiny",
         "--text-columns", "sentence1,sentence2", "--regression"]


def _tiny(home, glue_dir) -> ReproduceConfig:
    """The config the flags above ask for."""
    return ReproduceConfig(tasks=TASKS, budget="small", seeds=2, max_train_samples=32,
                           max_eval_samples=32, epochs=1, grid_points=1, curve_task="sst2",
                           curve_sizes=(8, 16, 32), curve_seeds=1, data_dir=str(glue_dir),
                           processes=1, home=str(home), device="cpu", name="tiny",
                           text_columns="sentence1,sentence2", regression=True,
                           **_own_files(home))


def _own_files(home) -> dict[str, str]:
    return {"train_file": str(home / "pairs_train.csv"), "dev_file": str(home / "pairs_dev.csv")}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, glue_dir):
    """The flow on a tiny budget, as a user starts it: 2 tasks x all methods x 2 seeds, and a
    3-point size curve (one seed a point)."""
    from bitfit.data import load_splits
    from bitfit.tasks import load_task

    home = tmp_path_factory.mktemp("reproduce")
    files = _own_files(home)
    _, frames = load_splits(load_task("stsb"), data_dir=glue_dir)
    frames["train"].head(200).to_csv(files["train_file"], index=False)
    frames["validation"].head(200).to_csv(files["dev_file"], index=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("BITFIT_OPTUNA_STORAGE", None)
    out = subprocess.run([sys.executable, str(ROOT / "flows" / "reproduce.py"), *FLAGS,
                          "--data-dir", str(glue_dir), "--home", str(home), "--json",
                          "--train-file", files["train_file"], "--dev-file", files["dev_file"]],
                         capture_output=True, text=True, env=env, cwd=home, timeout=900)
    assert out.returncode == 0, out.stderr[-5000:]
    return _tiny(home, glue_dir), json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def _runs(summary):
    from mlflow import MlflowClient

    client = MlflowClient(summary["tracking_uri"])
    return client, client.search_runs([summary["experiment_id"]], max_results=10_000)


@pytest.mark.slow
def test_every_run_is_under_one_parent_and_each_cell_has_its_seeds(tiny_run):
    _, summary, _ = tiny_run
    client, runs = _runs(summary)
    by_id = {r.info.run_id: r for r in runs}
    root = summary["mlflow_run_id"]
    assert by_id[root].info.status == "FINISHED"

    def top(run):
        while "mlflow.parentRunId" in run.data.tags:
            run = by_id[run.data.tags["mlflow.parentRunId"]]
        return run.info.run_id

    assert {top(r) for r in runs} == {root}
    seeds = [r for r in runs if "seed" in r.data.tags]
    # 2 tasks x 6 methods x 2 seeds, and 3 sizes x 3 methods x 1 seed on the curve
    assert len(seeds) == 2 * 6 * 2 + 3 * 3 * 1
    assert {r.data.tags["method"] for r in seeds} == set(reproduce.METHODS)
    trials = [r for r in runs if "trial_number" in r.data.tags]
    assert len(trials) == 2 * 6  # one learning rate per method and task: one trial each
    artifacts = {a.path for a in client.list_artifacts(root)}
    assert {"report.md", "main_table.csv", "claims.csv", "size_curve.png",
            "bias_heatmap.png", "pareto.png", "pareto.csv", "term_ablation.csv"} <= artifacts
    assert summary["prefect_flow_run"]["id"]  # the report went to the Prefect run too
    # each grid study names its metric for Optuna's plots and optuna-dashboard
    import optuna

    storage = f"sqlite:///{summary['home']}/optuna.db"
    studies = [optuna.load_study(study_name=s.study_name, storage=storage)
               for s in optuna.get_all_study_summaries(storage)]
    assert studies and all(s.metric_names == [METRIC[s.user_attrs["identity"]["task"]]]
                           for s in studies)


@pytest.mark.slow
def test_the_report_tables_are_the_mlflow_runs(tiny_run):
    config, summary, _ = tiny_run
    _, runs = _runs(summary)
    table = pd.DataFrame(summary["main_table"])
    assert len(table) == len(TASKS) * len(reproduce.METHODS)
    evaluations = {r.info.run_id: r for r in runs if r.data.tags.get("bitfit.kind") ==
                   "evaluation"}
    for row in table.itertuples():
        name = f"{summary['name']}-main-{row.task}-{row.method}"
        parent = next(i for i, r in evaluations.items()
                      if r.data.tags["bitfit.evaluation"] == name)
        scores = [r.data.metrics[f"dev_{METRIC[row.task]}"] for r in runs
                  if r.data.tags.get("mlflow.parentRunId") == parent]
        assert len(scores) == 2
        assert row.mean == pytest.approx(np.mean(scores), abs=1e-12)
        assert row.std == pytest.approx(np.std(scores, ddof=1), abs=1e-12)
    curve = pd.DataFrame(summary["size_curve"])
    assert sorted(curve["size"].unique()) == [8, 16, 32]
    assert set(curve["method"]) == set(reproduce.CURVE_METHODS)
    report = summary["markdown"]
    assert "all-MiniLM-L6-v2" in report and "sentence-embedding" in report
    assert "Custom task `pairs`: trained on" in report
    assert "| majority class |" in report and summary["majority"]["pairs"] == 0.0
    assert 0 < summary["majority"]["sst2"] < 1
    assert set(zip(table["task"], table["metric"], strict=False)) == set(METRIC.items())
    for row in table.itertuples():  # every cell of the tasks x methods grid is in the report
        assert f"{row.mean:.4f} ± {row.std:.4f}" in report


@pytest.mark.slow
def test_the_heatmap_has_every_layered_term_and_layer(tiny_run, base):
    from bitfit.biases import TERMS

    _, summary, _ = tiny_run
    folder = Path(summary["report"]).parent
    movement = pd.read_csv(folder / "bias_movement.csv")
    matrix = reproduce.movement_matrix(movement)
    layered = [t for t in TERMS if t not in ("emb_ln", "pooler")]
    assert list(matrix.index) == layered
    assert list(matrix.columns) == list(range(base.encoder.config.num_hidden_layers))
    assert (matrix.drop(index="k").to_numpy() > 0).all()  # every trained bias moved
    # the change over the summed learning rate is at most about 1 (Adam moves a coordinate
    # about the rate per step), and the key bias, whose gradient is zero in exact arithmetic,
    # moves less than the others
    assert (matrix.to_numpy() < 1.5).all()
    assert matrix.loc["k"].mean() < matrix.drop(index="k").to_numpy().mean()
    ranked = [r["term"] for r in summary["bias_ranking"]]
    assert sorted(ranked) == sorted({*layered, "emb_ln"})  # MiniLM's pooler is not read
    assert {"mean", "sst2", "pairs"} <= set(summary["bias_ranking"][0])  # a column per task


@pytest.mark.slow
def test_undoing_a_term_rescores_the_run_it_came_from(tiny_run):
    # with nothing undone, the artifact scores on dev what its run scored
    from bitfit.biases import TERMS

    _, summary, _ = tiny_run
    ablation = pd.DataFrame(summary["term_ablation"])
    runs = {(r["task"], r["method"]): r for r in summary["main_table"]}
    assert set(ablation["task"]) == set(TASKS)
    assert set(ablation["term"]) == {t for t in TERMS if t != "pooler"}
    folder = Path(summary["report"]).parent
    for task in TASKS:
        cell = json.loads((folder / "cells" / f"main-{task}-bitfit.json").read_text())
        dev = {r["seed"]: r["metrics"][METRIC[task]] for r in cell["runs"]}
        mine = ablation[ablation["task"] == task]
        for seed, trained in zip(mine["seed"], mine["trained"], strict=True):
            assert trained == pytest.approx(dev[seed], abs=1e-6)
        assert (mine["drop"] == mine["trained"] - mine["reset"]).all()
        assert runs[(task, "bitfit")]


@pytest.mark.slow
def test_the_verdicts_follow_from_the_numbers(tiny_run):
    # claim 1 recomputed from the MLflow runs with scipy: paired by seed, non-inferiority within
    # the declared margin, not testable where full fine-tuning does not beat the majority class
    from bitfit.verdicts import MARGINS

    _, summary, _ = tiny_run
    _, runs = _runs(summary)
    checked = 0
    for row in summary["claims"]:
        if row["claim"] != 1 or row["task"] not in TASKS:
            continue
        name, metric = summary["name"], METRIC[row["task"]]
        scores = {m: dict(sorted(
            (int(r.data.tags["seed"]), r.data.metrics[f"dev_{metric}"]) for r in runs
            if r.data.tags.get("seed") is not None and r.data.tags["method"] == m
            and _evaluation_of(runs, r) == f"{name}-main-{row['task']}-{m}"))
            for m in ("bitfit", "full")}
        full, bitfit = list(scores["full"].values()), list(scores["bitfit"].values())
        floor = summary["majority"][row["task"]]
        gate = (stats.ttest_1samp(full, floor, alternative="greater").pvalue
                if np.std(full) > 0 else (0.0 if np.mean(full) > floor else 1.0))
        diffs = np.array(bitfit) - np.array(full) + MARGINS[metric]
        if not gate < 0.05:
            expected, p = "not testable", math.nan
        elif np.std(diffs) == 0:
            expected = "holds" if diffs[0] > 0 else "fails"
            p = 0.0 if diffs[0] > 0 else 1.0
        else:
            p = stats.ttest_1samp(diffs, 0, alternative="greater").pvalue
            low = stats.ttest_1samp(diffs, 0, alternative="less").pvalue
            expected = "holds" if p < 0.05 else "fails" if low < 0.05 else "inconclusive"
        assert row["verdict"] == expected
        assert (math.isnan(row["p_value"]) and math.isnan(p)) or row["p_value"] == (
            pytest.approx(p))
        checked += 1
    assert checked == len(TASKS)
    overall = [r for r in summary["claims"] if r["task"] == "all"]
    assert {r["claim"] for r in overall} == {1, 2, 3, 4, 5}
    report = Path(summary["report"]).read_text()
    for rule in reproduce.rules():
        assert rule.split(",")[0] in report  # each rule is stated in the report


def _evaluation_of(runs, run) -> str:
    parent = run.data.tags["mlflow.parentRunId"]
    return next(r.data.tags.get("bitfit.evaluation", "") for r in runs
                if r.info.run_id == parent)


@pytest.mark.slow
def test_a_second_call_keeps_every_finished_cell(tiny_run, glue_dir):
    config, summary, _ = tiny_run
    _, before = _runs(summary)
    again = reproduce.run(config, report=_Silent())
    _, after = _runs(again)
    trained = [r for r in after if r.info.run_id not in {b.info.run_id for b in before}]
    assert trained == []  # nothing trained again: no new run but the report's own parent
    assert again["main_table"] == summary["main_table"]
    assert again["mlflow_run_id"] == summary["mlflow_run_id"]


@pytest.mark.slow
def test_an_interrupted_run_trains_only_the_cells_it_had_not_finished(tiny_run):
    # a cell whose file is missing is one the run had not finished when it was stopped
    config, summary, _ = tiny_run
    folder = Path(summary["report"]).parent
    (folder / "cells" / "main-pairs-lora.json").unlink()
    _, before = _runs(summary)
    again = reproduce.run(config, report=_Silent())
    _, after = _runs(again)
    new = [r for r in after if r.info.run_id not in {b.info.run_id for b in before}]
    assert sorted(r.data.tags.get("seed", "parent") for r in new) == ["0", "1", "parent"]
    assert {r.data.tags["method"] for r in new if "seed" in r.data.tags} == {"lora"}
    assert (folder / "cells" / "main-pairs-lora.json").is_file()
    assert len(again["main_table"]) == len(summary["main_table"])


class _Silent(reproduce.Report):
    def line(self, text: str) -> None:
        pass


def _cell(task, method, scores, size=None):
    runs = [SeedRun(method, i, {METRIC[task]: s}, {}, [s], 1, 0.001, 4, 400, 1.0, 1.0)
            for i, s in enumerate(scores)]
    return Cell(task, method, size, 1e-3, "study", runs, None, 1.0, METRIC[task])


def test_claim_rules_on_known_numbers():
    main = [_cell("sst2", "full", [0.90, 0.91, 0.92]),
            _cell("sst2", "bitfit", [0.74, 0.75, 0.76]),  # 0.16 behind on every seed: fails
            _cell("sst2", "bitfit_qm2", [0.69, 0.70, 0.71]),  # keeps most of bitfit's gain
            _cell("sst2", "frozen", [0.50, 0.51, 0.52]),
            _cell("sst2", "rand", [0.55, 0.56, 0.57]),
            _cell("sst2", "lora", [0.745, 0.75, 0.755])]  # level with bitfit: claim 2 holds
    rows = {(r["claim"], r["task"]): r for r in reproduce.claims(main, [], {"sst2": 0.5})}
    assert rows[(1, "sst2")]["verdict"] == "fails"
    assert rows[(2, "sst2")]["verdict"] == "holds"
    # per seed bitfit - lora = -0.005, 0, 0.005: t = (0 + 0.02) / (0.005 / sqrt 3), df 2
    assert rows[(2, "sst2")]["p_value"] == pytest.approx(
        stats.t.sf(0.02 / (0.005 / math.sqrt(3)), 2))
    assert rows[(3, "sst2")]["verdict"] == "holds"  # qm2 - bitfit/2 - frozen/2 = +0.07
    assert rows[(4, "sst2")]["verdict"] == "holds"  # bitfit - full/2 - frozen/2 = +0.04
    assert rows[(5, "sst2")]["verdict"] == "holds"  # bitfit - rand = +0.19
    assert rows[(1, "all")]["verdict"] == "fails"
    assert rows[(2, "all")]["verdict"] == "holds"
    below = [_cell("sst2", "full", [0.50, 0.49, 0.51]), _cell("sst2", "bitfit", [0.40, 0.41, 0.42]),
             _cell("sst2", "bitfit_qm2", [0.6, 0.61, 0.62]),
             _cell("sst2", "frozen", [0.50, 0.51, 0.52]),
             _cell("sst2", "rand", [0.50, 0.50, 0.50])]  # nobody beats the majority class
    rows = {r["claim"]: r for r in reproduce.claims(below, [], {"sst2": 0.5})
            if r["task"] == "sst2"}
    assert {c: rows[c]["verdict"] for c in (1, 3, 4, 5)} == dict.fromkeys((1, 3, 4, 5),
                                                                         "not testable")
    assert "full does not beat the majority class's 0.5000" in rows[1]["note"]
    assert "bitfit does not beat frozen" in rows[3]["note"]
    assert "full does not beat frozen" in rows[4]["note"]
    overall = {r["claim"]: r for r in reproduce.claims(below, [], {"sst2": 0.5})
               if r["task"] == "all"}
    assert overall[1]["verdict"] == "not testable"
    noisy = [_cell("sst2", "full", [0.80, 0.85, 0.90]), _cell("sst2", "bitfit", [0.70, 0.95, 0.80])]
    assert reproduce.claims(noisy, [], {"sst2": 0.5})[0]["verdict"] == "inconclusive"


def test_claims_over_tasks_use_holms_correction():
    # two tasks, each holding alone at p ~ 0.03: Holm's step-down doubles the smaller one
    from bitfit.verdicts import holm

    cells = []
    for task, spread in (("sst2", 0.012), ("cola", 0.011)):
        metric_cells = [_cell("sst2", "full", [0.80, 0.80, 0.80]),
                        _cell("sst2", "bitfit", [0.80 - spread, 0.80, 0.80 + spread + 0.001])]
        for c in metric_cells:
            c.task = task
        cells += metric_cells
    rows = reproduce.claims(cells, [], {"sst2": 0.5, "cola": 0.5})
    per_task = [r for r in rows if r["claim"] == 1 and r["task"] != "all"]
    overall = next(r for r in rows if r["claim"] == 1 and r["task"] == "all")
    adjusted = holm([r["p_value"] for r in per_task])
    expected = "holds" if all(p < 0.05 for p in adjusted) else "inconclusive"
    assert overall["verdict"] == expected
    assert "Holm" in overall["evidence"]


def test_the_majority_class_score_is_the_constant_prediction_of_the_commonest_label():
    from types import SimpleNamespace

    from bitfit.tasks import load_task

    def data(task, train, dev):
        return SimpleNamespace(task=load_task(task), train=SimpleNamespace(labels=np.array(train)),
                               evals={"validation": SimpleNamespace(labels=np.array(dev))},
                               selection_split="validation")

    # MRPC's F1 of always saying "paraphrase": precision 3/4, recall 1
    assert reproduce.majority_score(data("mrpc", [1, 1, 0], [1, 1, 1, 0])) == pytest.approx(6 / 7)
    assert reproduce.majority_score(data("sst2", [0, 0, 1], [1, 0, 0, 0, 1])) == 0.6
    # a constant prediction correlates with nothing
    assert reproduce.majority_score(data("stsb", [1.0, 2.0], [3.0, 4.0])) == 0.0


def test_crossing_and_curve_sizes():
    curve = pd.DataFrame({"method": ["bitfit", "full"] * 3, "size": [100, 100, 1000, 1000,
                                                                     10000, 10000],
                          "mean": [0.8, 0.7, 0.85, 0.85, 0.86, 0.9]})
    assert reproduce.crossing(curve) == pytest.approx(1000.0)
    curve.loc[3, "mean"] = 0.8  # bitfit ahead at 1,000, behind at 10,000
    assert 1000 < reproduce.crossing(curve) < 10000
    assert reproduce.crossing(curve.assign(mean=[0.8, 0.7] * 3)) is None
    sizes = reproduce.curve_sizes(67349, None)
    assert sizes[0] == 100 and sizes[-1] == 67349 and len(sizes) == 7
    assert all(math.log10(b / a) < 0.6 for a, b in zip(sizes, sizes[1:], strict=False))
    assert reproduce.curve_sizes(500, (100, 300, 1000)) == [100, 300, 500]


@pytest.mark.parametrize(("change", "message"), [
    ({"budget": "huge"}, "--budget must be one of small, paper"),
    ({"methods": ("bitfit", "adapter")}, "--methods has 'adapter'"),
    ({"tasks": ("sst2", "nope")}, "unknown task 'nope'"),
    ({"seeds": 0}, "--seeds must be a whole number of 1 or more"),
    ({"curve_sizes": (1,)}, "--curve-sizes must be a whole number of 2 or more"),
    ({"tasks": ("sst2", "mine", "yours")}, "--tasks names 2 tasks that are not GLUE tasks "
                                             "(mine, yours)"),
    ({"train_file": "a.csv", "dev_file": "b.csv"}, "--train-file a.csv is given but --tasks "
                                                   "names no custom task"),
    ({"tasks": ("sst2", "mine"), "train_file": "a.csv", "dev_file": "b.csv"},
     "data file 'a.csv' does not exist"),
    ({"tasks": ("mine",), "train_file": "a.csv"}, "a custom task needs both --train-file and "
                                                  "--dev-file"),
])
def test_bad_settings_fail_in_one_sentence_before_anything_loads(tmp_path, change, message):
    # ValueError, or DataSourceError (an OSError) for a file that is not there
    with pytest.raises((ValueError, OSError), match=re.escape(message)):
        reproduce.check(ReproduceConfig(home=str(tmp_path), **change))
