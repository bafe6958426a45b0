"""Median wall time of a training step (full, BitFit all/qm2, BitFit bf16) and of an inference
forward pass on the bundled MiniLM, one fixed batch of 32 x 64 tokens; peak memory per mode.

    python benchmarks/step_time.py [--reps 20] [--warmup 3]

A training step is the library's own ``bitfit.train.train_step``, on the model and optimiser that
``prepare_model`` and ``configure_optimizer`` set up as ``train`` does (the batch already collated);
each mode has its own encoder copy and the modes run in rotating rounds, so machine noise hits
all alike. Peak memory: a process per mode.
``wall_s`` and ``other_cpu_s`` cover the timed rounds: other_cpu_s well above 0 means other
processes competed for the cores and the times are not to be trusted.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from _common import DATA_DIR, Run, emit, log, median_ms

from bitfit.data import load_splits
from bitfit.models import BaseModel, load_base
from bitfit.tasks import load_task
from bitfit.train import TrainConfig, configure_optimizer, prepare_model, train_step

CONFIGS: dict[str, TrainConfig | None] = {  # None: inference forward pass
    "full": TrainConfig(method="full", learning_rate=2e-5, precision="fp32"),  # a full-FT lr
    "bitfit_all": TrainConfig(precision="fp32"),
    "bitfit_qm2": TrainConfig(subset="qm2", precision="fp32"),
    "forward": None,
    "bitfit_bf16": TrainConfig(precision="bf16"),
    "bitfit_no_dropout": TrainConfig(precision="fp32", dropout=0.0),  # what dropout costs
    "plain": None,  # a plain hand-written BitFit loop on the stock HF classifier, for reference
}
TARGETS = {"bitfit_over_full": ("<=", 0.60), "bitfit_over_forward": ("<=", 2.2),
           "bf16_speedup": (">=", 1.8), "bitfit_over_plain": ("<=", 1.03)}


def fixed_batch(base: BaseModel, size: int, length: int) -> tuple[dict, str]:
    """Inputs and labels of one batch: the longest SST-2 train sentences (real text, little
    padding), tokenised as the library does, padded or truncated to exactly ``length`` tokens."""
    train = load_splits(load_task("sst2"), data_dir=DATA_DIR)[1]["train"]
    rows = train.loc[train["sentence"].str.len().nlargest(size).index]
    enc = base.tokenizer(rows["sentence"].tolist(), truncation=True, max_length=length,
                         padding="max_length", return_tensors="pt")
    real = float(enc["attention_mask"].float().mean())
    described = (f"SST-2 train: the {size} longest sentences (characters), tokenised, "
                 f"truncated/padded to {length} tokens ({real:.0%} real tokens)")
    return {**enc, "labels": torch.tensor(rows["label"].to_numpy())}, described


def matmul_flops(config, size: int, length: int) -> dict[str, float]:
    """Matrix FLOPs of one batch through the encoder's layers: the forward pass, the backward
    pass BitFit needs (each linear layer's input gradient, attention's four products), and the
    weight gradients full fine-tuning adds. Their ratios are what the step ratios would be if
    every product ran at one rate and nothing else took time."""
    h, ffn, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    tokens = size * length
    linear = layers * 2 * tokens * (4 * h * h + 2 * h * ffn)
    attention = layers * 2 * 2 * tokens * length * h  # scores, then the weighted values
    forward = linear + attention
    bitfit = forward + linear + 2 * attention
    return {"forward": forward, "bitfit": bitfit, "full": bitfit + linear}


def make_step(base: BaseModel, mode: str, batch: dict) -> Callable[[], None]:
    """One call = one training step of ``mode`` as bitfit.train.train runs it (or a forward)."""
    config = CONFIGS[mode]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if mode == "plain":
        return plain_step(base, batch)
    if config is None:  # as bitfit.train.predict
        model = base.classifier(2, seed=0)
        model.eval()

        def forward() -> None:
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=False):
                model(**inputs).float().cpu().numpy()
        return forward
    cpu = torch.device("cpu")
    model, trained, masks = prepare_model(base, 2, config, cpu)  # the library's own set-up
    optimizer, scheduler, _ = configure_optimizer(trained, masks, config, total_steps=100_000,
                                                  device=cpu)
    params = list(trained.values())
    model.train()

    def step() -> None:
        loss = train_step(model, batch, optimizer, scheduler, params=params,
                          max_grad_norm=config.max_grad_norm, precision=config.precision)
        if not math.isfinite(loss):
            raise RuntimeError(f"{mode}: loss diverged")
    return step


def plain_step(base: BaseModel, batch: dict) -> Callable[[], None]:
    """The loop anyone would write: stock classifier, biases and head trainable, AdamW."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(base.path, num_labels=2)
    for name, p in model.named_parameters():
        p.requires_grad_(name.endswith("bias") or name.startswith("classifier"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()

    def step() -> None:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return step


def child_memory(base: BaseModel, mode: str, batch: dict) -> float:
    """Peak RSS of 3 steps of one mode, in this process. The peak is reset after loading so that
    loading's transient spike is left out; it is read from VmHWM because ru_maxrss of a spawned
    child starts at its parent's peak (Linux carries it over exec)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    if mode != "load":
        step = make_step(base, mode, batch)
        for _ in range(3):
            step()
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per mode first")
    parser.add_argument("--only", choices=(*CONFIGS, "load"), help="child: one mode only")
    parser.add_argument("--memory", action="store_true", help="child: print its peak memory")
    args = parser.parse_args()
    if args.memory != bool(args.only):
        parser.error("--only and --memory go together")
    base = load_base()
    batch, described = fixed_batch(base, 32, 64)
    if args.memory:
        emit({"mode": args.only, "peak_memory_mb": round(child_memory(base, args.only, batch), 1)})
        return
    modes = list(CONFIGS)
    steps = {m: make_step(dataclasses.replace(base, encoder=copy.deepcopy(base.encoder),
                                              _pristine={}), m, batch) for m in modes}
    times: dict[str, list[float]] = {m: [] for m in modes}
    run = Run()
    for r in range(-args.warmup, args.reps):  # rounds r < 0 warm up, untimed
        for m in modes[r % len(modes):] + modes[: r % len(modes)]:  # rotate who goes first
            tick = time.perf_counter()
            steps[m]()
            if r >= 0:
                times[m].append(time.perf_counter() - tick)
        log(f"round {r + 1}/{args.reps}" if r >= 0 else "warm-up round")
    timing = run.info()  # other_cpu_s > 0: other processes competed for the cores
    ms = {m: median_ms(t) for m, t in times.items()}
    ratios = {"bitfit_over_full": ms["bitfit_all"] / ms["full"],
              "bitfit_over_forward": ms["bitfit_all"] / ms["forward"],
              "bf16_speedup": ms["bitfit_all"] / ms["bitfit_bf16"],
              "plain_over_forward": ms["plain"] / ms["forward"],
              "bitfit_over_plain": ms["bitfit_all"] / ms["plain"],
              "no_dropout_over_forward": ms["bitfit_no_dropout"] / ms["forward"]}
    flops = matmul_flops(base.encoder.config, 32, 64)
    log("peak memory: one process per mode")
    memory = {m: json.loads(subprocess.run(
        [sys.executable, __file__, "--only", m, "--memory"],
        check=True, stdout=subprocess.PIPE, text=True).stdout)["peak_memory_mb"]
        for m in ("load", *modes)}
    emit({
        **{f"{m}_step_ms" if m != "forward" else "forward_ms": v for m, v in ms.items()},
        **{k: round(v, 3) for k, v in ratios.items()},
        "flop_ratios": {"bitfit_over_full": round(flops["bitfit"] / flops["full"], 3),
                        "bitfit_over_forward": round(flops["bitfit"] / flops["forward"], 3),
                        "meaning": "the step ratios if every matrix product ran at one rate and "
                                   "nothing else took time: what the method's arithmetic allows"},
        "targets": {k: f"{op} {v}" for k, (op, v) in TARGETS.items()},
        "meets_targets": all(ratios[k] <= v if op == "<=" else ratios[k] >= v
                             for k, (op, v) in TARGETS.items()),
        "peak_memory_mb": memory,
        "memory_method": "a process per mode, 3 steps; peak RSS (VmHWM) counted from after "
                         "loading the model and batch ('load': no step)",
        "batch": {"size": 32, "tokens": 64, "source": described},
        "reps": args.reps, "warmup": args.warmup, **timing,
    })


if __name__ == "__main__":
    main()
