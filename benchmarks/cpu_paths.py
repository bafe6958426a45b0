"""The CPU paths chosen in evaluation and bf16 training, each against the one it replaced, in one
run: attention over short sequences as two batched products against SDPA's fused kernel (the
MiniLM's inference forward pass by length and precision), evaluation batches of 64 against 128
(CoLA's whole dev set), and a bf16 BitFit run with its frozen weight matrices held in bf16
against autocast's cast on every call.

    python benchmarks/cpu_paths.py [--reps 5]

Each figure is the median of ``--reps`` timings (milliseconds), the compared paths interleaved.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
from _common import CACHE_DIR, DATA_DIR, Run, emit, log
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from bitfit import dropout
from bitfit import train as train_module
from bitfit.data import prepare
from bitfit.dropout import two_products
from bitfit.models import load_base
from bitfit.tasks import load_task
from bitfit.train import TrainConfig, predict, train

CPU = torch.device("cpu")


def median_ms(function, reps: int) -> float:
    function()  # warm-up: kernels for these shapes
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 1)


def _two_products(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                  **kwargs):
    return two_products(query, key, value, attention_mask, dropout, scaling), None


def attention_paths(base, reps: int) -> list[dict[str, object]]:
    rows = []
    encoder = base.encoder.eval()
    for length, batch in ((12, 64), (32, 64), (64, 32), (128, 32)):
        ids = torch.randint(1000, 5000, (batch, length))
        mask = torch.ones_like(ids)
        mask[::2, length * 3 // 4:] = 0  # every other row padded
        for precision in ("fp32", "bf16"):
            row: dict[str, object] = {"tokens": length, "rows": batch, "precision": precision}
            for name, path in (("two_products_ms", _two_products),
                               ("sdpa_ms", sdpa_attention_forward)):
                AttentionInterface.register(dropout.ATTENTION, path)

                def forward(ids=ids, mask=mask, bf16=precision == "bf16") -> None:
                    with torch.inference_mode(), torch.autocast(
                            "cpu", dtype=torch.bfloat16, enabled=bf16):
                        encoder(input_ids=ids, attention_mask=mask)

                row[name] = median_ms(forward, reps)
            AttentionInterface.register(dropout.ATTENTION, dropout.attention)
            row["chosen"] = ("two_products" if precision == "bf16"
                             and length <= dropout.EAGER_MAX_LENGTH else "sdpa")
            rows.append(row)
            log(str(row))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    base = load_base()
    data = prepare(load_task("cola"), base.tokenizer, data_dir=DATA_DIR, max_length=128,
                   max_train_samples=1000, cache_dir=CACHE_DIR)
    run = Run()
    attention = attention_paths(base, args.reps)

    model = base.classifier(data.task.num_labels, seed=0).eval()
    dev = data.evals["validation"]
    batches = {}
    for precision in ("bf16", "fp32"):
        for size in (64, 128):
            batches[f"{precision}_batch{size}_ms"] = median_ms(
                lambda s=size, p=precision: predict(model, dev, batch_size=s, pad_id=0,
                                                    device=CPU, precision=p), args.reps)
    log(str(batches))

    config = TrainConfig(epochs=1, learning_rate=1e-3, precision="bf16", seed=0)
    frozen = train_module.frozen_weights_in
    runs: dict[str, list[float]] = {"cast_once": [], "cast_every_call": []}
    train(base, data, config, device="cpu", progress=False, score_train=False)  # warm-up
    for _ in range(args.reps):
        for name, swap in (("cast_once", frozen),
                           ("cast_every_call", lambda m, d: contextlib.nullcontext())):
            train_module.frozen_weights_in = swap
            try:
                runs[name].append(train(base, data, config, device="cpu", progress=False,
                                        score_train=False).train_time_s)
            finally:
                train_module.frozen_weights_in = frozen
    weights = {f"{k}_train_s": round(statistics.median(v), 2) for k, v in runs.items()}
    weights["saved"] = round(1 - weights["cast_once_train_s"] / weights["cast_every_call_train_s"],
                             3)
    emit({"benchmark": "cpu_paths", "attention_inference": attention,
          "cola_dev_predict": {**batches, "rows": len(dev)},
          "bf16_bitfit_training": {**weights, "rows": len(data.train), "epochs": 1},
          **run.info()})


if __name__ == "__main__":
    main()
