"""The YAML schema of a search space: what each key accepts, and the checks that turn one file's
values into Optuna's distributions.

``load_space`` in ``bitfit.space`` reads a file with these helpers; each check raises ``SpaceError``
through a ``fail(key, problem)`` that names the file and the key.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
import warnings
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)

from bitfit.biases import TERMS, parse_subset
from bitfit.methods import TABLE
from bitfit.trainconfig import TrainConfig


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
