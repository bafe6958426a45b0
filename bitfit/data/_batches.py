"""Batches of a tokenised split: length-grouped, seeded training batches, length-sorted
evaluation batches, and their padding into tensors."""

from __future__ import annotations

import numpy as np
import torch

from bitfit.data._tokenised import Encoded


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
