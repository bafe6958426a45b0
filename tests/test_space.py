from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from bitfit.space import SpaceError, load_space


@pytest.mark.parametrize("name", ["bitfit", "full_ft", "terms", "quick"])
def test_every_shipped_space_loads(name):
    space = load_space(name)

    assert space.name == name and space.n_trials >= 1 and space.distributions


def test_the_bitfit_space_in_optunas_own_objects():
    space = load_space("bitfit")

    assert space.distributions["learning_rate"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert space.distributions["subset"] == CategoricalDistribution(
        ["all", "qm2", "attention", "mlp", "layernorm"])
    config = space.config_for({"learning_rate": 3e-3, "subset": "qm2"})
    assert (config.method, config.subset, config.learning_rate, config.epochs) == (
        "bitfit", "qm2", 3e-3, 3)


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
     "key 'params.subset': unknown bias subset 'q+m9'"),
    ("pruner: {name: patient}\nparams: {learning_rate: {type: float, low: 0.1, high: 1}}",
     "key 'pruner.name': must be one of none, median, hyperband, threshold, got 'patient'"),
    ("n_trials: many\nparams: {learning_rate: {type: float, low: 0.1, high: 1}}",
     "key 'n_trials': expected int, got 'many'"),
    ("params: {learning_rate: {type: normal, low: 0.1, high: 1}}",
     "key 'params.learning_rate.type': must be float, int or categorical"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_a_bad_space_names_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)

    with pytest.raises(SpaceError) as err:
        load_space(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_an_unknown_space_lists_the_shipped_ones():
    shipped = "bitfit, full_ft, full_ft_quick, quick, terms"
    with pytest.raises(FileNotFoundError, match=rf"'bitfti'.*{shipped}"):
        load_space("bitfti")
