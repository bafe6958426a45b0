"""A BitFit learning-rate search written the way a ``transformers`` user writes it:
``Trainer.hyperparameter_search`` (Optuna backend, ``model_init``) on CoLA. ``cold_start.py``
times this whole script, start-up included, against the same search as a bitfit command.

    python benchmarks/trainer_search.py [--trials 3] [--rows 2000] [--epochs 2]

The search: all biases plus the head of the bundled MiniLM, learning rate log-uniform in
[1e-4, 1e-2] (TPE, seed 0), ``--rows`` training rows drawn with seed 0, batch 32, max length 128,
dev (all 1,043 rows) scored after each epoch, best dev MCC reported. It prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

START = time.perf_counter()

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from datasets import Dataset  # noqa: E402
from sklearn.metrics import matthews_corrcoef  # noqa: E402
from transformers import (AutoModelForSequenceClassification, AutoTokenizer,  # noqa: E402
                          DataCollatorWithPadding, Trainer, TrainingArguments)
from transformers.utils import logging as hf_logging  # noqa: E402

from bitfit.models import resolve_model  # noqa: E402 - only to find the bundled checkpoint

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
LOW, HIGH = 1e-4, 1e-2


def bitfit_model(path: str):
    """The Trainer's model with BitFit's trainable parameters: the biases and the head."""
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    for name, param in model.named_parameters():
        param.requires_grad = name.endswith(".bias") or name.startswith("classifier.")
    return model


def cola(split: str) -> pd.DataFrame:
    return pd.read_csv(DATA_DIR / "CoLA" / f"{split}.tsv", sep="\t", header=None,
                       names=["source", "label", "star", "sentence"], quoting=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--output-dir", default="trainer-search")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    path, _ = resolve_model(None)
    tokenizer = AutoTokenizer.from_pretrained(path)
    train = cola("train").sample(n=args.rows, random_state=0)
    dev = cola("dev")

    def rows(frame: pd.DataFrame) -> Dataset:
        ds = Dataset.from_pandas(frame[["sentence", "label"]], preserve_index=False)
        return ds.map(lambda b: tokenizer(b["sentence"], truncation=True, max_length=128),
                      batched=True, remove_columns=["sentence"])

    def metrics(prediction) -> dict[str, float]:
        predicted = np.argmax(prediction.predictions, axis=-1)
        return {"mcc": float(matthews_corrcoef(prediction.label_ids, predicted))}

    training = TrainingArguments(
        output_dir=args.output_dir, num_train_epochs=args.epochs,
        per_device_train_batch_size=32, per_device_eval_batch_size=64, eval_strategy="epoch",
        save_strategy="no", logging_strategy="epoch", report_to=[], use_cpu=True, seed=0,
        disable_tqdm=True)
    trainer = Trainer(model_init=lambda trial=None: bitfit_model(path), args=training,
                      train_dataset=rows(train),
                      eval_dataset=rows(dev), data_collator=DataCollatorWithPadding(tokenizer),
                      compute_metrics=metrics)
    best = trainer.hyperparameter_search(
        direction="maximize", backend="optuna", n_trials=args.trials,
        hp_space=lambda trial: {"learning_rate": trial.suggest_float("learning_rate", LOW, HIGH,
                                                                     log=True)},
        compute_objective=lambda m: m["eval_mcc"], sampler=optuna.samplers.TPESampler(seed=0))
    print(json.dumps({"best_dev_mcc": round(best.objective, 4),
                      "best_learning_rate": best.hyperparameters["learning_rate"],
                      "trials": args.trials, "train_rows": len(train),
                      "script_s": round(time.perf_counter() - START, 1)}))


if __name__ == "__main__":
    main()
