"""The pipeline as one library call on a user's own files, through the ``bitfit`` command."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bitfit.artifacts import Predictor
from bitfit.cli import _parser, main
from bitfit.pipeline import Config, check_device, worker_device
from tests.conftest import ROOT, TINY, TINY_FULL


def _headerless(source, target, rows: int, flip: int | None = None, skip: int = 0) -> None:
    lines = source.read_text(encoding="utf-8").splitlines()[1 + skip:rows + 1 + skip]
    if flip is not None:
        text, label = lines[flip].split("\t")
        lines[flip] = f"{text}\t{1 - int(label)}"
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.slow
def test_own_headerless_files_run_the_whole_pipeline_and_a_changed_file_is_a_new_study(
        glue_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("BITFIT_OPTUNA_STORAGE", raising=False)
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    _headerless(glue_dir / "SST-2" / "train.tsv", train, 300)
    _headerless(glue_dir / "SST-2" / "dev.tsv", dev, 100)
    test = tmp_path / "test.tsv"
    _headerless(glue_dir / "SST-2" / "dev.tsv", test, 80, skip=100)
    own = ["--task", "mine", "--train-file", str(train), "--dev-file", str(dev), "--columns",
           "sentence,label", "--home", str(tmp_path / "home"), "--json"]

    code = main(["search", *own, "--test-file", str(test), "--space", TINY,
                 "--baseline-space", TINY_FULL, "--seeds", "2",
                 "--eval-processes", "1"])
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
    # the test file: every seed scored on it, in the report too; no study selected on it
    assert "| bitfit | 2 |" in summary["evaluation"]["test_table"]
    assert set(summary["evaluation"]["test_runs"]) == set(summary["evaluation"]["runs"])
    assert summary["evaluation"]["test_runs"] != summary["evaluation"]["runs"]
    assert "## On the test file" in (Path(summary["evaluation"]["report"]) / "report.md"
                                     ).read_text()
    assert summary["selection_split"] == "heldout"
    # the first version of the task's model is its champion, measured after a held-out choice
    registration = summary["evaluation"]["registration"]
    assert registration["won"] and registration["uri"] == "models:/bitfit-mine@champion"
    assert registration["reason"].startswith("version 1 is the first of bitfit-mine")
    from mlflow.tracking import MlflowClient

    tags = MlflowClient(summary["tracking_uri"]).get_model_version("bitfit-mine", "1").tags
    assert (tags["selected_on"], tags["dev_rows"], tags["seeds"]) == ("heldout", "100", "2")

    _headerless(glue_dir / "SST-2" / "train.tsv", train, 300, flip=7)
    code = main(["search", *own, "--space", TINY, "--n-trials", "1", "--no-baseline",
                 "--seeds", "0"])
    again = json.loads(capsys.readouterr().out)

    assert code == 0 and again["trials"] == 1
    assert again["study_name"] != summary["study_name"]


def test_the_printed_evaluation_says_what_became_of_the_new_version():
    from bitfit.champion import Registration
    from bitfit.pipeline import EvaluationSummary, typed

    registration = Registration("bitfit-cola", 5, 3, "champion stays: version 3 (0.1210) beats "
                                "the new version 5 (0.0980) by 0.0230 on mean dev mcc; version "
                                "5 is the challenger", -0.023)
    summary = EvaluationSummary(
        table="| t |", test_table=None, task="cola", tracking_uri="u", experiment_id="1",
        registered_model=registration.uri, verdict=None, verdict_text="", majority_class=0.0,
        report="r", evaluation_run_id="e", best_artifact=None, recipe="",
        runs={}, registration=registration.as_dict())
    again = typed(json.loads(json.dumps(summary.as_dict())))  # as --json prints it

    assert again == summary and again.registration["champion"] == 3
    assert summary.lines()[-2:] == ["registered in MLflow as models:/bitfit-cola/5",
                                    f"  {registration.reason}"]
    assert f"Model registry: {registration.reason}." in summary.markdown()


@pytest.mark.parametrize("device, index, gpus, expected", [
    ("auto", 0, 2, "cuda:0"), ("auto", 3, 2, "cuda:1"), ("cuda", 2, 4, "cuda:2"),
    ("auto", 1, 0, "cpu"), ("cpu", 1, 2, "cpu"), ("cuda:1", 0, 2, "cuda:1"),
    ("cuda:3", 5, 0, "cuda:3"),
])
def test_worker_i_of_k_takes_gpu_i_mod_n(device, index, gpus, expected):
    assert worker_device(device, index, gpus) == expected


def test_a_worker_counts_the_gpus_of_the_machine_it_runs_on(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert [worker_device("auto", i) for i in range(4)] == ["cuda:0", "cuda:1", "cuda:2",
                                                             "cuda:0"]
    assert worker_device("cuda:1", 2) == "cuda:1"  # named: honoured whatever the index
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert worker_device("auto", 2) == "cpu"


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


def test_the_flows_parameters_are_the_pipeline_config():
    """Every deployment parameter reaches the pipeline: the flows take the config's fields."""
    from bitfit.orchestrate import WORKER_PARAMETERS

    sys.path.insert(0, str(ROOT / "flows"))
    import evaluate
    import prepare
    import search

    fields = {f.name for f in dataclasses.fields(Config)}
    assert set(search.search.parameters.properties) == fields
    # a study worker's one parameter of its own: its index, for its device (worker_device)
    assert set(search.study.parameters.properties) == {*WORKER_PARAMETERS, "worker"}
    assert set(WORKER_PARAMETERS) < fields
    assert set(evaluate.evaluate.parameters.properties) - fields == {"bitfit_study",
                                                                     "full_study"}
    assert set(prepare.prepare.parameters.properties) - fields == {"validation_fraction"}


def test_the_command_line_builds_the_config_it_names():
    from bitfit.commands import config

    args = _parser().parse_args(
        ["search", "--task", "mine", "--train-file", "t.tsv", "--validation-file", "d.tsv",
         "--test-file", "x.tsv", "--columns", "sentence,label", "--quick", "--no-baseline",
         "--extra-methods", "frozen", "--pooling", "mean", "--max-seq-length", "64",
         "--device", "cpu", "--home", "h"])
    c = config(args)
    assert (c.task, c.train_file, c.dev_file, c.test_file, c.columns, c.quick, c.baseline,
            c.extra_methods, c.pooling, c.max_length, c.device, c.home) == (
        "mine", "t.tsv", "d.tsv", "x.tsv", "sentence,label", True, False, ("frozen",),
        "mean", 64, "cpu", "h")
    resolved = c.resolved()
    assert (resolved.space, resolved.baseline_space) == ("quick", "full_ft_quick")
    assert not c.promote  # a new version is champion only if it wins, unless promoted
    for command in (["search"], ["evaluate", "--bitfit-study", "s"]):
        assert config(_parser().parse_args([*command, "--promote"])).promote


def test_bitfit_train_reads_headerless_files_and_scores_a_test_file(glue_dir, tmp_path, capsys):
    train, dev, test = (tmp_path / f"{n}.tsv" for n in ("train", "dev", "test"))
    _headerless(glue_dir / "SST-2" / "train.tsv", train, 120)
    _headerless(glue_dir / "SST-2" / "dev.tsv", dev, 40)
    _headerless(glue_dir / "SST-2" / "dev.tsv", test, 40, skip=40)

    code = main(["train", "--task", "mine", "--train-file", str(train), "--dev-file", str(dev),
                 "--test-file", str(test), "--columns", "sentence,label", "--epochs", "1",
                 "--home", str(tmp_path), "--json"])
    summary = json.loads(capsys.readouterr().out)

    assert code == 0 and summary["selection_split"] == "validation"
    assert set(summary["best_metrics"]) == {"validation", "test"}


@pytest.mark.slow
def test_a_script_without_a_main_guard_runs_its_trials_side_by_side(glue_dir, tmp_path):
    """The processes for trials side by side do not import the calling script again (as
    ``multiprocessing`` does by default): a script without a ``__main__`` guard runs once, and
    both processes train its trials."""
    import optuna

    script = tmp_path / "search.py"
    script.write_text(
        "from bitfit import pipeline\n"
        "print('script ran')\n"
        f"pipeline.run(pipeline.Config(task='cola', data_dir={str(glue_dir)!r}, space={TINY!r}, "
        f"n_trials=4, max_train_samples=512, baseline=False, seeds=0, trial_processes=2, "
        f"study_name='guardless', home={str(tmp_path / 'home')!r}))\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=240, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert done.stdout.count("script ran") == 1
    storage = f"sqlite:///{tmp_path / 'home' / 'optuna.db'}"
    study = optuna.load_study(study_name="guardless", storage=storage)
    finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                        optuna.trial.TrialState.PRUNED)]
    # trials long enough (16 steps) that the other process joins before this one is done
    assert len(finished) == 4 and len({t.user_attrs["owner"] for t in finished}) == 2


@pytest.mark.slow
def test_trials_side_by_side_in_local_processes_share_one_study_on_one_home(
        glue_dir, tmp_path, capfd, monkeypatch):
    import optuna
    from mlflow.tracking import MlflowClient

    from bitfit import pipeline

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("BITFIT_OPTUNA_STORAGE", raising=False)
    config = Config(task="cola", data_dir=str(glue_dir), space=TINY, n_trials=4,
                    max_train_samples=200, baseline=False, seeds=0, trial_processes=2,
                    home=str(tmp_path))
    summary = pipeline.run(config)

    study = optuna.load_study(study_name=summary["study_name"], storage=summary["storage"])
    finished = [t for t in study.trials if t.state.is_finished()
                and "over the study's budget" not in t.user_attrs.get("fail_reason", "")]
    assert sorted(t.number for t in finished) == [0, 1, 2, 3]
    assert len({t.user_attrs["owner"] for t in finished}) == 2  # both processes ran trials
    assert len({tuple(t.params.items()) for t in finished}) == 4
    assert summary["trials_run"] == len(study.trials) and summary["best_value"] is not None
    children = MlflowClient(summary["tracking_uri"]).search_runs(
        [summary["experiment_id"]],
        filter_string=f"tags.mlflow.parentRunId = '{summary['mlflow_parent_run_id']}'")
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == [0, 1, 2, 3]
    err = capfd.readouterr().err
    assert "trials side by side in 2 processes" in err and "trial 4 of 4" in err
    assert all(f"trial #{n} started (" in err for n in range(4))  # each says what it tries
    assert "A new study created" not in err  # Optuna's own line: ours say it


def test_every_config_field_has_its_search_flag_and_flow_parameter_with_its_default():
    """An option is typed in three places (the config, ``bitfit search``, the search flow):
    each field has its flag and its parameter, with the config's default."""
    import inspect

    sys.path.insert(0, str(ROOT / "flows"))
    import search

    args = _parser().parse_args(["search"])
    flow = inspect.signature(search.search.fn).parameters
    for field in dataclasses.fields(Config):
        assert flow[field.name].default == field.default, field.name
        if field.name == "baseline":  # --no-baseline
            assert args.no_baseline is (not field.default)
        elif field.name == "home":  # the parser shows $BITFIT_HOME's folder
            assert args.home is not None
        else:
            assert getattr(args, field.name) == field.default or (
                field.name == "extra_methods" and tuple(args.extra_methods) == field.default
            ), field.name


@pytest.mark.parametrize(("change", "sentence"), [
    ({"n_trials": 0}, "--n-trials must be a whole number of 1 or more, got 0"),
    ({"workers": True}, "--workers must be a whole number of 1 or more, got True"),
    ({"select_on": "test"}, "--select-on must be heldout or dev, got 'test'"),
    ({"extra_methods": ("lora",)}, "extra method 'lora' is not one of frozen, rand"),
    ({"device": "gpu"}, "--device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
])
def test_a_config_refuses_a_bad_value_when_it_is_made(change, sentence):
    with pytest.raises(ValueError, match="^" + re.escape(sentence) + "$"):
        Config(**change)
    with pytest.raises(ValueError, match=re.escape(sentence)):
        dataclasses.replace(Config(), **change)
