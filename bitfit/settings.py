"""Defaults in one place: the run home, the stores' default URLs, the environment variables bitfit
reads, and the quiet settings that keep the libraries' telemetry, retries and chatter out of a run.

Every entry point (``bitfit``, ``flows/*.py``, the deployments) resolves the run home through
``home_dir``, so ``$BITFIT_HOME`` moves everything a run writes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

HOME_ENV = "BITFIT_HOME"
STORAGE_ENV = "BITFIT_OPTUNA_STORAGE"
TRACKING_ENV = "MLFLOW_TRACKING_URI"
GLUE_DIR_ENV = "BITFIT_GLUE_DIR"
GRACE_ENV = "BITFIT_HEARTBEAT_GRACE_S"
DEFAULT_HOME = "runs"
# how a classifier head reads the encoder (bitfit.models; a choice of the command line)
POOLINGS: tuple[str, ...] = ("auto", "pooler", "cls", "mean")

# MLflow retries an unreachable server for minutes by default; a run should fail in seconds.
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
QUIET_ENV = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
             "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # stdout is ours
             "MLFLOW_LOGGING_LEVEL": "WARNING", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
             **MLFLOW_HTTP_DEFAULTS,
             # Prefect's temporary API waits 20 s for its server by default; on a fresh
             # PREFECT_HOME the server first builds its database, which took longer on a busy
             # 2-core machine in 3 of about 9 first runs (services.start_temporary_prefect)
             "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}


def home_dir(home: str | os.PathLike[str] | None = None) -> Path:
    """Where runs write: ``home`` when given, else ``$BITFIT_HOME``, else ``./runs``."""
    return Path(home or os.environ.get(HOME_ENV) or DEFAULT_HOME)


def default_storage(home: str | os.PathLike[str]) -> str:
    """``$BITFIT_OPTUNA_STORAGE``, else a SQLite file in the run home."""
    return os.environ.get(STORAGE_ENV) or f"sqlite:///{Path(home).resolve()}/optuna.db"


def default_tracking_uri(home: str | os.PathLike[str]) -> str:
    """``$MLFLOW_TRACKING_URI``, else a SQLite store in the run home."""
    return os.environ.get(TRACKING_ENV) or f"sqlite:///{Path(home).resolve()}/mlflow.db"


def quiet_environment() -> None:
    """Defaults that keep the libraries' telemetry, retries and chatter out of a run (set
    before Prefect reads its settings)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def quiet_logging() -> None:
    """Our lines only: the libraries' own logs at WARNING, and Prefect's record of a failed
    flow run (a traceback) left to its API, since a command prints the one-sentence reason."""
    for name in ("prefect", "mlflow", "alembic", "optuna", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("prefect.flow_runs", "prefect.task_runs", "prefect.engine"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
