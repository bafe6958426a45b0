"""The pipeline as one library call on a user's own files, through the ``bitfit`` command."""

from __future__ import annotations

import json

import pytest

from bitfit.artifacts import Predictor
from bitfit.cli import _parser, main
from bitfit.pipeline import check_device, worker_device


def _headerless(source, target, rows: int, flip: int | None = None) -> None:
    lines = source.read_text(encoding="utf-8").splitlines()[1:rows + 1]  # drop the header
    if flip is not None:
        text, label = lines[flip].split("\t")
        lines[flip] = f"{text}\t{1 - int(label)}"
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_own_headerless_files_run_the_whole_pipeline_and_a_changed_file_is_a_new_study(
        glue_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("BITFIT_OPTUNA_STORAGE", raising=False)
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    _headerless(glue_dir / "SST-2" / "train.tsv", train, 300)
    _headerless(glue_dir / "SST-2" / "dev.tsv", dev, 100)
    own = ["--task", "mine", "--train-file", str(train), "--dev-file", str(dev), "--columns",
           "sentence,label", "--home", str(tmp_path / "home"), "--json"]

    code = main(["search", *own, "--quick", "--seeds", "2", "--eval-processes", "1"])
    summary = json.loads(capsys.readouterr().out)

    assert code == 0
    assert summary["study_name"].startswith("mine-") and summary["trials"] == 4
    assert summary["baseline"]["trials"] == 2
    table = summary["evaluation"]["table"]
    assert "| bitfit | 2 |" in table and "| full | 2 |" in table
    assert set(summary["evaluation"]["runs"]) == {"bitfit-seed0", "bitfit-seed1",
                                                  "full-seed0", "full-seed1"}
    predict = Predictor(summary["evaluation"]["best_artifact"])
    assert set(predict(["a wonderful, moving film", "dull and lifeless"])) <= {"0", "1"}
    assert predict.manifest["task"]["name"] == "mine"

    _headerless(glue_dir / "SST-2" / "train.tsv", train, 300, flip=7)
    code = main(["search", *own, "--quick", "--n-trials", "1", "--no-baseline", "--seeds", "0"])
    again = json.loads(capsys.readouterr().out)

    assert code == 0 and again["trials"] == 1
    assert again["study_name"] != summary["study_name"]


@pytest.mark.parametrize("device, index, gpus, expected", [
    ("auto", 0, 2, "cuda:0"), ("auto", 3, 2, "cuda:1"), ("cuda", 2, 4, "cuda:2"),
    ("auto", 1, 0, "auto"), ("cpu", 1, 2, "cpu"), ("cuda:1", 0, 2, "cuda:1"),
])
def test_worker_i_of_k_takes_gpu_i_mod_n(device, index, gpus, expected):
    assert worker_device(device, index, gpus) == expected


def test_a_device_that_is_not_there_is_refused_by_name():
    import torch

    with pytest.raises(ValueError, match="--device must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        check_device("gpu")
    missing = f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(ValueError, match=f"--device {missing} asks for a GPU"):
        check_device(missing)
    check_device("cpu")


def test_run_glue_spellings_are_aliases_of_ours():
    args = _parser().parse_args(
        ["train", "--task", "cola", "--learning-rate", "2e-5", "--num-train-epochs", "2",
         "--per-device-train-batch-size", "16", "--max-seq-length", "64",
         "--model-name-or-path", "m", "--output-dir", "o", "--validation-file", "d.csv"])
    assert (args.lr, args.epochs, args.batch_size, args.max_length, args.model, args.out,
            args.dev_file) == (2e-5, 2, 16, 64, "m", "o", "d.csv")
    search = _parser().parse_args(["search", "--model-name-or-path", "m", "--validation-file",
                                   "d.tsv", "--device", "cpu"])
    assert (search.model, search.dev_file, search.device) == ("m", "d.tsv", "cpu")
