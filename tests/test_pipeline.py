"""The pipeline as one library call on a user's own files, through the ``bitfit`` command."""

from __future__ import annotations

import json

from bitfit.artifacts import Predictor
from bitfit.cli import main


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
