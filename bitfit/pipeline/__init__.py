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

Its modules, lowest first: ``config`` (the options), ``summaries`` (the report and the results),
``checks``, ``studies``, ``evaluation``, and ``phases`` (``run``, ``evaluate``, ``prepare``).
"""

from bitfit.pipeline.checks import (check_device, check_evaluation, check_length, check_search,
                                    check_shared_stores, check_stores, worker_device)
from bitfit.pipeline.config import (EXTRA_METHODS, HELDOUT_FRACTION, QUICK, QUICK_SEEDS, SEEDS,
                                    SIDE_BY_SIDE_MIN_WORK, Config, ExtraMethod, OwnData, Pooling,
                                    SelectOn, _check_extra, resolve_task)
from bitfit.pipeline.evaluation import (evaluate_studies, evaluation_configs, evaluation_name,
                                        study_sizes)
from bitfit.pipeline.phases import (_direct, evaluate, final_data, final_evaluation, load_model,
                                    prepare, run)
from bitfit.pipeline.studies import (default_study_name, read_study_summary, search_study,
                                     study_data, study_summary, trial_count, trial_processes)
from bitfit.pipeline.summaries import (STDERR, EvaluationSummary, Report, RunSummary,
                                       StudySummary, Summary, pareto_text, print_report,
                                       print_summary, summary_markdown, typed)

__all__ = ["EXTRA_METHODS", "HELDOUT_FRACTION", "QUICK", "QUICK_SEEDS", "SEEDS",
           "SIDE_BY_SIDE_MIN_WORK", "STDERR", "Config", "EvaluationSummary", "ExtraMethod",
           "OwnData", "Pooling", "Report", "RunSummary", "SelectOn", "StudySummary", "Summary",
           "_check_extra", "_direct", "check_device", "check_evaluation", "check_length",
           "check_search", "check_shared_stores", "check_stores", "default_study_name",
           "evaluate", "evaluate_studies", "evaluation_configs", "evaluation_name", "final_data",
           "final_evaluation", "load_model", "pareto_text", "prepare", "print_report",
           "print_summary", "read_study_summary", "resolve_task", "run", "search_study",
           "study_data", "study_sizes", "study_summary", "summary_markdown", "trial_count",
           "trial_processes", "typed", "worker_device"]
