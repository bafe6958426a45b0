"""Data preparation flow: load a task's splits and tokenise them into the run home's cache.

    python flows/prepare.py --task cola --data-dir ../shared/data/glue

The cache is keyed by its inputs (data, tokenizer, max length), so a second run, or the search
flow after this one, reads the tokenised splits back instead of tokenising again.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bitfit.entry import positive, run_command
from bitfit.settings import quiet_environment

quiet_environment()  # before Prefect reads its settings

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from bitfit.settings import home_dir  # noqa: E402


@task(cache_policy=NO_CACHE)
def load_model(model: str | None, pooling: str = "auto"):
    """Load the base model once for the whole flow run."""
    from transformers.utils import logging as hf_logging

    from bitfit.models import load_base

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return load_base(model, pooling=pooling)


@task(cache_policy=NO_CACHE)
def prepare_data(base, task_name: str, *, data_dir: str | None, max_length: int,
                 max_train_samples: int | None, validation_fraction: float | None,
                 home: str):
    """Tokenised splits of the task, from the cache when they were prepared before."""
    from bitfit.data import prepare
    from bitfit.tasks import load_task

    return prepare(load_task(task_name), base.tokenizer, data_dir=data_dir,
                   max_length=max_length, max_train_samples=max_train_samples,
                   validation_fraction=validation_fraction, cache_dir=Path(home) / "cache")


@flow(name="bitfit-prepare")
def prepare(task: str = "cola", model: str | None = None, data_dir: str | None = None,
            max_length: int = 128, max_train_samples: int | None = None,
            validation_fraction: float | None = 0.1, home: str | None = None) -> dict:
    """Prepare a task's data for a search; returns the split sizes."""
    home = str(home_dir(home))  # $BITFIT_HOME, else ./runs
    base = load_model(model)
    data = prepare_data(base, task, data_dir=data_dir, max_length=max_length,
                        max_train_samples=max_train_samples,
                        validation_fraction=validation_fraction, home=home)
    return {"task": data.task.name, "train": len(data.train),
            **{split: len(enc) for split, enc in data.evals.items()}, "source": data.source}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tokenise a task's splits into the cache.")
    parser.add_argument("--task", default="cola")
    parser.add_argument("--model", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--home", default=str(home_dir()))
    args = parser.parse_args(argv)

    def work() -> dict:
        from bitfit.tasks import load_task

        positive(max_train_samples=args.max_train_samples)
        if args.max_length < 8:
            raise ValueError(f"--max-length must be at least 8 tokens, got {args.max_length}")
        load_task(args.task)
        return prepare(task=args.task, model=args.model, data_dir=args.data_dir,
                       max_length=args.max_length, max_train_samples=args.max_train_samples,
                       home=args.home)

    return run_command(work, show=lambda r: print(json.dumps(r)))


if __name__ == "__main__":
    sys.exit(main())
