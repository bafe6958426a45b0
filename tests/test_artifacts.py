from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bitfit.artifacts import (ArtifactError, Predictor, _identity_sha256, apply_artifact,
                              load_artifact)
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
    folder = result.save(base, cola_small.task, tmp_path / "artifact")

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
    folder = result.save(base, cola_small.task, tmp_path / "a")

    size = (folder / "trained.safetensors").stat().st_size
    assert size < 4 * result.trainable_params + 8192  # fp32 values plus the names in the header
    assert size < 0.01 * (4 * result.total_params)


def test_applying_to_another_base_model_is_refused(base, cola_small, tmp_path):
    result = train(base, cola_small, TrainConfig(epochs=1), progress=False)
    folder = result.save(base, cola_small.task, tmp_path / "a")
    other = load_base(tiny_model_dir(tmp_path, "bert", base), pooling="mean")

    with pytest.raises(ArtifactError, match=r"trained on base model 'all-MiniLM-L6-v2'.*not on"):
        apply_artifact(other, folder)
    with pytest.raises(ArtifactError, match="--pooling mean"):
        apply_artifact(load_base(pooling="cls"), folder)


def test_an_altered_or_incomplete_artifact_is_refused(base, cola_small, tmp_path):
    result = train(base, cola_small, TrainConfig(epochs=1), progress=False)
    folder = result.save(base, cola_small.task, tmp_path / "a")
    blob = bytearray((folder / "trained.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (folder / "trained.safetensors").write_bytes(bytes(blob))

    with pytest.raises(ArtifactError, match="altered"):
        load_artifact(folder)
    with pytest.raises(FileNotFoundError, match="not a bitfit artifact"):
        load_artifact(tmp_path)


@pytest.fixture(scope="module")
def completed(base, cola_small):
    return train(base, cola_small, TrainConfig(epochs=1), progress=False)


@pytest.fixture(scope="module")
def saved(base, cola_small, completed, tmp_path_factory):
    return completed.save(base, cola_small.task, tmp_path_factory.mktemp("saved") / "a")


def test_a_run_that_did_not_complete_writes_nothing(base, cola_small, completed, tmp_path):
    stopped = train(base, cola_small, TrainConfig(epochs=1), callback=lambda e: True,
                    progress=False)
    diverged = dataclasses.replace(completed, status="diverged", message=(
        "loss became nan at step 3 (epoch 1): lower the learning rate (now 10)"))

    assert stopped.status == "stopped"
    with pytest.raises(ArtifactError, match=r"ended 'stopped': only a completed run makes"):
        stopped.save(base, cola_small.task, tmp_path / "stopped")
    with pytest.raises(ArtifactError) as err:
        diverged.save(base, cola_small.task, tmp_path / "diverged")
    assert str(err.value) == (
        "cannot save an artifact of a run that ended 'diverged' (loss became nan at step 3 "
        "(epoch 1): lower the learning rate (now 10)): only a completed run makes an artifact, "
        "so nothing was written")
    assert not list(tmp_path.iterdir())


def test_the_manifest_seals_only_the_fields_that_change_behaviour(base, saved, tmp_path):
    manifest = json.loads((saved / "manifest.json").read_text())
    assert manifest["format"] == 3 and manifest["identity_sha256"] == _identity_sha256(manifest)
    folder = _edited(saved, tmp_path, lambda m: m.update(metrics={}, versions={"note": "moved"}))

    assert apply_artifact(base, folder).head.out_features == 2


def _unsealed_tensors(folder):
    """The tensors file as bitfit wrote it before the seal: no metadata in its header."""
    from safetensors.torch import load, save

    file = folder / "trained.safetensors"
    file.write_bytes(save(load(file.read_bytes())))
    return hashlib.sha256(file.read_bytes()).hexdigest()


def test_an_artifact_written_before_the_seal_still_loads(base, saved, tmp_path):
    folder = _edited(saved, tmp_path, lambda m: (m.pop("identity_sha256"), m.update(format=1)))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["tensors_sha256"] = _unsealed_tensors(folder)
    (folder / "manifest.json").write_text(json.dumps(manifest))

    assert load_artifact(folder)[0]["format"] == 1
    assert apply_artifact(base, folder).head.out_features == 2


@pytest.mark.parametrize("edit", [
    lambda m: (m.pop("identity_sha256"), m.update(format=1, pooling="cls")),  # passed off as old
    lambda m: (m.update(format=2, pooling="cls"), _reseal(m)),  # resealed the old way
    lambda m: _reseal(m, data={"max_length": 512}),  # the length a predictor truncates to
])
def test_a_sealed_artifact_cannot_escape_its_seal(base, saved, tmp_path, edit):
    folder = _edited(saved, tmp_path, edit)

    with pytest.raises(ArtifactError) as err:
        Predictor(folder, base=base)
    assert "was edited after its run wrote it" in str(err.value)
    assert "no longer matches the seal its tensors carry" in str(err.value)


def _reseal(manifest, **changes):
    manifest.update(changes)
    manifest["identity_sha256"] = _identity_sha256(manifest)


def _relabel(manifest):
    manifest["task"]["label_names"].reverse()


BAD_MANIFESTS = [
    (lambda m: _reseal(m, status="diverged"),
     "artifact '{folder}' comes from a run that ended 'diverged': it was not trained to "
     "completion; use an artifact of a completed run"),
    (lambda m: (m.pop("identity_sha256"), m.update(format=1, status="stopped")),
     "comes from a run that ended 'stopped'"),
    (lambda m: m.update(pooling="cls"),
     "manifest '{file}' was edited after its run wrote it (one of base_model, "
     "base_weights_sha256, family, pooling, task, method, subset, status, tensors_sha256, "
     "max_length, lora_rank changed?), so it no longer matches its identity_sha256; restore "
     "the original manifest or retrain"),
    (_relabel, "manifest '{file}' was edited after its run wrote it"),
    (lambda m: m.update(status="completed", method="full"), "was edited after its run wrote it"),
    (lambda m: m.pop("identity_sha256"),
     "manifest '{file}' is damaged (key 'identity_sha256' is missing): restore it from a copy "
     "or retrain"),
    (lambda m: m.pop("pooling"), "manifest '{file}' is damaged (key 'pooling' is missing)"),
    (lambda m: m["task"].update(regression="no"),
     "is damaged (key 'task.regression' should be true or false, got 'no')"),
    (lambda m: m.update(subset=3), "is damaged (key 'subset' should be a string or null, got 3)"),
    (lambda m: m.update(format=True), "is damaged (key 'format' should be an integer, got True)"),
    (lambda m: m.update(format=9), "manifest '{file}' has format 9, which this bitfit does not "
     "read (1 to 3): upgrade bitfit or retrain"),
    ('{"format": 3, "base_model": ', "manifest '{file}' is damaged (not valid JSON: "),
    ("[1, 2]", "manifest '{file}' is damaged (expected a JSON object, got a list)"),
]


@pytest.mark.parametrize("edit, message", BAD_MANIFESTS)
def test_an_edited_damaged_or_unfinished_manifest_is_refused(base, saved, tmp_path, edit,
                                                             message):
    folder = _edited(saved, tmp_path, edit)
    expected = message.format(folder=folder, file=folder / "manifest.json")

    for load in (load_artifact, lambda f: Predictor(f, base=base)):
        with pytest.raises(ArtifactError) as err:
            load(folder)
        assert expected in str(err.value) and "\n" not in str(err.value)


def _edited(saved, tmp_path, edit):
    """A copy of the saved artifact with its manifest edited (a function) or replaced (text)."""
    folder = Path(shutil.copytree(saved, tmp_path / "copy"))
    file = folder / "manifest.json"
    if isinstance(edit, str):
        file.write_text(edit)
        return folder
    manifest = json.loads(file.read_text())
    edit(manifest)
    file.write_text(json.dumps(manifest))
    return folder
