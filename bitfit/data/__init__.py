"""Loading a task's splits, tokenising them once into an on-disk cache, and batching them.

Sources, in order: a local folder in the official GLUE layout (``--data-dir`` or
``BITFIT_GLUE_DIR``, unless it names an empty folder), the Hub dataset ``nyu-mll/glue``, or a
custom task's CSV/TSV/JSON/Parquet files. Tokenised splits are cached as Parquet under a key of
(data, tokenizer, max length), so a second run does not tokenise. Training batches are grouped by
length in seeded, shuffled buckets to spend little on padding.

The modules, lowest first: ``_records`` (a file's records), ``_checks`` (a split's values),
``_readers`` (GLUE, the Hub, a custom task's files), ``_tokenised`` (tokenised splits and their
cache), ``_batches`` (batches of a tokenised split) and ``_prepare`` (a task's data made ready).
"""

from __future__ import annotations

from bitfit.data._batches import collate, eval_batches, padding_fraction, train_batches
from bitfit.data._checks import LEAK_SHARE
from bitfit.data._prepare import (HELDOUT, HELDOUT_FRACTION, HELDOUT_MIN, TaskData,
                                  carve_validation, heldout_size, prepare, subsample)
from bitfit.data._readers import HUB_DATASET, glue_folder, load_splits
from bitfit.data._records import TEST_SPLIT, DataSourceError
from bitfit.data._tokenised import (Encoded, encode, rows_fingerprint, splits_digest,
                                    tokenizer_fingerprint)

__all__ = [
    "HELDOUT", "HELDOUT_FRACTION", "HELDOUT_MIN", "HUB_DATASET", "LEAK_SHARE", "TEST_SPLIT",
    "DataSourceError", "Encoded", "TaskData", "carve_validation", "collate", "encode",
    "eval_batches", "glue_folder", "heldout_size", "load_splits", "padding_fraction", "prepare",
    "rows_fingerprint", "splits_digest", "subsample", "tokenizer_fingerprint", "train_batches",
]
