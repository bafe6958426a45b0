"""The reproduction's configuration: the methods, the budgets and their recipes, the config of a
run and the checks made before the model loads."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from bitfit.checks import at_least, positive
from bitfit.methods import TABLE
from bitfit.pipeline import OwnData, check_device, check_stores
from bitfit.settings import home_dir
from bitfit.tasks import Task

if TYPE_CHECKING:  # the model code loads when a reproduction runs, not with its options
    from bitfit.models import BaseModel

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
_PAPER_BIAS = Recipe(TABLE["bitfit"].rate_grid, batch_size=8, epochs=16, schedule="constant",
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
                 "lora": Recipe(TABLE["lora"].rate_grid, batch_size=16, epochs=20,
                                warmup_ratio=0.06),
                 "full": Recipe(TABLE["full"].rate_grid, batch_size=32, epochs=3)},
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

