"""Hostile but honest inputs at every entry point (the search, evaluate and prepare flows' command
lines and ``bitfit train``): each gets exit 2 and one ``error:`` sentence naming the bad value, no
traceback, and the run home is left as it was (nothing overwritten, no RUNNING trial or run)."""

from __future__ import annotations

import hashlib
import importlib
import socket
import sqlite3
import sys
from pathlib import Path

import pytest

from tests.conftest import GLUE_DIR, ROOT, TINY

sys.path.insert(0, str(ROOT / "flows"))

SPACES = {
    "epochs_float": "params:\n  learning_rate: {type: float, low: 1e-4, high: 1e-2, log: true}\n"
                    "train: {epochs: 1.5}\n",
    "bad_yaml": "params: {learning_rate: {type: float, low: 1e-4\n",
    "unknown_key": "params:\n  learning_rate: {type: float, low: 1e-4, high: 1e-2}\n"
                   "trainer: {epochs: 1}\n",
    "metric_f1": "params:\n  learning_rate: {type: float, low: 1e-4, high: 1e-2}\n"
                 "objective: {metric: f1}\n",
    "lr_choices_text": "params:\n  learning_rate: {type: categorical, choices: [fast, slow]}\n",
    "low_above_high": "params:\n  learning_rate: {type: float, low: 1e-2, high: 1e-4}\n",
    "full_method": "method: full\nparams:\n  learning_rate: {type: categorical, "
                   "choices: [1e-5, 2e-5]}\n",
    "bad_subset": "params:\n  subset: {type: categorical, choices: [all, qkv]}\n",
    "seed_text": "params:\n  learning_rate: {type: float, low: 1e-4, high: 1e-2}\n"
                 "sampler: {name: tpe, seed: zero}\n",
    "trials_zero": "n_trials: 0\nparams:\n  learning_rate: {type: float, low: 1e-4, high: 1e-2}\n",
    "minimize": "params:\n  learning_rate: {type: float, low: 1e-4, high: 1e-2}\n"
                "objective: {direction: minimize}\n",
    "pooler_only": "n_trials: 2\nmax_train_samples: 200\ntrain: {epochs: 1}\nparams:\n"
                   "  learning_rate: {type: float, low: 1e-3, high: 1e-2, log: true}\n"
                   "  subset: {type: categorical, choices: [pooler]}\n",
    "other_lr": "n_trials: 2\nmax_train_samples: 200\ntrain: {epochs: 1}\nparams:\n"
                "  learning_rate: {type: float, low: 1e-3, high: 1e-2, log: true}\n",
}

FILES = {
    "quote.csv": "sentence,label\n" + "".join(
        ('"a stray here' if i == 3 else f"row {i}") + ("," + ("pos" if i % 2 else "neg"))
        + "\n" for i in range(80)),
    "empty_label.csv": "sentence,label\ngood film,pos\nbad film,\nfine film,pos\n",
    "train.csv": "sentence,label\ngood film,pos\nbad film,neg\nfine film,pos\nawful,neg\n",
    "dev_ok.csv": "sentence,label\nok film,pos\nbad acting,neg\n",
    "lopsided.csv": "sentence,label\ngood film,pos\nfine film,pos\nnice film,pos\nawful,neg\n",
    "dev_extra.csv": "sentence,label\nok film,pos\nmeh film,neutral\n",
    "empty.csv": "",
    "table.xlsx": "not a spreadsheet",
}


def _silent_port() -> socket.socket:
    """A port that accepts connections and never answers (a hung server)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """A home holding a finished study (``done``) and its evaluation, plus files to misuse."""
    root = tmp_path_factory.mktemp("bad")
    home = root / "home"
    spaces = root / "spaces"
    spaces.mkdir()
    for name, text in SPACES.items():
        (spaces / f"{name}.yaml").write_text(text)
    files = root / "files"
    files.mkdir()
    for name, text in FILES.items():
        (files / name).write_text(text)
    (files / "latin1.csv").write_bytes("sentence,label\ncaf\xe9 film,pos\nbad,neg\n"
                                       .encode("latin-1"))
    (files / "out").mkdir()
    (files / "out" / "manifest.json").write_text("{}")
    glue = root / "glue" / "SST-2"
    glue.mkdir(parents=True)
    (glue / "train.tsv").write_text("text\tlabel\ngood\t1\n")
    (glue / "dev.tsv").write_text("text\tlabel\nbad\t0\n")
    silent = _silent_port()
    code = _main("search")(["--task", "cola", "--data-dir", str(GLUE_DIR), "--space", TINY,
                            "--n-trials", "2", "--max-train-samples", "200", "--no-baseline",
                            "--seeds", "1", "--eval-processes", "1", "--study-name", "done",
                            "--home", str(home)])
    assert code == 0
    yield {"home": str(home), "glue": str(GLUE_DIR), "spaces": str(spaces),
           "files": str(files), "badglue": str(root / "glue"), "root": str(root),
           "silent": str(silent.getsockname()[1]), "free": str(_free_port())}
    silent.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _main(entry: str):
    if entry == "train":
        from bitfit.cli import main

        return main
    return importlib.import_module(entry).main


SEARCH = ["--task", "cola", "--data-dir", "{glue}", "--home", "{home}", "--no-baseline",
          "--seeds", "0", "--max-train-samples", "200"]
TRAIN = ["train", "--task", "mine", "--home", "{home}", "--epochs", "1"]

# (entry, arguments, a fragment the one error line must hold)
CASES = [
    # counts and names, refused before anything is loaded
    ("search", ["--task", "colaa", "--home", "{home}"], "'colaa'"),
    ("search", [*SEARCH, "--n-trials", "0"], "--n-trials must be a whole number of 1 or more"),
    ("search", [*SEARCH, "--n-trials", "-3"], "got -3"),
    ("search", [*SEARCH, "--seeds", "-1"], "--seeds must be"),
    ("search", [*SEARCH, "--workers", "0"], "--workers must be"),
    ("search", [*SEARCH, "--threads", "0"], "--threads must be"),
    ("search", [*SEARCH, "--eval-processes", "0"], "--eval-processes must be"),
    ("search", [*SEARCH, "--max-train-samples", "0"], "--max-train-samples must be"),
    ("search", [*SEARCH, "--n-trials", "two"], "'two'"),
    ("search", [*SEARCH, "--select-on", "test"], "'test'"),
    ("search", [*SEARCH, "--extra-methods", "lora"], "'lora'"),
    # search spaces
    ("search", [*SEARCH, "--space", "nosuch"], "'nosuch'"),
    ("search", [*SEARCH, "--space", "{spaces}/epochs_float.yaml"], "1.5"),
    ("search", [*SEARCH, "--space", "{spaces}/bad_yaml.yaml"], "bad_yaml.yaml"),
    ("search", [*SEARCH, "--space", "{spaces}/unknown_key.yaml"], "trainer"),
    ("search", [*SEARCH, "--space", "{spaces}/metric_f1.yaml"], "'f1'"),
    ("search", [*SEARCH, "--space", "{spaces}/lr_choices_text.yaml"], "fast"),
    ("search", [*SEARCH, "--space", "{spaces}/low_above_high.yaml"], "low"),
    ("search", [*SEARCH, "--space", "{spaces}/bad_subset.yaml"], "qkv"),
    ("search", [*SEARCH, "--space", "{spaces}/seed_text.yaml"], "zero"),
    ("search", [*SEARCH, "--space", "{spaces}/trials_zero.yaml"], "n_trials"),
    ("search", [*SEARCH, "--space", "{spaces}/minimize.yaml"], "maximize"),
    ("search", [*SEARCH, "--seeds", "2", "--space", "{spaces}/full_method.yaml"],
     "searches method 'full'"),
    ("search", ["--task", "cola", "--home", "{home}", "--seeds", "0", "--baseline-space",
                TINY], "not full fine-tuning"),
    # stores and services: one sentence within seconds
    ("search", [*SEARCH, "--storage", "postgres://u@127.0.0.1:{free}/db"], "postgresql://"),
    ("search", [*SEARCH, "--storage", "postgresql://u@127.0.0.1:{free}/db"],
     "cannot reach the Optuna storage"),
    ("search", [*SEARCH, "--storage", "postgresql://u:hunter2@127.0.0.1:{silent}/db"],
     "cannot reach the Optuna storage postgresql://u@127.0.0.1:{silent}/db"),
    ("search", [*SEARCH, "--storage", "oracle+nosuch://x/y"], "oracle+nosuch"),
    ("search", [*SEARCH, "--storage", "runs/optuna.db"], "runs/optuna.db"),
    ("search", [*SEARCH, "--tracking-uri", "http://127.0.0.1:{free}"],
     "cannot reach the MLflow tracking server"),
    ("search", [*SEARCH, "--tracking-uri", "http://127.0.0.1:{silent}"],
     "cannot reach the MLflow tracking server"),
    ("search", [*SEARCH, "--tracking-uri", "ftp://example/mlflow"], "ftp://example/mlflow"),
    ("search", [*SEARCH, "--workers", "2"], "is a SQLite file"),
    ("search", ["--task", "cola", "--home", "{files}/empty.csv/home", "--seeds", "0"],
     "empty.csv', which is a file, not a folder"),
    # data and model, found once loading starts
    ("search", ["--task", "cola", "--data-dir", "{root}/nowhere", "--home", "{home}",
                "--no-baseline", "--seeds", "0"], "nowhere"),
    ("search", ["--task", "sst2", "--data-dir", "{badglue}", "--home", "{home}",
                "--no-baseline", "--seeds", "0"], "SST-2/train.tsv"),
    ("search", [*SEARCH, "--model", "{root}/no-model"], "no-model"),
    ("search", ["--task", "mine", "--train-file", "{files}/lopsided.csv", "--dev-file",
                "{files}/train.csv", "--home", "{home}", "--no-baseline", "--seeds", "0"],
     "cannot carve a 2 validation split"),
    ("search", [*SEARCH, "--model", "bert-base-cased"], "bert-base-cased"),
    # a study resumed with other settings
    ("search", [*SEARCH, "--study-name", "done", "--space", "{spaces}/other_lr.yaml"],
     "search space"),
    ("search", [*SEARCH, "--study-name", "done", "--space", TINY, "--max-train-samples",
                "300"], "number of training examples"),
    ("search", [*SEARCH, "--study-name", "done", "--space", TINY, "--select-on", "dev"],
     "selection split"),
    ("search", ["--task", "cola", "--data-dir", "{glue}", "--home", "{home}", "--study-name",
                "done", "--space", TINY, "--n-trials", "2", "--max-train-samples", "200",
                "--baseline-study", "done"], "not 'full'"),
    # the final evaluation on its own
    ("evaluate", ["--bitfit-study", "nosuch", "--home", "{home}", "--data-dir", "{glue}",
                  "--max-train-samples", "100"], "'nosuch'"),
    ("evaluate", ["--bitfit-study", "done", "--home", "{home}", "--seeds", "0"], "--seeds"),
    ("evaluate", ["--bitfit-study", "done", "--home", "{home}", "--processes", "0"],
     "--eval-processes must be"),
    ("evaluate", ["--bitfit-study", "done", "--full-study", "done", "--home", "{home}",
                  "--data-dir", "{glue}", "--max-train-samples", "100"], "not 'full'"),
    ("evaluate", ["--task", "rte", "--bitfit-study", "done", "--home", "{home}", "--data-dir",
                  "{glue}", "--max-train-samples", "100"], "not 'rte'"),
    ("evaluate", ["--bitfit-study", "done", "--home", "{home}", "--storage",
                  "postgres://u@h/db"], "postgresql://"),
    # data preparation
    ("prepare", ["--task", "cola", "--home", "{home}", "--max-length", "4"], "--max-length"),
    ("prepare", ["--task", "cola", "--home", "{home}", "--max-train-samples", "-5"], "-5"),
    # one training run on the user's own files
    ("train", [*TRAIN, "--train-file", "{files}/quote.csv", "--dev-file", "{files}/train.csv"],
     "quote.csv"),
    ("train", [*TRAIN, "--train-file", "{files}/empty_label.csv", "--dev-file",
               "{files}/train.csv"], "empty label (line 3)"),
    ("train", [*TRAIN, "--train-file", "{files}/train.csv", "--dev-file",
               "{files}/dev_extra.csv"], "'neutral'"),
    ("train", [*TRAIN, "--train-file", "{files}/table.xlsx", "--dev-file",
               "{files}/train.csv"], ".xlsx"),
    ("train", [*TRAIN, "--train-file", "{files}/latin1.csv", "--dev-file",
               "{files}/train.csv"], "UTF-8"),
    ("train", [*TRAIN, "--train-file", "{files}/empty.csv", "--dev-file",
               "{files}/train.csv"], "empty.csv"),
    ("train", [*TRAIN, "--train-file", "{files}/train.csv", "--dev-file", "{files}/train.csv",
               "--text-columns", "review"], "'review'"),
    ("train", [*TRAIN, "--train-file", "{files}/train.csv", "--dev-file", "{files}/train.csv",
               "--out", "{files}/out"], "--overwrite"),
    ("train", ["train", "--task", "cola", "--epochs", "0", "--home", "{home}"], "--epochs"),
    ("train", ["train", "--task", "cola", "--lr=-1e-3", "--home", "{home}"], "-0.001"),
    ("train", ["train", "--task", "nosuch", "--home", "{home}"], "'nosuch'"),
    # checked before the model loads: the device, the length, the folders, the test file
    ("train", ["train", "--task", "cola", "--device", "gpu", "--home", "{home}"],
     "--device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    ("train", ["train", "--task", "cola", "--device", "cuda:3", "--home", "{home}"],
     "--device cuda:3 asks for a GPU"),
    ("train", ["train", "--task", "cola", "--device", "cpu", "--precision", "fp16", "--home",
               "{home}"], "precision fp16 (with loss scaling) is for CUDA GPUs"),
    ("train", ["train", "--task", "cola", "--max-length", "100000", "--home", "{home}"],
     "--max-length 100000 is longer than the 512 tokens"),
    ("search", [*SEARCH, "--max-length", "100000"], "use 512 or less"),
    ("train", [*TRAIN, "--train-file", "{files}/train.csv", "--dev-file", "{files}/train.csv",
               "--out", "{files}/empty.csv/artifact"], "which is a file, not a folder"),
    ("train", ["train", "--task", "cola", "--home", "{files}/empty.csv/home"],
     "--home (or $BITFIT_HOME)"),
    ("train", [*TRAIN, "--train-file", "{files}/train.csv", "--dev-file", "{files}/dev_ok.csv",
               "--test-file", "{files}/train.csv"], "shares 4 of its 4 texts with the training"),
    ("search", ["--task", "mine", "--train-file", "{files}/train.csv", "--dev-file",
                "{files}/dev_ok.csv", "--test-file", "{files}/dev_ok.csv", "--home", "{home}"],
     "shares 2 of its 2 texts with the dev file"),
    ("search", ["--task", "mine", "--train-file", "{files}/train.csv", "--dev-file",
                "{files}/dev_ok.csv", "--test-file", "{files}/dev_extra.csv", "--home",
                "{home}"], "'neutral'"),
    ("train", [*TRAIN, "--train-file", "{files}/train.csv", "--dev-file", "{files}/train.csv",
               "--columns", "sentence,label"], "looks like a header row (sentence,label)"),
]


def _snapshot(home: Path) -> dict:
    """What must not change: every report and artifact file, and the finished study."""
    files = {str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in home.rglob("*") if p.is_file() and p.suffix not in (".db", ".lock")
             and "cache" not in p.parts and "artifacts" not in p.parts[:1]}
    with sqlite3.connect(home / "optuna.db") as db:
        trials = db.execute("SELECT t.number, t.state, s.study_name FROM trials t JOIN studies "
                            "s USING (study_id) ORDER BY s.study_name, t.number").fetchall()
    return {"files": files, "done": [t for t in trials if t[2] == "done"]}


def _running(home: Path) -> tuple[int, int]:
    with sqlite3.connect(home / "optuna.db") as db:
        trials = db.execute("SELECT count(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0]
    with sqlite3.connect(home / "mlflow.db") as db:
        runs = db.execute("SELECT count(*) FROM runs WHERE status = 'RUNNING'").fetchone()[0]
    return trials, runs


@pytest.mark.parametrize("entry, args, fragment", CASES,
                         ids=[f"{i:02d}-{c[0]}" for i, c in enumerate(CASES)])
def test_a_mistake_gets_one_sentence_and_exit_2(entry, args, fragment, places, capfd,
                                                monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("BITFIT_OPTUNA_STORAGE", raising=False)
    monkeypatch.chdir(places["root"])
    home = Path(places["home"])
    before = _snapshot(home)
    argv = [a.format(**places) for a in args]
    capfd.readouterr()

    try:
        code = _main(entry)(argv)
    except SystemExit as exit_:  # argparse's own refusals
        code = exit_.code
    out, err = capfd.readouterr()

    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2, (code, out[-2000:], err[-3000:])
    assert len(errors) == 1, err[-3000:]
    assert fragment.format(**places) in errors[0], errors[0]
    assert "Traceback" not in out + err, err[-3000:]
    assert "hunter2" not in out + err
    assert _running(home) == (0, 0)
    after = _snapshot(home)
    assert after["done"] == before["done"]
    assert {k: after["files"].get(k) for k in before["files"]} == before["files"]


def test_a_prefect_server_that_does_not_answer_is_an_error_before_any_work(places, capfd,
                                                                          monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("BITFIT_OPTUNA_STORAGE", raising=False)
    url = f"http://127.0.0.1:{places['free']}/api"
    capfd.readouterr()

    with temporary_settings(updates={PREFECT_API_URL: url}):
        code = _main("search")([*[a.format(**places) for a in SEARCH], "--study-name", "p"])
    out, err = capfd.readouterr()

    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and "Traceback" not in out + err, err[-3000:]
    assert f"cannot reach the Prefect server at PREFECT_API_URL={url}" in errors[0]


def test_a_run_whose_every_trial_failed_exits_1_with_the_first_reason(places, capfd,
                                                                     monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("BITFIT_OPTUNA_STORAGE", raising=False)
    home = Path(places["root"]) / "failing"
    capfd.readouterr()

    code = _main("search")(["--task", "cola", "--data-dir", places["glue"], "--home", str(home),
                            "--no-baseline", "--seeds", "1", "--space",
                            f"{places['spaces']}/pooler_only.yaml"])
    out, err = capfd.readouterr()

    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1, err[-3000:]
    assert "every trial of study" in errors[0] and "pooler" in errors[0]
    assert "Traceback" not in out + err
    assert _running(home) == (0, 0)
