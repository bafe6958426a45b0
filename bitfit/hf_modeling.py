"""A Hugging Face model class for a bitfit classifier that transformers has no class for.

``bitfit export`` copies this file, as ``modeling_bitfit.py``, into a folder whose config names
it in ``auto_map``: ``AutoModelForSequenceClassification.from_pretrained(folder,
trust_remote_code=True)`` then builds the classifier bitfit trained (an encoder, a pooling of
its token states, dropout and a linear head: ``bitfit.models.TextClassifier``) where
transformers' own classes pool otherwise (BERT's pooler, or a head of their own). The file
imports only torch and transformers, so that it runs without bitfit installed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

POOLINGS = ("pooler", "cls", "mean")


class BitfitClassifierConfig(PretrainedConfig):
    """The encoder's own config (as a dict), how its token states are pooled, the head's dropout,
    and the labels (``id2label``, ``problem_type``) as transformers' classifiers have them."""

    model_type = "bitfit-classifier"

    def __init__(self, encoder: dict[str, Any] | None = None, pooling: str = "mean",
                 classifier_dropout: float = 0.1, **kwargs: Any) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.encoder = dict(encoder or {"model_type": "bert"})
        self.pooling = pooling
        self.classifier_dropout = classifier_dropout
        super().__init__(**kwargs)


class BitfitForSequenceClassification(PreTrainedModel):
    """The encoder (``model``, any ``AutoModel``), the pooling, dropout, and the linear head."""

    config_class = BitfitClassifierConfig
    base_model_prefix = "model"  # the name no encoder's own checkpoint starts its keys with

    def __init__(self, config: BitfitClassifierConfig) -> None:
        super().__init__(config)
        self.model = AutoModel.from_config(AutoConfig.for_model(**config.encoder))
        if config.pooling != "pooler" and getattr(self.model, "pooler", None) is not None:
            self.model.pooler = None  # unused, as bitfit.models.load_base leaves it
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.head = nn.Linear(self.model.config.hidden_size, config.num_labels or 2)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if module is self.head:  # the encoder's weights are its checkpoint's
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                **_: Any) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        more = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, **more)
        if self.config.pooling == "pooler":
            pooled = out.pooler_output
        elif self.config.pooling == "cls":
            pooled = out.last_hidden_state[:, 0]
        else:  # the mean of the token states the attention mask keeps
            mask = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
            pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        logits = self.head(self.dropout(pooled)).float()
        loss = None
        if labels is not None:
            loss = (F.mse_loss(logits[:, 0], labels.float())
                    if self.config.problem_type == "regression" else
                    F.cross_entropy(logits, labels))
        return SequenceClassifierOutput(loss=loss, logits=logits)
