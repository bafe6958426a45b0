"""The options of the pipeline's commands, in one place for ``bitfit search|evaluate|prepare``
(which run the pipeline here, without Prefect) and ``python flows/*.py`` (which run it as Prefect
flows): each ``*_arguments`` adds the flags to a parser, each ``*_request`` turns the parsed
flags into the keyword arguments of ``bitfit.pipeline``'s call (and of the flow).
"""

from __future__ import annotations

import argparse
from typing import Any

from bitfit.pipeline import EXTRA_METHODS
from bitfit.settings import home_dir


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="cola", help="GLUE task (cola, sst2, mrpc, stsb, "
                        "qqp, mnli, qnli, rte, wnli)")
    parser.add_argument("--model", "--model-name-or-path", default=None,
                        help="local folder or Hub id (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--data-dir", default=None, help="GLUE folder (default: "
                        "$BITFIT_GLUE_DIR, else the Hub)")
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--home", default=str(home_dir()), help="run home (default: "
                        "$BITFIT_HOME, else ./runs)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (with "
                        "--workers K on n GPUs, worker i takes GPU i mod n)")
    own = parser.add_argument_group("your own data (a custom task named by --task)")
    own.add_argument("--train-file", default=None, help="training file (.csv, .tsv or "
                     "tab-separated .txt, .json, .jsonl, .parquet)")
    own.add_argument("--dev-file", "--validation-file", default=None, help="evaluation file")
    own.add_argument("--text-columns", default="sentence", help="one or two comma-separated "
                     "text columns")
    own.add_argument("--label-column", default="label", help="the label column")
    own.add_argument("--regression", action="store_true", help="a float target")
    own.add_argument("--columns", default=None, help="comma-separated column names of CSV/TSV "
                     "files without a header row, e.g. sentence,label")


def _own(args: argparse.Namespace) -> dict[str, Any]:
    return dict(train_file=args.train_file, dev_file=args.dev_file,
                text_columns=args.text_columns, label_column=args.label_column,
                regression=args.regression, columns=args.columns)


def _stores(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", default=None, help="Optuna storage URL (default: "
                        "$BITFIT_OPTUNA_STORAGE, else sqlite:///<home>/optuna.db)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: "
                        "$MLFLOW_TRACKING_URI, else sqlite:///<home>/mlflow.db)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def search_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the whole pipeline (``bitfit search``, ``python flows/search.py``)."""
    _common(parser)
    _stores(parser)
    parser.add_argument("--space", default="bitfit", help="a search-space YAML, or a shipped "
                        "one: bitfit, full_ft, terms, quick")
    parser.add_argument("--n-trials", type=int, default=None, help="the study's total budget "
                        "(default: the space's)")
    parser.add_argument("--study-name", default=None, help="the same name resumes the study")
    parser.add_argument("--select-on", default="heldout", choices=("heldout", "dev"))
    parser.add_argument("--no-baseline", action="store_true", help="skip full fine-tuning")
    parser.add_argument("--baseline-space", default="full_ft", help="the baseline's space")
    parser.add_argument("--baseline-study", default=None, help="reuse this full fine-tuning "
                        "study (same storage) instead of running one")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per method in the final "
                        "evaluation (0: stop after the studies)")
    parser.add_argument("--extra-methods", nargs="*", default=[], choices=EXTRA_METHODS,
                        help="also evaluate head-only and the random baseline")
    parser.add_argument("--quick", action="store_true", help="the quick preset: spaces quick "
                        "and full_ft_quick (searches on 2,000 examples, one epoch)")
    parser.add_argument("--workers", type=int, default=1, help="run each study as this many "
                        "worker runs on the Prefect work pool (python flows/search.py only; "
                        "needs PostgreSQL storage, an MLflow server and the deployments of "
                        "infra/prefect.yaml)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per worker "
                        "(default: this machine's cores shared among the workers)")
    parser.add_argument("--eval-processes", type=int, default=None, help="final runs trained "
                        "at once (default: one per core on a CPU, up to 4; 1: one after another)")


def search_request(args: argparse.Namespace) -> dict[str, Any]:
    return dict(
        task=args.task, model=args.model, data_dir=args.data_dir, space=args.space,
        n_trials=args.n_trials, storage=args.storage, tracking_uri=args.tracking_uri,
        study_name=args.study_name, max_train_samples=args.max_train_samples,
        select_on=args.select_on, home=args.home, baseline=not args.no_baseline,
        baseline_space=args.baseline_space, baseline_study=args.baseline_study,
        seeds=args.seeds, extra_methods=tuple(args.extra_methods), workers=args.workers,
        quick=args.quick, threads=args.threads, eval_processes=args.eval_processes,
        device=args.device, **_own(args))


def evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the final evaluation alone (``bitfit evaluate``, ``flows/evaluate.py``)."""
    _common(parser)
    _stores(parser)
    parser.add_argument("--bitfit-study", required=True, help="the BitFit study to evaluate")
    parser.add_argument("--full-study", default=None, help="the full fine-tuning study")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--extra-methods", nargs="*", default=[], choices=EXTRA_METHODS)
    parser.add_argument("--processes", type=int, default=None, help="runs trained at once "
                        "(default: one per core on a CPU, up to 4)")


def evaluate_request(args: argparse.Namespace) -> dict[str, Any]:
    return dict(task=args.task, bitfit_study=args.bitfit_study, full_study=args.full_study,
                storage=args.storage, seeds=args.seeds, extra_methods=tuple(args.extra_methods),
                model=args.model, data_dir=args.data_dir,
                max_train_samples=args.max_train_samples, tracking_uri=args.tracking_uri,
                home=args.home, processes=args.processes, device=args.device, **_own(args))


def prepare_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of data preparation (``bitfit prepare``, ``flows/prepare.py``)."""
    _common(parser)
    parser.add_argument("--max-length", "--max-seq-length", type=int, default=128)


def prepare_request(args: argparse.Namespace) -> dict[str, Any]:
    return dict(task=args.task, model=args.model, data_dir=args.data_dir,
                max_length=args.max_length, max_train_samples=args.max_train_samples,
                home=args.home, **_own(args))
