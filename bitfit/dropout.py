"""Dropout whose masks are cheap on a CPU: the same Bernoulli masks, drawn faster.

On a CPU, ``torch``'s dropout draws its mask with ``bernoulli_``, one number at a time, and that
was the largest cost of a BitFit training step after the matrix products. Here a mask comes from
NumPy's PCG64 bit generator instead, about one random byte per element (``keep``: the drop
probability is ``p`` to within 2**-40), and the kept elements are scaled by ``1 / (1 - p)`` as
``torch`` does: the same distribution. ``benchmarks/step_time.py`` shows what is left of its
cost (``bitfit_all`` against ``bitfit_no_dropout``). The model keeps its checkpoint's
dropout probabilities; only where the random bits come from changes.

``install(encoder)`` makes every ``nn.Dropout`` of a loaded encoder draw this way, and its
attention (where a model takes transformers' attention interface and uses SDPA) take two batched
matrix products on a CPU while training with dropout (its probabilities dropped this way) and in
bf16 inference on short sequences; every other case and device keeps PyTorch's own kernels.
``seed(n)`` starts the masks' stream, as ``torch.manual_seed`` starts PyTorch's: a run with the
same seed draws the same masks.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

import numpy as np
import torch
from torch import nn

ATTENTION = "bitfit_sdpa"  # the attention implementation's name in transformers' registry
EAGER_MAX_LENGTH = 64  # in bf16 inference, longer sequences take SDPA's fused kernel
_BITS = np.random.PCG64(0)


def seed(value: int) -> None:
    """Start the stream the masks are drawn from (a run's seed)."""
    global _BITS
    _BITS = np.random.PCG64(value)


def keep(n: int, p: float) -> np.ndarray:
    """``n`` booleans, each False with probability ``p`` (to within 2**-40): a random byte per
    element is below ``floor(256 p)`` (dropped), above it (kept), or equal to it (1 in 256),
    and then 32 more random bits decide with the probability left, ``256 p - floor(256 p)``."""
    whole = int(p * 256)
    rest = np.uint32(min(round((p * 256 - whole) * 2**32), 2**32 - 1))
    draws = _BITS.random_raw((n + 7) // 8).view(np.uint8)[:n]
    kept = draws > whole
    edge = np.flatnonzero(draws == whole)
    if edge.size:
        kept[edge] = _BITS.random_raw(edge.size).astype(np.uint32) >= rest
    return kept


def keep_scaled(like: torch.Tensor, p: float) -> torch.Tensor:
    """A mask shaped and typed like ``like``: 0 with probability ``p``, else ``1 / (1 - p)``."""
    # scaled in NumPy: one pass from the booleans to float32, where torch's bool-to-float cast
    # and an in-place scale took two slower ones
    mask = np.multiply(keep(like.numel(), p).view(np.uint8), np.float32(1.0 / (1.0 - p)))
    return torch.from_numpy(mask).view(like.shape).to(device=like.device, dtype=like.dtype)


class Dropout(nn.Dropout):
    """``nn.Dropout`` with the masks above while training on a CPU; PyTorch's otherwise."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (nn.Dropout's name)
        if not self.training or self.p == 0.0:
            return input
        if self.p >= 1.0 or input.device.type != "cpu" or self.inplace:
            return super().forward(input)
        return input * keep_scaled(input, self.p)


def attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, dropout: float = 0.0,
              scaling: float | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, except on a CPU while training with dropout, or scoring at
    bf16 sequences of at most ``EAGER_MAX_LENGTH`` tokens: there two batched matrix products, the
    probabilities dropped (while training) with the masks above. While training with dropout
    SDPA takes this unfused path anyway; in bf16 inference its fused kernel is the slower one on
    short sequences, the faster one on 128 tokens and at fp32 (``benchmarks/cpu_paths.py``).
    Causal, grouped-query or position-biased attention stays with SDPA."""
    # imported here: bitfit.models imports this module, and transformers only when it loads
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plain = (not getattr(module, "is_causal", False)
             and getattr(module, "num_key_value_groups", 1) == 1
             and kwargs.get("position_bias") is None and not kwargs.get("is_causal"))
    short = (not torch.is_grad_enabled() and query.dtype == torch.bfloat16
             and key.size(-2) <= EAGER_MAX_LENGTH)
    if (dropout >= 1.0 or query.device.type != "cpu" or not plain
            or (dropout == 0.0 and not short)):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    return two_products(query, key, value, attention_mask, dropout, scaling), None


def two_products(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, dropout: float = 0.0,
                 scaling: float | None = None) -> torch.Tensor:
    """Attention as two batched matrix products, the probabilities dropped with the masks above
    while ``dropout`` > 0; the output laid out as SDPA's (batch, tokens, heads, head size)."""
    scale = query.size(-1) ** -0.5 if scaling is None else scaling
    batch, heads, length, size = query.shape
    keys = key.size(-2)
    q = query.reshape(batch * heads, length, size)
    k = key.reshape(batch * heads, keys, size).transpose(1, 2)
    bias = _bias(attention_mask, (batch, heads, length, keys), query.dtype)
    # the scale and the mask inside the first product (one pass less each way)
    scores = (torch.bmm(q, k).mul_(scale) if bias is None
              else torch.baddbmm(bias, q, k, alpha=scale))
    probs = torch.softmax(scores, dim=-1)
    if dropout > 0.0:
        probs = probs * keep_scaled(probs, dropout)
    out = torch.bmm(probs, value.reshape(batch * heads, keys, size))
    return out.view(batch, heads, length, size).transpose(1, 2).contiguous()


_LAST_BIAS: tuple[Any, torch.Tensor] | None = None  # (the mask, weakly; its bias): layers share it


def _bias(mask: torch.Tensor | None, shape: tuple[int, int, int, int], dtype: torch.dtype
          ) -> torch.Tensor | None:
    """The attention mask as an additive bias, one (query, key) matrix per batch row and head:
    0 where a key may be seen, a large negative number where not. The layers of one forward
    pass get the same mask, so the last one made is kept (held by a weak reference to it)."""
    global _LAST_BIAS
    if mask is None:
        return None
    flat = (shape[0] * shape[1], shape[2], shape[3])
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
    if _LAST_BIAS is not None:
        ref, bias = _LAST_BIAS
        if ref() is mask and bias.dtype == dtype and bias.shape == flat:
            return bias
    if mask.dtype == torch.bool:  # SDPA's mask: True where a key may be seen
        # bf16's most negative number: also finite once autocast casts it to bf16 (fp16's own
        # under fp16 autocast, whose range is smaller)
        low = torch.finfo(torch.float16 if dtype == torch.float16 else torch.bfloat16).min
        bias = torch.zeros(mask.shape, dtype=dtype).masked_fill_(~mask, low)
    else:  # already additive
        bias = mask.to(dtype)
    bias = bias.expand(shape).reshape(flat)
    _LAST_BIAS = (weakref.ref(mask), bias)
    return bias


def install(encoder: nn.Module) -> None:
    """Make the encoder's dropout (and, where it uses SDPA, its attention dropout) draw its
    masks as above. The modules keep their names and probabilities."""
    for module in encoder.modules():
        if type(module) is nn.Dropout:
            module.__class__ = Dropout
    config = getattr(encoder, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)
    with contextlib.suppress(AttributeError, ValueError):  # one that cannot switch keeps SDPA
        encoder.set_attn_implementation(ATTENTION)  # type: ignore[operator]
