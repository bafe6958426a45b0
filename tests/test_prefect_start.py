"""A first run on a fresh machine: Prefect's temporary API starts on an empty PREFECT_HOME (its
database built first) while both cores are busy, and where it cannot start the command says so
in one sentence."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # servers and subprocesses end to end

HOG = "while True: pass"


def _prepare(tmp_path, glue_dir, **env_extra) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_HOME": str(tmp_path / "prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **env_extra}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "flows" / "prepare.py"), "--task", "rte", "--data-dir",
         str(glue_dir), "--max-train-samples", "50", "--home", str(tmp_path / "runs")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=400)


def test_a_first_run_on_an_empty_prefect_home_starts_while_the_cpu_is_busy(glue_dir, tmp_path):
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(os.cpu_count() or 2)]
    try:
        out = _prepare(tmp_path, glue_dir)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()

    assert out.returncode == 0, out.stderr[-3000:]
    assert '"train":' in out.stdout and "Traceback" not in out.stderr
    assert (tmp_path / "prefect").is_dir()  # it built its own database there


def test_a_temporary_api_that_never_answers_gets_one_sentence(glue_dir, tmp_path):
    out = _prepare(tmp_path, glue_dir, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="1")

    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    assert errors == [errors[-1]] and errors[-1].startswith(
        "error: Prefect's temporary API did not answer within 1 s, 2 times"), out.stderr
    assert "PREFECT_API_URL" in errors[-1]
