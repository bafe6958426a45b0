"""What a user waits for around the trials, timed from outside as a user times it: the help
texts, the seconds to the first trial lines on a fresh and on a warm home, and a whole 3-trial
search command against the same search written with ``Trainer.hyperparameter_search``.

    python benchmarks/cold_start.py [--runs 3] [--trials 3] [--rows 2000] [--epochs 2]

- ``help_s``: the median wall time of ``bitfit --help`` and ``python flows/search.py --help``
  over ``--runs`` runs.
- ``first_trial``: the README's quick search (``flows/search.py --task cola --quick``), started on
  an empty run home and an empty ``PREFECT_HOME`` (``fresh``: Prefect builds its database), then
  again on the same homes (``warm``: a new study, with the tokenised data, the stores and
  Prefect's database already there). Seconds from the start to the first line, to the first
  ``trial #N started`` line and to the first finished trial's line; then it is interrupted.
- ``whole_command``: the same BitFit search (``--trials`` trials of ``--epochs`` epochs on
  ``--rows`` CoLA rows, batch 32, learning rate log-uniform in [1e-4, 1e-2], TPE seed 0, dev
  scored after each epoch) as ``python flows/search.py --space FILE --no-baseline --seeds 0
  --select-on dev`` on the warm home, and as ``benchmarks/trainer_search.py``. Each is the
  whole command's wall time, start-up included; the speed-up is their ratio (per trial too, as
  both run the same number of trials), and each command's CPU seconds (its processes, the
  Prefect server and the side-by-side ones included): ``speedup_if_all_cores_busy`` is the
  Trainer's wall time over bitfit's CPU seconds per core: the speed-up with every core busy
  from start to end on the same CPU work. bitfit runs at its defaults (``auto`` precision: bf16
  where the CPU has AVX512-BF16; trials side by side on the cores), the Trainer at its own
  (fp32, one process).

Prints one JSON object; ``other_cpu_s`` near 0 says nothing else ran meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _common import DATA_DIR, ROOT, Run, emit, log

LOW, HIGH = 1e-4, 1e-2
QUIET = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}


def _seconds(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def help_seconds(runs: int, env: dict[str, str]) -> dict[str, float]:
    bitfit = str(Path(sys.executable).with_name("bitfit"))
    commands = {"bitfit --help": [bitfit, "--help"],
                "python flows/search.py --help": [sys.executable, "flows/search.py", "--help"]}
    return {name: round(statistics.median(_seconds(c, env) for _ in range(runs)), 3)
            for name, c in commands.items()}


def first_trial(home: Path, study: str, env: dict[str, str]) -> dict[str, float | None]:
    """Seconds to the quick search's first line, first trial start and first finished trial."""
    command = [sys.executable, "flows/search.py", "--task", "cola", "--data-dir", str(DATA_DIR),
               "--quick", "--home", str(home), "--study-name", study]
    marks: dict[str, float | None] = {"first_line_s": None, "first_trial_started_s": None,
                                      "first_trial_finished_s": None}
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            now = round(time.perf_counter() - start, 1)
            log(f"  {now:6.1f} s  {line.rstrip()[:120]}")
            marks["first_line_s"] = marks["first_line_s"] or now
            if " started (" in line and line.startswith("trial #"):
                marks["first_trial_started_s"] = marks["first_trial_started_s"] or now
            if line.startswith("trial ") and " of " in line:
                marks["first_trial_finished_s"] = now
                break
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return marks


def whole_command(home: Path, trials: int, rows: int, epochs: int,
                  env: dict[str, str]) -> dict[str, object]:
    space = home / "cold-start.yaml"
    space.write_text(yaml.safe_dump({
        "method": "bitfit", "n_trials": trials, "max_train_samples": rows,
        "objective": {"metric": "main", "direction": "maximize"},
        "sampler": {"name": "tpe", "seed": 0}, "pruner": {"name": "none"},
        "train": {"epochs": epochs, "batch_size": 32, "subset": "all"},
        "params": {"learning_rate": {"type": "float", "low": LOW, "high": HIGH, "log": True}}}))
    ours = [sys.executable, "flows/search.py", "--task", "cola", "--data-dir", str(DATA_DIR),
            "--space", str(space), "--no-baseline", "--seeds", "0", "--select-on", "dev",
            "--home", str(home), "--study-name", f"cold-start-{time.time_ns()}", "--json"]
    theirs = [sys.executable, "benchmarks/trainer_search.py", "--trials", str(trials),
              "--rows", str(rows), "--epochs", str(epochs),
              "--output-dir", str(home / "trainer")]
    results: dict[str, object] = {}
    for name, command in (("bitfit", ours), ("trainer", theirs)):
        log(f"whole command: {name}")
        cpu = _children_cpu()
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        cpu = _children_cpu() - cpu
        if done.returncode != 0:
            raise SystemExit(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        out = json.loads(done.stdout.strip().splitlines()[-1])
        best = out["best_value"] if name == "bitfit" else out["best_dev_mcc"]
        results[name] = {"wall_s": round(wall, 1), "seconds_per_trial": round(wall / trials, 1),
                         "cpu_s": round(cpu, 1), "best_dev_mcc": round(best, 4)}
    results["speedup"] = round(results["trainer"]["wall_s"] / results["bitfit"]["wall_s"], 2)
    # the command's CPU seconds over the cores: its wall time if every core were busy from its
    # first instant to its last
    cores = os.cpu_count() or 1
    results["bitfit"]["all_cores_busy_s"] = round(results["bitfit"]["cpu_s"] / cores, 1)
    results["speedup_if_all_cores_busy"] = round(
        results["trainer"]["wall_s"] / results["bitfit"]["all_cores_busy_s"], 2)
    return results


def _children_cpu() -> float:
    """CPU seconds of the ended children (a command's own children count once it reaps them)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each help text")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=(), choices=("first_trial", "whole"),
                        help="parts not to run")
    args = parser.parse_args()
    run = Run()
    result: dict[str, object] = {"benchmark": "cold_start"}
    with tempfile.TemporaryDirectory(prefix="bitfit-cold-") as tmp:
        home, prefect_home = Path(tmp) / "runs", Path(tmp) / "prefect"
        env = {**os.environ, **QUIET, "PREFECT_HOME": str(prefect_home)}
        result["help_s"] = help_seconds(args.runs, env)
        if "first_trial" not in args.skip:
            result["first_trial"] = {}
            for state in ("fresh", "warm"):
                log(f"first trial, {state} home")
                result["first_trial"][state] = first_trial(home, f"cold-{state}", env)
        if "whole" not in args.skip:
            result["whole_command"] = whole_command(home, args.trials, args.rows, args.epochs,
                                                    env)
    result["target"] = {"help_s": {"bitfit --help": "<= 1.0",
                                   "python flows/search.py --help": "<= 1.5"},
                        "first_trial": "warm: first trial line <= 15 s",
                        "whole_command": {"speedup": ">= 3.0"}}
    emit({**result, **run.info()})


if __name__ == "__main__":
    main()
