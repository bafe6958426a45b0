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

import dataclasses
import importlib.resources
import math
import os
import re
import typing
import warnings
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)

from bitfit.biases import TERMS, parse_subset
from bitfit.methods import METHODS, TABLE
from bitfit.tasks import Task
from bitfit.train import TrainConfig

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
_TOP = {"method", "n_trials", "objective", "sampler", "pruner", "train", "params",
        "max_train_samples", "max_length"}
_DISTRIBUTIONS = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"},
                  "categorical": {"choices"}}
_SWITCHES = {f"term_{t}" for t in TERMS}


class SpaceError(ValueError):
    """A search-space file with an unknown key, a wrong type or an impossible range."""


Fail = Callable[[str, str], SpaceError]


@dataclass(frozen=True)
class _Kind:
    """What one setting or option accepts: a type, maybe null or a word, maybe a bound."""

    type: type
    nullable: bool = False
    at_least: float | None = None
    above: float | None = None
    words: tuple[str, ...] = ()

    @property
    def expected(self) -> str:
        return " or ".join([self.type.__name__, *(repr(w) for w in self.words),
                            *(["null"] if self.nullable else [])])


# (at least, above): bounds that TrainConfig does not check itself, but that would fail every
# trial later (numpy refuses a negative seed, AdamW a negative weight decay, and an empty train
# sample has no metrics).
_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "seed": (0, None), "weight_decay": (0, None), "max_grad_norm": (None, 0),
    "train_eval_samples": (1, None)}


def _train_kinds() -> dict[str, _Kind]:
    """Each TrainConfig field's kind, read from its type hint (``float | None``: nullable)."""
    hints = typing.get_type_hints(TrainConfig)
    kinds = {}
    for f in dataclasses.fields(TrainConfig):
        args = typing.get_args(hints[f.name]) or (hints[f.name],)
        kind = next(a for a in args if a is not type(None))
        kinds[f.name] = _Kind(kind, type(None) in args, *_BOUNDS.get(f.name, (None, None)))
    return kinds


_TRAIN = {k: v for k, v in _train_kinds().items() if k != "method"}
_SWITCH = _Kind(bool)
_SEED = _Kind(int, nullable=True, at_least=0)
_COUNT = _Kind(int, at_least=0)
_SAMPLERS: dict[str, dict[str, _Kind]] = {
    "tpe": {"seed": _SEED, "n_startup_trials": _COUNT, "multivariate": _Kind(bool)},
    "random": {"seed": _SEED},
    "grid": {"seed": _SEED},
}
_PRUNERS: dict[str, dict[str, _Kind]] = {
    "none": {},
    "median": {"n_startup_trials": _COUNT, "n_warmup_steps": _COUNT,
               "interval_steps": _Kind(int, at_least=1)},
    "hyperband": {"min_resource": _Kind(int, at_least=1),
                  "max_resource": _Kind(int, at_least=1, words=("auto",)),
                  "reduction_factor": _Kind(int, at_least=2)},
    "threshold": {"lower": _Kind(float, nullable=True), "upper": _Kind(float, nullable=True),
                  "n_warmup_steps": _COUNT},
}


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats and no silently repeated keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # PyYAML keeps the last of two equal keys: a repeated `learning_rate:` would hide one
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<:` merge keys may be overridden on purpose
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} appears twice; keep one",
                        key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


# The usual recipe (PyYAML issue #173): YAML 1.1's float pattern needs a dot and a signed
# exponent, so `1e-5` or `1E5` would be strings; these are YAML 1.2's forms.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                          |[0-9][0-9_]*[eE][-+]?[0-9]+
                          |\.[0-9_]+(?:[eE][-+]?[0-9]+)?)$""", re.X),
    list("-+0123456789."))


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


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # a SafeLoader
    except UnicodeDecodeError as err:
        raise SpaceError(f"{path}: not UTF-8 text ({err.reason}); save it as UTF-8") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpaceError(f"{path}: not valid YAML{where}: {err.problem}") from None
    except yaml.YAMLError as err:
        raise SpaceError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: expected a mapping of keys, got {type(raw).__name__}")
    return raw


def _objective(raw: dict[str, Any], fail: Fail) -> tuple[str, str]:
    objective = _section(raw, "objective", fail)
    _known(objective, {"metric", "direction"}, "objective.", fail)
    metric = _value(objective.get("metric", "main"), _Kind(str), "objective.metric", fail)
    direction = objective.get("direction", "maximize")
    if direction not in ("maximize", "minimize"):
        raise fail("objective.direction", f"must be maximize or minimize, got {direction!r}")
    return metric, direction


def _options(raw: dict[str, Any], key: str, table: dict[str, dict[str, _Kind]],
             defaults: dict[str, Any], fail: Fail) -> dict[str, Any]:
    """The sampler or pruner section: a known name and that name's options, each typed."""
    section = {**defaults, **_section(raw, key, fail)}
    name = section["name"]
    if not isinstance(name, str) or name not in table:
        raise fail(f"{key}.name", f"must be one of {', '.join(table)}, got {name!r}")
    kinds = table[name]
    _known(section, set(kinds) | {"name"}, f"{key}.", fail)
    return {"name": name, **{k: _value(v, kinds[k], f"{key}.{k}", fail)
                             for k, v in section.items() if k != "name"}}


def _check_pruner(pruner: dict[str, Any], fail: Fail) -> None:
    """What Optuna's pruners refuse only when the study starts, or not at all."""
    if pruner["name"] == "threshold":
        lower, upper = pruner.get("lower"), pruner.get("upper")
        if lower is None and upper is None:
            raise fail("pruner", "threshold needs lower or upper (a trial is pruned below lower "
                                 "or above upper); add one of them")
        if lower is not None and upper is not None and lower > upper:
            raise fail("pruner.lower", f"must be <= upper, got lower={lower} upper={upper}")
    if pruner["name"] == "hyperband":
        low, high = pruner.get("min_resource", 1), pruner.get("max_resource", "auto")
        if high != "auto" and high < low:
            raise fail("pruner.max_resource", f"must be >= min_resource ({low}), got {high}")


def _fixed(raw: dict[str, Any], method: str, fail: Fail) -> dict[str, Any]:
    fixed = _section(raw, "train", fail)
    _known(fixed, set(_TRAIN), "train.", fail)
    return {name: _setting(name, value, method, f"train.{name}", fail)
            for name, value in fixed.items()}


def _params(raw: dict[str, Any], method: str, fixed: dict[str, Any],
            fail: Fail) -> dict[str, BaseDistribution]:
    params = _section(raw, "params", fail)
    if not params:
        raise fail("params", "needs at least one parameter to search")
    _known(params, set(_TRAIN) | _SWITCHES, "params.", fail)
    for name in params:
        if name in fixed:
            raise fail(f"params.{name}", f"is fixed under train too; search {name} or fix it, "
                                         f"not both")
    bias = sorted(n for n in params if n == "subset" or n in _SWITCHES)
    if bias and not TABLE[method].takes_subset:
        raise fail(f"params.{bias[0]}", f"method {method} trains no bias subset, so every value "
                                        f"would repeat the same run; remove it")
    if _SWITCHES & set(params) and "subset" in {*params, *fixed}:
        where = "params" if "subset" in params else "train"
        raise fail(f"{where}.subset", "the term_* switches already choose the bias terms; "
                                      "remove subset")
    return {name: _distribution(spec, name, method, fail) for name, spec in params.items()}


def _known(section: dict[Any, Any], allowed: set[str], prefix: str, fail: Fail) -> None:
    for key in section:
        if key not in allowed:
            raise fail(f"{prefix}{key}", f"unknown key; allowed: {', '.join(sorted(allowed))}")


def _section(raw: dict[str, Any], key: str, fail: Fail) -> dict[str, Any]:
    value = raw.get(key)
    if value is None:  # absent, or written with nothing under it
        return {}
    if not isinstance(value, dict):
        raise fail(key, f"expected a mapping, got {type(value).__name__}")
    return dict(value)


def _typed(value: Any, kind: type, key: str, fail: Fail, expected: str = "") -> Any:
    if kind is float and type(value) is int:  # an int is fine where a float is expected
        value = float(value) if abs(value) < 1e308 else math.inf
    wrong = not isinstance(value, kind) or isinstance(value, bool) and kind is not bool
    if wrong or kind is float and not math.isfinite(value):
        raise fail(key, f"expected {expected or kind.__name__}, got {value!r}")
    return value


def _value(value: Any, kind: _Kind, key: str, fail: Fail) -> Any:
    """``value`` checked against ``kind``: its type (ints widened to floats) and its bound."""
    if value is None and kind.nullable:
        return None
    if isinstance(value, str) and value in kind.words:
        return value
    value = _typed(value, kind.type, key, fail, kind.expected)
    if kind.at_least is not None and value < kind.at_least:
        raise fail(key, f"must be >= {kind.at_least:g}, got {value!r}")
    if kind.above is not None and not value > kind.above:
        raise fail(key, f"must be > {kind.above:g}, got {value!r}")
    return value


def _setting(name: str, value: Any, method: str, key: str, fail: Fail) -> Any:
    """One training setting's value, checked by type and by ``TrainConfig`` itself."""
    value = _value(value, _TRAIN[name], key, fail)
    try:
        if name == "subset":  # TrainConfig skips it for full/frozen, but a typo is still one
            parse_subset(value)
        TrainConfig(method=method, **{name: value})
    except ValueError as err:
        raise fail(key, str(err)) from None
    return value


def _distribution(spec: Any, name: str, method: str, fail: Fail) -> BaseDistribution:
    key = f"params.{name}"
    if not isinstance(spec, dict) or "type" not in spec:
        raise fail(key, "expected a mapping with a 'type' (float, int or categorical)")
    kind = spec["type"]
    if not isinstance(kind, str) or kind not in _DISTRIBUTIONS:
        raise fail(f"{key}.type", f"must be float, int or categorical, got {kind!r}")
    options = {k: v for k, v in spec.items() if k != "type"}
    _known(options, _DISTRIBUTIONS[kind], f"{key}.", fail)
    if kind == "categorical":
        return _categorical(options.get("choices"), name, method, fail)
    return _numeric(options, kind, name, method, fail)


def _categorical(choices: Any, name: str, method: str, fail: Fail) -> CategoricalDistribution:
    key = f"params.{name}.choices"
    if not isinstance(choices, list) or not choices:
        raise fail(key, "needs a non-empty list of choices")
    checked = [_value(c, _SWITCH, key, fail) if name in _SWITCHES
               else _setting(name, c, method, key, fail) for c in choices]
    for i, choice in enumerate(checked):
        if choice in checked[:i]:
            raise fail(key, f"{choice!r} is listed twice; list each choice once")
    return CategoricalDistribution(checked)


def _numeric(options: dict[str, Any], kind: str, name: str, method: str,
             fail: Fail) -> FloatDistribution | IntDistribution:
    key = f"params.{name}"
    setting = _SWITCH if name in _SWITCHES else _TRAIN[name]
    if setting.type not in (int, float):
        raise fail(f"{key}.type", f"{name} takes {setting.expected} values, not numbers from a "
                                  f"range; use type categorical with a list of choices")
    if kind == "float" and setting.type is int:
        raise fail(f"{key}.type", f"{name} is a whole number; use type int")
    number = float if kind == "float" else int
    for bound in ("low", "high"):
        if bound not in options:
            raise fail(f"{key}.{bound}", "is required")
        options[bound] = _typed(options[bound], number, f"{key}.{bound}", fail)
        _setting(name, options[bound], method, f"{key}.{bound}", fail)
    low, high = options["low"], options["high"]
    if low >= high:
        raise fail(key, f"low must be < high, got low={low} high={high}")
    log = _value(options.get("log", False), _Kind(bool), f"{key}.log", fail)
    if log and low <= 0:
        raise fail(f"{key}.low", f"must be > 0 on a log scale, got {low}")
    if "step" not in options:
        return _make(kind, key, fail, low=low, high=high, log=log)
    step = _value(options["step"], _Kind(number, above=0), f"{key}.step", fail)
    if log:
        raise fail(key, "step and log cannot be combined; drop one of them")
    made = _make(kind, key, fail, low=low, high=high, step=step)
    if made.high != high:  # Optuna would quietly lower high to the last step
        raise fail(f"{key}.step", f"high - low is not a multiple of step {step}; set high to "
                                  f"{made.high} or change step")
    return made


def _make(kind: str, key: str, fail: Fail, **options: Any) -> FloatDistribution | IntDistribution:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the step warning is checked by the caller
            if kind == "float":
                return FloatDistribution(**options)
            return IntDistribution(**options)
    except ValueError as err:  # anything Optuna refuses that the checks above missed
        raise fail(key, str(err)) from None


def _example(distribution: BaseDistribution) -> Any:
    if isinstance(distribution, CategoricalDistribution):
        return distribution.choices[0]
    return distribution.low  # type: ignore[attr-defined]
