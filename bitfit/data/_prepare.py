"""A task's data made ready to train on: loaded, sampled per seed, a held-out split carved from
train where asked, and tokenised."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import pandas as pd
from sklearn.model_selection import train_test_split

from bitfit.data._readers import HUB_DATASET, glue_folder, load_splits
from bitfit.data._tokenised import Encoded, encode, rows_fingerprint
from bitfit.tasks import Task

HELDOUT = "heldout"  # the name of a validation split carved out of train
HELDOUT_MIN = 500  # a study's held-out split has at least this many rows, where the data allow
HELDOUT_FRACTION = 0.1  # ... or this share of the training rows it uses, whichever is larger


def subsample(frame: pd.DataFrame, n: int | None, *, seed: int = 0) -> pd.DataFrame:
    """A seeded random sample of n rows (all rows when n is None or larger than the frame)."""
    if n is None or n >= len(frame):
        return frame
    if n <= 0:
        raise ValueError(f"a sample size must be > 0, got {n}")
    return frame.sample(n=n, random_state=seed).reset_index(drop=True)


def heldout_size(total: int, samples: int | None = None) -> int:
    """How many training rows a study holds out to select on: ``HELDOUT_MIN`` or
    ``HELDOUT_FRACTION`` of the rows it trains on (``samples``, else all), whichever is larger,
    and never more than half of the ``total`` rows of the split. Fewer rows could not tell two
    learning rates apart: a difference of 0.05 in accuracy is one standard error on 100 rows."""
    used = min(samples or total, total)
    return min(max(HELDOUT_MIN, math.ceil(HELDOUT_FRACTION * used)), total // 2)


def carve_validation(
    task: Task, train: pd.DataFrame, fraction: float | int, *, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a seeded validation set off train, stratified by label for classification:
    ``fraction`` of the rows, or that many rows when it is a whole number."""
    if isinstance(fraction, int):
        if not 0 < fraction < len(train):
            raise ValueError(f"cannot hold out {fraction} of {len(train)} training rows")
    elif not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be between 0 and 1, got {fraction}")
    stratify = None if task.is_regression else train["label"]
    try:
        kept, held = train_test_split(train, test_size=fraction, random_state=seed,
                                      stratify=stratify)
    except ValueError as err:  # too few rows (or rows of a class) to carve a stratified split
        raise ValueError(
            f"cannot carve a {fraction if isinstance(fraction, int) else f'{fraction:.0%}'} "
            f"validation split from {len(train)} training "
            f"examples of task {task.name!r} ({err}): train on more examples "
            "(--max-train-samples) or select on dev (--select-on dev)") from None
    return kept.reset_index(drop=True), held.reset_index(drop=True)


@dataclass(frozen=True)
class TaskData:
    """A task's tokenised splits: ``train`` and the evaluation splits, the first used to select."""

    task: Task
    train: Encoded
    evals: dict[str, Encoded]
    source: str
    max_length: int = 128  # tokens: longer texts were truncated, and a predictor must do the same
    # each evaluation split's rows as read (``rows_fingerprint``): what a score was measured on
    fingerprints: dict[str, str] = field(default_factory=dict)

    @property
    def selection_split(self) -> str:
        return next(iter(self.evals))


def prepare(
    task: Task,
    tokenizer,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    train_file: str | os.PathLike[str] | None = None,
    dev_file: str | os.PathLike[str] | None = None,
    test_file: str | os.PathLike[str] | None = None,
    max_length: int = 128,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    validation_fraction: float | None = None,
    heldout_rows: int | str | None = None,
    heldout_split: bool = True,
    data_seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
) -> TaskData:
    """Load, subsample, optionally carve a validation split, and tokenise a task's data.

    ``max_train_samples`` and ``max_eval_samples`` keep a seeded random sample of train and of
    each dev split (for quick looks; leave them out for results to report).

    With ``validation_fraction`` the evaluation splits start with ``heldout`` (carved from train,
    seeded and stratified), which is what a search should select on, followed by the dev splits.

    With ``heldout_rows`` (``auto``: ``heldout_size``) that many rows are carved from the whole
    training split first (seeded and stratified: the same rows for the same data), and
    ``max_train_samples`` then samples the rest. A study's data start with them as ``heldout``;
    a final evaluation's (``heldout_split`` False) leave them out of training without scoring
    them, so that nothing a study selected on is trained on.
    """
    task, frames = load_splits(task, data_dir=data_dir, train_file=train_file, dev_file=dev_file,
                               test_file=test_file)
    train = frames.pop("train")
    held = None
    if heldout_rows == "auto":
        heldout_rows = heldout_size(len(train), max_train_samples)
    if heldout_rows:
        train, held = carve_validation(task, train, int(heldout_rows), seed=data_seed)
    train = subsample(train, max_train_samples, seed=data_seed)
    evals = {s: subsample(f, max_eval_samples, seed=data_seed) for s, f in frames.items()}
    if held is not None and heldout_split:
        evals = {HELDOUT: held, **evals}
    if validation_fraction:
        train, held = carve_validation(task, train, validation_fraction, seed=data_seed)
        evals = {HELDOUT: held, **evals}
    source = str(train_file or data_dir or glue_folder() or HUB_DATASET)
    enc = {s: encode(task, f, tokenizer, max_length=max_length, cache_dir=cache_dir)
           for s, f in {"train": train, **evals}.items()}
    train_enc = enc.pop("train")
    return TaskData(task, train_enc, enc, source, max_length,
                    {s: rows_fingerprint(task, f) for s, f in evals.items()})
