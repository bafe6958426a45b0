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
from bitfit.report import SeedRun, summarise, welch
from bitfit.services import mask_url
from bitfit.tasks import Task
from bitfit.train import TrainConfig

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
TASKS = ("sst2", "stsb", "mrpc", "rte", "cola")
ALPHA = 0.05  # significance level of every test
TOLERANCE = 0.01  # "competitive": within one point of the main metric (0-1 scale)
MOST = 0.5  # "most of the gain": more than half of it
EXPERIMENT = "bitfit-reproduce"


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much a reproduction trains. ``grids``: each method's learning rates, tried in order
    (the first ``grid_points`` of them)."""

    name: str
    max_train_samples: int | None  # training rows of the main table (None: all)
    epochs: int
    seeds: int
    grid_points: int
    curve_sizes: tuple[int, ...] | None  # None: log-spaced from 100 to the whole split
    curve_seeds: int
    max_length: int
    grids: dict[str, tuple[float, ...]]
    about: str


# BitFit's and full fine-tuning's grids in `paper` are the paper's; LoRA's is around the LoRA
# paper's GLUE rates, the head-only and rand ones BitFit's. `small` trains few steps (48), so
# its rates are higher: with (5e-5, 1e-4) for full fine-tuning and (3e-3, 1e-2) for BitFit the
# studies picked the upper end on 5 of 5 and 3 of 5 tasks.
BUDGETS: dict[str, Budget] = {
    "small": Budget(
        "small", max_train_samples=500, epochs=3, seeds=3, grid_points=2,
        curve_sizes=(100, 300, 1000, 3000), curve_seeds=2, max_length=128,
        grids={"full": (1e-4, 3e-4), "bitfit": (5e-3, 2e-2), "bitfit_qm2": (5e-3, 2e-2),
               "rand": (5e-3, 2e-2), "frozen": (5e-3, 2e-2), "lora": (2e-3, 5e-3)},
        about="meant to finish within an hour on a 2-core CPU with the bundled MiniLM: 500 "
              "training examples "
              "per task, 3 epochs, 2 learning rates per method, 3 seeds; the size curve up to "
              "3,000 examples with 2 seeds"),
    "paper": Budget(
        "paper", max_train_samples=None, epochs=3, seeds=5, grid_points=4, curve_sizes=None,
        curve_seeds=3, max_length=128,
        grids={"full": (1e-5, 2e-5, 3e-5, 5e-5), "bitfit": (1e-4, 4e-4, 7e-4, 1e-3),
               "bitfit_qm2": (1e-4, 4e-4, 7e-4, 1e-3), "rand": (1e-4, 4e-4, 7e-4, 1e-3),
               "frozen": (1e-4, 4e-4, 7e-4, 1e-3), "lora": (1e-4, 2e-4, 4e-4, 5e-4)},
        about="a GPU and a masked-LM BERT: whole training splits, 3 epochs, the paper's "
              "learning-rate grids, 5 seeds; the size curve from 100 examples to the whole "
              "split with 3 seeds"),
}


@dataclasses.dataclass(frozen=True)
class ReproduceConfig:
    """Everything ``run`` needs; None takes the budget's value."""

    tasks: tuple[str, ...] = TASKS  # GLUE tasks, and at most one custom task read from files
    methods: tuple[str, ...] = tuple(METHODS)
    budget: str = "small"
    seeds: int | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None  # dev rows scored (None: all; for quick looks only)
    epochs: int | None = None
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
    def customs(self) -> list[str]:
        """The names among ``tasks`` and ``curve_task`` that are not GLUE tasks (one at most
        is valid: ``check``)."""
        from bitfit.tasks import is_glue_task

        named = (*self.tasks, *([self.curve_task] if self.curve_task else []))
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
                "epochs": self.epochs or b.epochs, "seeds": self.seeds or b.seeds,
                "grid_points": self.grid_points or b.grid_points,
                "curve_sizes": tuple(self.curve_sizes or ()) or b.curve_sizes,
                "curve_seeds": self.curve_seeds or b.curve_seeds, "max_length": b.max_length,
                "max_eval_samples": self.max_eval_samples}


def check(config: ReproduceConfig) -> ReproduceConfig:
    """Everything that can be checked before the model loads; the config with its stores."""
    from bitfit.compare import check_not_starting
    from bitfit.entry import at_least, positive
    from bitfit.settings import home_dir
    check_not_starting()
    if config.budget not in BUDGETS:
        raise ValueError(f"--budget must be one of {', '.join(BUDGETS)}, got {config.budget!r}")
    tasks = tuple(config.tasks)
    if not tasks:
        raise ValueError("--tasks names no task: give at least one, e.g. --tasks sst2,rte")
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
             grid_points=config.grid_points, curve_seeds=config.curve_seeds,
             processes=config.processes)
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
    parts = [model, config.budget, f"n{s['max_train_samples'] or 'all'}", f"e{s['epochs']}",
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

    def scores(self) -> list[float]:
        return [r.metrics[self.metric] for r in self.runs]


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


def study_space(label: str, grid: tuple[float, ...], epochs: int, max_length: int):
    """The learning-rate study of one method: a grid over its rates, nothing pruned."""
    import optuna

    from bitfit.space import SearchSpace

    fixed: dict[str, Any] = {"epochs": epochs, "batch_size": 32,
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
            "tasks": ",".join(c.tasks), "methods": ",".join(c.methods),
            "curve_task": c.curve_task or "", **self.s,
            **({"custom_task": c.custom, "train_file": c.train_file, "dev_file": c.dev_file}
               if c.own.given else {})})
        self.tracker.root = self.root
        self.tracker.study_plots = False  # a grid of a few rates: Optuna's plots show nothing
        self.studies: dict[tuple[str, str], tuple[str, TrainConfig]] = {}
        self.prepared: dict[tuple[str, int | None, bool], TaskData] = {}

    def data(self, task: str, *, samples: int | None, heldout: bool) -> TaskData:
        """A task's splits (prepared once per run): ``samples`` training rows, and a split
        carved from them to select on when ``heldout``."""
        from bitfit.data import prepare
        from bitfit.pipeline import HELDOUT_FRACTION

        assert self.c.home is not None
        key = (task, samples, heldout)
        if key not in self.prepared:
            self.prepared[key] = self.phase(
                prepare, self.c.task(task), self.base.tokenizer, data_dir=self.c.data_dir,
                **self.c.files(task),
                max_length=self.s["max_length"], max_train_samples=samples,
                max_eval_samples=self.s["max_eval_samples"],
                validation_fraction=HELDOUT_FRACTION if heldout else None,
                cache_dir=Path(self.c.home) / "cache")
        return self.prepared[key]

    def best(self, task: str, label: str) -> tuple[str, TrainConfig]:
        """The method's study on the task and its best config (the best rate of its grid): the
        study run, resumed, or read back when it has finished."""
        from bitfit.compare import best_config
        from bitfit.pipeline import trial_count
        from bitfit.study import run_study

        if (task, label) in self.studies:
            return self.studies[(task, label)]
        assert self.c.storage is not None and self.c.home is not None
        grid = BUDGETS[self.c.budget].grids[label][: self.s["grid_points"]]
        space = study_space(label, grid, self.s["epochs"], self.s["max_length"])
        study = f"{self.name}-{task}-{label}"
        if trial_count(self.c.storage, study) < len(grid):
            data = self.data(task, samples=self.s["max_train_samples"], heldout=True)
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

        path = _cell_file(self.folder, kind, task, label, size)
        found = _load_cell(path)
        if found is not None:
            return found
        study, config = self.best(task, label)
        # the report reads the dev score after the last epoch only, and no generalisation gap:
        # dev is not scored after the earlier epochs, nor is the training split
        config = dataclasses.replace(config, eval_each_epoch=False, train_eval_samples=0)
        samples = size or self.s["max_train_samples"]
        data = self.data(task, samples=samples, heldout=False)
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
                    data.task.main_metric)
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
                for task in c.tasks for label in c.methods]
        curve: list[Cell] = []
        if c.curve_task:
            from bitfit.data import load_splits

            total = len(load_splits(c.task(c.curve_task), data_dir=c.data_dir,
                                    **c.files(c.curve_task))[1]["train"])
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


def one_sided(a: list[float], b: list[float]) -> float:
    """Welch's t-test p-value that mean(a) > mean(b) (NaN with fewer than two values a side;
    0 or 1 when neither varies)."""
    if len(a) >= 2 and len(b) >= 2 and np.std(a) == 0 and np.std(b) == 0:
        return 0.0 if np.mean(a) > np.mean(b) else 1.0
    return welch(a, b, alternative="greater")[1]


def _competitive(ours: list[float], theirs: list[float]) -> tuple[str, float, float]:
    """Whether ``ours`` is competitive with ``theirs``: the verdict, the difference of the
    means, and the p-value that theirs is better. Fails where theirs is significantly better by
    more than ``TOLERANCE``; holds where it is not significantly better and the difference is
    within the tolerance (or ours is ahead); else inconclusive at this many seeds."""
    delta = float(np.mean(ours) - np.mean(theirs))
    p = one_sided(theirs, ours)
    if math.isnan(p):
        return "inconclusive", delta, p
    if p < ALPHA and delta < -TOLERANCE:
        return "fails", delta, p
    if p >= ALPHA and delta >= -TOLERANCE:
        return "holds", delta, p
    return "inconclusive", delta, p


def _share(part: list[float], whole: list[float], floor: list[float]) -> tuple[str, float,
                                                                                float]:
    """Whether ``part`` keeps most (``MOST``) of ``whole``'s gain over ``floor``: the verdict,
    the share kept, and the p-value that ``part`` beats ``floor``. Holds where the share is at
    least MOST and part is significantly above floor; fails where the share is below MOST and
    whole is significantly above part; else (or when whole gains nothing over floor)
    inconclusive."""
    gain = float(np.mean(whole) - np.mean(floor))
    kept = float(np.mean(part) - np.mean(floor))
    share = kept / gain if gain > 0 else math.nan
    p = one_sided(part, floor)
    if math.isnan(share) or math.isnan(p):
        return "inconclusive", share, p
    if share >= MOST and p < ALPHA:
        return "holds", share, p
    if share < MOST and one_sided(whole, part) < ALPHA:
        return "fails", share, p
    return "inconclusive", share, p


def claims(main: list[Cell], curve: list[Cell]) -> list[dict[str, Any]]:
    """A row per claim and task (and one per claim over all tasks): the evidence, the test, its
    p-value and the verdict."""
    by = {(c.task, c.method, c.size): c for c in [*main, *curve]}
    rows: list[dict[str, Any]] = []

    def scores(task: str, method: str, size: int | None = None) -> list[float] | None:
        cell = by.get((task, method, size))
        return cell.scores() if cell else None

    def add(claim: int, task: str, outcome: tuple[str, float, float], evidence: str,
            test: str) -> None:
        rows.append({"claim": claim, "task": task, "verdict": outcome[0],
                     "p_value": outcome[2], "evidence": evidence,
                     "test": f"Welch's t-test, one-sided: {test}"})

    tasks = list(dict.fromkeys(c.task for c in main))
    for task in tasks:
        metric = next(c.metric for c in main if c.task == task)
        bitfit, full = scores(task, "bitfit"), scores(task, "full")
        qm2, frozen, rand = (scores(task, m) for m in ("bitfit_qm2", "frozen", "rand"))
        for claim, other in ((1, "full"), (2, "lora")):
            theirs = scores(task, other)
            if bitfit and theirs:
                outcome = _competitive(bitfit, theirs)
                add(claim, task, outcome, f"main table: bitfit {np.mean(bitfit):.4f} vs {other} "
                    f"{np.mean(theirs):.4f} {metric} ({outcome[1]:+.4f})", f"{other} > bitfit")
        if qm2 and bitfit and frozen:
            outcome = _share(qm2, bitfit, frozen)
            kept = (f"keeps {outcome[1]:.0%} of bitfit's gain over frozen" if
                    not math.isnan(outcome[1]) else "has no gain of bitfit's to keep: bitfit "
                    "does not beat frozen")
            add(3, task, outcome, f"main table: qm2 {kept} ({np.mean(qm2):.4f} vs "
                f"{np.mean(bitfit):.4f}, frozen {np.mean(frozen):.4f})", "qm2 > frozen")
        if bitfit and full and frozen:
            outcome = _share(bitfit, full, frozen)
            extra = (f"; rand {np.mean(rand):.4f}, p(bitfit > rand) = "
                     f"{one_sided(bitfit, rand):.4f}" if rand else "")
            gets = (f"gets {outcome[1]:.0%} of full fine-tuning's gain over frozen" if
                    not math.isnan(outcome[1]) else "has no gain to share: full fine-tuning "
                    f"({np.mean(full):.4f}) does not beat frozen ({np.mean(frozen):.4f})")
            add(4, task, outcome, f"main table: bitfit (0.1% of the weights) {gets}{extra}",
                "bitfit > frozen")
    if curve:
        task = curve[0].task
        largest = max(c.size or 0 for c in curve)
        bitfit, lora = scores(task, "bitfit", largest), scores(task, "lora", largest)
        if bitfit and lora:
            outcome = _competitive(bitfit, lora)
            add(2, f"{task} at {largest:,}", outcome, f"size curve, largest size: bitfit "
                f"{np.mean(bitfit):.4f} vs lora {np.mean(lora):.4f} ({outcome[1]:+.4f})",
                "lora > bitfit")
    overall = []
    for claim in sorted({row["claim"] for row in rows}):
        verdicts = [row["verdict"] for row in rows if row["claim"] == claim]
        verdict = ("holds" if all(v == "holds" for v in verdicts)
                   else "fails" if verdicts.count("fails") > verdicts.count("holds")
                   else "inconclusive")
        overall.append({"claim": claim, "task": "all", "verdict": verdict, "p_value": math.nan,
                        "evidence": f"holds on {verdicts.count('holds')}, fails on "
                                    f"{verdicts.count('fails')}, inconclusive on "
                                    f"{verdicts.count('inconclusive')} of {len(verdicts)}",
                        "test": "every row above holds: holds; more fail than hold: fails"})
    return rows + overall


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


def bias_movement(base: BaseModel, cells: list[Cell]) -> pd.DataFrame:
    """The mean absolute change of every bias term per layer, from the artifacts of the BitFit
    (all biases) runs against the pre-trained values, averaged over seeds and tasks: a row per
    term and layer (``layer`` -1 for the terms outside the layers)."""
    import re

    from bitfit.artifacts import load_artifact
    from bitfit.biases import TERMS, select_biases

    base.restore()
    pristine = {n: p.detach() for n, p in base.encoder.named_parameters()}
    where = {}  # each bias tensor's (term, layer); -1 outside the layers
    for term, names in select_biases(pristine, base.family, "all").items():
        for n in names:
            found = re.search(r"(?:^|\.)layer\.(\d+)\.", n)
            where[f"encoder.{n}"] = (term, int(found.group(1)) if found else -1)
    rows = []
    for cell in cells:
        for run in cell.runs if cell.method == "bitfit" else []:
            _, tensors = load_artifact(run.artifact)
            for name, value in tensors.items():
                if name in where:
                    term, layer = where[name]
                    change = (value.float() - pristine[name.removeprefix("encoder.")].float()
                              ).abs().mean()
                    rows.append({"term": term, "layer": layer, "task": cell.task,
                                 "seed": run.seed, "change": float(change)})
    table = pd.DataFrame(rows, columns=["term", "layer", "task", "seed", "change"])
    order = {t: i for i, t in enumerate(TERMS)}
    averaged = table.groupby(["term", "layer"], as_index=False)["change"].mean()
    return averaged.sort_values(["term", "layer"], key=lambda s: s.map(order) if s.name == "term"
                                else s).reset_index(drop=True)


def movement_matrix(movement: pd.DataFrame) -> pd.DataFrame:
    """The per-layer terms x layers matrix of the heatmap."""
    from bitfit.biases import TERMS

    layered = movement[movement["layer"] >= 0]
    matrix = layered.pivot(index="term", columns="layer", values="change")
    return matrix.reindex([t for t in TERMS if t in matrix.index])


def ranking(movement: pd.DataFrame) -> pd.DataFrame:
    """The terms by their mean change over layers, largest first."""
    ranked = movement.groupby("term", as_index=False)["change"].mean()
    return ranked.sort_values("change", ascending=False).reset_index(drop=True)


# --------------------------------------------------------------------------- the report


def model_description(base: BaseModel) -> str:
    """What the model is, in a sentence or two, and for the bundled one why CoLA differs."""
    from bitfit.models import BUNDLED

    config = base.encoder.config
    text = (f"Model: `{base.model_id}` ({config.model_type}, {config.num_hidden_layers} layers, "
            f"hidden size {config.hidden_size}, {base.num_parameters / 1e6:.1f}M parameters), "
            f"read through {base.pooling} pooling.")
    if base.model_id == BUNDLED:
        text += (" It is a sentence-embedding model (all-MiniLM-L6-v2): its encoder was "
                 "trained for mean-pooled sentence similarity, not as a masked language model as "
                 "the paper's BERT was, and its BERT pooler was never trained. Meaning is what "
                 "its embeddings hold, so BitFit learns sentiment (SST-2) and similarity (STS-B) "
                 "on it; grammatical acceptability (CoLA) is not in them, so bias changes alone "
                 "learn CoLA hardly at all, where full fine-tuning, which can change every "
                 "weight, gets some way. Claims 1 and 4 are therefore expected to fail on CoLA "
                 "with this model, and that is a finding about the model, not a flaw of the "
                 "check.")
    return text


def _markdown_table(frame: pd.DataFrame, columns: dict[str, Callable[[Any], str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(fmt(row) for fmt in columns.values()) + " |")
    return "\n".join(lines)


def _layer_columns(layers: list[int]) -> dict[str, Callable[[Any], str]]:
    def cell(layer: int) -> Callable[[Any], str]:
        return lambda x: f"{x[layer]:.5f}"

    columns: dict[str, Callable[[Any], str]] = {"term": lambda x: str(x["term"])}
    columns.update({f"layer {layer}": cell(layer) for layer in layers})
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
    """The main metric on the selection split of always predicting the training split's most
    frequent label: what a model that learnt only the label prior scores (NaN for regression,
    where a constant has no correlation)."""
    from bitfit.metrics import compute_metrics

    if data.task.is_regression:
        return math.nan
    labels = data.evals[data.selection_split].labels
    common = np.bincount(data.train.labels.astype(int)).argmax()
    return float(compute_metrics(data.task, np.full(len(labels), common), labels)[
        data.task.main_metric])


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
    ax.set_title("mean |change| of each bias term (BitFit, all biases)")
    fig.colorbar(image, ax=ax)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def finish(r: _Run, main: list[Cell], curve: list[Cell], seconds: float) -> dict[str, Any]:
    """The tables, plots and claims; the report written under the run home and to the parent
    MLflow run; the summary."""
    s = r.s
    budget = BUDGETS[r.c.budget]
    table = main_table(main)
    curve_table = main_table(curve) if curve else pd.DataFrame()
    movement = bias_movement(r.base, main)
    matrix = movement_matrix(movement) if len(movement) else pd.DataFrame()
    ranked = ranking(movement) if len(movement) else pd.DataFrame()
    verdicts = claims(main, curve)
    majority = {task: majority_score(r.data(task, samples=s["max_train_samples"], heldout=False))
                for task in dict.fromkeys(c.task for c in main)}
    folder = r.folder
    table.to_csv(folder / "main_table.csv", index=False)
    pd.DataFrame(verdicts).to_csv(folder / "claims.csv", index=False)
    written = ["report.md", "summary.json", "main_table.csv", "claims.csv"]  # this call's files
    if len(curve_table):
        curve_table.to_csv(folder / "size_curve.csv", index=False)
        _plot_curve(curve_table, folder / "size_curve.png")
        written += ["size_curve.csv", "size_curve.png"]
    if len(matrix):
        movement.to_csv(folder / "bias_movement.csv", index=False)
        _plot_heatmap(matrix, folder / "bias_heatmap.png")
        written += ["bias_movement.csv", "bias_heatmap.png"]
    cross = crossing(curve_table) if len(curve_table) else None
    fmt = {"task": lambda x: str(x["task"]), "method": lambda x: str(x["method"]),
           "seeds": lambda x: str(x["seeds"]),
           "mean ± std [95% CI]": lambda x: f"{x['mean']:.4f} ± {x['std']:.4f} "
                                            f"[{x['ci_low']:.4f}, {x['ci_high']:.4f}]",
           "lr": lambda x: f"{x['learning_rate']:g}",
           "trainable": lambda x: f"{x['trainable_params']:,} "
                                  f"({100 * x['trainable_fraction']:.3f}%)",
           "s/epoch": lambda x: f"{x['seconds_per_epoch']:.1f}"}
    lines = [f"# BitFit's claims on `{r.base.model_id}`", "", model_description(r.base), "",
             f"Budget `{budget.name}`: {budget.about}. This run: {s['max_train_samples'] or 'all'}"
             f" training examples per task, {s['epochs']} epochs, {s['grid_points']} learning "
             f"rates per method (a grid study on 10% carved from train), {s['seeds']} seeds; "
             + (f"dev capped at {s['max_eval_samples']} examples; " if s["max_eval_samples"]
                else "whole dev sets; ") + f"{seconds / 60:.1f} minutes in this call.", "",
             *([f"Custom task `{r.c.custom}`: trained on `{r.c.train_file}`, scored on "
                f"`{r.c.dev_file}` ({'regression, Pearson' if r.c.regression else 'accuracy'})."
                , ""] if r.c.own.given else []),
             "## Main table: dev score, mean ± std over seeds", "", _grid(table, majority), "",
             "*majority class*: always predicting the training split's most frequent label; a "
             "method near it has learnt little beyond the label prior.", "",
             _markdown_table(table, fmt), ""]
    if len(curve_table):
        lines += [f"## Data-size curve: {curve_table['task'].iloc[0]}", "",
                  _markdown_table(curve_table, {"size": lambda x: f"{x['size']:,}", **fmt}), "",
                  "BitFit and full fine-tuning cross at about "
                  f"{cross:,.0f} training examples." if cross else
                  "BitFit and full fine-tuning do not cross over these sizes.", "",
                  "![size curve](size_curve.png)", ""]
    if len(matrix):
        lines += ["## Which biases move", "",
                  "Mean absolute change of each bias term per layer, BitFit on all biases, "
                  "averaged over seeds and tasks:", "",
                  _markdown_table(matrix.reset_index(), _layer_columns(list(matrix.columns))),
                  "", "Ranking (mean over layers):", "",
                  _markdown_table(ranked, {"term": lambda x: str(x["term"]),
                                           "mean change": lambda x: f"{x['change']:.5f}"}), "",
                  "![bias heatmap](bias_heatmap.png)", ""]
    claim_text = {1: "small-to-medium data: BitFit is competitive with full fine-tuning",
                  2: "larger data: BitFit is competitive with another sparse method (LoRA)",
                  3: "the qm2 subset (query + first MLP layer) keeps most of BitFit's gain",
                  4: "fine-tuning mostly exposes knowledge: BitFit gets most of full "
                     "fine-tuning's gain"}
    lines += ["## Claims", "",
              f"Verdicts at α = {ALPHA}; competitive = within {TOLERANCE} of the other and not "
              f"significantly behind; most = at least {MOST:.0%}.", "",
              "| claim | task | evidence | test | p | verdict |", "|---|---|---|---|---|---|"]
    for row in verdicts:
        p = "" if math.isnan(row["p_value"]) else f"{row['p_value']:.4f}"
        lines.append(f"| {row['claim']}. {claim_text[row['claim']]} | {row['task']} | "
                     f"{row['evidence']} | {row['test']} | {p} | **{row['verdict']}** |")
    text = "\n".join(lines) + "\n"
    (folder / "report.md").write_text(text)
    summary = {"name": r.name, "model": r.base.model_id, "budget": budget.name,
               "report": str(folder / "report.md"), "markdown": text,
               "mlflow_run_id": r.root, "experiment_id": r.experiment_id,
               "tracking_uri": mask_url(r.tracker.tracking_uri), "seconds": seconds,
               "main_table": table.to_dict(orient="records"),
               "size_curve": curve_table.to_dict(orient="records"), "crossing": cross,
               "bias_ranking": ranked.to_dict(orient="records"), "majority": majority,
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
