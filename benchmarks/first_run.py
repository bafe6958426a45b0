"""First runs on a fresh machine: a command started N times, each on an empty PREFECT_HOME and an
empty run home, with every core kept busy by another process.

    python benchmarks/first_run.py [--runs 10] [--command prepare|main]

``prepare`` (the default) is ``flows/prepare.py --task rte``: the start of every flow (Prefect's
temporary API building its database, the stores, the model) with little work after it. ``main``
is the README's main command (``flows/search.py --task cola --quick``), about 6 minutes each on 2
free cores and longer under the load. Prints the exit code and wall time of every run and how
many succeeded; ``target`` is all of them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from _common import DATA_DIR, ROOT, Run, emit, log

COMMANDS = {
    "prepare": ["flows/prepare.py", "--task", "rte", "--max-train-samples", "200"],
    "main": ["flows/search.py", "--task", "cola", "--quick"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--command", choices=sorted(COMMANDS), default="prepare")
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 2,
                        help="busy-looping processes beside each run (default: one per core)")
    args = parser.parse_args()
    run = Run()
    results = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "PREFECT_HOME": f"{tmp}/prefect",
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
            env.pop("PREFECT_API_URL", None)
            command = [sys.executable, str(ROOT / COMMANDS[args.command][0]),
                       *COMMANDS[args.command][1:], "--data-dir", str(DATA_DIR),
                       "--home", f"{tmp}/runs"]
            hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                    for _ in range(args.hogs)]
            start = time.perf_counter()
            try:
                out = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp)
            finally:
                for hog in hogs:
                    hog.kill()
                    hog.wait()
            wall = round(time.perf_counter() - start, 1)
            last = (out.stderr.strip().splitlines() or [""])[-1]
            results.append({"exit": out.returncode, "wall_s": wall,
                            **({"last_stderr_line": last[:300]} if out.returncode else {})})
            log(f"run {i + 1} of {args.runs}: exit {out.returncode} in {wall} s"
                + (f": {last[:200]}" if out.returncode else ""))
    succeeded = sum(r["exit"] == 0 for r in results)
    emit({"benchmark": "first_run", "command": args.command, "hogs": args.hogs,
          "runs": results, "succeeded": succeeded, "of": args.runs,
          "target": f"{args.runs} of {args.runs}", "met": succeeded == args.runs, **run.info()})


if __name__ == "__main__":
    main()
