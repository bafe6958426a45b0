from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from bitfit.artifacts import load_artifact
from bitfit.cli import main
from tests.conftest import ROOT, TINY


@pytest.mark.slow
def test_train_command_prints_one_json_object_and_writes_the_artifact(glue_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "bitfit", "train", "--task", "rte", "--data-dir", str(glue_dir),
         "--max-train-samples", "64", "--epochs", "1", "--home", str(tmp_path), "--json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=True)

    summary = json.loads(out.stdout)
    assert {"task", "method", "metrics", "best_metrics", "trainable_params",
            "trainable_fraction", "artifact"} <= set(summary)
    assert summary["task"] == "rte" and summary["method"] == "bitfit"
    assert 0 <= summary["metrics"]["validation"]["accuracy"] <= 1
    assert os.path.isfile(os.path.join(summary["artifact"], "trained.safetensors"))
    assert list((tmp_path / "cache").glob("rte-*.parquet"))


def test_human_output_names_metric_fraction_and_artifact(glue_dir, tmp_path, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "manifest.json").write_text("{}")  # an earlier artifact, replaced on purpose
    code = main(["train", "--task", "wnli", "--data-dir", str(glue_dir), "--epochs", "1",
                 "--max-train-samples", "32", "--home", str(tmp_path), "--no-progress",
                 "--out", str(out_dir), "--overwrite"])

    out = capsys.readouterr().out
    assert code == 0
    assert "validation accuracy" in out and "trainable parameters:" in out and "%)" in out
    assert f"artifact: {out_dir}" in out
    assert load_artifact(out_dir)[0]["task"]["name"] == "wnli"


def test_a_diverged_run_writes_no_artifact_and_exits_1(glue_dir, tmp_path, capsys):
    code = main(["train", "--task", "wnli", "--data-dir", str(glue_dir), "--epochs", "1",
                 "--max-train-samples", "32", "--batch-size", "4", "--lr", "1e30",
                 "--home", str(tmp_path), "--out", str(tmp_path / "out"), "--json"])

    captured = capsys.readouterr()
    assert code == 1 and not (tmp_path / "out").exists()
    summary = json.loads(captured.out)
    assert summary["status"] == "diverged" and summary["artifact"] is None
    (line,) = captured.err.splitlines()
    assert re.fullmatch(r"error: the run diverged and wrote no artifact: loss became (nan|-?inf) "
                        r"at step \d+ \(epoch 1\): lower the learning rate \(now 1e\+30\)", line)


@pytest.fixture
def no_loading(monkeypatch):
    """Fails the test if the model or the data start loading: these mistakes are cheaper."""
    def loading(*args, **kwargs):
        raise AssertionError("loaded the model or the data before refusing the arguments")

    monkeypatch.setattr("bitfit.models.load_base", loading)
    monkeypatch.setattr("bitfit.data.prepare", loading)


def _one_error_line(capsys, message):
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [captured.err.strip()]  # exactly one line
    assert captured.err.startswith("error: ") and message in captured.err
    assert "Traceback" not in captured.err + captured.out


EARLY = [
    (["--epochs", "0"], "--epochs must be a whole number of 1 or more, got 0"),
    (["--epochs", "-3"], "--epochs must be a whole number of 1 or more, got -3"),
    (["--batch-size", "0"], "--batch-size must be a whole number of 1 or more, got 0"),
    (["--max-train-samples", "0"],
     "--max-train-samples must be a whole number of 1 or more, got 0"),
    (["--max-length", "0"], "--max-length must be a whole number of 8 or more, got 0"),
    (["--eval-every", "-1"], "--eval-every must be a whole number of 1 or more, got -1"),
    (["--seed", "-1"], "--seed must be a whole number of 0 or more, got -1"),
    (["--lr", "-1"], "--lr must be a number above 0 (e.g. 1e-3), got -1.0"),
    (["--lr", "0"], "--lr must be a number above 0 (e.g. 1e-3), got 0.0"),
    (["--lr", "nan"], "--lr must be a number above 0 (e.g. 1e-3), got nan"),
    (["--weight-decay", "-0.1"], "--weight-decay must be a number >= 0, got -0.1"),
    (["--warmup-ratio", "1.5"], "warmup_ratio must be in [0, 1), got 1.5"),
    (["--subset", "q+zz"], "unknown bias subset 'q+zz'"),
    (["--task", "colaa"], "unknown task 'colaa'"),
]


@pytest.mark.parametrize("args, message", EARLY)
def test_impossible_arguments_are_refused_before_loading(tmp_path, capsys, no_loading, args,
                                                         message):
    assert main(["train", "--task", "cola", "--home", str(tmp_path), *args]) == 2
    _one_error_line(capsys, message)


def test_a_used_out_folder_is_refused_before_loading_unless_overwrite(tmp_path, capsys,
                                                                      no_loading):
    used = tmp_path / "used"
    used.mkdir()
    (used / "manifest.json").write_text("{}")
    (tmp_path / "file").write_text("")

    assert main(["train", "--task", "cola", "--out", str(used)]) == 2
    _one_error_line(capsys, f"error: --out {used} already exists and is not empty: pass "
                            f"--overwrite to replace the artifact in it, or choose a new folder")
    assert main(["train", "--task", "cola", "--out", str(tmp_path / "file")]) == 2
    _one_error_line(capsys, f"--out {tmp_path / 'file'} is a file, not a folder")
    (tmp_path / "empty").mkdir()
    for args in (["--out", str(used), "--overwrite"], ["--out", str(tmp_path / "empty")]):
        with pytest.raises(AssertionError, match="loaded the model"):  # accepted: it loads
            main(["train", "--task", "cola", "--home", str(tmp_path), *args])


def test_a_mistake_found_while_loading_is_one_sentence_too(glue_dir, tmp_path, capsys):
    assert main(["train", "--task", "cola", "--data-dir", str(tmp_path),
                 "--home", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "CoLA/train.tsv" in err and "Traceback" not in err


@pytest.mark.slow
def test_bitfit_search_runs_the_whole_pipeline_without_prefect(glue_dir, tmp_path, capsys,
                                                               monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("BITFIT_OPTUNA_STORAGE", raising=False)

    code = main(["search", "--task", "cola", "--data-dir", str(glue_dir), "--space", TINY,
                 "--n-trials", "1", "--max-train-samples", "200", "--no-baseline", "--seeds", "1",
                 "--eval-processes", "1", "--home", str(tmp_path), "--json"])
    summary = json.loads(capsys.readouterr().out)

    assert code == 0 and summary["trials"] == 1 and summary["study_name"] == "cola-tiny-n200"
    assert "| bitfit | 1 |" in summary["evaluation"]["table"]
    assert (tmp_path / "evaluations" / "cola-tiny-n200-vs-none-s1" / "report.md").is_file()
