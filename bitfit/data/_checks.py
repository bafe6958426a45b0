"""Checks on a split's values: texts present, labels that are numbers or known classes, no header
row read as data under ``--columns``, and a test file that does not repeat train or dev."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from bitfit.data._records import TEST_SPLIT, _Split
from bitfit.tasks import Task

LEAK_SHARE = 0.1  # a test file sharing more of its texts with train or dev is refused


def _refuse_leaked_test(task: Task, frames: dict[str, pd.DataFrame],
                        test_file: str | os.PathLike[str] | None) -> None:
    """A test file scores what no study or run has seen: refuse one that shares more than
    ``LEAK_SHARE`` of its texts with the training or dev file (the same file given twice, most
    often), since its scores would read as a held-out result."""
    columns = list(task.text_columns)

    def texts(frame: pd.DataFrame) -> pd.Series:
        return frame[columns].astype(str).agg("\x1f".join, axis=1).str.strip()

    test = texts(frames[TEST_SPLIT])
    for split, role in (("train", "training"), ("validation", "dev")):
        shared = int(test.isin(set(texts(frames[split]))).sum())
        if shared > LEAK_SHARE * len(test):
            raise ValueError(
                f"test file {str(test_file)!r} shares {shared} of its {len(test)} texts with the "
                f"{role} file: its scores would not be held out; point --test-file to "
                f"labelled rows that are in neither the training nor the dev file")


# what a header row calls its label column, most often
_LABEL_HEADERS = {"label", "labels", "class", "category", "target", "y", "sentiment", "score",
                  "stars", "rating", "gold_label", "topic"}


def _refuse_header_row(split: _Split, label_column: str) -> None:
    """Under ``--columns`` (no header), refuse a first line that is a header row: it would train
    as a row whose label is a column's name, a class of its own."""
    frame = split.frame
    first = [str(v).strip() for v in frame.iloc[0]]
    label = first[list(frame.columns).index(label_column)]
    looks = [v.lower() for v in first] == [str(c).lower() for c in frame.columns]
    if not looks and len(frame) >= 20:
        counts = frame[label_column].astype(str).str.strip().value_counts()
        others = counts.drop(label)
        numbers = pd.to_numeric(pd.Series(others.index), errors="coerce").notna().all()
        looks = (counts[label] == 1 and bool((others >= 2).all())
                 and (label.lower() in _LABEL_HEADERS
                      or numbers and pd.isna(pd.to_numeric(label, errors="coerce"))))
    if looks:
        raise ValueError(
            f"{split.source} line {frame.index[0]} looks like a header row "
            f"({','.join(first)}), but --columns says the file has none: leave --columns out "
            f"to read that line as the header, or remove it")


def _normalise(task: Task, split: _Split, classes_from: str | None = None) -> pd.DataFrame:
    """Text columns as strings and labels as class ids (or floats), refusing any bad row.

    Args:
        classes_from: where the task's label names were read from ("the training file ..."),
            None when the task named them.
    """
    frame, source = split.frame, split.source
    for c in task.text_columns:
        missing = frame[c].isna()  # JSON null or Parquet None: str() would make it "None"
        if missing.any():
            raise ValueError(f"{source} has no text in column {c!r} "
                             f"({_where(frame.index[missing])}): give every row its text")
    labels = frame["label"]
    blank = _blank(labels)
    if blank.any():
        raise ValueError(f"{source} has an empty label ({_where(frame.index[blank])}): give "
                         f"every row a label, or drop the rows without one")
    if task.is_regression:
        ids = _regression_labels(labels, source)
    else:
        ids = _class_ids(task, labels, source, classes_from)
    texts = {c: frame[c].astype(str) for c in task.text_columns}
    return frame.assign(**texts, label=ids).reset_index(drop=True)


def _blank(labels: pd.Series) -> pd.Series:
    return labels.isna() | labels.astype(str).str.strip().eq("")


def _regression_labels(labels: pd.Series, source: str) -> pd.Series:
    numbers = pd.to_numeric(labels, errors="coerce").astype(np.float64)
    bad = ~np.isfinite(numbers)
    if bad.any():
        found, one = _labels_at(labels, bad)
        raise ValueError(f"{source} has {found}, which {'is' if one else 'are'} not a number: "
                         f"a regression task needs a number as every label")
    return numbers.astype(np.float32)


def _class_ids(task: Task, labels: pd.Series, source: str, classes_from: str | None) -> pd.Series:
    names = [str(n) for n in task.label_names]
    as_text = labels.astype(str)
    if as_text.isin(names).any():  # labels are class names: every one must be a class
        ids = as_text.map({n: i for i, n in enumerate(names)})
        bad = ids.isna()
    else:  # labels are class indices
        ids = pd.to_numeric(labels, errors="coerce")
        bad = ~ids.isin(range(len(names)))
    if bad.any():
        found, one = _labels_at(labels, bad)
        classes = ", ".join(names)
        if classes_from is not None:
            raise ValueError(
                f"{source} has {found}, which {classes_from} does not have (its classes: "
                f"{classes}): add such rows to the training file, or drop them"
            )
        raise ValueError(
            f"{source} has {found}, which {'is' if one else 'are'} neither a class of task "
            f"{task.name!r} ({classes}) nor a class index from 0 to {len(names) - 1}: use one "
            f"of those labels"
        )
    return ids.astype(np.int64)


def _labels_at(labels: pd.Series, bad: pd.Series, limit: int = 3) -> tuple[str, bool]:
    """"label 'x' (line 7)" or "labels 'x' (line 7) and 'y' (line 9)": each bad value once, at
    its first place; and whether there is just one."""
    firsts = labels[bad].astype(str).reset_index().drop_duplicates(subset=labels.name)
    unit = labels.index.name or "row"
    shown = [f"{value!r} ({unit} {place})" for place, value in firsts.head(limit).itertuples(
        index=False)]
    one = len(firsts) == 1
    return f"label{'' if one else 's'} {_join(shown, len(firsts) - limit)}", one


def _where(places: pd.Index, limit: int = 3) -> str:
    """"line 7", "lines 7 and 9", "lines 7, 9, 12 and 4 more"."""
    unit = places.name or "row"
    shown = [str(p) for p in places[:limit]]
    return f"{unit}{'' if len(places) == 1 else 's'} {_join(shown, len(places) - limit)}"


def _join(items: list[str], more: int) -> str:
    if more > 0:
        return f"{', '.join(items)} and {more} more"
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
