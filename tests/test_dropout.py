"""bitfit.dropout: the checkpoint's dropout with masks drawn from NumPy on a CPU."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bitfit import dropout


def test_a_mask_drops_p_of_the_elements_and_scales_the_rest_by_one_over_one_minus_p():
    dropout.seed(0)
    layer = dropout.Dropout(0.1).train()
    x = torch.ones(1000, 1000)
    y = layer(x)
    dropped = float((y == 0).float().mean())
    # 10^6 draws: the standard error of the share is 3e-4
    assert abs(dropped - 0.1) < 0.0015, dropped
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.9))
    assert abs(float(y.mean()) - 1.0) < 0.003  # the expectation kept
    assert torch.equal(layer.eval()(x), x)  # evaluation: the identity


def test_the_same_seed_draws_the_same_masks_and_the_gradient_follows_the_mask():
    layer = dropout.Dropout(0.3).train()
    x = torch.randn(64, 50, requires_grad=True)
    dropout.seed(7)
    first = layer(x)
    dropout.seed(7)
    again = layer(x)
    other = layer(x)
    assert torch.equal(first, again) and not torch.equal(first, other)
    first.sum().backward()
    assert torch.allclose(x.grad, first.detach() / x.detach())  # d(x * m)/dx = m


def test_the_encoders_dropout_and_attention_use_the_cheap_masks_and_evaluation_agrees_with_sdpa(
        base):
    encoder = base.encoder
    kinds = {type(m) for m in encoder.modules() if isinstance(m, nn.Dropout)}
    assert kinds == {dropout.Dropout}
    assert encoder.config._attn_implementation == dropout.ATTENTION
    enc = base.tokenizer(["The cat sat on the mat.", "A short one"], padding=True,
                         return_tensors="pt")
    encoder.eval()
    with torch.no_grad():
        ours = encoder(**enc).last_hidden_state
        encoder.set_attn_implementation("sdpa")
        try:
            stock = encoder(**enc).last_hidden_state
        finally:
            encoder.set_attn_implementation(dropout.ATTENTION)
    # the same products in another order: equal to float rounding
    assert torch.allclose(ours, stock, atol=1e-5) and not torch.equal(ours, torch.zeros_like(ours))


def test_attention_while_training_drops_probabilities_of_the_masked_softmax():
    torch.manual_seed(0)
    module = nn.Module().train()
    q, k, v = (torch.randn(2, 3, 5, 4) for _ in range(3))
    mask = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    mask[1, :, :, 3:] = False  # the second example has 3 real tokens
    dropout.seed(3)
    out, _ = dropout.attention(module, q, k, v, mask, dropout=0.25, scaling=0.5)
    dropout.seed(3)
    keep = dropout.keep_scaled(torch.empty(2, 3, 5, 5), 0.25)
    scores = (q @ k.transpose(2, 3) * 0.5).masked_fill(~mask, -math.inf)
    expected = (torch.softmax(scores, -1) * keep) @ v
    assert torch.allclose(out, expected.transpose(1, 2), atol=1e-6)
    assert keep.unique().tolist() == [0.0, pytest.approx(1 / 0.75)]
    # no dropout: transformers' SDPA path, the same products
    plain, _ = dropout.attention(module, q, k, v, mask, dropout=0.0, scaling=0.5)
    assert torch.allclose(plain, (torch.softmax(scores, -1) @ v).transpose(1, 2), atol=1e-6)


@pytest.mark.parametrize("p", [0.3, 0.5 / 256, 0.5, 0.9])
def test_the_drop_rate_is_p_also_where_the_byte_alone_cannot_say(p):
    # 0.3 * 256 = 76.8 and 0.5 / 256: the byte equal to floor(256 p) defers to 32 more bits
    dropout.seed(1)
    n = 2_000_000
    dropped = 1.0 - dropout.keep(n, p).mean()
    assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / n), (p, dropped)


def test_each_forward_pass_gets_the_bias_of_its_own_mask():
    # the bias is kept between the layers of one pass: a pass with another mask must not get it
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4) for _ in range(3))
    for real in (5, 2, 4):
        mask = torch.ones(2, 1, 5, 5, dtype=torch.bool)
        mask[1, :, :, real:] = False
        out = dropout.two_products(q, k, v, mask, scaling=0.5)
        scores = (q @ k.transpose(2, 3) * 0.5).masked_fill(~mask, -math.inf)
        assert torch.allclose(out, (torch.softmax(scores, -1) @ v).transpose(1, 2), atol=1e-6)
        again = dropout.two_products(q, k, v, mask, scaling=0.5)  # the kept bias
        assert torch.equal(out, again)
