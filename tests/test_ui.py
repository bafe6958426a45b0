"""The results where users look, checked as a person would: a quick search through the Prefect
flow on the native server stack (PostgreSQL, MLflow server, Prefect server with its UI), then the
Prefect artifacts read back with the Prefect client, and the MLflow UI and the Prefect UI opened
in headless Chromium. Screenshots go under the run home (``<home>/screenshots``)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.parse
from uuid import UUID

import pytest

from bitfit.orchestrate import artifact_key
from tests.browser import Browser, available
from tests.conftest import ROOT, TINY, TINY_FULL

pytestmark = pytest.mark.slow  # servers and subprocesses end to end


@pytest.fixture(scope="module")
def searched(stack, glue_dir, tmp_path_factory):
    """A finished quick SST-2 search with both studies and a final evaluation, run by the flow
    against the servers: Optuna on PostgreSQL, the MLflow server, the Prefect server."""
    assert available(), ("the UI check needs a headless browser: ./setup.sh installs it (apt-get "
                         "install chromium chromium-driver) and selenium (the dev extra)")
    home = tmp_path_factory.mktemp("ui-home")
    env = {**os.environ, **stack.env(), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, str(ROOT / "flows" / "search.py"), "--task", "sst2", "--data-dir",
         str(glue_dir), "--space", TINY, "--baseline-space", TINY_FULL, "--n-trials", "2",
         "--max-train-samples", "300",
         "--seeds", "1", "--eval-processes", "1", "--home", str(home), "--json"],
        capture_output=True, text=True, env=env, cwd=home, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    assert summary["storage"] == stack.optuna_storage and summary["trials"] == 2
    assert summary["tracking_uri"] == stack.mlflow_uri
    return stack, summary, home


@contextlib.contextmanager
def _client(stack):
    """A Prefect client of the stack's server (this process may have set up another API)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: stack.prefect_api}), \
            get_client(sync_client=True) as client:
        yield client


def _flow_run(stack, summary: dict):
    """The flow run the summary names, read back from the Prefect server."""
    with _client(stack) as client:
        return client.read_flow_run(UUID(summary["prefect_flow_run"]["id"]))


def test_the_flow_run_holds_the_report_trials_progress_and_links(searched):
    from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterFlowRunId,
                                                LogFilter, LogFilterFlowRunId)

    stack, summary, _ = searched
    run = _flow_run(stack, summary)
    assert run.name == "sst2-search"  # named from its parameters
    assert run.state is not None and run.state.is_completed()
    ui = summary["prefect_flow_run"]["ui"]
    assert ui.startswith(stack.prefect_ui) and ui.endswith(str(run.id))
    with _client(stack) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
            any_=[run.id])))
    by_key = {a.key: a for a in artifacts}
    study, baseline = summary["study_name"], summary["baseline"]["study_name"]
    evaluation = f"{study}-vs-{baseline}-s1"

    report = by_key["sst2-report"]
    assert report.type == "markdown"
    assert f"study `{study}`: best accuracy on heldout **{summary['best_value']:.4f}**" in (
        report.data)
    assert summary["evaluation"]["table"] in report.data
    assert "models:/bitfit-sst2@champion" in report.data
    trials = json.loads(by_key[artifact_key(f"trials-{study}")].data)
    assert [row["trial"] for row in trials] == [0, 1]
    assert {row["state"] for row in trials} <= {"COMPLETE", "PRUNED"}
    assert len(json.loads(by_key[artifact_key(f"trials-{baseline}")].data)) == 2
    progress = {a.key: a.data for a in artifacts if a.type == "progress"}
    assert progress == {artifact_key(f"study {study}"): 100.0,
                        artifact_key(f"study {baseline}"): 100.0,
                        artifact_key(f"evaluation {evaluation}"): 100.0}
    link = by_key[artifact_key(f"mlflow-{study}")].data
    assert (f"{stack.mlflow_uri}/#/experiments/{summary['experiment_id']}/runs/"
            f"{summary['mlflow_parent_run_id']}") in link
    lines = [log.message for log in logs]
    assert any(line.startswith("trial 2 of 2: ") for line in lines)
    assert any(line.startswith("final 2 of 2: ") for line in lines)


def test_the_mlflow_and_prefect_uis_show_the_search(searched):
    stack, summary, home = searched
    shots = home / "screenshots"
    ui, experiment = stack.mlflow_uri, summary["experiment_id"]
    parent = summary["mlflow_parent_run_id"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(ui)
    trials = [r.info.run_id for r in client.search_runs(
        [experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'")]
    quote = urllib.parse.quote
    run = _flow_run(stack, summary)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT, check=True).stdout.strip()
    with Browser(shots) as browser:
        # the experiment's runs: the studies' and the evaluation's parent runs
        browser.open(f"{ui}/#/experiments/{experiment}/runs", f"search {summary['study_name']}",
                     f"search {summary['baseline']['study_name']}", "evaluation ")
        browser.screenshot(shots / "mlflow-runs.png")
        # the study's run: its description (the best trial), nested trials, its data and
        # commit; the trials table
        browser.open(f"{ui}/#/experiments/{experiment}/runs/{parent}", "best value",
                     "trial 0", "trial 1", "sst2-train", "Training", commit[:7])
        browser.screenshot(shots / "mlflow-study-run.png")
        browser.open(f"{ui}/#/experiments/{experiment}/runs/{parent}/artifacts/trials.csv",
                     "Previewing the first 2 rows", "COMPLETE")
        browser.screenshot(shots / "mlflow-trials-table.png")
        # the trials compared: learning rate and subset against the metric
        browser.open(f"{ui}/#/compare-runs?runs={quote(json.dumps(trials))}"
                     f"&experiments={quote(json.dumps([experiment]))}",
                     "Comparing 2 Runs", "Parallel Coordinates Plot", "learning_rate", "subset",
                     "heldout_accuracy")
        browser.screenshot(shots / "mlflow-compare.png")
        # the evaluation's run: the report as its description
        evaluation = summary["evaluation"]["evaluation_run_id"]
        browser.open(f"{ui}/#/experiments/{experiment}/runs/{evaluation}",
                     "final evaluation on validation", "non-inferiority")
        browser.screenshot(shots / "mlflow-evaluation-run.png")
        # the registered model and its champion
        browser.open(f"{ui}/#/models/bitfit-sst2", "Version 1", "champion")
        browser.screenshot(shots / "mlflow-model.png")
        # the Prefect flow run: trial lines in its logs, the artifacts, the report rendered
        prefect = stack.prefect_ui
        browser.open(summary["prefect_flow_run"]["ui"], "sst2-search", "Completed")  # as printed
        browser.open(f"{prefect}/v2/runs/flow-run/{run.id}?tab=Logs", "sst2-search",
                     "Completed", "trial 2 of 2")
        browser.screenshot(shots / "prefect-logs.png")
        browser.open(f"{prefect}/v2/runs/flow-run/{run.id}?tab=Artifacts", "sst2-report",
                     artifact_key(f"trials-{summary['study_name']}"))
        browser.screenshot(shots / "prefect-artifacts.png")
        report = _artifact_id(stack, run.id, "sst2-report")
        browser.open(f"{prefect}/v2/artifacts/artifact/{report}", "Final evaluation",
                     "models:/bitfit-sst2@champion")
        browser.screenshot(shots / "prefect-report.png")
    assert len(list(shots.glob("*.png"))) == 9


def _artifact_id(stack, flow_run_id: UUID, key: str) -> str:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with _client(stack) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return next(str(a.id) for a in artifacts if a.key == key)
