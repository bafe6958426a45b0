from __future__ import annotations

import json
import os
import subprocess
import sys

from bitfit.cli import main
from tests.conftest import ROOT


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
    code = main(["train", "--task", "wnli", "--data-dir", str(glue_dir), "--epochs", "1",
                 "--max-train-samples", "32", "--home", str(tmp_path), "--no-progress"])

    out = capsys.readouterr().out
    assert code == 0
    assert "validation accuracy" in out and "trainable parameters:" in out and "%)" in out
    assert f"artifact: {tmp_path}" in out


def test_mistakes_get_one_sentence_and_exit_code_2(glue_dir, tmp_path, capsys):
    cases = [
        (["--task", "cola", "--subset", "q+zz"], "unknown bias subset 'q+zz'"),
        (["--task", "colaa"], "unknown task 'colaa'"),
        (["--task", "cola", "--data-dir", str(tmp_path)], "CoLA/train.tsv"),
        (["--task", "cola", "--lr", "-1"], "learning_rate must be > 0, got -1.0"),
    ]
    for args, message in cases:
        assert main(["train", *args, "--home", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err
