"""One training run: BitFit, full fine-tuning, head-only, the random baseline or LoRA, on a
loaded model.

AdamW with linear warmup and decay (or a constant rate), gradient clipping, evaluation each epoch
(or every N steps), best-evaluation tracking and a callback per evaluation that may ask to stop.
The loop knows nothing of Optuna or MLflow: a search prunes through the callback, a tracker logs
through it. Its parts live below it: the settings (``trainconfig``), the result (``results``),
the hardware (``hardware``), the optimiser and step (``optim``) and scoring (``evaluation``);
their names are importable from here too.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.optim.lr_scheduler import LRScheduler
from tqdm.auto import tqdm

from bitfit import dropout
from bitfit.biases import RandomMask, random_mask, select_biases
from bitfit.data import TaskData, collate, train_batches
from bitfit.evaluation import evaluate, predict, train_metrics
from bitfit.hardware import (cpu_has_fast_bf16, half_dtype, peak_memory_mb, reset_peak_memory,
                             resolve_device, resolve_precision)
from bitfit.interrupts import stop_if_interrupted
from bitfit.methods import RunStatus, method
from bitfit.models import BaseModel, TextClassifier
from bitfit.optim import (configure_optimizer, frozen_weights_in, linear_schedule, new_scaler,
                          train_step)
from bitfit.results import Callback, Evaluation, TrainResult
from bitfit.trainconfig import (PRECISIONS, SCHEDULES, TrainConfig, epochs_of, lr_sum,
                                total_steps_of)

__all__ = [
    "PRECISIONS", "SCHEDULES", "Callback", "Evaluation", "TrainConfig", "TrainResult",
    "configure_optimizer", "cpu_has_fast_bf16", "epochs_of", "evaluate", "frozen_weights_in",
    "linear_schedule", "lr_sum", "peak_memory_mb", "predict", "prepare_model", "reset_peak_memory",
    "resolve_device", "resolve_precision", "seed_sample", "total_steps_of", "train",
    "train_step", "trainable_tensors",
]


def trainable_tensors(base: BaseModel, config: TrainConfig) -> tuple[list[str], RandomMask | None]:
    """Encoder tensor names a method trains (the head is always trained), and rand's mask.
    LoRA trains none of the encoder's own tensors (its adapters come with the model)."""
    encoder = method(config.method).encoder
    names = [n for n, _ in base.encoder.named_parameters()]
    if encoder == "all":
        return names, None
    if encoder == "none":
        return [], None
    selected = [n for group in select_biases(names, base.family, config.subset).values()
                for n in group]
    if encoder == "biases":
        return selected, None
    params = dict(base.encoder.named_parameters())
    k = sum(params[n].numel() for n in selected)
    mask = random_mask(base.encoder, k, seed=config.seed)
    return list(mask.masks), mask


SAMPLE_SALT = 7_919  # a seed's training sample is drawn apart from its other random streams


def seed_sample(data: TaskData, config: TrainConfig) -> TaskData:
    """``data`` with its training split cut to ``config.train_samples`` rows drawn with
    ``config.seed`` (unchanged without it, or when the split is no larger): each seed of a final
    evaluation trains on its own sample, and runs of different methods with the same seed on the
    same one, so their scores pair by seed."""
    n = len(data.train)
    if config.train_samples is None or config.train_samples >= n:
        return data
    rows = np.random.default_rng([SAMPLE_SALT, config.seed]).permutation(n)
    return dataclasses.replace(data, train=data.train.take(np.sort(rows[: config.train_samples])))


def prepare_model(base: BaseModel, num_labels: int, config: TrainConfig, device: torch.device
                  ) -> tuple[TextClassifier, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The classifier on ``device`` with the method's tensors trainable; those tensors by name in
    the classifier (``encoder.…``, ``head.…``), and rand's masks on ``device`` (else empty)."""
    torch.manual_seed(config.seed)  # PyTorch's dropout (off the CPU) draws from it
    dropout.seed(config.seed)  # the CPU's dropout masks (bitfit.dropout)
    # the classifier first: it restores the encoder, taking off an earlier LoRA run's adapters
    model = base.classifier(num_labels, seed=config.seed, dropout=config.dropout)
    names, mask = trainable_tensors(base, config)
    base.remember(names)
    adapters: dict[str, torch.Tensor] = {}
    if method(config.method).adds_modules:  # adapters drawn from torch's generator, seeded above
        from bitfit.lora import add_adapters

        adapters = add_adapters(base, rank=config.lora_rank)
    model.to(device)
    params = dict(model.encoder.named_parameters())
    for n in names:
        params[n].requires_grad_(True)
    trained: dict[str, torch.Tensor] = {f"encoder.{n}": params[n] for n in [*names, *adapters]}
    trained.update({f"head.{n}": p for n, p in model.head.named_parameters()})
    masks = {} if mask is None else {n: m.to(device) for n, m in mask.masks.items()}
    return model, trained, masks


def _count_trainable(trained: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> int:
    if not masks:
        return sum(p.numel() for p in trained.values())
    # rand trains only the masked scalars of its encoder tensors
    head = sum(p.numel() for n, p in trained.items() if n.startswith("head."))
    return sum(int(m.sum()) for m in masks.values()) + head


@dataclass
class _LoopState:
    """What the training loop accumulates: counters, timings, evaluations, the best one's tensors
    and how the run ended."""

    step: int = 0
    seen: int = 0
    loss_sum: float = 0.0  # training loss since the last evaluation
    loss_n: int = 0
    train_time: float = 0.0
    eval_time: float = 0.0
    evaluations: list[Evaluation] = field(default_factory=list)
    best: Evaluation | None = None
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    status: RunStatus = "completed"
    message: str = ""

    def count(self, loss: float, rows: int) -> None:
        """One more optimiser step, on ``rows`` examples, with this loss."""
        self.step += 1
        self.seen += rows
        self.loss_sum, self.loss_n = self.loss_sum + loss, self.loss_n + 1


def _evaluates(config: TrainConfig, step: int, *, last: bool, epoch_end: bool) -> bool:
    """Whether the loop evaluates after this step: at the last one, at an epoch's end (with
    ``eval_each_epoch``) and every ``eval_every`` steps."""
    return (last or epoch_end and config.eval_each_epoch
            or bool(config.eval_every and step % config.eval_every == 0))


def train(
    base: BaseModel,
    data: TaskData,
    config: TrainConfig,
    *,
    callback: Callback | None = None,
    device: str = "auto",
    progress: bool = True,
    score_train: bool = True,
) -> TrainResult:
    """Train one configuration on the loaded base model and evaluate it.

    The base model is restored to its pre-trained state first, so runs on one loaded model are
    independent. On return the classifier holds the best evaluation's tensors.

    Args:
        base: the loaded base model (see ``models.load_base``).
        data: tokenised splits (see ``data.prepare``); the first evaluation split selects.
        config: method, subset and optimisation settings.
        callback: called after each evaluation; returning True stops the run (status "stopped").
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        progress: show a progress bar.
        score_train: score the best state on a sample of the training split
            (``train_metrics``, for the generalisation gap); a study's trials skip it.

    Returns:
        The run's ``TrainResult``; ``result.extra["model"]`` is the trained classifier.
    """
    started = time.perf_counter()
    dev = resolve_device(device)
    precision = resolve_precision(config.precision, dev)
    reset_peak_memory(dev)
    data = seed_sample(data, config)
    model, trained, masks = prepare_model(base, data.task.num_labels, config, dev)
    pad_id = base.tokenizer.pad_token_id or 0
    with frozen_weights_in(model, half_dtype(precision)):
        state = _optimise(model, data, config, trained, masks, callback=callback, pad_id=pad_id,
                          device=dev, precision=precision, progress=progress)
        tick = time.perf_counter()
        scored = train_metrics(model, data, config, pad_id=pad_id, device=dev,
                               precision=precision) if (
            state.best and score_train and config.train_eval_samples) else {}
        state.eval_time += time.perf_counter() - tick
    for p in model.parameters():
        p.requires_grad_(False)
    return TrainResult(
        status=state.status, config=config, precision=precision,
        evaluations=state.evaluations, best=state.best, train_metrics=scored,
        trained={n: v.cpu() for n, v in state.best_state.items()},
        rand_masks={f"encoder.{n}": m.cpu() for n, m in masks.items()},
        trainable_params=_count_trainable(trained, masks),
        total_params=sum(p.numel() for p in model.parameters()),
        wall_time_s=time.perf_counter() - started, train_time_s=state.train_time,
        examples_per_second=state.seen / state.train_time if state.train_time else 0.0,
        peak_memory_mb=peak_memory_mb(dev), eval_time_s=state.eval_time, message=state.message,
        extra={"model": model},
    )


def _optimise(
    model: TextClassifier,
    data: TaskData,
    config: TrainConfig,
    trained: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    *,
    callback: Callback | None,
    pad_id: int,
    device: torch.device,
    precision: str,
    progress: bool,
) -> _LoopState:
    """The optimiser and its schedule made, the loop run with a progress bar, and the trained
    tensors left at the best evaluation's values."""
    total_steps = total_steps_of(config, len(data.train))
    optimizer, scheduler, hooks = configure_optimizer(trained, masks, config,
                                                      total_steps=total_steps, device=device)
    bar = tqdm(total=total_steps, disable=not progress, leave=False, mininterval=0.5,
               desc=f"{data.task.name} {config.method}")
    try:
        state = _train_loop(model, data, config, trained, optimizer, scheduler,
                            callback=callback, pad_id=pad_id, device=device,
                            precision=precision, bar=bar)
    finally:
        bar.close()
        for h in hooks:
            h.remove()
    with torch.no_grad():
        for n, tensor in state.best_state.items():
            trained[n].copy_(tensor)
    return state


def _train_loop(
    model: TextClassifier,
    data: TaskData,
    config: TrainConfig,
    trained: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    *,
    callback: Callback | None,
    pad_id: int,
    device: torch.device,
    precision: str,
    bar: tqdm,
) -> _LoopState:
    """Every epoch's steps, an evaluation every ``eval_every`` steps and at each epoch's end
    (the last one's only without ``eval_each_epoch``), until the epochs (or ``max_steps``) are
    done, the loss diverges or the callback stops the run. A run of ``max_steps`` ends with an
    evaluation wherever in an epoch its last step falls."""
    state = _LoopState()
    steps_per_epoch = math.ceil(len(data.train) / config.batch_size)
    total = total_steps_of(config, len(data.train))
    params, scaler = list(trained.values()), new_scaler(precision, device)  # fp16: loss scaling
    model.train()
    epoch = 0
    while state.step < total:
        batches = train_batches(data.train, config.batch_size, seed=config.seed, epoch=epoch,
                                group_by_length=config.group_by_length)
        tick = time.perf_counter()
        for i, rows in enumerate(batches, 1):
            stop_if_interrupted()  # a signal whose exception was swallowed stops the run here
            batch = {k: v.to(device) for k, v in collate(data.train, rows, pad_id=pad_id).items()}
            loss = train_step(model, batch, optimizer, scheduler, params=params,
                              max_grad_norm=config.max_grad_norm, precision=precision,
                              regression=data.task.is_regression, scaler=scaler)
            if not math.isfinite(loss):
                state.status = "diverged"
                state.message = (f"loss became {loss} at step {state.step + 1} (epoch {epoch + 1})"
                                 f": lower the learning rate (now {config.learning_rate:g})")
                return state
            state.count(loss, len(rows))
            bar.update(1)
            last = state.step == total
            epoch_end = i == len(batches) or last
            if not _evaluates(config, state.step, last=last, epoch_end=epoch_end):
                if epoch_end:  # the next epoch starts its own clock
                    state.train_time += time.perf_counter() - tick
                continue
            state.train_time += time.perf_counter() - tick
            evaluation = _evaluate_and_keep_best(
                state, model, data, config, trained, pad_id=pad_id, device=device,
                precision=precision, epoch=state.step / steps_per_epoch)
            bar.set_postfix({data.task.main_metric: f"{evaluation.main:.4f}"})
            if callback is not None and callback(evaluation):
                state.status = "stopped"
                return state
            if last:
                return state
            tick = time.perf_counter()
        epoch += 1
    return state


def _evaluate_and_keep_best(
    state: _LoopState,
    model: TextClassifier,
    data: TaskData,
    config: TrainConfig,
    trained: dict[str, torch.Tensor],
    *,
    epoch: float,
    pad_id: int,
    device: torch.device,
    precision: str,
) -> Evaluation:
    """Evaluate now, record it in ``state`` and keep the trained tensors if it is the best (or
    the latest, without ``select_best``)."""
    tick = time.perf_counter()
    metrics = evaluate(model, data, batch_size=config.eval_batch_size, pad_id=pad_id,
                       device=device, precision=precision)
    main = metrics[data.selection_split][data.task.main_metric]
    evaluation = Evaluation(state.step, epoch, metrics, state.loss_sum / max(state.loss_n, 1),
                            main)
    state.loss_sum, state.loss_n = 0.0, 0
    state.evaluations.append(evaluation)
    if state.best is None or main > state.best.main or not config.select_best:
        state.best = evaluation
        state.best_state = {n: p.detach().clone() for n, p in trained.items()}
    state.eval_time += time.perf_counter() - tick
    return evaluation
