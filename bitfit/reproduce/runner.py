"""The reproduction's runner: each cell's study and seeds trained (or read back when an earlier
call finished it), the analysis of the finished cells, and the report and summary sent to the
parent MLflow run (and through ``phase`` and ``report`` to Prefect)."""

from __future__ import annotations

import dataclasses
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
from bitfit.pipeline import STDERR, Report, _direct, load_model
from bitfit.pool import kept
from bitfit.reproduce.cells import Cell, _cell_file, _load_cell, _save_cell
from bitfit.reproduce.config import (BUDGETS, CURVE_METHODS, METHODS, Recipe,
                                     ReproduceConfig, check, default_name)
from bitfit.reproduce.report import markdown, write_files
from bitfit.reproduce.stats import (Analysis, bias_movement, claims, crossing, main_table,
                                    majority_score, movement_matrix, pareto, ranking,
                                    term_ablation)
from bitfit.services import mask_url
from bitfit.train import TrainConfig


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


@kept()  # with processes > 1, one pool serves every cell
def run(config: ReproduceConfig = ReproduceConfig(), *,  # noqa: B008 (frozen)
        phase: Callable[..., Any] = _direct,
        report: Report = STDERR) -> dict[str, Any]:
    """The whole reproduction: the main table, the size curve, which biases move, the claims
    and the report; its summary, JSON-ready. Finished cells of an earlier run with the same
    name are kept.

    A cell's seeds train one after another in this process by default (``processes`` 1): with
    2 processes per cell, as the final evaluation of ``bitfit search`` does, the small budget
    took 60.7 minutes, and a cell that trains almost nothing (``frozen`` on 500 SST-2 examples)
    still took 40 s: each cell started its processes anew, each loading the model (how much of
    the 40 s that was is not measured). The processes now serve every cell of a run
    (``pool.kept``); that run has not been timed again."""
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



def finish(r: _Run, main: list[Cell], curve: list[Cell], seconds: float) -> dict[str, Any]:
    """The tables, plots and claims; the report written under the run home and to the parent
    MLflow run; the summary."""
    a = _analyse(r, main, curve)
    written = write_files(a, r.folder)
    text = markdown(a, config=r.c, base=r.base, settings=r.s, seconds=seconds)
    (r.folder / "report.md").write_text(text)
    summary = _summary(r, a, text, seconds)
    (r.folder / "summary.json").write_text(json.dumps(
        {k: v for k, v in summary.items() if k != "markdown"}, indent=1, default=str))
    r.tracker.end_report(r.root, r.folder, written)
    return summary


def _analyse(r: _Run, main: list[Cell], curve: list[Cell]) -> Analysis:
    """Every table of the report, from the finished cells."""
    table = main_table(main)
    curve_table = main_table(curve) if curve else pd.DataFrame()
    tasks = list(dict.fromkeys(c.task for c in main))
    finals = {task: r.data(task, study=False) for task in tasks}
    majority = {task: majority_score(finals[task]) for task in tasks}
    movement = bias_movement(r.base, main)
    ablation = r.phase(term_ablation, r.base, finals, main, device=r.c.device)
    return Analysis(
        table=table, curve=curve_table, majority=majority, movement=movement,
        ablation=ablation,
        matrix=movement_matrix(movement) if len(movement) else pd.DataFrame(),
        ranked=ranking(movement) if len(movement) else pd.DataFrame(),
        verdicts=claims(main, curve, majority), front=pareto(table),
        crossing=crossing(curve_table) if len(curve_table) else None)


def _summary(r: _Run, a: Analysis, text: str, seconds: float) -> dict[str, Any]:
    """The run's summary, JSON-ready."""
    return {"name": r.name, "model": r.base.model_id, "budget": BUDGETS[r.c.budget].name,
            "report": str(r.folder / "report.md"), "markdown": text,
            "mlflow_run_id": r.root, "experiment_id": r.experiment_id,
            "tracking_uri": mask_url(r.tracker.tracking_uri), "seconds": seconds,
            "main_table": a.table.to_dict(orient="records"),
            "size_curve": a.curve.to_dict(orient="records"), "crossing": a.crossing,
            "bias_ranking": a.ranked.to_dict(orient="records"),
            "term_ablation": a.ablation.to_dict(orient="records"),
            "pareto": a.front.to_dict(orient="records"), "majority": a.majority,
            "claims": a.verdicts, "settings": r.s, "home": r.c.home}
