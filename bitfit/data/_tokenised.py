"""Tokenised splits, stored flat, and their on-disk cache: a split is tokenised once per
(content, tokenizer, max length) and read back from a Parquet file after that."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bitfit.tasks import Task


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


def rows_fingerprint(task: Task, frame: pd.DataFrame) -> str:
    """A short fingerprint of a split's rows as read (texts and labels, in any order): the same
    rows, the same fingerprint, whichever tokenizer or input length reads them."""
    columns = [*task.text_columns, "label"]
    hashes = np.sort(pd.util.hash_pandas_object(frame[columns], index=False).to_numpy())
    return hashlib.sha256(hashes.tobytes()).hexdigest()[:16]


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
