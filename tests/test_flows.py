from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT, TINY, TINY_FULL


@pytest.mark.slow
def test_the_pipeline_runs_both_studies_and_the_final_evaluation(glue_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run(
        [sys.executable, str(ROOT / "flows" / "search.py"), "--task", "cola", "--data-dir",
         str(glue_dir), "--space", TINY, "--n-trials", "2", "--max-train-samples", "200",
         "--home", str(tmp_path), "--json", "--baseline-space", TINY_FULL, "--seeds", "2",
         # the final evaluation's seeds in this process: its process pool is tested in
         # tests/test_compare.py, and starting two more processes took a quarter of this test
         "--eval-processes", "1", "--storage", f"sqlite:///{tmp_path}/optuna.db"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)

    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    assert summary["study_name"] == "cola-tiny-n200" and summary["trials"] == 2
    assert summary["selection_split"] == "heldout" and summary["best_params"]
    ui = f"mlflow ui --backend-store-uri {summary['tracking_uri']}"
    assert summary["mlflow_ui"].startswith(ui)
    # the experiment's runs page where that command serves the store, not its GenAI overview
    assert summary["mlflow_runs"] == (f"http://127.0.0.1:5000/#/experiments/"
                                      f"{summary['experiment_id']}/runs")
    assert "trial 2 of 2" in out.stderr
    client = MlflowClient(tracking_uri=summary["tracking_uri"])
    children = client.search_runs(
        [summary["experiment_id"]],
        filter_string=f"tags.mlflow.parentRunId = '{summary['mlflow_parent_run_id']}'")
    assert len(children) == 2
    assert client.get_experiment(summary["experiment_id"]).name == "bitfit-cola"
    assert summary["baseline"]["study_name"] == "cola-tiny-n200-tiny_full"
    assert summary["baseline"]["trials"] == 2
    evaluation = summary["evaluation"]
    assert "| bitfit | 2 |" in evaluation["table"] and "| full | 2 |" in evaluation["table"]
    seeds = client.search_runs(
        [summary["experiment_id"]],
        filter_string=f"tags.mlflow.parentRunId = '{evaluation['evaluation_run_id']}'")
    logged = {f"{r.data.tags['method']}-seed{r.data.tags['seed']}": r.data.metrics["dev_mcc"]
              for r in seeds}
    assert logged == {k: v["mcc"] for k, v in evaluation["runs"].items()}
    assert len(logged) == 4
    # each seed trains on its own sample of as many rows as the studies trained on (200), from
    # the training split less the 500 rows they held out; both methods of a seed on the same
    assert {r.data.params["train_samples"] for r in seeds} == {"200"}
    parent = client.get_run(evaluation["evaluation_run_id"])
    assert parent.data.params["train_examples"] == str(8551 - 500)
    assert evaluation["verdict"]["verdict"] in ("holds", "fails", "inconclusive",
                                                "not testable")
    assert "non-inferiority" in evaluation["verdict_text"] and "margin" in evaluation[
        "verdict_text"]


@pytest.mark.parametrize("storage, tracking, message", [
    ("sqlite:///runs/optuna.db", "http://127.0.0.1:5000", "is a SQLite file: use PostgreSQL"),
    ("postgresql://u@h/db", "sqlite:///runs/mlflow.db", "needs an MLflow tracking server"),
])
def test_several_workers_refuse_stores_that_only_this_machine_reaches(storage, tracking,
                                                                      message):
    from bitfit.orchestrate import check_workers

    with pytest.raises(ValueError, match=message):
        check_workers(2, storage, tracking)
    check_workers(1, storage, tracking)  # one worker: anything goes


def test_several_workers_need_a_prefect_server():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from bitfit.orchestrate import check_workers

    with temporary_settings(updates={PREFECT_API_URL: None}), \
            pytest.raises(ValueError, match="no Prefect server is configured"):
        check_workers(2, "postgresql://u@h/db", "http://127.0.0.1:5000")
    with pytest.raises(ValueError, match="--workers must be a whole number of 1 or more, got 0"):
        check_workers(0, "postgresql://u@h/db", "http://127.0.0.1:5000")


def test_the_workers_are_told_their_index_and_choose_their_gpu_where_they_run(monkeypatch):
    """The machine that starts the workers may have no GPU, or other GPUs than theirs: it sends
    ``auto`` and the index, and each worker counts its own GPUs."""
    import prefect.client.orchestration
    import prefect.deployments
    import torch

    from bitfit import orchestrate, pipeline

    sent = []

    class Run:
        def __init__(self, parameters, name):
            self.id, self.name, self.parameters = name, name, parameters
            self.state = type("Done", (), {"is_final": lambda s: True,
                                           "is_completed": lambda s: True})()

    class Client:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read_flow_run(self, run_id):
            return next(r for r in sent if r.id == run_id)

    def run_deployment(name, timeout, parameters, flow_run_name):
        sent.append(Run(parameters, flow_run_name))
        return sent[-1]

    def no_counting_here():
        raise AssertionError("the caller counted its own GPUs")

    monkeypatch.setattr(prefect.deployments, "run_deployment", run_deployment)
    monkeypatch.setattr(prefect.client.orchestration, "get_client", lambda **_: Client())
    monkeypatch.setattr(torch.cuda, "device_count", no_counting_here)
    orchestrate.run_workers(3, {"study_name": "s", "device": "auto"}, poll_s=0)
    assert [(r.parameters["worker"], r.parameters["device"]) for r in sent] == [
        (0, "auto"), (1, "auto"), (2, "auto")]

    sys.path.insert(0, str(ROOT / "flows"))
    import search

    trained_on = []
    monkeypatch.setattr(pipeline, "run", lambda config, **_: trained_on.append(config.device))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # the worker's machine
    for run in sent:
        search.study.fn(**run.parameters)
    search.study.fn(device="cuda:0", worker=1)
    assert trained_on == ["cuda:0", "cuda:1", "cuda:0", "cuda:0"]


def test_the_flows_honour_bitfit_home(glue_dir, tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "flows"))
    import prepare

    monkeypatch.setenv("BITFIT_HOME", str(tmp_path / "home"))
    sizes = prepare.prepare(task="wnli", data_dir=str(glue_dir), max_train_samples=50)

    assert sizes["train"] + sizes["heldout"] == 50
    assert len(list((tmp_path / "home" / "cache").glob("wnli-*.parquet"))) == 3
