"""Integration: the flows against real servers started natively (infra/stack.py): Optuna on
PostgreSQL, an MLflow tracking server and a Prefect server, all on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT, TINY

pytestmark = pytest.mark.slow  # servers and subprocesses end to end


def _search(stack, glue_dir, home, *args, env=None):
    env = {**os.environ, **stack.env(), "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "flows" / "search.py"), "--task", "cola", "--data-dir",
         str(glue_dir), "--space", TINY, "--max-train-samples", "200", "--no-baseline",
         "--seeds", "0", "--home", str(home), "--json", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=home)


def _children(stack, summary):
    client = MlflowClient(tracking_uri=stack.mlflow_uri)
    return client.search_runs(
        [summary["experiment_id"]],
        filter_string=f"tags.mlflow.parentRunId = '{summary['mlflow_parent_run_id']}'")


def test_two_workers_share_one_postgres_study_without_losing_or_repeating_trials(
        stack, glue_dir, tmp_path):
    workers = [_search(stack, glue_dir, tmp_path / str(i), "--n-trials", "4", "--study-name",
                       "shared") for i in range(2) if (tmp_path / str(i)).mkdir() is None]
    results = [w.communicate(timeout=600) for w in workers]

    assert all(w.returncode == 0 for w in workers), \
        "\n-----\n".join(err[-6000:] for _, err in results)
    study = optuna.load_study(study_name="shared", storage=stack.optuna_storage)
    # the quick space prunes (median), so a trial may finish PRUNED: finished either way
    ran = [t.number for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                         optuna.trial.TrialState.PRUNED)]
    assert sorted(ran) == [0, 1, 2, 3], [(t.number, t.state.name, t.user_attrs.get("fail_reason"))
                                         for t in study.trials]
    params = [tuple(t.params.items()) for t in study.trials if t.number < 4]
    assert len(set(params)) == 4  # the two workers' samplers drew different values
    # a worker that lost the race for the last place records that trial as not run
    assert all("over the study's budget" in t.user_attrs["fail_reason"]
               for t in study.trials if t.number >= 4)
    summaries = [json.loads(out) for out, _ in results]
    assert summaries[0]["mlflow_parent_run_id"] == summaries[1]["mlflow_parent_run_id"]
    children = _children(stack, summaries[0])
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == [0, 1, 2, 3]


def test_a_worker_stopped_mid_trial_leaves_the_study_consistent(stack, glue_dir, tmp_path):
    grace = {"BITFIT_HEARTBEAT_GRACE_S": "4"}
    args = ("--n-trials", "3", "--study-name", "interrupted", "--max-train-samples", "1000")
    first = _search(stack, glue_dir, tmp_path, *args, env=grace)
    running: list[optuna.trial.FrozenTrial] = []
    deadline = time.monotonic() + 300
    while not running and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.2)
        try:
            study = optuna.load_study(study_name="interrupted", storage=stack.optuna_storage)
        except KeyError:  # not created yet
            continue
        # well into a trial: its parameters drawn and its MLflow run recorded
        running = [t for t in study.get_trials(states=[optuna.trial.TrialState.RUNNING])
                   if t.params and "mlflow_run_id" in t.user_attrs]
    first.kill()  # no chance to clean up, as when a machine goes away
    first.communicate()
    assert running, "the first worker never started a trial"
    time.sleep(5)  # past the heartbeat grace period
    second = _search(stack, glue_dir, tmp_path, *args, env=grace)
    out, err = second.communicate(timeout=600)

    assert second.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="interrupted", storage=stack.optuna_storage)
    cut = study.trials[running[0].number]
    assert cut.state == optuna.trial.TrialState.FAIL
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == cut.number]
    assert len(retry) == 1 and retry[0].params == cut.params
    ran = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                  optuna.trial.TrialState.PRUNED)]
    assert retry[0] in ran and len(ran) == 3  # the budget is met; nothing else lost
    runs = {int(r.data.tags["trial_number"]): r for r in _children(stack, json.loads(out))}
    assert sorted(runs) == sorted([cut.number] + [t.number for t in ran])
    assert runs[cut.number].info.status == "FAILED"
    assert "stopped mid-trial" in runs[cut.number].data.tags["fail_reason"]


def test_prefect_deployment_run_with_two_workers_fills_one_study(stack, glue_dir, tmp_path):
    env = {**os.environ, **stack.env(), "PYTHONPATH": str(ROOT), "PWD": str(ROOT),
           "PREFECT_WORKER_QUERY_SECONDS": "2"}

    def prefect(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "prefect", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)

    for command in (("work-pool", "create", "bitfit", "--type", "process"),
                    ("--no-prompt", "deploy", "--all", "--prefect-file", "infra/prefect.yaml")):
        done = prefect(*command)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool",
                                   "bitfit"], cwd=ROOT, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        params = {"task": "cola", "data_dir": str(glue_dir), "space": TINY,
                  "max_train_samples": "200", "n_trials": "4", "study_name": "deployed",
                  "baseline": "false", "seeds": "0", "workers": "2", "home": str(tmp_path)}
        run = prefect("deployment", "run", "bitfit-search/default", "--watch",
                      *[arg for k, v in params.items() for arg in ("--param", f"{k}={v}")],
                      timeout=900)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()

    detail = run.stdout[-3000:] + run.stderr[-2000:] + log.read_text(errors="replace")[-4000:]
    assert run.returncode == 0 and "Completed" in run.stdout, detail
    study = optuna.load_study(study_name="deployed", storage=stack.optuna_storage)
    ran = [t.number for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                         optuna.trial.TrialState.PRUNED)]
    assert sorted(ran) == [0, 1, 2, 3], detail
    request = urllib.request.Request(
        f"{stack.prefect_api}/flow_runs/filter", headers={"Content-Type": "application/json"},
        data=json.dumps({"flow_runs": {"name": {"like_": "deployed-worker"}}}).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        workers = {r["name"]: r["state_type"] for r in json.load(response)}
    assert workers == {"deployed-worker-0": "COMPLETED", "deployed-worker-1": "COMPLETED"}
    parent = study.user_attrs["mlflow_parent_run_id"]
    client = MlflowClient(tracking_uri=stack.mlflow_uri)
    children = client.search_runs([client.get_run(parent).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == [0, 1, 2, 3]
