"""LoRA (Hu et al., 2021) through PEFT: the other sparse fine-tuning method BitFit is compared with.

Low-rank adapters go on the query and value projections of every attention layer, as the LoRA
paper does on GLUE (rank 8, ``lora_alpha`` twice the rank); the head trains too. The adapters are
added to the one loaded encoder for a run and taken off again before the next
(``add_adapters`` has ``BaseModel.restore`` call ``remove_adapters``), so that trials and seeds of
every method share one model as they do for BitFit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from bitfit.models import BaseModel

if TYPE_CHECKING:
    from peft import LoraConfig

# the attention projections LoRA adapts, per bias-term family (bitfit.biases)
TARGETS: dict[str, tuple[str, ...]] = {
    "bert": ("query", "value"),
    "roberta": ("query", "value"),
    "electra": ("query", "value"),
    "distilbert": ("q_lin", "v_lin"),
    "deberta-v2": ("query_proj", "value_proj"),
}


def add_adapters(base: BaseModel, *, rank: int) -> dict[str, torch.Tensor]:
    """Put rank-``rank`` LoRA adapters on the base encoder's query and value projections, taken
    off again by its next ``restore``; the adapters' tensors by parameter name in the encoder
    (the only encoder tensors that then train). ``lora_A`` draws from torch's generator (seed it
    first), ``lora_B`` starts at 0, so the model starts as the pre-trained one."""
    from peft import inject_adapter_in_model

    encoder = base.encoder
    inject_adapter_in_model(lora_config(base.family, rank), encoder)
    base.on_restore(remove_adapters)
    return {n: p for n, p in encoder.named_parameters() if ".lora_" in n}


def lora_config(family: str, rank: int, **more: Any) -> LoraConfig:
    """PEFT's config of the adapters bitfit trains on a model of ``family`` (``more``: further
    fields, such as ``modules_to_save`` where a whole classifier is wrapped)."""
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                      target_modules=list(TARGETS[family]), bias="none", **more)


def remove_adapters(encoder: nn.Module) -> None:
    """Take every LoRA adapter off again: each adapted layer is its original one once more."""
    for name, module in list(encoder.named_modules()):
        base_layer = getattr(module, "base_layer", None)
        if isinstance(base_layer, nn.Module) and type(module).__module__.startswith("peft."):
            parent, _, child = name.rpartition(".")
            setattr(encoder.get_submodule(parent) if parent else encoder, child, base_layer)
    if hasattr(encoder, "peft_config"):
        del encoder.peft_config
