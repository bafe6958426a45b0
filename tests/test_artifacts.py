from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from bitfit.artifacts import ArtifactError, apply_artifact, load_artifact, save_artifact
from bitfit.models import load_base
from bitfit.train import TrainConfig, predict, train
from tests.conftest import tiny_model_dir


def _dev_logits(model, data, base):
    return predict(model, data.evals["validation"], batch_size=64,
                   pad_id=base.tokenizer.pad_token_id, device=torch.device("cpu"))


@pytest.mark.parametrize("method", ["bitfit", "rand"])
def test_artifact_on_a_fresh_base_reproduces_the_trained_predictions(base, cola_small, tmp_path,
                                                                     method, monkeypatch):
    result = train(base, cola_small, TrainConfig(method=method, epochs=2, learning_rate=5e-3,
                                                 precision="fp32"), progress=False)
    expected = _dev_logits(result.extra["model"], cola_small, base)
    folder = save_artifact(result, base, cola_small.task, tmp_path / "artifact")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("an artifact must load without unpickling")

    monkeypatch.setattr(torch, "load", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    fresh = load_base()
    model = apply_artifact(fresh, folder)

    assert np.array_equal(_dev_logits(model, cola_small, fresh), expected)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["base_weights_sha256"] == fresh.weights_hash
    assert manifest["method"] == method and manifest["task"]["name"] == "cola"
    assert manifest["trainable_params"] == result.trainable_params


def test_a_bitfit_artifact_is_kilobytes(base, cola_small, tmp_path):
    result = train(base, cola_small, TrainConfig(epochs=1), progress=False)
    folder = save_artifact(result, base, cola_small.task, tmp_path / "a")

    size = (folder / "trained.safetensors").stat().st_size
    assert size < 4 * result.trainable_params + 8192  # fp32 values plus the names in the header
    assert size < 0.01 * (4 * result.total_params)


def test_applying_to_another_base_model_is_refused(base, cola_small, tmp_path):
    result = train(base, cola_small, TrainConfig(epochs=1), progress=False)
    folder = save_artifact(result, base, cola_small.task, tmp_path / "a")
    other = load_base(tiny_model_dir(tmp_path, "bert", base), pooling="mean")

    with pytest.raises(ArtifactError, match=r"trained on base model 'all-MiniLM-L6-v2'.*not on"):
        apply_artifact(other, folder)
    with pytest.raises(ArtifactError, match="--pooling mean"):
        apply_artifact(load_base(pooling="cls"), folder)


def test_an_altered_or_incomplete_artifact_is_refused(base, cola_small, tmp_path):
    result = train(base, cola_small, TrainConfig(epochs=1), progress=False)
    folder = save_artifact(result, base, cola_small.task, tmp_path / "a")
    blob = bytearray((folder / "trained.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (folder / "trained.safetensors").write_bytes(bytes(blob))

    with pytest.raises(ArtifactError, match="altered"):
        load_artifact(folder)
    with pytest.raises(FileNotFoundError, match="not a bitfit artifact"):
        load_artifact(tmp_path)
