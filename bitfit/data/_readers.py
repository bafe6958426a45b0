"""Reading a task's raw splits: a folder in the official GLUE layout, the Hub dataset, or a
custom task's own train, dev and test files, each split checked whole."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import pandas as pd

from bitfit.data._checks import _blank, _normalise, _refuse_header_row, _refuse_leaked_test
from bitfit.data._records import (TEST_SPLIT, DataSourceError, _csv_records, _read_json,
                                  _read_parquet, _read_text, _Split, _table, _tsv_records)
from bitfit.settings import GLUE_DIR_ENV
from bitfit.tasks import Task

HUB_DATASET = "nyu-mll/glue"
_SAID: set[str] = set()  # the empty $BITFIT_GLUE_DIR folders this process has named


def glue_folder(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The GLUE folder to read: ``data_dir``, else ``$BITFIT_GLUE_DIR``; None for the Hub's
    ``nyu-mll/glue``: neither is given, or ``$BITFIT_GLUE_DIR`` names an empty folder (the
    container stack mounts one there when it has no local data, infra/docker-compose.yml)."""
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get(GLUE_DIR_ENV)
    if not env:
        return None
    folder = Path(env)
    return None if folder.is_dir() and not any(folder.iterdir()) else folder


def load_splits(
    task: Task,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    train_file: str | os.PathLike[str] | None = None,
    dev_file: str | os.PathLike[str] | None = None,
    test_file: str | os.PathLike[str] | None = None,
) -> tuple[Task, dict[str, pd.DataFrame]]:
    """Read a task's train and dev splits as frames with the task's text columns and ``label``.

    Every split is checked whole (before any subsampling): a file that does not parse into
    exactly one row per line, an empty or unknown label, or a missing text is refused.

    Args:
        task: a GLUE task or a custom task.
        data_dir: a folder in the official GLUE layout; ``$BITFIT_GLUE_DIR`` when not given.
        train_file, dev_file: a custom task's files (CSV, TSV or tab-separated .txt, JSON,
            JSON lines or Parquet), in UTF-8.
        test_file: a custom task's labelled test file, read like them: the split ``test``.

    Returns:
        The task (a custom classification task gains its label names from the training file) and
        the frames by split: ``train`` then the task's evaluation splits (``test`` last).

    Raises:
        DataSourceError: files missing, empty, not UTF-8, not valid JSON or Parquet, or the Hub
            unreachable.
        ValueError: a malformed CSV/TSV line, a missing column, or an empty or unknown label.
    """
    classes_from = None
    if train_file is not None or dev_file is not None or test_file is not None:
        if train_file is None or dev_file is None:
            raise ValueError("a custom task needs both --train-file and --dev-file")
        task, splits, classes_from = _read_custom(task, train_file, dev_file, test_file)
    else:
        glue_dir = glue_folder(data_dir)
        splits = _read_glue_dir(task, glue_dir) if glue_dir else _read_hub(task)
    frames = {s: _normalise(task, split, classes_from) for s, split in splits.items()}
    if TEST_SPLIT in frames:
        _refuse_leaked_test(task, frames, test_file)
    return task, frames


def _read_custom(
    task: Task, train_file: str | os.PathLike[str], dev_file: str | os.PathLike[str],
    test_file: str | os.PathLike[str] | None = None,
) -> tuple[Task, dict[str, _Split], str | None]:
    """A custom task's splits with canonical columns, the task with its label names, and where
    those names came from (None when the task named them)."""
    splits = {"train": _read_file(train_file, "training", columns=task.columns),
              "validation": _read_file(dev_file, "dev", columns=task.columns)}
    if test_file is not None:
        splits[TEST_SPLIT] = _read_file(test_file, "test", columns=task.columns)
    wanted = [*task.text_columns, task.label_column]
    for split in splits.values():
        missing = [c for c in wanted if c not in split.frame]
        if missing:
            raise ValueError(
                f"{split.source} has no column {missing[0]!r}; its columns are "
                f"{', '.join(map(str, split.frame.columns))}: name the right ones with "
                f"--text-columns and --label-column"
            )
        if task.columns:
            _refuse_header_row(split, task.label_column)
    classes_from = None
    if not task.is_regression and not task.label_names:
        labels = splits["train"].frame[task.label_column]
        names = tuple(sorted({str(v) for v in labels[~_blank(labels)]}))
        task = dataclasses.replace(task, label_names=names)
        classes_from = f"the {splits['train'].source}"
    renamed = {
        s: _Split(split.frame[wanted].rename(columns={task.label_column: "label"}), split.source)
        for s, split in splits.items()
    }
    return task, renamed, classes_from


_TEXT_SEPARATORS = {".csv": ",", ".tsv": "\t", ".txt": "\t"}


def _read_file(path: str | os.PathLike[str], role: str = "data",
               columns: tuple[str, ...] = ()) -> _Split:
    """A data file's records; ``columns`` names the columns of a CSV/TSV without a header."""
    p = Path(path)
    source = f"{role} file {str(p)!r}"
    if not p.is_file():
        raise DataSourceError(f"{source} does not exist: check the path")
    suffix = p.suffix.lower()
    if columns and suffix not in _TEXT_SEPARATORS:
        raise ValueError(f"--columns names the columns of a CSV or TSV file without a header, "
                         f"and {source} is {suffix}: leave --columns out")
    if columns:
        text = _read_text(p, source)
        records = _csv_records(text, source) if suffix == ".csv" else _tsv_records(text)
        frame = _table(records, source, _TEXT_SEPARATORS[suffix], header=False)
        if frame.shape[1] != len(columns):
            raise ValueError(f"{source} has {frame.shape[1]} fields per line and --columns "
                             f"names {len(columns)} ({','.join(columns)}): name one column "
                             "per field")
        return _Split(frame.set_axis(list(columns), axis=1), source)
    if suffix == ".parquet":
        return _Split(_read_parquet(p, source), source)
    if suffix in (".json", ".jsonl"):
        return _Split(_read_json(_read_text(p, source), source, suffix), source)
    if suffix in _TEXT_SEPARATORS:
        text = _read_text(p, source)
        records = _csv_records(text, source) if suffix == ".csv" else _tsv_records(text)
        return _Split(_table(records, source, _TEXT_SEPARATORS[suffix]), source)
    raise ValueError(
        f"{source} has an unknown type {suffix!r}: use .csv, .tsv (or tab-separated .txt), "
        f".json, .jsonl or .parquet"
    )


def _read_glue_dir(task: Task, root: Path) -> dict[str, _Split]:
    if not task.glue_dir:
        raise ValueError(f"task {task.name!r} is not a GLUE task; give --train-file and --dev-file")
    files = {"train": "train.tsv", **task.dev_files}
    splits = {}
    for split, name in files.items():
        path = root / task.glue_dir / name
        if not path.is_file():
            raise DataSourceError(
                f"GLUE file {str(path)!r} does not exist: --data-dir (or ${GLUE_DIR_ENV}) must "
                f"name a folder in the official GLUE layout ({task.glue_dir}/{name})"
            )
        source = f"GLUE file {str(path)!r}"
        # The official TSVs contain unbalanced quotes: every field is read verbatim.
        raw = _table(_tsv_records(_read_text(path, source)), source, "\t",
                     header=task.tsv_header)
        _check_glue_columns(task, raw, source, name)
        columns = list(task.text_columns) + ["label"]
        frame = pd.DataFrame({c: raw[src] for c, src in zip(columns, task.tsv_columns,
                                                             strict=True)})
        splits[split] = _Split(frame, source)
    return splits


def _check_glue_columns(task: Task, raw: pd.DataFrame, source: str, name: str) -> None:
    layout = (f"use the official GLUE files ({task.glue_dir}/{name} as download_glue_data.py "
              f"writes it)")
    wanted = [*task.text_columns, "label"]
    if task.tsv_header:
        if any(c not in raw.columns for c in task.tsv_columns):
            raise ValueError(
                f"{source} has the columns {', '.join(map(str, raw.columns))} but needs "
                f"{', '.join(map(str, task.tsv_columns))} in its header row: {layout}"
            )
        return
    needed = max(int(c) for c in task.tsv_columns) + 1
    if raw.shape[1] < needed:
        where = ", ".join(f"{c} in field {int(src) + 1}"
                          for c, src in zip(wanted, task.tsv_columns, strict=True))
        raise ValueError(
            f"{source} has {raw.shape[1]} tab-separated fields per line but needs at least "
            f"{needed} (no header row; {where}): {layout}"
        )


def _read_hub(task: Task) -> dict[str, _Split]:
    import datasets  # deferred: importing it costs a second that local runs need not pay

    if not task.glue_dir:
        raise ValueError(f"task {task.name!r} is not a GLUE task; give --train-file and --dev-file")
    empty = os.environ.get(GLUE_DIR_ENV)
    if empty and empty not in _SAID:  # a folder without files: no local data (glue_folder)
        _SAID.add(empty)
        print(f"${GLUE_DIR_ENV} {empty} is an empty folder: reading GLUE task {task.name} from "
              f"the Hugging Face Hub ({HUB_DATASET})", file=sys.stderr)
    try:
        loaded = datasets.load_dataset(HUB_DATASET, task.name)
    except (OSError, ConnectionError) as err:
        raise DataSourceError(
            f"could not load GLUE task {task.name!r} from the Hugging Face Hub ({HUB_DATASET}; "
            f"{' '.join(str(err).split()).rstrip('.')}): pass --data-dir DIR (or set "
            f"${GLUE_DIR_ENV}) to a folder in the official GLUE layout "
            f"({task.glue_dir}/train.tsv, {task.glue_dir}/dev.tsv)"
        ) from err
    columns = list(task.text_columns) + ["label"]
    splits = {}
    for s in ("train", *task.eval_splits):
        frame = loaded[s].to_pandas()[columns]
        frame.index = pd.RangeIndex(1, len(frame) + 1, name="row")
        splits[s] = _Split(frame, f"the {s} split of {HUB_DATASET} ({task.name})")
    return splits
