"""The training methods, one record each: what a method trains and what follows from it.

Every module that behaves differently by method asks this table instead of testing names, so a
new method is a row here plus its own training code (as Optuna's ``TrialState`` and PEFT's
``PeftType`` name their kinds in one place).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MethodName = Literal["bitfit", "full", "frozen", "rand", "lora"]
Encoder = Literal["biases", "all", "none", "random"]
RunStatus = Literal["completed", "stopped", "diverged"]  # how a training run ended


@dataclass(frozen=True)
class Method:
    """One training method.

    Attributes:
        name: the name on the command line, in configs, tags and artifacts.
        about: what it trains, in a few words (help texts and reports).
        encoder: which of the encoder's own tensors train: a bias subset's (``biases``), every one
            (``all``), none (``none``: the head alone, or added modules), or as many randomly
            chosen weights as the subset has biases (``random``). The head always trains.
        takes_subset: a bias subset (``--subset``) chooses what it trains.
        adds_modules: it adds modules to the encoder for a run (LoRA's adapters), taken off after.
        writes_artifact: its result is a small artifact of trained tensors; full fine-tuning's is
            a whole checkpoint, which is not written.
        baseline: a control that a search can train beside BitFit (``--extra-methods``).
        rate_grid: the learning rates its own paper searches (``bitfit reproduce --budget paper``).
    """

    name: MethodName
    about: str
    encoder: Encoder
    takes_subset: bool = False
    adds_modules: bool = False
    writes_artifact: bool = True
    baseline: bool = False
    rate_grid: tuple[float, ...] = ()


_BIAS_GRID = (1e-4, 4e-4, 7e-4, 1e-3)  # BitFit's paper (Ben-Zaken et al., 2022)

TABLE: dict[str, Method] = {m.name: m for m in (
    Method("bitfit", "the bias terms of a subset, and the head", "biases", takes_subset=True,
           rate_grid=_BIAS_GRID),
    Method("full", "every weight", "all", writes_artifact=False,
           rate_grid=(1e-5, 2e-5, 3e-5, 5e-5)),
    Method("frozen", "the head alone", "none", baseline=True, rate_grid=_BIAS_GRID),
    Method("rand", "as many random weights as the subset has biases, and the head", "random",
           takes_subset=True, baseline=True, rate_grid=_BIAS_GRID),
    Method("lora", "rank-r adapters on the query and value projections, and the head", "none",
           adds_modules=True, rate_grid=(1e-4, 2e-4, 4e-4, 5e-4)),  # the LoRA paper's GLUE rates
)}
METHODS: tuple[str, ...] = tuple(TABLE)
BASELINES: tuple[str, ...] = tuple(n for n, m in TABLE.items() if m.baseline)


def known(name: object) -> Method | None:
    """The record of ``name``, or None for a name no method has (what a stored manifest or
    config says, read without refusing it here)."""
    return TABLE.get(name) if isinstance(name, str) else None


def method(name: str) -> Method:
    """The record of ``name``.

    Raises:
        ValueError: no method has that name; the sentence lists the ones that exist.
    """
    try:
        return TABLE[name]
    except (KeyError, TypeError):
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {name!r}") from None
