"""The same three-trial learning-rate search with ``transformers.Trainer.hyperparameter_search``
(Optuna backend, ``model_init``, as a typical user writes it) and with bitfit; seconds per trial
and the best dev score of each, in one run.

    python benchmarks/vs_trainer.py [--trials 3] [--rows 2000] [--epochs 2]

The search: BitFit on all biases plus the head of the bundled MiniLM, learning rate log-uniform
in [1e-4, 1e-2] (TPE, seed 0, no pruning), CoLA training rows (a seeded sample of ``--rows``),
batch 32, dev (all 1,043 rows) scored after each epoch, the best dev MCC of the search reported.
Both sides get the very same tokenised rows (tokenised before the clock starts). The Trainer
runs at its CPU default, fp32; bitfit runs at its default precision (``auto``: bf16 where the
CPU has AVX512-BF16, else fp32) and again at fp32, so the speed-up at the same precision is
there too. A trial's time covers everything the search does per trial, model set-up included
(bitfit logs each trial to MLflow as it always does; the Trainer logs nowhere); what each tool
does once, before a search, is outside the clock on both sides: the Trainer is built (and its
model loaded) before its clock starts, with its libraries imported; bitfit's libraries (the
study plots' matplotlib too) are imported and its stores opened before its own clock (creating
a fresh home's MLflow store takes a few seconds once: ``store_setup_s``).

The heads differ as each tool builds them: the Trainer's ``AutoModelForSequenceClassification``
reads BERT's pooler (never trained in this sentence-embedding checkpoint), bitfit reads what
the checkpoint was trained for (mean pooling).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import torch
import yaml
from _common import CACHE_DIR, DATA_DIR, Run, emit, log

from bitfit.data import TaskData, prepare
from bitfit.metrics import compute_metrics
from bitfit.models import load_base, resolve_model
from bitfit.space import load_space
from bitfit.study import run_study
from bitfit.tasks import load_task
from bitfit.tracking import Tracker
from bitfit.train import resolve_precision

LOW, HIGH = 1e-4, 1e-2


def space_file(folder: Path, trials: int, rows: int, epochs: int, precision: str) -> Path:
    path = folder / f"vs-trainer-{precision}.yaml"
    path.write_text(yaml.safe_dump({
        "method": "bitfit", "n_trials": trials, "max_train_samples": rows,
        "objective": {"metric": "main", "direction": "maximize"},
        "sampler": {"name": "tpe", "seed": 0}, "pruner": {"name": "none"},
        "train": {"epochs": epochs, "batch_size": 32, "subset": "all", "precision": precision},
        "params": {"learning_rate": {"type": "float", "low": LOW, "high": HIGH, "log": True}}}))
    return path


def bitfit_search(base, data: TaskData, space: Path, home: Path) -> dict[str, float]:
    # The stores are opened before the clock starts, as the Trainer is built before its own:
    # a home's stores are made once, not per search (the seconds are reported apart)
    import matplotlib.pyplot  # noqa: F401 - the study's plots: imported, like the Trainer's
    import optuna.visualization.matplotlib  # noqa: F401 - libraries, before the clock

    start = time.perf_counter()
    tracker = Tracker(f"sqlite:///{home}/mlflow.db", home=home)
    store_setup = time.perf_counter() - start
    start = time.perf_counter()
    outcome = run_study(base, data, load_space(space), storage=f"sqlite:///{home}/optuna.db",
                        study_name=space.stem, home=home, tracker=tracker,
                        log=lambda line: log(f"  bitfit {line}"))
    wall = time.perf_counter() - start
    trials = len(outcome.study.trials)
    return {"seconds_per_trial": round(wall / trials, 2), "trials": trials,
            "store_setup_s": round(store_setup, 2),
            "best_dev_mcc": round(outcome.study.best_value, 4),
            "best_learning_rate": outcome.study.best_params["learning_rate"]}


def trainer_search(data: TaskData, trials: int, epochs: int, home: Path) -> dict[str, float]:
    from datasets import Dataset
    from trainer_search import bitfit_model
    from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments

    path, _ = resolve_model(None)
    tokenizer = AutoTokenizer.from_pretrained(path)

    def rows(enc) -> Dataset:
        ids = [enc.ids[a:b].tolist() for a, b in zip(enc.offsets[:-1], enc.offsets[1:],
                                                      strict=True)]
        columns = {"input_ids": ids, "labels": enc.labels.tolist()}
        if enc.type_ids is not None:
            columns["token_type_ids"] = [enc.type_ids[a:b].tolist() for a, b in
                                         zip(enc.offsets[:-1], enc.offsets[1:], strict=True)]
        return Dataset.from_dict(columns)

    def metrics(prediction) -> dict[str, float]:
        predicted = np.argmax(prediction.predictions, axis=-1)
        return compute_metrics(data.task, predicted, prediction.label_ids)

    args = TrainingArguments(
        output_dir=str(home / "trainer"), num_train_epochs=epochs,
        per_device_train_batch_size=32, per_device_eval_batch_size=64, eval_strategy="epoch",
        save_strategy="no", logging_strategy="epoch", report_to=[], use_cpu=True, seed=0,
        disable_tqdm=True)
    trainer = Trainer(model_init=lambda trial=None: bitfit_model(path), args=args,
                      train_dataset=rows(data.train),
                      eval_dataset=rows(data.evals["validation"]),
                      data_collator=DataCollatorWithPadding(tokenizer),
                      compute_metrics=metrics)
    start = time.perf_counter()
    best = trainer.hyperparameter_search(
        direction="maximize", backend="optuna", n_trials=trials,
        hp_space=lambda trial: {"learning_rate": trial.suggest_float("learning_rate", LOW, HIGH,
                                                                     log=True)},
        compute_objective=lambda m: m["eval_mcc"],
        sampler=optuna.samplers.TPESampler(seed=0))
    wall = time.perf_counter() - start
    return {"seconds_per_trial": round(wall / trials, 2), "trials": trials,
            "best_dev_mcc": round(best.objective, 4),
            "best_learning_rate": best.hyperparameters["learning_rate"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    base = load_base()
    task = load_task("cola")
    data = prepare(task, base.tokenizer, data_dir=DATA_DIR, max_length=128,
                   max_train_samples=args.rows, cache_dir=CACHE_DIR)
    auto = resolve_precision("auto", torch.device("cpu"))
    run = Run()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        log("Trainer.hyperparameter_search (fp32)")
        results["trainer_fp32"] = trainer_search(data, args.trials, args.epochs, home)
        for precision in dict.fromkeys([auto, "fp32"]):
            log(f"bitfit ({precision})")
            results[f"bitfit_{precision}"] = bitfit_search(
                base, data, space_file(home, args.trials, args.rows, args.epochs, precision),
                home)
    trainer = results["trainer_fp32"]
    ours = results[f"bitfit_{auto}"]
    emit({
        "benchmark": "vs_trainer", "search": {
            "task": "cola", "train_rows": len(data.train), "dev_rows": len(data.evals[
                "validation"]), "trials": args.trials, "epochs": args.epochs, "batch_size": 32,
            "learning_rate": [LOW, HIGH], "subset": "all"},
        "results": results, "bitfit_precision": auto,
        "speedup_per_trial": round(trainer["seconds_per_trial"] / ours["seconds_per_trial"], 2),
        "speedup_per_trial_fp32": round(trainer["seconds_per_trial"]
                                        / results["bitfit_fp32"]["seconds_per_trial"], 2),
        "best_score_no_worse": ours["best_dev_mcc"] >= trainer["best_dev_mcc"],
        "target": {"speedup_per_trial": ">= 3.0", "best_score": "no worse"},
        **run.info()})


if __name__ == "__main__":
    main()
