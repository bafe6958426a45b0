"""A command answers ``--help`` and a mistake in its flags before the heavy libraries load, and
the flows' start overlaps what it can: the model loads while Prefect's API starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

HEAVY = ("torch", "transformers", "mlflow", "prefect", "optuna", "sklearn", "pandas")
COMMANDS = [["-m", "bitfit", "--help"], ["-m", "bitfit", "train", "--help"],
            ["-m", "bitfit", "search", "--help"], ["-m", "bitfit", "reproduce", "--help"],
            ["-m", "bitfit", "export", "--help"],
            ["-m", "bitfit", "search", "--n-trials", "many"],
            *[[f"flows/{f}.py", "--help"] for f in ("search", "evaluate", "prepare", "reproduce")],
            ["flows/search.py", "--bogus"], ["-m", "bitfit", "--version"],
            ["flows/search.py", "--version"]]


def _imported(argv: list[str]) -> tuple[int, set[str]]:
    """The exit code and the top-level packages a command imported (``-X importtime``)."""
    done = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    names = {line.rsplit("|", 1)[1].strip().split(".")[0]
             for line in done.stderr.splitlines() if line.startswith("import time:")}
    return done.returncode, names


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_help_and_a_mistake_are_answered_without_the_heavy_libraries(argv):
    code, names = _imported(argv)

    assert code == (0 if {"--help", "--version"} & set(argv) else 2)
    assert "bitfit" in names  # what was imported was read: the check below is not empty
    assert not names & set(HEAVY), f"{' '.join(argv)} imported {sorted(names & set(HEAVY))}"


@pytest.mark.parametrize("argv", [["-m", "bitfit", "--version"],
                                  ["flows/search.py", "--version"]], ids=" ".join)
def test_version_prints_the_installed_distributions_version(argv):
    from importlib.metadata import version

    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)

    assert (done.returncode, done.stdout) == (0, f"bitfit {version('bitfit')}\n"), done.stderr


def test_a_preloaded_model_is_taken_once_and_a_bad_one_fails_in_its_phase(tmp_path):
    from bitfit import pipeline
    from bitfit.models import ModelLoadError

    pipeline.preload(None)
    first = pipeline.load_model(None)
    second = pipeline.load_model(None)  # nothing preloaded any more: a load of its own

    assert first is not second and first.weights_hash == second.weights_hash
    pipeline.preload(str(tmp_path / "no-such-model"))  # says nothing: its phase will
    with pytest.raises(ModelLoadError):
        pipeline.load_model(str(tmp_path / "no-such-model"))


def test_prefect_starts_while_the_checks_run_and_the_model_is_left_for_the_flow(monkeypatch):
    import threading

    from bitfit import orchestrate, pipeline, services
    from bitfit.pipeline import phases

    seen: list[str] = []
    monkeypatch.setattr(services, "check_prefect_api",
                        lambda: seen.append(threading.current_thread().name))
    with orchestrate.prefect_started(None, "auto"):
        pass

    assert seen == ["bitfit-prefect-start"]  # started beside the block, not after it
    left = phases._PRELOADED[(None, "auto")]  # the model the flow's first phase takes
    assert pipeline.load_model(None) is left and (None, "auto") not in phases._PRELOADED


def test_a_mistake_in_the_checks_wins_and_an_unanswering_server_is_said_after_them():
    from bitfit import orchestrate
    from bitfit.services import ServiceError

    from prefect.settings import PREFECT_API_URL, temporary_settings

    # nothing listens there; the setting holds in the thread that asks (the caller's context)
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        with (pytest.raises(ValueError, match="the checks' sentence"),
              orchestrate.prefect_started("never-loaded")):
            raise ValueError("the checks' sentence")
        with (pytest.raises(ServiceError, match="cannot reach the Prefect server"),
              orchestrate.prefect_started(None)):
            pass


def test_a_finished_command_ends_after_its_threads_and_exit_handlers():
    """``exit_now`` skips only the modules' teardown: the threads finish, the exit handlers
    run, the output is flushed, and the code is the command's."""
    script = (
        "import atexit, threading, time\n"
        "from bitfit.entry import exit_now\n"
        "atexit.register(lambda: print('handler ran', flush=True))\n"
        "threading.Thread(target=lambda: (time.sleep(0.5), print('thread done'))).start()\n"
        "print('result', end='')\n"
        "exit_now(3)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)

    assert done.returncode == 3, done.stderr
    assert done.stdout.split() == ["resultthread", "done", "handler", "ran"], done.stdout
