"""The reproduction's statistics: the main table, the claims and their verdicts, where two
methods cross on the size curve, how far each bias term moves, and what undoing one term costs."""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import numpy as np
import pandas as pd

from bitfit.data import TaskData
from bitfit.models import BaseModel
from bitfit.report import pareto_front, summarise
from bitfit.reproduce.cells import Cell
from bitfit.reproduce.config import ALPHA, METHODS, MOST
from bitfit.verdicts import (MARGINS, Verdict, beats_constant, combine, competitive,
                             share_of_gain, superiority)


@dataclasses.dataclass(frozen=True)
class Analysis:
    """What the report shows, computed once from the finished cells."""

    table: pd.DataFrame  # the main table (``main_table``)
    curve: pd.DataFrame  # the size curve's table (empty without a curve)
    majority: dict[str, float]  # each task's majority-class score
    movement: pd.DataFrame  # ``bias_movement``
    ablation: pd.DataFrame  # ``term_ablation``
    matrix: pd.DataFrame  # ``movement_matrix`` (empty without movement)
    ranked: pd.DataFrame  # ``ranking`` (empty without movement)
    verdicts: list[dict[str, Any]]  # ``claims``
    front: pd.DataFrame  # ``pareto``
    crossing: float | None  # ``crossing`` on the size curve


def main_table(cells: list[Cell]) -> pd.DataFrame:
    """A row per (task, method): the main metric's mean, std and 95% interval over seeds, the
    trainable share and seconds per epoch."""
    rows = []
    for cell in cells:
        metric = cell.metric
        stats = summarise(cell.runs, (metric,)).iloc[0]  # the final evaluation's statistics
        rows.append({"task": cell.task, "method": cell.method, "size": cell.size,
                     "metric": metric, "seeds": int(stats["seeds"]),
                     **{k: float(stats[f"{metric}_{k}"]) for k in ("mean", "std", "ci_low",
                                                                    "ci_high")},
                     "learning_rate": cell.learning_rate,
                     "trainable_params": int(stats["trainable_params"]),
                     "trainable_fraction": float(stats["trainable_fraction"]),
                     "seconds_per_epoch": float(stats["time_per_epoch_s"])})
    return pd.DataFrame(rows)


def _paired(*cells: Cell) -> tuple[list[list[float]], bool]:
    """The cells' scores, seed by seed where every cell ran the same seeds (each seed trains
    every method on the same rows, so their scores pair), else as they are (unpaired)."""
    seeds = [sorted(c.by_seed()) for c in cells]
    if all(s == seeds[0] for s in seeds) and len(seeds[0]) >= 2:
        return [[c.by_seed()[seed] for seed in seeds[0]] for c in cells], True
    return [c.scores() for c in cells], False


CLAIMS = {
    1: "small-to-medium data: BitFit is competitive with full fine-tuning",
    2: "larger data: BitFit is competitive with another sparse method (LoRA)",
    3: "the qm2 subset (query + first MLP layer) keeps most of BitFit's gain",
    4: "fine-tuning mostly exposes knowledge: BitFit gets most of full fine-tuning's gain",
    5: "BitFit beats the random baseline (as many randomly chosen weights as it has biases)",
}


def rules() -> list[str]:
    """Each verdict rule, stated once for the report."""
    margins = ", ".join(f"{m} {v:g}" for m, v in MARGINS.items())
    return [
        f"Every test is one-sided at α = {ALPHA}, on the dev scores after each run's last step, "
        "paired by seed where the methods ran the same seeds (a seed trains every method on "
        "the same rows); each interval is the 90% interval of the effect (both one-sided 95% "
        "bounds).",
        "*Competitive* (claims 1 and 2) is non-inferiority: the lower bound of ours - reference "
        f"must clear -margin, with the margin declared per metric before any run ({margins}); "
        "*fails* when the upper bound is below -margin. A claim is *not testable* where the "
        "reference does not significantly beat the majority class's score (0 for a "
        "correlation): two methods that both learnt nothing are not competitive.",
        f"*Most of the gain* (claims 3 and 4) tests the contrast part - {MOST:g}·whole - "
        f"{1 - MOST:g}·frozen > 0 (part keeps at least {MOST:.0%} of whole's gain over "
        "head-only training), not a ratio of means; *not testable* where whole does not "
        "significantly beat frozen.",
        "*Beats the random baseline* (claim 5) tests bitfit - rand > 0; *not testable* where "
        "neither beats the majority class.",
        "The *all* row of a claim applies Holm's correction over its testable rows: it *holds* "
        "when every testable row holds after the correction, *fails* when any row fails, and "
        "is *not testable* without a testable row.",
    ]


def claims(main: list[Cell], curve: list[Cell], majority: dict[str, float],
           alpha: float = ALPHA) -> list[dict[str, Any]]:
    """A row per claim and task (and one per claim over all tasks): the evidence, the rule,
    the p-value, the effect with its interval and the verdict (``bitfit.verdicts``)."""
    by = {(c.task, c.method, c.size): c for c in [*main, *curve]}
    found: list[tuple[int, str, Verdict, str]] = []
    for task in dict.fromkeys(c.task for c in main):
        metric = next(c.metric for c in main if c.task == task)
        cell = {m: by.get((task, m, None)) for m in METHODS}
        found += _task_claims(task, cell, metric, majority.get(task, 0.0), alpha)
    if curve:
        found += _curve_claim(curve, by, majority, alpha)
    verdicts: dict[int, list[Verdict]] = {}
    for claim, _, verdict, _ in found:
        verdicts.setdefault(claim, []).append(verdict)
    rows = [_claim_row(*row) for row in found]
    return sorted(rows, key=lambda row: row["claim"]) + _overall(verdicts, alpha)


def _claim_row(claim: int, task: str, verdict: Verdict, evidence: str) -> dict[str, Any]:
    return {"claim": claim, "task": task, "verdict": verdict.verdict,
            "p_value": verdict.p_value, "estimate": verdict.estimate,
            "low": verdict.low, "high": verdict.high, "evidence": evidence,
            "test": verdict.rule, "note": verdict.note}


def _means(*cells: Cell) -> str:
    return ", ".join(f"{c.method} {np.mean(c.scores()):.4f}" for c in cells)


def _task_claims(task: str, cell: dict[str, Cell | None], metric: str, floor: float,
                 alpha: float) -> list[tuple[int, str, Verdict, str]]:
    """Claims 1 to 5 on one task of the main table, where its cells ran."""
    found: list[tuple[int, str, Verdict, str]] = []
    for claim, other in ((1, "full"), (2, "lora")):
        ours, theirs = cell["bitfit"], cell[other]
        if ours and theirs:
            (a, b), paired = _paired(ours, theirs)
            found.append((claim, task, competitive(a, b, metric=metric, floor=floor,
                                                   paired=paired, alpha=alpha,
                                                   names=("bitfit", other)),
                          f"main table, {metric}: {_means(ours, theirs)}; majority "
                          f"class {floor:.4f}"))
    for claim, part, whole in ((3, "bitfit_qm2", "bitfit"), (4, "bitfit", "full")):
        p_cell, w_cell, f_cell = cell[part], cell[whole], cell["frozen"]
        if p_cell and w_cell and f_cell:
            (p, w, f), paired = _paired(p_cell, w_cell, f_cell)
            found.append((claim, task, share_of_gain(p, w, f, share=MOST, paired=paired,
                                                     alpha=alpha,
                                                     names=(part, whole, "frozen")),
                          f"main table, {metric}: {_means(p_cell, w_cell, f_cell)}"))
    ours, rand = cell["bitfit"], cell["rand"]
    if ours and rand:
        found.append((5, task, _beats_random(ours, rand, floor, alpha),
                      f"main table, {metric}: {_means(ours, rand)}"))
    return found


def _beats_random(ours: Cell, rand: Cell, floor: float, alpha: float) -> Verdict:
    """Claim 5's verdict: BitFit against the random baseline, not testable where neither
    beats the majority class."""
    (b, r), paired = _paired(ours, rand)
    gates = [beats_constant(x, floor, alpha=alpha).verdict == "holds" for x in (b, r)]
    verdict = superiority(b, r, paired=paired, alpha=alpha, names=("bitfit", "rand"))
    if not any(gates):
        verdict = dataclasses.replace(
            verdict, verdict="not testable", low=math.nan, high=math.nan,
            p_value=math.nan, note=f"neither beats the majority class's {floor:.4f}")
    return verdict


def _curve_claim(curve: list[Cell], by: dict[tuple[str, str, int | None], Cell],
                 majority: dict[str, float],
                 alpha: float) -> list[tuple[int, str, Verdict, str]]:
    """Claim 2 at the size curve's largest size, where BitFit and LoRA both ran there."""
    task = curve[0].task
    largest = max(c.size or 0 for c in curve)
    ours, theirs = by.get((task, "bitfit", largest)), by.get((task, "lora", largest))
    if not (ours and theirs):
        return []
    (a, b), paired = _paired(ours, theirs)
    return [(2, f"{task} at {largest:,}", competitive(
        a, b, metric=ours.metric, floor=majority.get(task, 0.0), paired=paired,
        alpha=alpha, names=("bitfit", "lora")),
        f"size curve, largest size, {ours.metric}: {_means(ours, theirs)}")]


def _overall(verdicts: dict[int, list[Verdict]], alpha: float) -> list[dict[str, Any]]:
    """A row per claim over all tasks (Holm's correction over its testable rows)."""
    overall = []
    for claim in sorted(verdicts):
        verdict, evidence = combine(verdicts[claim], alpha=alpha)
        overall.append({"claim": claim, "task": "all", "verdict": verdict,
                        "p_value": math.nan, "estimate": math.nan, "low": math.nan,
                        "high": math.nan, "evidence": evidence,
                        "test": "Holm's correction over the testable rows", "note": ""})
    return overall


def crossing(curve: pd.DataFrame, a: str = "bitfit", b: str = "full") -> float | None:
    """The training size where method ``a``'s mean and ``b``'s cross on the curve
    (interpolated on a log scale), or None where they do not."""
    sizes = sorted(curve["size"].unique())
    mean = curve.set_index(["method", "size"])["mean"]
    diff = [mean.get((a, s), math.nan) - mean.get((b, s), math.nan) for s in sizes]
    for (s0, d0), (s1, d1) in itertools.pairwise(zip(sizes, diff, strict=True)):
        if d0 == 0:
            return float(s0)
        if d0 * d1 < 0:
            t = d0 / (d0 - d1)
            return float(10 ** (math.log10(s0) + t * (math.log10(s1) - math.log10(s0))))
    return None


def _term_tensors(base: BaseModel) -> dict[str, tuple[str, int]]:
    """Each bias tensor of the encoder (its name in the classifier) -> (term, layer); layer -1
    for the terms outside the layers."""
    import re

    from bitfit.biases import select_biases

    names = [n for n, _ in base.encoder.named_parameters()]
    where = {}
    for term, found in select_biases(names, base.family, "all").items():
        for n in found:
            layer = re.search(r"(?:^|\.)layer\.(\d+)\.", n)
            where[f"encoder.{n}"] = (term, int(layer.group(1)) if layer else -1)
    return where


def bias_movement(base: BaseModel, cells: list[Cell]) -> pd.DataFrame:
    """How far each bias term moved in the BitFit (all biases) runs: a row per task, seed, term
    and layer with the mean absolute change against the pre-trained values (``change``) and that
    change over the run's summed learning rate (``normalised``, ``train.lr_sum``). Adam moves
    every coordinate by about the rate at each step whatever its gradient's size, so the raw
    change of every term is about the summed rate; the normalised change is the share of that
    allowance a term used by moving the same way step after step: near 1 a consistent signal,
    near 0 none. ``k`` (the key bias) is the control: adding the same vector to every key
    leaves attention unchanged, so its gradient is zero in exact arithmetic."""
    from bitfit.artifacts import load_artifact

    base.restore()
    pristine = {f"encoder.{n}": p.detach() for n, p in base.encoder.named_parameters()}
    where = _term_tensors(base)
    rows = []
    for cell in cells:
        for run in cell.runs if cell.method == "bitfit" else []:
            _, tensors = load_artifact(run.artifact)
            for name, value in tensors.items():
                if name in where:
                    term, layer = where[name]
                    change = float((value.float() - pristine[name].float()).abs().mean())
                    rows.append({"task": cell.task, "seed": run.seed, "term": term,
                                 "layer": layer, "change": change,
                                 "normalised": change / cell.lr_sum if cell.lr_sum > 0
                                 else math.nan})
    return pd.DataFrame(rows, columns=["task", "seed", "term", "layer", "change",
                                       "normalised"])


def _term_order(terms: pd.Series) -> pd.Series:
    from bitfit.biases import TERMS

    order = {t: i for i, t in enumerate(TERMS)}
    return terms.map(lambda t: order.get(t, len(order)))


def movement_matrix(movement: pd.DataFrame) -> pd.DataFrame:
    """The heatmap's terms x layers matrix: the normalised change, averaged over tasks and
    seeds."""
    layered = movement[movement["layer"] >= 0]
    matrix = layered.groupby(["term", "layer"])["normalised"].mean().unstack("layer")
    return matrix.sort_index(key=_term_order)


def ranking(movement: pd.DataFrame) -> pd.DataFrame:
    """The terms by their normalised change (mean over layers and seeds), a column per task and
    their mean, largest first."""
    per_task = (movement.groupby(["term", "task"])["normalised"].mean()
                .unstack("task"))
    per_task["mean"] = per_task.mean(axis=1)
    return (per_task.sort_values("mean", ascending=False).reset_index()
            .rename_axis(columns=None))


def term_ablation(base: BaseModel, data: dict[str, TaskData], cells: list[Cell],
                  *, device: str = "auto") -> pd.DataFrame:
    """The functional test of which biases matter: each BitFit (all biases) run's classifier
    with one term's change undone (its tensors put back to the pre-trained values), re-scored on
    dev. A row per task, seed and term: the dev score with every change (``trained``), with this
    one undone (``reset``) and the loss (``drop``)."""
    import torch

    from bitfit.artifacts import apply_artifact
    from bitfit.train import evaluate, resolve_device, resolve_precision

    base.restore()
    pristine = {f"encoder.{n}": p.detach().clone() for n, p in base.encoder.named_parameters()}
    where = _term_tensors(base)
    dev_device = resolve_device(device)
    precision = resolve_precision("auto", dev_device)
    rows = []
    for cell in cells:
        if cell.method != "bitfit" or cell.task not in data:
            continue
        task_data = data[cell.task]
        split, metric = task_data.selection_split, cell.metric
        for run in cell.runs:
            model = apply_artifact(base, run.artifact).to(dev_device)
            params = dict(model.named_parameters())

            def score() -> float:
                return evaluate(model, task_data, batch_size=64,  # noqa: B023
                                pad_id=base.tokenizer.pad_token_id or 0, device=dev_device,
                                precision=precision)[split][metric]  # noqa: B023

            trained = score()
            for term in dict.fromkeys(t for t, _ in where.values()):
                names = [n for n, (t, _) in where.items() if t == term]
                kept = {n: params[n].detach().clone() for n in names}
                with torch.no_grad():
                    for n in names:
                        params[n].copy_(pristine[n])
                reset = score()
                with torch.no_grad():
                    for n in names:
                        params[n].copy_(kept[n])
                rows.append({"task": cell.task, "seed": run.seed, "term": term,
                             "trained": trained, "reset": reset, "drop": trained - reset})
    base.restore()
    return pd.DataFrame(rows, columns=["task", "seed", "term", "trained", "reset", "drop"])


def pareto(table: pd.DataFrame) -> pd.DataFrame:
    """The main table's methods per task with ``pareto`` marking those no other method beats
    with as many trainable parameters or fewer (the trade-off BitFit exists for)."""
    rows = []
    for _, group in table.groupby("task", sort=False):
        front = pareto_front(list(zip(group["trainable_params"], group["mean"], strict=True)))
        for i, (_, row) in enumerate(group.iterrows()):
            rows.append({"task": row["task"], "method": row["method"], "metric": row["metric"],
                         "trainable_params": int(row["trainable_params"]),
                         "mean": float(row["mean"]), "pareto": i in front})
    return pd.DataFrame(rows, columns=["task", "method", "metric", "trainable_params", "mean",
                                       "pareto"])



def majority_score(data: TaskData) -> float:
    """The main metric on dev of always predicting the training split's most frequent label
    (the mean for regression, which correlates with nothing: 0): what a model that learnt only
    the label prior scores."""
    from bitfit.metrics import constant_score

    return constant_score(data.task, data.train.labels,
                          data.evals[data.selection_split].labels)



def term_drops(ablation: pd.DataFrame) -> pd.DataFrame:
    """The dev score lost when one term is undone: a row per term (in ``TERMS`` order), a
    column per task, the mean over seeds."""
    drops = (ablation.groupby(["term", "task"])["drop"].mean().unstack("task")
             .reset_index().rename_axis(columns=None))
    return drops.sort_values("term", key=_term_order)
