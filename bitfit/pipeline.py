"""The pipeline's rules as library calls: what a request must satisfy before any work, how a study
is named and what data it searches on, which configurations the final evaluation compares, and
the summaries the commands print. The Prefect flows in ``flows/`` wrap these calls in tasks and
hold no rule of their own.

    from bitfit import pipeline

    config = pipeline.Config(task="sst2", quick=True, seeds=3)      # every option, typed
    summary = pipeline.run(config)                                 # studies, evaluation, report
    pipeline.print_summary(summary)
    pipeline.evaluate(config, bitfit_study=summary["study_name"])  # the evaluation again
    pipeline.prepare(pipeline.Config(task="mine", train_file="t.tsv", dev_file="d.tsv",
                                     columns="sentence,label"))    # tokenise ahead
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from bitfit.data import TaskData
from bitfit.entry import at_least, positive, writable_folder
from bitfit.models import BaseModel
from bitfit.services import mask_url

QUICK = {"space": "quick", "baseline_space": "full_ft_quick"}
SEEDS = 5  # final runs per method without --seeds
QUICK_SEEDS = 3  # ... with the quick preset
# the choices of the options that have few (the deployment form offers them)
SelectOn = Literal["heldout", "dev"]
Pooling = Literal["auto", "pooler", "cls", "mean"]
ExtraMethod = Literal["frozen", "rand"]
EXTRA_METHODS = ("frozen", "rand")
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
    # the stores
    storage: str | None = None  # default: $BITFIT_OPTUNA_STORAGE, else the home's SQLite
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else the home's SQLite
    home: str | None = None  # default: $BITFIT_HOME, else ./runs

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


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(c.strip() for c in (text or "").split(",") if c.strip())


def resolve_task(task: str, own: OwnData = OwnData()):
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


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


class Report:
    """Where a run tells what it is doing. This one writes progress lines to stderr; the flows
    pass one that also writes to the Prefect run (its logs, a progress bar and result
    artifacts)."""

    def line(self, text: str) -> None:
        _stderr(text)

    def progress(self, what: str, done: int, total: int) -> None:
        """``done`` of ``total`` trials of a study, or final runs of an evaluation."""

    def finished(self, summary: Any) -> None:
        """The run ended: its summary (``run``'s ``RunSummary``, ``evaluate``'s
        ``EvaluationSummary``, or a reproduction's dict)."""


STDERR = Report()


# --------------------------------------------------------------------------- checks


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
    import re

    import torch

    if device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", device):
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda"):
        count = torch.cuda.device_count()
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= count:
            raise ValueError(f"--device {device} asks for a GPU, and torch sees {count} here: "
                             "use --device auto or cpu, or a GPU that exists")


def worker_device(device: str, index: int, gpus: int) -> str:
    """The device of worker ``index`` of several on a machine with ``gpus`` GPUs: GPU
    ``index mod gpus`` when the device is ``auto`` or ``cuda``; a named one (``cpu``,
    ``cuda:N``) is kept."""
    if device in ("auto", "cuda") and gpus > 0:
        return f"cuda:{index % gpus}"
    return device


def _check_extra(extra_methods: tuple[str, ...]) -> None:
    for method in extra_methods:
        if method not in EXTRA_METHODS:
            raise ValueError(f"extra method {method!r} is not one of "
                             f"{', '.join(EXTRA_METHODS)}")


def check_search(config: Config) -> Config:
    """Everything about a search that can be checked before any model or data is loaded:
    counts, the task, the spaces and their objective, the device, the home, and the stores
    (each must answer within seconds). Returns the config resolved (``Config.resolved``) with
    the storage URL and tracking URI to use, without secrets."""
    from bitfit.compare import check_not_starting
    from bitfit.space import check_metric, load_space

    check_not_starting()
    c = config.resolved()
    positive(n_trials=c.n_trials, workers=c.workers, threads=c.threads,
             eval_processes=c.eval_processes, trial_processes=c.trial_processes,
             max_train_samples=c.max_train_samples)
    check_length(c.model, c.max_length)
    seeds = c.seeds
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 0:
        raise ValueError(f"--seeds must be a whole number, 0 (stop after the studies) or more, "
                         f"got {seeds!r}")
    if c.select_on not in ("heldout", "dev"):
        raise ValueError(f"--select-on must be heldout or dev, got {c.select_on!r}")
    _check_extra(c.extra_methods)
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
    from bitfit.compare import check_not_starting

    check_not_starting()
    c = config.resolved()
    positive(seeds=c.seeds, eval_processes=c.eval_processes,
             max_train_samples=c.max_train_samples)
    check_length(c.model, c.max_length)
    _check_extra(c.extra_methods)
    check_device(c.device)
    resolve_task(c.task, c.own)
    assert c.home is not None
    storage, tracking_uri = check_stores(c.storage, c.tracking_uri, c.home)
    return dataclasses.replace(c, storage=storage, tracking_uri=tracking_uri)


# --------------------------------------------------------------------------- studies


def default_study_name(task: str, space: str, samples: int | None, select_on: str,
                       own: OwnData = OwnData()) -> str:
    """The default name of a study: task (with a digest of the user's files for a custom
    task, so a changed file never resumes another file's study), space, sample size and
    selection split."""
    return "-".join([task] + ([own.digest()] if own.given else []) + [space]
                    + ([f"n{samples}"] if samples else []) + (["dev"] if select_on == "dev"
                                                              else []))


def study_data(base: BaseModel, config: Config, space) -> TaskData:
    """The data a study searches on: the space's sample size unless the config gives one, and a
    held-out split carved from the whole training split first unless it selects on dev
    (``data.heldout_size`` rows: the final runs never train on them; the test file stays
    unseen)."""
    from bitfit.data import prepare

    own = config.own
    samples = config.max_train_samples or space.max_train_samples
    return prepare(resolve_task(config.task, own), base.tokenizer, data_dir=config.data_dir,
                   train_file=own.train_file, dev_file=own.dev_file,
                   max_length=config.max_length or space.max_length, max_train_samples=samples,
                   heldout_rows="auto" if config.select_on == "heldout" else None,
                   cache_dir=Path(str(config.home)) / "cache")


def search_study(base: BaseModel, data: TaskData, *, space: str, n_trials: int | None,
                 storage: str, tracking_uri: str, study_name: str, home: str,
                 run_params: dict[str, Any], device: str = "auto", processes: int = 1,
                 report: Report = STDERR) -> StudySummary:
    """Run (or resume) a study, every trial recorded in MLflow; its summary.

    ``processes`` > 1 runs its trials side by side in that many local processes sharing the
    cores and the study (each its own trial, the storage deciding which trials remain); their
    trial lines go to stderr."""
    study = {"space": space, "storage": storage, "study_name": study_name, "home": home,
             "n_trials": n_trials, "tracking_uri": tracking_uri, "run_params": run_params,
             "device": device}

    def here() -> Any:
        return _study_loop(base, data, study, log=report.line,
                           progress=lambda done, total: report.progress(
                               f"study {study_name}", done, total))

    if processes > 1:
        from bitfit.compare import in_processes

        before = trial_count(storage, study_name)
        report.line(f"study {study_name}: trials side by side in {processes} processes")
        others = [(_study_in_process, (study,))] * (processes - 1)
        for _ in in_processes(base, data, processes - 1, others, meanwhile=here):
            pass
        return read_study_summary(data, storage=storage, tracking_uri=tracking_uri,
                                  study_name=study_name, home=home, before=before)
    outcome = here()
    return study_summary(outcome.study, outcome.experiment_id, outcome.ran, data,
                         storage=storage, tracking_uri=tracking_uri, home=home)


def _study_loop(base: BaseModel, data: TaskData, study: dict[str, Any], *,
                log: Callable[[str], None],
                progress: Callable[[int, int], None] | None = None) -> Any:
    """``run_study`` on the study ``search_study`` describes (its keyword arguments)."""
    from bitfit.space import load_space
    from bitfit.study import run_study
    from bitfit.tracking import Tracker

    return run_study(base, data, load_space(study["space"]), storage=study["storage"],
                     study_name=study["study_name"], home=study["home"],
                     n_trials=study["n_trials"],
                     tracker=Tracker(study["tracking_uri"], home=study["home"]),
                     run_params=study["run_params"], device=study["device"], log=log,
                     progress=progress)


def _study_in_process(study: dict[str, Any]) -> None:
    """In a process of ``search_study``: trials of the shared study until its budget is spent."""
    import optuna

    from bitfit.compare import worker_state

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our trial lines say it all
    _study_loop(*worker_state(), study, log=STDERR.line)


def trial_processes(config: Config, data: TaskData, budget: int) -> int:
    """How many processes run a study's trials side by side: ``config.trial_processes``, or by
    default one per core on a CPU (at most 4 and at most the budget) once the study is worth
    a process start (a few seconds each): ``budget`` x training rows >= 4,000, as in the quick
    preset."""
    from bitfit.compare import default_processes

    if config.trial_processes is not None:
        return config.trial_processes
    if budget * len(data.train) < SIDE_BY_SIDE_MIN_WORK:
        return 1
    return default_processes(config.device, budget)


def trial_count(storage: str, study_name: str) -> int:
    """How many trials the study has (0 when it does not exist yet)."""
    import optuna

    try:
        return len(optuna.load_study(study_name=study_name, storage=storage).trials)
    except KeyError:
        return 0


def read_study_summary(data: TaskData, *, storage: str, tracking_uri: str, study_name: str,
                       home: str, before: int) -> StudySummary:
    """The summary of a study that other workers ran, read back from the storage and MLflow."""
    import optuna

    from bitfit.tracking import Tracker

    study = optuna.load_study(study_name=study_name, storage=storage)
    parent = study.user_attrs.get("mlflow_parent_run_id")
    experiment_id = (Tracker(tracking_uri, home=home).client.get_run(parent).info.experiment_id
                     if parent else None)
    return study_summary(study, experiment_id, len(study.trials) - before, data,
                         storage=storage, tracking_uri=tracking_uri, home=home)


def study_summary(study, experiment_id: str | None, ran: int, data: TaskData, *, storage: str,
                  tracking_uri: str, home: str) -> StudySummary:
    """What a study found."""
    from optuna.trial import TrialState

    from bitfit.report import pareto_front
    from bitfit.tracking import trade_off, ui_command

    best = study.best_trial if study.get_trials(states=[TrialState.COMPLETE]) else None
    points = trade_off(study)
    front = [{"trial": label, "trainable_params": int(cost), "value": value}
             for i, (label, cost, value) in enumerate(points)
             if i in pareto_front([(c, v) for _, c, v in points])]
    table = [{"trial": t.number, "state": t.state.name, data.task.main_metric: t.value,
              **t.params, "seconds": None if t.duration is None
              else round(t.duration.total_seconds(), 1)} for t in study.trials]
    return StudySummary(
        study_name=study.study_name, task=data.task.name, storage=mask_url(storage),
        tracking_uri=mask_url(tracking_uri), experiment_id=experiment_id,
        mlflow_parent_run_id=study.user_attrs.get("mlflow_parent_run_id"),
        trials_run=ran, trials=len(study.trials), selection_split=data.selection_split,
        metric=data.task.main_metric,
        best_value=None if best is None else best.value,
        best_params=None if best is None else best.params,
        best_trial=None if best is None else best.number,
        mlflow_ui=ui_command(tracking_uri, home),
        trial_table=table, pareto=sorted(front, key=lambda p: p["trainable_params"]))


# --------------------------------------------------------------------------- final evaluation


def study_sizes(storage: str, study_name: str) -> tuple[int, int | None]:
    """How many rows a study trained on, and how many it held out of the training split to
    select on (None when it selected on dev): the final runs leave out the same rows and
    train on samples of the same size."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage)
    attrs = study.user_attrs
    held = attrs.get("selection_examples") if attrs.get("selection_split") == "heldout" else None
    return int((attrs.get("identity") or {}).get("train_examples", 0)), held


def evaluation_configs(storage: str, *, bitfit_study: str, full_study: str | None,
                       extra_methods: tuple[str, ...], task: str,
                       train_samples: int | None = None) -> dict:
    """The configurations compared: each study's best, and the baselines ``frozen`` and
    ``rand`` on the BitFit configuration (``rand`` as many weights as its subset has); with
    ``train_samples``, each seed trains on its own sample of that many rows (the same rows for
    every method with that seed)."""
    from bitfit.compare import best_config

    _check_extra(extra_methods)
    configs = {"bitfit": best_config(storage, bitfit_study, method="bitfit", task=task)}
    if full_study:
        configs["full"] = best_config(storage, full_study, method="full", task=task)
    for method in extra_methods:
        configs[method] = dataclasses.replace(configs["bitfit"], method=method)
    return {label: dataclasses.replace(c, train_samples=train_samples)
            for label, c in configs.items()}


def evaluate_studies(base: BaseModel, data: TaskData, *, storage: str, bitfit_study: str,
                     full_study: str | None, seeds: int, extra_methods: tuple[str, ...],
                     tracking_uri: str, home: str, name: str, processes: int | None = None,
                     device: str = "auto", max_train_samples: int | None = None,
                     report: Report = STDERR) -> EvaluationSummary:
    """Train each method's best configuration with each seed; the comparison.
    Each seed trains on its own sample of as many rows as the BitFit study trained on
    (``max_train_samples`` when given), or on all of ``data.train`` when that is no more."""
    from bitfit.compare import compare, verdict_markdown
    from bitfit.tracking import Tracker

    trained_on = max_train_samples or study_sizes(storage, bitfit_study)[0]
    configs = evaluation_configs(storage, bitfit_study=bitfit_study, full_study=full_study,
                                 extra_methods=extra_methods, task=data.task.name,
                                 train_samples=trained_on if 0 < trained_on < len(data.train)
                                 else None)
    comparison = compare(base, data, configs, seeds=seeds, home=home, name=name,
                         tracker=Tracker(tracking_uri, home=home), processes=processes,
                         device=device, log=report.line,
                         progress=lambda done, total: report.progress(
                             f"evaluation {name}", done, total))
    return EvaluationSummary(
        table=comparison.markdown, test_table=comparison.test_markdown, task=data.task.name,
        tracking_uri=mask_url(tracking_uri), experiment_id=comparison.experiment_id,
        registered_model=comparison.registered_model,
        verdict=dataclasses.asdict(comparison.verdict) if comparison.verdict else None,
        verdict_text=(verdict_markdown(comparison.verdict, data.task.main_metric,
                                       comparison.majority) if comparison.verdict else ""),
        majority_class=comparison.majority, report=str(comparison.folder),
        evaluation_run_id=comparison.parent_run_id, best_artifact=comparison.best_artifact,
        recipe=comparison.recipe(),
        runs={f"{r.method}-seed{r.seed}": r.metrics for r in comparison.runs},
        test_runs=({f"{r.method}-seed{r.seed}": r.test_metrics for r in comparison.runs}
                   if comparison.test_markdown else None))


def evaluation_name(bitfit_study: str, full_study: str | None, seeds: int) -> str:
    return f"{bitfit_study}-vs-{full_study or 'none'}-s{seeds}"


# --------------------------------------------------------------------------- summaries


@dataclasses.dataclass
class StudySummary:
    """What a study found (``as_dict``: JSON-ready, as ``run`` returns it)."""

    study_name: str
    task: str
    storage: str
    tracking_uri: str
    experiment_id: str | None
    mlflow_parent_run_id: str | None
    trials_run: int
    trials: int
    selection_split: str
    metric: str
    best_value: float | None
    best_params: dict[str, Any] | None
    best_trial: int | None
    mlflow_ui: str
    trial_table: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    pareto: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @classmethod
    def of(cls, summary: dict[str, Any]) -> StudySummary:
        """A study's summary from its dict (keys it does not know are left out)."""
        return cls(**_known(cls, summary))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def pareto_text(self) -> str:
        """The study's Pareto front of score against trainable parameters, in a line."""
        return ("Pareto front (no trial scores higher with as few trainable parameters): "
                + "; ".join(f"{p['trial']}: {p['trainable_params']:,} parameters, {self.metric} "
                            f"{p['value']:.4f}" for p in self.pareto))

    def _params(self, joint: str) -> str:
        return ", ".join(f"{k}{joint}{v}" for k, v in (self.best_params or {}).items())

    def lines(self) -> list[str]:
        """Its best trial as the commands print it."""
        if self.best_value is None:
            return [f"study {self.study_name}: no trial completed yet"]
        lines = [f"study {self.study_name}: best {self.metric} on {self.selection_split} "
                 f"{self.best_value:.4f} (trial {self.best_trial}: {self._params('=')}); "
                 f"{self.trials} trials in {self.storage}"]
        return lines + ([f"  {self.pareto_text()}"] if len(self.pareto or []) > 1 else [])

    def markdown_lines(self) -> list[str]:
        """Its best trial as a Markdown list item."""
        if self.best_value is None:
            return [f"- study `{self.study_name}`: no trial completed yet"]
        lines = [f"- study `{self.study_name}`: best {self.metric} on {self.selection_split} "
                 f"**{self.best_value:.4f}** (trial {self.best_trial}: {self._params(' = ')}) "
                 f"of {self.trials} trials"]
        return lines + ([f"  - {self.pareto_text()}"] if len(self.pareto or []) > 1 else [])


@dataclasses.dataclass
class EvaluationSummary:
    """What a final evaluation found (``as_dict``: JSON-ready, as ``evaluate`` returns it)."""

    table: str
    test_table: str | None
    task: str
    tracking_uri: str
    experiment_id: str | None
    registered_model: str | None
    verdict: dict[str, Any] | None
    verdict_text: str
    majority_class: Any
    report: str
    evaluation_run_id: str | None
    best_artifact: str | None
    recipe: str
    runs: dict[str, dict[str, float]]
    test_runs: dict[str, dict[str, float]] | None = None  # with a test file only
    prefect_flow_run: dict[str, Any] | None = None  # set by a flow's report

    @classmethod
    def of(cls, summary: dict[str, Any]) -> EvaluationSummary:
        """An evaluation's summary from its dict."""
        return cls(**_known(cls, summary))

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {k: v for k, v in data.items()
                if v is not None or k not in ("test_runs", "prefect_flow_run")}

    def lines(self) -> list[str]:
        """The comparison table, the test, and how to use the best artifact, as printed."""
        lines = [self.table]
        if self.test_table:
            lines.append(f"\non the test file:\n{self.test_table}\n")
        if self.verdict_text:
            lines.append(self.verdict_text.replace("**", ""))
        lines.append(f"report, table and plots: {self.report}")
        if self.registered_model:
            lines.append(f"registered in MLflow as {self.registered_model}")
        if self.best_artifact:
            lines += [f"best BitFit seed's artifact: {self.best_artifact}; use it with:",
                      self.recipe]
        return lines

    def markdown_lines(self) -> list[str]:
        """The comparison, the test and the registered model, as a Markdown section."""
        lines = ["", "## Final evaluation", "", self.table]
        if self.test_table:
            lines += ["", "### On the test file", "", self.test_table]
        if self.verdict_text:
            lines += ["", self.verdict_text]
        if self.registered_model:
            lines += ["", f"The best BitFit seed is the MLflow model `{self.registered_model}`:",
                      "", "```python", "import mlflow, pandas as pd",
                      f"model = mlflow.pyfunc.load_model(\"{self.registered_model}\")",
                      "print(model.predict(pd.DataFrame({\"sentence\": [\"The cat sat on the "
                      "mat.\"]})))", "```"]
        return lines + ["", f"Report, table and plots: `{self.report}`"]

    def markdown(self) -> str:
        return _markdown(self.task, [], self)


@dataclasses.dataclass
class RunSummary:
    """What ``run`` found: the BitFit study, the baseline study and the final evaluation
    (``as_dict``: JSON-ready, the study's fields with ``baseline`` and ``evaluation``)."""

    study: StudySummary
    baseline: StudySummary | None = None
    evaluation: EvaluationSummary | None = None
    prefect_flow_run: dict[str, Any] | None = None  # set by a flow's report

    @classmethod
    def of(cls, summary: dict[str, Any]) -> RunSummary:
        """A run's summary from its dict."""
        baseline, evaluation = summary.get("baseline"), summary.get("evaluation")
        return cls(StudySummary.of(summary), baseline and StudySummary.of(baseline),
                   evaluation and EvaluationSummary.of(evaluation),
                   summary.get("prefect_flow_run"))

    def as_dict(self) -> dict[str, Any]:
        parts = {"baseline": self.baseline and self.baseline.as_dict(),
                 "evaluation": self.evaluation and self.evaluation.as_dict(),
                 "prefect_flow_run": self.prefect_flow_run}
        return {**self.study.as_dict(), **{k: v for k, v in parts.items() if v is not None}}

    @property
    def task(self) -> str:
        return self.study.task

    @property
    def studies(self) -> list[StudySummary]:
        return [s for s in (self.study, self.baseline) if s is not None]

    def lines(self) -> list[str]:
        """The studies' best trials, the comparison, and where MLflow and Prefect show it."""
        lines = [line for study in self.studies for line in study.lines()]
        if self.evaluation:
            lines += ["", *self.evaluation.lines(), ""]
        lines.append(f"MLflow: search run {self.study.mlflow_parent_run_id}"
                     + (f", evaluation run {self.evaluation.evaluation_run_id}"
                        if self.evaluation else "") + f" in {self.study.tracking_uri}")
        lines.append(f"see it: {self.study.mlflow_ui}")
        prefect_run = self.prefect_flow_run or {}
        if prefect_run.get("ui"):
            lines.append(f"Prefect: flow run {prefect_run['name']} at {prefect_run['ui']}")
        elif prefect_run:
            lines.append(f"Prefect: flow run {prefect_run['name']} ran on Prefect's temporary "
                         "API, which ends with this command (set PREFECT_API_URL to a Prefect "
                         "server to keep its runs)")
        return lines

    def markdown(self) -> str:
        return _markdown(self.task, self.studies, self.evaluation)


def _known(cls: type, summary: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in summary.items() if k in names}


def _markdown(task: str, studies: list[StudySummary],
              evaluation: EvaluationSummary | None) -> str:
    """A run's result in Markdown: each study's best trial, the comparison table, the test, and
    the registered model."""
    lines = [f"# {task}: BitFit and full fine-tuning", ""]
    for study in studies:
        lines += study.markdown_lines()
    if evaluation:
        lines += evaluation.markdown_lines()
    return "\n".join(lines) + "\n"


Summary = RunSummary | EvaluationSummary


def typed(summary: Summary | dict[str, Any]) -> Summary:
    """A summary as its type: ``run``'s (a study's fields), or ``evaluate``'s (a table)."""
    if not isinstance(summary, dict):
        return summary
    return EvaluationSummary.of(summary) if "table" in summary else RunSummary.of(summary)


# --------------------------------------------------------------------------- printing


def summary_markdown(summary: Summary | dict[str, Any]) -> str:
    """A run's result in Markdown (``run``'s summary, or ``evaluate``'s comparison): each
    study's best trial, the comparison table, the test, and the registered model."""
    return typed(summary).markdown()


def pareto_text(study: StudySummary | dict[str, Any]) -> str:
    """The study's Pareto front of score against trainable parameters, in a line."""
    return (study if isinstance(study, StudySummary) else StudySummary.of(study)).pareto_text()


def print_report(summary: EvaluationSummary | dict[str, Any]) -> None:
    """The comparison table, the test, and how to use the best artifact."""
    evaluation = summary if isinstance(summary, EvaluationSummary) else EvaluationSummary.of(
        summary)
    print("\n".join(evaluation.lines()))


def print_summary(summary: RunSummary | dict[str, Any]) -> None:
    """The studies' best trials, the comparison, and where MLflow shows it all."""
    print("\n".join((summary if isinstance(summary, RunSummary)
                     else RunSummary.of(summary)).lines()))


# --------------------------------------------------------------------------- phases and the run


def _direct(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def load_model(model: str | None, pooling: str = "auto") -> BaseModel:
    """The base model, loaded once for a whole run."""
    from transformers.utils import logging as hf_logging

    from bitfit.models import load_base

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return load_base(model, pooling=pooling)


def final_data(base: BaseModel, config: Config, max_length: int,
               heldout_rows: int | None = None) -> TaskData:
    """The training split less the ``heldout_rows`` a study selected on (the same rows: the
    carve is seeded), dev, and the test file when there is one: what the final runs train on
    (each seed its own sample when the study trained on one: ``evaluation_configs``) and
    score."""
    from bitfit.data import prepare

    own = config.own
    return prepare(resolve_task(config.task, own), base.tokenizer, data_dir=config.data_dir,
                   train_file=own.train_file, dev_file=own.dev_file, test_file=own.test_file,
                   max_length=max_length, heldout_rows=heldout_rows, heldout_split=False,
                   cache_dir=Path(str(config.home)) / "cache")


def run(config: Config = Config(), *, phase: Callable[..., Any] = _direct,
        on_workers: Callable[..., StudySummary] | None = None,
        report: Report = STDERR) -> dict[str, Any]:
    """The whole pipeline: prepare -> BitFit study -> full fine-tuning study -> final
    evaluation -> report; its summary, JSON-ready (``RunSummary.as_dict``).

    Args:
        config: the run's settings; checked whole (``check_search``) before anything loads.
        phase: runs each phase, ``phase(fn, *args, **kwargs)``; a flow passes one that makes
            each phase a Prefect task. By default the phases simply run.
        on_workers: ``on_workers(config, data)`` runs the study ``config`` names as
            ``config.workers`` workers elsewhere (a Prefect work pool) and returns its summary;
            needed when ``workers`` > 1.
        report: where progress lines, progress and the finished summary go (stderr).
    """
    from bitfit.space import load_space

    c = check_search(config)
    if c.workers > 1 and on_workers is None:
        raise ValueError(f"--workers {c.workers} runs each study on a Prefect work pool: run it "
                         "with python flows/search.py or the bitfit-search deployment")
    parsed = load_space(c.space)  # a bad file failed above, before any work
    samples = c.max_train_samples or parsed.max_train_samples
    if c.threads:
        import torch

        torch.set_num_threads(c.threads)
    name = c.study_name or default_study_name(c.task, parsed.name, samples, c.select_on, c.own)
    base = phase(load_model, c.model, c.pooling)
    data = phase(study_data, base, c, parsed)
    run_params = {"model": base.model_id, "pooling": base.pooling, "data_source": data.source}

    def stage(data: TaskData, space: str, trials: int | None, study: str,
              samples: int | None) -> StudySummary:
        if c.workers > 1:
            assert on_workers is not None
            return on_workers(dataclasses.replace(
                c, space=space, n_trials=trials, study_name=study, baseline=False, seeds=0,
                quick=False, threads=c.threads or max(1, (os.cpu_count() or 1) // c.workers)),
                data)
        assert c.storage is not None and c.tracking_uri is not None and c.home is not None
        processes = trial_processes(c, data, trials or load_space(space).n_trials)
        return phase(search_study, base, data, space=space, n_trials=trials, storage=c.storage,
                     tracking_uri=c.tracking_uri, study_name=study, home=c.home,
                     run_params={**run_params, "max_train_samples": samples,
                                 "train_examples": len(data.train)}, device=c.device,
                     processes=processes, report=report)

    summary = RunSummary(stage(data, c.space, c.n_trials, name, samples))
    full_study = c.baseline_study if c.baseline else None
    if c.baseline and not c.baseline_study:
        full_space = load_space(c.baseline_space)
        full_samples = c.max_train_samples or full_space.max_train_samples
        full_study = f"{name}-{full_space.name}"
        same = full_samples == samples and (c.max_length
                                            or full_space.max_length == parsed.max_length)
        full_data = data if same else phase(study_data, base, c, full_space)
        summary.baseline = stage(full_data, c.baseline_space, None, full_study, full_samples)
    if c.seeds > 0 and summary.study.best_value is not None:
        final = phase(final_data, base, c, c.max_length or parsed.max_length,
                      study_sizes(c.storage, name)[1])
        summary.evaluation = phase(final_evaluation, base, final, c, name, full_study, report)
    report.finished(summary)
    return summary.as_dict()


def final_evaluation(base: BaseModel, data: TaskData, c: Config, bitfit_study: str,
                     full_study: str | None, report: Report) -> EvaluationSummary:
    assert c.storage is not None and c.tracking_uri is not None and c.home is not None
    return evaluate_studies(base, data, storage=c.storage, bitfit_study=bitfit_study,
                            full_study=full_study, seeds=c.seeds,
                            extra_methods=c.extra_methods, tracking_uri=c.tracking_uri,
                            home=c.home, name=evaluation_name(bitfit_study, full_study, c.seeds),
                            processes=c.eval_processes, device=c.device,
                            max_train_samples=c.max_train_samples, report=report)


def evaluate(config: Config = Config(), *, bitfit_study: str, full_study: str | None = None,
             phase: Callable[..., Any] = _direct, report: Report = STDERR) -> dict[str, Any]:
    """The final evaluation alone: the best configuration of ``bitfit_study`` (and of
    ``full_study``) with ``config.seeds`` seeds on the whole training split, compared on dev
    (and on the test file); the comparison, JSON-ready (``EvaluationSummary.as_dict``)."""
    c = check_evaluation(config)
    assert c.storage is not None
    from bitfit.compare import best_config

    best_config(c.storage, bitfit_study, method="bitfit")  # it exists, with a completed trial
    base = phase(load_model, c.model, c.pooling)
    data = phase(final_data, base, c, c.max_length or 128, study_sizes(c.storage, bitfit_study)[1])
    comparison = phase(final_evaluation, base, data, c, bitfit_study, full_study, report)
    report.finished(comparison)
    return comparison.as_dict()


def prepare(config: Config = Config(), *, validation_fraction: float | None = HELDOUT_FRACTION,
            phase: Callable[..., Any] = _direct) -> dict[str, Any]:
    """Tokenise a task's splits into the run home's cache; the split sizes."""
    from bitfit.data import prepare as prepare_splits

    c = config.resolved()
    positive(max_train_samples=c.max_train_samples)
    check_length(c.model, c.max_length or 128)
    writable_folder(c.home, "--home (or $BITFIT_HOME)")
    own = c.own
    the_task = resolve_task(c.task, own)
    base = phase(load_model, c.model, c.pooling)
    data = phase(prepare_splits, the_task, base.tokenizer, data_dir=c.data_dir,
                 train_file=own.train_file, dev_file=own.dev_file, test_file=own.test_file,
                 max_length=c.max_length or 128, max_train_samples=c.max_train_samples,
                 validation_fraction=validation_fraction,
                 cache_dir=Path(str(c.home)) / "cache")
    return {"task": data.task.name, "train": len(data.train),
            **{split: len(enc) for split, enc in data.evals.items()}, "source": data.source}
