"""Search spaces: a YAML file in Optuna's own vocabulary, parsed once into a validated config.

``params`` maps a training setting (``learning_rate``, ``subset``, ``epochs``, ...) or a bias term
switch (``term_q``, ``term_m2``, ...) to a distribution written with the names of
``optuna.distributions``: ``{type: float, low, high, log}``, ``{type: int, low, high, step}``,
``{type: categorical, choices}``. ``train`` holds the fixed settings, and the rest says what to
optimise and how (method, objective, sampler, pruner, number of trials).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)

from bitfit.biases import METHODS, TERMS, parse_subset
from bitfit.train import TrainConfig

SPACES_DIR = Path(__file__).resolve().parents[1] / "search_spaces"
_TOP = {"method", "n_trials", "objective", "sampler", "pruner", "train", "params",
        "max_train_samples", "max_length"}
_TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)} - {"method"}
_SAMPLERS = {"tpe": {"seed", "n_startup_trials", "multivariate"}, "random": {"seed"},
             "grid": {"seed"}}
_PRUNERS = {"none": set(), "median": {"n_startup_trials", "n_warmup_steps", "interval_steps"},
            "hyperband": {"min_resource", "max_resource", "reduction_factor"},
            "threshold": {"lower", "upper", "n_warmup_steps"}}
_DISTRIBUTIONS = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"},
                  "categorical": {"choices"}}


class SpaceError(ValueError):
    """A search-space file with an unknown key, a wrong type or an impossible range."""


@dataclass(frozen=True)
class SearchSpace:
    """A parsed search space. ``distributions`` are Optuna's own objects."""

    name: str
    method: str
    n_trials: int
    distributions: dict[str, BaseDistribution]
    fixed: dict[str, Any] = field(default_factory=dict)
    metric: str = "main"
    direction: str = "maximize"
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "tpe", "seed": 0})
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": "median"})
    max_train_samples: int | None = None
    max_length: int = 128

    def config_for(self, values: dict[str, Any]) -> TrainConfig:
        """The training config of one trial from the values Optuna suggested."""
        settings = {**self.fixed, **{k: v for k, v in values.items()
                                     if not k.startswith("term_")}}
        method = self.method
        terms = [k.removeprefix("term_") for k, v in values.items()
                 if k.startswith("term_") and v]
        if any(k.startswith("term_") for k in values):
            if terms:
                settings["subset"] = "+".join(terms)
            else:  # every term switched off: that is the head-only baseline
                method = "frozen"
        return TrainConfig(method=method, **settings)

    def make_sampler(self, *, resumed_trials: int = 0) -> optuna.samplers.BaseSampler:
        """The sampler; a resumed study's seed is moved on by its trial count, so that the
        sampler does not draw the first trials' values again."""
        options = {k: v for k, v in self.sampler.items() if k != "name"}
        if options.get("seed") is not None and self.sampler["name"] != "grid":
            options["seed"] += resumed_trials
        if self.sampler["name"] == "grid":
            grid = {k: list(d.choices) for k, d in self.distributions.items()
                    if isinstance(d, CategoricalDistribution)}
            return optuna.samplers.GridSampler(grid, **options)
        if self.sampler["name"] == "random":
            return optuna.samplers.RandomSampler(**options)
        return optuna.samplers.TPESampler(**options)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        options = {k: v for k, v in self.pruner.items() if k != "name"}
        if self.pruner["name"] == "median":
            return optuna.pruners.MedianPruner(**options)
        if self.pruner["name"] == "hyperband":
            return optuna.pruners.HyperbandPruner(**options)
        if self.pruner["name"] == "threshold":
            return optuna.pruners.ThresholdPruner(**options)
        return optuna.pruners.NopPruner()


def resolve_space_path(space: str | os.PathLike[str]) -> Path:
    """A path to a YAML file, or the name of a shipped space (``bitfit``, ``quick``, ...)."""
    path = Path(space)
    if path.is_file():
        return path
    shipped = SPACES_DIR / f"{space}.yaml"
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in SPACES_DIR.glob("*.yaml")))
    raise FileNotFoundError(f"search space {str(space)!r} is neither a file nor a shipped space "
                            f"({names}): pass a YAML path or one of those names")


def load_space(space: str | os.PathLike[str]) -> SearchSpace:
    """Read and validate a search-space YAML file (a path or a shipped space's name).

    Raises:
        FileNotFoundError: no such file or shipped space.
        SpaceError: a message naming the file and the key that is wrong.
    """
    path = resolve_space_path(space)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpaceError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: expected a mapping of keys, got {type(raw).__name__}")

    def fail(key: str, problem: str) -> SpaceError:
        return SpaceError(f"{path}: key '{key}': {problem}")

    _known(raw, _TOP, "", fail)
    method = raw.get("method", "bitfit")
    if method not in METHODS:
        raise fail("method", f"must be one of {', '.join(METHODS)}, got {method!r}")
    n_trials = _typed(raw.get("n_trials", 20), int, "n_trials", fail)
    if n_trials < 1:
        raise fail("n_trials", f"must be >= 1, got {n_trials}")
    objective = _section(raw, "objective", fail)
    _known(objective, {"metric", "direction"}, "objective.", fail)
    direction = objective.get("direction", "maximize")
    if direction not in ("maximize", "minimize"):
        raise fail("objective.direction", f"must be maximize or minimize, got {direction!r}")
    sampler = {"name": "tpe", "seed": 0, **_section(raw, "sampler", fail)}
    pruner = {"name": "median", **_section(raw, "pruner", fail)}
    for key, section, table in (("sampler", sampler, _SAMPLERS), ("pruner", pruner, _PRUNERS)):
        if section["name"] not in table:
            raise fail(f"{key}.name", f"must be one of {', '.join(table)}, got "
                       f"{section['name']!r}")
        _known(section, table[section["name"]] | {"name"}, f"{key}.", fail)
    fixed = _section(raw, "train", fail)
    _known(fixed, _TRAIN_FIELDS, "train.", fail)
    params = _section(raw, "params", fail)
    if not params:
        raise fail("params", "needs at least one parameter to search")
    switches = {f"term_{t}" for t in TERMS}
    _known(params, _TRAIN_FIELDS | switches, "params.", fail)
    distributions = {name: _distribution(spec, f"params.{name}", fail)
                     for name, spec in params.items()}
    if "subset" in distributions:
        for choice in getattr(distributions["subset"], "choices", ()):
            try:
                parse_subset(str(choice))
            except ValueError as err:
                raise fail("params.subset", str(err)) from None
    if sampler["name"] == "grid" and not all(
            isinstance(d, CategoricalDistribution) for d in distributions.values()):
        raise fail("sampler.name", "grid needs every parameter to be categorical")
    parsed = SearchSpace(path.stem, method, n_trials, distributions, fixed,
                        str(objective.get("metric", "main")), direction, sampler, pruner,
                        raw.get("max_train_samples"), int(raw.get("max_length", 128)))
    try:  # settings that TrainConfig itself rejects, with a value from each distribution
        parsed.config_for({k: _example(d) for k, d in distributions.items()})
    except ValueError as err:
        raise SpaceError(f"{path}: {err}") from None
    return parsed


def _known(section: dict, allowed: set[str], prefix: str, fail) -> None:
    for key in section:
        if key not in allowed:
            raise fail(f"{prefix}{key}", f"unknown key; allowed: {', '.join(sorted(allowed))}")


def _section(raw: dict, key: str, fail) -> dict:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise fail(key, f"expected a mapping, got {type(value).__name__}")
    return dict(value)


def _typed(value: Any, kind: type, key: str, fail) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise fail(key, f"expected {kind.__name__}, got {value!r}")
    return value


def _distribution(spec: Any, key: str, fail) -> BaseDistribution:
    if not isinstance(spec, dict) or "type" not in spec:
        raise fail(key, "expected a mapping with a 'type' (float, int or categorical)")
    kind = spec["type"]
    if kind not in _DISTRIBUTIONS:
        raise fail(f"{key}.type", f"must be float, int or categorical, got {kind!r}")
    options = {k: v for k, v in spec.items() if k != "type"}
    _known(options, _DISTRIBUTIONS[kind], f"{key}.", fail)
    if kind == "categorical":
        choices = options.get("choices")
        if not isinstance(choices, list) or not choices:
            raise fail(f"{key}.choices", "needs a non-empty list of choices")
        return CategoricalDistribution(choices)
    number = float if kind == "float" else int
    for bound in ("low", "high"):
        if bound not in options:
            raise fail(f"{key}.{bound}", "is required")
        options[bound] = _typed(options[bound], number, f"{key}.{bound}", fail)
    if options["low"] >= options["high"]:
        raise fail(key, f"low must be < high, got low={options['low']} high={options['high']}")
    if options.get("log") and options["low"] <= 0:
        raise fail(f"{key}.low", f"must be > 0 on a log scale, got {options['low']}")
    return FloatDistribution(**options) if kind == "float" else IntDistribution(**options)


def _example(distribution: BaseDistribution) -> Any:
    if isinstance(distribution, CategoricalDistribution):
        return distribution.choices[0]
    return distribution.low  # type: ignore[attr-defined]
