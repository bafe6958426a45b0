"""The pipeline's config: every option of a run, typed, its presets, and the task it names."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from bitfit.checks import device_name, positive
from bitfit.methods import BASELINES

QUICK = {"space": "quick", "baseline_space": "full_ft_quick"}
SEEDS = 5  # final runs per method without --seeds
QUICK_SEEDS = 3  # ... with the quick preset
# the choices of the options that have few (the deployment form offers them)
SelectOn = Literal["heldout", "dev"]
Pooling = Literal["auto", "pooler", "cls", "mean"]
ExtraMethod = Literal["frozen", "rand"]
EXTRA_METHODS = BASELINES  # the controls a search can train beside BitFit (bitfit.methods)
HELDOUT_FRACTION = 0.1  # `bitfit prepare`'s validation split (a study's: data.heldout_size)
SIDE_BY_SIDE_MIN_WORK = 4_000  # trials x training rows from which trials run side by side


@dataclasses.dataclass(frozen=True)
class OwnData:
    """A user's own labelled files instead of a GLUE task (all None/defaults: GLUE)."""

    train_file: str | None = None
    dev_file: str | None = None
    text_columns: str = "sentence"  # one or two, comma-separated
    label_column: str = "label"
    regression: bool = False
    columns: str | None = None  # comma-separated names for files without a header row
    test_file: str | None = None  # scored by the final evaluation only; never selected on

    @classmethod
    def of(cls, source: Any) -> OwnData:
        """The own-data fields of a config or parsed flags (one it lacks keeps its default)."""
        return cls(**{f.name: getattr(source, f.name) for f in dataclasses.fields(cls)
                      if hasattr(source, f.name)})

    @property
    def given(self) -> bool:
        return bool(self.train_file or self.dev_file or self.test_file)

    def digest(self) -> str:
        """A short digest of the files a study searches on and how they are read: a changed
        file is another study (the test file, which no study sees, is not part of it)."""
        import hashlib

        h = hashlib.sha256(repr((self.text_columns, self.label_column, self.regression,
                                 self.columns)).encode())
        for path in (self.train_file, self.dev_file):
            h.update(Path(str(path)).read_bytes())
        return h.hexdigest()[:8]


NO_OWN_DATA = OwnData()  # a GLUE task


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run of the pipeline needs, each field an option of ``bitfit search`` and a
    parameter of the flows (``--help`` explains each). ``run``, ``evaluate`` and ``prepare``
    take one; the command line, the flows, the deployments and the tests all build theirs here.

        summary = pipeline.run(pipeline.Config(task="sst2", quick=True, seeds=3))
    """

    # the data: a GLUE task, or a custom task named ``task`` read from the user's files
    task: str = "cola"
    data_dir: str | None = None  # a GLUE folder (default $BITFIT_GLUE_DIR, else the Hub)
    train_file: str | None = None
    dev_file: str | None = None
    test_file: str | None = None
    text_columns: str = "sentence"
    label_column: str = "label"
    regression: bool = False
    columns: str | None = None
    max_train_samples: int | None = None  # default: the space's sample size (studies), all
    max_length: int | None = None  # default: the space's (studies), else 128
    # the model and where it trains
    model: str | None = None  # default: the bundled all-MiniLM-L6-v2
    pooling: Pooling = "auto"
    device: str = "auto"
    threads: int | None = None  # CPU threads per worker
    # the studies
    space: str = "bitfit"
    baseline_space: str = "full_ft"
    quick: bool = False  # the spaces of QUICK instead
    n_trials: int | None = None  # default: the space's budget
    select_on: SelectOn = "heldout"
    study_name: str | None = None  # default: default_study_name
    baseline: bool = True
    baseline_study: str | None = None  # reuse this full fine-tuning study
    workers: int = 1
    # the final evaluation
    seeds: int | None = None  # default: SEEDS (QUICK_SEEDS with the quick preset)
    extra_methods: tuple[ExtraMethod, ...] = ()
    eval_processes: int | None = None
    trial_processes: int | None = None  # default: trial_processes()
    promote: bool = False  # the new version is champion whatever it scores (bitfit.champion)
    # the stores
    storage: str | None = None  # default: $BITFIT_OPTUNA_STORAGE, else the home's SQLite
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else the home's SQLite
    home: str | None = None  # default: $BITFIT_HOME, else ./runs
    experiment: str | None = None  # MLflow's; default: Tracker.task_experiment (bitfit-<task>)

    def __post_init__(self) -> None:
        """The checks of its values alone, made whenever a config is made (the command line,
        a flow's parameters, a script): counts, choices and the device's name. What needs files,
        stores or the model is checked by ``check_search``/``check_evaluation``, and the seeds
        by each command (a search may stop after its studies with 0, an evaluation may not)."""
        positive(n_trials=self.n_trials, workers=self.workers, threads=self.threads,
                 eval_processes=self.eval_processes, trial_processes=self.trial_processes,
                 max_train_samples=self.max_train_samples)
        if self.select_on not in ("heldout", "dev"):
            raise ValueError(f"--select-on must be heldout or dev, got {self.select_on!r}")
        _check_extra(self.extra_methods)
        device_name(self.device)

    @classmethod
    def of(cls, parameters: dict[str, Any]) -> Config:
        """A config from a flow's or a command's parameters (names not in the config, such as
        the studies an evaluation compares, are left out)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in parameters.items() if k in names})

    @property
    def own(self) -> OwnData:
        return OwnData.of(self)

    def resolved(self) -> Config:
        """The home as a path ($BITFIT_HOME, else ./runs), the quick preset's spaces and the
        number of seeds."""
        from bitfit.settings import home_dir

        space, baseline_space = ((QUICK["space"], QUICK["baseline_space"]) if self.quick
                                 else (self.space, self.baseline_space))
        seeds = self.seeds if self.seeds is not None else (
            QUICK_SEEDS if self.quick else SEEDS)
        return dataclasses.replace(self, home=str(home_dir(self.home)), space=space,
                                   baseline_space=baseline_space, seeds=seeds,
                                   extra_methods=tuple(self.extra_methods))


def _check_extra(extra_methods: tuple[str, ...]) -> None:
    for method in extra_methods:
        if method not in EXTRA_METHODS:
            raise ValueError(f"extra method {method!r} is not one of "
                             f"{', '.join(EXTRA_METHODS)}")


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(c.strip() for c in (text or "").split(",") if c.strip())


def resolve_task(task: str, own: OwnData = NO_OWN_DATA):
    """The task: a GLUE task by name, or a custom task named ``task`` read from the user's
    files (whose existence and columns are checked here, before anything loads)."""
    from bitfit.data import DataSourceError
    from bitfit.tasks import custom_task, load_task

    if not own.given:
        return load_task(task)
    if not (own.train_file and own.dev_file):
        raise ValueError("a custom task needs both --train-file and --dev-file"
                         + (" (--test-file is scored besides them)" if own.test_file else ""))
    for path in (own.train_file, own.dev_file, own.test_file):
        if path is not None and not Path(path).is_file():
            raise DataSourceError(f"data file {path!r} does not exist: check the path")
    texts, columns = _names(own.text_columns), _names(own.columns)
    missing = [c for c in (*texts, own.label_column) if columns and c not in columns]
    if missing:
        raise ValueError(f"--columns {own.columns} has no column {missing[0]!r}: name it there, "
                         "or fix --text-columns / --label-column")
    custom = custom_task(task, text_columns=texts, label_column=own.label_column,
                         regression=own.regression, columns=columns)
    if own.test_file:  # its labels and its overlap with train and dev, before any work
        from bitfit.data import load_splits

        load_splits(custom, train_file=own.train_file, dev_file=own.dev_file,
                    test_file=own.test_file)
    return custom
