"""Faults a real run meets: a signal mid-trial and the same command again, two processes on one
home, stores that do not answer, and a password that must land in no store."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.conftest import ROOT, TINY
from tests.procs import alive, descendants

pytestmark = pytest.mark.slow  # servers and subprocesses end to end

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           **extra}
    for key in ("MLFLOW_TRACKING_URI", "BITFIT_OPTUNA_STORAGE", "PREFECT_API_URL"):
        if key not in extra:
            env.pop(key, None)
    return env


def _search(glue_dir, home: Path, *args: str, env: dict[str, str] | None = None):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "flows" / "search.py"), "--task", "cola", "--data-dir",
         str(glue_dir), "--space", TINY, "--no-baseline", "--seeds", "0", "--home", str(home),
         *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env or _env(), cwd=home)


def _wait_for_running_trial(home: Path, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.3)
        try:
            with sqlite3.connect(home / "optuna.db") as db:
                if db.execute("SELECT count(*) FROM trials t JOIN trial_user_attributes a "
                              "USING (trial_id) WHERE t.state = 'RUNNING' AND a.key = "
                              "'mlflow_run_id'").fetchone()[0]:
                    time.sleep(1.5)  # well into the training loop
                    return
        except sqlite3.Error:
            continue  # not created yet
    raise AssertionError(f"no trial started: {process.communicate()[1][-3000:]}")


def _interrupt(home: Path, process: subprocess.Popen, sig: signal.Signals
               ) -> tuple[str, float, list[int]]:
    """Signal a search inside a trial; its stderr, the seconds it took to end, its helpers."""
    _wait_for_running_trial(home, process)
    helpers = descendants(process.pid)
    started = time.monotonic()
    process.send_signal(sig)
    if sig == signal.SIGKILL:
        process.wait(timeout=60)
        for pid in helpers:  # the orphans a SIGKILL leaves (holding our pipes): not kept
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    _, err = process.communicate(timeout=60)
    return err, time.monotonic() - started, helpers


def _assert_retried(study: optuna.Study, runs: list, cut: optuna.trial.FrozenTrial) -> None:
    """The trial a signal cut failed as interrupted, ran again next, and its run was killed."""
    lost = {t.number: t for t in study.trials}[cut.number]
    assert lost.state == TrialState.FAIL
    assert lost.user_attrs["fail_reason"].startswith("interrupted")
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == lost.number]
    assert len(retry) == 1 and retry[0].params == lost.params
    assert retry[0].number == lost.number + 1  # run first, before anything new
    killed = [r for r in runs if r.data.tags.get("trial_number") == str(lost.number)]
    assert [r.info.status for r in killed] == ["KILLED"]
    assert killed[0].data.tags["fail_reason"].startswith("interrupted")


# SIGINT and SIGHUP take SIGTERM's path (tests/test_interrupts.py)
def test_a_signal_mid_trial_loses_only_that_trial_and_the_same_command_retries_it(
        glue_dir, tmp_path):
    # one home: a SIGTERM cuts the command's first trial, a SIGKILL cuts the same command's
    # retry of it, and the same command once more runs what each signal lost. Trials of a few
    # seconds, so that a signal lands inside one (on 500 rows a SIGKILL could fall between two)
    args = ("--n-trials", "2", "--max-train-samples", "1000", "--study-name", "cut")
    storage = f"sqlite:///{tmp_path}/optuna.db"
    first = _search(glue_dir, tmp_path, *args)
    err, took, helpers = _interrupt(tmp_path, first, signal.SIGTERM)

    assert first.returncode == 128 + signal.SIGTERM and took < 15, (first.returncode, took)
    assert [line for line in err.splitlines() if "error:" in line] == [
        "error: interrupted by SIGTERM: finished trials and runs are kept; run the same "
        "command to resume (an interrupted trial runs again first)"], err[-3000:]
    assert "Traceback" not in err
    assert helpers and not [p for p in helpers if alive(p)]  # Prefect's server stopped
    termed = optuna.load_study(study_name="cut", storage=storage).get_trials(
        states=[TrialState.FAIL])
    assert [t.user_attrs["fail_reason"] for t in termed] == ["interrupted by SIGTERM"]
    assert len(termed) == 1

    second = _search(glue_dir, tmp_path, *args)
    _interrupt(tmp_path, second, signal.SIGKILL)
    # no chance to clean up: the next run recovers the trial
    killed = optuna.load_study(study_name="cut", storage=storage).get_trials(
        states=[TrialState.RUNNING])
    assert len(killed) == 1

    third = _search(glue_dir, tmp_path, *args)
    out, err = third.communicate(timeout=600)

    assert third.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="cut", storage=storage)
    assert len([t for t in study.trials if t.state in FINISHED]) == 2  # the budget is kept
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("bitfit-cola").experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]
    for cut in (termed[0], killed[0]):
        _assert_retried(study, runs, cut)


def test_three_processes_on_one_new_home_share_a_study_without_repeating_draws(glue_dir,
                                                                               tmp_path):
    # all three race to create the home's databases and experiment; two share study "shared",
    # the third runs a study of its own
    runs = [_search(glue_dir, tmp_path, "--n-trials", str(n), "--max-train-samples", "200",
                    "--study-name", name) for name, n in (("shared", 4), ("shared", 4),
                                                          ("other", 1))]
    results = [r.communicate(timeout=600) for r in runs]

    assert [r.returncode for r in runs] == [0, 0, 0], \
        "\n-----\n".join(err[-6000:] for _, err in results)
    study = optuna.load_study(study_name="shared", storage=f"sqlite:///{tmp_path}/optuna.db")
    ran = [t for t in study.trials if t.state in FINISHED]
    assert len(ran) == 4, [(t.number, t.state.name, t.user_attrs) for t in study.trials]
    assert len({tuple(sorted(t.params.items())) for t in ran}) == 4
    assert len({t.user_attrs["owner"] for t in study.trials}) == 2  # both took part
    assert all("over the study's budget" in t.user_attrs.get("fail_reason", "")
               for t in study.trials if t.state == TrialState.FAIL)
    other = optuna.load_study(study_name="other", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert len([t for t in other.trials if t.state in FINISHED]) == 1
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    parents = client.search_runs([client.get_experiment_by_name("bitfit-cola").experiment_id],
                                 filter_string="tags.`bitfit.kind` = 'search'")
    assert sorted(r.data.tags["bitfit.study"] for r in parents) == ["other", "shared"]


def _psql(stack, sql: str) -> None:
    subprocess.run([str(stack.binaries / "psql"), "-h", "127.0.0.1", "-p", str(stack.pg_port),
                    "-U", "bitfit", "-d", "postgres", "-v", "ON_ERROR_STOP=1"], input=sql,
                   text=True, check=True, capture_output=True)


@pytest.fixture
def planted(stack):
    """A role of the shared stack's PostgreSQL that must give its password (scram), with a
    database of its own; the stack trusts its other roles on loopback."""
    secret, hba = "pl4nted-S3cret", stack.root / "pg" / "pg_hba.conf"
    trusted = hba.read_text()
    _psql(stack, f"CREATE ROLE planted LOGIN PASSWORD '{secret}';\n"
                 "CREATE DATABASE planted OWNER planted;\n")
    hba.write_text(f"host all planted 127.0.0.1/32 scram-sha-256\n{trusted}")
    _psql(stack, "SELECT pg_reload_conf();")
    yield secret
    hba.write_text(trusted)
    _psql(stack, "SELECT pg_reload_conf();")


def test_a_planted_password_lands_in_no_store_log_or_file(glue_dir, tmp_path, stack, planted):
    secret = planted
    prefect_home = tmp_path / "prefect"
    home = tmp_path / "home"
    home.mkdir()
    storage = stack.db_url("planted").replace("bitfit@", f"planted:{secret}@")
    tracking = stack.mlflow_uri.replace("http://", f"http://bitfit:{secret}@")
    process = _search(glue_dir, home, "--n-trials", "1", "--max-train-samples", "200",
                      "--seeds", "1", "--eval-processes", "1", "--storage", storage,
                      "--tracking-uri", tracking, "--study-name", "planted",
                      env=_env(PREFECT_HOME=str(prefect_home)))
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    dumps = [subprocess.run([str(stack.binaries / "pg_dump"), "-h", "127.0.0.1", "-p",
                             str(stack.pg_port), "-U", "bitfit", db], check=True,
                            capture_output=True).stdout for db in ("planted", "mlflow")]
    # the servers' logs and files: all but the cluster and the PostgreSQL programs (as root)
    server_files = [p for p in stack.root.rglob("*") if p.is_file() and
                    p.relative_to(stack.root).parts[0] not in ("pg", "postgresql")]
    stored = [(str(p), p.read_bytes()) for p in server_files]

    assert b"trial_params" in dumps[0] and b"latest_metrics" in dumps[1]  # the data is there
    files = [p for p in [*home.rglob("*"), *prefect_home.rglob("*")] if p.is_file()]
    assert any(p.name == "prefect.db" for p in files)
    places = [("stdout", out.encode()), ("stderr", err.encode()),
              ("optuna dump", dumps[0]), ("mlflow dump", dumps[1]), *stored,
              *[(str(p), p.read_bytes()) for p in files]]
    assert len(places) > 10
    leaks = [name for name, data in places if secret.encode() in data]
    assert leaks == []


def test_an_unanswering_database_or_tracking_server_fails_in_seconds(glue_dir, tmp_path):
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        for flag, value, what in (
                ("--storage", f"postgresql://u@127.0.0.1:{port}/db", "Optuna storage"),
                ("--tracking-uri", f"http://127.0.0.1:{port}", "MLflow tracking server")):
            started = time.monotonic()
            process = _search(glue_dir, tmp_path, flag, value)
            out, err = process.communicate(timeout=120)
            took = time.monotonic() - started

            # the 5 s connect timeout (libpq tries twice: with SSL, then without), on top of
            # the process's start; a store that does not answer would hang a run for minutes
            assert process.returncode == 2 and took < 25, (took, err[-2000:])
            assert f"error: cannot reach the {what}" in err and "Traceback" not in err
