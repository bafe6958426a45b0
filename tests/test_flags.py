"""Every command line takes Hugging Face's spellings of its flags, says its version, and refuses a
flag it does not know with the closest one it does."""

from __future__ import annotations

import re

import pytest

from bitfit.cli import _parser
from bitfit.commands import parser
from bitfit.flags import EPILOG


def test_every_dashed_flag_takes_its_underscore_spelling_and_hugging_faces_names():
    train = _parser().parse_args(
        ["train", "--task", "cola", "--learning_rate", "2e-5", "--num_train_epochs", "2",
         "--per_device_train_batch_size=16", "--max_seq_length", "64", "--model_name_or_path",
         "m", "--output_dir", "o", "--seed", "3", "--warmup_ratio", "0.2"])
    assert (train.lr, train.epochs, train.batch_size, train.max_length, train.model, train.out,
            train.seed, train.warmup_ratio) == (2e-5, 2, 16, 64, "m", "o", 3, 0.2)
    # the pipeline's commands: --output_dir is the run home, a value keeps its underscores
    search = parser("search", "s").parse_args(
        ["--n_trials", "3", "--study_name=a_b", "--output_dir", "h", "--extra_methods", "rand"])
    assert (search.n_trials, search.study_name, search.home, search.extra_methods) == (
        3, "a_b", "h", ["rand"])
    reproduce = _parser().parse_args(["reproduce", "--num_train_epochs", "2", "--curve_task",
                                      "none"])
    assert (reproduce.epochs, reproduce.curve_task) == (2, "none")


def test_help_lists_no_alias_and_says_in_one_line_that_they_work(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["search", "--help"])
    text = capsys.readouterr().out
    options = text[:text.index("Flags take")]

    assert not re.findall(r"--\w+_\w+", options)  # no underscore spelling listed
    assert " ".join(EPILOG.split()) in " ".join(text.split())


@pytest.mark.parametrize(("argv", "suggested"), [
    (["search", "--n-trails", "3"], "--n-trials"),
    (["train", "--task", "cola", "--learnig_rate", "1e-3"], "--learning-rate"),
    (["reproduce", "--max-trian-samples", "10"], "--max-train-samples"),
])
def test_an_unknown_flag_is_refused_with_the_closest_known_one(capsys, argv, suggested):
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(argv)

    assert exit_.value.code == 2
    assert f"unrecognized arguments: {argv[-2]} {argv[-1]} (did you mean {suggested}?)" in (
        capsys.readouterr().err)


def test_a_flag_far_from_every_known_one_is_refused_without_a_guess(capsys):
    with pytest.raises(SystemExit):
        parser("search", "s").parse_args(["--zzz"])

    assert capsys.readouterr().err.rstrip().endswith("unrecognized arguments: --zzz")
