from __future__ import annotations

import pytest

from bitfit.tasks import GLUE_TASKS, custom_task, load_task


def test_all_nine_glue_tasks_with_their_official_main_metric():
    mains = {name: t.main_metric for name, t in GLUE_TASKS.items()}

    assert mains == {"cola": "mcc", "sst2": "accuracy", "mrpc": "f1", "stsb": "pearson",
                     "qqp": "f1", "mnli": "accuracy", "qnli": "accuracy", "rte": "accuracy",
                     "wnli": "accuracy"}
    assert load_task("mnli").eval_splits == ("validation_matched", "validation_mismatched")
    assert load_task("STS-B").is_regression and load_task("stsb").num_labels == 1
    assert load_task("SST-2").num_labels == 2 and load_task("mnli").num_labels == 3


def test_unknown_task_names_the_choices_and_the_custom_route():
    with pytest.raises(ValueError, match=r"unknown task 'colaa'.*cola, sst2.*--train-file"):
        load_task("colaa")


def test_custom_tasks_are_classification_or_regression():
    reg = custom_task("prices", text_columns=("text",), regression=True)
    cls = custom_task("topics", text_columns=("a", "b"), label_names=("x", "y", "z"))

    assert reg.is_regression and reg.metrics == ("pearson", "spearman")
    assert not cls.is_regression and cls.num_labels == 3 and cls.main_metric == "accuracy"
    with pytest.raises(ValueError, match="one or two text columns"):
        custom_task("bad", text_columns=("a", "b", "c"))
