"""The options of the pipeline's commands, in one place for ``bitfit search|evaluate|prepare``
(which run the pipeline here, without Prefect) and ``python flows/*.py`` (which run it as Prefect
flows): each ``*_arguments`` adds the flags to a parser, and ``config`` turns the parsed flags
into the ``bitfit.pipeline.Config`` they ask for.
"""

from __future__ import annotations

import argparse

from bitfit.pipeline import EXTRA_METHODS, Config, OwnData
from bitfit.settings import POOLINGS, home_dir


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="cola", help="GLUE task (cola, sst2, mrpc, stsb, "
                        "qqp, mnli, qnli, rte, wnli)")
    parser.add_argument("--model", "--model-name-or-path", default=None,
                        help="local folder or Hub id (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--data-dir", default=None, help="GLUE folder (default: "
                        "$BITFIT_GLUE_DIR, else the Hub)")
    parser.add_argument("--pooling", default="auto", choices=POOLINGS, help="how the head "
                        "reads the encoder (default: what the checkpoint was trained for)")
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--max-length", "--max-seq-length", type=int, default=None,
                        help="tokens per example (default: the space's, else 128)")
    parser.add_argument("--home", default=str(home_dir()), help="run home (default: "
                        "$BITFIT_HOME, else ./runs)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (with "
                        "--workers K on n GPUs, worker i takes GPU i mod n)")
    own_data_arguments(parser, test_help="a labelled test file: the final evaluation scores "
                       "every seed on it too; no study ever sees it")


def own_data_arguments(parser: argparse.ArgumentParser, *, test_help: str | None) -> None:
    """The flags of a user's own files (``bitfit train``, the pipeline's commands and
    ``bitfit reproduce``, which has no test file)."""
    own = parser.add_argument_group("your own data (a custom task named by --task)")
    own.add_argument("--train-file", default=None, help="training file (.csv, .tsv or "
                     "tab-separated .txt, .json, .jsonl, .parquet)")
    own.add_argument("--dev-file", "--validation-file", default=None, help="evaluation file")
    if test_help:
        own.add_argument("--test-file", default=None, help=test_help)
    own.add_argument("--text-columns", default="sentence", help="one or two comma-separated "
                     "text columns")
    own.add_argument("--label-column", default="label", help="the label column")
    own.add_argument("--regression", action="store_true", help="a float target")
    own.add_argument("--columns", default=None, help="comma-separated column names of CSV/TSV "
                     "files without a header row, e.g. sentence,label")


def own_data(args: argparse.Namespace) -> OwnData:
    """The own-data flags as the pipeline's ``OwnData``."""
    return OwnData.of(args)


def config(args: argparse.Namespace) -> Config:
    """The pipeline's config the parsed flags ask for."""
    fields = {**vars(args), "extra_methods": tuple(getattr(args, "extra_methods", ())),
              "baseline": not getattr(args, "no_baseline", False)}
    return Config.of(fields)


def _stores(parser: argparse.ArgumentParser, experiment: str | None = None) -> None:
    parser.add_argument("--storage", default=None, help="Optuna storage URL (default: "
                        "$BITFIT_OPTUNA_STORAGE, else sqlite:///<home>/optuna.db)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: "
                        "$MLFLOW_TRACKING_URI, else sqlite:///<home>/mlflow.db)")
    default = experiment or ("bitfit-<task>; a store whose experiment <task> holds bitfit "
                             "runs already keeps using it")
    parser.add_argument("--experiment", default=experiment,
                        help=f"the MLflow experiment (default: {default})")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _promote(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--promote", action="store_true", help="make the registered model's new "
                        "version champion even where it does not beat the champion on the "
                        "same data (default: champion only if it does; else challenger)")


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
    parser.add_argument("--seeds", type=int, default=None, help="seeds per method in the final "
                        "evaluation (default 5, with --quick 3; 0: stop after the studies)")
    parser.add_argument("--extra-methods", nargs="*", default=[], choices=EXTRA_METHODS,
                        help="also evaluate head-only and the random baseline")
    parser.add_argument("--quick", action="store_true", help="the quick preset: spaces quick "
                        "and full_ft_quick (2,000 training examples throughout, 500 held out) "
                        "and 3 seeds")
    parser.add_argument("--workers", type=int, default=1, help="run each study as this many "
                        "worker runs on the Prefect work pool (python flows/search.py only; "
                        "needs PostgreSQL storage, an MLflow server and the deployments of "
                        "infra/prefect.yaml)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per worker "
                        "(default: this machine's cores shared among the workers)")
    parser.add_argument("--eval-processes", type=int, default=None, help="final runs trained "
                        "at once (default: one per core on a CPU, up to 4; 1: one after another)")
    parser.add_argument("--trial-processes", type=int, default=None, help="trials run side by "
                        "side in local processes sharing the study (default: one per core on a "
                        "CPU, up to 4, once trials x training rows >= 4,000; 1: one after "
                        "another in this process)")
    _promote(parser)


def evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the final evaluation alone (``bitfit evaluate``, ``flows/evaluate.py``)."""
    _common(parser)
    _stores(parser)
    parser.add_argument("--bitfit-study", required=True, help="the BitFit study to evaluate")
    parser.add_argument("--full-study", default=None, help="the full fine-tuning study")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--extra-methods", nargs="*", default=[], choices=EXTRA_METHODS)
    parser.add_argument("--eval-processes", "--processes", type=int, default=None,
                        help="runs trained at once (default: one per core on a CPU, up to 4)")
    _promote(parser)


def prepare_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of data preparation (``bitfit prepare``, ``flows/prepare.py``)."""
    _common(parser)


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in _names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--curve-sizes takes whole numbers separated by "
                                         f"commas, e.g. 100,1000,10000; got {text!r}") from None


def reproduce_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``bitfit reproduce`` and ``python flows/reproduce.py``."""
    from bitfit.reproduce import BUDGETS, CURVE_METHODS, EXPERIMENT, METHODS

    parser.add_argument("--budget", default="small", choices=tuple(BUDGETS),
                        help="small: a 2-core CPU in at most an hour with the bundled model "
                        "(capped samples and trials, stated in the report); paper: whole "
                        "training sets and the paper's grids, for a GPU and a masked-LM BERT")
    parser.add_argument("--tasks", type=_names, default=None, help="comma-separated GLUE "
                        "tasks (default: the budget's: "
                        + "; ".join(f"{b.name} {','.join(b.tasks)}" for b in BUDGETS.values())
                        + "), and at most one custom task's name, read from --train-file and "
                        "--dev-file")
    parser.add_argument("--methods", type=_names, default=tuple(METHODS), help="comma-"
                        f"separated methods (default: {','.join(METHODS)})")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per cell (default: "
                        "the budget's)")
    parser.add_argument("--max-train-samples", type=int, default=None, help="training "
                        "examples per task (default: the budget's)")
    parser.add_argument("--max-eval-samples", type=int, default=None, help="dev examples "
                        "scored (default: all; fewer only for a quick look)")
    parser.add_argument("--epochs", type=int, default=None, help="every method trains this "
                        "many epochs (default: each method's recipe in the budget)")
    parser.add_argument("--max-steps", type=int, default=None, help="every method trains this "
                        "many optimiser steps (default: each method's recipe in the budget)")
    parser.add_argument("--grid-points", type=int, default=None, help="learning rates tried "
                        "per method and task (default: the budget's)")
    parser.add_argument("--curve-task", default="sst2", help="the task of the data-size curve "
                        f"({', '.join(CURVE_METHODS)} at log-spaced training sizes); 'none' for "
                        "no curve")
    parser.add_argument("--curve-sizes", type=_sizes, default=None, help="comma-separated "
                        "training sizes (default: the budget's)")
    parser.add_argument("--curve-seeds", type=int, default=None)
    parser.add_argument("--model", "--model-name-or-path", default=None,
                        help="local folder or Hub id (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--pooling", default="auto", choices=POOLINGS)
    parser.add_argument("--data-dir", default=None, help="GLUE folder (default: "
                        "$BITFIT_GLUE_DIR, else the Hub)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--processes", type=int, default=1, help="a cell's seeds trained at "
                        "once, each in a process of its own (default 1: one after another in "
                        "this process; a cell is small and a process start costs more than it "
                        "gains on it)")
    parser.add_argument("--name", default=None, help="the reproduction's name: the same name "
                        "resumes it (default: from the model, budget and settings)")
    parser.add_argument("--home", default=str(home_dir()), help="run home (default: "
                        "$BITFIT_HOME, else ./runs)")
    _stores(parser, EXPERIMENT)
    own_data_arguments(parser, test_help=None)


# each pipeline command and what adds its flags (``bitfit <command>``, ``flows/<command>.py``)
ARGUMENTS = {"search": search_arguments, "evaluate": evaluate_arguments,
             "prepare": prepare_arguments, "reproduce": reproduce_arguments}


def parser(command: str, doc: str) -> argparse.ArgumentParser:
    """The parser of ``python flows/<command>.py``, described by the first line of ``doc``."""
    from bitfit.flags import Parser

    made = Parser(description=doc.splitlines()[0])
    ARGUMENTS[command](made)
    return made


def reproduce_config(args: argparse.Namespace):
    """The reproduction's config the parsed flags ask for."""
    from bitfit.reproduce import ReproduceConfig

    fields = {**vars(args), "curve_task": None if args.curve_task in ("", "none")
              else args.curve_task}
    return ReproduceConfig.of(fields)
