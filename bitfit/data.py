"""Loading a task's splits, tokenising them once into an on-disk cache, and batching them.

Sources, in order: a local folder in the official GLUE layout (``--data-dir`` or
``BITFIT_GLUE_DIR``), the Hub dataset ``nyu-mll/glue``, or a custom task's CSV/TSV/JSON/Parquet
files. Tokenised splits are cached as Parquet under a key of (data, tokenizer, max length), so a
second run does not tokenise. Training batches are grouped by length in seeded, shuffled buckets
to spend little on padding.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from sklearn.model_selection import train_test_split

from bitfit.settings import GLUE_DIR_ENV
from bitfit.tasks import Task

HUB_DATASET = "nyu-mll/glue"
HELDOUT = "heldout"  # the name of a validation split carved out of train
HELDOUT_MIN = 500  # a study's held-out split has at least this many rows, where the data allow
HELDOUT_FRACTION = 0.1  # ... or this share of the training rows it uses, whichever is larger
TEST_SPLIT = "test"  # a custom task's --test-file: scored by the final evaluation only


class DataSourceError(OSError):
    """A task's data could not be found or read."""


# --------------------------------------------------------------------------- loading raw splits


@dataclass(frozen=True)
class _Split:
    """A split as read, and how messages name its source.

    The frame's index holds each record's place in the source, named for its unit (``line`` of a
    text file, ``row`` of an array, a Parquet file or the Hub), so that a refusal can point at it.
    """

    frame: pd.DataFrame
    source: str  # e.g. "dev file 'dev.csv'"


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
        glue_dir = data_dir if data_dir is not None else os.environ.get(GLUE_DIR_ENV)
        splits = _read_glue_dir(task, Path(glue_dir)) if glue_dir else _read_hub(task)
    frames = {s: _normalise(task, split, classes_from) for s, split in splits.items()}
    if TEST_SPLIT in frames:
        _refuse_leaked_test(task, frames, test_file)
    return task, frames


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


_TEXT_SEPARATORS = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


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


def _read_text(p: Path, source: str) -> str:
    """The file's text, decoded strictly as UTF-8 (a leading byte-order mark is dropped)."""
    try:
        data = p.read_bytes()
    except OSError as err:
        raise DataSourceError(f"{source} could not be read ({err.strerror}): check its "
                              f"permissions") from None
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as err:
        # The codec's own message names no file and counts from after the byte-order mark.
        offset = bom + err.start
        line = data.count(b"\n", 0, offset) + 1
        raise DataSourceError(
            f"{source} is not valid UTF-8 (byte 0x{data[offset]:02x} at offset {offset}, line "
            f"{line}): save it as UTF-8"
        ) from None
    if not text.strip():
        raise DataSourceError(f"{source} is empty: point to the file that holds the data")
    return text


def _lines(text: str) -> list[str]:
    # The line breaks that csv and pandas break on (\n, \r\n, \r), not str.splitlines' extras.
    return [line.rstrip("\r\n") for line in io.StringIO(text, newline="")]


def _tsv_records(text: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-empty line; quotes are ordinary characters in a TSV."""
    return [(n, line.split("\t")) for n, line in enumerate(_lines(text), 1) if line]


def _csv_records(text: str, source: str) -> list[tuple[int, list[str]]]:
    """(first line, fields) of each CSV record, as CSV readers read them: a quoted field may hold
    commas, doubled quotes and line breaks.

    The reader is strict, so a stray ``"`` that opens a quoted field is refused at its line
    instead of silently swallowing the lines up to the next quote: such a field ends at the end
    of the file or at a quote with more text after it, both errors in strict CSV.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for fields in reader:
            if fields:  # csv gives [] for an empty line
                records.append((start, fields))
            start = reader.line_num + 1
    except csv.Error as err:  # a field past csv's size limit, a quote left open, or stray text
        if reader.line_num <= start:
            raise ValueError(f"{source} line {start} cannot be read as CSV ({err}): quote the "
                             f"field whole (\"...\", with any quote in it doubled) or fix that "
                             f"line") from None
        reach = ("to the end of the file" if "unexpected end of data" in str(err)
                 else f"to line {reader.line_num}, where it closes with more text after it")
        raise ValueError(_runaway_quote(source, start, reach)) from None
    return records


def _runaway_quote(source: str, line: int, reach: str) -> str:
    return (f"{source} has a quoted field that starts on line {line} and runs on {reach}: balance "
            f"or remove the '\"' on line {line} (a field that spans lines is quoted whole)")


def _table(
    records: list[tuple[int, list[str]]], source: str, sep: str, *, header: bool = True
) -> pd.DataFrame:
    """A frame of text records indexed by line, every line holding as many fields as the first."""
    kind = "tab" if sep == "\t" else "comma"
    first_line, first = records[0]
    rows = records[1:] if header else records
    if header:
        duplicate = next((c for i, c in enumerate(first) if c in first[:i]), None)
        if duplicate is not None:
            raise ValueError(f"{source} has the column {duplicate!r} twice in its header: give "
                             f"every column its own name")
        if not rows:
            raise DataSourceError(f"{source} has a header row but no data rows: point to the "
                                  f"file that holds the data")
    against = "the header" if header else f"line {first_line}"
    for line, fields in rows:
        if len(fields) != len(first):
            raise ValueError(
                f"{source} line {line} has {len(fields)} {kind}-separated "
                f"field{'' if len(fields) == 1 else 's'} but {against} has {len(first)}: "
                f"{_field_count_fix(kind, len(fields) > len(first))}"
            )
    columns = first if header else list(range(len(first)))
    index = pd.Index([line for line, _ in rows], name="line")
    return pd.DataFrame([fields for _, fields in rows], columns=columns, index=index)


def _field_count_fix(kind: str, too_many: bool) -> str:
    if not too_many:
        return "add the missing fields (a line break inside a field also splits a row)"
    if kind == "comma":
        return 'put text that holds commas in double quotes ("a, b")'
    return "remove the extra tabs (text in a TSV cannot hold a tab)"


def _read_json(text: str, source: str, suffix: str) -> pd.DataFrame:
    """Records of a JSON array (``row`` numbers) or of JSON lines (``line`` numbers)."""
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataSourceError(
                f"{source} is not valid JSON ({err.msg} at line {err.lineno}, column "
                f"{err.colno}): fix it, or write one JSON object per line"
            ) from None
        places, unit = list(range(1, len(records) + 1)), "row"
    else:
        records, places, unit = [], [], "line"
        for n, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataSourceError(
                    f"{source} line {n} is not valid JSON ({err.msg} at column {err.colno}): "
                    f"write one JSON object per line, or a JSON array of objects in a .json file"
                ) from None
            places.append(n)
    for place, record in zip(places, records, strict=True):
        if not isinstance(record, dict):
            raise ValueError(
                f"{source} {unit} {place} holds {_JSON_KINDS.get(type(record), 'a value')} "
                f"instead of an object: write each record as an object with one key per column"
            )
    return _with_rows(pd.DataFrame(records, index=pd.Index(places, name=unit)), source)


def _read_parquet(p: Path, source: str) -> pd.DataFrame:
    if p.stat().st_size == 0:
        raise DataSourceError(f"{source} is empty: point to the file that holds the data")
    try:
        frame = pd.read_parquet(p)
    except (pa.ArrowException, OSError, ValueError) as err:
        # Arrow's reason spans sentences; it stays on the chain for whoever debugs.
        raise DataSourceError(
            f"{source} could not be read as Parquet (it is damaged or not a Parquet file): "
            f"write it again, for example with pandas.DataFrame.to_parquet"
        ) from err
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="row")
    return _with_rows(frame, source)


def _with_rows(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    if frame.empty:
        raise DataSourceError(f"{source} holds no records: point to the file that holds the data")
    return frame


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
    try:
        loaded = datasets.load_dataset(HUB_DATASET, task.name)
    except (OSError, ConnectionError) as err:
        raise DataSourceError(
            f"could not load GLUE task {task.name!r} from the Hugging Face Hub ({HUB_DATASET}): "
            f"{err}. Pass --data-dir DIR (or set ${GLUE_DIR_ENV}) to a folder in the official "
            f"GLUE layout ({task.glue_dir}/train.tsv, {task.glue_dir}/dev.tsv)"
        ) from err
    columns = list(task.text_columns) + ["label"]
    splits = {}
    for s in ("train", *task.eval_splits):
        frame = loaded[s].to_pandas()[columns]
        frame.index = pd.RangeIndex(1, len(frame) + 1, name="row")
        splits[s] = _Split(frame, f"the {s} split of {HUB_DATASET} ({task.name})")
    return splits


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


# --------------------------------------------------------------------------- tokenised splits


@dataclass(frozen=True)
class Encoded:
    """A tokenised split stored flat: token ids of row i are ``ids[offsets[i]:offsets[i+1]]``."""

    ids: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    type_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def digest(self) -> str:
        """A short digest of the tokenised split (ids, offsets, labels, token types)."""
        return splits_digest(self)

    def take(self, rows: np.ndarray) -> Encoded:
        """The sub-split made of the given rows, in that order."""
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        spans = [np.arange(s, e) for s, e in zip(starts, ends, strict=True)]
        gather = np.concatenate(spans) if spans else np.zeros(0, dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(ends - starts)])
        types = None if self.type_ids is None else self.type_ids[gather]
        return Encoded(self.ids[gather], offsets, self.labels[rows], types)


_FINGERPRINTS: dict[str, str] = {}  # a fast tokenizer's whole state (its digest) -> fingerprint


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash that changes whenever the tokenizer would split text differently."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        spec = json.dumps([type(tokenizer).__name__, tokenizer.name_or_path, len(tokenizer)])
        return hashlib.sha256(spec.encode()).hexdigest()
    raw = backend.to_str()  # some milliseconds; the canonical form below took 0.14 s a split
    seen = hashlib.sha256(raw.encode()).hexdigest()
    if seen not in _FINGERPRINTS:
        # Truncation and padding are per-call settings the fast tokenizer remembers: not identity.
        state = json.loads(raw)
        state.pop("truncation", None)
        state.pop("padding", None)
        spec = json.dumps(state, sort_keys=True)
        _FINGERPRINTS[seen] = hashlib.sha256(spec.encode()).hexdigest()
    return _FINGERPRINTS[seen]


def _frame_fingerprint(frame: pd.DataFrame) -> str:
    hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(hashes.tobytes()).hexdigest()


def encode(
    task: Task,
    frame: pd.DataFrame,
    tokenizer,
    *,
    max_length: int,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Encoded:
    """Tokenise a split, or read it back from the cache when the same data was tokenised before.

    Args:
        task: supplies the text columns.
        frame: the split, from ``load_splits``.
        tokenizer: a Hugging Face tokenizer.
        max_length: longer inputs are truncated to this many tokens.
        cache_dir: where tokenised splits are kept; no caching when None.
    """
    if max_length < 8:
        raise ValueError(f"max_length must be at least 8 tokens, got {max_length}")
    path = None
    if cache_dir is not None:
        key = hashlib.sha256(json.dumps([
            _frame_fingerprint(frame), tokenizer_fingerprint(tokenizer), max_length,
            list(task.text_columns),
        ]).encode()).hexdigest()[:24]
        path = Path(cache_dir) / f"{task.name}-{key}.parquet"
        if path.is_file():
            try:
                return _from_table(pq.read_table(path))
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache file: tokenise again and replace it
    texts = [frame[c].tolist() for c in task.text_columns]
    out = tokenizer(*texts, truncation=True, max_length=max_length)
    columns = {
        "input_ids": pa.array(out["input_ids"], type=pa.list_(pa.int32())),
        "label": pa.array(frame["label"].to_numpy()),
    }
    if "token_type_ids" in out:
        columns["token_type_ids"] = pa.array(out["token_type_ids"], type=pa.list_(pa.int8()))
    table = pa.table(columns)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    return _from_table(table)


def _from_table(table: pa.Table) -> Encoded:
    ids = table.column("input_ids").combine_chunks()
    types = None
    if "token_type_ids" in table.column_names:
        types = table.column("token_type_ids").combine_chunks().flatten().to_numpy()
    return Encoded(
        ids=ids.flatten().to_numpy().astype(np.int64),
        offsets=ids.offsets.to_numpy().astype(np.int64) - ids.offsets[0].as_py(),
        labels=table.column("label").to_numpy(),
        type_ids=None if types is None else types.astype(np.int64),
    )


def splits_digest(*splits: Encoded) -> str:
    """A short digest of tokenised splits: the same ids, labels and types, the same digest."""
    h = hashlib.sha256()
    for split in splits:
        types = b"" if split.type_ids is None else split.type_ids.tobytes()
        for part in (split.ids.tobytes(), split.offsets.tobytes(), split.labels.tobytes(),
                     types):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class TaskData:
    """A task's tokenised splits: ``train`` and the evaluation splits, the first used to select."""

    task: Task
    train: Encoded
    evals: dict[str, Encoded]
    source: str
    max_length: int = 128  # tokens: longer texts were truncated, and a predictor must do the same

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
    source = str(train_file or data_dir or os.environ.get(GLUE_DIR_ENV) or HUB_DATASET)
    enc = {s: encode(task, f, tokenizer, max_length=max_length, cache_dir=cache_dir)
           for s, f in {"train": train, **evals}.items()}
    train_enc = enc.pop("train")
    return TaskData(task, train_enc, enc, source, max_length)


# --------------------------------------------------------------------------- batches


def train_batches(
    data: Encoded, batch_size: int, *, seed: int, epoch: int, group_by_length: bool = True
) -> list[np.ndarray]:
    """Row indices of each training batch of one epoch.

    With length grouping, a seeded permutation is cut into buckets of 50 batches; each bucket is
    sorted by length and cut into batches, and the batches are shuffled. Examples in a batch then
    have similar lengths (little padding) while the order stays random from epoch to epoch.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(data))
    if not group_by_length:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    lengths = data.lengths
    batches: list[np.ndarray] = []
    bucket = batch_size * 50
    for start in range(0, len(order), bucket):
        chunk = order[start : start + bucket]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def eval_batches(data: Encoded, batch_size: int) -> list[np.ndarray]:
    """Row indices of evaluation batches, sorted by length (predictions are put back in order)."""
    order = np.argsort(-data.lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def collate(data: Encoded, rows: np.ndarray, *, pad_id: int) -> dict[str, torch.Tensor]:
    """Pad the given rows to the longest of them: ids, attention mask, token types, labels."""
    starts, lengths = data.offsets[rows], data.lengths[rows]
    width = int(lengths.max())
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    type_ids = data.type_ids
    types = None if type_ids is None else np.zeros((len(rows), width), dtype=np.int64)
    for i, (s, n) in enumerate(zip(starts, lengths, strict=True)):
        ids[i, :n] = data.ids[s : s + n]
        mask[i, :n] = 1
        if types is not None and type_ids is not None:
            types[i, :n] = type_ids[s : s + n]
    batch = {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.from_numpy(data.labels[rows]),
    }
    if types is not None:
        batch["token_type_ids"] = torch.from_numpy(types)
    return batch


def padding_fraction(data: Encoded, batches: list[np.ndarray]) -> float:
    """Share of the tokens in the given batches that are padding."""
    lengths = data.lengths
    real = sum(int(lengths[b].sum()) for b in batches)
    padded = sum(int(lengths[b].max()) * len(b) for b in batches)
    return 1.0 - real / padded
