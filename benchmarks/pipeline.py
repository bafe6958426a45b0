"""The default CoLA pipeline against the machine's compute floor, phase by phase, in one run.

    python benchmarks/pipeline.py [--fraction 1.0] [--task cola]

It runs ``bitfit.pipeline.run`` on the embedded defaults (the BitFit study of 20 trials, the
4-point full fine-tuning grid, 5 + 5 final seeds, all of CoLA) in a fresh home, each phase timed,
and prints per phase the wall time, the tokens, the matrix FLOPs, the floor and the efficiency:

- **FLOPs** count every real token (padding excluded) through every matrix product of the
  encoder: per layer and token 8h^2 (Q, K, V, output) + 4h*ffn (the MLP) + 4h*n (attention over
  the example's n tokens), times 1 for an evaluation, 2 for a BitFit or head-only step (the
  backward needs the activations' gradients, not the weights'), 3 for full fine-tuning.
- **floor** = FLOPs / the machine's matrix-multiply rate at the precision the runs use, measured
  here (a few seconds of products of the encoder's shapes, all cores).
- **efficiency** = floor / wall; the goal for the whole default pipeline is >= 0.5.

``--fraction f`` scales the BitFit trials, the seeds and the training rows by f for a quicker
look (the JSON says so); the grid keeps its 4 points. Each phase's line also says where the
rest of its time went: its CPU use (the cores it left idle), and the share of its FLOPs spent
in evaluation.

- **ceiling**: the efficiency of the bare steps the phases are made of, measured here first:
  ``train_step`` in a loop on the study's own training batches (batch 32, one thread, per
  method) and evaluation batches through ``predict``, their rate times the cores (as if the
  processes side by side scaled perfectly). ``of_ceiling`` = the phase's ceiling time (its
  FLOPs at those rates) / its wall: what the pipeline loses around the steps, apart from what
  the steps themselves reach on this CPU.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from _common import DATA_DIR, Run, emit, log

START = time.perf_counter()

from bitfit import pipeline  # noqa: E402
from bitfit.data import Encoded, TaskData  # noqa: E402
from bitfit.space import load_space  # noqa: E402
from bitfit.train import resolve_precision  # noqa: E402

PASSES = {"bitfit": 2, "frozen": 2, "rand": 2, "full": 3}  # forward + backward, in forwards


def matmul_rate(precision: str, seconds: float = 2.0) -> float:
    """FLOP/s of the encoder's matrix shapes (2,048 tokens) at ``precision``, all cores."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    shapes = [(2048, 384, 384), (2048, 384, 1536), (2048, 1536, 384)]
    pairs = [(torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype))
             for m, k, n in shapes]
    flops_per_round = sum(2 * m * k * n for m, k, n in shapes)
    for a, b in pairs:  # warm-up
        a @ b
    rounds, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for a, b in pairs:
            a @ b
        rounds += 1
    return rounds * flops_per_round / (time.perf_counter() - start)


def forward_flops(split: Encoded, config: Any) -> float:
    """Matrix FLOPs of one forward pass of every real token of ``split``."""
    h, ffn, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    n = split.lengths.astype(np.float64)
    return float(layers * ((8 * h * h + 4 * h * ffn) * n.sum() + 4 * h * (n * n).sum()))


def _flops_of(rows_lengths: np.ndarray, config: Any) -> float:
    h, ffn, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    n = rows_lengths.astype(np.float64)
    return float(layers * ((8 * h * h + 4 * h * ffn) * n.sum() + 4 * h * (n * n).sum()))


def step_rates(base: Any, data: TaskData, precision: str, steps: int = 30) -> dict[str, float]:
    """Forward FLOP/s of bare steps on ``data``'s training rows, one thread, times the cores:
    a BitFit and a full fine-tuning step (batch 32, counted as 2 and 3 forwards) and an
    evaluation batch (``predict``, its batch size). Each is timed on a second pass over the
    same batches: oneDNN makes each new shape's kernels on its first use, which a long run
    pays once."""
    from bitfit.data import train_batches
    from bitfit.evaluation import predict
    from bitfit.train import (TrainConfig, configure_optimizer, frozen_weights_in,
                              prepare_model, train_step)

    threads, cores = torch.get_num_threads(), os.cpu_count() or 1
    torch.set_num_threads(1)
    split, encoder, cpu = data.train, base.encoder.config, torch.device("cpu")
    batches = train_batches(split, 32, seed=0, epoch=0)[:steps]
    rates: dict[str, float] = {}
    try:
        for method in ("bitfit", "full"):
            config = TrainConfig(method=method, precision=precision, learning_rate=1e-5)
            model, trained, masks = prepare_model(base, data.task.num_labels, config, cpu)
            optimizer, scheduler, _ = configure_optimizer(trained, masks, config,
                                                          total_steps=10_000, device=cpu)
            model.train()
            low = torch.bfloat16 if precision == "bf16" and method == "bitfit" else None
            with frozen_weights_in(model, low):
                elapsed = 0.0
                for timed in (False, True):  # the first pass makes each shape's kernels
                    for rows in batches:
                        batch = collate_rows(split, rows, base)
                        start = time.perf_counter()
                        train_step(model, batch, optimizer, scheduler,
                                   params=list(trained.values()), max_grad_norm=1.0,
                                   precision=precision)
                        elapsed += (time.perf_counter() - start) if timed else 0.0
                if method == "bitfit":  # an evaluation as a BitFit trial's, frozen in bf16
                    predict(model, split, batch_size=TrainConfig().eval_batch_size,
                            pad_id=base.tokenizer.pad_token_id or 0, device=cpu,
                            precision=precision)  # the shapes' kernels made
                    start = time.perf_counter()
                    predict(model, split, batch_size=TrainConfig().eval_batch_size,
                            pad_id=base.tokenizer.pad_token_id or 0, device=cpu,
                            precision=precision)
                    rates["evaluation"] = _flops_of(split.lengths, encoder) / (
                        time.perf_counter() - start) * cores
            flops = sum(_flops_of(split.lengths[r], encoder) for r in batches)
            rates[method] = PASSES[method] * flops / elapsed * cores
    finally:
        torch.set_num_threads(threads)
    return rates


def collate_rows(split: Any, rows: np.ndarray, base: Any) -> dict:
    from bitfit.data import collate

    return collate(split, rows, pad_id=base.tokenizer.pad_token_id or 0)


class Timed:
    """The pipeline's ``phase`` hook: runs each phase and keeps its wall and CPU time."""

    def __init__(self) -> None:
        self.phases: list[dict[str, Any]] = []
        self.data: dict[str, TaskData] = {}

    def __call__(self, fn, *args, **kwargs):
        cpu = _cpu()
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        wall = time.perf_counter() - start
        self.phases.append({"phase": fn.__name__, "wall_s": wall, "cpu_s": _cpu() - cpu,
                            "kwargs": kwargs, "args": args, "result": result})
        return result


def _cpu() -> float:
    """CPU seconds of this process and its children: those ended, and those still running (the
    side-by-side processes a run keeps from phase to phase)."""
    usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage) + _running_children_cpu()


def _running_children_cpu() -> float:
    me, ticks, total = str(os.getpid()), os.sysconf("SC_CLK_TCK"), 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:  # ppid; utime and stime are the 12th and 13th after the name
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def study_flops(storage: str, name: str, data: TaskData, config: Any,
                rates: dict[str, float]) -> tuple[float, float, int, int, float]:
    """(training FLOPs, evaluation FLOPs, training tokens, evaluation tokens, ceiling seconds)
    of a study: each trial's epochs on its training split and its evaluations on the
    selection split."""
    study = optuna.load_study(study_name=name, storage=storage)
    train_f = forward_flops(data.train, config)
    eval_split = data.evals[data.selection_split]
    eval_f = forward_flops(eval_split, config)
    training = evaluation = ceiling = 0.0
    train_tokens = eval_tokens = 0
    for trial in study.trials:
        epochs = len(trial.intermediate_values)
        method = trial.user_attrs.get("method", "bitfit")
        training += epochs * PASSES[method] * train_f
        evaluation += epochs * eval_f
        ceiling += epochs * (PASSES[method] * train_f / _rate(rates, method)
                             + eval_f / rates["evaluation"])
        train_tokens += epochs * int(data.train.lengths.sum())
        eval_tokens += epochs * int(eval_split.lengths.sum())
    return training, evaluation, train_tokens, eval_tokens, ceiling


def _rate(rates: dict[str, float], method: str) -> float:
    return rates["full" if method == "full" else "bitfit"]  # head-only and rand: as BitFit


def _final(summary: dict[str, Any]) -> dict[str, Any]:
    """Each method's dev main metric per seed and its mean, and the verdict."""
    evaluation = summary.get("evaluation") or {}
    metric = summary.get("metric", "mcc")
    scores: dict[str, list[float]] = {}
    for key, metrics in (evaluation.get("runs") or {}).items():
        scores.setdefault(key.rsplit("-seed", 1)[0], []).append(round(metrics[metric], 4))
    return {"metric": metric, "per_seed": scores,
            "mean": {m: round(float(np.mean(v)), 4) for m, v in scores.items()},
            "verdict": (evaluation.get("verdict") or {}).get("verdict")}


def _phase(p: dict[str, Any], *, storage: str, summary: dict[str, Any], encoder: Any,
           rate: float, rates: dict[str, float]) -> dict[str, Any]:
    """One phase's line: its FLOPs from what it ran, its floor, its ceiling time (the same
    FLOPs at the bare steps' rates), and where the rest went."""
    name, flops, eval_flops, tokens, ceiling = p["phase"], 0.0, 0.0, 0, 0.0
    if name == "search_study":
        study = p["kwargs"]["study_name"]
        t, e, tt, et, ceiling = study_flops(storage, study, p["args"][1], encoder, rates)
        flops, eval_flops, tokens = t + e, e, tt + et
        name = f"study {study}"
    elif name == "final_evaluation":
        flops, eval_flops, tokens, ceiling = _final_flops(p, storage, summary, encoder, rates)
    floor = flops / rate
    return {
        "phase": name, "wall_s": round(p["wall_s"], 1), "tokens": tokens,
        "tflops": round(flops / 1e12, 3), "floor_s": round(floor, 1),
        "efficiency": round(floor / p["wall_s"], 3) if p["wall_s"] else None,
        "ceiling_s": round(ceiling, 1),
        "of_ceiling": round(ceiling / p["wall_s"], 3) if p["wall_s"] else None,
        "rest": {"cpu_use": round(p["cpu_s"] / (p["wall_s"] * (os.cpu_count() or 1)),
                                  2) if p["wall_s"] else None,
                 "evaluation_flops_share": round(eval_flops / flops, 3) if flops
                 else None}}


def _final_flops(p: dict[str, Any], storage: str, summary: dict[str, Any], encoder: Any,
                 rates: dict[str, float]) -> tuple[float, float, int, float]:
    """(FLOPs, evaluation FLOPs, tokens, ceiling seconds) of the final evaluation: each
    method's seeds, trained for its best trial's epochs and evaluated on dev after each."""
    flops, eval_flops, tokens, ceiling = 0.0, 0.0, 0, 0.0
    data, c = p["args"][1], p["args"][2]
    epochs = {"bitfit": None, "full": None}
    for label, stud in (("bitfit", summary["study_name"]),
                        ("full", summary.get("baseline", {}).get("study_name"))):
        if stud:
            best = optuna.load_study(study_name=stud, storage=storage).best_trial
            epochs[label] = best.user_attrs.get("config", {}).get("epochs", 3)
    # each seed trains on its own sample of the study's size (``max_train_samples``) where
    # that is smaller than the split: an epoch is that many rows, of the split's mean length
    share = min(c.max_train_samples or len(data.train), len(data.train)) / len(data.train)
    train_f, dev = share * forward_flops(data.train, encoder), next(iter(data.evals.values()))
    dev_f = forward_flops(dev, encoder)
    for label, n in epochs.items():
        if n:
            flops += c.seeds * n * (PASSES[label] * train_f + dev_f)
            eval_flops += c.seeds * n * dev_f
            tokens += c.seeds * n * int(share * data.train.lengths.sum() + dev.lengths.sum())
            ceiling += c.seeds * n * (PASSES[label] * train_f / _rate(rates, label)
                                      + dev_f / rates["evaluation"])
    return flops, eval_flops, tokens, ceiling


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=1.0)
    parser.add_argument("--task", default="cola")
    args = parser.parse_args()
    f = args.fraction
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    space = load_space("bitfit")
    precision = resolve_precision("auto", torch.device("cpu"))
    log(f"probing the matrix-multiply rate ({precision})")
    rate = matmul_rate(precision)
    scaled = f < 1.0
    rows = None
    if scaled:
        from bitfit.data import load_splits
        from bitfit.tasks import load_task

        total = len(load_splits(load_task(args.task), data_dir=DATA_DIR)[1]["train"])
        rows = max(200, round(total * f))
    n_trials = max(2, round(space.n_trials * f)) if scaled else None
    seeds = max(2, round(5 * f)) if scaled else 5
    run = Run()
    timed = Timed()
    with tempfile.TemporaryDirectory() as home:
        config = pipeline.Config(task=args.task, data_dir=str(DATA_DIR), n_trials=n_trials,
                                 seeds=seeds, max_train_samples=rows, home=home)
        start = time.perf_counter()
        summary = pipeline.run(config, phase=timed)
        wall = time.perf_counter() - start
        storage = f"sqlite:///{Path(home).resolve()}/optuna.db"
        base = timed.phases[0]["result"]
        encoder = base.encoder.config
        log("timing the bare steps on the study's data (the ceiling)")
        rates = step_rates(base, timed.phases[1]["result"], precision)
        phases = [_phase(p, storage=storage, summary=summary, encoder=encoder, rate=rate,
                         rates=rates) for p in timed.phases]
        total_flops = sum(p["tflops"] for p in phases) * 1e12
        floor = total_flops / rate
        ceiling = sum(p["ceiling_s"] for p in phases)
    emit({
        "benchmark": "pipeline", "task": args.task, "fraction": f,
        "scaled": {"bitfit_trials": n_trials or space.n_trials, "seeds": seeds,
                   "train_rows": rows or "all"} if scaled else "the default pipeline",
        "precision": precision, "matmul_tflops_per_s": round(rate / 1e12, 3),
        "phases": phases,
        "startup_s": round(timed.phases[0]["wall_s"] if timed.phases else 0.0, 1),
        "import_s": round(start - START, 1),
        "wall_s": round(wall, 1), "tflops": round(total_flops / 1e12, 3),
        "floor_s": round(floor, 1), "efficiency": round(floor / wall, 3),
        "ceiling": {"step_tflops_per_s": {k: round(v / 1e12, 3) for k, v in rates.items()},
                    "efficiency": {k: round(v / rate, 3) for k, v in rates.items()},
                    "ceiling_s": round(ceiling, 1),
                    "of_ceiling": round(ceiling / wall, 3)},
        "target": {"efficiency": ">= 0.5"},
        "best": {"bitfit": summary.get("best_value"),
                 "full": summary.get("baseline", {}).get("best_value")},
        "best_params": {"bitfit": summary.get("best_params"),
                        "full": summary.get("baseline", {}).get("best_params")},
        "final": _final(summary),
        **run.info()})


if __name__ == "__main__":
    main()
