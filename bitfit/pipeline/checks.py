"""Everything about a request that can be checked before any model or data is loaded: counts,
the task, the spaces, the device, the home and the stores."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from bitfit.checks import at_least, device_name, positive, writable_folder
from bitfit.pipeline.config import Config, resolve_task
from bitfit.services import mask_url


def check_stores(storage: str | None, tracking_uri: str | None, home: str) -> tuple[str, str]:
    """The storage URL and tracking URI to use (the run home's SQLite files by default), without
    secrets; each store must answer within seconds."""
    from bitfit.services import (check_storage, check_tracking, move_secrets,
                                 secrets_from_environment)
    from bitfit.study import default_storage
    from bitfit.tracking import default_tracking_uri

    writable_folder(home, "--home (or $BITFIT_HOME)")
    try:
        Path(home).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot use --home {str(home)!r} ({err.strerror}): choose a folder "
                      "you can write to") from None
    secrets_from_environment()
    storage, tracking_uri = move_secrets(storage or default_storage(home),
                                         tracking_uri or default_tracking_uri(home))
    assert storage is not None and tracking_uri is not None
    check_storage(storage)
    check_tracking(tracking_uri)
    return storage, tracking_uri


def named_experiment(config: Config, say: Callable[[str], None]) -> Config:
    """The config with its MLflow experiment named: ``--experiment``, else the task's
    (``Tracker.task_experiment``: ``bitfit-<task>``, or the bare ``<task>`` of a store whose runs
    are there from before, which ``say`` tells once). ``config`` has its stores resolved."""
    if config.experiment or config.tracking_uri is None:
        return config
    from bitfit.tracking import Tracker, experiment_name

    name = Tracker(config.tracking_uri, home=str(config.home)).task_experiment(config.task)
    if name != experiment_name(config.task):
        say(f"MLflow: this store's bitfit runs of {config.task} are in its experiment {name!r} "
            f"from before experiments were named {experiment_name(config.task)}, so new runs go "
            "there too (--experiment NAME chooses another)")
    return dataclasses.replace(config, experiment=name)


def check_shared_stores(workers: int, storage: str, tracking_uri: str) -> None:
    """Several workers need stores that all of them reach."""
    positive(workers=workers)
    if workers == 1:
        return
    if storage.startswith("sqlite:"):
        raise ValueError(
            f"--workers {workers} needs an Optuna storage that every worker can reach and write "
            f"to at once, and {mask_url(storage)} is a SQLite file: use PostgreSQL "
            "(--storage postgresql://USER@HOST/DB or $BITFIT_OPTUNA_STORAGE; "
            "python infra/stack.py starts one), or run with --workers 1")
    if not tracking_uri.startswith(("http://", "https://", "databricks")):
        raise ValueError(
            f"--workers {workers} needs an MLflow tracking server that every worker logs to, "
            f"and {mask_url(tracking_uri)} is local to this machine: set --tracking-uri or "
            "$MLFLOW_TRACKING_URI to http://HOST:PORT (python infra/stack.py starts one)")


def check_length(model: str | None, max_length: int | None, flag: str = "--max-length") -> None:
    """At least 8 tokens, and no more than the model takes (its config.json says; a longer one
    would fail inside the model on the first long text, after work is done)."""
    from bitfit.models import max_positions

    if max_length is None:
        return
    at_least(8, **{flag.lstrip("-").replace("-", "_"): max_length})
    limit = max_positions(model)
    if limit is not None and max_length > limit:
        raise ValueError(f"{flag} {max_length} is longer than the {limit} tokens that model "
                         f"{model or 'all-MiniLM-L6-v2'!r} takes: use {limit} or less")


def check_device(device: str) -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``, and a GPU only where torch has one."""
    import torch

    device_name(device)
    if device.startswith("cuda"):
        count = torch.cuda.device_count()
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= count:
            raise ValueError(f"--device {device} asks for a GPU, and torch sees {count} here: "
                             "use --device auto or cpu, or a GPU that exists")


def worker_device(device: str, index: int, gpus: int | None = None) -> str:
    """The device of worker ``index`` of a study, chosen on the machine the worker runs on: GPU
    ``index mod gpus`` when the device is ``auto`` or ``cuda`` (``gpus``: the GPUs torch sees
    here, counted when not given), the CPU for ``auto`` where there is none; a named one
    (``cpu``, ``cuda:N``) is kept."""
    if device not in ("auto", "cuda"):
        return device
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count()
    if gpus > 0:
        return f"cuda:{index % gpus}"
    return "cpu" if device == "auto" else device  # "cuda" without one: check_device says so


def check_search(config: Config) -> Config:
    """Everything about a search that can be checked before any model or data is loaded:
    counts, the task, the spaces and their objective, the device, the home, and the stores
    (each must answer within seconds). Returns the config resolved (``Config.resolved``) with
    the storage URL and tracking URI to use, without secrets."""
    from bitfit.space import check_metric, load_space

    c = config.resolved()  # its values alone were checked when it was made (Config)
    check_length(c.model, c.max_length)
    seeds = c.seeds
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 0:
        raise ValueError(f"--seeds must be a whole number, 0 (stop after the studies) or more, "
                         f"got {seeds!r}")
    check_device(c.device)
    glue_task = resolve_task(c.task, c.own)
    parsed = load_space(c.space)
    check_metric(parsed, glue_task)
    if seeds > 0 and parsed.method != "bitfit":
        raise ValueError(f"--space {c.space} searches method {parsed.method!r}, and the final "
                         "evaluation compares the first study as BitFit: give a BitFit space, "
                         "or --seeds 0 to run the study alone")
    if c.baseline and not c.baseline_study:
        full = load_space(c.baseline_space)
        check_metric(full, glue_task)
        if full.method != "full":
            raise ValueError(f"--baseline-space {c.baseline_space} searches method "
                             f"{full.method!r}, not full fine-tuning: give a space with "
                             "'method: full' (the shipped full_ft), or --no-baseline")
    assert c.home is not None
    storage, tracking_uri = check_stores(c.storage, c.tracking_uri, c.home)
    check_shared_stores(c.workers, storage, tracking_uri)
    if c.baseline and c.baseline_study and seeds > 0:
        from bitfit.compare import best_config

        best_config(storage, c.baseline_study, method="full", task=glue_task.name)
    return dataclasses.replace(c, storage=storage, tracking_uri=tracking_uri)


def check_evaluation(config: Config) -> Config:
    """The checks of a final evaluation that need no model or data; the config resolved, with
    the storage URL and tracking URI to use, without secrets."""
    c = config.resolved()
    positive(seeds=c.seeds)  # its other values were checked when it was made (Config)
    check_length(c.model, c.max_length)
    check_device(c.device)
    resolve_task(c.task, c.own)
    assert c.home is not None
    storage, tracking_uri = check_stores(c.storage, c.tracking_uri, c.home)
    return dataclasses.replace(c, storage=storage, tracking_uri=tracking_uri)
