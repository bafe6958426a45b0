"""A cell of the reproduction (one method on one task and training size) and its file under the
run home, which lets an interrupted run resume where it stopped."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from bitfit.report import SeedRun


@dataclasses.dataclass
class Cell:
    """One method on one task (and training size): its learning rate and its seeds' runs."""

    task: str
    method: str
    size: int | None  # training rows (None: the main table's)
    learning_rate: float
    study: str
    runs: list[SeedRun]
    evaluation_run_id: str | None
    seconds: float
    metric: str  # the task's main metric
    lr_sum: float = math.nan  # the learning rate summed over a run's steps (train.lr_sum)

    def scores(self) -> list[float]:
        return [r.metrics[self.metric] for r in self.runs]

    def by_seed(self) -> dict[int, float]:
        return {r.seed: r.metrics[self.metric] for r in self.runs}


def _cell_file(folder: Path, kind: str, task: str, method: str, size: int | None) -> Path:
    return folder / "cells" / f"{kind}-{task}-{method}{f'-n{size}' if size else ''}.json"


def _load_cell(path: Path) -> Cell | None:
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())
    raw["runs"] = [SeedRun(**r) for r in raw["runs"]]
    return Cell(**raw)


def _save_cell(path: Path, cell: Cell) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(dataclasses.asdict(cell), indent=1))
    scratch.replace(path)  # a cell is whole or absent, even when interrupted while writing

