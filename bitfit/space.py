"""Search spaces: a YAML file in Optuna's own vocabulary, parsed once into a validated config.

``params`` maps a training setting (``learning_rate``, ``subset``, ``epochs``, ...) or a bias term
switch (``term_q``, ``term_m2``, ...) to a distribution written with the names of
``optuna.distributions``: ``{type: float, low, high, log}``, ``{type: int, low, high, step}``,
``{type: categorical, choices}``. ``train`` holds the fixed settings, and the rest says what to
optimise and how (method, objective, sampler, pruner, number of trials).

Everything is checked when the file is read, so that a mistake stops a search before any model or
data is loaded: each key, each value's type against the setting it sets (``TrainConfig``'s field
types, Optuna's options), every categorical choice and both bounds of every range. Numbers follow
YAML 1.2, so ``1e-5`` is a float (YAML 1.1 would read it as a string).
"""

from __future__ import annotations

import importlib.resources
import os
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution

from bitfit.methods import METHODS
from bitfit.space_schema import (_PRUNERS, _SAMPLERS, _TOP, _TRAIN, Fail, SpaceError, _check_pruner,
                                 _example, _fixed, _Kind, _known, _objective, _options, _params,
                                 _read, _value)
from bitfit.tasks import Task
from bitfit.trainconfig import TrainConfig

__all__ = ["SPACES_DIR", "SPACES_PACKAGE", "Fail", "SearchSpace", "SpaceError", "check_metric",
           "load_space", "resolve_space_path"]

SPACES_PACKAGE = "bitfit.search_spaces"  # the repository's search_spaces/, installed as data


def _spaces_dir() -> Traversable:
    """The folder of the shipped spaces: the package data of ``bitfit.search_spaces``."""
    try:
        return importlib.resources.files(SPACES_PACKAGE)
    except ModuleNotFoundError:
        # An editable install, or the checkout on sys.path: setuptools' editable finder cannot
        # import a subpackage that has no __init__.py and lives outside its parent's folder
        # (pypa/setuptools#4943), so read search_spaces/ next to the package's own folder.
        return Path(str(importlib.resources.files("bitfit"))).resolve().parent / "search_spaces"


SPACES_DIR = _spaces_dir()


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
        settings = {**self.fixed, **{k: _coerced(k, v) for k, v in values.items()
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
        """The sampler, its seed derived from the space's seed and ``resumed_trials`` (the study
        makes one per trial, with the trial's number), so that no two trials draw alike.

        The seed is mixed (NumPy's ``SeedSequence``), not added to: each trial's first draw is
        its generator's first, and consecutive small seeds start alike in NumPy's legacy
        generator (its first uniforms for seeds 0-3 are 0.55, 0.42, 0.44, 0.55), which put the
        quick space's four rates within 1.57e-3..1.83e-3 of a 1e-3..3e-3 range.

        A grid keeps its seed: it shuffles its points with it and gives trial n the n-th
        point, so a seed moved on per trial would give trials the same point twice and leave
        others out."""
        options = {k: v for k, v in self.sampler.items() if k != "name"}
        if options.get("seed") is not None and self.sampler["name"] != "grid":
            import numpy as np

            options["seed"] = int(np.random.SeedSequence(
                [options["seed"], resumed_trials]).generate_state(1)[0])
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


def _coerced(name: str, value: Any) -> Any:
    # an int distribution over a float setting suggests ints; TrainConfig is typed float
    kind = _TRAIN.get(name)
    if kind is not None and kind.type is float and type(value) is int:
        return float(value)
    return value


def check_metric(space: SearchSpace, task: Task) -> str:
    """The metric a search on ``task`` optimises: the space's ``objective.metric``, where
    ``main`` stands for the task's main metric.

    Needs the task only, not its data, so that a flow can call it before loading anything.

    Raises:
        SpaceError: the task has no such metric (the message names the metric, the task and the
            metrics it has).
    """
    metric = task.main_metric if space.metric == "main" else space.metric
    if space.direction != "maximize":  # every metric here is better when higher
        raise SpaceError(
            f"search space {space.name!r} asks to {space.direction} {metric!r}, and a higher "
            f"{metric} is better for task {task.name!r}: set objective.direction to maximize")
    if metric not in task.metrics:
        raise SpaceError(
            f"search space {space.name!r} optimises objective.metric {space.metric!r}, which "
            f"task {task.name!r} does not have: set it to main or one of "
            f"{', '.join(task.metrics)}")
    return metric


def resolve_space_path(space: str | os.PathLike[str]) -> Path:
    """A path to a YAML file, or the name of a shipped space (``bitfit``, ``quick``, ...)."""
    path = Path(space)
    if path.is_file():
        return path
    shipped = SPACES_DIR.joinpath(f"{space}.yaml")
    if shipped.is_file():
        return Path(str(shipped))  # a file on disk: pip unpacks wheels, never imports from zips
    found = SPACES_DIR.iterdir() if SPACES_DIR.is_dir() else iter(())
    names = ", ".join(sorted(p.name.removesuffix(".yaml") for p in found
                             if p.name.endswith(".yaml")))
    raise FileNotFoundError(f"search space {str(space)!r} is neither a file nor a shipped space "
                            f"({names}): pass a YAML path or one of those names")


def load_space(space: str | os.PathLike[str]) -> SearchSpace:
    """Read and validate a search-space YAML file (a path or a shipped space's name).

    Every value is checked here (see the module's docstring); the objective metric needs the
    task as well, see ``check_metric``.

    Raises:
        FileNotFoundError: no such file or shipped space.
        SpaceError: a message naming the file and the key that is wrong.
    """
    path = resolve_space_path(space)
    raw = _read(path)

    def fail(key: str, problem: str) -> SpaceError:
        return SpaceError(f"{path}: key '{key}': {problem}")

    _known(raw, _TOP, "", fail)
    method = raw.get("method", "bitfit")
    if not isinstance(method, str) or method not in METHODS:
        raise fail("method", f"must be one of {', '.join(METHODS)}, got {method!r}")
    n_trials = _value(raw.get("n_trials", 20), _Kind(int, at_least=1), "n_trials", fail)
    samples = _value(raw.get("max_train_samples"), _Kind(int, nullable=True, at_least=1),
                     "max_train_samples", fail)
    max_length = _value(raw.get("max_length", 128), _Kind(int, at_least=8), "max_length", fail)
    metric, direction = _objective(raw, fail)
    sampler = _options(raw, "sampler", _SAMPLERS, {"name": "tpe", "seed": 0}, fail)
    pruner = _options(raw, "pruner", _PRUNERS, {"name": "median"}, fail)
    _check_pruner(pruner, fail)
    fixed = _fixed(raw, method, fail)
    distributions = _params(raw, method, fixed, fail)
    if sampler["name"] == "grid" and not all(
            isinstance(d, CategoricalDistribution) for d in distributions.values()):
        raise fail("sampler.name", "grid needs every parameter to be categorical")
    parsed = SearchSpace(path.stem, method, n_trials, distributions, fixed, metric, direction,
                         sampler, pruner, samples, max_length)
    try:  # every value was checked alone; this checks that one trial's values go together
        parsed.config_for({k: _example(d) for k, d in distributions.items()})
    except ValueError as err:
        raise SpaceError(f"{path}: {err}") from None
    return parsed


