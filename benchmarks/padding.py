"""Share of padded tokens in one epoch of training batches, as ``bitfit.train.train`` batches.

    python benchmarks/padding.py [--task cola] [--data-dir ../shared/data/glue]
                                 [--batch-size 32] [--max-length 128]

The library's batches (``train_batches`` with length grouping, seed 0, epoch 0), against two
contrasts: the same shuffled order without length grouping, and every sentence padded to
``--max-length``. Only the tokenizer of the bundled model is loaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import CACHE_DIR, DATA_DIR, emit
from transformers import AutoTokenizer

from bitfit.data import padding_fraction, prepare, train_batches
from bitfit.models import resolve_model
from bitfit.tasks import load_task

TARGET = 0.10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="cola")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR,
                        help="GLUE folder (default: ../shared/data/glue from the project root)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None)[0])
    train = prepare(load_task(args.task), tokenizer, data_dir=args.data_dir,
                    max_length=args.max_length, cache_dir=CACHE_DIR).train

    def fraction(group_by_length: bool) -> float:
        return padding_fraction(train, train_batches(
            train, args.batch_size, seed=0, epoch=0, group_by_length=group_by_length))

    grouped = fraction(True)
    lengths = train.lengths
    emit({
        "task": args.task,
        "padding_fraction": round(grouped, 4),
        "target": f"<= {TARGET}",
        "meets_target": grouped <= TARGET,
        "without_grouping": round(fraction(False), 4),
        "padded_to_max_length": round(1 - lengths.sum() / (len(lengths) * args.max_length), 4),
        "examples": len(train), "batch_size": args.batch_size, "max_length": args.max_length,
        "mean_tokens": round(float(lengths.mean()), 2), "max_tokens": int(lengths.max()),
    })


if __name__ == "__main__":
    main()
