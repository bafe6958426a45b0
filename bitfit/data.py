"""Loading a task's splits, tokenising them once into an on-disk cache, and batching them.

Sources, in order: a local folder in the official GLUE layout (``--data-dir`` or
``BITFIT_GLUE_DIR``), the Hub dataset ``nyu-mll/glue``, or a custom task's CSV/TSV/JSON/Parquet
files. Tokenised splits are cached as Parquet under a key of (data, tokenizer, max length), so a
second run does not tokenise. Training batches are grouped by length in seeded, shuffled buckets
to spend little on padding.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from sklearn.model_selection import train_test_split

from bitfit.tasks import Task

HUB_DATASET = "nyu-mll/glue"
GLUE_DIR_ENV = "BITFIT_GLUE_DIR"
HELDOUT = "heldout"  # the name of a validation split carved out of train


class DataSourceError(OSError):
    """A task's data could not be found or read."""


# --------------------------------------------------------------------------- loading raw splits


def load_splits(
    task: Task,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    train_file: str | os.PathLike[str] | None = None,
    dev_file: str | os.PathLike[str] | None = None,
) -> tuple[Task, dict[str, pd.DataFrame]]:
    """Read a task's train and dev splits as frames with the task's text columns and ``label``.

    Args:
        task: a GLUE task or a custom task.
        data_dir: a folder in the official GLUE layout; ``$BITFIT_GLUE_DIR`` when not given.
        train_file, dev_file: a custom task's files (CSV, TSV, JSON, JSON lines or Parquet).

    Returns:
        The task (a custom classification task gains its label names from the training file) and
        the frames by split: ``train`` then the task's evaluation splits.

    Raises:
        DataSourceError: files missing or unreadable, or the Hub unreachable.
        ValueError: a named column or a label that the task does not know.
    """
    if train_file is not None or dev_file is not None:
        if train_file is None or dev_file is None:
            raise ValueError("a custom task needs both --train-file and --dev-file")
        frames = {"train": _read_file(train_file), "validation": _read_file(dev_file)}
        for split, frame in frames.items():
            missing = [c for c in (*task.text_columns, task.label_column) if c not in frame]
            if missing:
                raise ValueError(
                    f"{split} file has no column {missing[0]!r}; its columns are "
                    f"{', '.join(map(str, frame.columns))}: name the right ones with "
                    f"--text-columns and --label-column"
                )
        if not task.is_regression and not task.label_names:
            names = tuple(sorted(str(v) for v in frames["train"][task.label_column].unique()))
            task = dataclasses.replace(task, label_names=names)
        renamed = {
            s: f[list(task.text_columns) + [task.label_column]].rename(
                columns={task.label_column: "label"}
            )
            for s, f in frames.items()
        }
    else:
        glue_dir = data_dir if data_dir is not None else os.environ.get(GLUE_DIR_ENV)
        renamed = _read_glue_dir(task, Path(glue_dir)) if glue_dir else _read_hub(task)
    return task, {s: _normalise(task, f, s) for s, f in renamed.items()}


def _read_file(path: str | os.PathLike[str]) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise DataSourceError(f"data file {str(p)!r} does not exist: check the path")
    suffix = p.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return pd.read_csv(p, sep="\t" if suffix == ".tsv" else ",", keep_default_na=False)
    if suffix in (".json", ".jsonl"):
        with p.open(encoding="utf-8") as f:
            lines = suffix == ".jsonl" or f.read(1) != "["
        return pd.read_json(p, lines=lines)
    if suffix == ".parquet":
        return pd.read_parquet(p)
    raise ValueError(
        f"data file {str(p)!r} has an unknown type {suffix!r}: use .csv, .tsv, .json, .jsonl "
        f"or .parquet"
    )


def _read_glue_dir(task: Task, root: Path) -> dict[str, pd.DataFrame]:
    if not task.glue_dir:
        raise ValueError(f"task {task.name!r} is not a GLUE task; give --train-file and --dev-file")
    files = {"train": "train.tsv", **task.dev_files}
    frames = {}
    for split, name in files.items():
        path = root / task.glue_dir / name
        if not path.is_file():
            raise DataSourceError(
                f"GLUE file {str(path)!r} does not exist: --data-dir (or ${GLUE_DIR_ENV}) must "
                f"name a folder in the official GLUE layout ({task.glue_dir}/{name})"
            )
        # The official TSVs contain unbalanced quotes: read every field verbatim.
        raw = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str,
                          header=0 if task.tsv_header else None, keep_default_na=False,
                          encoding="utf-8-sig")
        columns = list(task.text_columns) + ["label"]
        frames[split] = pd.DataFrame(
            {c: raw.iloc[:, src] if isinstance(src, int) else raw[src]
             for c, src in zip(columns, task.tsv_columns, strict=True)}
        )
    return frames


def _read_hub(task: Task) -> dict[str, pd.DataFrame]:
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
    return {s: loaded[s].to_pandas()[columns] for s in ("train", *task.eval_splits)}


def _normalise(task: Task, frame: pd.DataFrame, split: str) -> pd.DataFrame:
    frame = frame.reset_index(drop=True)
    for c in task.text_columns:
        frame[c] = frame[c].astype(str)
    labels = frame["label"]
    if task.is_regression:
        frame["label"] = pd.to_numeric(labels, errors="raise").astype(np.float32)
        return frame
    names = [str(n) for n in task.label_names]
    as_text = labels.astype(str)
    if as_text.isin(names).all():
        ids = as_text.map({n: i for i, n in enumerate(names)})
    else:
        ids = pd.to_numeric(labels, errors="coerce")
    bad = ~ids.isin(range(len(names)))
    if bad.any():
        raise ValueError(
            f"{split} split of task {task.name!r} has label {labels[bad].iloc[0]!r}, which is "
            f"neither a class of {names} nor a class index below {len(names)}"
        )
    frame["label"] = ids.astype(np.int64)
    return frame


def subsample(frame: pd.DataFrame, n: int | None, *, seed: int = 0) -> pd.DataFrame:
    """A seeded random sample of n rows (all rows when n is None or larger than the frame)."""
    if n is None or n >= len(frame):
        return frame
    if n <= 0:
        raise ValueError(f"a sample size must be > 0, got {n}")
    return frame.sample(n=n, random_state=seed).reset_index(drop=True)


def carve_validation(
    task: Task, train: pd.DataFrame, fraction: float, *, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a seeded validation set off train, stratified by label for classification."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be between 0 and 1, got {fraction}")
    stratify = None if task.is_regression else train["label"]
    kept, held = train_test_split(train, test_size=fraction, random_state=seed, stratify=stratify)
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

    def take(self, rows: np.ndarray) -> Encoded:
        """The sub-split made of the given rows, in that order."""
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        spans = [np.arange(s, e) for s, e in zip(starts, ends, strict=True)]
        gather = np.concatenate(spans) if spans else np.zeros(0, dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(ends - starts)])
        types = None if self.type_ids is None else self.type_ids[gather]
        return Encoded(self.ids[gather], offsets, self.labels[rows], types)


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash that changes whenever the tokenizer would split text differently."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        spec = json.dumps([type(tokenizer).__name__, tokenizer.name_or_path, len(tokenizer)])
    else:
        # Truncation and padding are per-call settings the fast tokenizer remembers: not identity.
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
        spec = json.dumps(state, sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()


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
            return _from_table(pq.read_table(path))
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


@dataclass(frozen=True)
class TaskData:
    """A task's tokenised splits: ``train`` and the evaluation splits, the first used to select."""

    task: Task
    train: Encoded
    evals: dict[str, Encoded]
    source: str

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
    max_length: int = 128,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    validation_fraction: float | None = None,
    data_seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
) -> TaskData:
    """Load, subsample, optionally carve a validation split, and tokenise a task's data.

    ``max_train_samples`` and ``max_eval_samples`` keep a seeded random sample of train and of
    each dev split (for quick looks; leave them out for results to report).

    With ``validation_fraction`` the evaluation splits start with ``heldout`` (carved from train,
    seeded and stratified), which is what a search should select on, followed by the dev splits.
    """
    task, frames = load_splits(task, data_dir=data_dir, train_file=train_file, dev_file=dev_file)
    train = subsample(frames.pop("train"), max_train_samples, seed=data_seed)
    evals = {s: subsample(f, max_eval_samples, seed=data_seed) for s, f in frames.items()}
    if validation_fraction:
        train, held = carve_validation(task, train, validation_fraction, seed=data_seed)
        evals = {HELDOUT: held, **evals}
    source = str(train_file or data_dir or os.environ.get(GLUE_DIR_ENV) or HUB_DATASET)
    enc = {s: encode(task, f, tokenizer, max_length=max_length, cache_dir=cache_dir)
           for s, f in {"train": train, **evals}.items()}
    train_enc = enc.pop("train")
    return TaskData(task, train_enc, enc, source)


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
