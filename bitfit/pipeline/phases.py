"""The pipeline's phases and the calls that chain them: ``run`` (studies, evaluation, report),
``evaluate`` (the evaluation alone) and ``prepare`` (tokenise ahead)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bitfit.checks import positive, writable_folder
from bitfit.data import TaskData
from bitfit.models import BaseModel
from bitfit.pipeline.checks import (check_evaluation, check_length, check_search,
                                    named_experiment)
from bitfit.pipeline.config import HELDOUT_FRACTION, Config, resolve_task
from bitfit.pipeline.evaluation import evaluate_studies, evaluation_name, study_sizes
from bitfit.pipeline.studies import (default_study_name, search_study, side_processes,
                                     study_data, trial_processes)
from bitfit.pipeline.summaries import STDERR, EvaluationSummary, Report, RunSummary, StudySummary
from bitfit.pool import kept, prestart

DEFAULT = Config()  # every option at its default (a frozen dataclass)


def _direct(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


_PRELOADED: dict[tuple[str | None, str], BaseModel] = {}


def load_model(model: str | None, pooling: str = "auto") -> BaseModel:
    """The base model, loaded once for a whole run (or taken as ``preload`` left it)."""
    base = _PRELOADED.pop((model, pooling), None)
    return base if base is not None else _load(model, pooling)


def preload(model: str | None, pooling: str = "auto", processes: int = 0) -> None:
    """Load the base model ahead, while something else waits (``orchestrate.prefect_started``):
    the next ``load_model`` of the same model takes it. ``processes`` side-by-side processes
    start loading it too (``pool.prestart``; ``side_processes`` says how many a run wants).
    A failure is left to that call, which says it in its phase."""
    try:
        _PRELOADED[(model, pooling)] = base = _load(model, pooling)
    except Exception:  # noqa: BLE001 - load_model raises it again, in its place
        _PRELOADED.pop((model, pooling), None)
        return
    if processes:
        prestart(base, processes)


def _load(model: str | None, pooling: str) -> BaseModel:
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


def _start(c: Config, on_workers: Callable[..., StudySummary] | None) -> None:
    """Several workers need somewhere to run; the CPU threads this process trains with."""
    if c.workers > 1 and on_workers is None:
        raise ValueError(f"--workers {c.workers} runs each study on a Prefect work pool: run it "
                         "with python flows/search.py or the bitfit-search deployment")
    if c.threads:
        import torch

        torch.set_num_threads(c.threads)


@kept()
def run(config: Config = DEFAULT, *, phase: Callable[..., Any] = _direct,
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

    c = named_experiment(check_search(config), report.line)
    _start(c, on_workers)
    parsed = load_space(c.space)  # a bad file failed above, before any work
    samples = c.max_train_samples or parsed.max_train_samples
    name = c.study_name or default_study_name(c.task, parsed.name, samples, c.select_on, c.own)
    base = phase(load_model, c.model, c.pooling)
    prestart(base, side_processes(c))  # unless the flow started them with the model
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
                     experiment=c.experiment,
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
                            experiment=c.experiment,
                            processes=c.eval_processes, device=c.device,
                            max_train_samples=c.max_train_samples, promote=c.promote,
                            report=report)


@kept()
def evaluate(config: Config = DEFAULT, *, bitfit_study: str, full_study: str | None = None,
             phase: Callable[..., Any] = _direct, report: Report = STDERR) -> dict[str, Any]:
    """The final evaluation alone: the best configuration of ``bitfit_study`` (and of
    ``full_study``) with ``config.seeds`` seeds on the whole training split, compared on dev
    (and on the test file); the comparison, JSON-ready (``EvaluationSummary.as_dict``)."""
    c = named_experiment(check_evaluation(config), report.line)
    assert c.storage is not None
    from bitfit.compare import best_config

    best_config(c.storage, bitfit_study, method="bitfit")  # it exists, with a completed trial
    base = phase(load_model, c.model, c.pooling)
    data = phase(final_data, base, c, c.max_length or 128, study_sizes(c.storage, bitfit_study)[1])
    comparison = phase(final_evaluation, base, data, c, bitfit_study, full_study, report)
    report.finished(comparison)
    return comparison.as_dict()


def prepare(config: Config = DEFAULT, *, validation_fraction: float | None = HELDOUT_FRACTION,
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
