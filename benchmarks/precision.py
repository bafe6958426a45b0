"""Does bf16 keep BitFit's quality? BitFit ``all`` on SST-2, fp32 against bf16, several seeds.

    python benchmarks/precision.py [--seeds 0 1 2] [--samples 8000] [--lr 1e-3]

One epoch on a seeded sample of the SST-2 training set, batch 32, otherwise the default
``TrainConfig``; accuracy on the SST-2 dev set. The base model is loaded once (``train``
restores it before each run) and the two precisions alternate per seed, so machine noise hits
both alike. Wall time is the training loop only (``TrainResult.train_time_s``).
"""

from __future__ import annotations

import argparse
import statistics

from _common import CACHE_DIR, DATA_DIR, Run, emit, log

from bitfit.data import prepare
from bitfit.models import load_base
from bitfit.tasks import load_task
from bitfit.train import TrainConfig, train

PRECISIONS = ("fp32", "bf16")
RULE = "|mean_fp32 - mean_bf16| < max(std_fp32, std_bf16) (sample std, ddof=1)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--samples", type=int, default=8000, help="SST-2 training examples")
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    if len(args.seeds) < 2:
        parser.error("the rule needs a standard deviation: give at least two seeds")
    base = load_base()
    data = prepare(load_task("sst2"), base.tokenizer, data_dir=DATA_DIR,
                   max_train_samples=args.samples, cache_dir=CACHE_DIR)
    run = Run()
    acc: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    wall: dict[str, float] = dict.fromkeys(PRECISIONS, 0.0)
    for seed in args.seeds:
        for precision in PRECISIONS:
            config = TrainConfig(learning_rate=args.lr, epochs=1, seed=seed, precision=precision)
            result = train(base, data, config, device="cpu", progress=False)
            if result.status != "completed":
                raise RuntimeError(f"seed {seed} {precision}: {result.status} {result.message}")
            acc[precision].append(result.metrics["validation"]["accuracy"])
            wall[precision] += result.train_time_s
            log(f"seed {seed} {precision}: accuracy {acc[precision][-1]:.4f}, "
                f"{result.train_time_s:.1f} s training")
    mean = {p: statistics.mean(a) for p, a in acc.items()}
    std = {p: statistics.stdev(a) for p, a in acc.items()}
    emit({
        **{f"acc_{p}": a for p, a in acc.items()},
        **{f"mean_{p}": round(m, 4) for p, m in mean.items()},
        **{f"std_{p}": round(s, 4) for p, s in std.items()},
        **{f"wall_s_{p}": round(w, 1) for p, w in wall.items()},
        "speedup": round(wall["fp32"] / wall["bf16"], 3),
        "bf16_keeps_quality": abs(mean["fp32"] - mean["bf16"]) < max(std.values()),
        "rule": RULE,
        "setup": {"task": "sst2", "train_samples": len(data.train), "epochs": 1,
                  "batch_size": 32, "learning_rate": args.lr, "seeds": args.seeds,
                  "method": "bitfit", "subset": "all", "eval": "SST-2 dev accuracy",
                  "wall": "training loop only, summed over seeds"},
        **run.info(),
    })


if __name__ == "__main__":
    main()
