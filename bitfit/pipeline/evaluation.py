"""The final evaluation: which configurations it compares, and training each with each seed."""

from __future__ import annotations

import dataclasses

from bitfit.data import TaskData
from bitfit.models import BaseModel
from bitfit.pipeline.config import _check_extra
from bitfit.pipeline.summaries import STDERR, EvaluationSummary, Report
from bitfit.services import mask_url


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
                     tracking_uri: str, home: str, name: str, experiment: str | None = None,
                     processes: int | None = None,
                     device: str = "auto", max_train_samples: int | None = None,
                     promote: bool = False, report: Report = STDERR) -> EvaluationSummary:
    """Train each method's best configuration with each seed; the comparison.
    Each seed trains on its own sample of as many rows as the BitFit study trained on
    (``max_train_samples`` when given), or on all of ``data.train`` when that is no more. The
    best BitFit seed is registered, champion where it wins or with ``promote``
    (``bitfit.champion``)."""
    from bitfit.compare import compare, verdict_markdown
    from bitfit.tracking import Tracker

    studied, held = study_sizes(storage, bitfit_study)
    trained_on = max_train_samples or studied
    configs = evaluation_configs(storage, bitfit_study=bitfit_study, full_study=full_study,
                                 extra_methods=extra_methods, task=data.task.name,
                                 train_samples=trained_on if 0 < trained_on < len(data.train)
                                 else None)
    comparison = compare(base, data, configs, seeds=seeds, home=home, name=name,
                         tracker=Tracker(tracking_uri, home=home), experiment=experiment,
                         processes=processes, device=device, log=report.line, promote=promote,
                         selected_on="heldout" if held else "dev",
                         progress=lambda done, total: report.progress(
                             f"evaluation {name}", done, total))
    return EvaluationSummary(
        table=comparison.markdown, test_table=comparison.test_markdown, task=data.task.name,
        tracking_uri=mask_url(tracking_uri), experiment_id=comparison.experiment_id,
        registered_model=comparison.registered_model,
        registration=comparison.registration.as_dict() if comparison.registration else None,
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
