"""Data preparation flow: load a task's splits and tokenise them into the run home's cache.

    python flows/prepare.py --task cola --data-dir ../shared/data/glue

The cache is keyed by its inputs (data, tokenizer, max length), so a second run, or the search
flow after this one, reads the tokenised splits back instead of tokenising again.
"""

from __future__ import annotations

import argparse
import json
import sys

from bitfit.entry import run_command
from bitfit.settings import quiet_environment

quiet_environment()  # before Prefect reads its settings

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from bitfit import pipeline  # noqa: E402
from bitfit.commands import prepare_arguments, prepare_request  # noqa: E402


def as_task(fn, *args, **kwargs):
    """Run one phase of the pipeline as a Prefect task of its own (inputs are models and
    tokenised data, so Prefect's input cache is off; the data cache is the library's)."""
    return task(fn, cache_policy=NO_CACHE)(*args, **kwargs)


@flow(name="bitfit-prepare")
def prepare(task: str = "cola", model: str | None = None, data_dir: str | None = None,
            max_length: int = 128, max_train_samples: int | None = None,
            validation_fraction: float | None = pipeline.HELDOUT_FRACTION,
            home: str | None = None, train_file: str | None = None,
            dev_file: str | None = None, text_columns: str = "sentence",
            label_column: str = "label", regression: bool = False,
            columns: str | None = None) -> dict:
    """Prepare a task's data for a search; returns the split sizes."""
    return pipeline.prepare(task=task, model=model, data_dir=data_dir, max_length=max_length,
                            max_train_samples=max_train_samples,
                            validation_fraction=validation_fraction, home=home,
                            train_file=train_file, dev_file=dev_file,
                            text_columns=text_columns, label_column=label_column,
                            regression=regression, columns=columns, phase=as_task)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    prepare_arguments(parser)
    args = parser.parse_args(argv)
    return run_command(lambda: prepare(**prepare_request(args)),
                       show=lambda r: print(json.dumps(r)))


if __name__ == "__main__":
    sys.exit(main())
