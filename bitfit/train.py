"""One training run: BitFit, full fine-tuning, head-only or the random baseline, on a loaded model.

AdamW with linear warmup and decay, gradient clipping, evaluation each epoch (or every N steps),
best-evaluation tracking and a callback per evaluation that may ask to stop. The loop knows nothing
of Optuna or MLflow: a search prunes through the callback, a tracker logs through it.
``configure_optimizer`` and ``train_step`` are its optimiser set-up and its step, for a loop of
one's own (``benchmarks/step_time.py`` times the step).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import platform
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler
from torch.utils.hooks import RemovableHandle
from tqdm.auto import tqdm

from bitfit import dropout
from bitfit.biases import METHODS, RandomMask, parse_subset, random_mask, select_biases
from bitfit.data import Encoded, TaskData, collate, eval_batches, train_batches
from bitfit.interrupts import stop_if_interrupted
from bitfit.metrics import compute_metrics, predictions_from_logits
from bitfit.models import BaseModel, TextClassifier

PRECISIONS = ("auto", "fp32", "bf16")
SCHEDULES = ("linear", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a run's outcome (and so is logged with it)."""

    method: str = "bitfit"
    subset: str = "all"
    learning_rate: float = 1e-3
    epochs: int = 3
    batch_size: int = 32
    eval_batch_size: int = 64  # faster than 128 on a CPU (benchmarks/cpu_paths.py)
    warmup_ratio: float = 0.1
    schedule: str = "linear"  # after the warmup: linear decay to 0, or constant
    max_steps: int | None = None  # optimiser steps; when set it replaces epochs
    train_samples: int | None = None  # a sample of the training split drawn with `seed`
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    dropout: float | None = None  # None: the checkpoint's own dropout
    seed: int = 0
    eval_every: int | None = None
    eval_each_epoch: bool = True  # False: after the last epoch only (and every eval_every steps)
    precision: str = "auto"
    group_by_length: bool = True
    train_eval_samples: int = 2000  # 0: the training split is not scored
    select_best: bool = True  # False: keep the last evaluation (final runs never select on dev)
    lora_rank: int = 8  # lora: the adapters' rank (bitfit.lora)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.method in ("bitfit", "rand"):
            parse_subset(self.subset)
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, "
                             f"got {self.schedule!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.train_samples is not None and self.train_samples < 1:
            raise ValueError(f"train_samples must be >= 1, got {self.train_samples}")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1 step, got {self.eval_every}")
        if self.train_eval_samples < 0:
            raise ValueError(f"train_eval_samples must be >= 0, got {self.train_eval_samples}")
        if self.lora_rank < 1:
            raise ValueError(f"lora_rank must be >= 1, got {self.lora_rank}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, "
                             f"got {self.precision!r}")


@dataclass(frozen=True)
class Evaluation:
    """Metrics of every evaluation split at one point of training."""

    step: int
    epoch: float
    metrics: dict[str, dict[str, float]]
    train_loss: float
    main: float  # the task's main metric on the selection split


Callback = Callable[[Evaluation], bool | None]


@dataclass
class TrainResult:
    """What a run produced. ``trained`` holds the best evaluation's trained tensors by name in
    the classifier (``encoder.…``, ``head.…``); ``rand_masks`` the rand baseline's masks."""

    status: str  # completed | stopped (by the callback) | diverged (NaN or infinite loss)
    config: TrainConfig
    precision: str
    evaluations: list[Evaluation]
    best: Evaluation | None
    train_metrics: dict[str, float]
    trained: dict[str, torch.Tensor]
    rand_masks: dict[str, torch.Tensor]
    trainable_params: int
    total_params: int
    wall_time_s: float
    train_time_s: float
    examples_per_second: float
    peak_memory_mb: float
    eval_time_s: float = 0.0  # evaluations, including the train-split metric
    message: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def trainable_fraction(self) -> float:
        return self.trainable_params / self.total_params

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        return self.evaluations[-1].metrics if self.evaluations else {}

    @property
    def best_metrics(self) -> dict[str, dict[str, float]]:
        return self.best.metrics if self.best else {}

    def summary(self) -> dict[str, object]:
        """A JSON-ready summary (no tensors)."""
        return {
            "status": self.status, "message": self.message, "config": asdict(self.config),
            "precision": self.precision, "metrics": self.metrics,
            "best_metrics": self.best_metrics,
            "best_step": self.best.step if self.best else None,
            "train_metrics": self.train_metrics,
            "evaluations": [asdict(e) for e in self.evaluations],
            "trainable_params": self.trainable_params, "total_params": self.total_params,
            "trainable_fraction": self.trainable_fraction, "wall_time_s": self.wall_time_s,
            "train_time_s": self.train_time_s, "eval_time_s": self.eval_time_s,
            "examples_per_second": self.examples_per_second,
            "peak_memory_mb": self.peak_memory_mb,
        }


# --------------------------------------------------------------------------- hardware


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    if platform.system() != "Linux":
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` picks bf16 where the hardware runs it natively (see ``benchmarks/precision.py``
    for the measurement that lets it), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fp32"


def resolve_device(device: str = "auto") -> torch.device:
    return torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                        "cpu" if device == "auto" else device)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's allocator statistics, or Linux's peak RSS (``clear_refs``)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        pass  # not Linux: the peak stays the process's since it started


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory since ``reset_peak_memory``: CUDA's allocator peak on a GPU, the peak RSS
    (resident set, model included) on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- what is trained


def trainable_tensors(base: BaseModel, config: TrainConfig) -> tuple[list[str], RandomMask | None]:
    """Encoder tensor names a method trains (the head is always trained), and rand's mask.
    LoRA trains none of the encoder's own tensors (its adapters come with the model)."""
    names = [n for n, _ in base.encoder.named_parameters()]
    if config.method == "full":
        return names, None
    if config.method in ("frozen", "lora"):
        return [], None
    selected = [n for group in select_biases(names, base.family, config.subset).values()
                for n in group]
    if config.method == "bitfit":
        return selected, None
    params = dict(base.encoder.named_parameters())
    k = sum(params[n].numel() for n in selected)
    mask = random_mask(base.encoder, k, seed=config.seed)
    return list(mask.masks), mask


# --------------------------------------------------------------------------- evaluation


@torch.inference_mode()
def predict(model: TextClassifier, data: Encoded, *, batch_size: int, pad_id: int,
            device: torch.device, precision: str = "fp32") -> np.ndarray:
    """Logits for every row of a split, in the split's order."""
    was_training = model.training
    model.eval()
    out = np.zeros((len(data), model.head.out_features), dtype=np.float32)
    for rows in eval_batches(data, batch_size):
        stop_if_interrupted()
        batch = {k: v.to(device) for k, v in collate(data, rows, pad_id=pad_id).items()
                 if k != "labels"}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out[rows] = model(**batch).float().cpu().numpy()
    model.train(was_training)
    return out


def evaluate(model: TextClassifier, data: TaskData, *, batch_size: int, pad_id: int,
             device: torch.device, precision: str = "fp32") -> dict[str, dict[str, float]]:
    """The task's metrics on each evaluation split."""
    return {
        split: compute_metrics(data.task, predictions_from_logits(
            data.task, predict(model, enc, batch_size=batch_size, pad_id=pad_id, device=device,
                               precision=precision)), enc.labels)
        for split, enc in data.evals.items()
    }


# --------------------------------------------------------------------------- training


def _loss(task_is_regression: bool, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if task_is_regression:
        return F.mse_loss(logits[:, 0], labels.float())
    return F.cross_entropy(logits, labels)


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
    status: str = "completed"
    message: str = ""


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
    model, trained, masks = _prepare_model(base, data, config, dev)
    total_steps = total_steps_of(config, len(data.train))
    optimizer, scheduler, hooks = configure_optimizer(trained, masks, config,
                                                      total_steps=total_steps, device=dev)
    pad_id = base.tokenizer.pad_token_id or 0
    bar = tqdm(total=total_steps, disable=not progress, leave=False, mininterval=0.5,
               desc=f"{data.task.name} {config.method}")
    with frozen_weights_in(model, torch.bfloat16 if precision == "bf16" else None):
        try:
            state = _train_loop(model, data, config, trained, optimizer, scheduler,
                                callback=callback, pad_id=pad_id, device=dev,
                                precision=precision, bar=bar)
        finally:
            bar.close()
            for h in hooks:
                h.remove()

        with torch.no_grad():
            for n, tensor in state.best_state.items():
                trained[n].copy_(tensor)
        tick = time.perf_counter()
        train_metrics = _train_metrics(model, data, config, pad_id=pad_id, device=dev,
                                       precision=precision) if (
            state.best and score_train and config.train_eval_samples) else {}
        state.eval_time += time.perf_counter() - tick
    for p in model.parameters():
        p.requires_grad_(False)
    return TrainResult(
        status=state.status, config=config, precision=precision,
        evaluations=state.evaluations, best=state.best, train_metrics=train_metrics,
        trained={n: v.cpu() for n, v in state.best_state.items()},
        rand_masks={f"encoder.{n}": m.cpu() for n, m in masks.items()},
        trainable_params=_count_trainable(trained, masks),
        total_params=sum(p.numel() for p in model.parameters()),
        wall_time_s=time.perf_counter() - started, train_time_s=state.train_time,
        examples_per_second=state.seen / state.train_time if state.train_time else 0.0,
        peak_memory_mb=peak_memory_mb(dev), eval_time_s=state.eval_time, message=state.message,
        extra={"model": model},
    )


@contextlib.contextmanager
def frozen_weights_in(model: nn.Module, dtype: torch.dtype | None) -> Iterator[None]:
    """The frozen weight matrices of ``model``'s linear layers held in ``dtype`` meanwhile (None:
    as they are), their own tensors put back after. Under bf16 autocast a linear layer casts its
    weight on every call, except a weight that trains (autocast keeps that one cast per step);
    BitFit's frozen matrices, cast once, are the very values those casts give, without the
    copies (``benchmarks/cpu_paths.py``: 1-3% of a bf16 BitFit run's training time)."""
    if dtype is None:
        yield
        return
    kept = [(m.weight, m.weight.data) for m in model.modules()
            if isinstance(m, nn.Linear) and not m.weight.requires_grad
            and m.weight.dtype != dtype]
    for weight, value in kept:
        weight.data = value.to(dtype)
    try:
        yield
    finally:
        for weight, value in kept:
            weight.data = value


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


def total_steps_of(config: TrainConfig, train_rows: int) -> int:
    """Optimiser steps of a run: ``max_steps`` when set, else every batch of every epoch."""
    if config.max_steps is not None:
        return config.max_steps
    return math.ceil(train_rows / config.batch_size) * config.epochs


def lr_sum(config: TrainConfig, train_rows: int) -> float:
    """The sum of the learning rate over every step of a run: with Adam no coordinate moves
    much further than this, so a tensor's change divided by it says how much of the allowed
    movement it used (1: the same direction at every step; near 0: no signal)."""
    total = total_steps_of(config, train_rows)
    warmup = int(config.warmup_ratio * total)
    steps = np.arange(total, dtype=np.float64)
    factor = np.where(steps < warmup, steps / max(1, warmup),
                      1.0 if config.schedule == "constant"
                      else np.maximum(0.0, (total - steps) / max(1, total - warmup)))
    return float(config.learning_rate * np.sum(factor))


def epochs_of(config: TrainConfig, train_rows: int) -> float:
    """Passes over the training split that a run makes (a fraction with ``max_steps``)."""
    return total_steps_of(config, train_rows) / math.ceil(train_rows / config.batch_size)


def _prepare_model(base: BaseModel, data: TaskData, config: TrainConfig, device: torch.device
                   ) -> tuple[TextClassifier, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The classifier on ``device`` with the method's tensors trainable; those tensors by name in
    the classifier (``encoder.…``, ``head.…``), and rand's masks on ``device`` (else empty)."""
    torch.manual_seed(config.seed)  # PyTorch's dropout (off the CPU) draws from it
    dropout.seed(config.seed)  # the CPU's dropout masks (bitfit.dropout)
    # the classifier first: it restores the encoder, taking off an earlier LoRA run's adapters
    model = base.classifier(data.task.num_labels, seed=config.seed, dropout=config.dropout)
    names, mask = trainable_tensors(base, config)
    base.remember(names)
    adapters: dict[str, torch.Tensor] = {}
    if config.method == "lora":  # adapters drawn from torch's generator, seeded above
        from bitfit.lora import add_adapters

        adapters = add_adapters(model.encoder, base.family, rank=config.lora_rank)
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


def configure_optimizer(
    trained: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    config: TrainConfig,
    *,
    total_steps: int,
    device: torch.device,
) -> tuple[torch.optim.AdamW, LambdaLR, list[RemovableHandle]]:
    """AdamW over the trained tensors: a linear warmup over ``warmup_ratio`` of ``total_steps``,
    then linear decay to 0 at ``total_steps`` or (``schedule`` constant) the rate held.

    Weight decay applies to matrices only, and not to rand's masked ones. For rand, gradient hooks
    mask each tensor's gradient; the caller removes them (``handle.remove()``) when it is done.

    Args:
        trained: the trained tensors by name in the classifier (``encoder.…``, ``head.…``).
        masks: rand's 0/1 masks by encoder tensor name, on the tensors' device; empty otherwise.
        config: learning rate, weight decay, warmup ratio and schedule.
        total_steps: optimiser steps of the whole run.
        device: where the tensors are (AdamW's fused kernels exist for CPU and CUDA).
    """
    hooks = []
    for n, m in masks.items():
        # Only the chosen scalars get a gradient; with no weight decay on these tensors AdamW
        # then leaves every other scalar bit-identical.
        hooks.append(trained[f"encoder.{n}"].register_hook(lambda g, m=m: g * m))
    decay = [p for n, p in trained.items()
             if p.dim() >= 2 and n.removeprefix("encoder.") not in masks]
    no_decay = [p for p in trained.values() if all(p is not d for d in decay)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate, fused=device.type in ("cpu", "cuda"),
    )
    scheduler = linear_schedule(optimizer, int(config.warmup_ratio * total_steps), total_steps,
                                decay=config.schedule == "linear")
    return optimizer, scheduler, hooks


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                    *, decay: bool = True) -> LambdaLR:
    """The learning rate rising linearly from 0 over ``warmup_steps``, then falling linearly to 0
    at ``total_steps``: transformers' ``get_linear_schedule_with_warmup``, step for step. Its
    import (``transformers.trainer_utils``, which imports PEFT when installed) made every
    command slow to start: ``python flows/search.py --help`` took 8.1 s with it, 6.7 s
    without. A run that loads the model imports most of it anyway (a one-trial search: 25.4 s
    before, 25.2 s after). Without ``decay`` the rate stays at its peak after the warmup
    (transformers' ``get_constant_schedule_with_warmup``)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        if not decay:
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return LambdaLR(optimizer, factor)


def train_step(
    model: TextClassifier,
    batch: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    *,
    params: list[torch.Tensor],
    max_grad_norm: float,
    precision: str = "fp32",
    regression: bool = False,
) -> float:
    """One training step on one batch: forward, loss, backward, gradient clipping, then the
    optimiser and scheduler step.

    A NaN or infinite loss is returned before the backward pass, so nothing is updated and the
    caller decides what to do (``train`` ends the run as "diverged").

    Args:
        model: the classifier, in training mode.
        batch: collated inputs and ``labels``, on the model's device.
        optimizer, scheduler: as ``configure_optimizer`` makes them.
        params: the trained tensors, in one fixed order; their gradients are clipped together.
        max_grad_norm: the gradient norm they are clipped to.
        precision: ``bf16`` runs the forward pass under bf16 autocast; ``fp32`` does not.
        regression: mean squared error on the single output, else cross-entropy.

    Returns:
        The batch's loss.
    """
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    # Autocast on the device the batch is on: a device passed separately could disagree and
    # silently turn bf16 off.
    with torch.autocast(labels.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = model(**inputs)
    loss = _loss(regression, logits, labels)
    value = float(loss.detach())
    if not math.isfinite(value):
        return value
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return value


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
    params = list(trained.values())
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
                              regression=data.task.is_regression)
            if not math.isfinite(loss):
                state.status = "diverged"
                state.message = (f"loss became {loss} at step {state.step + 1} (epoch {epoch + 1})"
                                 f": lower the learning rate (now {config.learning_rate:g})")
                return state
            state.step += 1
            state.seen += len(rows)
            state.loss_sum, state.loss_n = state.loss_sum + loss, state.loss_n + 1
            bar.update(1)
            last = state.step == total
            epoch_end = i == len(batches) or last
            evaluate_now = (last or epoch_end and config.eval_each_epoch
                            or bool(config.eval_every and state.step % config.eval_every == 0))
            if not evaluate_now:
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


def _train_metrics(model: TextClassifier, data: TaskData, config: TrainConfig, *, pad_id: int,
                   device: torch.device, precision: str) -> dict[str, float]:
    # Scored on a seeded sample of the training split: enough for the generalisation gap, and
    # cheap next to training on all of it.
    n = len(data.train)
    rows = np.random.default_rng(config.seed).permutation(n)[: config.train_eval_samples]
    sample = data.train.take(np.sort(rows))
    logits = predict(model, sample, batch_size=config.eval_batch_size, pad_id=pad_id,
                     device=device, precision=precision)
    return compute_metrics(data.task, predictions_from_logits(data.task, logits), sample.labels)
