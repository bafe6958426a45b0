"""Command line: ``bitfit train | search | evaluate | prepare | reproduce | export`` (or ``python
-m bitfit ...``).

    bitfit train --task sst2 --data-dir ../shared/data/glue      # one run and its artifact
    bitfit search --task cola --data-dir ../shared/data/glue --quick   # the whole pipeline
    bitfit reproduce --data-dir ../shared/data/glue              # the paper's claims checked
    bitfit export runs/artifacts/<run> exported/                 # a Hugging Face model folder

``train`` trains one configuration, prints the dev metrics, the trainable fraction and where the
bias artifact was written. ``search``, ``evaluate`` and ``prepare`` run the pipeline of
``bitfit.pipeline`` here, ``reproduce`` the claims check of ``bitfit.reproduce``, without
Prefect (``python flows/*.py`` runs the same as Prefect flows). ``export`` writes an artifact as a
Hugging Face model folder (``bitfit.export``).
``--json``: one JSON object instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

from bitfit.methods import METHODS, method
from bitfit.settings import HOME_ENV, POOLINGS, home_dir
from bitfit.trainconfig import PRECISIONS, SCHEDULES, TrainConfig

__all__ = ["HOME_ENV", "home_dir", "main"]


_HELP = {"search": "the whole pipeline: BitFit study, full fine-tuning study, final multi-seed "
                   "comparison",
         "evaluate": "the final multi-seed evaluation of existing studies",
         "prepare": "tokenise a task's splits into the run home's cache",
         "reproduce": "check the paper's claims on this model: methods x tasks x seeds, the "
                      "data-size curve, which biases move"}


def _parser() -> argparse.ArgumentParser:
    from bitfit.commands import ARGUMENTS
    from bitfit.flags import Parser

    parser = Parser(prog="bitfit", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in _HELP.items():
        ARGUMENTS[name](commands.add_parser(name, help=text))
    p = commands.add_parser("train", help="train one configuration and save its bias artifact")
    _train_arguments(p)
    p = commands.add_parser("export", help="write an artifact as a Hugging Face model folder "
                            "(config.json, model.safetensors, the tokenizer; PEFT adapters for "
                            "LoRA)")
    p.add_argument("artifact", help="the artifact's folder (a training run prints it)")
    p.add_argument("folder", help="a new or empty folder to write")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


# TrainConfig's own defaults: the train flags that set one of its fields take them from here.
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _train_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``bitfit train``."""
    from bitfit.commands import own_data_arguments

    p.add_argument("--task", required=True, help="GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, "
                   "qnli, rte, wnli) or a name for a custom task given by --train-file/--dev-file")
    p.add_argument("--method", default=_DEFAULTS["method"], choices=METHODS)
    p.add_argument("--subset", default=_DEFAULTS["subset"],
                   help="bias subset: all, qm2, attention, mlp, layernorm or terms like q+m2+ln2")
    p.add_argument("--lr", "--learning-rate", type=float, default=_DEFAULTS["learning_rate"],
                   help="learning rate")
    p.add_argument("--epochs", "--num-train-epochs", type=int, default=_DEFAULTS["epochs"])
    p.add_argument("--batch-size", "--per-device-train-batch-size", type=int,
                   default=_DEFAULTS["batch_size"])
    p.add_argument("--seed", type=int, default=_DEFAULTS["seed"])
    p.add_argument("--warmup-ratio", type=float, default=_DEFAULTS["warmup_ratio"])
    p.add_argument("--schedule", default=_DEFAULTS["schedule"], choices=SCHEDULES,
                   help="after the warmup: linear decay to 0, or the rate held constant")
    p.add_argument("--max-steps", type=int, default=_DEFAULTS["max_steps"],
                   help="train this many optimiser steps instead of --epochs")
    p.add_argument("--weight-decay", type=float, default=_DEFAULTS["weight_decay"])
    p.add_argument("--dropout", type=float, default=_DEFAULTS["dropout"],
                   help="dropout probability everywhere (default: the checkpoint's own)")
    p.add_argument("--eval-every", type=int, default=_DEFAULTS["eval_every"],
                   help="evaluate every N steps (default: each epoch)")
    p.add_argument("--max-train-samples", type=int, default=None,
                   help="train on a seeded random sample of this many examples")
    p.add_argument("--validation-fraction", type=float, default=None,
                   help="carve a seeded, stratified validation split of this share out of train "
                   "and select the best epoch on it (dev is still reported)")
    p.add_argument("--max-length", "--max-seq-length", type=int, default=128)
    p.add_argument("--data-dir", default=None, help="folder in the official GLUE layout "
                   "(default: $BITFIT_GLUE_DIR, else the Hub's nyu-mll/glue)")
    own_data_arguments(p, test_help="a labelled test file, scored after training (never "
                       "selected on)")
    p.add_argument("--model", "--model-name-or-path", default=None,
                   help="local folder or Hub id (default: the bundled all-MiniLM-L6-v2)")
    p.add_argument("--pooling", default="auto", choices=POOLINGS)
    p.add_argument("--precision", default=_DEFAULTS["precision"], choices=PRECISIONS)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--home", default=None, help="run home for the cache and artifacts "
                   f"(default: ${HOME_ENV} or ./runs)")
    p.add_argument("--out", "--output-dir", default=None,
                   help="artifact folder (default: under the run home); refused if it exists "
                   "and is not empty, unless --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="write the artifact into an existing, non-empty --out folder, replacing "
                   "the artifact there")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


# Flags that count something, and their least value: caught here, before anything loads.
_AT_LEAST = {"epochs": 1, "batch_size": 1, "max_train_samples": 1, "max_length": 8,
             "eval_every": 1, "seed": 0, "max_steps": 1}


def _check_args(args: argparse.Namespace) -> None:
    """Refuse impossible numbers and a used ``--out`` before the model or the data load.

    Raises:
        ValueError: a number out of range.
        FileExistsError: ``--out`` holds files and ``--overwrite`` was not given.
    """
    from bitfit.entry import at_least

    for name, least in _AT_LEAST.items():
        at_least(least, **{name: getattr(args, name)})
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise ValueError(f"--lr must be a number above 0 (e.g. 1e-3), got {args.lr}")
    if not (math.isfinite(args.weight_decay) and args.weight_decay >= 0):
        raise ValueError(f"--weight-decay must be a number >= 0, got {args.weight_decay}")
    from bitfit.entry import writable_folder
    from bitfit.pipeline import check_device, check_length

    fraction = args.validation_fraction
    if fraction is not None and not (math.isfinite(fraction) and 0 < fraction < 1):
        raise ValueError(f"--validation-fraction must be a share between 0 and 1 (e.g. 0.1), "
                         f"got {fraction}")

    check_device(args.device)
    from bitfit.hardware import check_precision, resolve_device

    check_precision(args.precision, resolve_device(args.device))  # fp16 is for GPUs
    check_length(args.model, args.max_length)
    writable_folder(home_dir(args.home), "--home (or $BITFIT_HOME)")
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a folder: pass a folder")
    if out is not None:
        writable_folder(out, "--out")
    if out is not None and out.exists() and any(out.iterdir()) and not args.overwrite:
        raise FileExistsError(f"--out {out} already exists and is not empty: pass "
                              f"--overwrite to replace the artifact in it, or choose a new "
                              f"folder")


def _train(args: argparse.Namespace) -> dict[str, object]:
    from transformers.utils import logging as hf_logging

    from bitfit.artifacts import unique_folder
    from bitfit.data import prepare
    from bitfit.models import load_base
    from bitfit.commands import own_data
    from bitfit.pipeline import resolve_task
    from bitfit.train import train

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # the best evaluation is kept only where it is chosen on a split carved from train: chosen
    # on dev, the dev score it reports would be chosen on itself
    config = TrainConfig(
        method=args.method, subset=args.subset, learning_rate=args.lr, epochs=args.epochs,
        batch_size=args.batch_size, seed=args.seed, warmup_ratio=args.warmup_ratio,
        schedule=args.schedule, max_steps=args.max_steps,
        weight_decay=args.weight_decay, eval_every=args.eval_every, precision=args.precision,
        dropout=args.dropout, select_best=args.validation_fraction is not None,
    )
    own = own_data(args)
    task = resolve_task(args.task, own)
    home = home_dir(args.home)
    base = load_base(args.model, pooling=args.pooling)
    data = prepare(task, base.tokenizer, data_dir=args.data_dir, train_file=args.train_file,
                   dev_file=args.dev_file, test_file=args.test_file, max_length=args.max_length,
                   max_train_samples=args.max_train_samples,
                   validation_fraction=args.validation_fraction, cache_dir=home / "cache")
    result = train(base, data, config, device=args.device,
                   progress=not args.no_progress and not args.json and sys.stderr.isatty())
    subset = f"-{config.subset}" if method(config.method).takes_subset else ""
    artifact = None
    if result.status == "completed":  # a diverged run's tensors are of no use to anyone
        # a folder of its own: two runs in the same second never share one
        out = Path(args.out) if args.out else unique_folder(
            home / "artifacts", f"{data.task.name}-{config.method}{subset}-seed{config.seed}-"
            f"{time.strftime('%Y%m%d-%H%M%S')}")
        artifact = result.save(base, data.task, out,
                                 extra={"data": {"source": data.source,
                                                 "max_length": args.max_length,
                                                 "max_train_samples": args.max_train_samples,
                                                 "validation_fraction": args.validation_fraction,
                                                 "train_examples": len(data.train)}})
    return {"task": data.task.name, "model": base.model_id, "pooling": base.pooling,
            "method": config.method, "subset": config.subset if subset else None,
            "main_metric": data.task.main_metric, "selection_split": data.selection_split,
            **result.summary(), "artifact": str(artifact) if artifact else None}


def _print_human(summary: dict) -> None:
    metric = summary["main_metric"]
    subset = f" ({summary['subset']})" if summary["subset"] else ""
    print(f"task {summary['task']} · method {summary['method']}{subset} · model "
          f"{summary['model']} ({summary['pooling']} pooling) · precision {summary['precision']}")
    print(f"trainable parameters: {summary['trainable_params']:,} of "
          f"{summary['total_params']:,} ({100 * summary['trainable_fraction']:.3f}%)")
    for e in summary["evaluations"]:
        parts = "  ".join(f"{split} " + " ".join(f"{k} {v:.4f}" for k, v in m.items())
                          for split, m in e["metrics"].items())
        print(f"epoch {e['epoch']:.2f} (step {e['step']}, train loss {e['train_loss']:.4f}): "
              f"{parts}")
    best = summary["best_metrics"]
    if best:
        chosen = (f"best ({summary['selection_split']} {metric}, step {summary['best_step']})"
                  if summary["config"]["select_best"] else
                  f"after the last step ({summary['best_step']}; the artifact's)")
        print(f"{chosen}: " +
              "  ".join(f"{split} " + " ".join(f"{k} {v:.4f}" for k, v in m.items())
                        for split, m in best.items()))
        print("train sample: " + " ".join(f"{k} {v:.4f}"
                                          for k, v in summary["train_metrics"].items()))
    print(f"{summary['examples_per_second']:.1f} examples/s, {summary['wall_time_s']:.1f} s, "
          f"peak memory {summary['peak_memory_mb']:.0f} MB")
    if summary["artifact"]:
        print(f"artifact: {summary['artifact']}")


def _pipeline(args: argparse.Namespace) -> int:
    from bitfit import commands, pipeline
    from bitfit.entry import run_command

    if args.command == "reproduce":
        from bitfit import reproduce

        config = commands.reproduce_config(args)
        return run_command(lambda: reproduce.run(config), show=lambda r: print(
            json.dumps(r, default=str)) if args.json else reproduce.print_summary(r))

    def show(result: dict) -> None:
        if args.json or args.command == "prepare":
            print(json.dumps(result))
        elif args.command == "search":
            pipeline.print_summary(result)
        else:
            pipeline.print_report(result)

    # the config is made inside the work: a bad value is one sentence (Config.__post_init__)
    call = {"search": lambda: pipeline.run(commands.config(args)),
            "evaluate": lambda: pipeline.evaluate(commands.config(args),
                                                  bitfit_study=args.bitfit_study,
                                                  full_study=args.full_study),
            "prepare": lambda: pipeline.prepare(commands.config(args))}
    return run_command(call[args.command], show=show)


def _export(args: argparse.Namespace) -> int:
    from bitfit.entry import run_command

    def work() -> dict[str, object]:
        from transformers.utils import logging as hf_logging

        from bitfit.export import check_export, export_artifact

        check_export(args.artifact, args.folder)  # before transformers and the model load
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        done = export_artifact(args.artifact, args.folder)
        return {"folder": str(done.folder), "architecture": done.architecture,
                "trust_remote_code": done.remote_code,
                "adapter": str(done.adapter) if done.adapter else None}

    def show(result: dict) -> None:
        if args.json:
            print(json.dumps(result))
            return
        trust = ", trust_remote_code=True" if result["trust_remote_code"] else ""
        print(f"exported {args.artifact} to {result['folder']} ({result['architecture']}): "
              f"AutoModelForSequenceClassification.from_pretrained({result['folder']!r}{trust})"
              " and AutoTokenizer the same way; its README.md says more")
        if result["adapter"]:
            print(f"LoRA adapters in PEFT's format: {result['adapter']}")

    return run_command(work, show=show)


def main(argv: list[str] | None = None) -> int:
    from bitfit.entry import run_command
    from bitfit.settings import quiet_environment

    quiet_environment()
    args = _parser().parse_args(argv)
    if args.command == "export":
        return _export(args)
    if args.command != "train":
        return _pipeline(args)
    shown: dict = {}

    def work() -> dict[str, object]:
        _check_args(args)
        return _train(args)

    def show(summary: dict) -> None:
        shown.update(summary)
        if args.json:
            print(json.dumps(summary))
        else:
            _print_human(summary)

    code = run_command(work, show=show)
    if code == 0 and shown["status"] != "completed":
        print(f"error: the run {shown['status']} and wrote no artifact: {shown['message']}",
              file=sys.stderr)
        return 1
    return code
