from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from bitfit.space import SpaceError, check_metric, load_space
from bitfit.tasks import custom_task, load_task

LR = "\nparams: {learning_rate: {type: float, low: 0.001, high: 0.01}}"


@pytest.mark.parametrize("name", ["bitfit", "full_ft", "terms", "quick"])
def test_every_shipped_space_loads(name):
    space = load_space(name)

    assert space.name == name and space.n_trials >= 1 and space.distributions


def test_the_bitfit_space_in_optunas_own_objects():
    space = load_space("bitfit")

    assert space.distributions["learning_rate"] == FloatDistribution(3e-4, 5e-3, log=True)
    assert space.distributions["subset"] == CategoricalDistribution(
        ["all", "qm2", "attention", "mlp", "layernorm"])
    assert space.distributions["schedule"] == CategoricalDistribution(["linear", "constant"])
    config = space.config_for({"learning_rate": 3e-3, "subset": "qm2", "epochs": 8,
                               "batch_size": 16, "schedule": "constant"})
    assert (config.method, config.subset, config.learning_rate, config.epochs,
            config.batch_size, config.schedule) == ("bitfit", "qm2", 3e-3, 8, 16, "constant")


def test_term_switches_compose_a_subset_and_none_is_head_only():
    space = load_space("terms")

    on = space.config_for({"learning_rate": 1e-3, "term_q": True, "term_m2": True,
                           "term_k": False})
    off = space.config_for({"learning_rate": 1e-3, "term_q": False})

    assert (on.method, on.subset) == ("bitfit", "q+m2")
    assert off.method == "frozen"


def test_full_ft_is_a_grid_over_four_learning_rates():
    space = load_space("full_ft")

    assert space.method == "full" and space.sampler["name"] == "grid"
    assert space.distributions["learning_rate"].choices == (1e-5, 2e-5, 3e-5, 5e-5)


BAD = [
    ("n_trails: 3\nparams: {learning_rate: {type: float, low: 0.1, high: 1}}",
     "key 'n_trails': unknown key"),
    ("params: {learning_rate: {type: float, low: 0.1, high: 1, lgo: true}}",
     "key 'params.learning_rate.lgo': unknown key"),
    ("params: {lr: {type: float, low: 0.1, high: 1}}", "key 'params.lr': unknown key"),
    ("params: {learning_rate: {type: float, low: high, high: 1}}",
     "key 'params.learning_rate.low': expected float, got 'high'"),
    ("params: {subset: {type: categorical, choices: []}}",
     "key 'params.subset.choices': needs a non-empty list"),
    ("params: {learning_rate: {type: float, low: 0.1, high: 0.01}}",
     "key 'params.learning_rate': low must be < high, got low=0.1 high=0.01"),
    ("params: {subset: {type: categorical, choices: [all, q+m9]}}",
     "key 'params.subset.choices': unknown bias subset 'q+m9'"),
    ("pruner: {name: patient}\nparams: {learning_rate: {type: float, low: 0.1, high: 1}}",
     "key 'pruner.name': must be one of none, median, hyperband, threshold, got 'patient'"),
    ("n_trials: many\nparams: {learning_rate: {type: float, low: 0.1, high: 1}}",
     "key 'n_trials': expected int, got 'many'"),
    ("params: {learning_rate: {type: normal, low: 0.1, high: 1}}",
     "key 'params.learning_rate.type': must be float, int or categorical"),
    ("params: {learning_rate: {type: float, low: 0.001, high: 0.01}, "
     "learning_rate: {type: float, low: 0.01, high: 0.1}}",
     "not valid YAML at line 1, column 64: the key 'learning_rate' appears twice; keep one"),
    ("train: [1]" + LR, "key 'train': expected a mapping, got list"),
    # the top level
    ("method: 3" + LR, "key 'method': must be one of bitfit, full, frozen, rand, lora, got 3"),
    ("n_trials: 0" + LR, "key 'n_trials': must be >= 1, got 0"),
    ("max_train_samples: 0" + LR, "key 'max_train_samples': must be >= 1, got 0"),
    ("max_train_samples: 2.5e3" + LR,
     "key 'max_train_samples': expected int or null, got 2500.0"),
    ("max_length: 4" + LR, "key 'max_length': must be >= 8, got 4"),
    ("objective: {metric: 5}" + LR, "key 'objective.metric': expected str, got 5"),
    # fixed training settings, typed as TrainConfig's fields
    ("train: {epochs: 1.5}" + LR, "key 'train.epochs': expected int, got 1.5"),
    ("train: {epochs: true}" + LR, "key 'train.epochs': expected int, got True"),
    ("train: {dropout: high}" + LR, "key 'train.dropout': expected float or null, got 'high'"),
    ("train: {learning_rate: .inf}\nparams: {subset: {type: categorical, choices: [all]}}",
     "key 'train.learning_rate': expected float, got inf"),
    ("train: {warmup_ratio: 2}" + LR,
     "key 'train.warmup_ratio': warmup_ratio must be in [0, 1), got 2.0"),
    ("train: {seed: -1}" + LR, "key 'train.seed': must be >= 0, got -1"),
    ("train: {group_by_length: 1}" + LR, "key 'train.group_by_length': expected bool, got 1"),
    ("train: {subset: q+zz}" + LR, "key 'train.subset': unknown bias subset 'q+zz'"),
    ("train: {precision: fp8}" + LR,
     "key 'train.precision': precision must be one of auto, fp32, bf16, fp16, got 'fp8'"),
    # sampler and pruner options, as Optuna expects them
    ("sampler: {seed: 1.5}" + LR, "key 'sampler.seed': expected int or null, got 1.5"),
    ("sampler: {n_startup_trials: -1}" + LR,
     "key 'sampler.n_startup_trials': must be >= 0, got -1"),
    ("sampler: {multivariate: 'yes'}" + LR,
     "key 'sampler.multivariate': expected bool, got 'yes'"),
    ("sampler: {name: random, multivariate: true}" + LR,
     "key 'sampler.multivariate': unknown key; allowed: name, seed"),
    ("pruner: {name: median, n_warmup_steps: 0.5}" + LR,
     "key 'pruner.n_warmup_steps': expected int, got 0.5"),
    ("pruner: {name: median, interval_steps: 0}" + LR,
     "key 'pruner.interval_steps': must be >= 1, got 0"),
    ("pruner: {name: threshold}" + LR, "key 'pruner': threshold needs lower or upper"),
    ("pruner: {name: threshold, lower: 0.9, upper: 0.1}" + LR,
     "key 'pruner.lower': must be <= upper, got lower=0.9 upper=0.1"),
    ("pruner: {name: threshold, upper: high}" + LR,
     "key 'pruner.upper': expected float or null, got 'high'"),
    ("pruner: {name: hyperband, reduction_factor: 1}" + LR,
     "key 'pruner.reduction_factor': must be >= 2, got 1"),
    ("pruner: {name: hyperband, max_resource: many}" + LR,
     "key 'pruner.max_resource': expected int or 'auto', got 'many'"),
    ("pruner: {name: hyperband, min_resource: 3, max_resource: 2}" + LR,
     "key 'pruner.max_resource': must be >= min_resource (3), got 2"),
    # ranges: the distribution's type must fit the setting's
    ("params: {epochs: {type: float, low: 1, high: 3}}",
     "key 'params.epochs.type': epochs is a whole number; use type int"),
    ("params: {subset: {type: int, low: 1, high: 3}}",
     "key 'params.subset.type': subset takes str values, not numbers from a range"),
    ("params: {term_q: {type: float, low: 0, high: 1}}",
     "key 'params.term_q.type': term_q takes bool values"),
    ("params: {learning_rate: {type: float, low: 0.001, high: 0.1, step: 0}}",
     "key 'params.learning_rate.step': must be > 0, got 0.0"),
    ("params: {learning_rate: {type: float, low: 0.001, high: 0.1, log: true, step: 0.001}}",
     "key 'params.learning_rate': step and log cannot be combined"),
    ("params: {learning_rate: {type: float, low: 0.001, high: 0.1, log: 'yes'}}",
     "key 'params.learning_rate.log': expected bool, got 'yes'"),
    ("params: {epochs: {type: int, low: 1, high: 4, step: 2}}",
     "key 'params.epochs.step': high - low is not a multiple of step 2; set high to 3"),
    # both bounds of a range make a valid TrainConfig
    ("params: {epochs: {type: int, low: 0, high: 3}}",
     "key 'params.epochs.low': epochs must be >= 1, got 0"),
    ("params: {warmup_ratio: {type: float, low: 0, high: 1.5}}",
     "key 'params.warmup_ratio.high': warmup_ratio must be in [0, 1), got 1.5"),
    # every categorical choice is typed and makes a valid TrainConfig, not just the first
    ("params: {learning_rate: {type: categorical, choices: [1e-3, -1e-5]}}",
     "key 'params.learning_rate.choices': learning_rate must be > 0, got -1e-05"),
    ("params: {learning_rate: {type: categorical, choices: [1e-3, fast]}}",
     "key 'params.learning_rate.choices': expected float, got 'fast'"),
    ("params: {subset: {type: categorical, choices: [all, 3]}}",
     "key 'params.subset.choices': expected str, got 3"),
    ("params: {term_q: {type: categorical, choices: [true, 1]}}",
     "key 'params.term_q.choices': expected bool, got 1"),
    ("params: {epochs: {type: categorical, choices: [1, 2.5]}}",
     "key 'params.epochs.choices': expected int, got 2.5"),
    ("params: {epochs: {type: categorical, choices: [1, 0]}}",
     "key 'params.epochs.choices': epochs must be >= 1, got 0"),
    ("params: {subset: {type: categorical, choices: [qm2, all, qm2]}}",
     "key 'params.subset.choices': 'qm2' is listed twice; list each choice once"),
    ("params: {learning_rate: {type: categorical, choices: [1e-3, 0.001]}}",
     "key 'params.learning_rate.choices': 0.001 is listed twice"),
    # parameters that contradict each other
    ("train: {learning_rate: 0.001}" + LR,
     "key 'params.learning_rate': is fixed under train too"),
    ("method: full\nparams: {subset: {type: categorical, choices: [all, qm2]}}",
     "key 'params.subset': method full trains no bias subset"),
    ("params: {subset: {type: categorical, choices: [all]}, "
     "term_q: {type: categorical, choices: [true, false]}}",
     "key 'params.subset': the term_* switches already choose the bias terms; remove subset"),
    ("sampler: {name: grid}" + LR, "key 'sampler.name': grid needs every parameter to be "
     "categorical"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_a_bad_space_names_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)

    with pytest.raises(SpaceError) as err:
        load_space(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_yaml_1_2_floats_load_as_floats_and_make_float_learning_rates(tmp_path):
    path = tmp_path / "lr.yaml"
    path.write_text("method: full\nsampler: {name: grid}\ntrain: {warmup_ratio: .5}\n"
                    "params: {learning_rate: {type: categorical, choices: [1e-5, 2E-5, -.5e-4]}}")
    with pytest.raises(SpaceError, match="got -5e-05"):  # read as a number, refused as one
        load_space(path)
    path.write_text(path.read_text().replace(", -.5e-4", ""))

    space = load_space(path)

    assert space.distributions["learning_rate"].choices == (1e-5, 2e-5)
    configs = [space.config_for({"learning_rate": lr}) for lr in (1e-5, 2e-5)]
    assert [c.learning_rate for c in configs] == [1e-5, 2e-5]
    assert all(type(c.learning_rate) is float for c in configs)
    assert space.fixed["warmup_ratio"] == 0.5


def test_float_settings_take_ints_and_nullable_ones_take_null(tmp_path):
    path = tmp_path / "ints.yaml"
    path.write_text("train: {weight_decay: 0, dropout: null}\nparams:\n"
                    "  learning_rate: {type: float, low: 1e-4, high: 1E-2, log: true}\n"
                    "  max_grad_norm: {type: int, low: 1, high: 3}\n"
                    "  eval_every: {type: categorical, choices: [null, 50]}\n")

    space = load_space(path)
    config = space.config_for({"learning_rate": 1e-3, "max_grad_norm": 2, "eval_every": None})

    assert space.distributions["learning_rate"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert type(space.fixed["weight_decay"]) is float and space.fixed["dropout"] is None
    assert type(config.max_grad_norm) is float and config.eval_every is None


def test_check_metric_resolves_main_and_refuses_a_metric_the_task_lacks(tmp_path):
    path = tmp_path / "f1.yaml"
    path.write_text("objective: {metric: f1}" + LR)
    f1 = load_space(path)  # the task is not known yet: loading alone accepts it

    assert check_metric(load_space("bitfit"), load_task("cola")) == "mcc"
    assert check_metric(f1, load_task("mrpc")) == "f1"
    with pytest.raises(SpaceError) as err:
        check_metric(f1, load_task("cola"))
    assert str(err.value) == ("search space 'f1' optimises objective.metric 'f1', which task "
                              "'cola' does not have: set it to main or one of mcc, accuracy")
    regression = custom_task("scores", text_columns=("text",), regression=True)
    with pytest.raises(SpaceError, match="one of pearson, spearman"):
        check_metric(f1, regression)


def test_an_unknown_space_lists_the_shipped_ones():
    shipped = "bitfit, full_ft, full_ft_quick, quick, terms"
    with pytest.raises(FileNotFoundError, match=rf"'bitfti'.*{shipped}"):
        load_space("bitfti")
