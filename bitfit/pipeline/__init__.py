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

Its names load their module on first use (PEP 562): ``from bitfit.pipeline import Config`` reads
the options without torch, so a command line answers ``--help`` and its mistakes at once.
"""

from __future__ import annotations

from bitfit.lazy import lazy_names

# each module of this package -> the public names it defines
__all__, __getattr__, __dir__ = lazy_names(__name__, {
    "config": ("Config EXTRA_METHODS ExtraMethod HELDOUT_FRACTION OwnData Pooling QUICK "
               "QUICK_SEEDS SEEDS SIDE_BY_SIDE_MIN_WORK SelectOn _check_extra resolve_task"),
    "summaries": ("EvaluationSummary Report RunSummary STDERR StudySummary Summary pareto_text "
                  "print_report print_summary summary_markdown typed"),
    "phases": "_direct evaluate final_data final_evaluation load_model preload prepare run",
    "checks": ("check_device check_evaluation check_length check_search check_shared_stores "
               "check_stores named_experiment worker_device"),
    "studies": ("default_study_name read_study_summary search_study side_processes study_data "
                "study_summary trial_count trial_processes"),
    "evaluation": "evaluate_studies evaluation_configs evaluation_name study_sizes",
})
