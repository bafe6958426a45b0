"""The paper's claims checked on the model a user has: ``bitfit reproduce``.

Ben-Zaken, Ravfogel and Goldberg (ACL 2022) claim that (1) with small-to-medium training data
BitFit is competitive with full fine-tuning, (2) with larger data it is competitive with other
sparse fine-tuning methods, (3) a small subset of the biases (query and first MLP layer, ``qm2``)
keeps most of the gain, and (4) fine-tuning mostly exposes what the pre-trained model knows. This
module measures each of them:

- **main table**: tasks x methods (``full``, ``bitfit``, ``bitfit_qm2``, ``rand``, ``frozen``,
  ``lora``) x seeds. Each method's learning rate comes from a small grid study on a split carved
  from train (``bitfit.study``), then each seed trains on the training split and is scored on dev
  (``bitfit.compare``, no selection on dev);
- **data-size curve**: one task at log-spaced training sizes, BitFit, full fine-tuning and LoRA;
- **which biases move**: the change of every bias term per layer, from the BitFit artifacts;
- **claims**: each claim per task with its test (Welch's, one-sided) and a verdict.

Every run is in MLflow under one parent run, which holds the report (Markdown and plots). A cell
(one task and method, or one size and method) is written to the run home when it finishes, so an
interrupted run resumes where it stopped, and studies resume in their storage.

    from bitfit import reproduce
    summary = reproduce.run(reproduce.ReproduceConfig(budget="small"))
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bitfit.data import TaskData
from bitfit.models import BaseModel
from bitfit.pipeline import (STDERR, OwnData, Report, _direct, check_device, check_stores,
                             load_model)
from bitfit.report import SeedRun, pareto_front, summarise
from bitfit.services import mask_url
from bitfit.tasks import Task
from bitfit.train import TrainConfig
from bitfit.verdicts import (MARGINS, Verdict, combine, competitive, share_of_gain,
                             superiority)

# a method's label -> what it trains (TrainConfig fields)
METHODS: dict[str, dict[str, str]] = {
    "full": {"method": "full"},
    "bitfit": {"method": "bitfit", "subset": "all"},
    "bitfit_qm2": {"method": "bitfit", "subset": "qm2"},
    "rand": {"method": "rand", "subset": "all"},  # as many random weights as all biases
    "frozen": {"method": "frozen"},
    "lora": {"method": "lora"},
}
CURVE_METHODS = ("bitfit", "full", "lora")
TASKS = ("sst2", "stsb", "mrpc", "rte", "cola")  # the paper budget's
ALPHA = 0.05  # the one-sided level of every test
MOST = 0.5  # "most of the gain": at least half of it
EXPERIMENT = "bitfit-reproduce"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How one method trains in a budget: the learning rates its study tries (in order; the
    first ``grid_points``), the batch size, and the length in optimiser steps (``max_steps``)
    or epochs, with its schedule."""

    grid: tuple[float, ...]
    batch_size: int
    max_steps: int | None = None
    epochs: int = 3
    schedule: str = "linear"
    warmup_ratio: float = 0.1

    def fixed(self) -> dict[str, Any]:
        """The ``TrainConfig`` fields it sets."""
        return {"batch_size": self.batch_size, "max_steps": self.max_steps,
                "epochs": self.epochs, "schedule": self.schedule,
                "warmup_ratio": self.warmup_ratio}


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much a reproduction trains, and on which tasks by default."""

    name: str
    tasks: tuple[str, ...]
    max_train_samples: int | None  # training rows per task and seed (None: all)
    seeds: int
    grid_points: int
    curve_sizes: tuple[int, ...] | None  # None: log-spaced from 100 to the whole split
    curve_seeds: int
    max_length: int
    recipes: dict[str, Recipe]
    about: str


# small: measured on the bundled MiniLM with 500 training rows per task, 500 held out, batch 8
# (GPU sweeps, one seed each): BitFit reached its level on SST-2 (dev accuracy 0.78-0.80) and
# STS-B (Pearson 0.80-0.81) by 300-400 steps at lr 1e-3 and 3e-3 (at 1e-2 STS-B diverged), full
# fine-tuning by 130-250 steps at 3e-5 and 1e-4; the 48 steps of the budget before (500 rows,
# batch 32, 3 epochs) left BitFit at Pearson 0.05 on STS-B. MRPC (every method at the majority
# class's F1) and RTE (every method within noise of chance) cannot test a claim at 500 rows and
# cost 60% of the compute (their pairs are 3-6 times as long), so small leaves them to --tasks.
_SMALL_BIAS = Recipe((1e-3, 3e-3), batch_size=8, max_steps=375)
_PAPER_BIAS = Recipe((1e-4, 4e-4, 7e-4, 1e-3), batch_size=8, epochs=16, schedule="constant",
                     warmup_ratio=0.0)
BUDGETS: dict[str, Budget] = {
    "small": Budget(
        "small", tasks=("sst2", "stsb", "cola"), max_train_samples=500, seeds=3,
        grid_points=2, curve_sizes=(100, 300, 1000), curve_seeds=2, max_length=128,
        recipes={"bitfit": _SMALL_BIAS, "bitfit_qm2": _SMALL_BIAS, "rand": _SMALL_BIAS,
                 "frozen": dataclasses.replace(_SMALL_BIAS, grid=(3e-3, 1e-2)),
                 "lora": dataclasses.replace(_SMALL_BIAS, grid=(5e-4, 2e-3)),
                 "full": Recipe((3e-5, 1e-4), batch_size=8, max_steps=250)},
        about="meant to finish within an hour on a 2-core CPU with the bundled MiniLM: SST-2, "
              "STS-B and CoLA; 500 training examples per task and seed (each seed its own "
              "sample, every method with that seed on the same rows) and 500 more held out to "
              "pick each method's rate from 2; batch 8; 375 optimiser steps for BitFit, its "
              "subsets, the baselines and LoRA (6 epochs: where BitFit reached its level on "
              "SST-2 and STS-B in a sweep), 250 for full fine-tuning (4 epochs); 3 seeds; the "
              "size curve on SST-2 at 100, 300 and 1,000 examples with 2 seeds at the same "
              "step counts"),
    "paper": Budget(
        "paper", tasks=TASKS, max_train_samples=None, seeds=5, grid_points=4, curve_sizes=None,
        curve_seeds=3, max_length=128,
        recipes={"bitfit": _PAPER_BIAS, "bitfit_qm2": _PAPER_BIAS, "rand": _PAPER_BIAS,
                 "frozen": _PAPER_BIAS,
                 "lora": Recipe((1e-4, 2e-4, 4e-4, 5e-4), batch_size=16, epochs=20,
                                warmup_ratio=0.06),
                 "full": Recipe((1e-5, 2e-5, 3e-5, 5e-5), batch_size=32, epochs=3)},
        about="a GPU and a masked-LM BERT: whole training splits (less the held-out rows), the "
              "paper's recipes: BitFit, its subsets and the baselines at batch 8 for 16 epochs "
              "at a constant rate over the paper's grid, full fine-tuning 3 epochs at batch 32 "
              "over 1e-5..5e-5, LoRA 20 epochs at batch 16 over the LoRA paper's GLUE rates; 5 "
              "seeds; the size curve from 100 examples to the whole split with 3 seeds"),
}


@dataclasses.dataclass(frozen=True)
class ReproduceConfig:
    """Everything ``run`` needs; None takes the budget's value."""

    tasks: tuple[str, ...] | None = None  # GLUE tasks, and at most one custom task
    methods: tuple[str, ...] = tuple(METHODS)
    budget: str = "small"
    seeds: int | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None  # dev rows scored (None: all; for quick looks only)
    epochs: int | None = None  # every method trains this many epochs (not the recipe's length)
    max_steps: int | None = None  # every method trains this many steps
    grid_points: int | None = None
    curve_task: str | None = "sst2"  # None: no size curve
    curve_sizes: tuple[int, ...] | None = None
    curve_seeds: int | None = None
    model: str | None = None
    pooling: str = "auto"
    data_dir: str | None = None
    # the custom task among ``tasks`` (the one that is not a GLUE task), read from these files
    train_file: str | None = None
    dev_file: str | None = None
    text_columns: str = "sentence"
    label_column: str = "label"
    regression: bool = False
    columns: str | None = None
    device: str = "auto"
    processes: int = 1  # runs trained at once, each in a process of its own (see run)
    name: str | None = None  # default: from the model, budget and settings
    experiment: str = EXPERIMENT
    storage: str | None = None
    tracking_uri: str | None = None
    home: str | None = None

    @classmethod
    def of(cls, parameters: dict[str, Any]) -> ReproduceConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in parameters.items() if k in names})

    @property
    def own(self) -> OwnData:
        """The custom task's files and columns (``given`` is False without one)."""
        return OwnData.of(self)

    @property
    def task_names(self) -> tuple[str, ...]:
        """The tasks of the main table: ``tasks``, else the budget's."""
        return tuple(self.tasks) if self.tasks else BUDGETS[self.budget].tasks

    @property
    def customs(self) -> list[str]:
        """The names among the tasks and ``curve_task`` that are not GLUE tasks (one at most
        is valid: ``check``)."""
        from bitfit.tasks import is_glue_task

        named = (*self.task_names, *([self.curve_task] if self.curve_task else []))
        return sorted({t for t in named if not is_glue_task(t)})

    @property
    def custom(self) -> str | None:
        """The name of the custom task, if any."""
        return self.customs[0] if self.customs else None

    def task(self, name: str) -> Task:
        """A task of this reproduction: the custom one from its files, else GLUE's."""
        from bitfit.pipeline import resolve_task
        from bitfit.tasks import load_task

        return resolve_task(name, self.own) if name == self.custom else load_task(name)

    def files(self, name: str) -> dict[str, str | None]:
        """``prepare``'s and ``load_splits``'s file arguments for a task."""
        if name != self.custom:
            return {}
        return {"train_file": self.train_file, "dev_file": self.dev_file}

    def settings(self) -> dict[str, Any]:
        """The budget's values with this config's overrides."""
        b = BUDGETS[self.budget]
        return {"max_train_samples": self.max_train_samples or b.max_train_samples,
                "seeds": self.seeds or b.seeds, "epochs": self.epochs,
                "max_steps": self.max_steps,
                "grid_points": self.grid_points or b.grid_points,
                "curve_sizes": tuple(self.curve_sizes or ()) or b.curve_sizes,
                "curve_seeds": self.curve_seeds or b.curve_seeds, "max_length": b.max_length,
                "max_eval_samples": self.max_eval_samples}

    def recipe(self, label: str) -> Recipe:
        """How ``label`` trains: the budget's recipe, its length replaced by ``epochs`` or
        ``max_steps`` when given."""
        recipe = BUDGETS[self.budget].recipes[label]
        if self.max_steps:
            return dataclasses.replace(recipe, max_steps=self.max_steps)
        if self.epochs:
            return dataclasses.replace(recipe, max_steps=None, epochs=self.epochs)
        return recipe


def check(config: ReproduceConfig) -> ReproduceConfig:
    """Everything that can be checked before the model loads; the config with its stores."""
    from bitfit.compare import check_not_starting
    from bitfit.entry import at_least, positive
    from bitfit.settings import home_dir
    check_not_starting()
    if config.budget not in BUDGETS:
        raise ValueError(f"--budget must be one of {', '.join(BUDGETS)}, got {config.budget!r}")
    if config.tasks is not None and not tuple(config.tasks):
        raise ValueError("--tasks names no task: give at least one, e.g. --tasks sst2,rte")
    tasks = config.task_names
    custom = config.customs
    if len(custom) > 1:
        raise ValueError(f"--tasks names {len(custom)} tasks that are not GLUE tasks "
                         f"({', '.join(custom)}): one call reads one custom task's files; "
                         "check the names, or run the others in calls of their own")
    if config.own.given and not custom:
        raise ValueError(f"--train-file {config.train_file} is given but --tasks names no "
                         "custom task: add a name for it, e.g. --tasks sst2,mydata")
    for task in (*tasks, *([config.curve_task] if config.curve_task else [])):
        config.task(task)  # a GLUE name, or the custom task whose files and columns exist
    methods = tuple(config.methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"--methods has {unknown[0] if unknown else 'nothing'!r}: use some "
                         f"of {', '.join(METHODS)}")
    positive(seeds=config.seeds, max_train_samples=config.max_train_samples,
             max_eval_samples=config.max_eval_samples, epochs=config.epochs,
             max_steps=config.max_steps, grid_points=config.grid_points,
             curve_seeds=config.curve_seeds, processes=config.processes)
    for size in config.curve_sizes or ():
        at_least(2, curve_sizes=size)
    check_device(config.device)
    home = str(home_dir(config.home))
    storage, tracking_uri = check_stores(config.storage, config.tracking_uri, home)
    return dataclasses.replace(config, tasks=tasks, methods=methods, home=home,
                               storage=storage, tracking_uri=tracking_uri,
                               curve_sizes=tuple(config.curve_sizes or ()) or None)


def default_name(config: ReproduceConfig, base: BaseModel) -> str:
    """The reproduction's name: its model, budget and the settings that change its cells (the
    same command resumes it; other settings start another)."""
    s = config.settings()
    model = base.model_id.rstrip("/").split("/")[-1]
    length = (f"t{s['max_steps']}" if s["max_steps"] else f"e{s['epochs']}" if s["epochs"]
              else "recipes2")  # the budget's recipes (2: per-method lengths, held-out rows)
    parts = [model, config.budget, f"n{s['max_train_samples'] or 'all'}", length,
             f"g{s['grid_points']}"]
    if config.own.given:  # other files (or columns) are another reproduction
        parts.append(f"{config.custom}{config.own.digest()}")
    if s["max_eval_samples"]:
        parts.append(f"d{s['max_eval_samples']}")
    return "-".join(parts)


# --------------------------------------------------------------------------- the cells


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


def study_space(label: str, grid: tuple[float, ...], recipe: Recipe, max_length: int):
    """The learning-rate study of one method: a grid over its rates, nothing pruned, each
    trial scored once on the held-out rows after its last step (as the final runs are on
    dev)."""
    import optuna

    from bitfit.space import SearchSpace

    fixed: dict[str, Any] = {**recipe.fixed(), "eval_each_epoch": False,
                             **{k: v for k, v in METHODS[label].items() if k != "method"}}
    return SearchSpace(
        name=f"reproduce-{label}", method=METHODS[label]["method"], n_trials=len(grid),
        distributions={"learning_rate": optuna.distributions.CategoricalDistribution(grid)},
        fixed=fixed, sampler={"name": "grid", "seed": 0}, pruner={"name": "none"},
        max_length=max_length)


class _Run:
    """One reproduction's state while it runs: model, stores, MLflow parent, finished cells."""

    def __init__(self, c: ReproduceConfig, base: BaseModel, name: str, report: Report,
                 phase: Callable[..., Any]) -> None:
        from bitfit.tracking import Tracker

        assert c.home is not None and c.tracking_uri is not None
        self.c, self.base, self.name, self.report, self.phase = c, base, name, report, phase
        self.s = c.settings()
        self.folder = Path(c.home) / "reproduce" / name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.tracker = Tracker(c.tracking_uri, home=c.home)
        self.experiment_id = self.tracker.experiment(c.experiment)
        self.root = self.tracker.reproduce_run(self.experiment_id, name, {
            "budget": c.budget, "model": base.model_id, "pooling": base.pooling,
            "tasks": ",".join(c.task_names), "methods": ",".join(c.methods),
            "curve_task": c.curve_task or "", **self.s,
            **{f"recipe.{label}": json.dumps(dataclasses.asdict(c.recipe(label)))
               for label in c.methods},
            **({"custom_task": c.custom, "train_file": c.train_file, "dev_file": c.dev_file}
               if c.own.given else {})})
        self.tracker.root = self.root
        self.tracker.study_plots = False  # a grid of a few rates: Optuna's plots show nothing
        self.studies: dict[tuple[str, str], tuple[str, TrainConfig]] = {}
        self.prepared: dict[tuple[str, bool], TaskData] = {}

    def data(self, task: str, *, study: bool) -> TaskData:
        """A task's splits (prepared once per run). The held-out rows (``data.heldout_size``
        of the main table's sample) are carved from the whole training split first; a study
        trains on a sample of the rest and selects on them, the final runs train on the rest
        (each seed its own sample of it: ``cell``) and never see them."""
        from bitfit.data import heldout_size, load_splits, prepare

        assert self.c.home is not None
        key = (task, study)
        if key not in self.prepared:
            total = len(load_splits(self.c.task(task), data_dir=self.c.data_dir,
                                    **self.c.files(task))[1]["train"])
            self.prepared[key] = self.phase(
                prepare, self.c.task(task), self.base.tokenizer, data_dir=self.c.data_dir,
                **self.c.files(task),
                max_length=self.s["max_length"],
                max_train_samples=self.s["max_train_samples"] if study else None,
                max_eval_samples=self.s["max_eval_samples"],
                heldout_rows=heldout_size(total, self.s["max_train_samples"]),
                heldout_split=study, cache_dir=Path(self.c.home) / "cache")
        return self.prepared[key]

    def best(self, task: str, label: str) -> tuple[str, TrainConfig]:
        """The method's study on the task and its best config (the best rate of its grid on
        the held-out rows): the study run, resumed, or read back when it has finished."""
        from bitfit.compare import best_config
        from bitfit.pipeline import trial_count
        from bitfit.study import run_study

        if (task, label) in self.studies:
            return self.studies[(task, label)]
        assert self.c.storage is not None and self.c.home is not None
        recipe = self.c.recipe(label)
        grid = recipe.grid[: self.s["grid_points"]]
        space = study_space(label, grid, recipe, self.s["max_length"])
        study = f"{self.name}-{task}-{label}"
        if trial_count(self.c.storage, study) < len(grid):
            data = self.data(task, study=True)
            self.report.line(f"{task} {label}: learning-rate study over {list(grid)}")
            self.phase(run_study, self.base, data, space, storage=self.c.storage,
                       study_name=study, home=self.c.home, tracker=self.tracker,
                       experiment=self.c.experiment, device=self.c.device,
                       run_params={"model": self.base.model_id, "reproduce": self.name},
                       log=self.report.line)
        self.studies[(task, label)] = (study, best_config(self.c.storage, study, task=task))
        return self.studies[(task, label)]

    def cell(self, kind: str, task: str, label: str, size: int | None, seeds: int) -> Cell:
        """A finished cell, read back, or trained now and written."""
        from bitfit.compare import compare
        from bitfit.train import lr_sum

        path = _cell_file(self.folder, kind, task, label, size)
        found = _load_cell(path)
        if found is not None:
            return found
        study, config = self.best(task, label)
        data = self.data(task, study=False)
        samples = size or self.s["max_train_samples"]
        # each seed its own sample (the same for every method); the report reads the dev score
        # after the last step only, and no generalisation gap
        config = dataclasses.replace(
            config, train_samples=samples if samples and samples < len(data.train) else None,
            eval_each_epoch=False, train_eval_samples=0)
        where = f"{task} {label}" + (f" at {size} examples" if size else "")
        self.report.line(f"{where}: {seeds} seeds at learning rate {config.learning_rate:g}")
        assert self.c.home is not None
        start = time.perf_counter()
        name = f"{self.name}-{kind}-{task}-{label}" + (f"-n{size}" if size else "")
        comparison = self.phase(compare, self.base, data, {label: config}, seeds=seeds,
                                home=self.c.home, name=name, tracker=self.tracker,
                                experiment=self.c.experiment, device=self.c.device,
                                processes=self.c.processes, log=self.report.line,
                                register=False, plots=False)
        cell = Cell(task, label, size, config.learning_rate, study, comparison.runs,
                    comparison.parent_run_id, time.perf_counter() - start,
                    data.task.main_metric,
                    lr_sum(config, min(config.train_samples or len(data.train),
                                       len(data.train))))
        _save_cell(path, cell)
        return cell


def curve_sizes(total: int, sizes: tuple[int, ...] | None) -> list[int]:
    """The training sizes of the curve: the given ones that the split holds, or about one per
    half decade from 100 to the whole split."""
    if sizes:
        return sorted({min(s, total) for s in sizes})
    points = np.unique(np.round(np.logspace(2, math.log10(total), num=max(
        2, round(2 * math.log10(total / 100)) + 1))).astype(int))
    return [int(p) for p in points if p <= total]


def run(config: ReproduceConfig = ReproduceConfig(), *, phase: Callable[..., Any] = _direct,
        report: Report = STDERR) -> dict[str, Any]:
    """The whole reproduction: the main table, the size curve, which biases move, the claims
    and the report; its summary, JSON-ready. Finished cells of an earlier run with the same
    name are kept.

    A cell's seeds train one after another in this process by default (``processes`` 1): with
    2 processes per cell, as the final evaluation of ``bitfit search`` does, the small budget
    took 60.7 minutes, and a cell that trains almost nothing (``frozen`` on 500 SST-2 examples)
    still took 40 s: each cell started its processes anew, each loading the model (how much of
    the 40 s that was is not measured)."""
    c = check(config)
    started = time.perf_counter()
    base = phase(load_model, c.model, c.pooling)
    name = c.name or default_name(c, base)
    r = _Run(c, base, name, report, phase)
    try:
        main = [r.cell("main", task, label, None, r.s["seeds"])
                for task in c.task_names for label in c.methods]
        curve: list[Cell] = []
        if c.curve_task:
            total = len(r.data(c.curve_task, study=False).train)
            for size in curve_sizes(total, r.s["curve_sizes"]):
                curve += [r.cell("curve", c.curve_task, label, size, r.s["curve_seeds"])
                          for label in CURVE_METHODS]
        summary = finish(r, main, curve, time.perf_counter() - started)
    except BaseException as err:
        from bitfit.interrupts import is_interruption

        r.tracker.stop_run(r.root, "KILLED" if is_interruption(err) else "FAILED")
        raise
    report.finished(summary)
    return summary


# --------------------------------------------------------------------------- the analysis


def main_table(cells: list[Cell]) -> pd.DataFrame:
    """A row per (task, method): the main metric's mean, std and 95% interval over seeds, the
    trainable share and seconds per epoch."""
    rows = []
    for cell in cells:
        metric = cell.metric
        stats = summarise(cell.runs, (metric,)).iloc[0]  # the final evaluation's statistics
        rows.append({"task": cell.task, "method": cell.method, "size": cell.size,
                     "metric": metric, "seeds": int(stats["seeds"]),
                     **{k: float(stats[f"{metric}_{k}"]) for k in ("mean", "std", "ci_low",
                                                                    "ci_high")},
                     "learning_rate": cell.learning_rate,
                     "trainable_params": int(stats["trainable_params"]),
                     "trainable_fraction": float(stats["trainable_fraction"]),
                     "seconds_per_epoch": float(stats["time_per_epoch_s"])})
    return pd.DataFrame(rows)


def _paired(*cells: Cell) -> tuple[list[list[float]], bool]:
    """The cells' scores, seed by seed where every cell ran the same seeds (each seed trains
    every method on the same rows, so their scores pair), else as they are (unpaired)."""
    seeds = [sorted(c.by_seed()) for c in cells]
    if all(s == seeds[0] for s in seeds) and len(seeds[0]) >= 2:
        return [[c.by_seed()[seed] for seed in seeds[0]] for c in cells], True
    return [c.scores() for c in cells], False


CLAIMS = {
    1: "small-to-medium data: BitFit is competitive with full fine-tuning",
    2: "larger data: BitFit is competitive with another sparse method (LoRA)",
    3: "the qm2 subset (query + first MLP layer) keeps most of BitFit's gain",
    4: "fine-tuning mostly exposes knowledge: BitFit gets most of full fine-tuning's gain",
    5: "BitFit beats the random baseline (as many randomly chosen weights as it has biases)",
}


def rules() -> list[str]:
    """Each verdict rule, stated once for the report."""
    margins = ", ".join(f"{m} {v:g}" for m, v in MARGINS.items())
    return [
        f"Every test is one-sided at α = {ALPHA}, on the dev scores after each run's last step, "
        "paired by seed where the methods ran the same seeds (a seed trains every method on "
        "the same rows); each interval is the 90% interval of the effect (both one-sided 95% "
        "bounds).",
        "*Competitive* (claims 1 and 2) is non-inferiority: the lower bound of ours - reference "
        f"must clear -margin, with the margin declared per metric before any run ({margins}); "
        "*fails* when the upper bound is below -margin. A claim is *not testable* where the "
        "reference does not significantly beat the majority class's score (0 for a "
        "correlation): two methods that both learnt nothing are not competitive.",
        f"*Most of the gain* (claims 3 and 4) tests the contrast part - {MOST:g}·whole - "
        f"{1 - MOST:g}·frozen > 0 (part keeps at least {MOST:.0%} of whole's gain over "
        "head-only training), not a ratio of means; *not testable* where whole does not "
        "significantly beat frozen.",
        "*Beats the random baseline* (claim 5) tests bitfit - rand > 0; *not testable* where "
        "neither beats the majority class.",
        "The *all* row of a claim applies Holm's correction over its testable rows: it *holds* "
        "when every testable row holds after the correction, *fails* when any row fails, and "
        "is *not testable* without a testable row.",
    ]


def claims(main: list[Cell], curve: list[Cell], majority: dict[str, float],
           alpha: float = ALPHA) -> list[dict[str, Any]]:
    """A row per claim and task (and one per claim over all tasks): the evidence, the rule,
    the p-value, the effect with its interval and the verdict (``bitfit.verdicts``)."""
    by = {(c.task, c.method, c.size): c for c in [*main, *curve]}
    rows: list[dict[str, Any]] = []
    verdicts: dict[int, list[Verdict]] = {}

    def add(claim: int, task: str, verdict: Verdict, evidence: str) -> None:
        verdicts.setdefault(claim, []).append(verdict)
        rows.append({"claim": claim, "task": task, "verdict": verdict.verdict,
                     "p_value": verdict.p_value, "estimate": verdict.estimate,
                     "low": verdict.low, "high": verdict.high, "evidence": evidence,
                     "test": verdict.rule, "note": verdict.note})

    def means(*cells: Cell) -> str:
        return ", ".join(f"{c.method} {np.mean(c.scores()):.4f}" for c in cells)

    for task in dict.fromkeys(c.task for c in main):
        metric = next(c.metric for c in main if c.task == task)
        floor = majority.get(task, 0.0)
        cell = {m: by.get((task, m, None)) for m in METHODS}
        for claim, other in ((1, "full"), (2, "lora")):
            if cell["bitfit"] and cell[other]:
                (ours, theirs), paired = _paired(cell["bitfit"], cell[other])
                add(claim, task, competitive(ours, theirs, metric=metric, floor=floor,
                                             paired=paired, alpha=alpha,
                                             names=("bitfit", other)),
                    f"main table, {metric}: {means(cell['bitfit'], cell[other])}; majority "
                    f"class {floor:.4f}")
        for claim, part, whole in ((3, "bitfit_qm2", "bitfit"), (4, "bitfit", "full")):
            if cell[part] and cell[whole] and cell["frozen"]:
                (p, w, f), paired = _paired(cell[part], cell[whole], cell["frozen"])
                add(claim, task, share_of_gain(p, w, f, share=MOST, paired=paired, alpha=alpha,
                                               names=(part, whole, "frozen")),
                    f"main table, {metric}: "
                    f"{means(cell[part], cell[whole], cell['frozen'])}")
        if cell["bitfit"] and cell["rand"]:
            from bitfit.verdicts import beats_constant

            (b, r), paired = _paired(cell["bitfit"], cell["rand"])
            gates = [beats_constant(x, floor, alpha=alpha).verdict == "holds" for x in (b, r)]
            verdict = superiority(b, r, paired=paired, alpha=alpha, names=("bitfit", "rand"))
            if not any(gates):
                verdict = dataclasses.replace(
                    verdict, verdict="not testable", low=math.nan, high=math.nan,
                    p_value=math.nan, note=f"neither beats the majority class's {floor:.4f}")
            add(5, task, verdict, f"main table, {metric}: "
                                  f"{means(cell['bitfit'], cell['rand'])}")
    if curve:
        task = curve[0].task
        largest = max(c.size or 0 for c in curve)
        ours, theirs = by.get((task, "bitfit", largest)), by.get((task, "lora", largest))
        if ours and theirs:
            (a, b), paired = _paired(ours, theirs)
            add(2, f"{task} at {largest:,}", competitive(
                a, b, metric=ours.metric, floor=majority.get(task, 0.0), paired=paired,
                alpha=alpha, names=("bitfit", "lora")),
                f"size curve, largest size, {ours.metric}: {means(ours, theirs)}")
    overall = []
    for claim in sorted(verdicts):
        verdict, evidence = combine(verdicts[claim], alpha=alpha)
        overall.append({"claim": claim, "task": "all", "verdict": verdict,
                        "p_value": math.nan, "estimate": math.nan, "low": math.nan,
                        "high": math.nan, "evidence": evidence,
                        "test": "Holm's correction over the testable rows", "note": ""})
    return sorted(rows, key=lambda row: row["claim"]) + overall


def crossing(curve: pd.DataFrame, a: str = "bitfit", b: str = "full") -> float | None:
    """The training size where method ``a``'s mean and ``b``'s cross on the curve
    (interpolated on a log scale), or None where they do not."""
    sizes = sorted(curve["size"].unique())
    mean = curve.set_index(["method", "size"])["mean"]
    diff = [mean.get((a, s), math.nan) - mean.get((b, s), math.nan) for s in sizes]
    for (s0, d0), (s1, d1) in itertools.pairwise(zip(sizes, diff, strict=True)):
        if d0 == 0:
            return float(s0)
        if d0 * d1 < 0:
            t = d0 / (d0 - d1)
            return float(10 ** (math.log10(s0) + t * (math.log10(s1) - math.log10(s0))))
    return None


def _term_tensors(base: BaseModel) -> dict[str, tuple[str, int]]:
    """Each bias tensor of the encoder (its name in the classifier) -> (term, layer); layer -1
    for the terms outside the layers."""
    import re

    from bitfit.biases import select_biases

    names = [n for n, _ in base.encoder.named_parameters()]
    where = {}
    for term, found in select_biases(names, base.family, "all").items():
        for n in found:
            layer = re.search(r"(?:^|\.)layer\.(\d+)\.", n)
            where[f"encoder.{n}"] = (term, int(layer.group(1)) if layer else -1)
    return where


def bias_movement(base: BaseModel, cells: list[Cell]) -> pd.DataFrame:
    """How far each bias term moved in the BitFit (all biases) runs: a row per task, seed, term
    and layer with the mean absolute change against the pre-trained values (``change``) and that
    change over the run's summed learning rate (``normalised``, ``train.lr_sum``). Adam moves
    every coordinate by about the rate at each step whatever its gradient's size, so the raw
    change of every term is about the summed rate; the normalised change is the share of that
    allowance a term used by moving the same way step after step: near 1 a consistent signal,
    near 0 none. ``k`` (the key bias) is the control: adding the same vector to every key
    leaves attention unchanged, so its gradient is zero in exact arithmetic."""
    from bitfit.artifacts import load_artifact

    base.restore()
    pristine = {f"encoder.{n}": p.detach() for n, p in base.encoder.named_parameters()}
    where = _term_tensors(base)
    rows = []
    for cell in cells:
        for run in cell.runs if cell.method == "bitfit" else []:
            _, tensors = load_artifact(run.artifact)
            for name, value in tensors.items():
                if name in where:
                    term, layer = where[name]
                    change = float((value.float() - pristine[name].float()).abs().mean())
                    rows.append({"task": cell.task, "seed": run.seed, "term": term,
                                 "layer": layer, "change": change,
                                 "normalised": change / cell.lr_sum if cell.lr_sum > 0
                                 else math.nan})
    return pd.DataFrame(rows, columns=["task", "seed", "term", "layer", "change",
                                       "normalised"])


def _term_order(terms: pd.Series) -> pd.Series:
    from bitfit.biases import TERMS

    order = {t: i for i, t in enumerate(TERMS)}
    return terms.map(lambda t: order.get(t, len(order)))


def movement_matrix(movement: pd.DataFrame) -> pd.DataFrame:
    """The heatmap's terms x layers matrix: the normalised change, averaged over tasks and
    seeds."""
    layered = movement[movement["layer"] >= 0]
    matrix = layered.groupby(["term", "layer"])["normalised"].mean().unstack("layer")
    return matrix.sort_index(key=_term_order)


def ranking(movement: pd.DataFrame) -> pd.DataFrame:
    """The terms by their normalised change (mean over layers and seeds), a column per task and
    their mean, largest first."""
    per_task = (movement.groupby(["term", "task"])["normalised"].mean()
                .unstack("task"))
    per_task["mean"] = per_task.mean(axis=1)
    return (per_task.sort_values("mean", ascending=False).reset_index()
            .rename_axis(columns=None))


def term_ablation(base: BaseModel, data: dict[str, TaskData], cells: list[Cell],
                  *, device: str = "auto") -> pd.DataFrame:
    """The functional test of which biases matter: each BitFit (all biases) run's classifier
    with one term's change undone (its tensors put back to the pre-trained values), re-scored on
    dev. A row per task, seed and term: the dev score with every change (``trained``), with this
    one undone (``reset``) and the loss (``drop``)."""
    import torch

    from bitfit.artifacts import apply_artifact
    from bitfit.train import evaluate, resolve_device, resolve_precision

    base.restore()
    pristine = {f"encoder.{n}": p.detach().clone() for n, p in base.encoder.named_parameters()}
    where = _term_tensors(base)
    dev_device = resolve_device(device)
    precision = resolve_precision("auto", dev_device)
    rows = []
    for cell in cells:
        if cell.method != "bitfit" or cell.task not in data:
            continue
        task_data = data[cell.task]
        split, metric = task_data.selection_split, cell.metric
        for run in cell.runs:
            model = apply_artifact(base, run.artifact).to(dev_device)
            params = dict(model.named_parameters())

            def score() -> float:
                return evaluate(model, task_data, batch_size=64,  # noqa: B023
                                pad_id=base.tokenizer.pad_token_id or 0, device=dev_device,
                                precision=precision)[split][metric]  # noqa: B023

            trained = score()
            for term in dict.fromkeys(t for t, _ in where.values()):
                names = [n for n, (t, _) in where.items() if t == term]
                kept = {n: params[n].detach().clone() for n in names}
                with torch.no_grad():
                    for n in names:
                        params[n].copy_(pristine[n])
                reset = score()
                with torch.no_grad():
                    for n in names:
                        params[n].copy_(kept[n])
                rows.append({"task": cell.task, "seed": run.seed, "term": term,
                             "trained": trained, "reset": reset, "drop": trained - reset})
    base.restore()
    return pd.DataFrame(rows, columns=["task", "seed", "term", "trained", "reset", "drop"])


def pareto(table: pd.DataFrame) -> pd.DataFrame:
    """The main table's methods per task with ``pareto`` marking those no other method beats
    with as many trainable parameters or fewer (the trade-off BitFit exists for)."""
    rows = []
    for _, group in table.groupby("task", sort=False):
        front = pareto_front(list(zip(group["trainable_params"], group["mean"], strict=True)))
        for i, (_, row) in enumerate(group.iterrows()):
            rows.append({"task": row["task"], "method": row["method"], "metric": row["metric"],
                         "trainable_params": int(row["trainable_params"]),
                         "mean": float(row["mean"]), "pareto": i in front})
    return pd.DataFrame(rows, columns=["task", "method", "metric", "trainable_params", "mean",
                                       "pareto"])


# --------------------------------------------------------------------------- the report


def model_description(base: BaseModel) -> str:
    """What the model is, in a sentence or two."""
    from bitfit.models import BUNDLED

    config = base.encoder.config
    text = (f"Model: `{base.model_id}` ({config.model_type}, {config.num_hidden_layers} layers, "
            f"hidden size {config.hidden_size}, {base.num_parameters / 1e6:.1f}M parameters), "
            f"read through {base.pooling} pooling.")
    if base.model_id == BUNDLED:
        text += (" It is a sentence-embedding model (all-MiniLM-L6-v2), trained for mean-pooled "
                 "sentence similarity rather than as a masked language model like the paper's "
                 "BERT: the verdicts below are about this checkpoint.")
    return text


def _markdown_table(frame: pd.DataFrame, columns: dict[str, Callable[[Any], str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(fmt(row) for fmt in columns.values()) + " |")
    return "\n".join(lines)


def _number(column: Any, spec: str) -> Callable[[Any], str]:
    """A table column that formats a row's number ``column`` with ``spec``."""
    return lambda x: format(x[column], spec)


def _layer_columns(layers: list[int]) -> dict[str, Callable[[Any], str]]:
    columns: dict[str, Callable[[Any], str]] = {"term": lambda x: str(x["term"])}
    columns.update({f"layer {layer}": _number(layer, ".3f") for layer in layers})
    return columns


def _grid(table: pd.DataFrame, majority: dict[str, float]) -> str:
    """Tasks x methods, mean ± std of the main metric, after the majority class's score."""
    methods = list(dict.fromkeys(table["method"]))
    lines = ["| task (metric) | majority class | " + " | ".join(methods) + " |",
             "|" + "---|" * (len(methods) + 2)]
    for task, rows in table.groupby("task", sort=False):
        by = rows.set_index("method")
        cells = [f"{by.loc[m, 'mean']:.4f} ± {by.loc[m, 'std']:.4f}" if m in by.index else ""
                 for m in methods]
        floor = majority.get(str(task), math.nan)
        lines.append(f"| {task} ({rows['metric'].iloc[0]}) | "
                     f"{'–' if math.isnan(floor) else f'{floor:.4f}'} | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines)


def majority_score(data: TaskData) -> float:
    """The main metric on dev of always predicting the training split's most frequent label
    (the mean for regression, which correlates with nothing: 0): what a model that learnt only
    the label prior scores."""
    from bitfit.metrics import constant_score

    return constant_score(data.task, data.train.labels,
                          data.evals[data.selection_split].labels)


def _plot_curve(curve: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, rows in curve.groupby("method", sort=False):
        rows = rows.sort_values("size")
        ax.errorbar(rows["size"], rows["mean"], yerr=rows["std"].fillna(0), marker="o",
                    capsize=3, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("training examples")
    ax.set_ylabel(f"dev {curve['metric'].iloc[0]}")
    ax.set_title(f"{curve['task'].iloc[0]}: dev score by training size (mean ± std over seeds)")
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _plot_heatmap(matrix: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * matrix.shape[1], 0.9 + 0.45 * matrix.shape[0]))
    image = ax.imshow(matrix.to_numpy(), aspect="auto", cmap="viridis")
    ax.set_xticks(range(matrix.shape[1]), [str(c) for c in matrix.columns])
    ax.set_yticks(range(matrix.shape[0]), list(matrix.index))
    ax.set_xlabel("layer")
    ax.set_ylabel("bias term")
    ax.set_title("bias change / summed learning rate (BitFit, all biases)")
    fig.colorbar(image, ax=ax)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _plot_pareto(front: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(front["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = front[front["task"] == task]
        ax.scatter(rows["trainable_params"], rows["mean"], color="grey")
        for _, row in rows.iterrows():
            ax.annotate(row["method"], (row["trainable_params"], row["mean"]), fontsize=8,
                        xytext=(3, 3), textcoords="offset points")
        edge = rows[rows["pareto"]].sort_values("trainable_params")
        ax.step(edge["trainable_params"], edge["mean"], where="post", color="tab:red")
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel(f"dev {rows['metric'].iloc[0]} (mean)")
        ax.set_title(task)
    fig.suptitle("dev score against trainable parameters; the Pareto front in red")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _verdict_cell(row: dict[str, Any]) -> str:
    text = f"**{row['verdict']}**"
    return text + (f" ({row['note']})" if row.get("note") else "")


def finish(r: _Run, main: list[Cell], curve: list[Cell], seconds: float) -> dict[str, Any]:
    """The tables, plots and claims; the report written under the run home and to the parent
    MLflow run; the summary."""
    s = r.s
    budget = BUDGETS[r.c.budget]
    table = main_table(main)
    curve_table = main_table(curve) if curve else pd.DataFrame()
    tasks = list(dict.fromkeys(c.task for c in main))
    finals = {task: r.data(task, study=False) for task in tasks}
    majority = {task: majority_score(finals[task]) for task in tasks}
    movement = bias_movement(r.base, main)
    ablation = r.phase(term_ablation, r.base, finals, main, device=r.c.device)
    matrix = movement_matrix(movement) if len(movement) else pd.DataFrame()
    ranked = ranking(movement) if len(movement) else pd.DataFrame()
    verdicts = claims(main, curve, majority)
    front = pareto(table)
    folder = r.folder
    table.to_csv(folder / "main_table.csv", index=False)
    pd.DataFrame(verdicts).to_csv(folder / "claims.csv", index=False)
    front.to_csv(folder / "pareto.csv", index=False)
    written = ["report.md", "summary.json", "main_table.csv", "claims.csv", "pareto.csv"]
    if len(front):
        _plot_pareto(front, folder / "pareto.png")
        written.append("pareto.png")
    if len(curve_table):
        curve_table.to_csv(folder / "size_curve.csv", index=False)
        _plot_curve(curve_table, folder / "size_curve.png")
        written += ["size_curve.csv", "size_curve.png"]
    if len(matrix):
        movement.to_csv(folder / "bias_movement.csv", index=False)
        _plot_heatmap(matrix, folder / "bias_heatmap.png")
        written += ["bias_movement.csv", "bias_heatmap.png"]
    if len(ablation):
        ablation.to_csv(folder / "term_ablation.csv", index=False)
        written.append("term_ablation.csv")
    cross = crossing(curve_table) if len(curve_table) else None
    fmt = {"task": lambda x: str(x["task"]), "method": lambda x: str(x["method"]),
           "seeds": lambda x: str(x["seeds"]),
           "mean ± std [95% CI]": lambda x: f"{x['mean']:.4f} ± {x['std']:.4f} "
                                            f"[{x['ci_low']:.4f}, {x['ci_high']:.4f}]",
           "lr": lambda x: f"{x['learning_rate']:g}",
           "trainable": lambda x: f"{x['trainable_params']:,} "
                                  f"({100 * x['trainable_fraction']:.3f}%)",
           "s/epoch": lambda x: f"{x['seconds_per_epoch']:.1f}"}
    recipes = "; ".join(
        f"{label}: batch {rc.batch_size}, "
        + (f"{rc.max_steps} steps" if rc.max_steps else f"{rc.epochs} epochs")
        + f", {rc.schedule}, rates {', '.join(f'{g:g}' for g in rc.grid[: s['grid_points']])}"
        for label, rc in ((m, r.c.recipe(m)) for m in r.c.methods))
    lines = [f"# BitFit's claims on `{r.base.model_id}`", "", model_description(r.base), "",
             f"Budget `{budget.name}`: {budget.about}.", "",
             f"This run: {s['max_train_samples'] or 'all the'} training examples per task and "
             f"seed, {s['seeds']} seeds, {s['grid_points']} learning rates per method picked "
             "on held-out training rows that no final run trains on; "
             + (f"dev capped at {s['max_eval_samples']} examples; " if s["max_eval_samples"]
                else "whole dev sets; ") + f"{seconds / 60:.1f} minutes in this call. "
             f"Recipes: {recipes}.", "",
             *([f"Custom task `{r.c.custom}`: trained on `{r.c.train_file}`, scored on "
                f"`{r.c.dev_file}` ({'regression, Pearson' if r.c.regression else 'accuracy'})."
                , ""] if r.c.own.given else []),
             "## Main table: dev score, mean ± std over seeds", "", _grid(table, majority), "",
             "*majority class*: always predicting the training split's most frequent label (a "
             "correlation's constant prediction scores 0); a method near it has learnt little "
             "beyond the label prior.", "",
             _markdown_table(table, fmt), ""]
    if len(front):
        lines += ["## The trade-off: dev score against trainable parameters", "",
                  "A method is on the Pareto front (✓) when no other method scores higher with "
                  "as many trainable parameters or fewer.", "",
                  _markdown_table(front, {
                      "task": lambda x: str(x["task"]), "method": lambda x: str(x["method"]),
                      "trainable": lambda x: f"{x['trainable_params']:,}",
                      "dev mean": lambda x: f"{x['mean']:.4f}",
                      "front": lambda x: "✓" if x["pareto"] else ""}), "",
                  "![pareto](pareto.png)", ""]
    if len(curve_table):
        lines += [f"## Data-size curve: {curve_table['task'].iloc[0]}", "",
                  _markdown_table(curve_table, {"size": lambda x: f"{x['size']:,}", **fmt}), "",
                  "BitFit and full fine-tuning cross at about "
                  f"{cross:,.0f} training examples." if cross else
                  "BitFit and full fine-tuning do not cross over these sizes.", "",
                  "![size curve](size_curve.png)", ""]
    if len(matrix):
        task_columns = [c for c in ranked.columns if c not in ("term", "mean")]
        lines += ["## Which biases move", "",
                  "Each term's mean absolute change over the run's summed learning rate (the "
                  "most Adam lets a coordinate move): near 1, the term moved the same way step "
                  "after step; near 0, it only jittered. The key bias `k` is the control: its "
                  "gradient is zero in exact arithmetic (a shift of every key leaves attention "
                  "unchanged), so its value is the floor of noise.", "",
                  _markdown_table(ranked, {"term": lambda x: str(x["term"]) + (
                      " (control)" if x["term"] == "k" else ""),
                      **{t: _number(t, ".3f") for t in task_columns},
                      "mean": lambda x: f"{x['mean']:.3f}"}), "",
                  "Per layer (normalised, averaged over tasks and seeds):", "",
                  _markdown_table(matrix.reset_index(), _layer_columns(list(matrix.columns))),
                  "", "![bias heatmap](bias_heatmap.png)", ""]
    if len(ablation):
        drops = (ablation.groupby(["term", "task"])["drop"].mean().unstack("task")
                 .reset_index().rename_axis(columns=None))
        drops = drops.sort_values("term", key=_term_order)
        lines += ["### Undoing one term", "",
                  "Dev score lost when one term's change is put back to its pre-trained value "
                  "in each BitFit run (mean over seeds; positive: the change mattered):", "",
                  _markdown_table(drops, {"term": lambda x: str(x["term"]), **{
                      t: _number(t, "+.4f") for t in drops.columns if t != "term"}}), ""]
    lines += ["## Claims", "", *[f"- {rule}" for rule in rules()], "",
              "| claim | task | evidence | rule | effect [90% interval] | p | verdict |",
              "|---|---|---|---|---|---|---|"]
    for row in verdicts:
        p = "" if math.isnan(row["p_value"]) else f"{row['p_value']:.4f}"
        effect = ("" if math.isnan(row["estimate"]) else f"{row['estimate']:+.4f}" + (
            "" if math.isnan(row["low"]) else f" [{row['low']:+.4f}, {row['high']:+.4f}]"))
        lines.append(f"| {row['claim']}. {CLAIMS[row['claim']]} | {row['task']} | "
                     f"{row['evidence']} | {row['test']} | {effect} | {p} | "
                     f"{_verdict_cell(row)} |")
    text = "\n".join(lines) + "\n"
    (folder / "report.md").write_text(text)
    summary = {"name": r.name, "model": r.base.model_id, "budget": budget.name,
               "report": str(folder / "report.md"), "markdown": text,
               "mlflow_run_id": r.root, "experiment_id": r.experiment_id,
               "tracking_uri": mask_url(r.tracker.tracking_uri), "seconds": seconds,
               "main_table": table.to_dict(orient="records"),
               "size_curve": curve_table.to_dict(orient="records"), "crossing": cross,
               "bias_ranking": ranked.to_dict(orient="records"),
               "term_ablation": ablation.to_dict(orient="records"),
               "pareto": front.to_dict(orient="records"), "majority": majority,
               "claims": verdicts, "settings": s, "home": r.c.home}
    (folder / "summary.json").write_text(json.dumps(
        {k: v for k, v in summary.items() if k != "markdown"}, indent=1, default=str))
    r.tracker.end_report(r.root, folder, written)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    """The report's tables and verdicts, and where MLflow shows it all."""
    from bitfit.tracking import ui_command

    print(summary["markdown"])
    print(f"report and plots: {Path(summary['report']).parent}")
    print(f"MLflow: run {summary['mlflow_run_id']} (experiment {summary['experiment_id']}) in "
          f"{summary['tracking_uri']}")
    home = summary.get("home")
    if home:
        print(f"see it: {ui_command(summary['tracking_uri'], home)}")
