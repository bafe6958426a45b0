"""The reproduction's report: its Markdown (tables, claims and verdicts), its plots and tables
written under the run home, and the printout of a summary."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from bitfit.models import BaseModel
from bitfit.reproduce.config import BUDGETS, ReproduceConfig
from bitfit.reproduce.stats import CLAIMS, Analysis, rules, term_drops

# the columns of the main table's and the size curve's rows
_RESULT_COLUMNS: dict[str, Callable[[Any], str]] = {
    "task": lambda x: str(x["task"]), "method": lambda x: str(x["method"]),
    "seeds": lambda x: str(x["seeds"]),
    "mean ± std [95% CI]": lambda x: f"{x['mean']:.4f} ± {x['std']:.4f} "
                                     f"[{x['ci_low']:.4f}, {x['ci_high']:.4f}]",
    "lr": lambda x: f"{x['learning_rate']:g}",
    "trainable": lambda x: f"{x['trainable_params']:,} "
                           f"({100 * x['trainable_fraction']:.3f}%)",
    "s/epoch": lambda x: f"{x['seconds_per_epoch']:.1f}"}


def model_description(base: BaseModel) -> str:
    """What the model is, in a sentence or two."""
    from bitfit.models import BUNDLED

    config = base.encoder.config
    text = (f"Model: `{base.model_id}` ({config.model_type}, {config.num_hidden_layers} layers, "
            f"hidden size {config.hidden_size}, {base.num_parameters / 1e6:.1f}M parameters), "
            f"read through {base.pooling} pooling.")
    if base.model_id == BUNDLED:
        text += (" It is a sentence-embedding model (all-MiniLM-L6-v2), trained for mean-pooled "
                 "sentence similarity rather than as a masked language model like the paper's "
                 "BERT: the verdicts below are about this checkpoint.")
    return text


def _markdown_table(frame: pd.DataFrame, columns: dict[str, Callable[[Any], str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(fmt(row) for fmt in columns.values()) + " |")
    return "\n".join(lines)


def _number(column: Any, spec: str) -> Callable[[Any], str]:
    """A table column that formats a row's number ``column`` with ``spec``."""
    return lambda x: format(x[column], spec)


def _layer_columns(layers: list[int]) -> dict[str, Callable[[Any], str]]:
    columns: dict[str, Callable[[Any], str]] = {"term": lambda x: str(x["term"])}
    columns.update({f"layer {layer}": _number(layer, ".3f") for layer in layers})
    return columns


def _grid(table: pd.DataFrame, majority: dict[str, float]) -> str:
    """Tasks x methods, mean ± std of the main metric, after the majority class's score."""
    methods = list(dict.fromkeys(table["method"]))
    lines = ["| task (metric) | majority class | " + " | ".join(methods) + " |",
             "|" + "---|" * (len(methods) + 2)]
    for task, rows in table.groupby("task", sort=False):
        by = rows.set_index("method")
        cells = [f"{by.loc[m, 'mean']:.4f} ± {by.loc[m, 'std']:.4f}" if m in by.index else ""
                 for m in methods]
        floor = majority.get(str(task), math.nan)
        lines.append(f"| {task} ({rows['metric'].iloc[0]}) | "
                     f"{'–' if math.isnan(floor) else f'{floor:.4f}'} | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines)



def _plot_curve(curve: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, rows in curve.groupby("method", sort=False):
        rows = rows.sort_values("size")
        ax.errorbar(rows["size"], rows["mean"], yerr=rows["std"].fillna(0), marker="o",
                    capsize=3, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("training examples")
    ax.set_ylabel(f"dev {curve['metric'].iloc[0]}")
    ax.set_title(f"{curve['task'].iloc[0]}: dev score by training size (mean ± std over seeds)")
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _plot_heatmap(matrix: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * matrix.shape[1], 0.9 + 0.45 * matrix.shape[0]))
    image = ax.imshow(matrix.to_numpy(), aspect="auto", cmap="viridis")
    ax.set_xticks(range(matrix.shape[1]), [str(c) for c in matrix.columns])
    ax.set_yticks(range(matrix.shape[0]), list(matrix.index))
    ax.set_xlabel("layer")
    ax.set_ylabel("bias term")
    ax.set_title("bias change / summed learning rate (BitFit, all biases)")
    fig.colorbar(image, ax=ax)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _plot_pareto(front: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(front["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = front[front["task"] == task]
        ax.scatter(rows["trainable_params"], rows["mean"], color="grey")
        for _, row in rows.iterrows():
            ax.annotate(row["method"], (row["trainable_params"], row["mean"]), fontsize=8,
                        xytext=(3, 3), textcoords="offset points")
        edge = rows[rows["pareto"]].sort_values("trainable_params")
        ax.step(edge["trainable_params"], edge["mean"], where="post", color="tab:red")
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel(f"dev {rows['metric'].iloc[0]} (mean)")
        ax.set_title(task)
    fig.suptitle("dev score against trainable parameters; the Pareto front in red")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _verdict_cell(row: dict[str, Any]) -> str:
    text = f"**{row['verdict']}**"
    return text + (f" ({row['note']})" if row.get("note") else "")



def write_files(a: Analysis, folder: Path) -> list[str]:
    """The tables as CSV and the plots, under ``folder``; the names of every file the report
    has there (the report and summary included)."""
    a.table.to_csv(folder / "main_table.csv", index=False)
    pd.DataFrame(a.verdicts).to_csv(folder / "claims.csv", index=False)
    a.front.to_csv(folder / "pareto.csv", index=False)
    written = ["report.md", "summary.json", "main_table.csv", "claims.csv", "pareto.csv"]
    if len(a.front):
        _plot_pareto(a.front, folder / "pareto.png")
        written.append("pareto.png")
    if len(a.curve):
        a.curve.to_csv(folder / "size_curve.csv", index=False)
        _plot_curve(a.curve, folder / "size_curve.png")
        written += ["size_curve.csv", "size_curve.png"]
    if len(a.matrix):
        a.movement.to_csv(folder / "bias_movement.csv", index=False)
        _plot_heatmap(a.matrix, folder / "bias_heatmap.png")
        written += ["bias_movement.csv", "bias_heatmap.png"]
    if len(a.ablation):
        a.ablation.to_csv(folder / "term_ablation.csv", index=False)
        written.append("term_ablation.csv")
    return written


def markdown(a: Analysis, *, config: ReproduceConfig, base: BaseModel, settings: dict[str, Any],
             seconds: float) -> str:
    """The whole report in Markdown."""
    lines = [*_header_lines(config, base, settings, seconds), *_main_lines(a)]
    if len(a.front):
        lines += _pareto_lines(a.front)
    if len(a.curve):
        lines += _curve_lines(a.curve, a.crossing)
    if len(a.matrix):
        lines += _movement_lines(a.ranked, a.matrix)
    if len(a.ablation):
        lines += _ablation_lines(a.ablation)
    lines += _claim_lines(a.verdicts)
    return "\n".join(lines) + "\n"


def _recipes(c: ReproduceConfig, grid_points: int) -> str:
    return "; ".join(
        f"{label}: batch {rc.batch_size}, "
        + (f"{rc.max_steps} steps" if rc.max_steps else f"{rc.epochs} epochs")
        + f", {rc.schedule}, rates {', '.join(f'{g:g}' for g in rc.grid[: grid_points])}"
        for label, rc in ((m, c.recipe(m)) for m in c.methods))


def _header_lines(c: ReproduceConfig, base: BaseModel, s: dict[str, Any],
                  seconds: float) -> list[str]:
    """The title, the model, the budget and this run's settings."""
    budget = BUDGETS[c.budget]
    recipes = _recipes(c, s["grid_points"])
    return [f"# BitFit's claims on `{base.model_id}`", "", model_description(base), "",
            f"Budget `{budget.name}`: {budget.about}.", "",
            f"This run: {s['max_train_samples'] or 'all the'} training examples per task and "
            f"seed, {s['seeds']} seeds, {s['grid_points']} learning rates per method picked "
            "on held-out training rows that no final run trains on; "
            + (f"dev capped at {s['max_eval_samples']} examples; " if s["max_eval_samples"]
               else "whole dev sets; ") + f"{seconds / 60:.1f} minutes in this call. "
            f"Recipes: {recipes}.", "",
            *([f"Custom task `{c.custom}`: trained on `{c.train_file}`, scored on "
               f"`{c.dev_file}` ({'regression, Pearson' if c.regression else 'accuracy'})."
               , ""] if c.own.given else [])]


def _main_lines(a: Analysis) -> list[str]:
    return ["## Main table: dev score, mean ± std over seeds", "", _grid(a.table, a.majority),
            "",
            "*majority class*: always predicting the training split's most frequent label (a "
            "correlation's constant prediction scores 0); a method near it has learnt little "
            "beyond the label prior.", "",
            _markdown_table(a.table, _RESULT_COLUMNS), ""]


def _pareto_lines(front: pd.DataFrame) -> list[str]:
    return ["## The trade-off: dev score against trainable parameters", "",
            "A method is on the Pareto front (✓) when no other method scores higher with "
            "as many trainable parameters or fewer.", "",
            _markdown_table(front, {
                "task": lambda x: str(x["task"]), "method": lambda x: str(x["method"]),
                "trainable": lambda x: f"{x['trainable_params']:,}",
                "dev mean": lambda x: f"{x['mean']:.4f}",
                "front": lambda x: "✓" if x["pareto"] else ""}), "",
            "![pareto](pareto.png)", ""]


def _curve_lines(curve: pd.DataFrame, cross: float | None) -> list[str]:
    return [f"## Data-size curve: {curve['task'].iloc[0]}", "",
            _markdown_table(curve, {"size": lambda x: f"{x['size']:,}", **_RESULT_COLUMNS}),
            "",
            "BitFit and full fine-tuning cross at about "
            f"{cross:,.0f} training examples." if cross else
            "BitFit and full fine-tuning do not cross over these sizes.", "",
            "![size curve](size_curve.png)", ""]


def _movement_lines(ranked: pd.DataFrame, matrix: pd.DataFrame) -> list[str]:
    task_columns = [c for c in ranked.columns if c not in ("term", "mean")]
    return ["## Which biases move", "",
            "Each term's mean absolute change over the run's summed learning rate (the "
            "most Adam lets a coordinate move): near 1, the term moved the same way step "
            "after step; near 0, it only jittered. The key bias `k` is the control: its "
            "gradient is zero in exact arithmetic (a shift of every key leaves attention "
            "unchanged), so its value is the floor of noise.", "",
            _markdown_table(ranked, {"term": lambda x: str(x["term"]) + (
                " (control)" if x["term"] == "k" else ""),
                **{t: _number(t, ".3f") for t in task_columns},
                "mean": lambda x: f"{x['mean']:.3f}"}), "",
            "Per layer (normalised, averaged over tasks and seeds):", "",
            _markdown_table(matrix.reset_index(), _layer_columns(list(matrix.columns))),
            "", "![bias heatmap](bias_heatmap.png)", ""]


def _ablation_lines(ablation: pd.DataFrame) -> list[str]:
    drops = term_drops(ablation)
    return ["### Undoing one term", "",
            "Dev score lost when one term's change is put back to its pre-trained value "
            "in each BitFit run (mean over seeds; positive: the change mattered):", "",
            _markdown_table(drops, {"term": lambda x: str(x["term"]), **{
                t: _number(t, "+.4f") for t in drops.columns if t != "term"}}), ""]


def _claim_lines(verdicts: list[dict[str, Any]]) -> list[str]:
    lines = ["## Claims", "", *[f"- {rule}" for rule in rules()], "",
             "| claim | task | evidence | rule | effect [90% interval] | p | verdict |",
             "|---|---|---|---|---|---|---|"]
    for row in verdicts:
        p = "" if math.isnan(row["p_value"]) else f"{row['p_value']:.4f}"
        effect = ("" if math.isnan(row["estimate"]) else f"{row['estimate']:+.4f}" + (
            "" if math.isnan(row["low"]) else f" [{row['low']:+.4f}, {row['high']:+.4f}]"))
        lines.append(f"| {row['claim']}. {CLAIMS[row['claim']]} | {row['task']} | "
                     f"{row['evidence']} | {row['test']} | {effect} | {p} | "
                     f"{_verdict_cell(row)} |")
    return lines


def print_summary(summary: dict[str, Any]) -> None:
    """The report's tables and verdicts, and where MLflow shows it all."""
    from bitfit.tracking import run_url, ui_command

    print(summary["markdown"])
    print(f"report and plots: {Path(summary['report']).parent}")
    print(f"MLflow: run {summary['mlflow_run_id']} (experiment {summary['experiment_id']}) in "
          f"{summary['tracking_uri']}")
    home = summary.get("home")
    if home:
        print(f"see it: {ui_command(summary['tracking_uri'], home)}")
    if summary.get("experiment_id"):  # the experiment's runs, not its first page
        print(f"its runs: {run_url(summary['tracking_uri'], summary['experiment_id'], None)}")
