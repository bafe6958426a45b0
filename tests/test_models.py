from __future__ import annotations

import pytest
import torch

from bitfit.biases import SelectionError
from bitfit.models import ModelLoadError, load_base
from bitfit.train import TrainConfig, train
from tests.conftest import tiny_model_dir


def test_bundled_model_is_a_bert_whose_head_reads_mean_pooling(base):
    assert base.model_id == "all-MiniLM-L6-v2"
    assert base.family == "bert"
    assert base.pooling == "mean"  # declared by the folder's 1_Pooling/config.json
    assert base.encoder.pooler is None  # never trained in this checkpoint: not used, not counted
    assert base.encoder.config.num_hidden_layers == 6 and base.encoder.config.hidden_size == 384


def test_pooling_can_be_chosen_and_auto_picks_the_pooler_for_masked_lm_folders(base, tmp_path):
    assert load_base(pooling="pooler").encoder.pooler is not None
    assert load_base(tiny_model_dir(tmp_path, "bert", base)).pooling == "pooler"
    assert load_base(tiny_model_dir(tmp_path, "roberta", base), pooling="cls").pooling == "cls"


def test_pooler_pooling_on_a_model_without_a_pooler_is_refused(base, tmp_path):
    with pytest.raises(ValueError, match=r"'pooler'.*distilbert.*--pooling cls"):
        load_base(tiny_model_dir(tmp_path, "distilbert", base), pooling="pooler")


def test_a_model_family_without_bias_terms_is_refused(base, tmp_path):
    from transformers import AutoModel, GPT2Config

    folder = tmp_path / "gpt2"
    AutoModel.from_config(GPT2Config(n_layer=1, n_embd=32, n_head=2)).save_pretrained(folder)
    base.tokenizer.save_pretrained(folder)

    with pytest.raises(SelectionError, match=r"unknown model family 'gpt2'.*bert"):
        load_base(str(folder))


def test_a_hub_id_without_the_hub_fails_with_a_clear_message(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match=r"'bert-base-cased'.*--model DIR"):
        load_base("bert-base-cased")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_base("./no/such/folder")


def test_restore_after_training_equals_a_fresh_load_bit_for_bit(base, cola_small):
    train(base, cola_small, TrainConfig(method="full", epochs=1, learning_rate=1e-4),
          progress=False)
    train(base, cola_small, TrainConfig(method="bitfit", epochs=1), progress=False)

    base.restore()
    fresh = load_base().encoder.state_dict()
    for name, value in base.encoder.state_dict().items():
        assert torch.equal(value, fresh[name]), name


def test_dropout_can_be_set_for_a_run_and_comes_back_for_the_next(base):
    probabilities = lambda model: {m.p for m in model.modules()  # noqa: E731
                                   if isinstance(m, torch.nn.Dropout)}

    assert probabilities(base.classifier(2, seed=0, dropout=0.0)) == {0.0}
    assert probabilities(base.classifier(2, seed=0)) == {0.1}  # the checkpoint's own


def test_the_head_is_reinitialised_from_the_runs_seed(base):
    a = base.classifier(2, seed=1).head.weight.clone()
    b = base.classifier(2, seed=1).head.weight.clone()
    c = base.classifier(2, seed=2).head.weight.clone()

    assert torch.equal(a, b) and not torch.equal(a, c)
