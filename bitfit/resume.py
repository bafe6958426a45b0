"""Resuming a final evaluation: which folder the same evaluation goes on in, and the record each
finished seed leaves there.

An evaluation's folder holds ``evaluation.json``: what defines the evaluation (``identity``: the
configs it compares, the seeds, the base model and digests of the data), the key of its MLflow
parent run, the process running it and whether it finished. Each (method, seed) writes
``seeds/<method>-seed<N>.json`` as it finishes, whole or not at all: its results, its
evaluations after each epoch and its config. The same evaluation started again after an
interruption (a signal, a crash, a killed process) finds its unfinished folder and trains only
the seeds that have no record; an evaluation with other settings never takes that folder.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bitfit.artifacts import TENSORS, unique_folder
from bitfit.data import TaskData
from bitfit.interrupts import owner, owner_alive
from bitfit.models import BaseModel
from bitfit.report import SeedRun
from bitfit.results import Evaluation
from bitfit.trainconfig import TrainConfig

RECORD = "evaluation.json"
SEEDS = "seeds"
_PER_SEED = ("seed", "select_best")  # set per job by the evaluation, not by its configs


@dataclass(frozen=True)
class Opened:
    """The folder an evaluation writes to, the key of its MLflow parent run, and whether an
    earlier call of the same evaluation started it."""

    folder: Path
    run_key: str
    resumed: bool


@dataclass(frozen=True)
class SeedRecord:
    """What a finished (method, seed) wrote: its results, its evaluations and its config."""

    run: SeedRun
    evaluations: list[Evaluation]
    config: dict[str, Any]

    def save(self, folder: Path) -> None:
        """Write the record atomically: an interruption leaves it whole or absent."""
        path = seed_file(folder, self.run.method, self.run.seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write(path, dataclasses.asdict(self))


def seed_file(folder: Path, label: str, seed: int) -> Path:
    return folder / SEEDS / f"{label}-seed{seed}.json"


def identity(base: BaseModel, data: TaskData, configs: dict[str, TrainConfig],
             seeds: int) -> dict[str, Any]:
    """What makes two calls the same evaluation: the seeds, the base model, the data (digests
    of the tokenised splits) and every field of each method's config."""
    flat = {"seeds": seeds, "task": data.task.name, "model": base.model_id,
            "weights": base.weights_hash, "pooling": base.pooling,
            "data.train": data.train.digest(),
            **{f"data.{split}": enc.digest() for split, enc in data.evals.items()},
            **{f"{label}.{key}": value for label, config in configs.items()
               for key, value in dataclasses.asdict(config).items() if key not in _PER_SEED}}
    return _as_json(flat)


def open_folder(parent: Path, name: str, wanted: dict[str, Any],
                log: Callable[[str], None]) -> Opened:
    """The unfinished folder of this evaluation (the newest), taken over; else a new one,
    with a line saying why when an unfinished folder of that name could not be taken."""
    passed = ""
    for folder in reversed(_folders(parent, name)):
        record = _read(folder / RECORD)
        if record is None or record.get("finished") or record.get("name") != name:
            continue
        running = record.get("owner", "")
        if running != owner() and owner_alive(running) is not False:
            passed = passed or (f"{folder} is being run by another process ({running})")
        elif record.get("identity") != wanted:
            passed = passed or (f"{folder} was started with other settings ("
                                f"{_differences(record.get('identity') or {}, wanted)})")
        else:
            _write(folder / RECORD, {**record, "owner": owner()})
            return Opened(folder, str(record.get("run_key", "")), resumed=True)
    folder = unique_folder(parent, name)
    if passed:
        log(f"evaluation {name}: {passed}, so it is not resumed: starting {folder}")
    key = uuid.uuid4().hex
    _write(folder / RECORD, {"name": name, "identity": wanted, "run_key": key,
                             "owner": owner(), "finished": False})
    return Opened(folder, key, resumed=False)


def finished_seeds(folder: Path, jobs: list[tuple[str, TrainConfig]]
                   ) -> dict[tuple[str, int], SeedRecord]:
    """The jobs that an earlier call finished in ``folder``, by (method, seed): those whose
    record is whole, was written with the job's config, and whose artifact is still there."""
    found = {}
    for label, config in jobs:
        record = _read_seed(seed_file(folder, label, config.seed), folder)
        if record is not None and record.config == _as_json(dataclasses.asdict(config)):
            found[(label, config.seed)] = record
    return found


def finish(folder: Path) -> None:
    """Mark the evaluation finished: the same call again starts a new folder."""
    record = _read(folder / RECORD)
    if record is not None:
        _write(folder / RECORD, {**record, "finished": True})


def _read_seed(path: Path, folder: Path) -> SeedRecord | None:
    raw = _read(path)
    if raw is None:
        return None
    try:
        run = SeedRun(**raw["run"])
        evaluations = [Evaluation(**e) for e in raw["evaluations"]]
    except (KeyError, TypeError):  # written by another version of bitfit
        return None
    if run.artifact:  # where it is now: the home may have moved
        artifact = folder / Path(run.artifact).name
        if not (artifact / TENSORS).is_file():
            return None
        run = dataclasses.replace(run, artifact=str(artifact))
    return SeedRecord(run, evaluations, raw.get("config") or {})


def _folders(parent: Path, name: str) -> list[Path]:
    """``parent/name`` and ``parent/name-N`` (``unique_folder``'s), oldest first."""
    pattern = re.compile(re.escape(name) + r"(?:-(\d+))?")
    numbered = []
    for path in parent.iterdir() if parent.is_dir() else []:
        match = pattern.fullmatch(path.name)
        if match and path.is_dir():
            numbered.append((int(match.group(1) or 1), path))
    return [path for _, path in sorted(numbered)]


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    changed = [f"{key} {old.get(key)!r} -> {new.get(key)!r}"
               for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
    return "; ".join(changed[:3]) + (f"; {len(changed) - 3} more" if len(changed) > 3 else "")


def _as_json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples as lists), to compare with what was read."""
    return json.loads(json.dumps(value, default=str))


def _read(path: Path) -> dict[str, Any] | None:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def _write(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` whole or not at all (a new file renamed over the old)."""
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(record, indent=1))
    scratch.replace(path)
