"""The best BitFit run as a registered MLflow model: loaded by name, it predicts as Predictor."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from bitfit.artifacts import Predictor
from bitfit.registry import ALIAS, register_best
from bitfit.train import TrainConfig, train


@pytest.mark.slow
def test_the_champion_loads_by_name_and_predicts_as_predictor(base, sst2_small, tmp_path,
                                                               monkeypatch):
    result = train(base, sst2_small, TrainConfig(epochs=1, learning_rate=5e-3,
                                                 precision="fp32"), progress=False)
    folder = result.save(base, sst2_small.task, tmp_path / "artifact")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("sst2", artifact_location=(tmp_path / "a").as_uri())
    run_id = client.create_run(experiment).info.run_id
    first = register_best(client, run_id, folder, "sst2")
    second = register_best(client, run_id, folder, "sst2")  # a newer champion: version 2

    assert (int(first.version), int(second.version)) == (1, 2)
    assert int(client.get_model_version_by_alias("bitfit-sst2", ALIAS).version) == 2
    # the environment, restored after the test (mlflow.set_registry_uri would leak into the
    # environment of every later process)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    model = mlflow.pyfunc.load_model(f"models:/bitfit-sst2@{ALIAS}")
    texts = ["a wonderful, moving film", "dull and lifeless", "it was fine, I guess"]

    assert list(model.predict(pd.DataFrame({"sentence": texts}))) == Predictor(folder)(texts)
    assert list(model.predict(pd.DataFrame({"sentence": pd.Series([], dtype=str)}))) == []
    with pytest.raises(Exception, match="row 1 has no text in column 'sentence': give every"):
        model.predict(pd.DataFrame({"sentence": ["fine", None]}))
    # the model holds the kilobyte artifact, not the base model's weights
    files = list((tmp_path / "a").rglob("*"))
    assert sum(f.stat().st_size for f in files if f.is_file()) < 2_000_000


def test_the_model_class_prints_nothing_of_mlflows():
    # MLflow warned "Add type hints to the `predict` method" on stderr when the class was made,
    # in the middle of a search's output
    out = subprocess.run([sys.executable, "-c", "import bitfit.registry"], capture_output=True,
                         text=True, timeout=120)

    assert out.returncode == 0 and out.stderr == ""
