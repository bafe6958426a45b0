"""The paper's bias terms, named subsets of them, and which tensors each method trains.

Terms follow Ben-Zaken et al. (2022): ``q k v`` (attention projections), ``m1`` (attention output
dense), ``ln1`` (attention LayerNorm), ``m2`` (first MLP layer, "intermediate"), ``m3`` (second MLP
layer), ``ln2`` (output LayerNorm), plus ``emb_ln`` (embeddings LayerNorm) and ``pooler``. Each
model family maps a term to a regular expression over *whole* parameter names of the bare encoder
(``AutoModel``), so ``m3`` can never catch ``attention.output.dense.bias``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads where a mask is drawn: subsets parse without it
    import torch
    from torch import nn

TERMS: tuple[str, ...] = ("q", "k", "v", "m1", "ln1", "m2", "m3", "ln2", "emb_ln", "pooler")

SUBSETS: dict[str, tuple[str, ...]] = {
    "all": TERMS,
    "qm2": ("q", "m2"),
    "attention": ("q", "k", "v", "m1"),
    "mlp": ("m2", "m3"),
    "layernorm": ("emb_ln", "ln1", "ln2"),
}

_L = r"\.(\d+)\."  # the layer index
_IN_LAYER = re.compile(r"(^|\.)layer\.\d+\.")
_BERT_LIKE = {
    "q": rf"encoder\.layer{_L}attention\.self\.query\.bias",
    "k": rf"encoder\.layer{_L}attention\.self\.key\.bias",
    "v": rf"encoder\.layer{_L}attention\.self\.value\.bias",
    "m1": rf"encoder\.layer{_L}attention\.output\.dense\.bias",
    "ln1": rf"encoder\.layer{_L}attention\.output\.LayerNorm\.bias",
    "m2": rf"encoder\.layer{_L}intermediate\.dense\.bias",
    "m3": rf"encoder\.layer{_L}output\.dense\.bias",
    "ln2": rf"encoder\.layer{_L}output\.LayerNorm\.bias",
    "emb_ln": r"embeddings\.LayerNorm\.bias",
    "pooler": r"pooler\.dense\.bias",
}

FAMILIES: dict[str, dict[str, str]] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "electra": _BERT_LIKE,
    "distilbert": {
        "q": rf"transformer\.layer{_L}attention\.q_lin\.bias",
        "k": rf"transformer\.layer{_L}attention\.k_lin\.bias",
        "v": rf"transformer\.layer{_L}attention\.v_lin\.bias",
        "m1": rf"transformer\.layer{_L}attention\.out_lin\.bias",
        "ln1": rf"transformer\.layer{_L}sa_layer_norm\.bias",
        "m2": rf"transformer\.layer{_L}ffn\.lin1\.bias",
        "m3": rf"transformer\.layer{_L}ffn\.lin2\.bias",
        "ln2": rf"transformer\.layer{_L}output_layer_norm\.bias",
        "emb_ln": r"embeddings\.LayerNorm\.bias",
    },
    "deberta-v2": {
        **{t: p for t, p in _BERT_LIKE.items() if t not in ("q", "k", "v", "pooler")},
        "q": rf"encoder\.layer{_L}attention\.self\.query_proj\.bias",
        "k": rf"encoder\.layer{_L}attention\.self\.key_proj\.bias",
        "v": rf"encoder\.layer{_L}attention\.self\.value_proj\.bias",
    },
}

# Hugging Face ``model_type`` values that share a family's module names.
_MODEL_TYPES = {
    "bert": "bert",
    "roberta": "roberta",
    "xlm-roberta": "roberta",
    "camembert": "roberta",
    "electra": "electra",
    "distilbert": "distilbert",
    "deberta-v2": "deberta-v2",
}


class SelectionError(ValueError):
    """A bias term, subset, method or model family that does not exist or matches nothing."""


def family_of(model_type: str) -> str:
    """Map a Hugging Face ``config.model_type`` to a bias-term family.

    Raises:
        SelectionError: the model type is not one of the supported families.
    """
    try:
        return _MODEL_TYPES[model_type]
    except KeyError:
        known = ", ".join(sorted(_MODEL_TYPES))
        raise SelectionError(
            f"unknown model family {model_type!r}: BitFit's bias terms are mapped for {known}"
        ) from None


def parse_subset(subset: str) -> tuple[str, ...]:
    """Resolve a named subset (``qm2``) or a ``+``-joined list of terms (``q+m2+ln2``).

    Returns:
        The terms, in the paper's order, without repeats.

    Raises:
        SelectionError: an unknown subset name or term.
    """
    if subset in SUBSETS:
        return SUBSETS[subset]
    terms = [t.strip() for t in subset.split("+")]
    unknown = [t for t in terms if t not in TERMS]
    if not subset.strip() or unknown:
        raise SelectionError(
            f"unknown bias subset {subset!r}: use one of {', '.join(SUBSETS)} or a '+'-joined "
            f"list of the terms {', '.join(TERMS)} (e.g. 'q+m2')"
        )
    return tuple(t for t in TERMS if t in terms)


def select_biases(names: Iterable[str], family: str, subset: str) -> dict[str, list[str]]:
    """Find the parameter names that make up a bias subset.

    Args:
        names: parameter names of the bare encoder (``AutoModel``), e.g. from ``named_parameters``.
        family: a key of ``FAMILIES``.
        subset: a named subset or a ``+``-joined list of terms.

    Returns:
        For each term of the subset that the model has, the matching parameter names. A named
        subset skips terms the model lacks (DistilBERT has no pooler); a term asked for by name
        must match.

    Raises:
        SelectionError: unknown family or subset, or a selection that matches nothing.
    """
    if family not in FAMILIES:
        raise SelectionError(
            f"unknown model family {family!r}: known families are {', '.join(FAMILIES)}"
        )
    terms = parse_subset(subset)
    patterns = FAMILIES[family]
    names = list(names)
    found: dict[str, list[str]] = {}
    for term in terms:
        regex = re.compile(patterns[term]) if term in patterns else None
        matched = [n for n in names if regex is not None and regex.fullmatch(n)]
        if matched:
            found[term] = matched
        elif subset not in SUBSETS:
            raise SelectionError(
                f"bias term {term!r} of subset {subset!r} matches no parameter of this "
                f"{family} model; its terms are {', '.join(_present_terms(names, family))}"
            )
    if not found:
        raise SelectionError(f"bias subset {subset!r} matches no parameter of this {family} model")
    return found


def _present_terms(names: list[str], family: str) -> list[str]:
    return [
        t for t, p in FAMILIES[family].items() if any(re.fullmatch(p, n) for n in names)
    ]


@dataclass(frozen=True)
class RandomMask:
    """The ``rand`` baseline: k scalars chosen uniformly from the encoder's weight matrices."""

    masks: dict[str, torch.Tensor]  # parameter name -> bool tensor of its shape

    @property
    def count(self) -> int:
        return int(sum(int(m.sum()) for m in self.masks.values()))


def random_mask(encoder: nn.Module, k: int, *, seed: int) -> RandomMask:
    """Draw k distinct scalars uniformly at random from the transformer layers' weight matrices.

    The candidates are the 2-D ``weight`` matrices of the transformer layers (not embeddings,
    not the pooler), where BitFit's biases live.
    """
    params = [
        (n, p)
        for n, p in encoder.named_parameters()
        if p.dim() == 2 and n.endswith("weight") and _IN_LAYER.search(n)
    ]
    total = sum(p.numel() for _, p in params)
    if not 0 < k <= total:
        raise SelectionError(f"rand needs 0 < k <= {total} weights, got k={k}")
    import torch

    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(total, generator=generator)[:k]
    flat = torch.zeros(total, dtype=torch.bool)
    flat[chosen] = True
    masks: dict[str, torch.Tensor] = {}
    offset = 0
    for name, p in params:
        part = flat[offset : offset + p.numel()]
        offset += p.numel()
        if part.any():
            masks[name] = part.view_as(p).clone()
    return RandomMask(masks)
