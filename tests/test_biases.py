from __future__ import annotations

import pytest
import torch
from transformers import AutoModel

from bitfit.biases import (SUBSETS, SelectionError, family_of, parse_subset, random_mask,
                           select_biases)
from tests.conftest import tiny_config

# The exact parameter names of layer L for each term, per family (a 2-layer model, hidden 32).
BERT_NAMES = {
    "q": "encoder.layer.{L}.attention.self.query.bias",
    "k": "encoder.layer.{L}.attention.self.key.bias",
    "v": "encoder.layer.{L}.attention.self.value.bias",
    "m1": "encoder.layer.{L}.attention.output.dense.bias",
    "ln1": "encoder.layer.{L}.attention.output.LayerNorm.bias",
    "m2": "encoder.layer.{L}.intermediate.dense.bias",
    "m3": "encoder.layer.{L}.output.dense.bias",
    "ln2": "encoder.layer.{L}.output.LayerNorm.bias",
}
EXPECTED = {
    "bert": (BERT_NAMES, True),
    "roberta": (BERT_NAMES, True),
    "electra": (BERT_NAMES, False),
    "distilbert": ({
        "q": "transformer.layer.{L}.attention.q_lin.bias",
        "k": "transformer.layer.{L}.attention.k_lin.bias",
        "v": "transformer.layer.{L}.attention.v_lin.bias",
        "m1": "transformer.layer.{L}.attention.out_lin.bias",
        "ln1": "transformer.layer.{L}.sa_layer_norm.bias",
        "m2": "transformer.layer.{L}.ffn.lin1.bias",
        "m3": "transformer.layer.{L}.ffn.lin2.bias",
        "ln2": "transformer.layer.{L}.output_layer_norm.bias",
    }, False),
    "deberta-v2": ({**BERT_NAMES,
                    "q": "encoder.layer.{L}.attention.self.query_proj.bias",
                    "k": "encoder.layer.{L}.attention.self.key_proj.bias",
                    "v": "encoder.layer.{L}.attention.self.value_proj.bias"}, False),
}


def _named(family: str) -> dict[str, torch.nn.Parameter]:
    return dict(AutoModel.from_config(tiny_config(family)).named_parameters())


@pytest.mark.parametrize("family", list(EXPECTED))
def test_all_subset_selects_exactly_the_papers_terms_in_every_family(family):
    params = _named(family)
    layer_terms, has_pooler = EXPECTED[family]
    expected = {t: [p.format(L=i) for i in range(2)] for t, p in layer_terms.items()}
    expected["emb_ln"] = ["embeddings.LayerNorm.bias"]
    if has_pooler:
        expected["pooler"] = ["pooler.dense.bias"]

    found = select_biases(params, family_of(AutoModel.from_config(tiny_config(family))
                                            .config.model_type), "all")

    assert found == expected
    count = sum(params[n].numel() for names in found.values() for n in names)
    # per layer: 7 vectors of hidden size 32 and m2 of the intermediate size 64; + emb LN (+ pooler)
    assert count == 2 * (7 * 32 + 64) + 32 + (32 if has_pooler else 0)


def test_m3_never_selects_the_attention_output_dense_bias():
    found = select_biases(_named("bert"), "bert", "m3")

    assert found["m3"] == ["encoder.layer.0.output.dense.bias", "encoder.layer.1.output.dense.bias"]
    assert not any("attention" in n for n in found["m3"])


def test_qm2_is_query_and_intermediate_biases_only():
    found = select_biases(_named("bert"), "bert", "qm2")

    assert sorted(found) == ["m2", "q"]
    assert all(n.endswith(("attention.self.query.bias", "intermediate.dense.bias"))
               for names in found.values() for n in names)


def test_plus_joined_terms_keep_the_papers_order_without_repeats():
    assert parse_subset("ln2+q+m2+q") == ("q", "m2", "ln2")
    assert parse_subset("layernorm") == SUBSETS["layernorm"]


@pytest.mark.parametrize("subset", ["q+m4", "everything", "", "q+"])
def test_unknown_subset_or_term_lists_the_allowed_values(subset):
    with pytest.raises(SelectionError) as err:
        parse_subset(subset)
    message = str(err.value)
    assert repr(subset) in message and "qm2" in message and "ln2" in message


def test_unknown_model_family_lists_the_known_ones():
    with pytest.raises(SelectionError, match=r"'gpt2'.*bert.*deberta-v2.*distilbert"):
        family_of("gpt2")
    with pytest.raises(SelectionError, match="known families are bert"):
        select_biases(["x.bias"], "gpt2", "all")


def test_a_term_asked_for_by_name_must_exist_in_the_model():
    with pytest.raises(SelectionError, match=r"'pooler'.*distilbert"):
        select_biases(_named("distilbert"), "distilbert", "q+pooler")


def test_random_mask_draws_exactly_k_weights_reproducibly_from_layer_matrices():
    encoder = AutoModel.from_config(tiny_config("bert"))

    a = random_mask(encoder, 500, seed=3)
    b = random_mask(encoder, 500, seed=3)
    c = random_mask(encoder, 500, seed=4)

    assert a.count == 500
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)
    assert any(not torch.equal(a.masks[n], c.masks.get(n, torch.zeros_like(a.masks[n])))
               for n in a.masks)
    assert all(n.startswith("encoder.layer.") and n.endswith(".weight") for n in a.masks)
